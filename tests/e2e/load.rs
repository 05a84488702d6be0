//! Many clients at once, slow consumers, backpressure and the connection limit.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;

use serde_json::Value;

use crate::harness::*;

both! {
    fn five_hundred_concurrent_clients(t) {
        let srv = TestServer::over(t);
        let mut clients: Vec<Client> = (0..500).map(|_| srv.client()).collect();
        for c in clients.iter_mut() {
            c.send_raw(b"roomAdd defaultRoom\nrandomNumber\n");
        }
        for c in clients.iter_mut() {
            assert_eq!(ok_data(&c.json()), true);
            assert!(c.json()["randomNumber"].is_f64());
        }
        clients[0].send("say defaultRoom to everyone");
        assert_eq!(ok_data(&clients[0].json()), Value::Null);
        for c in clients.iter_mut() {
            assert_eq!(c.json()["message"], "to everyone");
        }
        let view = ok_data(&clients[1].request("roomView defaultRoom"));
        assert_eq!(view["membersCount"], 500);
        assert_eq!(srv.api.connections(), 500);
    }
}

#[test]
fn backpressure_loses_nothing() {
    // The client writes 50,000 requests before reading anything: the server stops reading
    // while the replies back up and resumes as they are read. Every reply arrives, in order.
    const N: u64 = 50_000;
    let srv = TestServer::start();
    let mut c = srv.client();
    let mut writer = c.stream.try_clone().expect("clone");
    let t = std::thread::spawn(move || {
        let batch = "paramView x\n".repeat(1000);
        for _ in 0..N / 1000 {
            writer.write_all(batch.as_bytes()).expect("write");
        }
    });
    for n in 1..=N {
        let line = c.line();
        let expect = format!("\"messageCount\":{n},");
        assert!(line.contains(&expect), "reply {n}: {line}");
    }
    t.join().expect("writer");
}

#[test]
fn a_client_that_stops_reading_is_disconnected_and_the_room_gets_everything() {
    // Enough to overflow the kernel buffers on loopback (several MiB) and then the queue.
    const N: usize = 2500;
    let srv = TestServer::with(|c| {
        c.servers.socket.output_buffer_soft_limit = 64 * 1024;
        c.servers.socket.output_buffer_hard_limit = 256 * 1024;
    });
    let slow = {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_recv_buffer_size(4096).expect("rcvbuf");
        s.connect(&srv.addr.into()).expect("connect");
        let mut c = Client::from_stream(s.into());
        c.welcome = c.json();
        c
    };
    let mut slow = slow;
    assert_eq!(ok_data(&slow.request("roomAdd defaultRoom")), true);
    let mut a = srv.client();
    let mut b = srv.client();
    a.request("roomAdd defaultRoom");
    b.request("roomAdd defaultRoom");
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < N {
            let m = b.json();
            assert_eq!(m["context"], "user");
            assert!(
                m["message"]
                    .as_str()
                    .expect("text")
                    .ends_with(&format!(" {got}"))
            );
            got += 1;
        }
        b
    });
    let filler = "x".repeat(4000);
    for i in 0..N {
        a.send(&format!("say defaultRoom {filler} {i}"));
        assert_eq!(ok_data(&a.json()), Value::Null);
        let echo = a.json();
        assert!(
            echo["message"]
                .as_str()
                .expect("text")
                .ends_with(&format!(" {i}"))
        );
    }
    let _b = reader
        .join()
        .expect("every message reached the reading member");
    let view = ok_data(&a.request("roomView defaultRoom"));
    assert_eq!(
        view["membersCount"], 2,
        "the slow consumer was disconnected"
    );
    assert_eq!(srv.api.output_limit_disconnects(), 1);
    // What the slow client can still read ends in a close, not in more data forever.
    let mut sink = Vec::new();
    match slow.stream.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("unexpected error draining the slow client: {e}"),
    }
}

#[test]
fn max_connections_pauses_accepting_and_resumes_below_ninety_percent() {
    let srv = TestServer::with(|c| c.servers.socket.max_connections = 5);
    let mut held: Vec<Client> = (0..5).map(|_| srv.client()).collect();
    // The sixth connection waits in the backlog: no welcome yet.
    let waiting = TcpStream::connect(srv.addr).expect("queued in the backlog");
    waiting
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .expect("timeout");
    let mut probe = [0u8; 1];
    match (&waiting).read(&mut probe) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the sixth connection must not be served yet: {other:?}"),
    }
    let mut first = held.remove(0);
    first.send("quit");
    first.line();
    first.expect_closed();
    waiting.set_read_timeout(Some(GUARD)).expect("timeout");
    let mut line = String::new();
    BufReader::new(&waiting)
        .read_line(&mut line)
        .expect("welcome");
    assert!(line.contains("\"welcome\""), "{line}");
}
