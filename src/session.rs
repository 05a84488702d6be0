//! The session layer: the application's [`Handler`] for the reactor.
//!
//! [`App`] gives every accepted connection a [`Session`] of its listener's protocol: a
//! socket session ([`socket`]: lines, verbs, rooms, actions) or an HTTP session ([`http`]:
//! the front door). Worker completions, timeouts, closes and shutdown are routed to the
//! protocol they belong to. Every session and the room index live on the loop thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actionwire_proto::ScanConfig;
use actionwire_proto::encode;
use actionwire_reactor::{CloseReason, ConnId, Core, Handler, JobPanic, Timeout};

use crate::actions::{Api, Done, Registry, Reply};
use crate::cluster::calls::CallError;
use crate::files::PublicDirs;
use crate::hooks::{LoopHooks, ServerCommand};
use crate::metrics::Metrics;
use crate::rooms::Rooms;
use crate::upstream::{Backend, Upstream};

mod chat;
mod cluster;
mod edge;
mod http;
mod socket;
use http::HttpSession;
pub(crate) use http::WebSettings;
use socket::SocketSession;

/// Which listener accepted a connection: its protocol and transport. Handed to the reactor
/// as each listener's tag; also the `transport` label of the connection metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    /// The socket protocol over plain TCP.
    Socket,
    /// The socket protocol over TLS.
    SocketTls,
    /// The HTTP front door.
    Web,
}

impl ListenerKind {
    pub(crate) const ALL: [ListenerKind; 3] = [
        ListenerKind::Socket,
        ListenerKind::SocketTls,
        ListenerKind::Web,
    ];

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ListenerKind::Socket => "plain",
            ListenerKind::SocketTls => "tls",
            ListenerKind::Web => "http",
        }
    }

    /// Position in [`ListenerKind::ALL`] (for per-kind counters).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Per-endpoint state, kept in the reactor's slab slot: one type per protocol, and the
/// backend connections of edge mode.
pub(crate) enum Session {
    Socket(SocketSession),
    Http(HttpSession),
    /// A connection to the upstream backend (outbound; see upstream/).
    Upstream(Backend),
}

impl Session {
    /// The listener a client connection came from (`None`: a backend connection).
    fn kind(&self) -> Option<ListenerKind> {
        match self {
            Session::Socket(s) if s.tls => Some(ListenerKind::SocketTls),
            Session::Socket(_) => Some(ListenerKind::Socket),
            Session::Http(_) => Some(ListenerKind::Web),
            Session::Upstream(_) => None,
        }
    }

    /// Actions running for this connection (none for a backend connection).
    fn pending_actions_mut(&mut self) -> Option<&mut u32> {
        match self {
            Session::Socket(s) => Some(s.pending_actions_mut()),
            Session::Http(h) => Some(&mut h.pending_actions),
            Session::Upstream(_) => None,
        }
    }

    fn pending_actions(&mut self) -> u32 {
        self.pending_actions_mut().map_or(0, |p| *p)
    }

    /// The connection id clients see (`id` in `detailsView`), for log lines.
    fn client_id(&self) -> uuid::Uuid {
        match self {
            Session::Socket(s) => s.uuid(),
            Session::Http(h) => h.uuid(),
            Session::Upstream(_) => uuid::Uuid::nil(),
        }
    }

