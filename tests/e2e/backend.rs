//! A scripted HTTP backend for edge-mode tests: it records every request it reads and
//! answers as the test's script says (answer, hold, close, reset), one thread per
//! connection, on 127.0.0.1 port 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

/// A request as the backend read it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which connection (in accept order) and which request on it.
    pub conn: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the backend does with a request.
pub enum Act {
    /// Writes these bytes; closes afterwards unless `keep`.
    Answer(Vec<u8>, bool),
    /// Never answers (until the peer closes).
    Hold,
    /// Closes without a word.
    Close,
}

/// A JSON answer with `Content-Length`, kept alive.
pub fn json(status: u16, body: &str) -> Act {
    Act::Answer(
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
        true,
    )
}

type Script = dyn Fn(&Seen) -> Act + Send + Sync;

pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Receiver<Seen>,
    pub accepted: Arc<AtomicUsize>,
    /// Sockets of every accepted connection (to reset them from the test).
    pub sockets: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections whose serving thread has ended and closed its descriptors (the last
    /// close is what sends a reset when the test set a zero linger).
    pub closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    pub fn start(script: impl Fn(&Seen) -> Act + Send + Sync + 'static) -> Backend {
        Backend::spawn(None, script)
    }

    /// The same, speaking TLS with the test PKI's server certificate.
    pub fn start_tls(script: impl Fn(&Seen) -> Act + Send + Sync + 'static) -> Backend {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let pki = crate::harness::pki();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                CertificateDer::pem_file_iter(&pki.server_cert)
                    .expect("cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certs"),
                PrivateKeyDer::from_pem_file(&pki.server_key).expect("key"),
            )
            .expect("server config");
        Backend::spawn(Some(Arc::new(config)), script)
    }

    fn spawn(
        tls: Option<Arc<rustls::ServerConfig>>,
        script: impl Fn(&Seen) -> Act + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let (tx, seen) = channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (acc, socks, st, done) = (
            Arc::clone(&accepted),
            Arc::clone(&sockets),
            Arc::clone(&stop),
            Arc::clone(&closed),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let n = acc.fetch_add(1, Ordering::Relaxed);
                if let Ok(clone) = stream.try_clone() {
                    socks.lock().expect("sockets").push(clone);
                }
                let (tx, script, tls) = (tx.clone(), Arc::clone(&script), tls.clone());
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let closer = stream.try_clone();
                    match tls {
                        None => serve(stream, n, &tx, &*script),
                        Some(config) => {
                            let Ok(conn) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            serve(rustls::StreamOwned::new(conn, stream), n, &tx, &*script);
                        }
                    }
                    // The test keeps clones of the socket: close it for real.
                    if let Ok(s) = closer {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    done.fetch_add(1, Ordering::Relaxed); // `stream` and `closer` are gone
                });
            }
        });
        Backend {
            addr,
            seen,
            accepted,
            sockets,
            closed,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn next(&self) -> Seen {
        self.seen
            .recv_timeout(crate::harness::GUARD)
            .expect("the backend saw a request")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn serve<S: Read + Write>(mut stream: S, conn: usize, tx: &Sender<Seen>, script: &Script) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request: head, then Content-Length bytes of body.
        let (head_len, seen) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let seen = Seen {
                    path: req.path.unwrap_or("").to_owned(),
                    headers,
                    body: Vec::new(),
                    conn,
                };
                break (n, seen);
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let len: usize = seen
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_len + len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let mut seen = seen;
        seen.body = buf[head_len..head_len + len].to_vec();
        buf.drain(..head_len + len);
        // The edge's own fetch at start: no documentation here, and not the test's concern.
        if seen.path.ends_with("/showDocumentation") {
            let act = json(404, r#"{"error":"unknown action or invalid apiVersion"}"#);
            if let Act::Answer(bytes, _) = act
                && stream.write_all(&bytes).is_ok()
            {
                continue;
            }
            return;
        }
        let act = script(&seen);
        let _ = tx.send(seen);
        match act {
            Act::Answer(bytes, keep) => {
                if stream.write_all(&bytes).is_err() || !keep {
                    return;
                }
            }
            Act::Hold => {
                while matches!(stream.read(&mut chunk), Ok(n) if n > 0) {}
                return;
            }
            Act::Close => return,
        }
    }
}
