//! The HTTP/1.1 front door: the same reactor, output queues, timers and backpressure as the
//! socket protocol, with requests parsed by `httparse`.
//!
//! Routes: `GET|POST /api/<action>` (query string, JSON or form body) run the action on the
//! worker pool; `GET /status` (200, or 503 while shutting down) and `GET /metrics`
//! (Prometheus text) are answered on the loop. Keep-alive and pipelining are supported:
//! answers go out in request order, because while a request's action runs, later requests
//! wait in the buffer and reading from the connection is paused. Bodies need a
//! `Content-Length`: a chunked body is answered 411. Limits answer 431 (headers) and 413
//! (body); a malformed request gets 400 and the connection is closed.

use std::borrow::Cow;
use std::fmt::Write as _;

use actionwire_reactor::{CloseReason, ConnId};
use serde_json::{Map, Value};

use actionwire_proto::http::{Head, Parsed, parse, reason};

use super::{AppCore, Completion, Session, State};
use crate::actions::{ConnectionInfo, Job, ReplyFormat};
use crate::metrics::{Gauges, Refusal};
use crate::process::ProcessStats;

/// Limits of the web listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WebSettings {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
}

/// An HTTP connection's state.
pub(crate) struct HttpSession {
    uuid: uuid::Uuid,
    peer: std::net::SocketAddr,
    total_actions: u64,
    /// Actions running for this connection (at most one: later requests wait).
    pub(super) pending_actions: u32,
    /// The request exchange, taken out while it is worked on.
    conn: HttpConn,
}

impl HttpSession {
    pub(super) fn uuid(&self) -> uuid::Uuid {
        self.uuid
    }

    pub(super) fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }

    /// The client's address from a PROXY protocol header.
    pub(super) fn set_peer(&mut self, peer: std::net::SocketAddr) {
        self.peer = peer;
    }

    pub(super) fn new(peer: std::net::SocketAddr) -> HttpSession {
        HttpSession {
            uuid: uuid::Uuid::new_v4(),
            peer,
            total_actions: 0,
            pending_actions: 0,
            conn: HttpConn::default(),
        }
    }
}

fn http_mut(core: &mut AppCore, id: ConnId) -> Option<&mut HttpSession> {
    match core.session_mut(id)? {
        Session::Http(h) => Some(h),
        Session::Socket(_) | Session::Upstream(_) => None,
    }
}

/// Requests received and the one being answered.
#[derive(Debug, Default)]
struct HttpConn {
    /// Bytes received and not yet consumed by a complete request.
    input: Vec<u8>,
    /// A request's action is running: `Some(keep_alive)` of that request.
    waiting: Option<bool>,
    /// `100 Continue` was sent for the request whose body is awaited.
    continue_sent: bool,
}

/// One response to queue.
struct Answer<'a> {
    status: u16,
    content_type: &'static str,
    body: Cow<'a, [u8]>,
    keep_alive: bool,
    /// HEAD: the headers of the GET answer, without its body.
    head_only: bool,
    /// The `Allow` header of a 405.
    allow: Option<&'static str>,
}

impl<'a> Answer<'a> {
    fn json(status: u16, body: impl Into<Cow<'a, [u8]>>, keep_alive: bool) -> Answer<'a> {
        Answer {
            status,
            content_type: "application/json",
            body: body.into(),
            keep_alive,
            head_only: false,
            allow: None,
        }
    }

    /// `{"error":text}`.
    fn error(status: u16, text: &str, keep_alive: bool) -> Answer<'a> {
        let mut out = Vec::new();
        actionwire_proto::encode::action_object(&mut out, &Map::new(), Some(text));
        Answer::json(status, out, keep_alive)
    }
}

/// Query string or form body → params (later keys win).
fn form_params(into: &mut Map<String, Value>, bytes: &[u8]) {
    for (k, v) in form_urlencoded::parse(bytes) {
        into.insert(k.into_owned(), Value::String(v.into_owned()));
    }
}

/// Whether the connection stays open after this answer: as the client asked, except that
/// during shutdown only requests already received are answered (so `/status` can report 503
/// to a checker that pipelined it), the last with `Connection: close`.
fn keep_open(core: &AppCore, wanted: bool, conn: &HttpConn) -> bool {
    wanted && (!core.is_shutting_down() || !conn.input.is_empty())
}

impl State {
    /// Bytes arrived on an HTTP connection.
    pub(super) fn http_data(&mut self, core: &mut AppCore, id: ConnId, data: &[u8]) {
        let Some(mut conn) = http_mut(core, id).map(|h| std::mem::take(&mut h.conn)) else {
            return;
        };
        conn.input.extend_from_slice(data);
        self.http_process(core, id, &mut conn);
        if let Some(h) = http_mut(core, id) {
            h.conn = conn;
        }
    }

