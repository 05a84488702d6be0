//! actionwire-reactor: one mio event loop that owns every socket.
//!
//! The reactor knows endpoints, bytes, timers and events, not verbs. An application plugs in
//! through the [`Handler`] trait: it gets each endpoint's bytes as they arrive, writes into
//! the endpoint's output queue through [`Core`], opens outbound endpoints, sets timers, and
//! hands slow work to the worker pool, whose results come back on the loop thread.
//!
//! - [`handler`]: the [`Handler`] trait the application implements;
//! - [`core`]: [`Core`], the loop state and the API handlers use;
//! - [`endpoint`]: generational endpoint ids, close reasons and per-endpoint state;
//! - [`accept`]: listeners, the accept pass and its pauses;
//! - [`connect`]: outbound endpoints ([`Core::connect`]) and their `Connecting` phase;
//! - [`transport`]: plain or TLS (every rustls call, server and client side);
//! - [`proxy`]: the PROXY protocol header a load balancer sends first;
//! - [`output`]: the output queue (owned, shared and file chunks; vectored writes);
//! - [`timers`]: every deadline (endpoint timers, server-level timers, deferred replies);
//! - [`wheel`]: the hashed timer wheel those timers live on;
//! - [`events`]: server-level events from other threads (bounded channel + the Waker);
//! - [`pool`]: the worker pool and its completion queue;
//! - [`stats`]: counters shared with other threads;
//! - [`errors`]: the one place where socket `io::Error`s are classified;
//! - [`event_loop`]: the loop itself, as passes over the endpoints;
//! - [`handshake`]: when and where TLS handshake steps run (the handshake threads).

pub mod accept;
pub mod connect;
pub mod core;
pub mod endpoint;
pub mod errors;
pub mod event_loop;
pub mod events;
pub mod handler;
pub mod handshake;
pub mod output;
pub mod pool;
pub mod proxy;
pub mod stats;
pub mod timers;
pub mod transport;
pub mod wheel;

pub use accept::ListenerOptions;
pub use connect::{ClientTls, ConnectError, ConnectOptions};
pub use core::{Core, ReactorConfig};
pub use endpoint::{CloseReason, ConnId, EndpointKind};
pub use event_loop::{Reactor, ShutdownHandle};
pub use events::{EventSender, SendError};
pub use handler::{Handler, Timeout};
pub use pool::{Completer, JobPanic};
pub use stats::{LOOP_TURN_BOUNDS_US, ReactorStats};
pub use timers::{TICK, TimerError, TimerId};
