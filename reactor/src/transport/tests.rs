//! The transport against a scripted in-memory socket: what each step reads and writes,
//! plaintext held back for a small buffer, and every error kind a socket can return.

use std::collections::VecDeque;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::client_tls::PlaintextSink;
use super::*;

/// One side of an in-memory socket.
#[derive(Default)]
struct Wire {
    /// Bytes the peer sent, not read yet.
    input: VecDeque<u8>,
    /// Reads return 0 once `input` is empty (else `WouldBlock`).
    eof: bool,
    /// Bytes written.
    output: Vec<u8>,
    /// The next reads fail with these.
    read_errors: VecDeque<io::ErrorKind>,
    /// The next writes fail with these.
    write_errors: VecDeque<io::ErrorKind>,
    /// The most one write takes (0 = no limit).
    write_limit: usize,
    reads: usize,
    writes: usize,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if let Some(kind) = self.read_errors.pop_front() {
            return Err(kind.into());
        }
        if self.input.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.input.len());
        for (b, v) in buf.iter_mut().zip(self.input.drain(..n)) {
            *b = v;
        }
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        if let Some(kind) = self.write_errors.pop_front() {
            return Err(kind.into());
        }
        let n = match self.write_limit {
            0 => buf.len(),
            limit => buf.len().min(limit),
        };
        self.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A transport, its socket and its output queue.
struct Side {
    t: Transport,
    wire: Wire,
    out: OutQueue,
}

impl Side {
    fn new(t: Transport) -> Side {
        Side {
            t,
            wire: Wire::default(),
            out: OutQueue::default(),
        }
    }

    fn flush(&mut self) -> io::Result<(Flushed, usize)> {
        self.t.flush(&mut self.wire, &mut self.out)
    }

    /// Moves what this side wrote to `peer`'s input.
    fn send_to(&mut self, peer: &mut Side) {
        peer.wire.input.extend(self.wire.output.drain(..));
    }

    fn read(&mut self, buf: &mut [u8]) -> ReadStep {
        match self.t.read(&mut self.wire, buf) {
            Ok(step) => step,
            Err(e) => panic!("read step failed: {e:?}"),
        }
    }
}

fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let der = CertificateDer::from_pem_slice(cert.pem().as_bytes()).expect("cert der");
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key_der)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// A server and a client side with their TLS 1.3 handshake done (the server has seen
/// the client's Finished).
fn connected() -> (Side, Side) {
    let (server, client, _) = connected_with(b"");
    (server, client)
}

/// As [`connected`], the server queueing `first_reply` as the handshake ends (as a
/// welcome is); also how many socket writes the server's flush after it took.
fn connected_with(first_reply: &[u8]) -> (Side, Side, usize) {
    let (server_cfg, client_cfg) = configs();
    let mut server = Side::new(Transport::server(server_cfg).expect("server"));
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = Side::new(Transport::client(client_cfg, name).expect("client"));
    let mut buf = [0u8; 1024];
    for _ in 0..4 {
        client.flush().expect("client flush");
        client.send_to(&mut server);
        if !server.wire.input.is_empty() {
            let step = server.read(&mut buf);
            if step.handshake_done {
                server.out.push_bytes(first_reply);
                let writes = server.wire.writes;
                server.flush().expect("server flush");
                let writes = server.wire.writes - writes;
                server.send_to(&mut client);
                let step = client.read(&mut buf);
                assert_eq!(&buf[..step.plain], first_reply);
                assert!(!client.t.is_handshaking() && !server.t.is_handshaking());
                return (server, client, writes);
            }
        }
        server.flush().expect("server flush");
        server.send_to(&mut client);
        while !client.wire.input.is_empty() {
            client.read(&mut buf);
        }
    }
    panic!("the handshake did not complete");
}

