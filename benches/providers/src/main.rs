//! The server's share of full TLS 1.3 handshakes (no resumption), in memory, for each
//! crypto provider, certificate key type and the suite's hash (the client's first choice,
//! SHA-384, or the server's order, SHA-256): handshakes per second per core of server CPU.
//! Each case runs for a fixed time after a warm-up; cases alternate over several rounds so
//! that drift on a shared machine hits them alike; the median round is printed. Then the
//! cryptography no full handshake can skip (X25519, one signature), timed alone: a floor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const ROUNDS: usize = 5;
const PER_ROUND: Duration = Duration::from_secs(2);

/// The TLS 1.3 suite the handshake runs on: the client's first choice (AES-256-GCM with
/// SHA-384, as rustls, OpenSSL and Node list it), or the server's order with AES-128-GCM and
/// SHA-256 first (what actionwire does by default, `honorCipherOrder`).
#[derive(Clone, Copy)]
enum Suite {
    ClientFirst,
    Sha256First,
}

fn configs(
    provider: Arc<CryptoProvider>,
    alg: &'static rcgen::SignatureAlgorithm,
    suite: Suite,
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let mut provider = (*provider).clone();
    if let Suite::Sha256First = suite {
        provider
            .cipher_suites
            .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }
    let provider = Arc::new(provider);
    let key = rcgen::KeyPair::generate_for(alg).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let der = CertificateDer::from_pem_slice(cert.pem().as_bytes()).expect("cert der");
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key der");
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key_der)
        .expect("server config");
    server.ignore_client_order = matches!(suite, Suite::Sha256First);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("root");
    // The client always uses ring: only the server's provider is compared.
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

/// One full handshake; the time the server side spent.
fn handshake(server: &Arc<rustls::ServerConfig>, client: &Arc<rustls::ClientConfig>) -> Duration {
    let name = ServerName::try_from("localhost").expect("name");
    let mut c = rustls::ClientConnection::new(Arc::clone(client), name).expect("client");
    let t = Instant::now();
    let mut s = rustls::ServerConnection::new(Arc::clone(server)).expect("server");
    let mut spent = t.elapsed();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("client out");
        }
        let t = Instant::now();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("server in");
        }
        s.process_new_packets().expect("server process");
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("server out");
        }
        spent += t.elapsed();
        if buf.is_empty() && !c.wants_write() && !s.is_handshaking() {
            break;
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).expect("client in");
        }
        c.process_new_packets().expect("client process");
    }
    assert!(!s.is_handshaking() && !c.is_handshaking());
    spent
}

/// Median µs of `f` over ROUNDS rounds of PER_ROUND / 4 each.
fn time_op(mut f: impl FnMut()) -> f64 {
    for _ in 0..100 {
        f(); // warm-up
    }
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let (mut n, t) = (0u32, Instant::now());
        while t.elapsed() < PER_ROUND / 4 {
            f();
            n += 1;
        }
        rounds.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

/// The cryptography a full handshake cannot skip, timed alone through the provider's own
/// interfaces (what rustls calls): the key exchange's two halves (an ephemeral key pair, then
/// the agreement with the client's share) and one certificate signature. Their sum is a floor
/// under any server's handshake on this machine with this provider; the kernel's TCP work
/// per connection comes on top (`benches/handshakes.sh` measures it as plain connections).
fn floor(name: &str, make: fn() -> CryptoProvider) {
    use rustls::SignatureScheme;
    let provider = make();
    let kx = provider
        .kx_groups
        .iter()
        .find(|g| g.name() == rustls::NamedGroup::X25519)
        .expect("X25519");
    let peer = kx.start().expect("peer share").pub_key().to_vec();
    let x25519 = time_op(|| {
        let ours = kx.start().expect("key pair");
        std::hint::black_box(ours.pub_key());
        std::hint::black_box(ours.complete(&peer).expect("agree"));
    });
    let mut line = format!("{name:<10} X25519 key pair + agreement {x25519:6.1} µs");
    let transcript = [7u8; 100];
    for (k, alg, scheme) in [
        (
            "P-256",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
        ),
        ("Ed25519", &rcgen::PKCS_ED25519, SignatureScheme::ED25519),
    ] {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key der");
        let signing = provider.key_provider.load_private_key(der).expect("signer");
        let signer = signing.choose_scheme(&[scheme]).expect("scheme");
        let sign = time_op(|| {
            std::hint::black_box(signer.sign(&transcript).expect("sign"));
        });
        line += &format!(
            ", {k} signature {sign:5.1} µs (floor {:.0}/s)",
            1e6 / (x25519 + sign)
        );
    }
    println!("{line}");
}

fn main() {
    let providers: [(&str, fn() -> CryptoProvider); 2] = [
        ("ring", rustls::crypto::ring::default_provider),
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider),
    ];
    let keys: [(&str, &'static rcgen::SignatureAlgorithm); 2] = [
        ("ECDSA P-256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("Ed25519", &rcgen::PKCS_ED25519),
    ];
    let suites = [("SHA-384", Suite::ClientFirst), ("SHA-256", Suite::Sha256First)];
    let mut cases = Vec::new();
    for (p, make) in providers {
        for (k, alg) in keys {
            for (sname, suite) in suites {
                let (server, client) = configs(Arc::new(make()), alg, suite);
                cases.push((format!("{p}, {k}, {sname}"), server, client, Vec::new()));
            }
        }
    }
    for (_, server, client, _) in &cases {
        for _ in 0..200 {
            handshake(server, client); // warm-up
        }
    }
    for _ in 0..ROUNDS {
        for (_, server, client, rates) in &mut cases {
            let (mut n, mut spent) = (0u32, Duration::ZERO);
            let until = Instant::now() + PER_ROUND;
            while Instant::now() < until {
                spent += handshake(server, client);
                n += 1;
            }
            rates.push(f64::from(n) / spent.as_secs_f64());
        }
    }
    println!(
        "{:<34} {:>12} {:>22}",
        "server provider, key, suite", "µs/handshake", "handshakes/s per core"
    );
    for (name, _, _, rates) in &mut cases {
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!("{name:<34} {:>12.1} {:>22.0}", 1e6 / median, median);
    }
    println!("\nThe cryptography alone (medians of {ROUNDS} rounds):");
    floor("ring", rustls::crypto::ring::default_provider);
    floor("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider);
}
