//! actionwire: a server for actionhero's TCP socket protocol on one mio event loop.
//!
//! This crate is the application: it wires the configuration ([`actionwire_config`]), the
//! sans-IO protocol ([`actionwire_proto`]) and the event loop ([`actionwire_reactor`]) into a
//! [`Server`], and holds the session layer (verbs, sticky params, rooms), the actions and the
//! cache. The `actionwire` binary is a thin CLI over the same API a Rust user gets:
//!
//! ```no_run
//! use actionwire::{Action, Config, Input, Server};
//!
//! let server = Server::builder(Config::default())
//!     .action(
//!         Action::new("hello", |data| {
//!             let name = data.params["name"].as_str().unwrap_or("world").to_owned();
//!             data.response.insert("greeting".into(), format!("hello, {name}").into());
//!             Ok(())
//!         })
//!         .input(Input::new("name").required()),
//!     )
//!     .build()?;
//! println!("listening on {}", server.local_addr());
//! server.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod actions;
mod api;
pub mod builtin;
pub mod cache;
#[cfg(feature = "cli")]
pub mod cli;
mod cluster;
pub mod connection;
pub mod files;
pub mod health;
pub mod hooks;
pub mod limits;
mod metrics;
mod process;
pub mod rooms;
mod session;
#[cfg(feature = "cli")]
mod supervisor;
pub mod time;
pub mod tls;
mod upstream;
pub use cluster::calls::CallError;
pub use upstream::UpstreamError;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

pub use actionwire_config::{Config, ConfigError};
pub use actionwire_reactor::ShutdownHandle;
use actionwire_reactor::{ListenerOptions, Reactor, ReactorConfig, ReactorStats};

