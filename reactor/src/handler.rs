//! The application side of the loop: the [`Handler`] trait and what it is told.
//!
//! Every method runs on the loop thread and must not block: a handler answers from memory,
//! queues output through [`Core`], and hands slow work to the worker pool
//! ([`Core::spawn`]) or to another thread that reports back through server-level events
//! ([`crate::EventSender`]).

use std::net::SocketAddr;

use crate::core::Core;
use crate::endpoint::{CloseReason, ConnId};
use crate::pool::JobPanic;

/// A timer that came due for an open endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The handshake (first line, or TLS) did not complete within `handshake_timeout`. The
    /// handler says goodbye; the reactor closes the endpoint if the handler did not.
    Handshake,
    /// Nothing was received for `idle_timeout`. Closed as above.
    Idle,
    /// Nothing was received for `keepalive_interval` (again, after the last ping).
    KeepAlive,
}

/// The application side of the loop. Every method runs on the loop thread.
pub trait Handler: Sized {
    /// Per-endpoint application state, stored in the endpoint's slab slot.
    type Session;
    /// What a job sends back.
    type Completion: Send + 'static;
    /// A server-level event: sent from any thread through an [`crate::EventSender`], or
    /// fired by a server-level timer ([`Core::set_timer`]).
    type Event: Send + 'static;
    /// What a listener tells about the endpoints it accepts (e.g. which protocol they speak).
    type Tag: Copy + 'static;

    /// An endpoint was accepted on a listener with this `tag`: create its state. (Outbound
    /// endpoints get theirs from [`Core::connect`].)
    fn new_session(&mut self, id: ConnId, peer: SocketAddr, tag: Self::Tag) -> Self::Session;
    /// The endpoint is ready for traffic: an accepted one is past any TLS handshake (send a
    /// welcome here), an outbound one is connected (and past its TLS handshake). Tell them
    /// apart with [`Core::kind`].
    fn on_open(&mut self, core: &mut Core<Self>, id: ConnId);
    /// Bytes arrived on an open endpoint. `data` may be modified in place.
    fn on_data(&mut self, core: &mut Core<Self>, id: ConnId, data: &mut [u8]);
    /// A job for an open endpoint finished (or a deferred completion came due).
    fn on_completion(
        &mut self,
        core: &mut Core<Self>,
        id: ConnId,
        result: Result<Self::Completion, JobPanic>,
    );
    /// The endpoint is gone; its session is handed back. An outbound endpoint that never
    /// opened ends with [`CloseReason::ConnectFailed`] or [`CloseReason::ConnectTimeout`].
    /// `unsent` counts the queued bytes that never left the output queue: none of them
    /// reached the socket (or TLS), so a request that is still wholly among them was never
    /// seen by the peer, and may safely be sent again elsewhere.
    fn on_close(
        &mut self,
        core: &mut Core<Self>,
        id: ConnId,
        session: Self::Session,
        reason: CloseReason,
        unsent: usize,
    );
    /// Shutdown began: listeners are closed; close endpoints as they finish. The loop ends
    /// when no endpoint is left (or the shutdown grace is over).
    fn on_shutdown(&mut self, core: &mut Core<Self>);
    /// The loop is about to return from [`crate::Reactor::run`] after a shutdown: every
    /// endpoint is closed (each one's `on_close` has run). The last word, e.g. a farewell
    /// to other processes that outlives the connections.
    fn on_stopped(&mut self, _core: &mut Core<Self>) {}
    /// A timer came due for an open endpoint. For `Idle` and `Handshake`, return true to
    /// have the endpoint closed (after whatever goodbye the handler queued), false to keep
    /// it (e.g. a response is still being computed); `KeepAlive`'s return is ignored.
    fn on_timeout(&mut self, core: &mut Core<Self>, id: ConnId, timeout: Timeout) -> bool;
    /// A server-level event arrived, or a server-level timer fired.
    fn on_event(&mut self, core: &mut Core<Self>, event: Self::Event);
    /// On a listener with `proxy_protocol`, the PROXY header named the client's address
    /// `source`: it replaces the balancer's address given to `new_session` (and
    /// [`Core::peer`] returns it from now on). Called before `on_open`; not called for a
    /// header that names no client (a balancer's own health check).
    fn on_proxied(&mut self, _core: &mut Core<Self>, _id: ConnId, _source: SocketAddr) {}
}
