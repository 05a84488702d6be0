//! Outbound endpoints: [`Core::connect`] and the `Connecting` phase.
//!
//! A connect is non-blocking: the socket is registered at once and the endpoint waits in
//! `Phase::Connecting` until the first writable (or error) event says how it went. Then
//! it is an endpoint like any accepted one (same reads, writes, backpressure, output limits
//! and timers), except that TLS runs as a rustls *client*. The connect timeout covers the TCP
//! connect and the TLS handshake together. The handler hears of success through
//! [`Handler::on_open`] and of failure through [`Handler::on_close`] with
//! [`CloseReason::ConnectFailed`] or [`CloseReason::ConnectTimeout`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::Interest;
use mio::net::TcpStream;
use rustls::pki_types::ServerName;

use crate::core::Core;
use crate::endpoint::{CloseReason, ConnId, Endpoint, EndpointKind, Phase};
use crate::event_loop::Reactor;
use crate::handler::Handler;
use crate::timers::{Profile, endpoint_slot_fits, ticks};
use crate::transport::Transport;

/// TLS for an outbound endpoint: the client configuration and the name to verify.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// How to open an outbound endpoint.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Speak TLS as a client.
    pub tls: Option<ClientTls>,
    /// The TCP connect and the TLS handshake must complete within this (zero: no limit).
    pub connect_timeout: Duration,
    /// Close after this long without receiving anything once open (zero: off).
    pub idle_timeout: Duration,
    /// Call [`Handler::on_timeout`] with `KeepAlive` after this long without receiving
    /// anything (zero: off).
    pub keepalive_interval: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            tls: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::ZERO,
            keepalive_interval: Duration::ZERO,
        }
    }
}

/// A connect that failed at once (no descriptor, an invalid address, refused before the
/// socket could wait): the session is handed back.
#[derive(Debug)]
pub struct ConnectError<S> {
    pub error: io::Error,
    pub session: S,
}

impl<H: Handler> Core<H> {
    /// Opens an outbound endpoint to `addr` with `session` as its state. Returns at once;
    /// the outcome arrives as `on_open` or `on_close` (see the module header).
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        opts: &ConnectOptions,
        session: H::Session,
    ) -> Result<ConnId, ConnectError<H::Session>> {
        let fail = |error: io::Error, session| Err(ConnectError { error, session });
        let Some(profile) = self.timers.profile(Profile {
            keepalive: ticks(opts.keepalive_interval),
            idle: ticks(opts.idle_timeout),
            handshake: ticks(opts.connect_timeout),
        }) else {
            return fail(
                io::Error::other("too many distinct timer settings"),
                session,
            );
        };
        let transport = match &opts.tls {
            None => Transport::Plain,
            Some(tls) => {
                match Transport::client(Arc::clone(&tls.config), tls.server_name.clone()) {
                    Ok(t) => t,
                    Err(e) => return fail(io::Error::other(e), session),
                }
            }
        };
        let slot = self.endpoints.vacant_key();
        if !endpoint_slot_fits(slot) {
            return fail(io::Error::other("endpoint slab is full"), session);
        }
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => return fail(e, session),
        };
        let generation = self.next_generation();
        let id = ConnId::new(slot, generation);
        if let Err(e) = self.registry.register(
            &mut stream,
            id.token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return fail(e, session);
        }
        let tick = self.timers.tick32();
        let key = self.endpoints.insert(Endpoint::new(
            generation,
            stream,
            transport,
            addr,
            EndpointKind::Outbound,
            tick,
            profile,
            session,
        ));
        debug_assert_eq!(key, slot);
        self.schedule(id);
        self.stats.outbound_open.fetch_add(1, Ordering::Relaxed);
        log::debug!("{id:?} connecting to {addr}");
        Ok(id)
    }

    /// An outbound endpoint is connected and past any TLS handshake.
    pub(crate) fn outbound_opened(&mut self, id: ConnId) {
        if let Some(ep) = self.ep_mut(id) {
            ep.handshaking = false;
            log::debug!("{id:?} connected to {}", ep.peer);
        }
        self.stats
            .outbound_connected
            .fetch_add(1, Ordering::Relaxed);
        self.schedule(id);
    }

    /// An outbound endpoint failed before it opened.
    pub(crate) fn outbound_failed(&mut self, id: ConnId, error: &dyn std::fmt::Display) {
        if let Some(ep) = self.ep(id) {
            log::debug!("{id:?}: connecting to {} failed: {error}", ep.peer);
        }
        self.stats.outbound_failed.fetch_add(1, Ordering::Relaxed);
        self.kill(id, CloseReason::ConnectFailed);
    }
}

impl<H: Handler> Reactor<H> {
    /// A readiness event arrived for an endpoint still connecting: see whether the connect
    /// completed, failed, or is still under way (a spurious wake-up).
    pub(crate) fn finish_connect(&mut self, id: ConnId) {
        let core = &mut self.core;
        let Some(ep) = core.ep_mut(id) else {
            return;
        };
        debug_assert_eq!(ep.phase, Phase::Connecting);
        match connect_progress(ep.stream.take_error(), || ep.stream.peer_addr()) {
            ConnectProgress::Connected => {}
            ConnectProgress::Pending => return,
            ConnectProgress::Failed(e) => return core.outbound_failed(id, &e),
        }
        ep.phase = Phase::Open;
        ep.writable = true;
        if let Err(e) = ep.stream.set_nodelay(true) {
            log::debug!("TCP_NODELAY on {}: {e}", ep.peer);
        }
        let tls = ep.transport.is_tls();
        let readable = ep.readable;
        if tls {
            // The ClientHello waits in rustls; the handshake runs through the usual passes.
            core.mark_dirty(id);
            core.schedule(id);
        } else {
            core.outbound_opened(id);
            self.handler.on_open(&mut self.core, id);
        }
        if readable {
            self.core.mark_ready(id);
        }
    }
}

/// Where a non-blocking connect stands when its socket reports readiness.
#[derive(Debug)]
enum ConnectProgress {
    Connected,
    /// A spurious wake-up: still under way.
    Pending,
    Failed(io::Error),
}

/// Reads a connect's outcome the way non-blocking sockets report it: a pending socket
/// error (`SO_ERROR`) means it failed; otherwise it is connected once it has a peer address,
/// and `NotConnected` there means it is still under way.
fn connect_progress(
    socket_error: io::Result<Option<io::Error>>,
    peer: impl FnOnce() -> io::Result<SocketAddr>,
) -> ConnectProgress {
    match socket_error {
        Ok(None) => {}
        Ok(Some(e)) | Err(e) => return ConnectProgress::Failed(e),
    }
    match peer() {
        Ok(_) => ConnectProgress::Connected,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => ConnectProgress::Pending,
        Err(e) => ConnectProgress::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 9)))
    }

    #[test]
    fn a_connect_is_read_from_its_socket_error_then_its_peer() {
        use io::ErrorKind::{ConnectionRefused, NotConnected, PermissionDenied};
        let progress = |socket_error, peer: io::Result<SocketAddr>| {
            format!("{:?}", connect_progress(socket_error, || peer))
        };
        assert_eq!(progress(Ok(None), addr()), "Connected");
        assert_eq!(progress(Ok(None), Err(NotConnected.into())), "Pending");
        assert!(progress(Ok(None), Err(PermissionDenied.into())).contains("PermissionDenied"));
        assert!(progress(Ok(Some(ConnectionRefused.into())), addr()).contains("ConnectionRefused"));
        assert!(progress(Err(PermissionDenied.into()), addr()).contains("PermissionDenied"));
    }
}
