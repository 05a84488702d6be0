//! Where and when TLS handshake steps run: on the handshake threads (the default), a step
//! holds none of the loop's time; on the loop thread, a bounded number per turn after the
//! turn's established traffic.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use actionwire_reactor::{EndpointKind, ListenerOptions, ReactorConfig};
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::toy::{GUARD, Gate, Harness, Report, client};

/// Hands out its certificate only once its gate opens, and says on which thread it was
/// asked: a handshake step that holds whatever thread runs it.
struct HeldCert {
    key: Arc<CertifiedKey>,
    gate: Arc<Gate>,
    asked: Mutex<mpsc::Sender<Option<String>>>,
}

impl std::fmt::Debug for HeldCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldCert")
    }
}

impl ResolvesServerCert for HeldCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let thread = std::thread::current().name().map(str::to_string);
        let _ = self
            .asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(thread);
        self.gate.wait();
        Some(Arc::clone(&self.key))
    }
}

/// A loop whose TLS listener's certificate is held behind a gate; the receiver reports
/// each time it is asked for (with the asking thread's name). Handshake steps go to the
/// handshake thread whether or not there is traffic.
fn held_harness(
    opts: ListenerOptions,
) -> (
    Harness,
    Arc<Gate>,
    mpsc::Receiver<Option<String>>,
    Arc<rustls::ClientConfig>,
) {
    let cfg = ReactorConfig {
        handshake_traffic_window: Duration::MAX,
        ..ReactorConfig::default()
    };
    // The harness's certificate, handed out by a resolver that waits for the gate.
    let certs = crate::toy::certs();
    let gate = Arc::new(Gate::default());
    let (asked_tx, asked) = mpsc::channel();
    let resolver = HeldCert {
        key: Arc::clone(&certs.key),
        gate: Arc::clone(&gate),
        asked: Mutex::new(asked_tx),
    };
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&certs.provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let h = Harness::start_with_server_tls(cfg, opts, Arc::new(server));
    (h, gate, asked, certs.client)
}

/// A TLS client on its own thread: handshake, one line, its echo.
fn echo_over_tls(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    line: &'static [u8],
) -> std::thread::JoinHandle<std::io::Result<Vec<u8>>> {
    std::thread::spawn(move || {
        let name = ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(config, name).expect("client");
        let mut tls = rustls::StreamOwned::new(conn, client(addr));
        tls.write_all(line)?;
        let mut echo = vec![0u8; line.len()];
        tls.read_exact(&mut echo)?;
        Ok(echo)
    })
}

#[test]
fn a_handshake_step_runs_on_a_handshake_thread_while_the_loop_serves_others() {
    let (h, gate, asked, config) = held_harness(ListenerOptions::default());
    let tls = echo_over_tls(h.tls, config, b"over tls\n");
    // The first step is under way, holding its thread behind the gate...
    let thread = asked
        .recv_timeout(GUARD)
        .expect("the certificate asked for");
    assert_eq!(thread.as_deref(), Some("actionwire-handshake-0"));
    // ...and the loop still answers an established client (on the loop thread, this read
    // would wait for the gate, which only opens after it).
    let mut plain = client(h.plain);
    plain.write_all(b"ping\n").expect("write");
    let mut echo = [0u8; 5];
    plain
        .read_exact(&mut echo)
        .expect("an echo while a handshake step is held");
    assert_eq!(&echo, b"ping\n");
    gate.open();
    assert_eq!(tls.join().expect("client").expect("echo"), b"over tls\n");
    // The hello's step and the client's Finished (with its line) both ran away.
    assert!(h.stats.handshake_steps_away.load(Ordering::Relaxed) >= 2);
    assert_eq!(h.stats.tls_handshakes.load(Ordering::Relaxed), 1);
}

#[test]
fn without_established_traffic_handshake_steps_stay_on_the_loop() {
    // The default: away only with application bytes read in the last 10 ms, and nothing
    // has been read here.
    let h = Harness::default();
    let config = Arc::clone(&h.certs.client);
    let tls = echo_over_tls(h.tls, config, b"first\n");
    assert_eq!(tls.join().expect("client").expect("echo"), b"first\n");
    assert_eq!(h.stats.tls_handshakes.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.handshake_steps_away.load(Ordering::Relaxed), 0);
}

#[test]
fn a_session_that_comes_back_to_a_closed_endpoint_is_dropped_and_the_next_is_served() {
    let opts = ListenerOptions {
        handshake_timeout: Duration::from_millis(200),
        ..ListenerOptions::default()
    };
    let (h, gate, asked, config) = held_harness(opts);
    let name = ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::clone(&config), name).expect("client");
    let mut tcp = client(h.tls);
    conn.write_tls(&mut tcp).expect("client hello");
    asked
        .recv_timeout(GUARD)
        .expect("the certificate asked for");
    // The handshake deadline passes while the step is away: the endpoint is dropped.
    let reason = h.wait(|r| match r {
        Report::Closed(_, reason, _, _) => Some(reason),
        _ => None,
    });
    assert_eq!(reason, actionwire_reactor::CloseReason::HandshakeTimeout);
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest); // the server's close, nothing from rustls
    gate.open(); // the session comes back to nobody
    let next = echo_over_tls(h.tls, config, b"next\n");
    asked.recv_timeout(GUARD).expect("asked again");
    assert_eq!(next.join().expect("client").expect("echo"), b"next\n");
    assert_eq!(
        h.wait(|r| match r {
            Report::Opened(_, k) => Some(k),
            _ => None,
        }),
        EndpointKind::Accepted
    );
    assert_eq!(h.stats.tls_handshakes.load(Ordering::Relaxed), 1);
}

