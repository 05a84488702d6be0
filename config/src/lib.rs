//! actionwire-config: the server's typed configuration.
//!
//! Key names are actionhero's (`general.*`, `servers.socket.*`), defaults are the protocol reference's (`docs/protocol.md`),
//! and a JSON file is loaded with every unknown key, wrong type and impossible value refused
//! with a message that names the key. Command-line overrides are applied by the binary on the
//! loaded value, then [`Config::validate`] runs once more.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod authority;
mod redis;
mod upstream;
pub use redis::Redis;
pub use upstream::{Upstream, UpstreamUrl};

/// A configuration problem: the key it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `servers.socket.port` (empty for the whole file).
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    pub general: General,
    pub servers: Servers,
    pub workers: Workers,
    /// Forwarding actions to an HTTP backend (edge mode).
    pub upstream: Upstream,
    /// The cluster's Redis.
    pub redis: Redis,
}

/// `general.*`: behaviour shared by every transport.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct General {
    /// This node's id in the cluster (`serverId` on the bus, `host` of its room members)
    /// and in `status`; empty = `<host name>:<socket port>`. Unique per process and stable
    /// across its restarts.
    pub server_id: String,
    /// The cluster's shared secret: bus messages with another token are ignored.
    pub server_token: String,
    /// The cluster's pub/sub channel.
    pub channel: String,
    /// Key prefix of cache entries in Redis.
    pub cache_prefix: String,
    /// Key prefix of cache locks in Redis.
    pub lock_prefix: String,
    /// Milliseconds to wait for the answer to a cluster call (`doResponse`).
    pub rpc_timeout: u64,
    /// Single-loop processes sharing the listening ports (SO_REUSEPORT), joined through
    /// the cluster; 0 = one per core. Acted on by the command line, which supervises them.
    pub processes: usize,
    /// Text of the welcome line.
    pub welcome_message: String,
    /// Rooms that exist from the start (actionhero's object form: name → options).
    /// Room options are not supported: each value must be an empty object.
    pub starting_chat_rooms: Map<String, Value>,
    /// Let `roomAdd`/`roomChange` create a room that does not exist.
    pub auto_create_rooms: bool,
    /// Actions that may be pending at once on one connection.
    pub simultaneous_actions: u32,
    /// Milliseconds to wait for pending actions at shutdown.
    pub pending_shutdown_wait_limit: u64,
    /// Seconds to keep serving after SIGTERM/SIGINT while `/status` answers 503 (so a load
    /// balancer stops sending new clients) before the graceful shutdown begins; 0 = none.
    pub drain_seconds: u64,
    /// Accept any `paramAdd` key and pass every param to actions.
    pub disable_param_scrubbing: bool,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
    /// Sticky params one connection may hold at once.
    pub max_params_per_connection: usize,
    /// Bytes of sticky param keys and values one connection may hold.
    pub max_param_bytes_per_connection: usize,
    /// Rooms that may exist at once (clients create rooms only with `autoCreateRooms`).
    pub max_rooms: usize,
    /// Entries the in-memory cache may hold.
    pub cache_max_entries: usize,
    pub paths: Paths,
}

impl Default for General {
    fn default() -> Self {
        let mut rooms = Map::new();
        rooms.insert("defaultRoom".into(), Value::Object(Map::new()));
        rooms.insert("otherRoom".into(), Value::Object(Map::new()));
        General {
            server_id: String::new(),
            server_token: DEFAULT_SERVER_TOKEN.into(),
            channel: "actionhero".into(),
            cache_prefix: "actionhero:cache:".into(),
            lock_prefix: "actionhero:lock:".into(),
            rpc_timeout: 5000,
            processes: 1,
            welcome_message: "Hello! Welcome to the actionhero api".into(),
            starting_chat_rooms: rooms,
            auto_create_rooms: false,
            simultaneous_actions: 5,
            pending_shutdown_wait_limit: 5000,
            drain_seconds: 0,
            disable_param_scrubbing: false,
            max_rooms_per_connection: 100,
            max_params_per_connection: 100,
            max_param_bytes_per_connection: 64 * 1024,
            max_rooms: 10_000,
            cache_max_entries: 100_000,
            paths: Paths::default(),
        }
    }
}

/// `general.paths.*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Paths {
    /// Directories `file` serves from, searched in order (a single string is accepted).
    #[serde(deserialize_with = "one_or_many")]
    pub public: Vec<PathBuf>,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            public: vec![PathBuf::from("public")],
        }
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(p)) => Ok(vec![p]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "expected a path or a list of paths",
        )),
    }
}

/// `servers.*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Servers {
    pub socket: Socket,
    /// A second listener of the same socket server that always speaks TLS (e.g. plain on
    /// 5000 and TLS on 5001). Protocol settings (delimiter, limits, timeouts) come from
    /// `servers.socket`.
    pub socket_tls: TlsListener,
    /// The HTTP front door: actions over HTTP, `/status`, `/metrics`.
    pub web: Web,
}

