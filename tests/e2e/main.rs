//! End-to-end tests: the real server over real TCP on 127.0.0.1, one module per area of
//! the protocol reference, `docs/protocol.md` (sections noted in each module).

#[macro_use]
mod harness;

mod abuse;
mod actions;
mod backend;
mod bench;
/// The `cache_actions` example's actions, for the cluster's cache tests.
#[path = "../../examples/cache_actions.rs"]
#[allow(dead_code)]
mod cache_actions;
mod cli;
mod cluster;
mod cluster_cache;
mod cluster_calls;
mod cluster_faults;
mod differential;
mod edge;
mod framing;
mod hooks;
mod http;
mod later;
mod load;
mod processes;
mod proxy;
mod rooms;
mod shutdown;
mod signals;
mod timers;
mod tls;
mod verbs;
