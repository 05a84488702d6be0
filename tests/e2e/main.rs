//! End-to-end tests: the real server over real TCP on 127.0.0.1, one module per area of
//! PROTOCOL.md (sections noted in each module).

mod actions;
mod cli;
mod framing;
mod harness;
mod load;
mod rooms;
mod shutdown;
mod timers;
mod verbs;
