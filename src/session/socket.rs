//! The socket protocol: what the server does with each line of a socket connection.
//!
//! Bytes are scanned into lines (proto's scanner) and counted; verbs are answered on the loop
//! thread in arrival order; actions go to the worker pool, and their encoded replies are
//! written as they complete (see the protocol reference, `docs/protocol.md`). A connection's
//! state ([`SocketSession`]) and the room index live on the loop thread, so none of this
//! takes a lock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actionwire_proto::Scanner;
use actionwire_proto::encode;
use actionwire_proto::request::{self, JsonAction, Request, Verb};
use actionwire_proto::scanner::{Event, Flow};
use actionwire_proto::{LineLength, RawJson, ScanConfig};
use actionwire_reactor::{CloseReason, ConnId};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{AppCore, Completion, Session, State};
use crate::actions::{Job, MessageId, ReplyFormat};
use crate::connection::{ConnectionInfo, ConnectionState};
use crate::metrics::Refusal;
use crate::time::now_ms;

/// Files one connection may have queued and unread (each holds a file descriptor).
const MAX_QUEUED_FILES: usize = 64;

pub(super) fn socket(core: &AppCore, id: ConnId) -> Option<&SocketSession> {
    match core.session(id)? {
        Session::Socket(s) => Some(s),
        Session::Http(_) | Session::Upstream(_) => None,
    }
}

pub(super) fn socket_mut(core: &mut AppCore, id: ConnId) -> Option<&mut SocketSession> {
    match core.session_mut(id)? {
        Session::Socket(s) => Some(s),
        Session::Http(_) | Session::Upstream(_) => None,
    }
}

impl State {
    /// Bytes arrived on a socket connection.
    pub(super) fn socket_data(
        &mut self,
        scan: &ScanConfig,
        core: &mut AppCore,
        id: ConnId,
        data: &mut [u8],
    ) {
        let Some(session) = socket_mut(core, id) else {
            return;
        };
        // The scanner is taken out for the duration so lines can borrow from it while the
        // handler works on the rest of the loop state.
        let mut scanner = std::mem::take(&mut session.scanner);
        let flow = scanner.feed(scan, data, |event| self.on_scan(core, id, event));
        if let Some(session) = socket_mut(core, id) {
            session.scanner = scanner;
        }
        if flow == Flow::Pause {
            // A verb waits for the cluster: the rest waits for its answer (cluster.rs).
            core.pause_reading(id);
        }
    }
}

impl State {
    /// The lines a paused connection had sent after the verb that waited.
    pub(super) fn resume_lines(&mut self, scan: &ScanConfig, core: &mut AppCore, id: ConnId) {
        let Some(session) = socket_mut(core, id) else {
            return;
        };
        let mut scanner = std::mem::take(&mut session.scanner);
        let flow = scanner.resume(scan, |event| self.on_scan(core, id, event));
        if let Some(session) = socket_mut(core, id) {
            session.scanner = scanner;
        }
        if flow == Flow::Continue {
            core.resume_reading(id);
        }
    }
}

/// Per-connection protocol state, kept in the reactor's slab slot.
pub(crate) struct SocketSession {
    uuid: Uuid,
    peer: SocketAddr,
    connected_at: u64,
    /// Rooms, sticky params and middleware data, shared copy-on-write with the snapshots
    /// actions and hooks get; `None` until something is set (an idle connection allocates
    /// nothing for them).
    state: Option<Arc<ConnectionState>>,
    /// Connection middleware accepted it (its `destroy` hooks run at close).
    pub(super) created: bool,
    total_actions: u64,
    pending_actions: u32,
    message_count: u64,
    scanner: Scanner,
    /// Accepted on a TLS listener (for metrics).
    pub(super) tls: bool,
}

