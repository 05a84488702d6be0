//! actionwire-proto: the sans-IO half of actionhero's socket protocol.
//!
//! This crate owns everything about the protocol that can be decided from bytes alone:
//!
//! - [`scanner`]: splitting a byte stream into lines (configurable delimiter, CR handling,
//!   length limits that never buffer past the limit, break characters);
//! - [`request`]: classifying a line as a verb, a JSON request or a bare action call, and
//!   parsing verb arguments;
//! - [`encode`]: writing every server message with the key order of the protocol reference
//!   (`docs/protocol.md`);
//! - [`http`]: reading HTTP/1.1 request heads for the HTTP front door.
//!
//! It has no sockets, no threads and no clock: callers pass in time stamps and ids, so every
//! function here is a pure function or a small state machine that is easy to test and fuzz.

pub mod encode;
pub mod http;
pub mod request;
pub mod scanner;

pub use encode::RawJson;
pub use request::{Request, Verb};
pub use scanner::{Event, LineLength, ScanConfig, Scanner};
