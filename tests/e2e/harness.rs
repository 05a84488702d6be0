//! Test harness: a real server on 127.0.0.1 port 0 in this process, and line-oriented TCP
//! clients. Reads carry a timeout only as a guard against a hung test, never as a way to wait
//! for something: every test waits for the bytes it expects.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use actionwire::{Action, Api, Config, Server, ServerBuilder, ShutdownHandle};
use serde_json::Value;

/// Runs a scenario over plain TCP and over TLS: `both! { fn name(t) { … } }` makes the tests
/// `name::plain` and `name::tls`, each calling the body with its [`Transport`].
macro_rules! both {
    ($(#[$meta:meta])* fn $name:ident($t:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$meta])*
            fn run($t: $crate::harness::Transport) $body
            #[test]
            fn plain() {
                run($crate::harness::Transport::Plain)
            }
            #[test]
            fn tls() {
                run($crate::harness::Transport::Tls)
            }
        }
    };
}

/// How test clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls,
}

/// Certificates for this test process, generated once with rcgen: a CA, a server
/// certificate for localhost/127.0.0.1 signed by it, a client certificate signed by it, and
/// a client certificate from an unrelated CA.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = std::env::temp_dir().join(format!("aw-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let write = |name: &str, pem: String| {
            let p = dir.join(name);
            std::fs::write(&p, pem).expect("write pem");
            p
        };
        let ca_of = |cn: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let key = KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("ca");
            (cert, Issuer::new(params, key))
        };
        let (ca_cert, ca) = ca_of("actionwire test CA");
        let (_, stranger_ca) = ca_of("unrelated CA");
        let leaf = |names: Vec<String>, issuer: &Issuer<'_, KeyPair>| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(names)
                .expect("params")
                .signed_by(&key, issuer)
                .expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], &ca);
        let (client_cert, client_key) = leaf(vec!["client".into()], &ca);
        let (stranger_cert, stranger_key) = leaf(vec!["stranger".into()], &stranger_ca);
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
            stranger_cert: write("stranger.pem", stranger_cert),
            stranger_key: write("stranger-key.pem", stranger_key),
            dir,
        }
    })
}

/// A rustls client configuration trusting the test CA, optionally with a client certificate.
pub fn client_tls(identity: Option<(&PathBuf, &PathBuf)>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki().ca).expect("ca"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).expect("cert")],
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client auth"),
    };
    Arc::new(config)
}

/// Server options for TLS with the test certificates.
pub fn tls_options() -> actionwire_config::ServerOptions {
    let p = pki();
    actionwire_config::ServerOptions {
        cert: Some(p.server_cert.clone()),
        key: Some(p.server_key.clone()),
        ..Default::default()
    }
}