impl SocketSession {
    pub(super) fn new(peer: SocketAddr, tls: bool) -> SocketSession {
        SocketSession {
            uuid: Uuid::new_v4(),
            peer,
            connected_at: now_ms(),
            state: None,
            created: false,
            total_actions: 0,
            pending_actions: 0,
            message_count: 0,
            scanner: Scanner::default(),
            tls,
        }
    }

    pub(super) fn pending_actions_mut(&mut self) -> &mut u32 {
        &mut self.pending_actions
    }

    /// What server code sees of this connection (a reference count, no copy).
    pub(super) fn info(&self) -> ConnectionInfo {
        ConnectionInfo::new(self.uuid, self.peer, self.state.clone())
    }

    /// The state to change: copied first if a snapshot of it is still out there.
    pub(super) fn state_mut(&mut self) -> &mut ConnectionState {
        Arc::make_mut(self.state.get_or_insert_with(Default::default))
    }

    /// Rooms this connection is in, in join order.
    pub(super) fn rooms(&self) -> &[Arc<str>] {
        self.state.as_deref().map_or(&[], |s| &s.rooms)
    }

    fn params(&self) -> &[(String, String)] {
        self.state.as_deref().map_or(&[], |s| &s.params)
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn params_object(&self) -> Map<String, Value> {
        let params = self.params();
        let mut map = Map::with_capacity(params.len());
        for (k, v) in params {
            map.insert(k.clone(), Value::String(v.clone()));
        }
        map
    }

    /// Bytes held by sticky params (keys and values).
    fn param_bytes(&self) -> usize {
        self.params().iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Sets a sticky param; `false` if it is new and the connection is at its cap.
    fn set_param(&mut self, key: &str, value: &str, cap: usize) -> bool {
        if let Some(i) = self.params().iter().position(|(k, _)| k == key) {
            // A bare call sets `action` on every line, mostly to what it already holds: no
            // copy of the shared state and no allocation then.
            if self.params()[i].1 != value {
                value.clone_into(&mut self.state_mut().params[i].1);
            }
            return true;
        }
        if self.params().len() >= cap {
            return false;
        }
        self.state_mut()
            .params
            .push((key.to_owned(), value.to_owned()));
        true
    }

    pub(super) fn id_string(&self) -> String {
        self.uuid.to_string()
    }

    pub(super) fn uuid(&self) -> Uuid {
        self.uuid
    }

    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client's address from a PROXY protocol header.
    pub(super) fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
    }

    /// The protocol reference's "Counters": the request's own `params.messageId`, else the sticky one, else fresh.
    fn message_id(&self, request_params: Option<&Map<String, Value>>) -> MessageId {
        // `null` and `""` count as not given, as in actionhero.
        if let Some(v) = request_params
            .and_then(|p| p.get("messageId"))
            .filter(|v| !v.is_null() && v.as_str() != Some(""))
        {
            return MessageId::Given(v.to_string().into());
        }
        match self.param("messageId").filter(|s| !s.is_empty()) {
            Some(sticky) => MessageId::Given(Value::from(sticky).to_string().into()),
            None => MessageId::fresh(),
        }
    }
}

impl State {
    pub(super) fn on_scan(&mut self, core: &mut AppCore, id: ConnId, event: Event<'_>) -> Flow {
        match event {
            Event::Break => {
                self.bye_and_close(core, id, None, CloseReason::Quit);
                Flow::Stop
            }
            Event::TooLong { max, actual } => {
                self.metrics.lines += 1;
                if matches!(actual, LineLength::Exact(_)) {
                    core.handshake_done(id); // a whole line arrived, if an over-long one
                }
                let Some(s) = socket_mut(core, id) else {
                    return Flow::Stop;
                };
                s.message_count += 1;
                let (count, mid) = (s.message_count, s.message_id(None));
                encode::too_long(&mut self.out, max, actual, count, RawJson(mid.as_str()));
                self.flush_out(core, id);
                Flow::Continue
            }
            Event::Line(bytes) => {
                self.metrics.lines += 1;
                // A plain connection's handshake is its first complete line.
                core.handshake_done(id);
                // Checked first: `from_utf8` has an ASCII fast path `from_utf8_lossy` lacks.
                match std::str::from_utf8(bytes) {
                    Ok(line) => self.on_line(core, id, line),
                    Err(_) => self.on_line(core, id, &String::from_utf8_lossy(bytes)),
                }
            }
        }
    }