/// `servers.web.*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Web {
    pub enabled: bool,
    pub port: u16,
    /// Listen address; absent = `servers.socket.bindIP` (so `--bind` applies here too).
    #[serde(rename = "bindIP", skip_serializing_if = "Option::is_none")]
    pub bind_ip: Option<String>,
    /// Request line + headers, bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Request body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Idle keep-alive connections are closed after this long, ms (0 = never).
    pub keep_alive_timeout: u64,
    /// A request (head and body) must arrive completely within this long of its first byte
    /// (of the connection, for the first request), ms; else 408 and close (0 = no limit).
    pub header_timeout: u64,
    /// Expect a PROXY protocol header (v1 or v2, from a load balancer) first on every
    /// connection: the client's real address replaces the balancer's; without a valid
    /// header the connection is closed.
    pub proxy_protocol: bool,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            enabled: false,
            port: 8080,
            bind_ip: None,
            max_header_bytes: 8192,
            max_body_bytes: 1 << 20,
            keep_alive_timeout: 5000,
            header_timeout: 10_000,
            proxy_protocol: false,
        }
    }
}

/// `servers.socketTls.*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TlsListener {
    pub enabled: bool,
    pub port: u16,
    /// Listen address; absent = `servers.socket.bindIP` (so `--bind` applies here too).
    #[serde(rename = "bindIP", skip_serializing_if = "Option::is_none")]
    pub bind_ip: Option<String>,
    pub server_options: ServerOptions,
    /// Expect a PROXY protocol header (v1 or v2, from a load balancer) first on every
    /// connection: the client's real address replaces the balancer's; without a valid
    /// header the connection is closed.
    pub proxy_protocol: bool,
}

impl Default for TlsListener {
    fn default() -> Self {
        TlsListener {
            enabled: false,
            port: 5001,
            bind_ip: None,
            server_options: ServerOptions::default(),
            proxy_protocol: false,
        }
    }
}

/// `servers.socket.*`: the TCP socket server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Socket {
    pub enabled: bool,
    /// Speak TLS on this listener (`serverOptions.cert` and `.key` required).
    pub secure: bool,
    pub server_options: ServerOptions,
    pub port: u16,
    #[serde(rename = "bindIP")]
    pub bind_ip: String,
    /// SO_KEEPALIVE on accepted sockets.
    pub set_keep_alive: bool,
    pub delimiter: String,
    /// Protocol line limit in bytes; 0 = none (the hard cap still applies).
    pub max_data_length: usize,
    /// Hard line cap in bytes that always applies.
    pub max_line_bytes: usize,
    /// Deepest nesting of objects/arrays accepted in a JSON request (1..=128).
    pub max_json_depth: usize,
    /// Open connections at most; 0 = derived from the open-file limit.
    pub max_connections: usize,
    /// Listen backlog.
    pub backlog: u32,
    /// Keep-alive line after this long without receiving anything, ms; 0 = off.
    pub keep_alive_interval: u64,
    /// Close after this long without receiving anything, ms; 0 = off.
    pub idle_timeout: u64,
    /// First line (plain) / TLS handshake deadline, ms; 0 = off.
    pub handshake_timeout: u64,
    /// Output queued for one connection above which it must drain within
    /// `outputBufferSoftSeconds`, bytes.
    pub output_buffer_soft_limit: usize,
    pub output_buffer_soft_seconds: u64,
    /// Output queued for one connection that disconnects it at once, bytes.
    pub output_buffer_hard_limit: usize,
    /// Expect a PROXY protocol header (v1 or v2, from a load balancer) first on every
    /// connection: the client's real address replaces the balancer's; without a valid
    /// header the connection is closed.
    pub proxy_protocol: bool,
}

impl Default for Socket {
    fn default() -> Self {
        Socket {
            enabled: true,
            secure: false,
            server_options: ServerOptions::default(),
            port: 5000,
            bind_ip: "0.0.0.0".into(),
            set_keep_alive: false,
            delimiter: "\n".into(),
            max_data_length: 0,
            max_line_bytes: 1 << 20,
            max_json_depth: 64,
            max_connections: 0,
            backlog: 1024,
            keep_alive_interval: 0,
            idle_timeout: 0,
            handshake_timeout: 10_000,
            output_buffer_soft_limit: 1 << 20,
            output_buffer_soft_seconds: 10,
            output_buffer_hard_limit: 8 << 20,
            proxy_protocol: false,
        }
    }
}