/// Upper bound for any single read in a test.
pub const GUARD: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The second (TLS) listener, when `servers.socketTls` is enabled.
    pub tls_addr: Option<SocketAddr>,
    /// The HTTP listener, when `servers.web` is enabled.
    pub web_addr: Option<SocketAddr>,
    pub api: Arc<Api>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn test_config() -> Config {
    let mut c = Config::default();
    c.servers.socket.bind_ip = "127.0.0.1".into();
    c.servers.socket.port = 0;
    c.workers.count = 4;
    c
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::with_actions(tweak, Vec::new())
    }

    pub fn over(t: Transport) -> TestServer {
        TestServer::over_with(t, |_| {})
    }

    pub fn over_with(t: Transport, tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::build(t, tweak, Vec::new())
    }

    pub fn with_actions(tweak: impl FnOnce(&mut Config), actions: Vec<Action>) -> TestServer {
        TestServer::build(Transport::Plain, tweak, actions)
    }

    fn build(t: Transport, tweak: impl FnOnce(&mut Config), actions: Vec<Action>) -> TestServer {
        TestServer::custom(t, tweak, |mut b| {
            for a in actions {
                b = b.action(a);
            }
            b
        })
    }

    /// A server whose builder `build` completes (actions, middleware).
    pub fn custom(
        t: Transport,
        tweak: impl FnOnce(&mut Config),
        build: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> TestServer {
        let mut cfg = test_config();
        if t == Transport::Tls {
            cfg.servers.socket.secure = true;
            cfg.servers.socket.server_options = tls_options();
        }
        tweak(&mut cfg);
        let server = build(Server::builder(cfg)).build().expect("server starts");
        let addr = server.local_addr();
        let tls_addr = server.tls_local_addr();
        let web_addr = server.web_local_addr();
        let handle = server.shutdown_handle();
        let api = server.api();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addr,
            transport: t,
            tls_addr,
            web_addr,
            api,
            handle,
            thread: Some(thread),
        }
    }

    /// A series' value from the server's `/metrics` (the sample whose name and labels are
    /// exactly `series`), `None` when it is not there.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let web = self
            .web_addr
            .expect("the web listener (servers.web) is enabled");
        let mut conn = std::net::TcpStream::connect(web).expect("connect to the web listener");
        std::io::Write::write_all(&mut conn, b"GET /metrics HTTP/1.0\r\n\r\n").expect("write");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut conn, &mut text).expect("read /metrics");
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// A client over this server's transport, welcome read.
    pub fn client(&self) -> Client {
        match self.transport {
            Transport::Plain => Client::connect(self.addr),
            Transport::Tls => Client::connect_tls(self.addr, client_tls(None)),
        }
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.handle.shutdown();
    }

    /// Shuts down and waits for the loop to stop.
    pub fn stop(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().expect("loop thread").expect("loop ends cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A bidirectional byte stream (plain socket or TLS stream).
pub trait Duplex: Read + Write + Send {}
impl<T: Read + Write + Send> Duplex for T {}

pub struct Client {
    /// The raw socket (addresses, shutdown, transport-specific tricks).
    pub stream: TcpStream,
    io: BufReader<Box<dyn Duplex>>,
    pub welcome: Value,
}

impl Client {
    /// Connects over plain TCP and reads the welcome line.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw(addr);
        c.welcome = c.json();
        c
    }

    /// Connects over TLS (server name `localhost`) and reads the welcome line.
    pub fn connect_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Client {
        let mut c = Client::connect_tls_raw(addr, config);
        c.welcome = c.json();
        c
    }

    /// TLS without reading anything (the handshake runs with the first read or write).
    pub fn connect_tls_raw(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Client {
        Client::tls_over(TcpStream::connect(addr).expect("connect"), config)
    }

    /// TLS over a stream that is already connected (and may have carried other bytes first).
    pub fn tls_over(stream: TcpStream, config: Arc<rustls::ClientConfig>) -> Client {
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = rustls::ClientConnection::new(config, name).expect("client");
        Client::over(stream, |s| Box::new(rustls::StreamOwned::new(tls, s)))
    }

    /// Plain TCP without reading anything.
    pub fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        Client::over(stream, |s| Box::new(s))
    }

    fn over(stream: TcpStream, wrap: impl FnOnce(TcpStream) -> Box<dyn Duplex>) -> Client {
        stream.set_read_timeout(Some(GUARD)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let io = BufReader::new(wrap(stream.try_clone().expect("clone")));
        Client {
            stream,
            io,
            welcome: Value::Null,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.io.get_mut();
        w.write_all(bytes).expect("write");
        w.flush().expect("flush");
    }

    /// Sends `line` followed by `\n`.
    pub fn send(&mut self, line: &str) {
        let mut b = line.as_bytes().to_vec();
        b.push(b'\n');
        self.send_raw(&b);
    }

    /// Reads one server line (without its `\r\n`).
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = self.io.read_until(b'\n', &mut buf).expect("read a line");
        assert!(n > 0, "connection closed while a line was expected");
        let s = String::from_utf8(buf).expect("server lines are UTF-8");
        assert!(
            s.ends_with("\r\n"),
            "every server line ends with CRLF: {s:?}"
        );
        s.trim_end_matches("\r\n").to_owned()
    }

    pub fn json(&mut self) -> Value {
        let l = self.line();
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))
    }

    /// Sends a line and reads the next JSON message.
    pub fn request(&mut self, line: &str) -> Value {
        self.send(line);
        self.json()
    }

    /// Reads exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.io.read_exact(&mut b).expect("read bytes");
        b
    }

    /// Asserts the server closes the connection next: EOF (after close_notify, over TLS) or a
    /// reset, and nothing more to read.
    pub fn expect_closed(&mut self) {
        let mut b = [0u8; 1];
        match self.io.read(&mut b) {
            Ok(0) => {}
            Ok(_) => panic!(
                "expected the connection to close, got data: {:?}",
                b[0] as char
            ),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close, got {e}"),
        }
    }

    /// Half-closes the raw socket (over TLS: without close_notify).
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Reads whatever is left until the connection ends; returns what was read and whether
    /// it ended cleanly (EOF, after close_notify over TLS).
    pub fn drain(&mut self) -> (Vec<u8>, bool) {
        let mut all = Vec::new();
        let clean = self.io.read_to_end(&mut all).is_ok();
        (all, clean)
    }
}

