//! TLS specifics: handshake edge cases, close_notify, resumption, mTLS, two listeners, and
//! interop with the system `openssl s_client`. The protocol scenarios themselves run over
//! both transports in the other modules (`both!`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::harness::*;

fn tls_server(tweak: impl FnOnce(&mut actionwire::Config)) -> TestServer {
    TestServer::over_with(Transport::Tls, tweak)
}

#[test]
fn welcome_comes_after_the_handshake_and_quit_ends_with_close_notify() {
    let srv = TestServer::over(Transport::Tls);
    let mut c = srv.client();
    assert_eq!(c.welcome["welcome"], "Hello! Welcome to the actionhero api");
    let d = ok_data(&c.request("detailsView"));
    assert_eq!(d["remoteIP"], "127.0.0.1");
    c.send("quit");
    assert_eq!(c.line(), r#"{"status":"Bye!","context":"api"}"#);
    // rustls reports a clean EOF only after close_notify; without it, UnexpectedEof.
    let (rest, clean) = c.drain();
    assert!(rest.is_empty());
    assert!(clean, "the server sent close_notify before closing");
    assert_eq!(srv.api.tls_handshakes(), 1);
}

#[test]
fn handshake_fed_byte_by_byte() {
    let srv = TestServer::over(Transport::Tls);
    let mut tcp = TcpStream::connect(srv.addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(client_tls(None), name).expect("client");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("client hello");
    }
    for b in &hello {
        tcp.write_all(&[*b]).expect("byte");
    }
    // The rest of the handshake and the session as usual.
    tcp.set_read_timeout(Some(GUARD)).expect("timeout");
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut welcome = Vec::new();
    let mut byte = [0u8; 1];
    while !welcome.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).expect("welcome byte");
        welcome.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&welcome).contains("\"welcome\""));
    stream.write_all(b"paramsView\n").expect("write");
    let mut reply = Vec::new();
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).expect("reply byte");
        reply.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&reply).contains("\"messageCount\":1"));
}

#[test]
fn garbage_instead_of_a_client_hello_is_closed_and_others_are_unaffected() {
    let srv = TestServer::over(Transport::Tls);
    let mut good = srv.client();
    let mut bad = TcpStream::connect(srv.addr).expect("connect");
    bad.set_read_timeout(Some(GUARD)).expect("timeout");
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("garbage");
    let mut got = Vec::new();
    let _ = bad.read_to_end(&mut got); // an alert, then EOF (or a reset)
    assert!(
        !String::from_utf8_lossy(&got).contains("welcome"),
        "no protocol traffic for a failed handshake"
    );
    assert_eq!(good.request("paramsView")["messageCount"], 1);
    assert!(srv.api.tls_failures() >= 1);
}

#[test]
fn a_client_that_never_speaks_is_closed_after_the_handshake_timeout_without_bye() {
    let srv = tls_server(|c| c.servers.socket.handshake_timeout = 300);
    let mut silent = TcpStream::connect(srv.addr).expect("connect");
    silent.set_read_timeout(Some(GUARD)).expect("timeout");
    let mut got = Vec::new();
    let _ = silent.read_to_end(&mut got);
    assert!(got.is_empty(), "no channel yet, so no Bye line: {got:?}");
    assert_eq!(srv.api.handshake_timeouts(), 1);
    // A handshake completed in time is not affected.
    let mut c = srv.client();
    assert_eq!(c.request("paramsView")["messageCount"], 1);
}