pub use actions::{Action, ActionData, Api, ConnectionInfo, Input, Responder};
use actions::{Registry, RegistryError};
use cache::Cache;
use files::PublicDirs;
pub use hooks::{
    ActionMiddleware, ChatMessage, ChatMiddleware, CommandError, ConnectionMiddleware, HookResult,
    ServerCommand,
};
use rooms::Rooms;
use session::{App, ListenerKind, Settings};
pub use uuid::Uuid;

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Actions(RegistryError),
    Tls(tls::TlsError),
    Upstream(upstream::UpstreamError),
    Listen { addr: SocketAddr, source: io::Error },
    Io(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "configuration error: {e}"),
            StartError::Actions(e) => write!(f, "action error: {e}"),
            StartError::Tls(e) => write!(f, "TLS configuration error: {e}"),
            StartError::Upstream(e) => write!(f, "configuration error: {e}"),
            StartError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Io(e) => write!(f, "cannot start the event loop: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

/// Collects configuration and actions; [`ServerBuilder::build`] binds the listener.
pub struct ServerBuilder {
    config: Config,
    actions: Vec<Action>,
    action_middleware: Vec<ActionMiddleware>,
    connection_middleware: Vec<ConnectionMiddleware>,
    chat_middleware: Vec<ChatMiddleware>,
}

impl ServerBuilder {
    /// The configuration the server will be built with, to adjust.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Replaces the configuration (the actions stay).
    pub fn with_config(mut self, config: Config) -> ServerBuilder {
        self.config = config;
        self
    }

    /// Adds an action next to the built-in ones.
    pub fn action(mut self, action: Action) -> ServerBuilder {
        self.actions.push(action);
        self
    }

    /// Adds action middleware: global, or run by the actions that name it
    /// ([`Action::middleware`]). See [`hooks`].
    pub fn action_middleware(mut self, m: ActionMiddleware) -> ServerBuilder {
        self.action_middleware.push(m);
        self
    }

    /// Adds connection middleware (socket connections' create and destroy). See [`hooks`].
    pub fn connection_middleware(mut self, m: ConnectionMiddleware) -> ServerBuilder {
        self.connection_middleware.push(m);
        self
    }

    /// Adds chat middleware (join, leave, say). See [`hooks`].
    pub fn chat_middleware(mut self, m: ChatMiddleware) -> ServerBuilder {
        self.chat_middleware.push(m);
        self
    }

    /// Validates the configuration, binds the listener and starts the workers.
    pub fn build(self) -> Result<Server, StartError> {
        let cfg = self.config;
        cfg.validate()?;
        let g = &cfg.general;
        let s = &cfg.servers.socket;

        let mut all = builtin::all();
        all.extend(self.actions);
        let registry =
            Arc::new(Registry::new(all, self.action_middleware).map_err(StartError::Actions)?);
        let hooks = hooks::LoopHooks::new(self.connection_middleware, self.chat_middleware);
        let upstream =
            upstream::Settings::from_config(&cfg.upstream).map_err(StartError::Upstream)?;

        let scan = actionwire_proto::ScanConfig::new(
            s.delimiter.as_bytes(),
            s.max_data_length,
            s.max_line_bytes,
        )
        .ok_or_else(|| ConfigError {
            key: "servers.socket.delimiter".into(),
            message: "must not be empty".into(),
        })?;

        let workers = match cfg.workers.count {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let max_connections = match s.max_connections {
            0 => limits::default_max_connections(),
            n => n,
        };
        let reactor_cfg = ReactorConfig {
            max_connections,
            backlog: s.backlog,
            workers,
            output_soft_limit: s.output_buffer_soft_limit,
            output_soft_duration: Duration::from_secs(s.output_buffer_soft_seconds),
            output_hard_limit: s.output_buffer_hard_limit,
            read_pause_bytes: s.output_buffer_soft_limit.min(256 * 1024),
            shutdown_grace: Duration::from_millis(g.pending_shutdown_wait_limit),
            linger: Duration::from_secs(5),
            handshake_threads: cfg.workers.handshake_threads,
            ..ReactorConfig::default()
        };
        let stats = Arc::new(ReactorStats::default());
        let cache = if cfg.redis.enabled {
            let client = cluster::client(&cfg.redis).map_err(StartError::Io)?;
            Cache::in_redis(cache::Shared::new(
                client,
                workers,
                &g.cache_prefix,
                &g.lock_prefix,
            ))
        } else {
            Cache::in_memory(g.cache_max_entries)
        };
        let api = Arc::new(Api {
            cache,
            server_id: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            started: Instant::now(),
            started_unix: process::unix_now(),
            health: health::Health::default(),
            max_connections,
            workers,
            reactor: Arc::clone(&stats),
            rooms: AtomicUsize::new(0),
            room_names: std::sync::Mutex::new(Vec::new()),
            pending_actions: AtomicUsize::new(0),
            documentation: std::sync::RwLock::new(Arc::new(registry.documentation().clone())),
            events: std::sync::OnceLock::new(),
            completer: std::sync::OnceLock::new(),
        });
        let rooms = Rooms::new(
            g.starting_chat_rooms.keys().map(String::as_str),
            g.auto_create_rooms,
            g.max_rooms,
        );
        let public = PublicDirs::new(&g.paths.public);
        let settings = Settings {
            welcome: g.welcome_message.clone(),
            simultaneous_actions: g.simultaneous_actions,
            scrub_params: !g.disable_param_scrubbing,
            max_params: g.max_params_per_connection,
            max_param_bytes: g.max_param_bytes_per_connection,
            max_rooms: g.max_rooms_per_connection,
            max_json_depth: s.max_json_depth,
            web: session::WebSettings {
                max_header_bytes: cfg.servers.web.max_header_bytes,
                max_body_bytes: cfg.servers.web.max_body_bytes,
            },
            upstream,
            cluster: cluster::Settings::from_config(&cfg),
        };
        let summary = Summary {
            workers,
            max_connections,
            public: public.dirs().to_vec(),
        };
        let app = App::new(
            scan,
            settings,
            registry,
            rooms,
            public,
            hooks,
            Arc::clone(&api),
        );
        let mut reactor = Reactor::with_stats(reactor_cfg, stats, app).map_err(StartError::Io)?;
        // Set once, here: the cells are new and nothing else sets them.
        let _ = api.events.set(reactor.event_sender());
        let _ = api.completer.set(reactor.core_mut().completer());
        if cfg.upstream.url.is_some() {
            // Forwarded actions join the documentation once the backend has told them.
            let fetch = reactor.core_mut().set_timer(
                Duration::ZERO,
                session::AppEvent::FetchUpstreamDocumentation,
            );
            if let Err(e) = fetch {
                log::warn!("the backend's documentation will not be fetched: {e}");
            }
        }
        // The first loop-lag probe; each one sets the next (see health.rs).
        if let Err(e) = reactor.core_mut().set_timer(
            health::LAG_PROBE_INTERVAL,
            session::AppEvent::LagProbe {
                due: Instant::now() + health::LAG_PROBE_INTERVAL,
            },
        ) {
            log::warn!("loop lag probe not started: {e}");
        }
        let mut bound = Vec::new();
        let mut cert_stores = Vec::new();
        for l in listeners(&cfg)? {
            cert_stores.extend(l.certs);
            let addr = l.addr;
            let local = reactor
                .listen(addr, l.options, l.kind)
                .map_err(|source| StartError::Listen { addr, source })?;
            bound.push((l.kind, local));
        }
        let local = |kind| bound.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a);
        let main_kind = if s.secure {
            ListenerKind::SocketTls
        } else {
            ListenerKind::Socket
        };
        let local_addr = local(main_kind).ok_or_else(|| ConfigError {
            key: "servers.socket.enabled".into(),
            message: "the socket server must be enabled".into(),
        })?;
        // With `secure`, the main listener is the TLS one; a second TLS listener follows it.
        let tls_local_addr = bound
            .iter()
            .filter(|(k, _)| *k == ListenerKind::SocketTls)
            .map(|(_, a)| *a)
            .find(|a| !s.secure || *a != local_addr);
        let web_local_addr = local(ListenerKind::Web);
        let server_id = if g.server_id.is_empty() {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            format!("{host}:{}", local_addr.port())
        } else {
            g.server_id.clone()
        };
        api.cache.set_owner(&server_id);
        let _ = api.server_id.set(server_id);
        if cfg.redis.enabled {
            // The bus threads start on the loop, which they report to.
            reactor
                .core_mut()
                .set_timer(Duration::ZERO, session::AppEvent::ClusterStart)
                .map_err(|e| StartError::Io(std::io::Error::other(e.to_string())))?;
        }
        Ok(Server {
            reactor,
            local_addr,
            tls_local_addr,
            web_local_addr,
            config: cfg,
            summary,
            api,
            tls: tls::TlsReloader::new(cert_stores),
        })
    }
}

/// One listener to bind.
struct ListenerPlan {
    kind: ListenerKind,
    addr: SocketAddr,
    options: ListenerOptions,
    /// Where a TLS listener's certificate comes from (for reloads).
    certs: Option<Arc<tls::CertStore>>,
}

/// Every listener the configuration asks for, main socket listener first. A listener
/// without a `bindIP` of its own uses `servers.socket.bindIP` (which `--bind` sets).
fn listeners(cfg: &Config) -> Result<Vec<ListenerPlan>, StartError> {
    let s = &cfg.servers.socket;
    let addr = |key: &str, own: Option<&str>, port: u16| -> Result<SocketAddr, StartError> {
        let text = own.unwrap_or(&s.bind_ip);
        let ip: IpAddr = text.parse().map_err(|_| ConfigError {
            key: format!("{key}.bindIP"),
            message: format!("{text:?} is not an IP address"),
        })?;
        Ok(SocketAddr::new(ip, port))
    };
    // With several processes (the command line's supervisor), each binds the same ports.
    let reuse_port = cfg.general.processes != 1;
    // Every socket listener shares the protocol's timers; only TLS differs.
    let socket = |tls: Option<&tls::ListenerTls>, proxy_protocol: bool| ListenerOptions {
        tls: tls.map(|t| Arc::clone(&t.config)),
        proxy_protocol,
        keepalive_interval: Duration::from_millis(s.keep_alive_interval),
        idle_timeout: Duration::from_millis(s.idle_timeout),
        handshake_timeout: Duration::from_millis(s.handshake_timeout),
        tcp_keepalive: s.set_keep_alive,
        reuse_port,
    };
    let mut plans = Vec::new();
    let main_tls = if s.secure {
        Some(tls::server_config(&s.server_options, "servers.socket").map_err(StartError::Tls)?)
    } else {
        None
    };
    plans.push(ListenerPlan {
        kind: if s.secure {
            ListenerKind::SocketTls
        } else {
            ListenerKind::Socket
        },
        addr: addr("servers.socket", None, s.port)?,
        options: socket(main_tls.as_ref(), s.proxy_protocol),
        certs: main_tls.map(|t| t.certs),
    });
    let t = &cfg.servers.socket_tls;
    if t.enabled {
        let listener_tls =
            tls::server_config(&t.server_options, "servers.socketTls").map_err(StartError::Tls)?;
        plans.push(ListenerPlan {
            kind: ListenerKind::SocketTls,
            addr: addr("servers.socketTls", t.bind_ip.as_deref(), t.port)?,
            options: socket(Some(&listener_tls), t.proxy_protocol),
            certs: Some(listener_tls.certs),
        });
    }
    let w = &cfg.servers.web;
    if w.enabled {
        plans.push(ListenerPlan {
            kind: ListenerKind::Web,
            addr: addr("servers.web", w.bind_ip.as_deref(), w.port)?,
            options: ListenerOptions {
                idle_timeout: Duration::from_millis(w.keep_alive_timeout),
                // For HTTP, the "handshake" is each request's head and body (see session/http.rs).
                handshake_timeout: Duration::from_millis(w.header_timeout),
                tcp_keepalive: s.set_keep_alive,
                proxy_protocol: w.proxy_protocol,
                reuse_port,
                ..ListenerOptions::default()
            },
            certs: None,
        });
    }
    Ok(plans)
}

struct Summary {
    workers: usize,
    max_connections: usize,
    public: Vec<std::path::PathBuf>,
}

/// Stops a running server from any thread: drain (when configured), then the graceful
/// shutdown. See [`Server::stop_handle`].
#[derive(Clone)]
pub struct StopHandle {
    api: Arc<Api>,
    shutdown: ShutdownHandle,
    drain: Duration,
}

impl StopHandle {
    /// Starts stopping; returns at once. A second call while draining does nothing more
    /// (use [`Server::shutdown_handle`] to cut the drain short).
    pub fn stop(&self) {
        if self.drain.is_zero() {
            self.shutdown.shutdown();
            return;
        }
        if self.api.health.is_draining() {
            return;
        }
        self.api.health.set_draining();
        log::info!(
            "draining for {:?}: /status answers 503, clients are still served",
            self.drain
        );
        let (shutdown, drain) = (self.shutdown.clone(), self.drain);
        let timer = std::thread::Builder::new()
            .name("actionwire-drain".into())
            .spawn(move || {
                // A dedicated thread whose only job is this wait.
                std::thread::sleep(drain);
                log::info!("drain over");
                shutdown.shutdown();
            });
        if let Err(e) = timer {
            log::error!("cannot time the drain ({e}): shutting down now");
            self.shutdown.shutdown();
        }
    }
}

/// A bound, ready-to-run server.
pub struct Server {
    reactor: Reactor<App>,
    local_addr: SocketAddr,
    tls_local_addr: Option<SocketAddr>,
    web_local_addr: Option<SocketAddr>,
    config: Config,
    summary: Summary,
    api: Arc<Api>,
    tls: tls::TlsReloader,
}

impl Server {
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            config,
            actions: Vec::new(),
            action_middleware: Vec::new(),
            connection_middleware: Vec::new(),
            chat_middleware: Vec::new(),
        }
    }

    /// The address the socket server listens on (the real port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the second, TLS listener (`servers.socketTls`), when enabled.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local_addr
    }

    /// The address of the HTTP front door (`servers.web`), when enabled.
    pub fn web_local_addr(&self) -> Option<SocketAddr> {
        self.web_local_addr
    }

    /// A handle that shuts the server down gracefully from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.reactor.shutdown_handle()
    }

    /// A handle that stops the server as SIGTERM does: with `general.drainSeconds`, it first
    /// drains (everything keeps working while `/status` answers 503), then shuts down
    /// gracefully.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            api: Arc::clone(&self.api),
            shutdown: self.reactor.shutdown_handle(),
            drain: Duration::from_secs(self.config.general.drain_seconds),
        }
    }

    /// A handle that reloads every TLS listener's certificate and key from any thread
    /// (the binary calls it on SIGHUP).
    pub fn tls_reloader(&self) -> tls::TlsReloader {
        self.tls.clone()
    }

    /// Server-wide state (cache, counters), as actions see it.
    pub fn api(&self) -> Arc<Api> {
        Arc::clone(&self.api)
    }

    /// One line describing what runs, for the start-up log.
    pub fn describe(&self) -> String {
        let s = &self.config.servers.socket;
        let rooms: Vec<&str> = self
            .config
            .general
            .starting_chat_rooms
            .keys()
            .map(String::as_str)
            .collect();
        let public: Vec<String> = self
            .summary
            .public
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "actionwire {} listening on {} ({}{}; workers {}; maxConnections {}; \
             delimiter {:?}; maxLineBytes {}; maxDataLength {}; simultaneousActions {}; \
             keepAliveInterval {} ms; idleTimeout {} ms; handshakeTimeout {} ms; \
             setKeepAlive {}; rooms [{}]; public [{}])",
            env!("CARGO_PKG_VERSION"),
            self.local_addr,
            if s.secure { "TLS" } else { "plain TCP" },
            self.tls_local_addr
                .map(|a| format!(", and TLS on {a}"))
                .unwrap_or_default()
                + &self
                    .web_local_addr
                    .map(|a| format!(", and HTTP on {a}"))
                    .unwrap_or_default()
                + &self
                    .config
                    .upstream
                    .url
                    .as_ref()
                    .map(|u| {
                        let names = self.config.upstream.actions.join(", ");
                        format!(", forwarding [{names}] to {u}")
                    })
                    .unwrap_or_default(),
            self.summary.workers,
            self.summary.max_connections,
            s.delimiter,
            s.max_line_bytes,
            s.max_data_length,
            self.config.general.simultaneous_actions,
            s.keep_alive_interval,
            s.idle_timeout,
            s.handshake_timeout,
            s.set_keep_alive,
            rooms.join(", "),
            public.join(", "),
        )
    }

    /// Runs the event loop on this thread until a shutdown completes.
    pub fn run(self) -> io::Result<()> {
        self.reactor.run()
    }
}
