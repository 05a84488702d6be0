//! Edge mode in the session layer: handing calls to the upstream pool and answering them
//! when they finish (see upstream/ for the pool itself).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use actionwire_reactor::{ConnId, JobPanic};
use serde_json::{Map, Value};

use super::{AppCore, State};
use crate::actions::{Done, ReplyFormat};
use crate::upstream::{Caller, reply_of};

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
        self.upstream_finished(core);
    }

    /// Answers the calls the upstream pool finished.
    pub(super) fn upstream_finished(&mut self, core: &mut AppCore) {
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
                    self.action_done(core, conn, Ok::<Done, JobPanic>(done));
                }
                Caller::Documentation => {}
            }
        }
        let _ = Ordering::Relaxed;
    }
}
