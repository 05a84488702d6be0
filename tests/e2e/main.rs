//! End-to-end tests: the real server over real TCP on 127.0.0.1, one module per area of
//! the protocol reference, `docs/protocol.md` (sections noted in each module).

#[macro_use]
mod harness;

mod abuse;
mod actions;
mod backend;
mod bench;
mod cli;
mod cluster;
mod differential;
mod edge;
mod framing;
mod hooks;
mod http;
mod later;
mod load;
mod proxy;
mod rooms;
mod shutdown;
mod signals;
mod timers;
mod tls;
mod verbs;
