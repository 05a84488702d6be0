//! Running out of file descriptors: an accept that fails with EMFILE pauses accepting for a
//! back-off (counted in `accept_failures`), and accepting resumes when it ends. A test binary
//! of its own, because it lowers this process's descriptor limit and fills the table.

#[allow(dead_code)] // the shared harness has more than this test uses
#[path = "reactor/toy.rs"]
mod toy;

use std::fs::File;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actionwire_reactor::EndpointKind;

use toy::{Harness, read_n, say};

/// Descriptors this process has open now.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

#[test]
fn accepting_pauses_when_descriptors_run_out_and_resumes_after_the_back_off() {
    let h = Harness::default();
    // A limit a little above what is open, then /dev/null until the table is full.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read a valid rlimit struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let saved = lim;
    lim.rlim_cur = (open_fds() + 32).min(saved.rlim_cur);
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    // The client's socket exists before the table fills: connecting needs no descriptor.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("client socket");
    let mut filler = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => filler.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("unexpected error filling the table: {e}"),
        }
        assert!(filler.len() < 10_000, "the limit did not hold");
    }
    // No descriptor left: the server's accept finds none.
    socket.connect(&h.plain.into()).expect("connect");
    let mut c: std::net::TcpStream = socket.into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.stats.accept_failures.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the accept never failed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Descriptors again: after its back-off the loop accepts the waiting connection.
    filler.truncate(filler.len().saturating_sub(4));
    h.opened(EndpointKind::Accepted);
    say(&mut c, "back");
    assert_eq!(read_n(&mut c, 5), b"back\n");
    drop(filler);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) }, 0);
}
