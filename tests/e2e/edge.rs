//! Edge mode: actions forwarded to an HTTP backend (a second actionwire's front door, or a
//! scripted backend where a behaviour needs one), from the event loop.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use actionwire::{Action, Config, Input};

use crate::backend::{Act, Backend, json as answer};
use crate::harness::*;

/// A backend actionwire with its HTTP front door on, and a `hello` action of its own.
fn backend_server() -> TestServer {
    let hello = Action::new("hello", |data| {
        let name = data.params["name"].as_str().unwrap_or("").to_owned();
        data.response
            .insert("greeting".into(), json!(format!("hello, {name}")));
        data.response.insert("n".into(), json!(1));
        Ok(())
    })
    .input(Input::new("name").required());
    TestServer::with_actions(
        |c| {
            c.servers.web.enabled = true;
            c.servers.web.port = 0;
            c.servers.web.bind_ip = Some("127.0.0.1".into());
        },
        vec![hello],
    )
}

fn url_of(server: &TestServer) -> String {
    format!("http://{}/api", server.web_addr.expect("web listener"))
}

fn edge(url: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::with(|c| {
        c.upstream.url = Some(url.to_owned());
        c.servers.web.enabled = true;
        c.servers.web.port = 0;
        c.servers.web.bind_ip = Some("127.0.0.1".into());
        tweak(c);
    })
}

/// The reply without the counters (they are the caller's own).
fn without_counters(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("messageId");
        o.remove("messageCount");
    }
    v
}

/// Sends raw HTTP requests to a server's front door on one connection and reads until it
/// closes (the last request says `Connection: close`).
fn http(server: &TestServer, requests: &str) -> String {
    let addr = server.web_addr.expect("web listener");
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(&mut c, requests.as_bytes()).expect("write");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut c, &mut text).expect("read");
    text
}

