//! Listeners with the PROXY protocol: the header comes first, names the client, and is then
//! invisible to the application and to TLS; anything else is refused.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actionwire_reactor::{CloseReason, EndpointKind, ListenerOptions, ReactorConfig, Timeout};
use rustls::pki_types::ServerName;

use crate::toy::{Ev, Harness, Report, client, read_n, say};

fn proxied() -> Harness {
    let opts = ListenerOptions {
        proxy_protocol: true,
        keepalive_interval: Duration::from_millis(200),
        handshake_timeout: Duration::from_millis(700),
        ..ListenerOptions::default()
    };
    Harness::start(ReactorConfig::default(), opts)
}

/// The next `Proxied` report, then the endpoint's `Opened` (in that order).
fn proxied_then_opened(h: &Harness) -> (actionwire_reactor::ConnId, SocketAddr) {
    let (id, source) = h.wait(|r| match r {
        Report::Opened(..) => panic!("opened before its PROXY header"),
        Report::Proxied(id, source) => Some((id, source)),
        _ => None,
    });
    assert_eq!(h.opened(EndpointKind::Accepted), id);
    (id, source)
}

#[test]
fn a_v1_header_names_the_client_and_the_rest_is_the_applications() {
    let h = proxied();
    let mut c = client(h.plain);
    // Half a header, then a loop turn (the ping's), then the rest with the first line.
    c.write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 5")
        .expect("write");
    h.send(Ev::Ping);
    h.wait(|r| match r {
        Report::Opened(..) | Report::Proxied(..) => panic!("half a header was taken whole"),
        Report::Pong(_) => Some(()),
        _ => None,
    });
    c.write_all(b"1234 5000\r\nhello\n").expect("write");
    let (_, source) = proxied_then_opened(&h);
    assert_eq!(
        source,
        "192.0.2.7:51234".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(read_n(&mut c, 6), b"hello\n", "the header is not data");
    say(&mut c, "again");
    assert_eq!(read_n(&mut c, 6), b"again\n");
}

#[test]
fn a_v2_header_comes_before_the_tls_handshake() {
    let h = proxied();
    let mut tcp = client(h.tls);
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend([0x21, 0x21, 0, 36]); // v2 PROXY, TCP over IPv6, 36 bytes of addresses
    header.extend(
        "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets(),
    );
    header.extend(
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets(),
    );
    header.extend([0x0f, 0xa0, 0x13, 0x89]); // ports 4000 → 5001
    tcp.write_all(&header).expect("header");
    let conn = rustls::ClientConnection::new(
        Arc::clone(&h.certs.client),
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"over tls\n").expect("write");
    let (_, source) = proxied_then_opened(&h);
    assert_eq!(
        source,
        "[2001:db8::7]:4000".parse::<SocketAddr>().expect("addr")
    );
    let mut got = [0u8; 9];
    tls.read_exact(&mut got).expect("echo");
    assert_eq!(&got, b"over tls\n");
}

#[test]
fn a_header_naming_no_client_keeps_the_socket_address() {
    let h = proxied();
    let mut c = client(h.plain);
    c.write_all(b"PROXY UNKNOWN\r\nplain\n").expect("write");
    let id = h.wait(|r| match r {
        Report::Proxied(..) => panic!("no client was named"),
        Report::Opened(id, _) => Some(id),
        _ => None,
    });
    assert_eq!(read_n(&mut c, 6), b"plain\n");
    drop(c);
    assert_eq!(h.closed(id).0, CloseReason::Eof);
}

#[test]
fn anything_else_first_is_refused_and_silence_times_out_without_pings() {
    let h = proxied();
    let mut bad = client(h.plain);
    bad.write_all(b"paramView x\r\n").expect("write");
    let (reason, _) = h.wait(|r| match r {
        Report::Opened(..) | Report::Proxied(..) => panic!("a line taken for a header"),
        Report::Closed(_, reason, _, at) => Some((reason, at)),
        _ => None,
    });
    assert_eq!(reason, CloseReason::BadProxyHeader);
    assert_eq!(h.stats.proxy_failures.load(Ordering::Relaxed), 1);
    let mut end = Vec::new();
    assert_eq!(bad.read_to_end(&mut end).map(|_| end.len()).unwrap_or(0), 0);
    // Silent: only the handshake deadline applies, no keep-alive before the header.
    let _silent = client(h.plain);
    let reason = h.wait(|r| match r {
        Report::Timeout(_, Timeout::KeepAlive, _) => panic!("a keep-alive before the header"),
        Report::Opened(..) => panic!("opened without a header"),
        Report::Closed(_, reason, _, _) => Some(reason),
        _ => None,
    });
    assert_eq!(reason, CloseReason::HandshakeTimeout);
}

#[test]
fn a_client_the_application_closes_when_it_learns_who_it_is_never_opens() {
    let h = proxied();
    let mut c = client(h.plain);
    let [a, b, cc, d] = crate::toy::BANNED;
    c.write_all(format!("PROXY TCP4 {a}.{b}.{cc}.{d} 127.0.0.1 4000 5000\r\nhello\n").as_bytes())
        .expect("write");
    // The server's FIN, with nothing before it.
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("EOF");
    assert!(rest.is_empty(), "nothing was echoed: {rest:?}");
    drop(c); // ends the server's linger
    let reason = h.wait(|r| match r {
        Report::Opened(..) => panic!("opened after the application closed it"),
        Report::Closed(_, reason, _, _) => Some(reason),
        _ => None,
    });
    assert_eq!(reason, CloseReason::Quit);
}

#[test]
fn a_peer_that_resets_before_its_header_is_closed_with_an_error() {
    let h = proxied();
    let mut c = client(h.plain);
    // Half a header, so the server is waiting on the socket when the reset comes.
    c.write_all(b"PROXY TCP4 192.0.2").expect("write");
    h.settle();
    crate::io::reset(c);
    let reason = h.wait(|r| match r {
        Report::Closed(_, reason, _, _) => Some(reason),
        _ => None,
    });
    assert_eq!(reason, CloseReason::Error);
    assert_eq!(h.stats.handshake_timeouts.load(Ordering::Relaxed), 0);
}

#[test]
fn a_peer_that_ends_in_the_middle_of_its_header_is_refused_at_once() {
    let h = proxied(); // a 700 ms handshake timeout this must not wait for
    let mut c = client(h.plain);
    c.write_all(b"PROXY TCP4 192.0.2").expect("write");
    h.settle();
    c.shutdown(std::net::Shutdown::Write).expect("FIN");
    let reason = h.wait(|r| match r {
        Report::Closed(_, reason, _, _) => Some(reason),
        _ => None,
    });
    assert_eq!(reason, CloseReason::BadProxyHeader);
    assert_eq!(h.stats.proxy_failures.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.handshake_timeouts.load(Ordering::Relaxed), 0);
}
