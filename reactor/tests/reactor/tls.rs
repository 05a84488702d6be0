//! TLS on accepted endpoints, driven by a blocking rustls client.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actionwire_reactor::{CloseReason, EndpointKind};
use rustls::pki_types::ServerName;

use crate::toy::{Harness, Report, client};

#[test]
fn tls_server_echoes_and_closes_with_close_notify() {
    let h = Harness::default();
    let tcp = client(h.tls);
    let conn = rustls::ClientConnection::new(
        Arc::clone(&h.certs.client),
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"over tls\n!big 100000\n!quit\n")
        .expect("write");
    let id = h.opened(EndpointKind::Accepted);
    let mut all = Vec::new();
    // read_to_end succeeds only on a clean close_notify (rustls reports a missing one).
    tls.read_to_end(&mut all).expect("clean TLS close");
    assert_eq!(&all[..9], b"over tls\n");
    assert_eq!(all.len(), 9 + 100_000 + 4);
    assert_eq!(&all[all.len() - 4..], b"bye\n");
    drop(tls);
    assert_eq!(h.closed(id).0, CloseReason::Quit);
}

#[test]
fn a_resumed_handshake_is_counted_apart_from_full_ones() {
    let h = Harness::default();
    let echo = |expect_resumed: bool| {
        let conn = rustls::ClientConnection::new(
            Arc::clone(&h.certs.client),
            ServerName::try_from("localhost").expect("name"),
        )
        .expect("client");
        let mut tls = rustls::StreamOwned::new(conn, client(h.tls));
        tls.write_all(b"hi\n").expect("write");
        let mut line = [0u8; 3];
        // The tickets come before the echo: read past it, the client has them.
        tls.read_exact(&mut line).expect("echo");
        assert_eq!(&line, b"hi\n");
        let kind = tls.conn.handshake_kind();
        assert_eq!(kind == Some(rustls::HandshakeKind::Resumed), expect_resumed);
        h.opened(EndpointKind::Accepted)
    };
    echo(false);
    echo(true);
    assert_eq!(h.stats.tls_handshakes.load(Ordering::Relaxed), 2);
    assert_eq!(h.stats.tls_resumed.load(Ordering::Relaxed), 1);
}

#[test]
fn garbage_instead_of_a_client_hello_is_dropped_without_opening() {
    let h = Harness::default();
    let mut c = client(h.tls);
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest); // an alert, then the close
    assert!(!rest.starts_with(b"GET"));
    let reason = h.wait(|r| match r {
        Report::Opened(..) => panic!("opened without a handshake"),
        Report::Closed(_, reason, _, _) => Some(reason),
        _ => None,
    });
    assert_eq!(reason, CloseReason::Error);
}

#[test]
fn a_large_tls_reply_through_a_small_window_arrives_whole_and_is_counted() {
    // More than the server's socket send buffer can take (loopback buffers grow to several MiB).
    const N: usize = 24_000_000;
    let cfg = actionwire_reactor::ReactorConfig {
        output_soft_limit: 32 << 20,
        output_hard_limit: 64 << 20,
        ..actionwire_reactor::ReactorConfig::default()
    };
    let h = Harness::start(cfg, actionwire_reactor::ListenerOptions::default());
    let tcp = crate::io::small_window_client(h.tls);
    let conn = rustls::ClientConnection::new(
        Arc::clone(&h.certs.client),
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(format!("!big {N}\n").as_bytes())
        .expect("write");
    let id = h.opened(EndpointKind::Accepted);
    // Read slowly at first, so the server meets a full socket and a full rustls buffer.
    let mut got = vec![0u8; N];
    let mut at = 0;
    for _ in 0..32 {
        let n = tls.read(&mut got[at..at + 512]).expect("read");
        at += n;
    }
    tls.read_exact(&mut got[at..]).expect("the rest");
    assert!(got.iter().all(|&b| b == b'x'));
    tls.write_all(b"after\n").expect("write");
    let mut after = [0u8; 6];
    tls.read_exact(&mut after)
        .expect("echo after the big reply");
    assert_eq!(&after, b"after\n");
    // Everything written was counted (records add a little on top of the plaintext).
    let out = h.stats.bytes_out.load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert!(
        (N..N + N / 10).contains(&out),
        "bytes_out {out} for {N} bytes of plaintext"
    );
    drop(tls);
    let _ = h.closed(id);
}
