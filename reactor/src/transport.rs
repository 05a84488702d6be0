//! The transport seam: how bytes cross between an endpoint's socket and the application.
//!
//! `Transport` is `Plain` (the socket's bytes are the application's bytes) or TLS (rustls
//! in between, server or client side). This module owns every rustls call the loop makes:
//! the loop asks a transport to `read` one step, to `flush` an output queue, whether it is
//! still handshaking or has records to write, and to `close`; it never touches rustls
//! itself.
//!
//! Accepted endpoints speak TLS through rustls's unbuffered API (`server_tls.rs`: no buffer
//! is held by an idle connection); outbound ones, which are few, through its buffered API
//! (`client_tls.rs`).
//!
//! An accepted endpoint's handshake steps may run off the loop thread: the loop reads the
//! socket (`Transport::read_for_away`), sends the session away (`Transport::send_away`:
//! the transport is `Away` meanwhile, reads nothing and writes nothing), a handshake thread
//! runs rustls over the bytes (`AwayJob::run`), and the loop takes the session back with
//! its flight to write (`Transport::come_back`).

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::output::{Flushed, OutQueue};

mod client_tls;
mod server_tls;
use client_tls::Tls;
use server_tls::ServerTls;

/// Bytes written per endpoint per flush before it is requeued (fairness).
pub(crate) const WRITE_BUDGET: usize = 1 << 20;

/// How bytes reach the application: directly, or through rustls.
pub(crate) enum Transport {
    Plain,
    /// An outbound endpoint's TLS (rustls's buffered API).
    Tls(Box<Tls>),
    /// An accepted endpoint's TLS (rustls's unbuffered API).
    ServerTls(Box<ServerTls>),
    /// An accepted endpoint's TLS session while one of its handshake steps runs on a
    /// handshake thread (see [`Transport::send_away`]).
    Away,
}

/// A handshake step to run off the loop thread: the session and the bytes read for it.
pub(crate) struct AwayJob(Box<ServerTls>);

impl AwayJob {
    /// Runs rustls over the bytes read (the expensive part of a handshake: key exchange,
    /// signature, certificate checks).
    pub(crate) fn run(mut self) -> AwayStep {
        let outcome = self.0.step_away();
        AwayStep {
            tls: self.0,
            outcome,
        }
    }
}

/// A handshake step that ran off the loop thread, for [`Transport::come_back`].
pub(crate) struct AwayStep {
    tls: Box<ServerTls>,
    outcome: Result<ReadStep, rustls::Error>,
}

/// What one [`Transport::read`] step did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadStep {
    /// Bytes read from the socket (0 when the step only handed out buffered plaintext).
    pub wire: usize,
    /// Application bytes placed at the front of the caller's buffer.
    pub plain: usize,
    /// The socket reported EOF in this step.
    pub eof: bool,
    /// The socket is drained (a short plain read): wait for the next readiness edge.
    pub drained: bool,
    /// The TLS handshake completed in this step.
    pub handshake_done: bool,
    /// The peer has ended the stream and every byte it sent has been handed out.
    pub peer_closed: bool,
}

/// Why a read step failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// The peer broke the TLS protocol; the alert has been sent (best effort).
    Tls(rustls::Error),
}

impl Transport {
    /// A TLS server transport for an accepted endpoint.
    pub(crate) fn server(cfg: Arc<rustls::ServerConfig>) -> Result<Transport, rustls::Error> {
        Ok(Transport::ServerTls(Box::new(ServerTls::new(cfg)?)))
    }