    fn on_line(&mut self, core: &mut AppCore, id: ConnId, line: &str) -> Flow {
        let Some(s) = socket_mut(core, id) else {
            return Flow::Stop;
        };
        s.message_count += 1;
        let count = s.message_count;
        match request::classify(line, self.settings.max_json_depth) {
            Request::Verb { verb, args } => {
                let mid = s.message_id(None);
                self.verb(core, id, verb, args, count, mid.as_str())
            }
            Request::Json { action, params } => {
                let mid = s.message_id(params.as_ref());
                let name = match &action {
                    JsonAction::Named(n) => Some(n.as_str()),
                    JsonAction::Missing => None,
                };
                self.action(core, id, name, params, count, mid);
                Flow::Continue
            }
            Request::TooDeep { limit } => {
                let mid = s.message_id(None);
                let text = format!("JSON nesting too deep (limit {limit})");
                self.error(core, id, &text, count, mid.as_str());
                Flow::Continue
            }
            Request::Bare { action } => {
                // Legacy: a bare call leaves its name in the sticky `action` param. This one
                // key is always stored, so the cap can be exceeded by it alone.
                let stored = s.set_param("action", action, usize::MAX);
                debug_assert!(stored);
                let mid = s.message_id(None);
                self.action(core, id, Some(action), None, count, mid);
                Flow::Continue
            }
        }
    }

    pub(super) fn flush_out(&mut self, core: &mut AppCore, id: ConnId) {
        core.send(id, &self.out);
        self.out.clear();
    }

    pub(super) fn ok<T: Serialize + ?Sized>(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        data: &T,
        count: u64,
        mid: &str,
    ) {
        encode::verb_ok(&mut self.out, data, count, RawJson(mid));
        self.flush_out(core, id);
    }

    pub(super) fn error(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        text: &str,
        count: u64,
        mid: &str,
    ) {
        encode::error(&mut self.out, text, count, RawJson(mid));
        self.flush_out(core, id);
    }

    /// The Bye line (with `reason` when the server ends the connection for a reason the
    /// client should learn), then close.
    pub(super) fn bye_and_close(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        text: Option<&str>,
        reason: CloseReason,
    ) {
        self.leave_all(core, id, true);
        encode::bye(&mut self.out, text);
        self.flush_out(core, id);
        core.close(id, reason);
    }

