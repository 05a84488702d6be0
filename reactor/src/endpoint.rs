//! Endpoint ids and per-endpoint state.
//!
//! An endpoint is a TCP stream the loop owns, of one of two kinds: accepted from a listener,
//! or outbound (opened by [`crate::Core::connect`]). Both live in the one slab and share the
//! read/write/backpressure/timer machinery; only their beginnings differ (an outbound
//! endpoint starts in `Phase::Connecting`).
//!
//! An [`ConnId`] is `(slot, generation)`: the slot indexes the slab, the generation tells a
//! live endpoint from an earlier one that used the same slot. Tokens, completions and
//! deadlines all carry the full id, and anything whose generation no longer matches is
//! dropped.

use std::net::SocketAddr;

use mio::Token;
use mio::net::TcpStream;

use crate::output::OutQueue;
use crate::transport::{ReadStep, Transport};
use crate::wheel::Link;

const _: () = assert!(
    usize::BITS >= 64,
    "tokens pack (slot, generation) into 64 bits"
);

/// A generational endpoint handle. Cheap to copy; never dangles.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    slot: u32,
    gen_: u32,
}

impl std::fmt::Debug for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}.{}", self.slot, self.gen_)
    }
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

/// Which side opened an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// Accepted from one of the reactor's listeners.
    Accepted,
    /// Opened by [`crate::Core::connect`].
    Outbound,
}

/// Why an endpoint ended, as reported to [`crate::Handler::on_close`]. This is the one
/// vocabulary of close reasons: logs and metric labels both use [`CloseReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The application closed it (quit, exit, break characters, a finished exchange).
    Quit,
    /// The peer closed its side.
    Eof,
    /// The peer stopped reading and its output went over the limits.
    OutputLimit,
    /// A read or write failed (reset, broken pipe, …), or TLS failed.
    Error,
    /// Server shutdown.
    Shutdown,
    /// The listener expects a PROXY protocol header and the first bytes were not one.
    BadProxyHeader,
    /// Nothing was received for `idle_timeout`.
    IdleTimeout,
    /// The handshake (TLS) or first line (plain) did not complete in time.
    HandshakeTimeout,
    /// An outbound connection could not be established (refused, unreachable).
    ConnectFailed,
    /// An outbound connection (and its TLS handshake) did not complete in time.
    ConnectTimeout,
    /// The application refused the connection when it opened.
    Refused,
}

impl CloseReason {
    /// Every reason, in a fixed order (for metrics that list each one).
    pub const ALL: [CloseReason; 11] = [
        CloseReason::Quit,
        CloseReason::Eof,
        CloseReason::OutputLimit,
        CloseReason::Error,
        CloseReason::Shutdown,
        CloseReason::BadProxyHeader,
        CloseReason::IdleTimeout,
        CloseReason::HandshakeTimeout,
        CloseReason::ConnectFailed,
        CloseReason::ConnectTimeout,
        CloseReason::Refused,
    ];

    /// The reason's name in logs and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Quit => "quit",
            CloseReason::Eof => "eof",
            CloseReason::OutputLimit => "output_limit",
            CloseReason::Error => "error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::BadProxyHeader => "bad_proxy_header",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::ConnectFailed => "connect_failed",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::Refused => "refused",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an endpoint is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Outbound only: the non-blocking connect has not completed yet.
    Connecting,
    /// Reading and writing (a TLS endpoint may still be in its handshake: see
    /// [`Transport::is_handshaking`]).
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

/// Everything the loop keeps per endpoint.
pub(crate) struct Endpoint<S> {
    pub(crate) generation: u32,
    pub(crate) stream: TcpStream,
    pub(crate) transport: Transport,
    pub(crate) peer: SocketAddr,
    pub(crate) kind: EndpointKind,
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
    /// Waiting in the loop's queue of handshake steps (see `handshake.rs`).
    pub(crate) in_handshakes: bool,
    /// Reading stopped because this endpoint's own output is backed up.
    pub(crate) read_paused: bool,
    /// The application asked to stop reading for now.
    pub(crate) app_paused: bool,
    /// The handshake is not complete: for an accepted endpoint until the application says
    /// so (first line) or TLS completes; for an outbound one until it is open.
    pub(crate) handshaking: bool,
    /// Tick (low 32 bits) since which the queued output has been above the soft limit.
    pub(crate) over_soft_since: Option<u32>,
    /// This endpoint's timer-wheel entry.
    pub(crate) timer: Link,
    /// Ticks (low 32 bits) of the last bytes received, the last keep-alive ping sent, and
    /// the start. Activity only stamps `last_rx`; the wheel entry re-checks on firing.
    pub(crate) last_rx: u32,
    pub(crate) last_ping: u32,
    pub(crate) opened: u32,
    /// Index of this endpoint's timer settings (its listener's, or its connect options').
    pub(crate) profile: u8,
    /// A PROXY protocol header must come first (see `proxy.rs`).
    pub(crate) awaiting_proxy: bool,
    pub(crate) session: S,
}

impl<S> Endpoint<S> {
    /// A new endpoint at tick `tick`: nothing read or written yet, handshake pending.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        generation: u32,
        stream: TcpStream,
        transport: Transport,
        peer: SocketAddr,
        kind: EndpointKind,
        tick: u32,
        profile: u8,
        session: S,
    ) -> Endpoint<S> {
        let (phase, writable) = match kind {
            EndpointKind::Accepted => (Phase::Open, true),
            // Writable only once the connect completes.
            EndpointKind::Outbound => (Phase::Connecting, false),
        };
        Endpoint {
            generation,
            stream,
            transport,
            peer,
            kind,
            phase,
            out: OutQueue::default(),
            readable: false,
            writable,
            read_closed: false,
            eof: false,
            in_ready: false,
            in_dirty: false,
            in_handshakes: false,
            read_paused: false,
            app_paused: false,
            handshaking: true,
            over_soft_since: None,
            timer: Link::default(),
            last_rx: tick,
            last_ping: tick,
            opened: tick,
            profile,
            awaiting_proxy: false,
            session,
        }
    }

    /// Open for protocol traffic: not connecting or closing, past any PROXY header and TLS
    /// handshake.
    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open && !self.pre_open()
    }

    /// Not open to the application yet: connecting, awaiting a PROXY header, or in the TLS
    /// handshake. Only the handshake deadline applies, and nothing was said on it yet.
    pub(crate) fn pre_open(&self) -> bool {
        self.phase == Phase::Connecting || self.awaiting_proxy || self.transport.is_handshaking()
    }

    /// Input may be waiting: on the socket, or already decrypted inside the transport.
    pub(crate) fn has_input(&self) -> bool {
        self.readable || self.transport.has_plaintext()
    }

    /// Records what a read step saw of the socket: EOF, or a short read that drained it
    /// (the next edge tells about more, unless the peer's FIN is already known: then reading
    /// goes on to see the 0).
    pub(crate) fn note_read(&mut self, step: &ReadStep) {
        if step.eof {
            self.eof = true;
            self.readable = false;
        } else if step.drained && !self.read_closed {
            self.readable = false;
        }
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

    #[test]
    fn ids_and_reasons_print_as_logs_show_them() {
        assert_eq!(format!("{:?}", ConnId::new(12, 3)), "#12.3");
        assert_eq!(CloseReason::IdleTimeout.to_string(), "idle_timeout");
    }

    #[test]
    fn close_reason_names_are_unique_labels() {
        let mut names: Vec<&str> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CloseReason::ALL.len());
    }
}