#[test]
fn plain_steps_report_short_reads_and_eof() {
    let mut plain = Transport::Plain;
    assert!(!plain.is_tls() && !plain.is_handshaking());
    assert!(!plain.wants_write() && !plain.has_plaintext());
    let mut wire = Wire::default();
    wire.input.extend(b"0123456789abc");
    let mut buf = [0u8; 10];
    let step = plain.read(&mut wire, &mut buf).expect("read");
    assert_eq!((step.wire, step.plain, step.drained), (10, 10, false));
    assert_eq!(&buf, b"0123456789");
    let step = plain.read(&mut wire, &mut buf).expect("read");
    assert_eq!((step.wire, step.plain, step.drained), (3, 3, true));
    assert!(!step.eof && !step.peer_closed);
    wire.eof = true;
    let step = plain.read(&mut wire, &mut buf).expect("read");
    assert!(step.eof && step.peer_closed && step.drained);
}

#[test]
fn discard_reads_the_socket_and_hands_nothing_out() {
    let mut wire = Wire::default();
    wire.input.extend(b"late input");
    let mut buf = [0u8; 8];
    let step = |wire: &mut Wire, buf: &mut [u8]| {
        let s = Transport::discard(wire, buf).expect("read");
        (s.wire, s.plain, s.drained, s.eof)
    };
    assert_eq!(step(&mut wire, &mut buf), (8, 0, false, false));
    assert_eq!(step(&mut wire, &mut buf), (2, 0, true, false));
    wire.eof = true;
    assert_eq!(step(&mut wire, &mut buf), (0, 0, true, true));
}

#[test]
fn records_waiting_in_rustls_are_reported_until_flushed() {
    let (mut server, mut client) = connected();
    assert!(!server.t.wants_write(), "the handshake's records are out");
    client.out.push_bytes(b"hello\n");
    assert!(
        !client.t.wants_write(),
        "queued plaintext is not a record yet"
    );
    assert_eq!(client.flush().expect("flush").0, Flushed::Drained);
    assert!(!client.t.wants_write());
    client.send_to(&mut server);
    let mut buf = [0u8; 64];
    let step = server.read(&mut buf);
    assert_eq!(&buf[..step.plain], b"hello\n");
    // The server's close_notify waits in rustls until a flush writes it.
    server.t.close();
    assert_eq!(server.flush().expect("flush").0, Flushed::Drained);
    assert!(!server.wire.output.is_empty(), "close_notify written");
    assert!(!server.t.wants_write());
}

fn held(side: &Side) -> usize {
    match &side.t {
        Transport::ServerTls(t) => t.held(),
        _ => panic!("not a server transport"),
    }
}

#[test]
fn session_tickets_leave_with_the_first_reply_in_one_write() {
    let (server, _, writes) = connected_with(b"welcome\n");
    assert_eq!(writes, 1, "tickets and the reply in one write");
    let (server_alone, _, writes_alone) = connected_with(b"");
    assert_eq!(writes_alone, 1, "tickets alone");
    // Nothing held back: the reply's records follow the tickets.
    assert!(!server.t.wants_write() && !server_alone.t.wants_write());
}

#[test]
fn an_idle_server_connection_holds_no_buffer() {
    let (mut server, mut client) = connected();
    assert_eq!(held(&server), 0, "after the handshake");
    client.out.push_bytes(&[b'q'; 40_000]);
    client.flush().expect("flush");
    client.send_to(&mut server);
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < 40_000 {
        got += server.read(&mut buf).plain;
    }
    server.out.push_bytes(&[b'r'; 70_000]);
    assert_eq!(server.flush().expect("flush").0, Flushed::Drained);
    assert_eq!(held(&server), 0, "after 40 kB in and 70 kB out");
    // A socket that takes nothing: the ciphertext waits with the connection, and is
    // let go of once written.
    server
        .wire
        .write_errors
        .push_back(io::ErrorKind::WouldBlock);
    server.out.push_bytes(b"later");
    assert_eq!(server.flush().expect("flush").0, Flushed::Blocked);
    assert!(held(&server) > 0 && server.t.wants_write());
    assert_eq!(server.flush().expect("flush").0, Flushed::Drained);
    assert_eq!(held(&server), 0);
}

