//! actionwire-reactor: one mio event loop that owns every socket.
//!
//! The reactor knows bytes, connections and jobs, not verbs. An application plugs in through
//! the [`Handler`] trait: it gets each connection's bytes as they arrive, writes replies into
//! the connection's output queue through [`Core`], and hands slow work to the worker pool,
//! whose results come back on the loop thread in completion order.
//!
//! - [`conn`]: generational connection ids and per-connection state;
//! - [`output`]: the output queue (owned, shared and file chunks; vectored writes);
//! - [`pool`]: the worker pool and its completion queue + `mio::Waker`;
//! - [`errors`]: the one place where socket `io::Error`s are classified;
//! - [`wheel`]: the hashed timer wheel (keep-alive, idle, handshake, linger, shutdown);
//! - [`event_loop`]: the loop itself (accept, read, dispatch, flush, close, shutdown).

pub mod conn;
pub mod errors;
pub mod event_loop;
pub mod output;
pub mod pool;
pub mod wheel;

pub use conn::{CloseReason, ConnId};
pub use event_loop::{
    Core, Handler, LOOP_TURN_BOUNDS_US, ListenerOptions, Reactor, ReactorConfig, ReactorStats,
    ShutdownHandle, TICK, Timeout,
};
pub use pool::JobPanic;
