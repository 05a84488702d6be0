//! Accepting, reading, writing, backpressure, output limits and shutdown.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actionwire_reactor::{CloseReason, ConnId, EndpointKind, ListenerOptions, ReactorConfig};

use crate::toy::{Ev, Harness, Report, client, read_n, read_to_end, say};

/// A client whose receive window is 4 KiB: the server's writes to it come up short.
pub(crate) fn small_window_client(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("s");
    s.set_recv_buffer_size(4096).expect("rcvbuf");
    s.connect(&addr.into()).expect("connect");
    let c: std::net::TcpStream = s.into();
    c.set_read_timeout(Some(crate::toy::GUARD))
        .expect("timeout");
    c
}

#[test]
fn accepts_and_answers_pipelined_lines_in_order() {
    let h = Harness::default();
    let mut c = client(h.plain);
    h.opened(EndpointKind::Accepted);
    let mut all = String::new();
    let mut expected = String::new();
    for i in 0..2000 {
        all.push_str(&format!("line {i}\n"));
        expected.push_str(&format!("line {i}\n"));
    }
    c.write_all(all.as_bytes()).expect("write");
    let got = read_n(&mut c, expected.len());
    assert_eq!(String::from_utf8(got).expect("utf8"), expected);
    drop(c);
    h.stop().expect("clean stop");
}

#[test]
fn established_lines_are_read_before_the_turns_accepts() {
    let h = Harness::default();
    let mut c = client(h.plain);
    h.opened(EndpointKind::Accepted);
    // A round trip first: the turn that accepted `c` may have run out of its time for new
    // clients before the listener said WouldBlock (the listener then stays marked ready, and
    // the held turn below would accept after the gate opens); the turn that answers this
    // line accepts again and finds the backlog empty.
    c.write_all(b"!count accepted\n").expect("write");
    assert_eq!(read_n(&mut c, 2), b"1\n");
    // The loop held while 20 new clients wait in the backlog and the established client's
    // line arrives: one turn has both.
    h.send(Ev::Block);
    h.wait(|r| matches!(r, Report::Blocked).then_some(()));
    let newcomers: Vec<_> = (0..20).map(|_| client(h.plain)).collect();
    c.write_all(b"!count accepted\n").expect("write");
    h.gate.open();
    // Read before any of the newcomers was accepted.
    assert_eq!(read_n(&mut c, 2), b"1\n");
    for _ in &newcomers {
        h.opened(EndpointKind::Accepted);
    }
}

#[test]
fn backpressure_pauses_reading_and_loses_nothing() {
    let cfg = ReactorConfig {
        read_pause_bytes: 64 * 1024,
        output_soft_limit: 4 << 20,
        output_hard_limit: 8 << 20,
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    // 16 MiB of echo requests, all written before anything is read: the server must stop
    // reading (or it would queue past the 8 MiB hard limit and disconnect us).
    let line = format!("{}\n", "y".repeat(1023));
    let total = 16 * 1024;
    let mut writer = c.try_clone().expect("clone");
    let line2 = line.clone();
    let w = std::thread::spawn(move || {
        for _ in 0..total {
            writer.write_all(line2.as_bytes()).expect("write");
        }
        writer
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
    });
    // Nothing is read until the server says it paused (its counter, not a clock).
    let deadline = Instant::now() + crate::toy::GUARD;
    while h.stats.read_pauses.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "reading never paused");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut got = 0usize;
    let mut buf = vec![0; 256 * 1024];
    loop {
        let n = c.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == b'y' || b == b'\n'));
        got += n;
    }
    w.join().expect("writer");
    assert_eq!(got, total * line.len(), "every byte echoed");
    let (reason, max_queued, _) = h.closed(id);
    assert_eq!(reason, CloseReason::Eof);
    // Reading stops at 64 KiB queued; one turn reads at most 4 × 64 KiB more.
    assert!(
        max_queued <= 64 * 1024 + 4 * 64 * 1024 + line.len(),
        "output queued up to {max_queued} bytes: reading did not pause"
    );
}