#[test]
fn a_tampered_record_is_a_tls_error_with_an_alert_sent() {
    let (mut server, mut client) = connected();
    client.out.push_bytes(b"tampered");
    client.flush().expect("flush");
    let mut record: Vec<u8> = client.wire.output.drain(..).collect();
    let last = record.len() - 1;
    record[last] ^= 0x55; // the tag no longer matches
    server.wire.input.extend(&record);
    let mut buf = [0u8; 64];
    match server.t.read(&mut server.wire, &mut buf) {
        Err(ReadError::Tls(_)) => {}
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(!server.wire.output.is_empty(), "the alert was written");
}

#[test]
fn a_record_split_across_reads_is_kept_until_its_end_arrives() {
    let (mut server, mut client) = connected();
    client.out.push_bytes(b"split in two");
    client.flush().expect("flush");
    let record: Vec<u8> = client.wire.output.drain(..).collect();
    let mut buf = [0u8; 64];
    server.wire.input.extend(&record[..7]);
    let step = server.read(&mut buf);
    assert_eq!((step.wire, step.plain), (7, 0));
    assert!(held(&server) > 0, "the record's start is kept");
    server.wire.input.extend(&record[7..]);
    let step = server.read(&mut buf);
    assert_eq!(&buf[..step.plain], b"split in two");
    assert_eq!(held(&server), 0);
}

#[test]
fn plaintext_beyond_the_buffer_is_handed_out_before_the_socket_is_read_again() {
    let (mut server, mut client) = connected();
    client.out.push_bytes(&[b'x'; 100]);
    client.flush().expect("flush");
    client.send_to(&mut server);
    let mut small = [0u8; 30];
    let reads = server.wire.reads;
    let first = server.read(&mut small);
    assert!(first.wire > 100 && first.plain == 30, "{first:?}");
    assert!(server.t.has_plaintext(), "70 bytes wait in rustls");
    assert_eq!(server.wire.reads, reads + 1);
    // More bytes on the socket: they stay there while plaintext is waiting.
    client.out.push_bytes(b"second record");
    client.flush().expect("flush");
    client.send_to(&mut server);
    let mut total = first.plain;
    while server.t.has_plaintext() {
        let step = server.read(&mut small);
        assert_eq!(step.wire, 0, "handed out from rustls");
        assert!(step.plain > 0 && !step.peer_closed);
        total += step.plain;
    }
    assert_eq!(total, 100);
    assert_eq!(
        server.wire.reads,
        reads + 1,
        "the socket was not read meanwhile"
    );
    let step = server.read(&mut small);
    assert!(step.wire > 0);
    assert_eq!(&small[..step.plain], b"second record");
    assert!(!server.t.has_plaintext());
}

#[test]
fn after_eof_the_socket_is_not_read_again() {
    let (mut server, _client) = connected();
    server.wire.eof = true;
    let mut buf = [0u8; 64];
    let step = server.read(&mut buf);
    assert!(step.eof && step.peer_closed && step.plain == 0);
    let reads = server.wire.reads;
    let step = server.read(&mut buf);
    assert!(!step.eof && step.peer_closed, "{step:?}");
    assert_eq!(server.wire.reads, reads);
}

#[test]
fn close_notify_ends_the_stream_after_the_data_before_it() {
    let (mut server, mut client) = connected();
    client.out.push_bytes(b"last words");
    client.t.close();
    client.flush().expect("flush");
    client.send_to(&mut server);
    let mut buf = [0u8; 4];
    let mut got = Vec::new();
    loop {
        let step = server.read(&mut buf);
        got.extend_from_slice(&buf[..step.plain]);
        if step.peer_closed {
            break;
        }
        assert!(got.len() < 10, "closed early or never: {step:?}");
    }
    assert_eq!(got, b"last words");
}

#[test]
fn socket_read_errors_are_returned_without_being_swallowed() {
    let (mut server, _client) = connected();
    for kind in [
        io::ErrorKind::Other,
        io::ErrorKind::ConnectionReset,
        io::ErrorKind::WouldBlock,
    ] {
        server.wire.read_errors.push_back(kind);
        let mut buf = [0u8; 16];
        match server.t.read(&mut server.wire, &mut buf) {
            Err(ReadError::Io(e)) => assert_eq!(e.kind(), kind),
            other => panic!("{kind:?}: {other:?}"),
        }
    }
}

#[test]
fn garbage_is_a_tls_error_with_an_alert_sent() {
    let (server_cfg, _) = configs();
    let mut server = Side::new(Transport::server(server_cfg).expect("server"));
    server.wire.input.extend(b"GET / HTTP/1.1\r\n\r\n");
    let mut buf = [0u8; 64];
    match server.t.read(&mut server.wire, &mut buf) {
        Err(ReadError::Tls(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(!server.wire.output.is_empty(), "the alert went out");
}

#[test]
fn flush_retries_interrupted_writes_and_reports_would_block_and_failures() {
    let (mut server, mut client) = connected();
    // Interrupted: retried within the same flush, nothing lost.
    client
        .wire
        .write_errors
        .push_back(io::ErrorKind::Interrupted);
    client.out.push_bytes(b"one\n");
    assert_eq!(client.flush().expect("flush").0, Flushed::Drained);
    assert!(client.out.is_empty() && !client.t.wants_write());
    // WouldBlock: the records stay in rustls for the next flush.
    client
        .wire
        .write_errors
        .push_back(io::ErrorKind::WouldBlock);
    client.out.push_bytes(b"two\n");
    let (state, n) = client.flush().expect("flush");
    assert_eq!((state, n), (Flushed::Blocked, 0));
    assert!(client.t.wants_write());
    assert_eq!(client.flush().expect("flush").0, Flushed::Drained);
    // Any other error is the caller's, with nothing consumed by a retry.
    client
        .wire
        .write_errors
        .push_back(io::ErrorKind::BrokenPipe);
    client.out.push_bytes(b"three\n");
    let e = client.flush().expect_err("broken pipe");
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    assert!(client.t.wants_write(), "the record is still there");
    assert_eq!(client.flush().expect("flush").0, Flushed::Drained);
    client.send_to(&mut server);
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !server.wire.input.is_empty() || server.t.has_plaintext() {
        let step = server.read(&mut buf);
        got.extend_from_slice(&buf[..step.plain]);
    }
    assert_eq!(got, b"one\ntwo\nthree\n");
}

#[test]
fn short_writes_count_every_byte_written() {
    let (_server, mut client) = connected();
    client.wire.write_limit = 7;
    client.out.push_bytes(&[b'y'; 300]);
    let (state, n) = client.flush().expect("flush");
    assert_eq!(state, Flushed::Drained);
    assert_eq!(n, client.wire.output.len());
    assert!(n > 300);
}

#[test]
fn a_full_plaintext_buffer_is_would_block_and_empty_writes_are_not() {
    let (server_cfg, _) = configs();
    let mut conn =
        rustls::Connection::Server(rustls::ServerConnection::new(server_cfg).expect("server"));
    // During the handshake rustls buffers early plaintext up to its limit.
    conn.set_buffer_limit(Some(16));
    let mut sink = PlaintextSink(&mut conn);
    assert_eq!(sink.write(b"").expect("empty"), 0);
    assert_eq!(sink.write_vectored(&[]).expect("empty"), 0);
    assert_eq!(
        sink.write_vectored(&[io::IoSlice::new(b"")])
            .expect("empty"),
        0
    );
    assert_eq!(sink.write(&[b'z'; 10]).expect("fits"), 10);
    assert_eq!(sink.write(&[b'z'; 10]).expect("the rest"), 6);
    let full = sink.write(b"z").expect_err("full");
    assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
    let full = sink
        .write_vectored(&[io::IoSlice::new(b"z")])
        .expect_err("full");
    assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
    sink.flush().expect("flush is a no-op");
}
