//! The rest of the `Core` API a handler calls: what it tells about endpoints, shared and file
//! output, pausing reads, touching, and the output limits at their exact boundaries.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actionwire_reactor::{CloseReason, EndpointKind, ListenerOptions, ReactorConfig, Timeout};

use crate::toy::{Ev, Harness, Report, client, read_n, say};

fn line(c: &mut std::net::TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while c.read(&mut b).expect("read") == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn core_describes_its_endpoints() {
    let h = Harness::default();
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "!info");
    let peer = c.local_addr().expect("addr");
    assert_eq!(
        line(&mut c),
        format!(
            "len=1 empty=false shutting=false peer=Some({peer}) session=true open=true kind=Some(Accepted) accepted=1"
        )
    );
    let mut other = client(h.plain);
    h.opened(EndpointKind::Accepted);
    say(&mut other, "!info");
    assert!(line(&mut other).starts_with("len=2 empty=false"));
    drop(c);
    assert_eq!(h.closed(id).0, CloseReason::Eof);
}

#[test]
fn shared_and_file_output_arrive_and_refuse_closed_endpoints() {
    let h = Harness::default();
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    h.send(Ev::SendShared(id, b"shared\n".to_vec()));
    assert!(matches!(h.next(), Report::Sent(i, true) if i == id));
    assert_eq!(read_n(&mut c, 7), b"shared\n");
    let path = std::env::temp_dir().join(format!("aw-reactor-file-{}", std::process::id()));
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).expect("write file");
    h.send(Ev::SendFile(id, path.clone()));
    assert!(matches!(h.next(), Report::Sent(i, true) if i == id));
    // Right after queueing, before the loop flushes: one file, whose bytes stay on disk
    // (they do not count against the output limits, which bound memory).
    let queued = h.next();
    assert!(matches!(queued, Report::Queued(0, 1)), "{queued:?}");
    assert_eq!(read_n(&mut c, content.len()), content);
    say(&mut c, "!quit");
    assert_eq!(read_n(&mut c, 4), b"bye\n");
    drop(c);
    assert_eq!(h.closed(id).0, CloseReason::Quit);
    h.send(Ev::SendShared(id, b"late\n".to_vec()));
    assert!(matches!(h.next(), Report::Sent(i, false) if i == id));
    h.send(Ev::SendFile(id, path.clone()));
    assert!(matches!(h.next(), Report::Sent(i, false) if i == id));
    assert!(matches!(h.next(), Report::Queued(0, 0)));
    std::fs::remove_file(&path).ok();
}

#[test]
fn a_file_that_cannot_be_read_yet_holds_up_only_its_own_connection() {
    let h = Harness::default();
    let mut slow = client(h.plain);
    let slow_id = h.opened(EndpointKind::Accepted);
    let mut other = client(h.plain);
    h.opened(EndpointKind::Accepted);
    // A pipe stands for a disk that takes its time: reading it blocks until the test writes.
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    let file = std::fs::File::from(std::os::fd::OwnedFd::from(reader));
    h.send(Ev::SendOpenFile(slow_id, file, 10));
    assert!(matches!(h.next(), Report::Sent(i, true) if i == slow_id));
    h.send(Ev::Send(slow_id, b"after\n".to_vec()));
    // The loop serves everyone else meanwhile (a read on the loop thread would hang here).
    for line in ["one", "two", "three"] {
        say(&mut other, line);
        assert_eq!(
            read_n(&mut other, line.len() + 1),
            format!("{line}\n").as_bytes()
        );
    }
    std::io::Write::write_all(&mut writer, b"0123456789").expect("write");
    assert_eq!(
        read_n(&mut slow, 16),
        b"0123456789after\n",
        "in order, the file first"
    );
}

#[test]
fn paused_reading_leaves_input_in_the_socket_until_resumed() {
    let h = Harness::default();
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "!pause");
    assert_eq!(read_n(&mut c, 7), b"paused\n");
    let before = h.stats.bytes_in.load(Ordering::Relaxed);
    say(&mut c, "after");
    // Whole loop turns with the input ready (read passes included): still nothing read.
    h.settle();
    h.settle();
    assert_eq!(h.stats.bytes_in.load(Ordering::Relaxed), before);
    h.send(Ev::Resume(id));
    assert_eq!(read_n(&mut c, 6), b"after\n");
}

