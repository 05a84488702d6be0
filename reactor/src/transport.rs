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
mod tests;
