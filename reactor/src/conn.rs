//! Connection ids and per-connection state.
//!
//! A [`ConnId`] is `(slot, generation)`: the slot indexes the slab, the generation tells a
//! live connection from an earlier one that used the same slot. Tokens, completions and
//! deadlines all carry the full id, and anything whose generation no longer matches is
//! dropped.

use std::net::SocketAddr;

use mio::Token;
use mio::net::TcpStream;

use crate::output::OutQueue;
use crate::wheel::Link;

const _: () = assert!(
    usize::BITS >= 64,
    "tokens pack (slot, generation) into 64 bits"
);

/// A generational connection handle. Cheap to copy; never dangles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    slot: u32,
    gen_: u32,
}

impl ConnId {
    pub(crate) fn new(slot: usize, gen_: u32) -> ConnId {
        debug_assert!(slot <= u32::MAX as usize);
        debug_assert!(
            gen_ != u32::MAX,
            "u32::MAX generations are reserved for loop tokens"
        );
        ConnId {
            slot: slot as u32,
            gen_,
        }
    }

    /// An id for unit tests of code that indexes by connection (never matches a live one).
    #[doc(hidden)]
    pub fn for_tests(slot: u32, gen_: u32) -> ConnId {
        ConnId { slot, gen_ }
    }

    pub(crate) fn slot(self) -> usize {
        self.slot as usize
    }

    pub(crate) fn generation(self) -> u32 {
        self.gen_
    }

    pub(crate) fn token(self) -> Token {
        Token(((self.gen_ as usize) << 32) | self.slot as usize)
    }

    /// `None` for the loop's own tokens (waker, listeners), whose generation is `u32::MAX`.
    pub(crate) fn from_token(t: Token) -> Option<ConnId> {
        let gen_ = (t.0 >> 32) as u32;
        (gen_ != u32::MAX).then_some(ConnId {
            slot: t.0 as u32,
            gen_,
        })
    }
}

/// Why a connection ended, as reported to [`crate::Handler::on_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it (quit, exit, break characters).
    Quit,
    /// The client closed its side.
    Eof,
    /// The client stopped reading and its output went over the limits.
    OutputLimit,
    /// A read or write failed (reset, broken pipe, …).
    Error,
    /// Server shutdown.
    Shutdown,
    /// Nothing was received for `idleTimeout`.
    IdleTimeout,
    /// The handshake (TLS) or first line (plain) did not complete in time.
    HandshakeTimeout,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Quit => "quit",
            CloseReason::Eof => "eof",
            CloseReason::OutputLimit => "output limit",
            CloseReason::Error => "error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::HandshakeTimeout => "handshake timeout",
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading requests and writing replies.
    Open,
    /// No more reads are dispatched and nothing new is queued; the queued output is being
    /// written, then our side is shut down.
    Draining(CloseReason),
    /// Our side is shut down; input is read and discarded until the peer closes (so unread
    /// input does not turn our FIN into a reset that destroys the last reply).
    Lingering(CloseReason),
    /// To be removed at the end of this loop turn; output is discarded.
    Dead(CloseReason),
}

/// How bytes reach the application: directly, or through rustls.
///
/// A TLS connection moves `TlsHandshaking` → `Tls` by value when rustls reports the handshake
/// complete; closing is the connection's [`Phase`], shared with plain connections (a TLS
/// connection sends `close_notify` as the last thing before our FIN).
pub(crate) enum Transport {
    Plain,
    /// No application data yet: the welcome is sent when this ends.
    TlsHandshaking(Box<rustls::ServerConnection>),
    Tls(Box<rustls::ServerConnection>),
}

impl Transport {
    pub(crate) fn tls_mut(&mut self) -> Option<&mut rustls::ServerConnection> {
        match self {
            Transport::Plain => None,
            Transport::TlsHandshaking(t) | Transport::Tls(t) => Some(t),
        }
    }

    pub(crate) fn is_tls_handshaking(&self) -> bool {
        matches!(self, Transport::TlsHandshaking(_))
    }
}

/// Everything the loop keeps per connection.
pub(crate) struct Conn<S> {
    pub(crate) generation: u32,
    pub(crate) stream: TcpStream,
    pub(crate) transport: Transport,
    pub(crate) peer: SocketAddr,
    pub(crate) phase: Phase,
    pub(crate) out: OutQueue,
    /// Readiness kept as data (edge-triggered registration).
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The peer's FIN was seen in an event: keep reading until 0 even after a short read.
    pub(crate) read_closed: bool,
    /// A read returned 0: the peer will send nothing more.
    pub(crate) eof: bool,
    /// Queued in the loop's ready list / dirty list (no duplicates).
    pub(crate) in_ready: bool,
    pub(crate) in_dirty: bool,
    /// Reading stopped because this connection's own output is backed up.
    pub(crate) read_paused: bool,
    /// Since when the queued output has been above the soft limit.
    pub(crate) over_soft_since: Option<std::time::Instant>,
    /// This connection's timer-wheel entry.
    pub(crate) timer: Link,
    /// Ticks (low 32 bits) of the last bytes received, the last keep-alive ping sent, and
    /// the accept. Activity only stamps `last_rx`; the wheel entry re-checks on firing.
    pub(crate) last_rx: u32,
    pub(crate) last_ping: u32,
    pub(crate) opened: u32,
    /// The application has not yet declared the handshake (first line, TLS) complete.
    pub(crate) handshaking: bool,
    /// Index of the listener that accepted it (its timers).
    pub(crate) listener: u8,
    /// The application asked to stop reading for now.
    pub(crate) app_paused: bool,
    pub(crate) session: S,
}

impl<S> Conn<S> {
    /// Open for protocol traffic: not closing, and past any TLS handshake.
    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open && !self.transport.is_tls_handshaking()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_reserved_tokens() {
        let id = ConnId::new(12345, 678);
        assert_eq!(ConnId::from_token(id.token()), Some(id));
        assert_eq!(ConnId::from_token(Token(usize::MAX)), None);
        assert_eq!(ConnId::from_token(Token(usize::MAX - 3)), None);
        assert_ne!(ConnId::new(1, 1).token(), ConnId::new(1, 2).token());
    }
}