#[test]
fn a_handshake_abandoned_halfway_is_closed_by_the_timeout() {
    let srv = tls_server(|c| c.servers.socket.handshake_timeout = 300);
    let mut tcp = TcpStream::connect(srv.addr).expect("connect");
    tcp.set_read_timeout(Some(GUARD)).expect("timeout");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(client_tls(None), name).expect("client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("hello");
    tcp.write_all(&hello[..hello.len() / 2])
        .expect("half a hello");
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    assert!(got.is_empty());
    assert_eq!(srv.api.handshake_timeouts(), 1);
}

#[test]
fn a_client_closing_without_close_notify_is_an_ordinary_eof() {
    let srv = TestServer::over(Transport::Tls);
    let mut a = srv.client();
    a.request("roomAdd defaultRoom");
    let mut b = srv.client();
    b.request("roomAdd defaultRoom");
    b.stream
        .shutdown(std::net::Shutdown::Both)
        .expect("abrupt close");
    let mut members = serde_json::Value::Null;
    for _ in 0..500 {
        members = ok_data(&a.request("roomView"))["membersCount"].clone();
        if members == 1 {
            break;
        }
    }
    assert_eq!(members, 1, "the abruptly closed client left its room");
}

#[test]
fn sessions_resume() {
    let srv = TestServer::over(Transport::Tls);
    let config = client_tls(None);
    let mut first = Client::connect_tls(srv.addr, Arc::clone(&config));
    first.request("paramsView");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut tcp = TcpStream::connect(srv.addr).expect("connect");
    tcp.set_read_timeout(Some(GUARD)).expect("timeout");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("handshake");
    }
    assert_eq!(
        conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "the second handshake resumed the first session"
    );
}

#[test]
fn mutual_tls_accepts_a_client_certificate_from_the_ca_and_refuses_others() {
    let p = pki();
    let srv = tls_server(|c| {
        c.servers.socket.server_options.ca = Some(p.ca.clone());
        c.servers.socket.server_options.request_cert = true;
    });
    let mut ok = Client::connect_tls(srv.addr, client_tls(Some((&p.client_cert, &p.client_key))));
    assert_eq!(ok.request("paramsView")["messageCount"], 1);
    for identity in [None, Some((&p.stranger_cert, &p.stranger_key))] {
        let mut refused = Client::connect_tls_raw(srv.addr, client_tls(identity));
        refused.send_raw(b"paramsView\n");
        let (got, _) = refused.drain();
        assert!(
            !String::from_utf8_lossy(&got).contains("welcome"),
            "refused during the handshake"
        );
    }
    // The alert reaches the client before the loop counts the failure.
    wait_until("both refusals counted", || srv.api.tls_failures() >= 2);
}

#[test]
fn plain_and_tls_listeners_at_once_share_rooms() {
    let srv = TestServer::with(|c| {
        c.servers.socket_tls.enabled = true;
        c.servers.socket_tls.port = 0;
        c.servers.socket_tls.bind_ip = Some("127.0.0.1".into());
        c.servers.socket_tls.server_options = tls_options();
    });
    let tls_addr = srv.tls_addr.expect("TLS listener");
    let mut plain = srv.client();
    let mut secure = Client::connect_tls(tls_addr, client_tls(None));
    plain.request("roomAdd defaultRoom");
    secure.request("roomAdd defaultRoom");
    secure.send("say defaultRoom over TLS");
    assert_eq!(ok_data(&secure.json()), serde_json::Value::Null);
    assert_eq!(secure.json()["message"], "over TLS");
    assert_eq!(plain.json()["message"], "over TLS");
}