/// Paths a configuration file sets are relative to the file's own directory, so a server
/// started from any working directory (a service manager, `cargo install`) finds what the
/// file names; paths from the defaults and from flags stay relative to the working directory.
fn resolve_relative_paths(cfg: &mut Config, text: &str, base: &Path) {
    let Ok(file) = serde_json::from_str::<serde_json::Value>(text) else {
        return; // unreachable: the same text parsed as a Config just before
    };
    let set = |pointer: &str| file.pointer(pointer).is_some();
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if set("/upstream/ca") {
        cfg.upstream.ca.iter_mut().for_each(resolve);
    }
    if set("/general/paths/public") {
        cfg.general.paths.public.iter_mut().for_each(resolve);
    }
    let servers = &mut cfg.servers;
    for (name, opts) in [
        ("socket", &mut servers.socket.server_options),
        ("socketTls", &mut servers.socket_tls.server_options),
    ] {
        for (field, path) in [
            ("cert", &mut opts.cert),
            ("key", &mut opts.key),
            ("ca", &mut opts.ca),
        ] {
            if set(&format!("/servers/{name}/serverOptions/{field}")) {
                path.iter_mut().for_each(resolve);
            }
        }
    }
}

/// `serverOptions.*`: TLS material (PEM file paths) and the handshake's choices.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServerOptions {
    /// Certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// Private key: PKCS#8, SEC1 or RSA (PKCS#1).
    pub key: Option<PathBuf>,
    /// CA certificates that sign acceptable client certificates (with `requestCert`).
    pub ca: Option<PathBuf>,
    /// Require a client certificate signed by `ca` (mTLS).
    pub request_cert: bool,
    /// The server's cipher-suite order wins over the client's (Node's `honorCipherOrder`).
    /// The server's order puts AES-128-GCM with SHA-256 first, whose key schedule costs
    /// less than SHA-384's; `false` takes the first suite the client lists.
    pub honor_cipher_order: bool,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            cert: None,
            key: None,
            ca: None,
            request_cert: false,
            honor_cipher_order: true,
        }
    }
}

impl ServerOptions {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.cert.is_none() {
            return Err(ConfigError::new(
                &format!("{prefix}.serverOptions.cert"),
                "required for TLS: the PEM certificate chain file",
            ));
        }
        if self.key.is_none() {
            return Err(ConfigError::new(
                &format!("{prefix}.serverOptions.key"),
                "required for TLS: the PEM private key file",
            ));
        }
        if self.request_cert && self.ca.is_none() {
            return Err(ConfigError::new(
                &format!("{prefix}.serverOptions.ca"),
                "required with requestCert: the PEM CA that signs client certificates",
            ));
        }
        Ok(())
    }
}

/// `workers.*`: the pools that run actions and TLS handshakes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Workers {
    /// Worker threads; 0 = one per core.
    pub count: usize,
    /// Threads that run TLS handshakes' cryptography at the lowest priority, which the
    /// event loop preempts, while established clients are talking; 0 runs it on the event
    /// loop always (a few steps per loop turn).
    pub handshake_threads: usize,
}

impl Default for Workers {
    fn default() -> Workers {
        Workers {
            count: 0,
            handshake_threads: 1,
        }
    }
}

/// `general.serverToken`'s default (actionhero's): the start line warns when a cluster
/// node keeps it.
pub const DEFAULT_SERVER_TOKEN: &str = "change-me";

/// Upper bound for line limits: one line may never ask for more than this.
const MAX_LINE_CAP: usize = 1 << 30;
/// `general.processes` at most.
pub const MAX_PROCESSES: usize = 1024;
const MAX_WORKERS: usize = 1024;

