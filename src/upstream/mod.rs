//! Edge mode: actions forwarded to an HTTP backend, from the event loop.
//!
//! A forwarded call becomes `POST <upstream.url>/<action>` with the params as a JSON object
//! (the protocol reference, `docs/protocol.md`, "Edge mode"). Backend connections are
//! outbound endpoints of the reactor, so a slow backend holds no thread: the request is
//! queued as output, the response is read by `response::ResponseReader` as bytes arrive,
//! and the reply goes to the caller like any action's.
//!
//! The pool: at most `upstream.maxConnections` connections (connecting ones included),
//! kept alive and reused most-recent-first (the rest close after `keepAliveTimeout` idle).
//! A call that finds no idle connection waits in a FIFO queue of at most
//! `upstream.maxQueued` calls; beyond it, it is refused at once. Each call has one timer
//! covering the wait, the connect and the whole exchange. A call whose connection failed
//! before any byte of its request left the output queue (a keep-alive connection the
//! backend had just closed) is sent once more on another connection; one whose request was
//! written is not, since the backend may have run it.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actionwire_config::{Upstream as UpstreamConfig, UpstreamUrl};
use actionwire_reactor::{ClientTls, CloseReason, ConnId, ConnectOptions, TimerId};
use serde_json::{Map, Value};
use slab::Slab;

mod reply;
mod response;
pub(crate) use reply::{Failure, reply_of};
use response::{Progress, ResponseReader};

/// Distinct forwarded action names that get metrics of their own; later ones share
/// [`OTHER_ACTIONS`] (clients choose the names a `*` forwards: the label set stays bounded).
const NAMED_ACTIONS: usize = 256;
/// The metric label of forwarded calls past [`NAMED_ACTIONS`].
pub(crate) const OTHER_ACTIONS: &str = "(other upstream)";

/// What the session layer needs to reach the backend, fixed at start.
#[derive(Debug)]
pub(crate) struct Settings {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Path prefix, without a trailing slash.
    pub path: String,
    pub connect: ConnectOptions,
    /// Names forwarded even when defined locally.
    pub names: HashSet<String>,
    /// `*`: every action not defined locally is forwarded.
    pub all: bool,
    pub timeout: Duration,
    pub max_connections: usize,
    pub max_queued: usize,
    pub max_response_bytes: usize,
    /// The URL as configured, for logs and errors.
    pub url: String,
}

/// Why edge mode could not be set up.
#[derive(Debug)]
pub struct UpstreamError(pub String);

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream: {}", self.0)
    }
}

impl std::error::Error for UpstreamError {}

impl Settings {
    /// From the configuration: `None` when no `upstream.url` is set. Resolves the host name
    /// (once, here) and loads the CA file for `https://`.
    pub(crate) fn from_config(c: &UpstreamConfig) -> Result<Option<Settings>, UpstreamError> {
        let Some(text) = &c.url else {
            return Ok(None);
        };
        let url = UpstreamUrl::parse(text).map_err(|m| UpstreamError(format!("url: {m}")))?;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(url.host.as_str(), url.port))
            .map_err(|e| UpstreamError(format!("cannot resolve {}: {e}", url.host)))?
            .next()
            .ok_or_else(|| UpstreamError(format!("{} has no address", url.host)))?;
        let tls = if url.tls {
            Some(client_tls(&url.host, c.ca.as_deref())?)
        } else {
            None
        };
        let default_port = if url.tls { 443 } else { 80 };
        let host = match (url.host.contains(':'), url.port == default_port) {
            (true, true) => format!("[{}]", url.host),
            (true, false) => format!("[{}]:{}", url.host, url.port),
            (false, true) => url.host.clone(),
            (false, false) => format!("{}:{}", url.host, url.port),
        };
        let timeout = Duration::from_millis(c.timeout);
        Ok(Some(Settings {
            addr,
            host,
            path: url.path,
            connect: ConnectOptions {
                tls,
                connect_timeout: timeout,
                idle_timeout: Duration::from_millis(c.keep_alive_timeout),
                keepalive_interval: Duration::ZERO,
            },
            names: c.actions.iter().filter(|a| *a != "*").cloned().collect(),
            all: c.actions.iter().any(|a| a == "*"),
            timeout,
            max_connections: c.max_connections,
            max_queued: c.max_queued,
            max_response_bytes: c.max_response_bytes,
            url: text.clone(),
        }))
    }
}

