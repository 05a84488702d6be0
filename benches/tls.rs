//! Server-side cost of a full TLS handshake, in memory (no sockets): a rustls client and
//! actionwire's server configuration exchange flights through buffers, and only the
//! server's share (`read_tls` + `process_new_packets` + `write_tls`) is timed. The inverse
//! is handshakes per second per core, for an ECDSA P-256 and an Ed25519 certificate, and
//! for P-256 without the two session tickets rustls issues after a TLS 1.3 handshake.
//!
//! `cargo bench --bench tls`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

fn setup(
    alg: &'static rcgen::SignatureAlgorithm,
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let dir = std::env::temp_dir().join(format!("aw-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = rcgen::KeyPair::generate_for(alg).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
    let opts = actionwire_config::ServerOptions {
        cert: Some(dir.join("cert.pem")),
        key: Some(dir.join("key.pem")),
        ..Default::default()
    };
    let server = actionwire::tls::server_config(&opts, "bench")
        .expect("server config")
        .config;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert.pem().as_bytes()).expect("der"))
        .expect("root");
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Full handshakes only: no resumption.
    client.resumption = rustls::client::Resumption::disabled();
    std::fs::remove_dir_all(&dir).ok();
    (server, Arc::new(client))
}

/// One full handshake; returns the time the server side spent.
fn handshake(server: &Arc<rustls::ServerConfig>, client: &Arc<rustls::ClientConfig>) -> Duration {
    let name = ServerName::try_from("localhost").expect("name");
    let mut c = rustls::ClientConnection::new(Arc::clone(client), name).expect("client");
    let mut s_time = Duration::ZERO;
    let t = Instant::now();
    let mut s = rustls::ServerConnection::new(Arc::clone(server)).expect("server");
    s_time += t.elapsed();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("client out");
        }
        if !buf.is_empty() {
            let t = Instant::now();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).expect("server in");
            }
            s.process_new_packets().expect("server process");
            s_time += t.elapsed();
        }
        buf.clear();
        let t = Instant::now();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("server out");
        }
        s_time += t.elapsed();
        if !buf.is_empty() {
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).expect("client in");
            }
            c.process_new_packets().expect("client process");
        } else if !c.wants_write() {
            break;
        }
    }
    assert!(!s.is_handshaking() && !c.is_handshaking());
    s_time
}

fn tls(c: &mut Criterion) {
    let mut g = c.benchmark_group("tls13");
    g.sample_size(30);
    for (name, alg) in [
        (
            "full_handshake_server_side_p256",
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ),
        ("full_handshake_server_side_ed25519", &rcgen::PKCS_ED25519),
    ] {
        let (server, client) = setup(alg);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| handshake(&server, &client)).sum())
        });
        if name.ends_with("p256") {
            // What the two TLS 1.3 session tickets (for resumption) cost per handshake.
            let mut no_tickets = (*server).clone();
            no_tickets.send_tls13_tickets = 0;
            let no_tickets = Arc::new(no_tickets);
            g.bench_function("full_handshake_server_side_p256_no_tickets", |b| {
                b.iter_custom(|iters| (0..iters).map(|_| handshake(&no_tickets, &client)).sum())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, tls);
criterion_main!(benches);