    /// Answers one verb (the protocol reference's "Verbs"). Returns `Stop` when the connection is closing.
    fn verb(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        verb: Verb,
        args: &str,
        count: u64,
        mid: &str,
    ) -> Flow {
        let word = request::first_word(args).0;
        log::debug!("{} verb {}", super::session_id(core, id), verb.name());
        match verb {
            Verb::Quit | Verb::Exit => {
                self.bye_and_close(core, id, None, CloseReason::Quit);
                return Flow::Stop;
            }
            Verb::ParamAdd => self.param_add(core, id, args, count, mid),
            Verb::ParamView => {
                let v = socket(core, id)
                    .and_then(|s| s.param(word))
                    .map(str::to_owned);
                self.ok(core, id, &v, count, mid);
            }
            Verb::ParamDelete => {
                if let Some(s) = socket_mut(core, id)
                    && s.param(word).is_some()
                {
                    s.state_mut().params.retain(|(k, _)| k != word);
                }
                self.ok(core, id, &Value::Null, count, mid);
            }
            Verb::ParamsView => {
                let params = socket(core, id)
                    .map(SocketSession::params_object)
                    .unwrap_or_default();
                self.ok(core, id, &params, count, mid);
            }
            Verb::ParamsDelete => {
                if let Some(s) = socket_mut(core, id)
                    && !s.params().is_empty()
                {
                    s.state_mut().params = Vec::new();
                }
                self.ok(core, id, &Value::Null, count, mid);
            }
            Verb::RoomAdd => return self.room_join(core, id, word, false, count, mid, false),
            Verb::RoomChange => return self.room_join(core, id, word, true, count, mid, false),
            Verb::RoomLeave => return self.room_leave(core, id, word, count, mid),
            Verb::RoomView => return self.room_view(core, id, word, count, mid),
            Verb::Say => self.say(core, id, args, count, mid),
            Verb::DetailsView => {
                let details = socket(core, id).map(details);
                self.ok(core, id, &details, count, mid);
            }
            Verb::Documentation => {
                encode::verb_ok_raw(
                    &mut self.out,
                    RawJson(&self.documentation_json),
                    count,
                    RawJson(mid),
                );
                self.flush_out(core, id);
            }
            Verb::File => return self.file(core, id, args, count, mid),
        }
        Flow::Continue
    }

    fn param_add(&mut self, core: &mut AppCore, id: ConnId, args: &str, count: u64, mid: &str) {
        let (key, value) = match request::param_add(args) {
            Ok(kv) => kv,
            Err(request::ParamAddError::KeyRequired) => {
                return self.error(core, id, "a param key is required", count, mid);
            }
        };
        // In edge mode the backend's actions take params this server has never heard of:
        // the backend checks them.
        if self.settings.scrub_params
            && !self.registry.accepts_param(key)
            && self.upstream.is_none()
        {
            let text = format!("param {key} is not accepted by any action");
            return self.error(core, id, &text, count, mid);
        }
        let max_bytes = self.settings.max_param_bytes;
        let fits = socket(core, id).is_some_and(|s| {
            let old = s.param(key).map_or(0, |v| key.len() + v.len());
            s.param_bytes() - old + key.len() + value.len() <= max_bytes
        });
        if !fits {
            let text = format!("params too large on this connection (limit {max_bytes} bytes)");
            return self.error(core, id, &text, count, mid);
        }
        let cap = self.settings.max_params;
        let stored = socket_mut(core, id).is_some_and(|s| s.set_param(key, value, cap));
        if stored {
            self.ok(core, id, &Value::Null, count, mid);
        } else {
            let text = format!("too many params on this connection (limit {cap})");
            self.error(core, id, &text, count, mid);
        }
    }

    /// `file`: the file is resolved, opened and checked on a worker (a slow disk never
    /// holds the loop); the connection's later lines wait for it, so replies keep their
    /// order. Its blocks are read off the loop too, by the reactor's file readers.
    fn file(&mut self, core: &mut AppCore, id: ConnId, args: &str, count: u64, mid: &str) -> Flow {
        let sticky;
        let path = if args.is_empty() {
            sticky = socket(core, id)
                .and_then(|s| s.param("file"))
                .map(str::to_owned)
                .unwrap_or_default();
            sticky.as_str()
        } else {
            args
        };
        if core.queued_files(id) >= MAX_QUEUED_FILES {
            let text =
                format!("too many files queued on this connection (limit {MAX_QUEUED_FILES})");
            self.error(core, id, &text, count, mid);
            return Flow::Continue;
        }
        let public = Arc::clone(&self.public);
        let (path, mid) = (path.to_owned(), mid.to_owned());
        core.spawn(id, move || {
            Completion::File(crate::files::Opened::open(&public, &path, count, mid))
        });
        Flow::Pause
    }