/// Asserts an OK verb reply and returns its data.
#[track_caller]
pub fn ok_data(v: &Value) -> Value {
    assert_eq!(v["status"], "OK", "expected OK: {v}");
    assert_eq!(v["context"], "response", "{v}");
    v["data"].clone()
}

/// Asserts an error reply and returns its text.
#[track_caller]
pub fn error_text(v: &Value) -> String {
    assert_eq!(v["context"], "response", "{v}");
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error: {v}"))
        .to_owned()
}

/// Keys of a JSON object in order.
pub fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

pub fn is_uuid_v4(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.get_version_num() == 4) && s.len() == 36
}

/// The real `actionwire` binary in a child process (for RSS, CPU time, ulimits, signals).
/// Its log is drained continuously and kept for assertions; it is killed when dropped.
pub struct ChildServer {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ChildServer {
    /// Starts the binary with `args` (plus `--bind 127.0.0.1 --port 0`) under `bash -c`, after
    /// the shell command `prefix` (e.g. `ulimit -n 64`).
    pub fn spawn(prefix: &str, args: &[&str]) -> ChildServer {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let bin = env!("CARGO_BIN_EXE_actionwire");
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "{prefix}; exec '{bin}' --bind 127.0.0.1 --port 0 {}",
            quoted.join(" ")
        );
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let addr = line
                    .split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                // Logged before the address is handed over: the start line is in the log
                // by the time `spawn` returns.
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                if let Some(a) = addr {
                    let _ = tx.send(a);
                }
            }
        });
        let addr = rx.recv_timeout(GUARD).expect("the server logs its address");
        ChildServer { child, addr, log }
    }

    fn stat(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.child.id())).expect("proc file")
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.stat("status")
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .expect("VmRSS")
    }

    /// User + system CPU time so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = self.stat("stat");
        // Fields after the command name (which is in parentheses).
        let rest = stat.rsplit(')').next().expect("stat");
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    }

    /// Log lines containing `needle`.
    pub fn count_logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| l.contains(needle))
    }

    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics with a clear message when a tool a test drives is missing (`scripts/test`, the
/// README's test command, installs it): a test never skips silently.
pub fn require_tool(name: &str) {
    if std::process::Command::new(name)
        .arg("version")
        .output()
        .is_err()
    {
        panic!(
            "the `{name}` command is needed by this test: run the tests with scripts/test, which installs it"
        );
    }
}

/// Waits until `cond` holds, checking every 10 ms, at most `GUARD`: for effects another
/// thread makes visible only through a counter.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + GUARD;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {GUARD:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Waits for a child with a deadline (`GUARD`), so a regression fails the test instead of
/// hanging CI: the child is killed and the test panics.
pub fn wait_bounded(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child process did not exit within {GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `Command::output`, bounded by `GUARD` (see [`wait_bounded`]).
pub fn run_bounded(cmd: &mut std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = wait_bounded(&mut child);
    std::process::Output {
        status,
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
    }
}
