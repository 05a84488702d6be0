//! Outbound endpoints: connect to a listener of the same reactor, over plain TCP and TLS;
//! refusal and timeout.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actionwire_reactor::{CloseReason, ConnectOptions, EndpointKind};

use crate::toy::{Ev, Harness, Report};

/// Collects what an outbound endpoint receives until `n` bytes arrived.
fn receive(h: &Harness, id: actionwire_reactor::ConnId, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        if let Report::Data(i, bytes) = h.next() {
            assert_eq!(i, id);
            got.extend(bytes);
        }
    }
    got
}

fn round_trip(h: &Harness, opts: ConnectOptions, addr: std::net::SocketAddr) {
    let out = h.connect(addr, opts);
    // Ask the accepted side (the toy protocol) for an echo and a large reply.
    h.send(Ev::Send(out, b"hello\n!big 200000\nbye\n".to_vec()));
    let got = receive(h, out, 6 + 200_000 + 4);
    assert_eq!(&got[..6], b"hello\n");
    assert!(got[6..200_006].iter().all(|&b| b == b'x'));
    assert_eq!(&got[200_006..], b"bye\n");
    assert_eq!(h.stats.outbound_connected.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.outbound_open.load(Ordering::Relaxed), 1);
    h.send(Ev::Close(out));
    assert_eq!(h.closed(out).0, CloseReason::Quit);
    assert_eq!(h.stats.outbound_open.load(Ordering::Relaxed), 0);
    assert_eq!(h.stats.outbound_failed.load(Ordering::Relaxed), 0);
}

#[test]
fn outbound_over_plain_tcp_to_our_own_listener() {
    let h = Harness::default();
    round_trip(&h, ConnectOptions::default(), h.plain);
    h.stop().expect("clean stop");
}

#[test]
fn outbound_over_tls_as_a_rustls_client() {
    let h = Harness::default();
    let opts = ConnectOptions {
        tls: Some(h.client_tls()),
        ..ConnectOptions::default()
    };
    round_trip(&h, opts, h.tls);
    h.stop().expect("clean stop");
}

#[test]
fn a_tls_client_that_does_not_trust_the_server_fails_to_connect() {
    let h = Harness::default();
    let stranger = crate::toy::certs(); // trusts another certificate
    let opts = ConnectOptions {
        tls: Some(actionwire_reactor::ClientTls {
            config: stranger.client,
            server_name: rustls::pki_types::ServerName::try_from("localhost").expect("name"),
        }),
        ..ConnectOptions::default()
    };
    h.send(Ev::Connect(h.tls, opts));
    let reason = h.wait(|r| match r {
        Report::Opened(_, EndpointKind::Outbound) => panic!("opened with an untrusted cert"),
        Report::Closed(_, reason, _, _) if reason != CloseReason::Error => Some(reason),
        _ => None,
    });
    assert_eq!(reason, CloseReason::ConnectFailed);
    assert_eq!(h.stats.outbound_failed.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.outbound_connected.load(Ordering::Relaxed), 0);
}

#[test]
fn a_refused_connect_is_reported() {
    let h = Harness::default();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }; // closed again: nothing listens there
    h.send(Ev::Connect(port, ConnectOptions::default()));
    let reason = h.wait(|r| match r {
        Report::Closed(_, reason, _, _) => Some(reason),
        Report::ConnectRefusedAtOnce(e) => {
            assert!(!e.is_empty());
            Some(CloseReason::ConnectFailed)
        }
        Report::Opened(_, EndpointKind::Outbound) => panic!("connected to a closed port"),
        _ => None,
    });
    assert_eq!(reason, CloseReason::ConnectFailed);
}

