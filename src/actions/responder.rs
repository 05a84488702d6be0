//! Actions that answer later: [`Responder`], a handle an action takes
//! ([`ActionData::responder`](super::ActionData::responder)) to send its reply from any
//! thread once its work is done, holding no worker meanwhile.
//!
//! The action and the responder meet in a small state machine (`Handoff`), because either
//! may finish first: the responder can answer from another thread before the action has
//! even returned. Whoever comes second encodes the reply; a reply that arrives after the
//! action itself returned goes to the loop through the reactor's completer, which drops
//! it if the connection has closed meanwhile. A responder dropped without an answer
//! answers with an error, so a call never hangs.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actionwire_reactor::{Completer, ConnId};
use serde_json::{Map, Value};

use super::{Done, Reply, ReplyFormat, encode_reply};
use crate::metrics::Outcome;

/// Where the call is, for whoever encodes the reply.
pub(crate) struct Call {
    pub conn: ConnId,
    pub action: Arc<str>,
    pub format: ReplyFormat,
    pub started: Instant,
    pub completer: Completer<crate::session::Completion>,
}

/// The meeting point of an action that returned and its responder.
enum Handoff {
    /// The action is still running; nobody has answered.
    Running,
    /// The action returned; the responder has not answered yet.
    Waiting(Call),
    /// The responder answered before the action returned.
    Answered(Result<Map<String, Value>, String>),
    /// The reply is out (or the action failed on its own and the responder is ignored).
    Closed,
}

fn lock(m: &Mutex<Handoff>) -> MutexGuard<'_, Handoff> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shared by the action's job and its responder.
pub(crate) struct Shared {
    state: Mutex<Handoff>,
    action: Arc<str>,
}

impl Shared {
    pub(crate) fn new(action: Arc<str>) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(Handoff::Running),
            action,
        })
    }

    /// The action returned successfully: its reply now if the responder already answered,
    /// else `Reply::Deferred` and the responder sends it.
    pub(crate) fn action_returned(&self, call: Call) -> Reply {
        let mut state = lock(&self.state);
        match std::mem::replace(&mut *state, Handoff::Closed) {
            Handoff::Running => {
                *state = Handoff::Waiting(call);
                Reply::Deferred
            }
            Handoff::Answered(result) => encode(call.format, result).0,
            Handoff::Waiting(_) | Handoff::Closed => {
                debug_assert!(false, "an action returns once");
                Reply::Deferred
            }
        }
    }

    /// The action failed (or panicked) after taking a responder: its own error is the
    /// reply, and the responder's answer will be ignored.
    pub(crate) fn action_failed(&self) {
        *lock(&self.state) = Handoff::Closed;
    }

    fn answer(&self, result: Result<Map<String, Value>, String>) {
        let mut state = lock(&self.state);
        match std::mem::replace(&mut *state, Handoff::Closed) {
            Handoff::Running => *state = Handoff::Answered(result),
            Handoff::Waiting(call) => {
                drop(state);
                let (reply, outcome) = encode(call.format, result);
                let done = Done {
                    action: call.action,
                    outcome,
                    seconds: call.started.elapsed().as_secs_f64(),
                    reply,
                    effects: None,
                };
                call.completer
                    .complete(call.conn, crate::session::Completion::Action(done));
            }
            Handoff::Answered(_) | Handoff::Closed => {
                log::debug!("a late answer of action `{}` ignored", self.action);
            }
        }
    }
}

fn encode(format: ReplyFormat, result: Result<Map<String, Value>, String>) -> (Reply, Outcome) {
    match result {
        Ok(response) => (
            encode_reply(format, &response, None, Outcome::Ok),
            Outcome::Ok,
        ),
        Err(text) => (
            encode_reply(format, &Map::new(), Some(&text), Outcome::Error),
            Outcome::Error,
        ),
    }
}

/// Sends an action's reply later, from any thread (a callback, a thread of your own, a
/// timer), without holding a worker meanwhile. The call counts as pending (against
/// `simultaneousActions`, and at shutdown) until it answers. Dropping it unanswered answers
/// `action <name> did not answer`. An answer for a connection that has closed meanwhile is
/// dropped.
#[must_use = "a responder dropped at once answers with an error"]
pub struct Responder {
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("action", &self.shared.as_ref().map(|s| &*s.action))
            .finish()
    }
}

impl Responder {
    pub(crate) fn new(shared: Arc<Shared>) -> Responder {
        Responder {
            shared: Some(shared),
        }
    }

    /// Answers: `Ok(fields)` are the reply's fields (in order), `Err(text)` its `error`.
    pub fn respond(mut self, result: Result<Map<String, Value>, String>) {
        if let Some(shared) = self.shared.take() {
            shared.answer(result);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let text = format!("action {} did not answer", shared.action);
            shared.answer(Err(text));
        }
    }
}