    fn peer(&self) -> SocketAddr {
        match self {
            Session::Socket(s) => s.peer(),
            Session::Http(h) => h.peer(),
            Session::Upstream(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

/// Server-level events of the application's loop.
#[derive(Debug)]
pub(crate) enum AppEvent {
    /// The loop-lag probe's timer (see health.rs), due at `due`.
    LagProbe { due: Instant },
    /// From server code, through [`crate::Api::command`].
    Command(ServerCommand),
    /// A forwarded call's `upstream.timeout` passed (its key in the upstream's calls).
    UpstreamTimeout(usize),
    /// Ask the backend for its `showDocumentation` (once, at start).
    FetchUpstreamDocumentation,
    /// Start the cluster link (once, at start, with Redis on).
    ClusterStart,
    /// From the cluster link's threads.
    Bus(crate::cluster::BusEvent),
    /// A cluster call from server code, through [`crate::Api::cluster_call`].
    ClusterCall(Box<crate::cluster::calls::OutCall>),
    /// A cluster call's `general.rpcTimeout` passed (its `messageId`).
    ClusterCallTimeout(String),
}

/// What comes back to the loop from work done elsewhere (the worker pool, a responder).
pub(crate) enum Completion {
    /// An action's reply.
    Action(Done),
    /// A `file` verb's file, opened and checked off the loop.
    File(crate::files::Opened),
}

/// Settings the session layer needs, fixed at start.
pub(crate) struct Settings {
    pub welcome: String,
    pub simultaneous_actions: u32,
    pub scrub_params: bool,
    pub max_params: usize,
    pub max_param_bytes: usize,
    pub max_rooms: usize,
    pub max_json_depth: usize,
    pub web: WebSettings,
    /// Edge mode's backend (taken by the upstream pool at start).
    pub upstream: Option<crate::upstream::Settings>,
    /// The cluster's Redis bus, when on.
    pub cluster: Option<crate::cluster::Settings>,
}

/// The application's [`Handler`].
pub(crate) struct App {
    scan: ScanConfig,
    state: State,
}

struct State {
    settings: Settings,
    /// The welcome line, encoded once.
    welcome: Vec<u8>,
    registry: Arc<Registry>,
    rooms: Rooms,
    public: Arc<PublicDirs>,
    api: Arc<Api>,
    /// Scratch buffer for encoding one reply.
    out: Vec<u8>,
    metrics: Metrics,
    hooks: LoopHooks,
    /// Socket connections by the id clients and server code know them by.
    by_uuid: std::collections::HashMap<uuid::Uuid, ConnId>,
    /// The room set's version last published to the `Api`.
    rooms_seen: u64,
    /// Edge mode: the backend that forwarded actions go to.
    upstream: Option<Upstream>,
    /// The `documentation` verb's object, encoded (local actions, then forwarded ones).
    documentation_json: String,
    /// The cluster link, when Redis is on.
    cluster: Option<crate::cluster::Cluster>,
    /// Verbs waiting for Redis, by ticket (see session/cluster.rs).
    waits: std::collections::HashMap<u64, cluster::Wait>,
}

type AppCore = Core<App>;

impl App {
    pub(crate) fn new(
        scan: ScanConfig,
        settings: Settings,
        registry: Arc<Registry>,
        rooms: Rooms,
        public: PublicDirs,
        hooks: LoopHooks,
        api: Arc<Api>,
    ) -> App {
        let mut settings = settings;
        let upstream = settings.upstream.take();
        let cluster = settings.cluster.take().map(crate::cluster::Cluster::new);
        let mut welcome = Vec::new();
        encode::welcome(&mut welcome, &settings.welcome);
        let mut state = State {
            settings,
            welcome,
            registry: Arc::clone(&registry),
            rooms,
            public: Arc::new(public),
            api,
            out: Vec::with_capacity(256),
            metrics: Metrics::default(),
            hooks,
            by_uuid: std::collections::HashMap::new(),
            rooms_seen: u64::MAX,
            upstream: upstream.map(Upstream::new),
            documentation_json: registry.documentation_json().to_owned(),
            cluster,
            waits: std::collections::HashMap::new(),
        };
        state.rooms_changed();
        App { scan, state }
    }
}

impl Handler for App {
    type Session = Session;
    type Completion = Completion;
    /// Timers of the application and commands from server code.
    type Event = AppEvent;
    type Tag = ListenerKind;

    fn new_session(&mut self, _id: ConnId, peer: SocketAddr, kind: ListenerKind) -> Session {
        let metrics = &mut self.state.metrics;
        metrics.open[kind.index()] += 1;
        metrics.accepted[kind.index()] += 1;
        match kind {
            ListenerKind::Web => Session::Http(HttpSession::new(peer)),
            ListenerKind::Socket | ListenerKind::SocketTls => {
                Session::Socket(SocketSession::new(peer, kind == ListenerKind::SocketTls))
            }
        }
    }

    fn on_open(&mut self, core: &mut Core<Self>, id: ConnId) {
        let Some(session) = core.session(id) else {
            return;
        };
        let Some(kind) = session.kind() else {
            return self
                .state
                .with_upstream(core, |up, core| up.opened(core, id));
        };
        log::debug!(
            "{} connected from {} ({}, {id:?})",
            session.client_id(),
            session.peer(),
            kind.label()
        );
        if let Session::Socket(_) = session {
            match self.state.connection_created(core, id) {
                None => {
                    core.send(id, &self.state.welcome);
                }
                Some(reason) => {
                    log::debug!(
                        "{} refused by connection middleware: {reason}",
                        session_id(core, id)
                    );
                    self.state
                        .bye_and_close(core, id, Some(&reason), CloseReason::Refused);
                }
            }
        }
    }

    fn on_data(&mut self, core: &mut Core<Self>, id: ConnId, data: &mut [u8]) {
        match core.session(id) {
            Some(Session::Socket(_)) => self.state.socket_data(&self.scan, core, id, data),
            Some(Session::Http(_)) => self.state.http_data(core, id, data),
            Some(Session::Upstream(_)) => {
                let data = &*data;
                self.state
                    .with_upstream(core, |up, core| up.data(core, id, data));
            }
            None => {}
        }
    }

    fn on_completion(
        &mut self,
        core: &mut Core<Self>,
        id: ConnId,
        result: Result<Completion, JobPanic>,
    ) {
        match result {
            Ok(Completion::File(opened)) => self.state.file_opened(&self.scan, core, id, opened),
            Ok(Completion::Action(done)) => self.state.action_done(core, id, Ok(done)),
            // File jobs catch their own panics: a panic is an action's.
            Err(panic) => self.state.action_done(core, id, Err(panic)),
        }
    }

    fn on_close(
        &mut self,
        core: &mut Core<Self>,
        id: ConnId,
        mut session: Session,
        reason: CloseReason,
        unsent: usize,
    ) {
        let kind = match session {
            Session::Upstream(backend) => {
                return self.state.with_upstream(core, |up, core| {
                    up.closed(core, id, backend, reason, unsent);
                });
            }
            ref s => s.kind().unwrap_or(ListenerKind::Socket),
        };
        log::debug!(
            "{} ({}) closed: {reason} ({id:?})",
            session.client_id(),
            session.peer()
        );
        let state = &mut self.state;
        state.metrics.open[kind.index()] -= 1;
        state.metrics.closed(reason);
        state
            .api
            .pending_actions
            .fetch_sub(session.pending_actions() as usize, Ordering::Relaxed);
        if let Session::Socket(s) = &session {
            // Usually empty already (quit and timeouts leave every room first).
            let info = s.info();
            for room in info.rooms() {
                let _ = state.hooks.room(crate::hooks::HookKind::Leave, &info, room);
                state.member_left(core, room, info.id, None);
                state.rooms.leave(room, id);
            }
            state.rooms_changed();
            state.connection_closed(&info, s.created, reason.as_str());
        }
    }

    fn on_shutdown(&mut self, core: &mut Core<Self>) {
        if let Some(up) = &mut self.state.upstream {
            up.shutdown(core);
        }
        for id in core.open_ids() {
            let Some(s) = core.session_mut(id) else {
                continue;
            };
            let idle = s.pending_actions() == 0;
            match s {
                // An HTTP client gets its pending response (with `Connection: close`) first.
                Session::Http(_) if idle => core.close(id, CloseReason::Shutdown),
                Session::Socket(_) if idle => {
                    self.state
                        .bye_and_close(core, id, None, CloseReason::Shutdown);
                }
                // Busy: closed after the last reply (see `on_completion`).
                Session::Http(_) | Session::Socket(_) => {}
                // Closed by the upstream pool as its calls finish.
                Session::Upstream(_) => {}
            }
        }
    }

    fn on_stopped(&mut self, _core: &mut Core<Self>) {
        // Every connection is closed (its memberships removed): the farewell goes last.
        if let Some(cluster) = &mut self.state.cluster {
            for done in cluster.calls.drain() {
                cluster
                    .counters
                    .count_call(crate::cluster::calls::Outcome::Failed(CallError::Stopped));
                done(Err(CallError::Stopped));
            }
            cluster.stop();
        }
    }

    fn on_timeout(&mut self, core: &mut Core<Self>, id: ConnId, timeout: Timeout) -> bool {
        let state = &mut self.state;
        if let Some(Session::Upstream(backend)) = core.session(id) {
            // An idle backend connection past `upstream.keepAliveTimeout` closes; a busy one
            // waits for its answer (the call's own timer bounds that).
            return matches!(backend, Backend::Idle);
        }
        if let Some(Session::Http(h)) = core.session(id) {
            // HTTP: nothing times out while a response is being computed. Otherwise an idle
            // keep-alive connection just closes, and an unfinished request gets a 408.
            let busy = h.pending_actions > 0;
            if timeout == Timeout::Handshake && !busy {
                state.http_request_timeout(core, id);
            }
            return !busy;
        }
        match timeout {
            Timeout::KeepAlive => {
                let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
                encode::keep_alive(&mut state.out, &now.to_string());
                state.flush_out(core, id);
                false
            }
            Timeout::Idle => {
                state.bye_and_close(core, id, Some("idle timeout"), CloseReason::IdleTimeout);
                true
            }
            Timeout::Handshake => {
                let reason = CloseReason::HandshakeTimeout;
                state.bye_and_close(core, id, Some("handshake timeout"), reason);
                true
            }
        }
    }

    fn on_proxied(&mut self, core: &mut Core<Self>, id: ConnId, source: SocketAddr) {
        match core.session_mut(id) {
            Some(Session::Socket(s)) => s.set_peer(source),
            Some(Session::Http(h)) => h.set_peer(source),
            Some(Session::Upstream(_)) | None => {}
        }
    }

    fn on_event(&mut self, core: &mut Core<Self>, event: AppEvent) {
        match event {
            AppEvent::LagProbe { due } => {
                let health = &self.state.api.health;
                health.record_lag(due, Instant::now());
                health.record_jobs(core.jobs_in_flight());
                let next = Instant::now() + crate::health::LAG_PROBE_INTERVAL;
                if let Err(e) = core.set_timer(
                    crate::health::LAG_PROBE_INTERVAL,
                    AppEvent::LagProbe { due: next },
                ) {
                    log::warn!("loop lag probe stopped: {e}");
                }
            }
            AppEvent::Command(command) => self.state.command(core, command),
            AppEvent::FetchUpstreamDocumentation => self.state.fetch_upstream_documentation(core),
            AppEvent::ClusterStart => self.state.cluster_start(core),
            AppEvent::Bus(event) => self.state.on_bus(&self.scan, core, event),
            AppEvent::ClusterCall(call) => self.state.cluster_call(core, *call),
            AppEvent::ClusterCallTimeout(id) => self.state.cluster_call_timed_out(&id),
            AppEvent::UpstreamTimeout(key) => {
                self.state
                    .with_upstream(core, |up, core| up.timed_out(core, key));
            }
        }
    }
}

impl State {
    /// An action finished (on a worker, or inline on the loop): what it asked for, then its
    /// reply (or its delayed reply's timer).
    pub(super) fn action_done(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        result: Result<Done, JobPanic>,
    ) {
        let mut result = result;
        // What the action asked for happens before its reply is written.
        if let Ok(done) = &mut result
            && let Some(effects) = done.effects.take()
        {
            self.apply_effects(core, id, *effects);
        }
        if let Ok(done) = &mut result {
            match std::mem::replace(&mut done.reply, Reply::Socket(Vec::new())) {
                // The action answers later: still pending; no worker held meanwhile.
                Reply::Later(later) => {
                    let delay = later.delay;
                    done.reply = Reply::Due(later);
                    if let Ok(done) = result {
                        core.defer(id, delay, Completion::Action(done));
                    }
                    return;
                }
                Reply::Due(later) => done.reply = later.finish(&done.action),
                // A responder will answer: still pending.
                Reply::Deferred => return,
                other => done.reply = other,
            }
        }
        let Some(pending) = core.session_mut(id).and_then(Session::pending_actions_mut) else {
            return;
        };
        debug_assert!(*pending > 0);
        *pending = pending.saturating_sub(1);
        let pending = *pending;
        let state = &mut *self;
        state.api.pending_actions.fetch_sub(1, Ordering::Relaxed);
        let done = match result {
            Ok(done) => done,
            // Job::run catches action panics itself; this is a bug in the encoding path.
            Err(p) => {
                log::error!("action job failed outside the action: {}", p.message);
                return;
            }
        };
        state
            .metrics
            .action(&done.action, done.outcome, done.seconds);
        log::debug!(
            "{} action {} {} in {:.3} ms",
            session_id(core, id),
            done.action,
            done.outcome.label(),
            done.seconds * 1000.0
        );
        match done.reply {
            Reply::Socket(bytes) => {
                core.send_owned(id, bytes);
                if core.is_shutting_down() && pending == 0 {
                    state.bye_and_close(core, id, None, CloseReason::Shutdown);
                }
            }
            Reply::Http { status, body } => state.http_action_done(core, id, status, &body),
            Reply::Later(_) | Reply::Due(_) | Reply::Deferred => {
                debug_assert!(false, "resolved above")
            }
        }
    }
}

/// The client-visible id of `id`'s connection, or `-` when it is gone (log lines only).
pub(crate) fn session_id(core: &AppCore, id: ConnId) -> String {
    core.session(id)
        .map_or_else(|| "-".to_string(), |s| s.client_id().to_string())
}
