//! The reactor's own tests: a toy echo handler on a real loop, real sockets on 127.0.0.1.
//! Nothing here knows the actionhero protocol.

mod toy;

mod api;
mod events;
mod handshakes;
mod io;
mod outbound;
mod proxy;
mod timers;
mod tls;