#[test]
fn openssl_s_client_interop() {
    require_tool("openssl");
    let srv = TestServer::over(Transport::Tls);
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(srv.addr.to_string())
        .arg("-CAfile")
        .arg(&pki().ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn openssl");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let mut r = std::io::BufReader::new(stdout);
        let _ = r.read_to_string(&mut out);
        out
    });
    stdin
        .write_all(b"paramAdd key=fromOpenssl\nparamsView\nquit\n")
        .expect("write");
    // openssl exits when the server closes after `quit`.
    wait_bounded(&mut child);
    drop(stdin);
    let out = reader.join().expect("reader");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.contains("\"welcome\"")),
        "{out}"
    );
    assert!(out.contains(r#""data":{"key":"fromOpenssl"}"#), "{out}");
    assert!(
        out.contains(r#"{"status":"Bye!","context":"api"}"#),
        "{out}"
    );
}

#[test]
fn bad_tls_material_stops_the_server_naming_the_file() {
    let p = pki();
    let missing = p.dir.join("missing.pem");
    let empty = p.dir.join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let cases = [
        (
            Some(missing.clone()),
            Some(p.server_key.clone()),
            "missing.pem",
        ),
        (
            Some(empty.clone()),
            Some(p.server_key.clone()),
            "holds no certificate",
        ),
        (
            Some(p.server_cert.clone()),
            Some(p.client_key.clone()),
            "does not fit the certificate",
        ),
        (
            Some(p.server_cert.clone()),
            Some(p.server_cert.clone()),
            "holds no private key",
        ),
    ];
    for (cert, key, expect) in cases {
        let mut cfg = test_config();
        cfg.servers.socket.secure = true;
        cfg.servers.socket.server_options.cert = cert;
        cfg.servers.socket.server_options.key = key;
        let err = actionwire::Server::builder(cfg)
            .build()
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(expect), "{err}");
        assert!(err.contains("servers.socket.serverOptions"), "{err}");
    }
}

#[test]
fn a_near_maximal_handshake_flight_completes_through_a_small_client_window() {
    // A ~60 KB certificate chain (rustls clients accept 64 KiB per handshake message) read
    // through a 2 KiB client receive buffer. On loopback the kernel usually absorbs the whole
    // flight, so this does not reliably force the server's short-write path; that path (TLS
    // records waiting in rustls while the output queue is empty) is handled by counting
    // rustls's pending records as output when WRITABLE arrives.
    let p = pki();
    let ca = std::fs::read_to_string(&p.ca).expect("ca");
    let mut chain = std::fs::read_to_string(&p.server_cert).expect("cert");
    // Just under the 64 KiB a rustls client accepts for one handshake message.
    let copies = (60_000 - chain.len()) / ca.len();
    for _ in 0..copies {
        chain.push_str(&ca);
    }
    let big = p.dir.join("big-chain.pem");
    std::fs::write(&big, chain).expect("write chain");
    let srv = tls_server(|c| {
        c.servers.socket.server_options.cert = Some(big.clone());
        c.servers.socket.handshake_timeout = 5000;
    });
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.set_recv_buffer_size(2048).expect("rcvbuf");
    s.connect(&srv.addr.into()).expect("connect");
    let tcp: TcpStream = s.into();
    tcp.set_read_timeout(Some(GUARD)).expect("timeout");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(client_tls(None), name).expect("client");
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut welcome = Vec::new();
    let mut byte = [0u8; 1];
    while !welcome.ends_with(b"\r\n") {
        stream
            .read_exact(&mut byte)
            .expect("welcome after a large flight");
        welcome.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&welcome).contains("\"welcome\""));
}

/// The TLS 1.3 suite a client preferring AES-256-GCM (as OpenSSL and Node do) gets.
fn suite_for_an_aes256_first_client(srv: &TestServer) -> rustls::CipherSuite {
    use rustls::crypto::ring::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
    use rustls::pki_types::pem::PemObject;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256];
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(&pki().ca).expect("ca"))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut sock = TcpStream::connect(srv.addr).expect("connect");
    sock.set_read_timeout(Some(GUARD)).expect("timeout");
    let mut first = [0u8; 1];
    // The welcome's first byte arrives after the handshake.
    rustls::Stream::new(&mut conn, &mut sock)
        .read_exact(&mut first)
        .expect("welcome");
    assert_eq!(&first, b"{");
    conn.negotiated_cipher_suite().expect("negotiated").suite()
}

#[test]
fn the_server_picks_the_sha256_suite_unless_told_to_follow_the_client() {
    let srv = tls_server(|_| {});
    assert_eq!(
        suite_for_an_aes256_first_client(&srv),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        "the server's order by default"
    );
    let srv = tls_server(|c| c.servers.socket.server_options.honor_cipher_order = false);
    assert_eq!(
        suite_for_an_aes256_first_client(&srv),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        "the client's order with honorCipherOrder false"
    );
}