    /// A TLS client transport for an outbound endpoint; its ClientHello is ready to flush.
    pub(crate) fn client(
        cfg: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Transport, rustls::Error> {
        let conn = rustls::ClientConnection::new(cfg, name)?;
        Ok(Transport::tls(rustls::Connection::Client(conn)))
    }

    fn tls(conn: rustls::Connection) -> Transport {
        Transport::Tls(Box::new(Tls {
            conn,
            plaintext: 0,
            eof: false,
            close_notify: false,
            closing: false,
        }))
    }

    pub(crate) fn is_tls(&self) -> bool {
        !matches!(self, Transport::Plain)
    }

    /// An accepted endpoint's handshake, whose steps may run off the loop thread.
    pub(crate) fn server_handshaking(&self) -> bool {
        match self {
            Transport::ServerTls(t) => t.is_handshaking(),
            Transport::Away => true,
            Transport::Plain | Transport::Tls(_) => false,
        }
    }

    /// The session is away on a handshake thread.
    pub(crate) fn is_away(&self) -> bool {
        matches!(self, Transport::Away)
    }

    /// One socket read for a handshake step to run off the loop thread (nothing is
    /// processed here; `plain` is 0). Only for [`Transport::server_handshaking`].
    pub(crate) fn read_for_away<S: Read>(&mut self, stream: &mut S) -> io::Result<ReadStep> {
        match self {
            Transport::ServerTls(t) => t.read_raw(stream),
            _ => {
                debug_assert!(
                    false,
                    "a read for a handshake step of a transport without one"
                );
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }

    /// Sends the session away for a step; the transport is `Away` until
    /// [`Transport::come_back`].
    pub(crate) fn send_away(&mut self) -> Option<AwayJob> {
        match std::mem::replace(self, Transport::Away) {
            Transport::ServerTls(t) => Some(AwayJob(t)),
            other => {
                debug_assert!(false, "only a server session goes away");
                *self = other;
                None
            }
        }
    }

    /// Takes the session back from a step: what it did, as a read step would say (its
    /// flight waits in the transport for the next flush; application bytes that came along
    /// are held for the next read). On a TLS error the alert is written to `stream` (best
    /// effort) before it is returned.
    pub(crate) fn come_back<S: Write>(
        &mut self,
        stream: &mut S,
        step: AwayStep,
    ) -> Result<ReadStep, rustls::Error> {
        debug_assert!(
            self.is_away(),
            "a session came back to a transport not away"
        );
        let AwayStep { mut tls, outcome } = step;
        if outcome.is_err() {
            tls.write_pending(stream);
        }
        *self = Transport::ServerTls(tls);
        outcome
    }

    /// A TLS handshake is still in progress: no application bytes flow yet.
    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(t) => t.conn.is_handshaking(),
            Transport::ServerTls(t) => t.is_handshaking(),
            Transport::Away => true,
        }
    }

    /// A server-side TLS handshake that resumed an earlier session.
    pub(crate) fn resumed(&self) -> bool {
        match self {
            Transport::ServerTls(t) => t.resumed(),
            Transport::Plain | Transport::Tls(_) | Transport::Away => false,
        }
    }

    /// Records are waiting inside the transport to be written.
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(t) => t.conn.wants_write(),
            Transport::ServerTls(t) => t.wants_write(),
            Transport::Away => false,
        }
    }

    /// Decrypted bytes are waiting to be handed out without reading the socket.
    pub(crate) fn has_plaintext(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(t) => t.plaintext > 0,
            Transport::ServerTls(t) => t.has_plaintext(),
            Transport::Away => false,
        }
    }

    /// One read step: application bytes into the front of `buf`, at most one socket read.
    pub(crate) fn read<S: Read + Write>(
        &mut self,
        stream: &mut S,
        buf: &mut [u8],
    ) -> Result<ReadStep, ReadError> {
        match self {
            Transport::Plain => plain_read(stream, buf).map_err(ReadError::Io),
            Transport::Tls(t) => t.read(stream, buf),
            Transport::ServerTls(t) => t.read(stream, buf),
            // The loop does not read an endpoint whose session is away.
            Transport::Away => {
                debug_assert!(false, "a read while the session is away");
                Ok(ReadStep::default())
            }
        }
    }

    /// One socket read whose bytes are discarded (a lingering endpoint waiting for the
    /// peer's FIN, past TLS: nothing more is decrypted).
    pub(crate) fn discard<S: Read>(stream: &mut S, buf: &mut [u8]) -> io::Result<ReadStep> {
        plain_read(stream, buf).map(|step| ReadStep { plain: 0, ..step })
    }

    /// Writes what is pending: records waiting in rustls, then `out` (through rustls for
    /// TLS) up to [`WRITE_BUDGET`] bytes. While a TLS handshake runs only its records go
    /// out. After [`Transport::close`], once `out` is empty a TLS transport sends
    /// `close_notify` last.
    pub(crate) fn flush<S: Write>(
        &mut self,
        stream: &mut S,
        out: &mut OutQueue,
    ) -> io::Result<(Flushed, usize)> {
        match self {
            Transport::Plain => out.flush(stream, WRITE_BUDGET),
            Transport::Tls(t) => {
                let app = (!t.conn.is_handshaking()).then_some(out);
                t.flush(stream, app)
            }
            Transport::ServerTls(t) => t.flush(stream, out),
            // The flight comes back with the session; nothing can be written meanwhile.
            Transport::Away => Ok((Flushed::Drained, 0)),
        }
    }

    /// The stream ends after what is queued: TLS sends `close_notify` when a flush has
    /// written the whole queue. (A plain stream's end is the loop's FIN after the drain.)
    pub(crate) fn close(&mut self) {
        match self {
            Transport::Plain => {}
            Transport::Tls(t) => t.closing = true,
            Transport::ServerTls(t) => t.close(),
            // Still in the handshake: such an endpoint is dropped, not drained.
            Transport::Away => {}
        }
    }
}

/// One socket read straight into `buf`.
fn plain_read<S: Read>(stream: &mut S, buf: &mut [u8]) -> io::Result<ReadStep> {
    let n = stream.read(buf)?;
    Ok(ReadStep {
        wire: n,
        plain: n,
        eof: n == 0,
        drained: n < buf.len(),
        handshake_done: false,
        peer_closed: n == 0,
    })
}

#[cfg(test)]
mod tests {
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
}
