//! The command line of the `actionwire` binary, for library users too: flags, environment
//! variables, the configuration file, logging, signals and `actionwire bench`, around a
//! [`ServerBuilder`] that may carry actions of its own (feature `cli`, on by default).
//!
//! ```no_run
//! use actionwire::{Action, Config, Server};
//!
//! fn main() -> std::process::ExitCode {
//!     let hello = Action::new("hello", |data| {
//!         data.response.insert("hello".into(), "world".into());
//!         Ok(())
//!     });
//!     actionwire::cli::run(Server::builder(Config::default()).action(hello))
//! }
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::{Config, ServerBuilder, supervisor};

/// A server for actionhero's TCP socket protocol, on one event loop.
///
/// With no options it serves the embedded defaults: plain TCP on 0.0.0.0:5000, rooms
/// `defaultRoom` and `otherRoom`, files from ./public. Connect with `nc localhost 5000`.
/// Each flag can also be set through the environment variable shown; a flag wins over it.
#[derive(Debug, Parser)]
#[command(
    name = "actionwire",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Load a line-protocol server (actionwire, redis-server, …) and report throughput and
    /// latency percentiles: closed loop, open loop (--rate), pipelined, idle connections
    /// (--idle) or connection setups (--handshakes).
    Bench(BenchCmd),
}

/// `actionwire bench [OPTIONS]` runs a benchmark; `actionwire bench report …` draws runs.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchCmd {
    #[command(subcommand)]
    sub: Option<BenchSub>,
    #[command(flatten)]
    args: actionwire_bench::BenchArgs,
}

#[derive(Debug, clap::Subcommand)]
enum BenchSub {
    /// Overlay the JSON summaries of several runs (`actionwire bench --json > a.json`) in one
    /// self-contained HTML report: latency by percentile and throughput over time.
    Report(actionwire_bench::report::ReportArgs),
}

/// Options of the server (the default command).
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// JSON configuration file with actionhero's key names (`general`, `servers.socket`,
    /// `workers`); see the README for every key. Flags below override it.
    #[arg(long, value_name = "FILE", env = "ACTIONWIRE_CONFIG")]
    config: Option<PathBuf>,

    /// TCP port of the socket server (servers.socket.port; default 5000; 0 picks a free one).
    #[arg(long, env = "ACTIONWIRE_PORT")]
    port: Option<u16>,

    /// Address to listen on (servers.socket.bindIP; default 0.0.0.0). `::` listens on IPv6
    /// and IPv4 at once.
    #[arg(long, value_name = "IP", env = "ACTIONWIRE_BIND")]
    bind: Option<String>,

    /// Worker threads that run actions (workers.count; 0 = one per core).
    #[arg(long, env = "ACTIONWIRE_WORKERS")]
    workers: Option<usize>,

    /// Threads that run TLS handshakes' cryptography at the lowest priority while
    /// established clients are talking, so that new clients never delay them
    /// (workers.handshakeThreads; default 1; 0 = always on the event loop, a few handshake
    /// steps per loop turn).
    #[arg(long, value_name = "N", env = "ACTIONWIRE_HANDSHAKE_THREADS")]
    handshake_threads: Option<usize>,

    /// Send `{"context":"api","status":"keep-alive",…}` to a connection after this many ms
    /// without receiving anything, and again every interval while it stays silent
    /// (servers.socket.keepAliveInterval; 0 = off).
    #[arg(long, value_name = "MS", env = "ACTIONWIRE_KEEP_ALIVE_INTERVAL")]
    keep_alive_interval: Option<u64>,

    /// Close a connection after this many ms without receiving anything, with a Bye line
    /// (servers.socket.idleTimeout; 0 = off).
    #[arg(long, value_name = "MS", env = "ACTIONWIRE_IDLE_TIMEOUT")]
    idle_timeout: Option<u64>,

    /// Close a connection that has not sent a complete line within this many ms
    /// (servers.socket.handshakeTimeout; default 10000; 0 = off).
    #[arg(long, value_name = "MS", env = "ACTIONWIRE_HANDSHAKE_TIMEOUT")]
    handshake_timeout: Option<u64>,

    /// Turn on TCP keepalive (SO_KEEPALIVE) on accepted sockets (servers.socket.setKeepAlive).
    /// `--set-keep-alive=false` (or the variable set to 0/false/no/off) turns it off over a
    /// configuration file; the variable also takes 1/true/yes/on.
    #[arg(
        long,
        env = "ACTIONWIRE_SET_KEEP_ALIVE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    set_keep_alive: Option<bool>,

    /// PEM certificate chain for TLS. With --tls-key and no --tls-port, the main listener
    /// speaks TLS (servers.socket.secure + serverOptions.cert).
    #[arg(
        long,
        value_name = "FILE",
        env = "ACTIONWIRE_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, SEC1 or RSA) for --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "ACTIONWIRE_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Also listen for TLS on this port (servers.socketTls), keeping the main listener plain;
    /// uses --tls-cert/--tls-key.
    #[arg(long, value_name = "PORT", env = "ACTIONWIRE_TLS_PORT")]
    tls_port: Option<u16>,

    /// Serve HTTP on this port (servers.web): actions at /api/<action>, /status, /metrics.
    #[arg(long, value_name = "PORT", env = "ACTIONWIRE_WEB_PORT")]
    web_port: Option<u16>,

    /// Forward actions to this HTTP backend (upstream.url), e.g.
    /// http://10.0.0.5:8080/api: every action not defined here (upstream.actions).
    #[arg(long, value_name = "URL", env = "ACTIONWIRE_UPSTREAM")]
    upstream: Option<String>,

    /// Join the cluster on this Redis (redis.*), sharing rooms, chat and the cache with
    /// the other nodes: redis://[:password@]host[:port][/db].
    #[arg(long, value_name = "URL", env = "ACTIONWIRE_REDIS")]
    redis: Option<String>,

    /// Run this many single-loop processes sharing the ports (SO_REUSEPORT) and, through
    /// the cluster, rooms, chat and the cache (general.processes; 0 = one per core; needs
    /// --redis). This process supervises them: restarts one that dies, forwards signals.
    #[arg(long, value_name = "N", env = "ACTIONWIRE_PROCESSES")]
    processes: Option<usize>,

    /// Log level: error, warn, info, debug (connections open/close) or trace.
    #[arg(
        long,
        value_name = "LEVEL",
        default_value = "info",
        env = "ACTIONWIRE_LOG_LEVEL"
    )]
    log_level: log::LevelFilter,
}