    /// The `file` verb's file, opened off the loop: queued (or `That file is not found`),
    /// then the lines that waited behind it are read.
    pub(super) fn file_opened(
        &mut self,
        scan: &ScanConfig,
        core: &mut AppCore,
        id: ConnId,
        opened: crate::files::Opened,
    ) {
        match opened.file {
            Some((file, len)) => {
                core.send_file(id, file, len);
            }
            None => self.error(
                core,
                id,
                "That file is not found",
                opened.count,
                &opened.mid,
            ),
        }
        self.resume_lines(scan, core, id);
    }

    /// Dispatches an action call (the protocol reference's "Actions"): refusals are answered here, in the order
    /// the protocol gives; an accepted call goes to the worker pool.
    fn action(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        name: Option<&str>,
        request_params: Option<Map<String, Value>>,
        count: u64,
        mid: MessageId,
    ) {
        let shutting_down = core.is_shutting_down();
        let limit = self.settings.simultaneous_actions;
        let Some(s) = socket_mut(core, id) else {
            return;
        };
        s.total_actions += 1;
        if shutting_down {
            self.metrics.refused(Refusal::ShuttingDown);
            log::debug!(
                "{} action {} refused: {}",
                super::session_id(core, id),
                name.unwrap_or("-"),
                Refusal::ShuttingDown.label()
            );
            return self.error(core, id, "the server is shutting down", count, mid.as_str());
        }
        if s.pending_actions >= limit {
            self.metrics.refused(Refusal::TooManyPending);
            log::debug!(
                "{} action {} refused: {}",
                super::session_id(core, id),
                name.unwrap_or("-"),
                Refusal::TooManyPending.label()
            );
            return self.error(
                core,
                id,
                "you have too many pending requests",
                count,
                mid.as_str(),
            );
        }
        let params = request_params.unwrap_or_else(|| s.params_object());
        let local = name.and_then(|n| self.registry.find(n, params.get("apiVersion")));
        let target = match (name, local) {
            (Some(n), l) if self.forwards(n, l.is_some()) => Target::Upstream(n),
            (_, Some(action)) => Target::Local(Arc::clone(action)),
            (_, None) => {
                self.metrics.refused(Refusal::UnknownAction);
                log::debug!(
                    "{} action {} refused: {}",
                    super::session_id(core, id),
                    name.unwrap_or("-"),
                    Refusal::UnknownAction.label()
                );
                return self.error(
                    core,
                    id,
                    "unknown action or invalid apiVersion",
                    count,
                    mid.as_str(),
                );
            }
        };
        s.pending_actions += 1;
        self.api.pending_actions.fetch_add(1, Ordering::Relaxed);
        let format = ReplyFormat::Socket { count, id: mid };
        let action = match target {
            Target::Upstream(n) => {
                let client = (s.peer(), s.uuid());
                return self.forward(core, id, n, &params, client, format);
            }
            Target::Local(action) => action,
        };
        let job = Job {
            conn: id,
            action,
            params,
            scrub: self.settings.scrub_params,
            connection: s.info(),
            api: Arc::clone(&self.api),
            format,
        };
        if job.action.runs_inline() {
            // Declared never to block: answered now, on the loop, without a hand-off.
            let done = job.run();
            self.action_done(core, id, Ok(done));
        } else {
            core.spawn(id, move || Completion::Action(job.run()));
        }
    }
}

/// Where an accepted action call goes.
enum Target<'a> {
    /// Forwarded to the upstream backend, under this name.
    Upstream(&'a str),
    /// Run here.
    Local(Arc<crate::actions::Action>),
}

/// The `detailsView` object.
fn details(s: &SocketSession) -> Value {
    let id = s.id_string();
    serde_json::json!({
        "id": id,
        "fingerprint": id,
        "remoteIP": s.peer.ip().to_string(),
        "remotePort": s.peer.port(),
        "params": s.params_object(),
        "connectedAt": s.connected_at,
        "rooms": s.rooms().iter().map(|r| &**r).collect::<Vec<&str>>(),
        "totalActions": s.total_actions,
        "pendingActions": s.pending_actions,
    })
}