fn scrape(server: &TestServer) -> String {
    http(
        server,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

#[test]
fn forwarded_replies_have_the_shape_of_local_ones() {
    let backend = backend_server();
    let edge = edge(&url_of(&backend), |_| {});
    let mut direct = backend.client();
    let mut via = edge.client();
    for line in [
        r#"{"action":"hello","params":{"name":"ann"}}"#,
        r#"{"action":"hello","params":{}}"#,
        r#"{"action":"nosuch","params":{}}"#,
    ] {
        let local = direct.request(line);
        let forwarded = via.request(line);
        assert_eq!(keys(&local), keys(&forwarded), "{line}");
        assert_eq!(
            without_counters(local),
            without_counters(forwarded),
            "{line}"
        );
    }
    // Sticky params for a bare call, and the counters of this connection.
    via.send("paramAdd name=bob");
    via.json();
    let r = via.request("hello");
    assert_eq!(r["greeting"], "hello, bob");
    assert_eq!(r["messageCount"], 5);
    // The front door forwards the same way.
    let text = http(
        &edge,
        "POST /api/hello HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"name\":\"cat\"}\n",
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with(r#"{"greeting":"hello, cat","n":1}"#),
        "{text}"
    );
}

#[test]
fn the_request_carries_the_params_and_the_callers_identity() {
    let backend = Backend::start(|_| answer(200, r#"{"ok":true}"#));
    let edge = edge(&backend.url(), |c| {
        c.upstream.actions = vec!["randomNumber".into()]
    });
    let mut c = edge.client();
    let id = c.request("detailsView")["data"]["id"].clone();
    let r = c.request(r#"{"action":"randomNumber","params":{"a":[1,2]}}"#);
    assert_eq!(r["ok"], true, "{r}");
    let seen = backend.next();
    assert_eq!(seen.path, "/api/randomNumber");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("x-sessionid"), id.as_str());
    let local = c.stream.local_addr().expect("addr");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-forwarded-port"),
        Some(local.port().to_string().as_str())
    );
    let body: Value = serde_json::from_slice(&seen.body).expect("JSON body");
    assert_eq!(body["a"], json!([1, 2]));
    // Listed by name: forwarded although it is defined here.
    assert_ne!(r["randomNumber"].as_f64().map(|_| ()), Some(()));
}

#[test]
fn the_body_names_the_action_called_not_a_sticky_one() {
    // actionhero takes the action from a body param `action` before the URL's path, so a
    // sticky `action` left by an earlier call must not redirect this one.
    let backend = Backend::start(|_| answer(200, r#"{"ok":true}"#));
    let edge = edge(&backend.url(), |c| {
        c.upstream.actions = vec!["randomNumber".into()]
    });
    let mut c = edge.client();
    assert_eq!(c.request("paramAdd action=createChatRoom")["status"], "OK");
    assert_eq!(c.request("paramAdd name=x")["status"], "OK");
    let r = c.request(r#"{"action":"randomNumber"}"#);
    assert_eq!(r["ok"], true, "{r}");
    let seen = backend.next();
    assert_eq!(seen.path, "/api/randomNumber");
    let body: Value = serde_json::from_slice(&seen.body).expect("JSON body");
    assert_eq!(body, json!({"action": "randomNumber", "name": "x"}));
}

#[test]
fn a_thousand_concurrent_calls_of_a_slow_backend_are_all_answered() {
    let backend = backend_server();
    // Two workers: a thread per call would take 100 s; the loop holds none.
    let edge = edge(&url_of(&backend), |c| {
        c.upstream.actions = vec!["sleepTest".into()];
        c.general.simultaneous_actions = 100;
        c.workers.count = 2;
    });
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let addr = edge.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..50 {
                    c.send(&format!(
                        r#"{{"action":"sleepTest","params":{{"sleepDuration":200,"messageId":"m{i}"}}}}"#
                    ));
                }
                let mut ids = BTreeSet::new();
                let mut counts = BTreeSet::new();
                for _ in 0..50 {
                    let r = c.json();
                    assert_eq!(r["sleepDuration"], 200, "{r}");
                    assert!(r.get("error").is_none(), "{r}");
                    ids.insert(r["messageId"].as_str().expect("id").to_owned());
                    counts.insert(r["messageCount"].as_u64().expect("count"));
                }
                (ids, counts)
            })
        })
        .collect();
    for c in clients {
        let (ids, counts) = c.join().expect("client");
        assert_eq!(ids, (0..50).map(|i| format!("m{i}")).collect());
        assert_eq!(counts, (1..=50).collect());
    }
    let m = scrape(&edge);
    assert_eq!(
        metric(&m, "actionwire_upstream_calls_total{result=\"answered\"}"),
        1000
    );
    assert_eq!(metric(&m, "actionwire_upstream_queued"), 0);
    assert!(metric(&m, "actionwire_upstream_connects_total") <= 256);
}

#[test]
fn a_dead_backend_gives_error_replies_then_service_resumes() {
    let backend = backend_server();
    let web = backend.web_addr.expect("web");
    let edge = edge(&format!("http://{web}/api"), |_| {});
    let mut c = edge.client();
    assert_eq!(
        c.request(r#"{"action":"hello","params":{"name":"a"}}"#)["n"],
        1
    );
    backend.stop();
    for _ in 0..3 {
        let r = c.request(r#"{"action":"hello","params":{"name":"a"}}"#);
        assert!(error_text(&r).starts_with("upstream unavailable: "), "{r}");
    }
    // Back on the same port.
    let back = TestServer::with_actions(
        |cfg| {
            cfg.servers.web.enabled = true;
            cfg.servers.web.port = web.port();
            cfg.servers.web.bind_ip = Some("127.0.0.1".into());
        },
        vec![Action::new("hello", |d| {
            d.response.insert("n".into(), json!(2));
            Ok(())
        })],
    );
    assert_eq!(c.request(r#"{"action":"hello","params":{}}"#)["n"], 2);
    let m = scrape(&edge);
    assert_eq!(metric(&m, "actionwire_upstream_queued"), 0);
    assert_eq!(
        metric(&m, "actionwire_upstream_connections{state=\"busy\"}"),
        0
    );
    assert!(
        metric(
            &m,
            "actionwire_upstream_calls_total{result=\"unavailable\"}"
        ) >= 3
    );
    back.stop();
}

#[test]
fn past_the_queue_limit_calls_are_refused_at_once_and_waiting_ones_time_out() {
    let backend = Backend::start(|_| Act::Hold);
    let edge = edge(&backend.url(), |c| {
        c.upstream.max_connections = 1;
        c.upstream.max_queued = 2;
        c.upstream.timeout = 1000;
        c.general.simultaneous_actions = 10;
    });
    let mut c = edge.client();
    let call = |c: &mut Client, i: usize| {
        c.send(&format!(
            r#"{{"action":"x","params":{{"messageId":"m{i}"}}}}"#
        ));
    };
    call(&mut c, 0);
    backend.next(); // m0 is on the only connection, held
    for i in 1..4 {
        call(&mut c, i);
    }
    // The fourth finds two calls waiting: refused before any other answer.
    let r = c.json();
    assert_eq!(r["messageId"], "m3", "{r}");
    assert_eq!(
        error_text(&r),
        "upstream unavailable: too many calls waiting for the backend"
    );
    let mut rest: Vec<String> = (0..3)
        .map(|_| {
            let r = c.json();
            assert_eq!(error_text(&r), "upstream timed out", "{r}");
            r["messageId"].as_str().expect("id").to_owned()
        })
        .collect();
    rest.sort();
    assert_eq!(rest, ["m0", "m1", "m2"]);
    // The server's own documentation fetch may still wait behind the held call.
    wait_until("the queue is empty", || {
        metric(&scrape(&edge), "actionwire_upstream_queued") == 0
    });
    let m = scrape(&edge);
    assert_eq!(
        metric(&m, "actionwire_upstream_calls_total{result=\"refused\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "actionwire_upstream_calls_total{result=\"timed_out\"}"),
        3
    );
    assert_eq!(metric(&m, "actionwire_upstream_queued"), 0);
}

#[test]
fn backend_misbehaviour_is_an_error_reply_naming_it() {
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n".to_vec();
    let backend = Backend::start(move |seen| match seen.path.as_str() {
        "/api/chunked" => Act::Answer(chunked.clone(), true),
        "/api/garbage" => Act::Answer(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(), true),
        "/api/html" => Act::Answer(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 5\r\n\r\n<b/>\n".to_vec(),
            true,
        ),
        "/api/midbody" => Act::Answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":".to_vec(),
            false,
        ),
        "/api/huge" => answer(200, &format!("{{\"a\":\"{}\"}}", "x".repeat(5000))),
        "/api/silent" => Act::Close,
        _ => answer(200, "{}"),
    });
    let edge = edge(&backend.url(), |c| c.upstream.max_response_bytes = 4096);
    let mut c = edge.client();
    let call = |c: &mut Client, name: &str| c.request(&format!(r#"{{"action":"{name}"}}"#));
    assert_eq!(call(&mut c, "chunked")["a"], 1);
    let cases = [
        ("garbage", "the backend's answer is not HTTP"),
        (
            "html",
            "the backend answered 502 with a body that is not a JSON object",
        ),
        (
            "midbody",
            "the backend closed the connection in the middle of its answer",
        ),
        (
            "huge",
            "the backend's answer is over upstream.maxResponseBytes",
        ),
        (
            "silent",
            "the backend closed the connection without answering",
        ),
    ];
    for (name, why) in cases {
        let r = call(&mut c, name);
        let text = error_text(&r);
        assert!(text.starts_with("upstream unavailable: "), "{name}: {r}");
        assert!(text.contains(why), "{name}: {r}");
    }
    // Still serving after all of that.
    assert_eq!(call(&mut c, "chunked")["a"], 1);
}

#[test]
fn a_closed_port_is_unavailable_at_once() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let edge = edge(&format!("http://127.0.0.1:{port}/api"), |_| {});
    let r = edge.client().request(r#"{"action":"x"}"#);
    assert!(
        error_text(&r).starts_with("upstream unavailable: cannot connect to"),
        "{r}"
    );
    // Over the front door: a 502, and the kept-alive connection goes on to the next request.
    let text = http(
        &edge,
        "GET /api/x HTTP/1.1\r\nHost: x\r\n\r\nGET /api/y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(text.matches("HTTP/1.1 502 ").count(), 2, "{text}");
    assert!(text.contains("Connection: keep-alive"), "{text}");
}

#[test]
fn a_call_refused_at_once_over_http_keeps_the_exchange_in_order() {
    // No queue at all: a call that finds no idle connection is refused as it is made,
    // while its HTTP request is still being read.
    let backend = Backend::start(|_| Act::Hold);
    let edge = edge(&backend.url(), |c| {
        c.upstream.max_queued = 0;
    });
    let text = http(
        &edge,
        "GET /api/x HTTP/1.1\r\nHost: x\r\n\r\nGET /api/y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(text.matches("HTTP/1.1 503 ").count(), 2, "{text}");
    assert!(
        text.contains("too many calls waiting for the backend"),
        "{text}"
    );
    assert!(text.contains("Connection: keep-alive"), "{text}");
}

/// An inline action that holds the loop until the test has reset the backend's
/// connection: the reset is then found by the next write, not by a read before it.
fn stall_action(ready: Arc<std::sync::Barrier>) -> Action {
    Action::new("stall", move |_| {
        ready.wait(); // the test resets the backend's sockets
        ready.wait();
        Ok(())
    })
    .inline()
}

/// Resets every connection the backend holds, and returns once the resets are sent: the
/// serving threads hold descriptors of the same sockets, and only the last close (with a
/// zero linger) sends the reset; before that the peer sees a FIN, which a write does not
/// notice.
fn reset_all(backend: &Backend) {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering::Relaxed;
    for s in backend.sockets.lock().expect("sockets").drain(..) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid descriptor and a correctly sized option value.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
            libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR);
        }
    }
    // Every connection accepted so far (nothing connects meanwhile: the callers hold the
    // edge's loop).
    wait_until("the backend closed the connections it was serving", || {
        backend.closed.load(Relaxed) >= backend.accepted.load(Relaxed)
    });
}

#[test]
fn a_stale_keep_alive_connection_is_retried_once() {
    let backend = Backend::start(|_| answer(200, r#"{"ok":1}"#));
    let ready = Arc::new(std::sync::Barrier::new(2));
    let stall = stall_action(Arc::clone(&ready));
    let edge = TestServer::custom(
        Transport::Plain,
        |c| c.upstream.url = Some(backend.url()),
        |b| b.action(stall),
    );
    let mut c = edge.client();
    assert_eq!(c.request(r#"{"action":"x"}"#)["ok"], 1);
    // `stall` holds the loop; the forwarded call behind it in the same read goes to the
    // kept-alive connection, whose reset the loop has not seen yet.
    c.send_raw(b"{\"action\":\"stall\"}\n{\"action\":\"x\"}\n");
    ready.wait();
    reset_all(&backend);
    ready.wait();
    c.json(); // stall's reply
    let r = c.json();
    assert_eq!(r["ok"], 1, "retried on a new connection: {r}");
    let conns: Vec<usize> = backend
        .seen
        .try_iter()
        .filter(|s| s.path == "/api/x")
        .map(|s| s.conn)
        .collect();
    assert_eq!(
        conns.len(),
        2,
        "the stale attempt never reached the backend"
    );
    assert_ne!(conns[0], conns[1], "the retry went to a new connection");
    assert!(backend.accepted.load(Ordering::Relaxed) >= 2);
}

#[test]
fn a_request_that_reached_the_backend_is_not_sent_twice() {
    let n = std::sync::atomic::AtomicUsize::new(0);
    // The second call is read and the connection closed without an answer, as by a
    // backend that ran it and crashed: the call fails rather than running twice.
    let backend = Backend::start(move |seen| {
        if seen.path != "/api/x" {
            return answer(404, r#"{"error":"unknown action or invalid apiVersion"}"#);
        }
        match n.fetch_add(1, Ordering::Relaxed) {
            1 => Act::Close,
            _ => answer(200, r#"{"ok":1}"#),
        }
    });
    let edge = edge(&backend.url(), |_| {});
    let mut c = edge.client();
    assert_eq!(c.request(r#"{"action":"x"}"#)["ok"], 1);
    let r = c.request(r#"{"action":"x"}"#);
    assert_eq!(
        error_text(&r),
        "upstream unavailable: the backend closed the connection without answering"
    );
    assert_eq!(
        metric(&scrape(&edge), "actionwire_upstream_retries_total"),
        0
    );
    assert_eq!(c.request(r#"{"action":"x"}"#)["ok"], 1);
    let calls = backend
        .seen
        .try_iter()
        .filter(|s| s.path == "/api/x")
        .count();
    assert_eq!(calls, 3, "each call reached the backend once");
}

#[test]
fn shutdown_answers_forwarded_calls_in_flight() {
    let backend = backend_server();
    let edge = edge(&url_of(&backend), |c| {
        c.upstream.actions = vec!["sleepTest".into()]
    });
    let mut c = edge.client();
    c.send(r#"{"action":"sleepTest","params":{"sleepDuration":300}}"#);
    // The call is on its way once the backend counts it pending.
    wait_until("the backend runs the call", || {
        backend.api.pending_actions() == 1
    });
    edge.begin_shutdown();
    let r = c.json();
    assert_eq!(r["sleepDuration"], 300, "{r}");
    assert_eq!(c.line(), r#"{"status":"Bye!","context":"api"}"#);
    c.expect_closed();
}

#[test]
fn a_backend_slower_than_the_keep_alive_timeout_is_still_awaited() {
    let backend = backend_server();
    let edge = edge(&url_of(&backend), |c| {
        c.upstream.actions = vec!["sleepTest".into()];
        c.upstream.keep_alive_timeout = 100;
    });
    let mut c = edge.client();
    // Silent for five keep-alive timeouts: the busy connection is not idle.
    let r = c.request(r#"{"action":"sleepTest","params":{"sleepDuration":500}}"#);
    assert_eq!(r["sleepDuration"], 500, "{r}");
    // An idle one is closed after the timeout, and the next call opens another.
    wait_until("the idle backend connection is closed", || {
        metric(
            &scrape(&edge),
            "actionwire_upstream_connections{state=\"idle\"}",
        ) == 0
    });
    let connects = metric(&scrape(&edge), "actionwire_upstream_connects_total");
    let r = c.request(r#"{"action":"sleepTest","params":{"sleepDuration":1}}"#);
    assert_eq!(r["sleepDuration"], 1, "{r}");
    let m = scrape(&edge);
    assert_eq!(
        metric(&m, "actionwire_upstream_connects_total"),
        connects + 1
    );
    assert_eq!(
        metric(&m, "actionwire_upstream_calls_total{result=\"answered\"}"),
        2
    );
}

#[test]
fn an_https_backend_is_reached_over_tls_and_verified() {
    let backend = Backend::start_tls(|_| answer(200, r#"{"secure":true}"#));
    let url = format!("https://127.0.0.1:{}/api", backend.addr.port());
    let edge = edge(&url, |c| c.upstream.ca = Some(pki().ca.clone()));
    let mut c = edge.client();
    assert_eq!(c.request(r#"{"action":"x"}"#)["secure"], true);
    assert_eq!(backend.next().path, "/api/x");
    // Without the CA the certificate is not trusted: no request is ever sent.
    let untrusted = Backend::start_tls(|_| answer(200, r#"{"secure":true}"#));
    let url = format!("https://127.0.0.1:{}/api", untrusted.addr.port());
    let edge = self::edge(&url, |_| {});
    let r = edge.client().request(r#"{"action":"x"}"#);
    assert!(
        error_text(&r).starts_with("upstream unavailable: cannot connect to"),
        "{r}"
    );
    assert!(untrusted.seen.try_recv().is_err());
}
