//! The HTTP front door (`servers.web`): routes, statuses, keep-alive, pipelining, limits,
//! shutdown, and metrics that move when what they count happens.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

use crate::harness::*;

fn web_server(tweak: impl FnOnce(&mut actionwire::Config)) -> (TestServer, SocketAddr) {
    let srv = TestServer::with(|c| {
        c.servers.web.enabled = true;
        c.servers.web.port = 0;
        c.servers.web.bind_ip = Some("127.0.0.1".into());
        tweak(c);
    });
    let web = srv.web_addr.expect("web listener");
    (srv, web)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// (status, body as JSON)
fn get(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    let mut r = agent.get(url).call().expect("request");
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().expect("body");
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// A raw HTTP response read off a socket.
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_response(r: &mut impl BufRead) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {line:?}"));
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').expect("header line");
        headers.insert(k.to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .map_or(0, |v| v.parse().expect("length"));
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("body");
    Response {
        status,
        headers,
        body,
    }
}

fn raw(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(GUARD)).expect("timeout");
    let r = BufReader::new(s.try_clone().expect("clone"));
    (s, r)
}

fn assert_eof(r: &mut BufReader<TcpStream>) {
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "nothing after the last response: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// A metric's value from the exposition text (first line starting with `series`).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn actions_over_get_and_post_with_matching_statuses() {
    let (_srv, web) = web_server(|_| {});
    let a = agent();
    let base = format!("http://{web}/api");
    let (st, v) = get(&a, &format!("{base}/randomNumber"));
    assert_eq!(st, 200);
    assert!(v["randomNumber"].is_f64());
    assert!(
        v.get("context").is_none(),
        "web replies carry no socket counters: {v}"
    );
    let (st, v) = get(&a, &format!("{base}/cacheTest?key=abc&value=d%20e%20f"));
    assert_eq!(st, 200);
    assert_eq!(v["cacheTestResults"]["loadResp"]["value"], "d e f");
    let (st, v) = get(&a, &format!("{base}/cacheTest?key=abc"));
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("value is a required parameter for this action"))
    );
    let (st, v) = get(&a, &format!("{base}/cacheTest?key=ab&value=xyz"));
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("inputs should be at least 3 letters long"))
    );
    let (st, v) = get(&a, &format!("{base}/nope"));
    assert_eq!(
        (st, v["error"].as_str()),
        (404, Some("unknown action or invalid apiVersion"))
    );
    // POST with a JSON body, and with a form body.
    let mut r = a
        .post(&format!("{base}/cacheTest"))
        .header("Content-Type", "application/json")
        .send(r#"{"key":"json","value":"body"}"#)
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(v["cacheTestResults"]["loadResp"]["key"], "cacheTest_json");
    let mut r = a
        .post(&format!("{base}/cacheTest"))
        .send_form([("key", "form"), ("value", "body")])
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(v["cacheTestResults"]["loadResp"]["key"], "cacheTest_form");
    let r = a
        .post(&format!("{base}/cacheTest"))
        .header("Content-Type", "application/json")
        .send("[1,2]")
        .expect("post");
    assert_eq!(r.status().as_u16(), 400, "a JSON body must be an object");
}

#[test]
fn failing_and_panicking_actions_answer_500() {
    let srv = TestServer::with_actions(
        |c| {
            c.servers.web.enabled = true;
            c.servers.web.port = 0;
            c.servers.web.bind_ip = Some("127.0.0.1".into());
        },
        vec![
            actionwire::Action::new("fails", |_| Err("nope".into())),
            actionwire::Action::new("boom", |_| panic!("kaboom")),
        ],
    );
    let web = srv.web_addr.expect("web");
    let a = agent();
    let (st, v) = get(&a, &format!("http://{web}/api/fails"));
    assert_eq!((st, v["error"].as_str()), (500, Some("nope")));
    let (st, v) = get(&a, &format!("http://{web}/api/boom"));
    assert_eq!(
        (st, v["error"].as_str()),
        (500, Some("internal error in action boom"))
    );
}

