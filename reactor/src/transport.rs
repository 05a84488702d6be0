//! The transport seam: how bytes cross between an endpoint's socket and the application.
//!
//! [`Transport`] is `Plain` (the socket's bytes are the application's bytes) or `Tls` (rustls
//! in between, server or client side). This module owns every rustls call the loop makes:
//! the loop asks a transport to [`read`](Transport::read) one step, to
//! [`flush`](Transport::flush) an output queue, whether it is still handshaking or has
//! records to write, and to [`close`](Transport::close); it never touches rustls itself.
//! Another way of driving TLS (rustls's unbuffered API, say) is a new variant here.
//!
//! TLS is driven by hand, never through rustls's blocking helpers: `read_tls` (at most one
//! socket read per step) then `process_new_packets`; alerts are flushed before a failed
//! connection is dropped; plaintext already buffered inside rustls is handed out before the
//! socket is read again (after the handshake a client's first request often arrives in the
//! same flight); and rustls's plaintext buffer limit is honoured as backpressure (a full
//! buffer is `WouldBlock` to the output queue, which keeps the rest).

use std::io::{self, Read};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;

use crate::output::{Flushed, OutQueue};

/// Bytes written per endpoint per flush before it is requeued (fairness).
pub(crate) const WRITE_BUDGET: usize = 1 << 20;

/// How bytes reach the application: directly, or through rustls.
pub(crate) enum Transport {
    Plain,
    Tls(Box<Tls>),
}

/// A rustls connection (either side) and what the loop needs to know about it.
pub(crate) struct Tls {
    conn: rustls::Connection,
    /// Decrypted bytes waiting inside rustls.
    plaintext: usize,
    /// The socket reported EOF.
    eof: bool,
    /// The peer's close_notify arrived.
    close_notify: bool,
    /// We are closing: `close_notify` goes out once the output queue is drained.
    closing: bool,
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
        let conn = rustls::ServerConnection::new(cfg)?;
        Ok(Transport::tls(rustls::Connection::Server(conn)))
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
        matches!(self, Transport::Tls(_))
    }

    /// A TLS handshake is still in progress: no application bytes flow yet.
    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(t) => t.conn.is_handshaking(),
        }
    }

    /// Records are waiting inside the transport to be written.
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(t) => t.conn.wants_write(),
        }
    }

    /// Decrypted bytes are waiting to be handed out without reading the socket.
    pub(crate) fn has_plaintext(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(t) => t.plaintext > 0,
        }
    }

    /// One read step: application bytes into the front of `buf`, at most one socket read.
    pub(crate) fn read(
        &mut self,
        stream: &mut TcpStream,
        buf: &mut [u8],
    ) -> Result<ReadStep, ReadError> {
        match self {
            Transport::Plain => {
                let n = stream.read(buf).map_err(ReadError::Io)?;
                Ok(ReadStep {
                    wire: n,
                    plain: n,
                    eof: n == 0,
                    drained: n < buf.len(),
                    handshake_done: false,
                    peer_closed: n == 0,
                })
            }
            Transport::Tls(t) => t.read(stream, buf),
        }
    }

    /// Reads and discards socket bytes (a lingering endpoint waiting for the peer's FIN).
    /// Returns the bytes read; 0 is EOF.
    pub(crate) fn discard(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        stream.read(buf)
    }

    /// Writes what is pending: records waiting in rustls, then `out` (through rustls for
    /// TLS) up to [`WRITE_BUDGET`] bytes. While a TLS handshake runs only its records go
    /// out. After [`Transport::close`], once `out` is empty a TLS transport sends
    /// `close_notify` last.
    pub(crate) fn flush(
        &mut self,
        stream: &mut TcpStream,
        out: &mut OutQueue,
    ) -> io::Result<(Flushed, usize)> {
        match self {
            Transport::Plain => out.flush(stream, WRITE_BUDGET),
            Transport::Tls(t) => {
                let app = (!t.conn.is_handshaking()).then_some(out);
                t.flush(stream, app)
            }
        }
    }

    /// The stream ends after what is queued: TLS sends `close_notify` when a flush has
    /// written the whole queue. (A plain stream's end is the loop's FIN after the drain.)
    pub(crate) fn close(&mut self) {
        if let Transport::Tls(t) = self {
            t.closing = true;
        }
    }
}

impl Tls {
    fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> Result<ReadStep, ReadError> {
        let mut step = ReadStep::default();
        if self.plaintext == 0 && !self.eof {
            match self.conn.read_tls(stream) {
                Ok(0) => {
                    self.eof = true;
                    step.eof = true;
                }
                Ok(n) => step.wire = n,
                // rustls's plaintext buffer is full: it is drained below before reading more.
                Err(e) if e.kind() == io::ErrorKind::Other => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
            let was_handshaking = self.conn.is_handshaking();
            let io = match self.conn.process_new_packets() {
                Ok(io) => io,
                Err(err) => {
                    // Best effort: send the alert rustls queued, then the caller drops it.
                    let _ = self.conn.write_tls(stream);
                    return Err(ReadError::Tls(err));
                }
            };
            self.plaintext = io.plaintext_bytes_to_read();
            self.close_notify = io.peer_has_closed();
            step.handshake_done = was_handshaking && !self.conn.is_handshaking();
        }
        if self.plaintext > 0 {
            match self.conn.reader().read(buf) {
                Ok(n) => {
                    step.plain = n;
                    self.plaintext = self.plaintext.saturating_sub(n);
                    if n == 0 {
                        self.plaintext = 0; // close_notify: nothing more will come
                    }
                }
                // Nothing after all (or EOF without close_notify): treated as closed below.
                Err(_) => self.plaintext = 0,
            }
        }
        step.peer_closed = self.plaintext == 0 && (self.eof || self.close_notify);
        Ok(step)
    }

    /// Writes records rustls has ready, feeds `out` into rustls as far as its buffer limit
    /// allows, and repeats until the socket would block or everything is out.
    fn flush(
        &mut self,
        stream: &mut TcpStream,
        mut out: Option<&mut OutQueue>,
    ) -> io::Result<(Flushed, usize)> {
        let closing = self.closing;
        let tls = &mut self.conn;
        let mut written = 0;
        loop {
            while tls.wants_write() {
                if written >= WRITE_BUDGET {
                    return Ok((Flushed::Budget, written));
                }
                match tls.write_tls(stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok((Flushed::Blocked, written));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let Some(queue) = out.as_deref_mut() else {
                return Ok((Flushed::Drained, written));
            };
            if queue.is_empty() {
                if closing {
                    tls.send_close_notify(); // the end of the stream; nothing once sent
                    if tls.wants_write() {
                        continue;
                    }
                }
                return Ok((Flushed::Drained, written));
            }
            queue.flush(&mut PlaintextSink(tls), usize::MAX)?;
            if !tls.wants_write() {
                // rustls took nothing and has nothing to send: only possible if its limit is
                // zero. Never spin on it.
                debug_assert!(
                    queue.is_empty(),
                    "rustls refused plaintext with nothing to send"
                );
                return Ok((Flushed::Blocked, written));
            }
        }
    }
}

/// rustls's plaintext side as a `Write` whose full buffer is `WouldBlock` (backpressure),
/// so the output queue keeps what rustls cannot take yet.
struct PlaintextSink<'a>(&'a mut rustls::Connection);

impl io::Write for PlaintextSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.writer().write(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.0.writer().write_vectored(bufs)? {
            0 if bufs.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
