//! Listeners and accepting: binding, the accept pass, and the pauses that protect the loop.
//!
//! Accepting stops at `max_connections` (resuming below 90 %, so a full server does not
//! flap) and after running out of descriptors or memory (resuming after a back-off timer on
//! the wheel, so an exhausted server does not spin on a listener that stays readable).
//! Waiting clients stay in the kernel's backlog meanwhile. The accept path never panics.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use crate::endpoint::{ConnId, Endpoint, EndpointKind};
use crate::errors::{IoClass, classify};
use crate::event_loop::Reactor;
use crate::handler::Handler;
use crate::timers::{Profile, TimerAction, ticks};
use crate::transport::Transport;

/// The waker's token; listener `i` has token `LISTENER_BASE - i`. Both have generation
/// `u32::MAX`, which no endpoint has.
pub(crate) const WAKER: Token = Token(usize::MAX);
pub(crate) const LISTENER_BASE: usize = usize::MAX - 1;
/// Listeners at most (their indexes are kept in a byte).
const MAX_LISTENERS: usize = 250;
/// Accepts per listener per turn before it is requeued: fairness between listeners, and a
/// bound on the time a burst of new clients takes from a turn (each accept is a few system
/// calls: accept, socket options, registration), since established clients' replies of the
/// next turn wait for it. A turn with nothing else to do costs one `epoll_wait`, so a small
/// share costs a storm nothing and keeps the turn's tail short (the turn's time for new
/// clients, `NEW_CLIENTS_PER_TURN`, usually ends it first).
const ACCEPTS_PER_TURN: usize = 16;
/// How long to stop accepting after running out of file descriptors.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(100);

/// What a listener's connections are: TLS or not, and their timers.
#[derive(Clone, Default)]
pub struct ListenerOptions {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Send a keep-alive after this long without receiving anything (zero: off).
    pub keepalive_interval: Duration,
    /// Close after this long without receiving anything (zero: off).
    pub idle_timeout: Duration,
    /// Close a connection whose handshake is not complete after this long (zero: off).
    pub handshake_timeout: Duration,
    /// SO_KEEPALIVE on accepted sockets.
    pub tcp_keepalive: bool,
    /// Expect a PROXY protocol header (v1 or v2) first on every connection (see `proxy.rs`).
    pub proxy_protocol: bool,
    /// SO_REUSEPORT: several processes (or loops) listen on the same address and the
    /// kernel spreads new connections between them.
    pub reuse_port: bool,
}

pub(crate) struct Listener<T> {
    socket: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    tcp_keepalive: bool,
    proxy_protocol: bool,
    profile: u8,
    tag: T,
    /// May have connections waiting (no WouldBlock seen since the last edge).
    pub(crate) ready: bool,
}

/// Why accepting is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptPause {
    /// At `max_connections`; resumes below 90 % of it.
    Limit,
    /// Out of file descriptors or memory; resumes when the back-off timer fires.
    Exhausted,
}

/// IPv4 peers on a dual-stack listener appear as `::ffff:a.b.c.d`; report them as IPv4.
pub(crate) fn normalize(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => peer,
        },
        v4 => v4,
    }
}

impl<H: Handler> Reactor<H> {
    /// Binds a listener (dual-stack when `addr` is the IPv6 wildcard) and returns its
    /// address. Every endpoint it accepts gets `tag` in [`Handler::new_session`].
    pub fn listen(
        &mut self,
        addr: SocketAddr,
        opts: ListenerOptions,
        tag: H::Tag,
    ) -> io::Result<SocketAddr> {
        if self.listeners.len() >= MAX_LISTENERS {
            return Err(io::Error::other("too many listeners"));
        }
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if opts.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let backlog = i32::try_from(self.core.cfg.backlog).unwrap_or(i32::MAX);
        socket.listen(backlog)?;
        let mut listener = TcpListener::from_std(socket.into());
        let token = Token(LISTENER_BASE - self.listeners.len());
        self.poll
            .registry()
            .register(&mut listener, token, Interest::READABLE)?;
        let local = listener.local_addr()?;
        let profile = self
            .core
            .timers
            .profile(Profile {
                keepalive: ticks(opts.keepalive_interval),
                idle: ticks(opts.idle_timeout),
                handshake: ticks(opts.handshake_timeout),
            })
            .ok_or_else(|| io::Error::other("too many distinct timer settings"))?;
        self.listeners.push(Listener {
            socket: listener,
            tls: opts.tls,
            tcp_keepalive: opts.tcp_keepalive,
            proxy_protocol: opts.proxy_protocol,
            profile,
            tag,
            ready: true,
        });
        Ok(local)
    }

    /// The listener index a token names, if it names one.
    pub(crate) fn listener_of(&self, t: Token) -> Option<usize> {
        let i = LISTENER_BASE.checked_sub(t.0)?;
        self.listeners.get(i).map(|_| i)
    }