/// rustls client configuration: the Mozilla roots plus the configured CA file.
fn client_tls(host: &str, ca: Option<&std::path::Path>) -> Result<ClientTls, UpstreamError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| UpstreamError(format!("ca {}: {e:?}", path.display())))?;
        if certs.is_empty() {
            return Err(UpstreamError(format!(
                "ca {}: no certificate in the file",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| UpstreamError(format!("ca {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(crate::tls::provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|e| UpstreamError(format!("`{host}` is not a TLS server name: {e}")))?;
    Ok(ClientTls {
        config: Arc::new(config),
        server_name,
    })
}

/// Who a call answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A client connection's action call.
    Client(ConnId),
    /// The server's own fetch of the backend's documentation at start.
    Documentation,
}

/// A forwarded call.
pub(crate) struct Call {
    pub caller: Caller,
    /// Metric label (the action's name, or [`OTHER_ACTIONS`]).
    pub label: Arc<str>,
    pub format: crate::actions::ReplyFormat,
    pub started: Instant,
    request: Vec<u8>,
    timer: Option<TimerId>,
    retried: bool,
    /// The connection carrying it, once sent.
    on: Option<ConnId>,
}

/// A call that is over: the session layer answers its caller.
pub(crate) struct Finished {
    pub call: Call,
    pub result: Result<response::Response, Failure>,
}

pub(crate) use response::Response;

/// A backend connection's state (its endpoint's session).
#[derive(Debug)]
pub(crate) enum Backend {
    Connecting,
    Idle,
    Busy {
        call: usize,
        request_len: usize,
        reader: ResponseReader,
    },
    /// Closed by us (its call timed out): nothing more is expected of it.
    Closing,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    /// Calls ended, by [`Ending`].
    pub calls: [u64; Ending::ALL.len()],
    pub retries: u64,
    pub connects: u64,
    pub connect_failures: u64,
}

/// How a forwarded call ended: the `result` label of `actionwire_upstream_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The backend answered (whatever the action's outcome).
    Answered,
    /// No usable answer: unreachable, closed, not HTTP, not JSON, too large.
    Unavailable,
    TimedOut,
    /// The queue was full.
    Refused,
}

impl Ending {
    pub(crate) const ALL: [Ending; 4] = [
        Ending::Answered,
        Ending::Unavailable,
        Ending::TimedOut,
        Ending::Refused,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Ending::Answered => "answered",
            Ending::Unavailable => "unavailable",
            Ending::TimedOut => "timed_out",
            Ending::Refused => "refused",
        }
    }
}

/// Closes a backend connection that carries no call any more (its `on_close` expects
/// nothing of it).
fn close_backend(core: &mut UpCore, conn: ConnId) {
    if let Some(crate::session::Session::Upstream(b)) = core.session_mut(conn) {
        *b = Backend::Closing;
    }
    core.close(conn, CloseReason::Quit);
}

/// The pool, the queue and the calls in flight. Lives on the loop thread.
pub(crate) struct Upstream {
    pub settings: Settings,
    calls: Slab<Call>,
    queue: VecDeque<usize>,
    /// Idle connections, most recently used last.
    idle: Vec<ConnId>,
    /// Connections connecting or open.
    connections: usize,
    connecting: usize,
    /// Forwarded names with metrics of their own.
    labels: HashSet<Arc<str>>,
    finished: Vec<Finished>,
    shutting_down: bool,
    counters: Counters,
}

/// Loop-side operations need the core and hand finished calls back to the session layer.
pub(crate) type UpCore = actionwire_reactor::Core<crate::session::App>;

impl Upstream {
    pub(crate) fn new(settings: Settings) -> Upstream {
        Upstream {
            settings,
            calls: Slab::new(),
            queue: VecDeque::new(),
            idle: Vec::new(),
            connections: 0,
            connecting: 0,
            labels: HashSet::new(),
            finished: Vec::new(),
            shutting_down: false,
            counters: Counters::default(),
        }
    }

    /// Whether a call of `name` goes to the backend.
    pub(crate) fn forwards(&self, name: &str, defined_locally: bool) -> bool {
        self.settings.names.contains(name) || (self.settings.all && !defined_locally)
    }

    /// The counters and the pool as it is now, for `/metrics`.
    pub(crate) fn gauges(&self) -> crate::metrics::UpstreamGauges {
        crate::metrics::UpstreamGauges {
            counters: self.counters.clone(),
            queued: self.queue.len(),
            idle: self.idle.len(),
            busy: self.connections - self.connecting - self.idle.len(),
            connecting: self.connecting,
        }
    }

    /// Calls finished since the last take, for the session layer to answer.
    pub(crate) fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    /// The metric label for a forwarded name.
    fn label(&mut self, name: &str) -> Arc<str> {
        if let Some(l) = self.labels.get(name) {
            return Arc::clone(l);
        }
        if self.labels.len() >= NAMED_ACTIONS {
            return Arc::from(OTHER_ACTIONS);
        }
        let l: Arc<str> = Arc::from(name);
        self.labels.insert(Arc::clone(&l));
        l
    }

    /// Starts a call (see the module header). `client` is the caller's address and
    /// connection id, for the forwarding headers.
    pub(crate) fn call(
        &mut self,
        core: &mut UpCore,
        caller: Caller,
        name: &str,
        params: &Map<String, Value>,
        client: (SocketAddr, uuid::Uuid),
        format: crate::actions::ReplyFormat,
    ) {
        let call = Call {
            caller,
            label: self.label(name),
            format,
            started: Instant::now(),
            request: self.request(name, params, client),
            timer: None,
            retried: false,
            on: None,
        };
        // The server's own documentation fetch is never refused: it is one call, at start.
        if self.queue.len() >= self.settings.max_queued && caller != Caller::Documentation {
            self.counters.calls[Ending::Refused as usize] += 1;
            self.finished.push(Finished {
                call,
                result: Err(Failure::QueueFull),
            });
            return;
        }
        let key = self.calls.insert(call);
        match core.set_timer(
            self.settings.timeout,
            crate::session::AppEvent::UpstreamTimeout(key),
        ) {
            Ok(t) => self.calls[key].timer = Some(t),
            // Only when the loop's timer store is full: the call still has its connection's
            // own timeouts.
            Err(e) => log::warn!("upstream call without a timer: {e}"),
        }
        self.queue.push_back(key);
        self.pump(core);
    }

    /// Encodes the HTTP request of a call.
    fn request(
        &self,
        name: &str,
        params: &Map<String, Value>,
        (ip, uuid): (SocketAddr, uuid::Uuid),
    ) -> Vec<u8> {
        use std::io::Write as _;
        const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        // A backend may take the action from a body param `action` before the path
        // (actionhero does): a sticky `action` left by an earlier call must not redirect
        // this one, so the body names the action called.
        let stray = params
            .get("action")
            .is_some_and(|a| a.as_str() != Some(name));
        let body = if stray {
            let mut named = params.clone();
            named.insert("action".into(), Value::String(name.into()));
            serde_json::to_vec(&named)
        } else {
            serde_json::to_vec(params)
        }
        .unwrap_or_else(|_| b"{}".to_vec());
        let mut out = Vec::with_capacity(256 + body.len());
        let _ = write!(
            out,
            "POST {}/{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Forwarded-For: {}\r\nX-Forwarded-Port: {}\r\nX-sessionID: {}\r\n\r\n",
            self.settings.path,
            percent_encoding::utf8_percent_encode(name, SEGMENT),
            self.settings.host,
            body.len(),
            ip.ip(),
            ip.port(),
            uuid,
        );
        out.extend_from_slice(&body);
        out
    }

    /// Puts waiting calls on idle connections, and opens connections for the rest as the
    /// pool allows.
    pub(crate) fn pump(&mut self, core: &mut UpCore) {
        while let Some(&key) = self.queue.front() {
            // A caller that went away while its call waited: nothing to send it for.
            if let Caller::Client(c) = self.calls[key].caller
                && !core.is_open(c)
            {
                self.queue.pop_front();
                let call = self.calls.remove(key);
                if let Some(t) = call.timer {
                    core.cancel_timer(t);
                }
                continue;
            }
            if let Some(conn) = self.idle.pop() {
                if !core.is_open(conn) {
                    continue; // closing: its on_close will count it
                }
                self.queue.pop_front();
                self.send(core, conn, key);
                continue;
            }
            if self.connections < self.settings.max_connections
                && self.connecting < self.queue.len()
            {
                self.connect(core);
                continue;
            }
            break;
        }
    }

    fn connect(&mut self, core: &mut UpCore) {
        self.counters.connects += 1;
        let session = crate::session::Session::Upstream(Backend::Connecting);
        match core.connect(self.settings.addr, &self.settings.connect, session) {
            Ok(_) => {
                self.connections += 1;
                self.connecting += 1;
            }
            Err(e) => {
                self.counters.connect_failures += 1;
                let why = format!("cannot connect to {}: {}", self.settings.url, e.error);
                self.fail_queue(core, &why);
            }
        }
    }

    /// Writes a call's request on an idle connection.
    fn send(&mut self, core: &mut UpCore, conn: ConnId, key: usize) {
        self.calls[key].on = Some(conn);
        let request = &self.calls[key].request;
        debug_assert_eq!(
            core.queued_bytes(conn),
            0,
            "an idle connection has no output"
        );
        core.send(conn, request);
        if let Some(crate::session::Session::Upstream(b)) = core.session_mut(conn) {
            *b = Backend::Busy {
                call: key,
                request_len: request.len(),
                reader: ResponseReader::new(self.settings.max_response_bytes),
            };
        }
    }

    /// Every waiting call fails with `why` (the backend cannot be reached, and no open
    /// connection will take them).
    fn fail_queue(&mut self, core: &mut UpCore, why: &str) {
        while let Some(key) = self.queue.pop_front() {
            let call = self.calls.remove(key);
            self.end(core, call, Err(Failure::Unavailable(why.to_owned())));
        }
    }

    /// A call is over.
    fn end(&mut self, core: &mut UpCore, call: Call, result: Result<Response, Failure>) {
        if let Some(t) = call.timer {
            core.cancel_timer(t);
        }
        let ending = match &result {
            Ok(_) => Ending::Answered,
            Err(Failure::TimedOut) => Ending::TimedOut,
            Err(Failure::QueueFull) => Ending::Refused,
            Err(Failure::Unavailable(_)) => Ending::Unavailable,
        };
        // The metrics count the clients' calls (not the documentation fetch).
        if call.caller != Caller::Documentation {
            self.counters.calls[ending as usize] += 1;
        }
        self.finished.push(Finished { call, result });
    }

    /// A backend connection is open: it takes the next call.
    pub(crate) fn opened(&mut self, core: &mut UpCore, conn: ConnId) {
        self.connecting -= 1;
        self.now_idle(core, conn);
    }

    fn now_idle(&mut self, core: &mut UpCore, conn: ConnId) {
        if let Some(crate::session::Session::Upstream(b)) = core.session_mut(conn) {
            *b = Backend::Idle;
        }
        if self.shutting_down && self.queue.is_empty() {
            core.close(conn, CloseReason::Shutdown);
            return;
        }
        self.idle.push(conn);
        self.pump(core);
    }

    /// Bytes from a backend connection.
    pub(crate) fn data(&mut self, core: &mut UpCore, conn: ConnId, data: &[u8]) {
        let Some(crate::session::Session::Upstream(b)) = core.session_mut(conn) else {
            return;
        };
        let Backend::Busy { call, reader, .. } = b else {
            // Nothing was asked: a backend talking out of turn is not to be trusted.
            return close_backend(core, conn);
        };
        let key = *call;
        let progress = reader.feed(data);
        self.progress(core, conn, key, progress);
    }

    fn progress(&mut self, core: &mut UpCore, conn: ConnId, key: usize, progress: Progress) {
        match progress {
            Progress::More => {}
            Progress::Done(response) => {
                let reusable = response.reusable;
                let call = self.calls.remove(key);
                self.end(core, call, Ok(response));
                if reusable && core.is_open(conn) {
                    self.now_idle(core, conn);
                } else {
                    close_backend(core, conn);
                }
            }
            Progress::Failed(f) => {
                let call = self.calls.remove(key);
                close_backend(core, conn);
                self.end(core, call, Err(Failure::Unavailable(f.describe())));
            }
        }
    }

    /// A backend connection ended (`unsent`: queued bytes that never left the queue).
    pub(crate) fn closed(
        &mut self,
        core: &mut UpCore,
        conn: ConnId,
        backend: Backend,
        reason: CloseReason,
        unsent: usize,
    ) {
        self.connections -= 1;
        match backend {
            Backend::Connecting => {
                self.connecting -= 1;
                self.counters.connect_failures += 1;
                let why = format!("cannot connect to {} ({reason})", self.settings.url);
                log::debug!("upstream: {why}");
                // With no connection left to serve them, the waiting calls fail now rather
                // than each waiting for its timeout.
                if self.connections == 0 {
                    self.fail_queue(core, &why);
                } else {
                    self.pump(core);
                }
            }
            Backend::Idle => {
                self.idle.retain(|&c| c != conn);
            }
            Backend::Busy {
                call: key,
                request_len,
                mut reader,
            } => {
                if unsent >= request_len && !self.calls[key].retried {
                    // Nothing of the request reached the backend: send it again.
                    self.counters.retries += 1;
                    self.calls[key].retried = true;
                    self.calls[key].on = None;
                    self.queue.push_front(key);
                    self.pump(core);
                    return;
                }
                let progress = match reason {
                    CloseReason::Eof | CloseReason::Quit => reader.closed(),
                    _ => Progress::Failed(response::ReadFailure::Closed {
                        begun: reader.begun(),
                    }),
                };
                match progress {
                    Progress::Done(response) => {
                        let call = self.calls.remove(key);
                        self.end(core, call, Ok(response));
                    }
                    Progress::Failed(f) => {
                        let call = self.calls.remove(key);
                        self.end(core, call, Err(Failure::Unavailable(f.describe())));
                    }
                    Progress::More => debug_assert!(false, "a close ends every read"),
                }
                self.pump(core);
            }
            Backend::Closing => self.pump(core),
        }
    }

    /// A call's timer fired.
    pub(crate) fn timed_out(&mut self, core: &mut UpCore, key: usize) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        call.timer = None; // fired
        if let Some(i) = self.queue.iter().position(|&k| k == key) {
            self.queue.remove(i);
        } else {
            // On a connection: it cannot be reused for the next call mid-response.
            if let Some(conn) = call.on {
                close_backend(core, conn);
            }
        }
        let call = self.calls.remove(key);
        self.end(core, call, Err(Failure::TimedOut));
    }

    /// Shutdown began: idle connections close now, busy ones after their answer.
    pub(crate) fn shutdown(&mut self, core: &mut UpCore) {
        self.shutting_down = true;
        if self.queue.is_empty() {
            for conn in self.idle.drain(..) {
                core.close(conn, CloseReason::Shutdown);
            }
        }
    }
}