#[test]
fn reading_resumed_by_a_timer_goes_on_without_another_event() {
    let h = Harness::default();
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "!pause");
    assert_eq!(read_n(&mut c, 7), b"paused\n");
    say(&mut c, "after");
    h.settle(); // the line is in the socket, unread
    // A server-level timer resumes it: timers fire after the turn's read pass, so the read
    // is left for the next turn, which no edge and no timer will start: the loop must see
    // its own pending work and not sleep.
    h.send(Ev::Later(
        Duration::from_millis(50),
        Box::new(Ev::Resume(id)),
    ));
    assert_eq!(read_n(&mut c, 6), b"after\n");
}

#[test]
fn touch_restarts_the_idle_clock() {
    let opts = ListenerOptions {
        idle_timeout: Duration::from_millis(600),
        ..ListenerOptions::default()
    };
    let h = Harness::start(ReactorConfig::default(), opts);
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "x");
    assert_eq!(read_n(&mut c, 2), b"x\n");
    // 400 ms later (a server timer is the clock) the handler counts activity.
    h.send(Ev::SetTimer(Duration::from_millis(400), 1));
    h.wait(|r| matches!(r, Report::Fired(1, _)).then_some(()));
    let touched = Instant::now();
    h.send(Ev::Touch(id));
    let at = h.wait(|r| match r {
        Report::Timeout(i, Timeout::Idle, at) if i == id => Some(at),
        _ => None,
    });
    assert!(
        at - touched >= Duration::from_millis(600),
        "idle after {:?} from the touch",
        at - touched
    );
}

#[test]
fn output_exactly_at_the_hard_limit_is_kept() {
    let cfg = ReactorConfig {
        output_soft_limit: 64 * 1024,
        output_soft_duration: Duration::from_secs(30),
        output_hard_limit: 1 << 20,
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "!big 1048576");
    assert_eq!(read_n(&mut c, 1 << 20).len(), 1 << 20);
    say(&mut c, "!quit");
    assert_eq!(read_n(&mut c, 4), b"bye\n");
    drop(c);
    assert_eq!(h.closed(id).0, CloseReason::Quit);
}

#[test]
fn the_soft_limit_counts_from_when_output_first_went_over() {
    let cfg = ReactorConfig {
        output_soft_limit: 64 * 1024,
        output_soft_duration: Duration::from_millis(300),
        output_hard_limit: 64 << 20,
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let c = crate::io::small_window_client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    let mut c = c;
    say(&mut c, "!big 4000000");
    // More output keeps coming from the server side (as chat to a member that does not
    // read), and none is read: that must not restart the soft limit's clock.
    let deadline = Instant::now() + crate::toy::GUARD;
    let closed = loop {
        assert!(Instant::now() < deadline, "never cut off by the soft limit");
        h.send(Ev::Send(id, b"more\n".to_vec()));
        match h.next() {
            Report::Closed(i, reason, max_queued, _) if i == id => break (reason, max_queued),
            _ => std::thread::sleep(Duration::from_millis(20)), // pacing
        }
    };
    assert_eq!(closed.0, CloseReason::OutputLimit);
    assert!(
        closed.1 > 1 << 20,
        "queued_bytes saw the big reply: {}",
        closed.1
    );
}

#[test]
fn a_paused_endpoint_that_closes_still_sees_the_peers_fin() {
    // A linger far past the guard: only reading the peer's FIN can end it in time.
    let cfg = ReactorConfig {
        linger: Duration::from_secs(120),
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "!pause");
    assert_eq!(read_n(&mut c, 7), b"paused\n");
    h.send(Ev::Close(id));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("our side sees the server's FIN");
    drop(c);
    assert_eq!(h.closed(id).0, CloseReason::Quit);
}