#[test]
fn a_burst_of_handshakes_is_spread_over_turns_and_every_client_is_served() {
    let cfg = actionwire_reactor::ReactorConfig {
        handshakes_per_turn: 1,
        handshake_threads: 0,
        ..actionwire_reactor::ReactorConfig::default()
    };
    let h = Harness::start(cfg, actionwire_reactor::ListenerOptions::default());
    // Hold the loop while five clients connect and send their ClientHello, so that all five
    // are waiting when it looks.
    h.send(crate::toy::Ev::Block);
    h.wait(|r| matches!(r, Report::Blocked).then_some(()));
    let (hello_sent, hellos) = std::sync::mpsc::channel();
    let clients: Vec<_> = (0..5u8)
        .map(|i| {
            let (addr, config) = (h.tls, Arc::clone(&h.certs.client));
            let hello_sent = hello_sent.clone();
            std::thread::spawn(move || {
                let mut tcp = client(addr);
                let name = ServerName::try_from("localhost").expect("name");
                let mut conn = rustls::ClientConnection::new(config, name).expect("client");
                conn.write_tls(&mut tcp).expect("client hello");
                hello_sent.send(()).expect("signal");
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                tls.write_all(&[b'a' + i, b'\n']).expect("write");
                let mut echo = [0u8; 2];
                tls.read_exact(&mut echo).expect("echo");
                echo
            })
        })
        .collect();
    for _ in 0..5 {
        hellos
            .recv_timeout(crate::toy::GUARD)
            .expect("a ClientHello");
    }
    h.gate.open();
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(c.join().expect("client"), [b'a' + i as u8, b'\n']);
    }
    // Five handshakes at one step per turn: at least four waited for a later turn.
    let deferred = h
        .stats
        .handshake_deferrals
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(deferred >= 4, "{deferred} handshake steps deferred");
    assert_eq!(
        h.stats
            .tls_handshakes
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
}

#[test]
fn established_lines_are_read_before_the_turns_handshake_steps() {
    let cfg = actionwire_reactor::ReactorConfig {
        handshakes_per_turn: 1,
        handshake_threads: 0,
        ..actionwire_reactor::ReactorConfig::default()
    };
    let h = Harness::start(cfg, actionwire_reactor::ListenerOptions::default());
    let mut plain = client(h.plain);
    h.opened(EndpointKind::Accepted);
    // Five TLS clients accepted (nothing sent yet), then the loop held while they send their
    // ClientHello and, after them, the established client its line: all six are readable
    // in the same turn, the line last.
    let tcps: Vec<_> = (0..5).map(|_| client(h.tls)).collect();
    crate::toy::wait_for("six accepted", || {
        h.stats.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 6
    });
    h.send(crate::toy::Ev::Block);
    h.wait(|r| matches!(r, Report::Blocked).then_some(()));
    let mut conns: Vec<_> = tcps
        .into_iter()
        .map(|mut tcp| {
            let name = ServerName::try_from("localhost").expect("name");
            let mut conn =
                rustls::ClientConnection::new(Arc::clone(&h.certs.client), name).expect("client");
            conn.write_tls(&mut tcp).expect("client hello");
            (conn, tcp)
        })
        .collect();
    plain.write_all(b"!count deferrals\n").expect("write");
    h.gate.open();
    let mut reply = [0u8; 2];
    plain.read_exact(&mut reply).expect("reply");
    // Read before the turn's handshake step, not behind one step and four deferrals.
    assert_eq!(&reply, b"0\n");
    // And every handshake still completes.
    for (conn, tcp) in conns.drain(..) {
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(b"hi\n").expect("write");
        let mut echo = [0u8; 3];
        tls.read_exact(&mut echo).expect("echo");
        assert_eq!(&echo, b"hi\n");
    }
}

#[test]
fn garbage_sent_to_a_handshake_thread_gets_an_alert_and_the_close() {
    let cfg = ReactorConfig {
        handshake_traffic_window: Duration::MAX,
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let mut c = client(h.tls);
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    // A TLS alert record (content type 21), written before the close.
    assert_eq!(rest.first(), Some(&21), "an alert first: {rest:?}");
    let reason = h.wait(|r| match r {
        Report::Opened(..) => panic!("opened without a handshake"),
        Report::Closed(_, reason, _, _) => Some(reason),
        _ => None,
    });
    assert_eq!(reason, actionwire_reactor::CloseReason::Error);
    assert_eq!(h.stats.handshake_steps_away.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.tls_failures.load(Ordering::Relaxed), 1);
}