/// Parses the process's command line and environment and runs what they ask for: the
/// server built from `builder` (its configuration is the base; `--config FILE` replaces it,
/// flags and environment variables override either) until a signal stops it, or
/// `actionwire bench`. Returns the exit code (0, 1 for a bench with errors, 2 for a start-up
/// error); `main` returns it.
pub fn run(builder: ServerBuilder) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Bench(BenchCmd {
            sub: Some(BenchSub::Report(r)),
            ..
        })) => {
            return match actionwire_bench::report::report(&r) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("actionwire bench report: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Bench(b)) => return bench(&b.args),
        None => {}
    }
    serve(cli.serve, builder)
}

fn bench(args: &actionwire_bench::BenchArgs) -> ExitCode {
    match actionwire_bench::run(args) {
        Ok(summary) => {
            if args.json {
                match serde_json::to_string(&summary) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("actionwire bench: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                actionwire_bench::print(&summary);
            }
            if summary.errors > 0 && !args.allow_errors {
                eprintln!(
                    "actionwire bench: {} errors (error replies {}, unexpected {}, timeouts {}, \
                     connections closed {}, connect errors {}): the numbers above include \
                     failures; --allow-errors exits 0 anyway",
                    summary.errors,
                    summary.error_replies,
                    summary.unexpected,
                    summary.timeouts,
                    summary.closed,
                    summary.connect_errors
                );
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("actionwire bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(cli: ServeArgs, builder: ServerBuilder) -> ExitCode {
    if let Err(e) = simple_logger::SimpleLogger::new()
        .with_level(cli.log_level)
        // rustls logs every alert at warn (a client's renegotiation attempt, say), which an
        // edge node under attack would turn into a flood; our own debug line reports each
        // failed TLS connection.
        .with_module_level("rustls", cli.log_level.min(log::LevelFilter::Error))
        .with_utc_timestamps()
        .init()
    {
        eprintln!("actionwire: cannot start logging: {e}");
    }

    let mut builder = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => builder.with_config(c),
            Err(e) => return fail(&format!("configuration error: {e}")),
        },
        None => builder,
    };
    let config = builder.config_mut();
    if let Some(port) = cli.port {
        config.servers.socket.port = port;
    }
    if let Some(bind) = cli.bind {
        config.servers.socket.bind_ip = bind;
    }
    if let Some(workers) = cli.workers {
        config.workers.count = workers;
    }
    if let Some(n) = cli.handshake_threads {
        config.workers.handshake_threads = n;
    }
    let socket = &mut config.servers.socket;
    if let Some(ms) = cli.keep_alive_interval {
        socket.keep_alive_interval = ms;
    }
    if let Some(ms) = cli.idle_timeout {
        socket.idle_timeout = ms;
    }
    if let Some(ms) = cli.handshake_timeout {
        socket.handshake_timeout = ms;
    }
    if let Some(on) = cli.set_keep_alive {
        socket.set_keep_alive = on;
    }
    if let Some(port) = cli.web_port {
        config.servers.web.enabled = true;
        config.servers.web.port = port;
    }
    if let Some(url) = cli.upstream {
        config.upstream.url = Some(url);
    }
    if let Some(url) = cli.redis
        && let Err(e) = config.redis.set_url(&url)
    {
        return fail(&format!("--redis {url}: {e}"));
    }
    if let Some(n) = cli.processes {
        config.general.processes = n;
    }
    if let Some(port) = cli.tls_port {
        let t = &mut config.servers.socket_tls;
        t.enabled = true;
        t.port = port;
        if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
            t.server_options.cert = Some(cert.clone());
            t.server_options.key = Some(key.clone());
        }
    } else if let (Some(cert), Some(key)) = (cli.tls_cert, cli.tls_key) {
        let socket = &mut config.servers.socket;
        socket.secure = true;
        socket.server_options.cert = Some(cert);
        socket.server_options.key = Some(key);
    }
    if let Err(e) = config.validate() {
        return fail(&format!("configuration error: {e}"));
    }
    // A child of `--processes`: the parent has checked and reported the configuration.
    if let Ok(text) = std::env::var(supervisor::CHILD_ENV) {
        let Some(slot) = supervisor::ChildSlot::parse(&text) else {
            return fail(&format!(
                "{}={text:?} is not a process slot (it is set by --processes)",
                supervisor::CHILD_ENV
            ));
        };
        slot.apply(config);
        return start(builder);
    }
    for key in config.inactive_keys() {
        log::warn!("{key} is set but has no effect");
    }
    if config.redis.enabled
        && config.general.server_token == actionwire_config::DEFAULT_SERVER_TOKEN
    {
        log::warn!(
            "general.serverToken is the default ({}): anyone who can publish on this Redis can speak for the cluster; set a secret shared by every node",
            actionwire_config::DEFAULT_SERVER_TOKEN
        );
    }
    let processes = supervisor::count(config);
    if processes > 1 {
        return supervisor::supervise(config, processes);
    }
    start(builder)
}

/// Builds the server, installs the signal handlers and runs it.
fn start(builder: ServerBuilder) -> ExitCode {
    let server = match builder.build() {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    // Handlers first: a supervisor may signal as soon as it reads the start line.
    if let Err(e) = install_signal_handlers(server.stop_handle(), server.tls_reloader()) {
        log::warn!("cannot install signal handlers ({e}); stop the server with SIGKILL");
    }
    log::info!("{}", server.describe());
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("event loop failed: {e}")),
    }
}

/// A start-up failure: one plain line on stderr (not through the logger, so it shows at
/// every `--log-level` and is not printed twice), then exit code 2.
fn fail(message: &str) -> ExitCode {
    eprintln!("actionwire: {message}");
    ExitCode::from(2)
}

/// SIGINT/SIGTERM start a graceful shutdown (after the drain, when configured); a second one
/// exits at once (status 130).
/// SIGHUP reloads every TLS listener's certificate and key; it never stops the server.
fn install_signal_handlers(
    handle: crate::StopHandle,
    tls: crate::tls::TlsReloader,
) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("actionwire-signals".into())
        .spawn(move || {
            let mut stops = 0;
            for sig in signals.forever() {
                if sig == SIGHUP {
                    reload_certificates(&tls);
                    continue;
                }
                stops += 1;
                if stops == 1 {
                    log::info!("signal {sig} received: shutting down gracefully");
                    handle.stop();
                } else {
                    log::warn!("second signal {sig}: exiting now");
                    std::process::exit(130);
                }
            }
        })?;
    Ok(())
}

/// SIGHUP: one log line per TLS listener saying what new handshakes get from now on.
fn reload_certificates(tls: &crate::tls::TlsReloader) {
    if tls.stores().is_empty() {
        log::info!("SIGHUP received: no TLS listener, nothing to reload");
        return;
    }
    for (store, result) in tls.reload() {
        match result {
            Ok(()) => log::info!(
                "SIGHUP: {} certificate reloaded from {}",
                store.prefix(),
                store.cert_path().display()
            ),
            Err(e) => log::error!(
                "SIGHUP: {} keeps its previous certificate: {e}",
                store.prefix()
            ),
        }
    }
}
