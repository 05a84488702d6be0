//! Test harness: a real server on 127.0.0.1 port 0 in this process, and line-oriented TCP
//! clients. Reads carry a timeout only as a guard against a hung test, never as a way to wait
//! for something: every test waits for the bytes it expects.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actionwire::{Action, Api, Config, Server, ShutdownHandle};
use serde_json::Value;

/// Upper bound for any single read in a test.
pub const GUARD: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub addr: SocketAddr,
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

    pub fn with_actions(tweak: impl FnOnce(&mut Config), actions: Vec<Action>) -> TestServer {
        let mut cfg = test_config();
        tweak(&mut cfg);
        let mut b = Server::builder(cfg);
        for a in actions {
            b = b.action(a);
        }
        let server = b.build().expect("server starts");
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let api = server.api();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addr,
            api,
            handle,
            thread: Some(thread),
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
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

pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub welcome: Value,
}

impl Client {
    /// Connects and reads the welcome line.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw(addr);
        c.welcome = c.json();
        c
    }

    /// Connects without reading anything.
    pub fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(GUARD)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client {
            stream,
            reader,
            welcome: Value::Null,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
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
        let n = self
            .reader
            .read_until(b'\n', &mut buf)
            .expect("read a line");
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
        self.reader.read_exact(&mut b).expect("read bytes");
        b
    }

    /// Asserts the server closes the connection next (EOF or reset, nothing more to read).
    pub fn expect_closed(&mut self) {
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => {}
            Ok(_) => panic!(
                "expected the connection to close, got data: {:?}",
                b[0] as char
            ),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close, got {e}"),
        }
    }

    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
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
