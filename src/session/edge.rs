//! Edge mode in the session layer: handing calls to the upstream pool and answering them
//! when they finish (see upstream/ for the pool itself).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actionwire_reactor::{ConnId, JobPanic};
use serde_json::{Map, Value};

use super::{AppCore, Completion, State};
use crate::actions::{Done, Reply, ReplyFormat};
use crate::upstream::{Caller, reply_of};

/// When finished calls are answered.
#[derive(Clone, Copy)]
enum Delivery {
    Now,
    NextTurn,
}

impl State {
    /// Whether a call of `name` is forwarded (`defined_locally`: the registry has it).
    pub(super) fn forwards(&self, name: &str, defined_locally: bool) -> bool {
        self.upstream
            .as_ref()
            .is_some_and(|u| u.forwards(name, defined_locally))
    }

    /// Forwards an accepted call (its pending count already taken).
    pub(super) fn forward(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        name: &str,
        params: &Map<String, Value>,
        client: (SocketAddr, uuid::Uuid),
        format: ReplyFormat,
    ) {
        if let Some(up) = &mut self.upstream {
            up.call(core, Caller::Client(id), name, params, client, format);
        }
        // A call may end at once (refused). Its caller is in the middle of reading its
        // request (an HTTP session has its exchange taken out), so the answer goes through
        // the loop's deferred completions, next turn.
        self.deliver_finished(core, Delivery::NextTurn);
    }

    /// Runs `op` on the upstream pool (if any), then answers what it finished.
    pub(super) fn with_upstream(
        &mut self,
        core: &mut AppCore,
        op: impl FnOnce(&mut crate::upstream::Upstream, &mut AppCore),
    ) {
        if let Some(up) = &mut self.upstream {
            op(up, core);
        }
        self.deliver_finished(core, Delivery::Now);
    }

    fn deliver_finished(&mut self, core: &mut AppCore, when: Delivery) {
        let Some(up) = &mut self.upstream else {
            return;
        };
        for f in up.take_finished() {
            let seconds = f.call.started.elapsed().as_secs_f64();
            let (reply, outcome) = reply_of(f.call.format, f.result);
            match f.call.caller {
                Caller::Client(conn) => {
                    let done = Done {
                        action: f.call.label,
                        outcome,
                        seconds,
                        reply,
                        effects: None,
                    };
                    match when {
                        Delivery::Now => self.action_done(core, conn, Ok::<Done, JobPanic>(done)),
                        Delivery::NextTurn => {
                            core.defer(conn, Duration::ZERO, Completion::Action(done))
                        }
                    }
                }
                Caller::Documentation => self.upstream_documentation(reply),
            }
        }
    }

    /// Asks the backend for its documentation (`showDocumentation`, as an HTTP call).
    pub(super) fn fetch_upstream_documentation(&mut self, core: &mut AppCore) {
        self.with_upstream(core, |up, core| {
            let me = (SocketAddr::from(([127, 0, 0, 1], 0)), uuid::Uuid::nil());
            let (caller, name) = (Caller::Documentation, "showDocumentation");
            up.call(core, caller, name, &Map::new(), me, ReplyFormat::Http);
        });
    }

    /// The backend's documentation arrived: its forwarded actions join ours. Names
    /// forwarded explicitly that it does not document are listed too, as forwarded.
    fn upstream_documentation(&mut self, reply: Reply) {
        let Some(up) = &self.upstream else {
            return;
        };
        let backend = match reply {
            Reply::Http { status: 200, body } => serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|mut v| v.get_mut("documentation").map(Value::take)),
            _ => None,
        };
        let mut docs = match Value::clone(&self.api.documentation()) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let mut added = 0;
        if let Some(Value::Object(backend)) = backend {
            for (name, versions) in backend {
                if up.forwards(&name, docs.contains_key(&name)) {
                    docs.insert(name, versions);
                    added += 1;
                }
            }
        } else {
            log::warn!(
                "upstream: {} gave no documentation (showDocumentation); forwarded actions are not listed",
                up.settings.url
            );
        }
        for name in &up.settings.names {
            if !docs.contains_key(name) {
                let doc = serde_json::json!({"1": {"name": name, "version": 1,
                    "description": format!("forwarded to {}", up.settings.url)}});
                docs.insert(name.clone(), doc);
            }
        }
        log::info!(
            "upstream: {added} forwarded actions documented by {}",
            up.settings.url
        );
        let docs = Value::Object(docs);
        self.documentation_json = docs.to_string();
        if let Ok(mut d) = self.api.documentation.write() {
            *d = Arc::new(docs);
        }
    }
}