    /// An action for an HTTP request finished: answer it, then go on with what waited.
    pub(super) fn http_action_done(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        status: u16,
        body: &[u8],
    ) {
        let Some(mut conn) = http_mut(core, id).map(|h| std::mem::take(&mut h.conn)) else {
            return;
        };
        let wanted = conn.waiting.take().unwrap_or(false);
        let keep_alive = keep_open(core, wanted, &conn);
        self.http_send(core, id, Answer::json(status, body, keep_alive));
        core.touch(id); // the keep-alive timeout counts from the response
        if core.is_open(id) {
            core.resume_reading(id);
            self.http_process(core, id, &mut conn);
        }
        if let Some(h) = http_mut(core, id) {
            h.conn = conn;
        }
    }

    /// Answers every complete request in the buffer, in order, until one waits for a worker.
    fn http_process(&mut self, core: &mut AppCore, id: ConnId, conn: &mut HttpConn) {
        let web = self.settings.web;
        while conn.waiting.is_none() && core.is_open(id) && !conn.input.is_empty() {
            let refuse = |status, text| Answer::error(status, text, false);
            let (head, head_len) = match parse(&conn.input, web.max_header_bytes) {
                // A request has begun: it must be complete within `headerTimeout`.
                Parsed::Partial => return core.restart_handshake(id),
                Parsed::Refuse(status, text) => {
                    conn.input = Vec::new();
                    return self.http_send(core, id, refuse(status, text));
                }
                Parsed::Head(head, len) => (head, len),
            };
            if head.chunked {
                conn.input = Vec::new();
                let text = "a Content-Length body is required (chunked bodies are not supported)";
                return self.http_send(core, id, refuse(411, text));
            }
            if head.content_length > web.max_body_bytes {
                conn.input = Vec::new();
                return self.http_send(core, id, refuse(413, "request body too large"));
            }
            let total = head_len + head.content_length;
            if conn.input.len() < total {
                core.restart_handshake(id);
                if head.expect_continue && !conn.continue_sent {
                    conn.continue_sent = true;
                    core.send(id, b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                return;
            }
            let body: Vec<u8> = conn.input[head_len..total].to_vec();
            conn.input.drain(..total);
            core.handshake_done(id); // the request is complete
            conn.continue_sent = false;
            if conn.input.is_empty() {
                conn.input = Vec::new(); // idle connections hold no buffers
            }
            let keep_alive = keep_open(core, head.keep_alive, conn);
            if let Some(answer) = self.http_route(core, id, conn, &head, &body, keep_alive) {
                self.http_send(core, id, answer);
            }
        }
    }

    /// The answer to one request, or `None` when an action now runs for it.
    fn http_route(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        conn: &mut HttpConn,
        head: &Head,
        body: &[u8],
        keep_alive: bool,
    ) -> Option<Answer<'static>> {
        let (path, query) = head.path.split_once('?').unwrap_or((&head.path, ""));
        let method = head.method.as_str();
        let head_only = method == "HEAD";
        let not_allowed = |allow| Answer {
            allow: Some(allow),
            ..Answer::error(405, "method not allowed", keep_alive)
        };
        let answer = match path {
            "/status" | "/metrics" if !matches!(method, "GET" | "HEAD") => not_allowed("GET, HEAD"),
            "/status" => {
                let fields = crate::builtin::status_fields(&self.api);
                // One health reading: the status code follows the `nodeStatus` just computed.
                let serving = fields.get("nodeStatus").and_then(|v| v.as_str())
                    == Some(crate::health::HEALTHY);
                let status = if serving && !core.is_shutting_down() {
                    200
                } else {
                    503
                };
                let body = serde_json::to_vec(&fields).unwrap_or_default();
                Answer::json(status, body, keep_alive)
            }
            "/metrics" => {
                let gauges = Gauges {
                    pending_actions: self.api.pending_actions(),
                    rooms: self.rooms.len(),
                    room_members: self.rooms.members_total(),
                    worker_queue: core.jobs_in_flight(),
                    process: ProcessStats::read(),
                    started_unix: self.api.started_unix,
                    slow_hooks: self.hooks.stats.slow,
                    hook_panics: self.hooks.stats.panics,
                    upstream: self.upstream.as_ref().map(|u| u.gauges()),
                    cluster: self
                        .cluster
                        .as_ref()
                        .map(|c| std::sync::Arc::clone(&c.counters)),
                };
                let text = self.metrics.render(core.stats(), &gauges);
                Answer {
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    ..Answer::json(200, text.into_bytes(), keep_alive)
                }
            }
            p if p.starts_with("/api/") => {
                if !matches!(method, "GET" | "POST") {
                    return Some(not_allowed("GET, POST"));
                }
                return self.http_action(core, id, conn, &p[5..], query, head, body, keep_alive);
            }
            _ => Answer::error(404, "not found", keep_alive),
        };
        Some(Answer {
            head_only,
            ..answer
        })
    }

    /// Runs an action for a request: `None` once it is on a worker, else the refusal.
    #[allow(clippy::too_many_arguments)]
    fn http_action(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        conn: &mut HttpConn,
        name: &str,
        query: &str,
        head: &Head,
        body: &[u8],
        keep_alive: bool,
    ) -> Option<Answer<'static>> {
        let mut params = Map::new();
        form_params(&mut params, query.as_bytes());
        if head.method == "POST" && !body.is_empty() {
            if head.content_type.starts_with("application/json") {
                let text = String::from_utf8_lossy(body);
                let limit = self.settings.max_json_depth;
                if actionwire_proto::request::json_depth(&text, limit) > limit {
                    let msg = format!("JSON nesting too deep (limit {limit})");
                    return Some(Answer::error(400, &msg, keep_alive));
                }
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(obj)) => params.extend(obj),
                    _ => {
                        let msg = "the request body is not a JSON object";
                        return Some(Answer::error(400, msg, keep_alive));
                    }
                }
            } else if head
                .content_type
                .starts_with("application/x-www-form-urlencoded")
            {
                form_params(&mut params, body);
            }
        }
        if core.is_shutting_down() {
            self.metrics.refused(Refusal::ShuttingDown);
            return Some(Answer::error(503, "the server is shutting down", false));
        }
        let local = self.registry.find(name, params.get("apiVersion")).cloned();
        let forwarded = self.forwards(name, local.is_some());
        if !forwarded && local.is_none() {
            self.metrics.refused(Refusal::UnknownAction);
            let msg = "unknown action or invalid apiVersion";
            return Some(Answer::error(404, msg, keep_alive));
        }
        let s = http_mut(core, id)?;
        s.total_actions += 1;
        s.pending_actions += 1;
        let (uuid, peer) = (s.uuid, s.peer);
        self.api
            .pending_actions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Later requests wait for this answer: order is kept, and input stops piling up.
        conn.waiting = Some(head.keep_alive);
        core.pause_reading(id);
        match local {
            Some(action) if !forwarded => {
                let job = Job {
                    conn: id,
                    action,
                    params,
                    scrub: self.settings.scrub_params,
                    // HTTP requests are stateless: no rooms, params or data.
                    connection: ConnectionInfo::new(uuid, peer, None),
                    api: std::sync::Arc::clone(&self.api),
                    format: ReplyFormat::Http,
                };
                core.spawn(id, move || Completion::Action(job.run()));
            }
            _ => self.forward(core, id, name, &params, (peer, uuid), ReplyFormat::Http),
        }
        None
    }

    /// Queues one response; without keep-alive, the connection closes after it.
    fn http_send(&mut self, core: &mut AppCore, id: ConnId, a: Answer<'_>) {
        let close = !a.keep_alive;
        self.http_write(core, id, a);
        if close {
            core.close(id, CloseReason::Quit);
        }
    }

    /// A request did not arrive completely within `headerTimeout`: answer 408 if any of it
    /// came (a connection that never sent a byte is closed without a word, as web servers
    /// do). The caller closes the connection.
    pub(super) fn http_request_timeout(&mut self, core: &mut AppCore, id: ConnId) {
        let started = http_mut(core, id).is_some_and(|h| !h.conn.input.is_empty());
        if started {
            let answer = Answer::error(408, "the request did not arrive in time", false);
            self.http_write(core, id, answer);
        }
    }

    /// Queues one response and counts it.
    fn http_write(&mut self, core: &mut AppCore, id: ConnId, a: Answer<'_>) {
        let mut head = String::with_capacity(160);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            a.status,
            reason(a.status),
            a.content_type,
            a.body.len(),
            if a.keep_alive { "keep-alive" } else { "close" },
        );
        if let Some(allow) = a.allow {
            let _ = write!(head, "Allow: {allow}\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if !a.head_only {
            out.extend_from_slice(&a.body);
        }
        core.send_owned(id, out);
        *self.metrics.http_requests.entry(a.status).or_default() += 1;
    }
}