#[test]
fn status_and_methods_and_unknown_paths() {
    let (_srv, web) = web_server(|_| {});
    let a = agent();
    let (st, v) = get(&a, &format!("http://{web}/status"));
    assert_eq!(st, 200);
    assert_eq!(v["nodeStatus"], "Node Healthy");
    assert_eq!(v["name"], "actionwire");
    let (st, _) = get(&a, &format!("http://{web}/nowhere"));
    assert_eq!(st, 404);
    let r = a
        .delete(&format!("http://{web}/status"))
        .call()
        .expect("delete");
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD")
    );
    let r = a
        .put(&format!("http://{web}/api/randomNumber"))
        .send("")
        .expect("put");
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );
    let r = a
        .head(&format!("http://{web}/status"))
        .call()
        .expect("head");
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn keep_alive_reuses_one_connection() {
    let (_srv, web) = web_server(|_| {});
    let a = agent();
    for _ in 0..5 {
        assert_eq!(get(&a, &format!("http://{web}/api/randomNumber")).0, 200);
    }
    let mut r = a
        .get(&format!("http://{web}/metrics"))
        .call()
        .expect("metrics");
    let text = r.body_mut().read_to_string().expect("text");
    assert_eq!(
        metric(
            &text,
            r#"actionwire_connections_accepted_total{transport="http"}"#
        ),
        1.0,
        "six requests, one connection"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_srv, web) = web_server(|_| {});
    let (mut s, mut r) = raw(web);
    s.write_all(
        b"GET /api/sleepTest?sleepDuration=300 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /api/randomNumber HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /status HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /api/randomNumber HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let first = read_response(&mut r);
    let v: Value = serde_json::from_slice(&first.body).expect("json");
    assert_eq!(v["sleepDuration"], 300, "the slow answer comes first");
    assert_eq!(first.headers["connection"], "keep-alive");
    let second: Value = serde_json::from_slice(&read_response(&mut r).body).expect("json");
    assert!(second["randomNumber"].is_f64());
    let third: Value = serde_json::from_slice(&read_response(&mut r).body).expect("json");
    assert_eq!(third["nodeStatus"], "Node Healthy");
    let last = read_response(&mut r);
    assert_eq!(last.headers["connection"], "close");
    assert_eof(&mut r);
}

#[test]
fn limits_and_malformed_requests() {
    let (_srv, web) = web_server(|c| {
        c.servers.web.max_header_bytes = 1024;
        c.servers.web.max_body_bytes = 100;
    });
    let cases: [(&[u8], u16); 5] = [
        (b"GET /status HTTP/1.1\r\nX-Big: ", 431), // completed below past the limit
        (
            b"POST /api/randomNumber HTTP/1.1\r\nContent-Length: 101\r\n\r\n",
            413,
        ),
        (
            b"POST /api/randomNumber HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            411,
        ),
        (b"BREW /pot HTCPCP/1.0\r\n\r\n", 400),
        (
            b"GET /status HTTP/1.1\r\nContent-Length: twelve\r\n\r\n",
            400,
        ),
    ];
    for (req, want) in cases {
        let (mut s, mut r) = raw(web);
        s.write_all(req).expect("write");
        if want == 431 {
            s.write_all(&[b'a'; 2000]).expect("long header");
        }
        let resp = read_response(&mut r);
        assert_eq!(resp.status, want, "{}", String::from_utf8_lossy(req));
        assert_eq!(resp.headers["connection"], "close");
        assert_eof(&mut r);
    }
    // The server carries on.
    assert_eq!(get(&agent(), &format!("http://{web}/status")).0, 200);
}

#[test]
fn http_1_0_closes_and_expect_continue_is_answered() {
    let (_srv, web) = web_server(|_| {});
    let (mut s, mut r) = raw(web);
    s.write_all(b"GET /status HTTP/1.0\r\n\r\n").expect("write");
    let resp = read_response(&mut r);
    assert_eq!(
        (resp.status, resp.headers["connection"].as_str()),
        (200, "close")
    );
    assert_eof(&mut r);

    let (mut s, mut r) = raw(web);
    let body = br#"{"key":"abc","value":"def"}"#;
    write!(
        s,
        "POST /api/cacheTest HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .expect("head");
    let mut line = String::new();
    r.read_line(&mut line).expect("interim");
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    r.read_line(&mut line).expect("blank");
    s.write_all(body).expect("body");
    assert_eq!(read_response(&mut r).status, 200);
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_timeout() {
    let (_srv, web) = web_server(|c| c.servers.web.keep_alive_timeout = 300);
    let (mut s, mut r) = raw(web);
    s.write_all(b"GET /status HTTP/1.1\r\n\r\n").expect("write");
    assert_eq!(read_response(&mut r).status, 200);
    assert_eof(&mut r); // closed by the server after 300 ms of silence
}

#[test]
fn shutdown_answers_what_was_received_with_503_status_then_closes() {
    let (srv, web) = web_server(|_| {});
    let (mut s, mut r) = raw(web);
    s.write_all(
        b"GET /api/sleepTest?sleepDuration=600 HTTP/1.1\r\n\r\nGET /status HTTP/1.1\r\n\r\n",
    )
    .expect("write");
    // Wait until the action is running (a round trip per check, bounded).
    let mut probe = srv.client();
    for _ in 0..500 {
        if srv.api.pending_actions() == 1 {
            break;
        }
        probe.request("paramsView");
    }
    assert_eq!(srv.api.pending_actions(), 1);
    srv.begin_shutdown();
    let first = read_response(&mut r);
    assert_eq!(first.status, 200);
    assert_eq!(
        first.headers["connection"], "keep-alive",
        "a request is still waiting"
    );
    let status = read_response(&mut r);
    assert_eq!(
        status.status, 503,
        "shutting down: unhealthy for load balancers"
    );
    assert_eq!(status.headers["connection"], "close");
    assert_eof(&mut r);
}

#[test]
fn metrics_move_when_what_they_count_happens() {
    let (srv, web) = web_server(|_| {});
    let a = agent();
    let scrape = |a: &ureq::Agent| {
        let mut r = a
            .get(&format!("http://{web}/metrics"))
            .call()
            .expect("metrics");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        r.body_mut().read_to_string().expect("text")
    };
    let before = scrape(&a);
    let mut c = srv.client();
    c.request("roomAdd defaultRoom");
    c.send("say defaultRoom hello");
    c.json();
    c.json();
    c.request("randomNumber");
    c.request("noSuchAction");
    get(&a, &format!("http://{web}/api/randomNumber"));
    let after = scrape(&a);
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(
        delta(r#"actionwire_actions_total{action="randomNumber",outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"actionwire_actions_refused_total{reason="unknown_action"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"actionwire_actions_refused_total{reason="too_many_pending"}"#),
        0.0
    );
    assert_eq!(delta("actionwire_chat_messages_total"), 1.0);
    assert_eq!(delta("actionwire_chat_deliveries_total"), 1.0);
    assert_eq!(delta("actionwire_lines_received_total"), 4.0);
    assert_eq!(
        delta(r#"actionwire_connections_open{transport="plain"}"#),
        1.0
    );
    assert_eq!(metric(&after, "actionwire_room_members"), 1.0);
    assert_eq!(metric(&after, "actionwire_rooms"), 2.0);
    assert_eq!(
        delta(r#"actionwire_action_duration_seconds_count{action="randomNumber"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"actionwire_action_duration_seconds_bucket{action="randomNumber",le="+Inf"}"#),
        2.0
    );
    assert!(delta("actionwire_received_bytes_total") > 0.0);
    assert!(metric(&after, r#"actionwire_loop_turn_seconds_bucket{le="+Inf"}"#) > 0.0);
    assert!(delta(r#"actionwire_http_requests_total{code="200"}"#) >= 2.0);
    assert_eq!(
        metric(
            &after,
            &format!(
                r#"actionwire_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    // This test process is the server's: its resources are the server's.
    assert!(metric(&after, "process_resident_memory_bytes") > 1e6);
    assert!(metric(&after, "process_open_fds") >= 2.0);
    assert!(metric(&after, "process_max_fds") >= metric(&after, "process_open_fds"));
    // CPU time moves in 10 ms ticks: a young test process may not have used one yet.
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("process_cpu_seconds_total ")),
        "{after}"
    );
    let started = metric(&after, "process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        started > now - 600.0 && started <= now,
        "{started} vs {now}"
    );
    c.send("quit");
    c.line();
    c.expect_closed();
    drop(c); // the server lingers until our FIN before counting the close
    let mut closed = 0.0;
    for _ in 0..200 {
        closed = metric(
            &scrape(&a),
            r#"actionwire_connections_closed_total{reason="quit"}"#,
        );
        if closed >= 1.0 {
            break;
        }
    }
    assert_eq!(closed, 1.0);
    // Every sample line is `name{labels} value` or `name value`, after HELP/TYPE lines.
    for l in after.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = l.rsplit_once(' ').expect("sample");
        assert!(
            name.starts_with("actionwire_") || name.starts_with("process_"),
            "{l}"
        );
        assert!(value.parse::<f64>().is_ok(), "{l}");
    }
}

#[test]
fn a_request_trickling_in_gets_408_after_the_header_timeout_whatever_keep_alive_says() {
    for keep_alive in [1000, 0] {
        let (srv, web) = web_server(|c| {
            c.servers.web.header_timeout = 500;
            c.servers.web.keep_alive_timeout = keep_alive;
        });
        let started = std::time::Instant::now();
        let (mut s, mut r) = raw(web);
        let mut writer = s.try_clone().expect("clone");
        // Slowloris: one byte every 100 ms, never finishing the head, for at most 6 s.
        let trickle = std::thread::spawn(move || {
            for b in b"GET /status HTTP/1.1\r\nX-Slow: ".iter().cycle().take(60) {
                if writer.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        let resp = read_response(&mut r);
        assert_eq!(resp.status, 408, "keepAliveTimeout {keep_alive}");
        assert_eq!(resp.headers["connection"], "close");
        assert_eof(&mut r);
        let took = started.elapsed();
        assert!(took >= std::time::Duration::from_millis(500), "{took:?}");
        assert!(
            took < std::time::Duration::from_secs(5),
            "not cut off: {took:?}"
        );
        trickle.join().expect("writer");
        s.flush().ok();
        let metrics = agent()
            .get(&format!("http://{web}/metrics"))
            .call()
            .expect("metrics")
            .body_mut()
            .read_to_string()
            .expect("body");
        assert_eq!(
            metric(&metrics, "actionwire_http_requests_total{code=\"408\"}"),
            1.0
        );
        assert_eq!(
            metric(
                &metrics,
                "actionwire_connections_closed_total{reason=\"handshake_timeout\"}"
            ),
            1.0
        );
        drop(srv);
    }
}

#[test]
fn a_connection_that_never_sends_a_request_is_closed_without_an_answer() {
    let (_srv, web) = web_server(|c| c.servers.web.header_timeout = 300);
    let (_s, mut r) = raw(web);
    assert_eof(&mut r);
}

#[test]
fn a_slow_action_outlives_the_keep_alive_and_header_timeouts() {
    let (_srv, web) = web_server(|c| {
        c.servers.web.keep_alive_timeout = 200;
        c.servers.web.header_timeout = 200;
    });
    let (mut s, mut r) = raw(web);
    s.write_all(b"GET /api/sleepTest?sleepDuration=800 HTTP/1.1\r\n\r\n")
        .expect("write");
    let resp = read_response(&mut r);
    assert_eq!(resp.status, 200);
    let body: Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(body["sleepDuration"], 800);
    // Then the keep-alive timeout applies again.
    assert_eof(&mut r);
}

#[test]
fn the_header_timeout_does_not_apply_between_requests() {
    let (_srv, web) = web_server(|c| {
        c.servers.web.keep_alive_timeout = 5000;
        c.servers.web.header_timeout = 300;
    });
    let (mut s, mut r) = raw(web);
    s.write_all(b"GET /status HTTP/1.1\r\n\r\n").expect("write");
    assert_eq!(read_response(&mut r).status, 200);
    // Idle between requests for longer than the header timeout: a scenario, not a wait.
    std::thread::sleep(std::time::Duration::from_millis(700));
    s.write_all(b"GET /status HTTP/1.1\r\n\r\n").expect("write");
    assert_eq!(read_response(&mut r).status, 200);
}

#[test]
fn status_is_503_with_the_problem_when_connections_near_max_connections() {
    let (srv, web) = web_server(|c| c.servers.socket.max_connections = 20);
    // A fresh agent connection per request would count too: one raw connection, closed each time.
    let status = || {
        let mut conn = std::net::TcpStream::connect(web).expect("connect");
        std::io::Write::write_all(&mut conn, b"GET /status HTTP/1.0\r\n\r\n").expect("write");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut conn, &mut text).expect("read");
        let code: u16 = text[9..12].parse().expect("status code");
        let body: Value =
            serde_json::from_str(text.split("\r\n\r\n").nth(1).expect("body")).expect("json");
        (code, body)
    };
    // 17 socket clients + the status request = 18 of 20: 90 %, still healthy.
    let mut held: Vec<Client> = (0..17).map(|_| srv.client()).collect();
    let (code, body) = status();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["nodeStatus"], "Node Healthy");
    assert_eq!(body["problems"], serde_json::json!([]));
    // 19 of 20: over 90 %.
    held.push(srv.client());
    let (code, body) = status();
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["nodeStatus"], "Node Unhealthy");
    assert_eq!(
        body["problems"],
        serde_json::json!(["19 connections open of maxConnections 20 (over 90%)"])
    );
    // The status action over the socket says the same (19 sockets now, whether or not the
    // server has counted the status request's connection closed yet).
    held.push(srv.client());
    let v = held[0].request("status");
    assert_eq!(v["nodeStatus"], "Node Unhealthy");
    // Back under: healthy again (the server counts a close once it has seen our FIN).
    for mut c in held.drain(..4) {
        c.send("quit");
        c.line();
        c.expect_closed();
    }
    wait_until("healthy again", || status().0 == 200);
}