#[test]
fn a_connect_that_never_completes_times_out() {
    use socket2::{Domain, Socket, Type};
    let h = Harness::default();
    // A listener that never accepts, with a backlog of one: once it holds a connection,
    // further SYNs are dropped and a connect stays pending.
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .expect("a")
            .into(),
    )
    .expect("bind");
    l.listen(0).expect("listen");
    let addr = l.local_addr().expect("addr").as_socket().expect("inet");
    let fillers: Vec<Socket> = (0..4)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            s.set_nonblocking(true).expect("nonblocking");
            let _ = s.connect(&addr.into());
            s
        })
        .collect();
    let opts = ConnectOptions {
        connect_timeout: Duration::from_millis(400),
        ..ConnectOptions::default()
    };
    let asked = Instant::now();
    h.send(Ev::Connect(addr, opts));
    let (reason, at) = h.wait(|r| match r {
        Report::Closed(_, reason, _, at) => Some((reason, at)),
        Report::Opened(_, EndpointKind::Outbound) => panic!("connected to a full backlog"),
        _ => None,
    });
    assert_eq!(reason, CloseReason::ConnectTimeout);
    assert!(at - asked >= Duration::from_millis(400), "{:?}", at - asked);
    assert_eq!(h.stats.outbound_failed.load(Ordering::Relaxed), 1);
    drop(fillers);
}

#[test]
fn closing_an_outbound_endpoint_during_its_tls_handshake_drops_it_at_once() {
    // A linger far past the guard: only dropping the endpoint at once ends it in time.
    let cfg = actionwire_reactor::ReactorConfig {
        linger: Duration::from_secs(120),
        ..actionwire_reactor::ReactorConfig::default()
    };
    let h = Harness::start(cfg, actionwire_reactor::ListenerOptions::default());
    // A peer that accepts and never answers the ClientHello.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let opts = ConnectOptions {
        tls: Some(h.client_tls()),
        ..ConnectOptions::default()
    };
    h.send(Ev::Connect(silent.local_addr().expect("addr"), opts));
    let out = h.wait(|r| match r {
        Report::Connecting(id) => Some(id),
        _ => None,
    });
    let (mut peer, _) = silent.accept().expect("accept");
    peer.set_read_timeout(Some(crate::toy::GUARD))
        .expect("timeout");
    // The ClientHello arrived: the connect is done and the handshake under way.
    let mut hello = [0u8; 5];
    std::io::Read::read_exact(&mut peer, &mut hello).expect("client hello");
    assert_eq!(hello[0], 0x16, "a TLS handshake record");
    h.send(Ev::Close(out));
    assert_eq!(h.closed(out).0, CloseReason::Quit);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut peer, &mut rest).expect("EOF");
    h.stop().expect("clean stop");
}

/// Closes `stream` with a reset (SO_LINGER 0) instead of a FIN.
fn reset(stream: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid descriptor and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
    drop(stream);
}

#[test]
fn bytes_queued_on_an_endpoint_the_peer_reset_are_reported_unsent() {
    let h = Harness::default();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let out = h.connect(peer.local_addr().expect("addr"), ConnectOptions::default());
    let (accepted, _) = peer.accept().expect("accept");
    // Hold the loop, so that the reset is not seen before the bytes are queued: the write
    // is what finds it, and nothing of the bytes can have reached the peer.
    h.send(Ev::Block);
    h.wait(|r| matches!(r, Report::Blocked).then_some(()));
    reset(accepted);
    h.send(Ev::Send(out, b"request".to_vec()));
    h.gate.open();
    let unsent = h.wait(|r| match r {
        Report::Unsent(i, n) if i == out => Some(n),
        Report::Closed(i, ..) if i == out => panic!("closed without reporting unsent bytes"),
        _ => None,
    });
    assert_eq!(unsent, 7);
    assert_eq!(h.closed(out).0, CloseReason::Error);
    h.stop().expect("clean stop");
}

#[test]
fn bytes_that_reached_the_socket_are_not_reported_unsent() {
    let h = Harness::default();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let out = h.connect(peer.local_addr().expect("addr"), ConnectOptions::default());
    let (mut accepted, _) = peer.accept().expect("accept");
    h.send(Ev::Send(out, b"request".to_vec()));
    let mut got = [0u8; 7];
    std::io::Read::read_exact(&mut accepted, &mut got).expect("the bytes arrive");
    reset(accepted);
    h.wait(|r| match r {
        Report::Unsent(i, _) if i == out => panic!("written bytes reported unsent"),
        Report::Closed(i, reason, ..) if i == out => Some(reason),
        _ => None,
    });
    h.stop().expect("clean stop");
}