#[test]
fn a_large_reply_through_a_small_window_arrives_whole() {
    // Larger than the kernel's send buffer can take at once, so writes come up short and
    // the rest waits for WRITABLE.
    let cfg = ReactorConfig {
        output_hard_limit: 64 << 20,
        output_soft_limit: 64 << 20,
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let mut c = small_window_client(h.plain);
    h.opened(EndpointKind::Accepted);
    say(&mut c, "!big 24000000");
    // Read slowly at first so the server's writes come up short and wait for WRITABLE.
    let mut got = Vec::new();
    let mut small = [0u8; 512];
    for _ in 0..64 {
        let n = c.read(&mut small).expect("read");
        got.extend_from_slice(&small[..n]);
    }
    got.extend(read_n(&mut c, 24_000_000 - got.len()));
    assert!(got.iter().all(|&b| b == b'x'));
    say(&mut c, "after");
    assert_eq!(read_n(&mut c, 6), b"after\n");
}

#[test]
fn the_hard_output_limit_disconnects_at_once() {
    let cfg = ReactorConfig {
        output_soft_limit: 64 * 1024,
        output_hard_limit: 1 << 20,
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "!big 2000000");
    let (reason, _, _) = h.closed(id);
    assert_eq!(reason, CloseReason::OutputLimit);
    assert_eq!(h.stats.closed_output_limit.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.closed.load(Ordering::Relaxed), 1);
    // A bystander is unaffected.
    let mut b = client(h.plain);
    say(&mut b, "still here");
    assert_eq!(read_n(&mut b, 11), b"still here\n");
}

#[test]
fn the_soft_output_limit_acts_on_its_timer_without_more_output() {
    let cfg = ReactorConfig {
        output_soft_limit: 64 * 1024,
        output_soft_duration: Duration::from_millis(300),
        output_hard_limit: 8 << 20,
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let mut c = small_window_client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    // One reply far over the soft limit, then nothing more is queued and nothing is read.
    let asked = Instant::now();
    say(&mut c, "!big 4000000");
    let (reason, _, at) = h.closed(id);
    assert_eq!(reason, CloseReason::OutputLimit);
    assert_eq!(h.stats.closed_output_limit.load(Ordering::Relaxed), 1);
    assert!(
        at - asked >= Duration::from_millis(300),
        "cut off after {:?}, before the soft limit's 300 ms",
        at - asked
    );
}

/// The bytes queued on `id` once every loop turn begun so far has finished (and with it
/// its flush pass).
fn settled_queue(h: &Harness, id: ConnId) -> usize {
    h.settle();
    h.send(Ev::Queued(id));
    h.wait(|r| match r {
        Report::Queued(bytes, _) => Some(bytes),
        _ => None,
    })
}

#[test]
fn output_exactly_at_the_soft_limit_on_a_blocked_socket_is_not_over_it() {
    let soft = 256 * 1024;
    let cfg = ReactorConfig {
        output_soft_limit: soft,
        output_soft_duration: Duration::from_millis(200),
        output_hard_limit: 64 << 20,
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let _c = small_window_client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    // Output the peer never reads, until the socket takes no more and some stays queued.
    let mut queued = 0;
    for _ in 0..1000 {
        h.send(Ev::Send(id, vec![b'x'; 16 * 1024]));
        queued = settled_queue(&h, id);
        if queued > 0 {
            break;
        }
    }
    assert!(queued > 0 && queued <= 16 * 1024, "never blocked: {queued}");
    // Topped up to exactly the soft limit while the socket is blocked: not over it, so no
    // clock starts, however long it stays.
    h.send(Ev::Send(id, vec![b'x'; soft - queued]));
    assert_eq!(
        settled_queue(&h, id),
        soft,
        "the socket took more meanwhile"
    );
    std::thread::sleep(Duration::from_millis(600)); // pacing: three soft durations, idle
    assert_eq!(h.stats.closed_output_limit.load(Ordering::Relaxed), 0);
    assert_eq!(settled_queue(&h, id), soft, "still open, still queued");
    // One byte more is over it: cut off after the soft duration.
    let over = Instant::now();
    h.send(Ev::Send(id, b"y".to_vec()));
    let (reason, _, at) = h.closed(id);
    assert_eq!(reason, CloseReason::OutputLimit);
    assert!(at - over >= Duration::from_millis(200));
}

#[test]
fn quit_drains_the_output_then_closes() {
    let h = Harness::default();
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    c.write_all(b"one\n!big 100000\n!quit\nignored\n")
        .expect("write");
    let mut expected = b"one\n".to_vec();
    expected.extend(vec![b'x'; 100_000]);
    expected.extend_from_slice(b"bye\n");
    assert_eq!(read_to_end(&mut c), expected);
    drop(c);
    let (reason, _, _) = h.closed(id);
    assert_eq!(reason, CloseReason::Quit);
}

#[test]
fn max_connections_pauses_accepting_and_resumes_below_ninety_percent() {
    let cfg = ReactorConfig {
        max_connections: 10,
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let mut clients: Vec<_> = (0..10).map(|_| client(h.plain)).collect();
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(h.opened(EndpointKind::Accepted));
    }
    // The 11th waits in the backlog: it gets no answer while the server is full.
    let mut late = client(h.plain);
    say(&mut late, "late");
    // One closing (10 → 9) is not below 90 %: two full loop turns later (each ping is
    // answered in a turn of its own, and every turn runs the accept pass), still nothing.
    drop(clients.remove(0));
    h.closed(ids[0]);
    for _ in 0..2 {
        h.send(Ev::Ping);
        loop {
            match h.next() {
                Report::Pong(_) => break,
                Report::Opened(..) => panic!("accepted again at 90 % of maxConnections"),
                _ => {}
            }
        }
    }
    // Two (→ 8) are below 90 %.
    drop(clients.remove(0));
    h.closed(ids[1]);
    h.opened(EndpointKind::Accepted);
    assert_eq!(read_n(&mut late, 5), b"late\n");
    drop(clients);
}

#[test]
fn shutdown_closes_every_endpoint_and_the_loop_returns() {
    let h = Harness::default();
    let mut c = client(h.plain);
    h.opened(EndpointKind::Accepted);
    say(&mut c, "hello");
    assert_eq!(read_n(&mut c, 6), b"hello\n");
    let tx = h.tx.clone();
    // The client reads to the end and closes, as a well-behaved peer does.
    let reader = std::thread::spawn(move || read_to_end(&mut c));
    let (result, last) = h.stop_collecting();
    result.expect("the loop returns Ok");
    assert_eq!(reader.join().expect("reader"), b"shutting down\n");
    // The handler's last word came after every endpoint had closed.
    let closed = last.iter().position(|r| matches!(r, Report::Closed(..)));
    let stopped = last.iter().position(|r| matches!(r, Report::Stopped(0)));
    assert!(
        matches!((closed, stopped), (Some(c), Some(s)) if c < s),
        "{last:?}"
    );
    // After the loop stops, events are refused, not queued forever.
    assert!(tx.try_send(Ev::Ping).is_err());
}

#[test]
fn an_idle_loop_sleeps() {
    let h = Harness::default();
    let mut c = client(h.plain);
    h.opened(EndpointKind::Accepted);
    say(&mut c, "x");
    assert_eq!(read_n(&mut c, 2), b"x\n");
    let before = h.turns();
    // Half a second with nothing to do (a scenario, not a wait): no timers are set, so the
    // loop should not turn at all; a spinning loop turns millions of times.
    std::thread::sleep(Duration::from_millis(500));
    let idle_turns = h.turns() - before;
    assert!(idle_turns <= 5, "{idle_turns} loop turns while idle");
}

#[test]
fn a_loop_whose_timers_are_far_off_sleeps_until_them() {
    // Idle and keep-alive a minute away: the wheel must not wake the loop before then.
    let opts = ListenerOptions {
        keepalive_interval: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        handshake_timeout: Duration::from_secs(60),
        ..ListenerOptions::default()
    };
    let h = Harness::start(ReactorConfig::default(), opts);
    let mut clients: Vec<_> = (0..20).map(|_| client(h.plain)).collect();
    for c in &mut clients {
        h.opened(EndpointKind::Accepted);
        say(c, "x");
        assert_eq!(read_n(c, 2), b"x\n");
    }
    let before = h.turns();
    // Half a second idle (a scenario, not a wait): five ticks pass, no deadline is near.
    std::thread::sleep(Duration::from_millis(500));
    let idle_turns = h.turns() - before;
    assert!(
        idle_turns <= 2,
        "{idle_turns} loop turns with every timer a minute away"
    );
}

#[test]
fn job_results_come_back_to_their_endpoint() {
    let h = Harness::default();
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    h.gate.open();
    say(&mut c, "!job");
    let (got, value) = h.wait(|r| match r {
        Report::Completion(i, v) => Some((i, v)),
        _ => None,
    });
    assert_eq!((got, value), (id, 7));
}

#[test]
fn completions_from_other_threads_reach_open_endpoints_only() {
    let h = Harness::default();
    let mut a = client(h.plain);
    let a_id = h.opened(EndpointKind::Accepted);
    let b = client(h.plain);
    let b_id = h.opened(EndpointKind::Accepted);
    drop(b);
    assert_eq!(h.closed(b_id).0, CloseReason::Eof);
    // One for the closed endpoint (dropped: the toy would panic on it), whole turns, then
    // one for the open one (delivered, and the first completion reported).
    h.send(Ev::FromThread(b_id, 1));
    h.settle();
    h.settle();
    h.send(Ev::FromThread(a_id, 2));
    let (got, value) = h.wait(|r| match r {
        Report::Completion(i, v) => Some((i, v)),
        _ => None,
    });
    assert_eq!(
        (got, value),
        (a_id, 2),
        "the closed endpoint's completion was dropped"
    );
    say(&mut a, "still");
    assert_eq!(read_n(&mut a, 6), b"still\n");
    assert_eq!(h.stats.open.load(Ordering::Relaxed), 1);
}

#[test]
fn an_interrupted_poll_goes_on() {
    let h = Harness::default();
    let mut c = client(h.plain);
    h.opened(EndpointKind::Accepted);
    // Interrupt the loop while it sits idle in epoll_wait (a moment after its last turn,
    // so that the signal finds it there), several times.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(30)); // pacing: let the loop go idle
        h.interrupt();
        std::thread::sleep(Duration::from_millis(30)); // pacing: the signal lands first
        h.send(Ev::Ping);
        h.wait(|r| matches!(r, Report::Pong(_)).then_some(()));
    }
    say(&mut c, "still");
    assert_eq!(read_n(&mut c, 6), b"still\n");
}

#[test]
fn max_connections_zero_means_one() {
    let cfg = ReactorConfig {
        max_connections: 0,
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let mut c = client(h.plain);
    h.opened(EndpointKind::Accepted);
    say(&mut c, "one");
    assert_eq!(read_n(&mut c, 4), b"one\n");
}

/// Closes `s` with a reset (SO_LINGER 0) instead of a FIN.
pub(crate) fn reset(s: std::net::TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(s);
}

#[test]
fn a_peer_that_resets_is_closed_with_an_error() {
    let h = Harness::default();
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "x");
    assert_eq!(read_n(&mut c, 2), b"x\n");
    reset(c);
    let reason = h.closed(id).0;
    assert!(
        matches!(reason, CloseReason::Error | CloseReason::Eof),
        "{reason:?}"
    );
}

#[test]
fn a_reset_while_closing_keeps_the_closing_reason() {
    let h = Harness::default();
    let mut c = small_window_client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    // A reply far bigger than the window, then quit: the endpoint drains while we do not read.
    // One write, so both lines are read together before reading pauses for the big reply.
    c.write_all(b"!big 4000000\n!quit\n").expect("write");
    let mut some = [0u8; 4096];
    c.read_exact(&mut some).expect("the reply has started");
    reset(c);
    assert_eq!(h.closed(id).0, CloseReason::Quit);
}

#[test]
fn a_short_read_is_the_last_one_until_the_next_edge() {
    let h = Harness::default();
    let mut c = client(h.plain);
    h.opened(EndpointKind::Accepted);
    say(&mut c, "x");
    assert_eq!(read_n(&mut c, 2), b"x\n");
    h.send(Ev::Ping); // settle: the turn that wrote the echo is over
    h.wait(|r| matches!(r, Report::Pong(_)).then_some(()));
    for line in ["one", "two", "three"] {
        let before = h.stats.reads.load(Ordering::Relaxed);
        say(&mut c, line);
        assert_eq!(
            read_n(&mut c, line.len() + 1),
            format!("{line}\n").as_bytes()
        );
        let reads = h.stats.reads.load(Ordering::Relaxed) - before;
        assert_eq!(reads, 1, "{line}: {reads} reads for one short line");
    }
}

#[test]
fn a_lingering_endpoint_discards_late_input_and_waits_for_the_fin() {
    let h = Harness::default();
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    h.send(Ev::Close(id));
    // Our side sees the server's FIN: it lingers now.
    assert_eq!(read_to_end(&mut c), b"");
    c.write_all(b"late input the server must read and drop\n")
        .expect("write");
    // Two turns after the late input arrived (a ping is answered before the turn's read
    // pass): the endpoint is still there, waiting.
    for _ in 0..2 {
        h.send(Ev::Ping);
        h.wait(|r| match r {
            Report::Closed(i, reason, _, _) if i == id => {
                panic!("closed ({reason:?}) before the peer's FIN")
            }
            Report::Pong(_) => Some(()),
            _ => None,
        });
    }
    drop(c);
    assert_eq!(h.closed(id).0, CloseReason::Quit);
}

#[test]
fn listeners_with_reuse_port_share_one_port_and_the_kernel_spreads_connections() {
    let opts = ListenerOptions {
        reuse_port: true,
        ..ListenerOptions::default()
    };
    let a = Harness::start(ReactorConfig::default(), opts.clone());
    let b = Harness::try_start_at(ReactorConfig::default(), opts, a.plain)
        .expect("a second loop binds the same port");
    // Without SO_REUSEPORT the port is not available.
    let refused = Harness::try_start_at(
        ReactorConfig::default(),
        ListenerOptions::default(),
        a.plain,
    );
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(io::ErrorKind::AddrInUse)
    );
    // The kernel hashes each connection's addresses: 64 clients all landing on one loop
    // would take odds of 2^-63.
    let clients: Vec<_> = (0..64).map(|_| client(a.plain)).collect();
    let accepted = |h: &Harness| h.stats.accepted.load(Ordering::Relaxed);
    let deadline = Instant::now() + crate::toy::GUARD;
    while accepted(&a) + accepted(&b) < 64 {
        assert!(Instant::now() < deadline, "clients not accepted in time");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(accepted(&a) > 0 && accepted(&b) > 0, "both loops accept");
    drop(clients);
}
