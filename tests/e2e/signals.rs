//! Signals to the binary (the README's "Signals"): SIGINT and SIGTERM shut down gracefully, a
//! second one exits at once, SIGHUP reloads TLS certificates and never stops the server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::harness::*;

/// A scratch directory for one test's files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("aw-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with `--log-level info`, a configuration file holding `config` (JSON), and
/// `extra` flags.
fn spawn_configured(scratch: &Scratch, config: &[u8], extra: &[&str]) -> ChildServer {
    let path = scratch.file("config.json", config);
    let mut args = vec![
        "--log-level",
        "info",
        "--config",
        path.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    ChildServer::spawn("true", &args)
}

#[test]
fn sigint_shuts_down_gracefully_and_sighup_without_tls_keeps_serving() {
    let srv = ChildServer::spawn("true", &["--log-level", "info"]);
    let mut c = Client::connect(srv.addr);
    srv.signal(libc::SIGHUP);
    wait_until("the SIGHUP log line", || {
        srv.logged("no TLS listener, nothing to reload")
    });
    assert_eq!(ok_data(&c.request("paramView x")), serde_json::Value::Null);
    srv.signal(libc::SIGINT);
    assert_eq!(c.line(), r#"{"status":"Bye!","context":"api"}"#);
    c.expect_closed();
    let mut child = srv;
    let status = wait_bounded(&mut child.child);
    assert!(status.success(), "{status}");
    assert!(child.logged("signal 2 received: shutting down gracefully"));
}

#[test]
fn a_second_signal_exits_at_once() {
    let scratch = Scratch::new("second-signal");
    // A grace far longer than the test's guard: only the second signal can end the process in time.
    let srv = spawn_configured(
        &scratch,
        br#"{"general":{"pendingShutdownWaitLimit":600000}}"#,
        &[],
    );
    let mut busy = Client::connect(srv.addr);
    busy.send(r#"{"action":"sleepTest","params":{"sleepDuration":60000}}"#);
    assert_eq!(ok_data(&busy.request("detailsView"))["pendingActions"], 1);
    srv.signal(libc::SIGTERM);
    wait_until("the first signal's log line", || {
        srv.logged("shutting down gracefully")
    });
    srv.signal(libc::SIGINT);
    let mut child = srv;
    let status = wait_bounded(&mut child.child);
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(child.logged("second signal 2: exiting now"));
}

/// A certificate for localhost signed by a CA made here (not the suite's CA), as PEM.
fn other_identity() -> (rcgen::Certificate, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("sign");
    (ca_cert, leaf.pem(), key.serialize_pem())
}

/// Completes a TLS handshake with the server and returns the certificate it presented (DER).
fn presented_certificate(addr: SocketAddr, roots: &[&Path]) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store
            .add(CertificateDer::from_pem_file(r).expect("root pem"))
            .expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(GUARD)).expect("timeout");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("handshake");
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut welcome = [0u8; 16];
    tls.read_exact(&mut welcome)
        .expect("welcome after the handshake");
    tls.write_all(b"quit\r\n").expect("quit");
    conn.peer_certificates().expect("peer certificates")[0]
        .as_ref()
        .to_vec()
}

fn der_of(pem_path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(pem_path)
        .expect("pem")
        .as_ref()
        .to_vec()
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let p = pki();
    let scratch = Scratch::new("reload");
    let cert = scratch.file("cert.pem", &std::fs::read(&p.server_cert).expect("cert"));
    let key = scratch.file("key.pem", &std::fs::read(&p.server_key).expect("key"));
    let (other_ca, other_cert, other_key) = other_identity();
    let other_ca = scratch.file("other-ca.pem", other_ca.pem().as_bytes());
    let roots = [p.ca.as_path(), other_ca.as_path()];
    let srv = ChildServer::spawn(
        "true",
        &[
            "--log-level",
            "info",
            "--tls-cert",
            cert.to_str().expect("utf-8 path"),
            "--tls-key",
            key.to_str().expect("utf-8 path"),
        ],
    );
    let original = der_of(&p.server_cert);
    assert_eq!(presented_certificate(srv.addr, &roots), original);
    let mut old = Client::connect_tls(srv.addr, client_tls(None));
    assert_eq!(ok_data(&old.request("roomAdd defaultRoom")), true);

    // New files in place, then SIGHUP: new handshakes see them, the old session goes on.
    std::fs::write(&cert, &other_cert).expect("write new cert");
    std::fs::write(&key, &other_key).expect("write new key");
    srv.signal(libc::SIGHUP);
    wait_until("the reload log line", || {
        srv.logged("servers.socket certificate reloaded from")
    });
    let rotated = presented_certificate(srv.addr, &roots);
    assert_ne!(rotated, original);
    assert_eq!(rotated, der_of(&cert));
    assert_eq!(
        ok_data(&old.request("roomView defaultRoom"))["membersCount"],
        1
    );

    // A key that does not fit the certificate: logged, and the last good pair stays.
    std::fs::write(&key, std::fs::read(&p.server_key).expect("key")).expect("write bad key");
    srv.signal(libc::SIGHUP);
    wait_until("the failed reload's log line", || {
        srv.logged("servers.socket keeps its previous certificate")
    });
    assert!(srv.logged("does not fit the certificate"));
    assert_eq!(presented_certificate(srv.addr, &roots), rotated);
    // A file that is not PEM at all: the same.
    std::fs::write(&cert, b"not a certificate").expect("write garbage");
    srv.signal(libc::SIGHUP);
    wait_until("the second failed reload's log line", || {
        srv.logged("holds no certificate")
    });
    assert_eq!(presented_certificate(srv.addr, &roots), rotated);
    assert_eq!(ok_data(&old.request("roomLeave defaultRoom")), true);
}

/// The HTTP address from a child server's start line (`…, and HTTP on ADDR; …`).
fn web_addr_of(srv: &ChildServer) -> SocketAddr {
    let log = srv.log.lock().unwrap_or_else(|p| p.into_inner());
    let line = log
        .iter()
        .find(|l| l.contains(" listening on "))
        .expect("start line");
    let rest = line
        .split("and HTTP on ")
        .nth(1)
        .expect("HTTP listener in the start line");
    let addr: String = rest
        .chars()
        .take_while(|c| !matches!(c, ';' | ')' | ','))
        .collect();
    addr.parse().expect("HTTP address")
}

fn http_status(web: SocketAddr) -> (u16, serde_json::Value) {
    let mut conn = TcpStream::connect(web).expect("connect");
    conn.write_all(b"GET /status HTTP/1.0\r\n\r\n")
        .expect("write");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read");
    let code = text[9..12].parse().expect("status code");
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    (code, serde_json::from_str(body).expect("json"))
}

#[test]
fn sigterm_with_drain_seconds_keeps_serving_while_status_says_503() {
    let scratch = Scratch::new("drain");
    let srv = spawn_configured(
        &scratch,
        br#"{"general":{"drainSeconds":1}}"#,
        &["--web-port", "0"],
    );
    let web = web_addr_of(&srv);
    assert_eq!(http_status(web).0, 200);
    let mut c = Client::connect(srv.addr);
    srv.signal(libc::SIGTERM);
    wait_until("/status draining", || {
        let (code, body) = http_status(web);
        code == 503 && body["nodeStatus"] == "Node Draining"
    });
    // Still served while draining, on a connection old or new.
    assert_eq!(ok_data(&c.request("paramView x")), serde_json::Value::Null);
    let mut late = Client::connect(srv.addr);
    assert_eq!(
        ok_data(&late.request("paramView x")),
        serde_json::Value::Null
    );
    // Then the graceful shutdown: Bye, and a clean exit.
    assert_eq!(c.line(), r#"{"status":"Bye!","context":"api"}"#);
    assert_eq!(late.line(), r#"{"status":"Bye!","context":"api"}"#);
    let mut child = srv;
    assert!(wait_bounded(&mut child.child).success());
    assert!(child.logged("drain over"));
}

#[test]
fn an_http_request_in_flight_does_not_hold_the_shutdown_after_its_reply() {
    let scratch = Scratch::new("http-shutdown");
    // A grace far longer than the test's guard: the server must not wait it out.
    let srv = spawn_configured(
        &scratch,
        br#"{"general":{"pendingShutdownWaitLimit":600000}}"#,
        &["--web-port", "0"],
    );
    let web = web_addr_of(&srv);
    let mut http = TcpStream::connect(web).expect("connect");
    http.set_read_timeout(Some(GUARD)).expect("timeout");
    // Long enough that the signal surely lands while it runs.
    http.write_all(b"GET /api/sleepTest?sleepDuration=2000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    // The action is running when the signal comes.
    let mut probe = Client::connect(srv.addr);
    // The status call counts itself: 2 while the sleep runs.
    wait_until("the action is pending", || {
        probe.request("status")["pendingActions"].as_u64() == Some(2)
    });
    drop(probe);
    srv.signal(libc::SIGTERM);
    let mut reply = Vec::new();
    http.read_to_end(&mut reply).expect("the reply, then EOF");
    let text = String::from_utf8_lossy(&reply);
    let log = || srv.log.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}\n{}",
        log()
    );
    // As HTTP clients do after `Connection: close`: the server sees the FIN (the endpoint
    // was paused for the action, which must not hide it) and finishes at once.
    drop(http);
    let mut child = srv;
    assert!(wait_bounded(&mut child.child).success());
}