impl Config {
    /// Parses a JSON document, naming the key of the first problem.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            ConfigError {
                key,
                message: e.into_inner().to_string(),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a JSON file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )
        })?;
        let mut cfg = Config::from_json(&text).map_err(|mut e| {
            e.message = format!("{} (in {})", e.message, path.display());
            e
        })?;
        resolve_relative_paths(&mut cfg, &text, path.parent().unwrap_or(Path::new("")));
        Ok(cfg)
    }

    /// Checks values that types alone cannot rule out.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.general;
        let s = &self.servers.socket;
        let err = |k: &str, m: &str| Err(ConfigError::new(k, m));
        if g.simultaneous_actions == 0 {
            return err("general.simultaneousActions", "must be at least 1");
        }
        for (name, opts) in &g.starting_chat_rooms {
            if name.is_empty() || name.contains(' ') {
                return err(
                    "general.startingChatRooms",
                    "room names must be non-empty and contain no space",
                );
            }
            if !opts.as_object().is_some_and(Map::is_empty) {
                return err(
                    &format!("general.startingChatRooms.{name}"),
                    "room options are not supported: use an empty object {}",
                );
            }
        }
        if g.max_rooms_per_connection == 0 {
            return err("general.maxRoomsPerConnection", "must be at least 1");
        }
        if g.max_rooms < g.starting_chat_rooms.len() {
            return err(
                "general.maxRooms",
                "must be at least the number of startingChatRooms",
            );
        }
        if g.cache_max_entries == 0 {
            return err("general.cacheMaxEntries", "must be at least 1");
        }
        if g.paths.public.is_empty() {
            return err("general.paths.public", "must name at least one directory");
        }
        if !s.enabled {
            return err(
                "servers.socket.enabled",
                "the socket server is the only server and must be enabled",
            );
        }
        if s.secure {
            s.server_options.validate("servers.socket")?;
        }
        let t = &self.servers.socket_tls;
        if t.enabled {
            t.server_options.validate("servers.socketTls")?;
            if t.bind_ip
                .as_ref()
                .is_some_and(|ip| ip.parse::<IpAddr>().is_err())
            {
                return err(
                    "servers.socketTls.bindIP",
                    "must be an IPv4 or IPv6 address, e.g. 0.0.0.0, 127.0.0.1 or ::",
                );
            }
        }
        if s.bind_ip.parse::<IpAddr>().is_err() {
            return err(
                "servers.socket.bindIP",
                "must be an IPv4 or IPv6 address, e.g. 0.0.0.0, 127.0.0.1 or ::",
            );
        }
        if s.delimiter.is_empty() {
            return err("servers.socket.delimiter", "must not be empty");
        }
        if s.delimiter.len() > 64 {
            return err("servers.socket.delimiter", "must be at most 64 bytes");
        }
        if s.max_line_bytes == 0 || s.max_line_bytes > MAX_LINE_CAP {
            return err(
                "servers.socket.maxLineBytes",
                "must be between 1 and 1073741824 bytes",
            );
        }
        if s.max_json_depth == 0 || s.max_json_depth > 128 {
            return err(
                "servers.socket.maxJsonDepth",
                "must be between 1 and 128 (serde_json refuses deeper documents anyway)",
            );
        }
        if s.backlog == 0 {
            return err("servers.socket.backlog", "must be at least 1");
        }
        if s.output_buffer_hard_limit < 4096 {
            return err(
                "servers.socket.outputBufferHardLimit",
                "must be at least 4096 bytes",
            );
        }
        if s.output_buffer_soft_limit > s.output_buffer_hard_limit {
            return err(
                "servers.socket.outputBufferSoftLimit",
                "must not exceed outputBufferHardLimit",
            );
        }
        let w = &self.servers.web;
        if w.enabled {
            if w.bind_ip
                .as_ref()
                .is_some_and(|ip| ip.parse::<IpAddr>().is_err())
            {
                return err(
                    "servers.web.bindIP",
                    "must be an IPv4 or IPv6 address, e.g. 0.0.0.0, 127.0.0.1 or ::",
                );
            }
            if w.max_header_bytes < 256 {
                return err("servers.web.maxHeaderBytes", "must be at least 256 bytes");
            }
        }
        if self.workers.count > MAX_WORKERS {
            return err("workers.count", "must be at most 1024 (0 = one per core)");
        }
        if self.workers.handshake_threads > MAX_WORKERS {
            return err(
                "workers.handshakeThreads",
                "must be at most 1024 (0 = handshakes on the event loop)",
            );
        }
        if g.channel.is_empty() {
            return err("general.channel", "must not be empty");
        }
        if g.rpc_timeout == 0 {
            return err("general.rpcTimeout", "must be at least 1 ms");
        }
        if g.cache_prefix.is_empty() || g.lock_prefix.is_empty() {
            return err(
                "general.cachePrefix",
                "the cache and lock prefixes must not be empty",
            );
        }
        if g.processes > MAX_PROCESSES {
            return err(
                "general.processes",
                "must be at most 1024 (0 = one per core)",
            );
        }
        if g.processes != 1 && !self.redis.enabled {
            return err(
                "general.processes",
                "more than one process needs the cluster (redis.enabled, or --redis): \
                 without Redis each process would keep rooms, chat and the cache of its own",
            );
        }
        self.redis.validate()?;
        self.upstream.validate()
    }

    /// Keys that are set but have no effect with the rest of this configuration (the binary
    /// logs them as warnings).
    pub fn inactive_keys(&self) -> Vec<&'static str> {
        let s = &self.servers.socket;
        let t = &self.servers.socket_tls;
        let mut keys = Vec::new();
        if !s.secure && s.server_options != ServerOptions::default() {
            keys.push("servers.socket.serverOptions (used only with secure: true)");
        }
        if !t.enabled && t.server_options != ServerOptions::default() {
            keys.push("servers.socketTls.serverOptions (used only with enabled: true)");
        }
        if self.redis.enabled
            && self.general.cache_max_entries != General::default().cache_max_entries
        {
            keys.push("general.cacheMaxEntries (bounds the in-process cache; with Redis the cache lives there)");
        }
        keys
    }
}

#[cfg(test)]
mod tests;