    pub(crate) fn accept_all(&mut self) {
        if self.accept_pause.is_some() {
            return;
        }
        for i in 0..self.listeners.len() {
            if self.listeners[i].ready {
                self.accept_from(i);
            }
        }
    }

    fn accept_from(&mut self, i: usize) {
        for n in 0..ACCEPTS_PER_TURN {
            if n > 0 && self.new_clients_done() {
                return; // still ready: the next turn goes on
            }
            if self.core.accepted >= self.core.cfg.max_connections {
                log::warn!(
                    "maxConnections ({}) reached: not accepting until below 90%",
                    self.core.cfg.max_connections
                );
                self.accept_pause = Some(AcceptPause::Limit);
                return;
            }
            match self.listeners[i].socket.accept() {
                Ok((stream, peer)) => self.add_accepted(stream, peer, i),
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => {
                        self.listeners[i].ready = false;
                        return;
                    }
                    IoClass::Retry | IoClass::PeerGone => {}
                    class @ (IoClass::Exhausted | IoClass::Fatal) => {
                        self.core
                            .stats
                            .accept_failures
                            .fetch_add(1, Ordering::Relaxed);
                        log::log!(
                            class.log_level(),
                            "accept failed ({e}) with {} connections open: pausing accepts for \
                             {EXHAUSTED_BACKOFF:?}",
                            self.core.accepted
                        );
                        self.accept_pause = Some(AcceptPause::Exhausted);
                        self.core
                            .set_internal_timer(EXHAUSTED_BACKOFF, TimerAction::ResumeAccepting);
                        return;
                    }
                },
            }
        }
    }

    /// The back-off after running out of resources is over.
    pub(crate) fn resume_accepting(&mut self) {
        if self.accept_pause == Some(AcceptPause::Exhausted) {
            log::info!("resuming accepting connections after running out of resources");
            self.accept_pause = None;
        }
    }

    /// Endpoints were removed: resume accepting below 90 % of `max_connections`.
    pub(crate) fn check_accept_limit(&mut self) {
        let max = self.core.cfg.max_connections;
        if self.accept_pause == Some(AcceptPause::Limit) && self.core.accepted * 10 < max * 9 {
            log::info!("connections below 90% of maxConnections ({max}): accepting again");
            self.accept_pause = None;
        }
    }

    fn add_accepted(&mut self, mut stream: TcpStream, peer: SocketAddr, listener: usize) {
        let l = &self.listeners[listener];
        let (tag, profile, tcp_keepalive, proxy) =
            (l.tag, l.profile, l.tcp_keepalive, l.proxy_protocol);
        let transport = match l.tls.clone().map(Transport::server) {
            None => Transport::Plain,
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                log::warn!("cannot start TLS for {peer}: {e}");
                return;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("TCP_NODELAY on {peer}: {e}");
        }
        if tcp_keepalive && let Err(e) = socket2::SockRef::from(&stream).set_keepalive(true) {
            log::debug!("SO_KEEPALIVE on {peer}: {e}");
        }
        let peer = normalize(peer);
        let core = &mut self.core;
        let generation = core.next_generation();
        let slot = core.endpoints.vacant_key();
        if !crate::timers::endpoint_slot_fits(slot) {
            log::error!("endpoint slab is full: refusing {peer}");
            return;
        }
        let id = ConnId::new(slot, generation);
        if let Err(e) = core.registry.register(
            &mut stream,
            id.token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register connection from {peer}: {e}");
            return;
        }
        let session = self.handler.new_session(id, peer, tag);
        let tick = core.timers.tick32();
        let tls = transport.is_tls();
        let mut ep = Endpoint::new(
            generation,
            stream,
            transport,
            peer,
            EndpointKind::Accepted,
            tick,
            profile,
            session,
        );
        ep.awaiting_proxy = proxy;
        let key = core.endpoints.insert(ep);
        debug_assert_eq!(key, slot);
        core.accepted += 1;
        core.schedule(id);
        core.stats.accepted.fetch_add(1, Ordering::Relaxed);
        core.stats.open.fetch_add(1, Ordering::Relaxed);
        log::debug!("{id:?} accepted from {peer}");
        // A TLS endpoint opens for the application when its handshake completes; one that
        // awaits a PROXY header, once the header is in (`proxy.rs`).
        if !tls && !proxy {
            self.handler.on_open(&mut self.core, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_peers_are_reported_as_ipv4() {
        let p: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().expect("addr");
        assert_eq!(
            normalize(p),
            "127.0.0.1:4000".parse::<SocketAddr>().expect("addr")
        );
        let p: SocketAddr = "[::1]:4000".parse().expect("addr");
        assert_eq!(normalize(p), p);
    }
}
