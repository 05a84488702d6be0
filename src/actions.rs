//! Actions: the public API for defining them, their registry, input processing, and the job
//! that runs one on a worker and encodes its reply.
//!
//! An action declares its inputs; before it runs, each input gets its default, formatter and
//! validator in order, and a missing required input wins over any validator message
//! (the protocol reference, `docs/protocol.md`, "Actions"). A panic inside an action is
//! caught (on its worker, or on the loop for an inline action) and becomes an error reply.
//! [`Api`] (in `api.rs`) is what actions and server code reach beyond their call.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actionwire_proto::{RawJson, encode};
use serde_json::{Map, Value, json};

pub use crate::connection::ConnectionInfo;
use crate::connection::DataChange;
use crate::hooks::{ActionMiddleware, ServerCommand};
use crate::metrics::Outcome;

mod numbers;
mod registry;
mod responder;
pub use crate::api::Api;
pub use numbers::{scalar_as_text, whole_number};
pub use registry::{Registry, RegistryError};
pub use responder::Responder;

/// Params every action accepts, whatever its inputs.
pub const SAFE_PARAMS: [&str; 5] = ["action", "apiVersion", "callback", "file", "messageId"];

type RunFn = dyn Fn(&mut ActionData) -> Result<(), String> + Send + Sync;
type FormatFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync;
type ValidateFn = dyn Fn(&Value) -> Result<(), String> + Send + Sync;

/// A declared input of an action.
#[derive(Clone)]
pub struct Input {
    name: String,
    description: String,
    required: bool,
    default: Option<Value>,
    formatter: Option<Arc<FormatFn>>,
    validator: Option<Arc<ValidateFn>>,
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Input")
            .field("name", &self.name)
            .field("required", &self.required)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl Input {
    pub fn new(name: impl Into<String>) -> Input {
        Input {
            name: name.into(),
            description: String::new(),
            required: false,
            default: None,
            formatter: None,
            validator: None,
        }
    }

    /// What the input is for, shown by `documentation`.
    pub fn description(mut self, d: impl Into<String>) -> Input {
        self.description = d.into();
        self
    }

    /// The action is refused with `<name> is a required parameter for this action` when
    /// this input is absent or empty (after its default).
    pub fn required(mut self) -> Input {
        self.required = true;
        self
    }

    /// Used when the input is absent or empty.
    pub fn default_value(mut self, v: Value) -> Input {
        self.default = Some(v);
        self
    }

    /// Transforms a present value; an `Err` refuses the action with its text.
    pub fn formatter(
        mut self,
        f: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Input {
        self.formatter = Some(Arc::new(f));
        self
    }

    /// Checks a present value; an `Err` refuses the action with its text.
    pub fn validator(
        mut self,
        f: impl Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
    ) -> Input {
        self.validator = Some(Arc::new(f));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An action: a name, its inputs and documentation, and the code that runs it.
#[derive(Clone)]
pub struct Action {
    name: Arc<str>,
    version: u32,
    description: String,
    inputs: Vec<Input>,
    output_example: Value,
    run: Arc<RunFn>,
    /// Names of the (non-global) action middleware this action asked for.
    middleware: Vec<String>,
    /// Global and named middleware, in the order they run (resolved by the registry).
    chain: Arc<[Arc<ActionMiddleware>]>,
    /// Declared never to block ([`Action::inline`]).
    inline: bool,
    /// Runs on the loop: inline, and so is all its middleware (resolved by the registry).
    runs_inline: bool,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Action")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

impl Action {
    /// `run` fills `data.response`; an `Err` is sent as the reply's `error`.
    pub fn new(
        name: impl Into<String>,
        run: impl Fn(&mut ActionData) -> Result<(), String> + Send + Sync + 'static,
    ) -> Action {
        Action {
            name: Arc::from(name.into()),
            version: 1,
            description: String::new(),
            inputs: Vec::new(),
            output_example: json!({}),
            run: Arc::new(run),
            middleware: Vec::new(),
            chain: Arc::new([]),
            inline: false,
            runs_inline: false,
        }
    }

    /// Declares that the action never blocks (no I/O, no locks held for long, no sleeping:
    /// it computes from its params and memory), so a socket call runs it at once on the
    /// event loop thread instead of handing it to a worker: no thread switch, no second loop
    /// turn. Every other client waits while it runs, so keep it to microseconds. It still
    /// runs on a worker when any of its middleware is not inline too, and for HTTP requests.
    /// A panic is an error reply as on a worker.
    pub fn inline(mut self) -> Action {
        self.inline = true;
        self
    }

    /// Whether calls run on the event loop (see [`Action::inline`]).
    pub fn runs_inline(&self) -> bool {
        self.runs_inline
    }

    /// Runs the action middleware of that name (added with
    /// [`crate::ServerBuilder::action_middleware`]) around this action, in priority order
    /// with the global ones. A name no middleware has stops the server from starting.
    pub fn middleware(mut self, name: impl Into<String>) -> Action {
        self.middleware.push(name.into());
        self
    }

    pub fn description(mut self, d: impl Into<String>) -> Action {
        self.description = d.into();
        self
    }

    /// The action's version (1 by default). Several versions of one name may be registered;
    /// a call's `apiVersion` param picks one, the highest when it is not given.
    pub fn version(mut self, v: u32) -> Action {
        self.version = v;
        self
    }

    pub fn input(mut self, input: Input) -> Action {
        self.inputs.push(input);
        self
    }

    pub fn output_example(mut self, v: Value) -> Action {
        self.output_example = v;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Applies defaults, formatters and validators in declaration order. The first missing
    /// required input wins over any validator message.
    fn prepare(&self, params: &mut Map<String, Value>) -> Result<(), String> {
        let mut missing: Option<&str> = None;
        let mut invalid: Option<String> = None;
        for input in &self.inputs {
            if is_missing(params.get(&input.name))
                && let Some(d) = &input.default
            {
                params.insert(input.name.clone(), d.clone());
            }
            if !is_missing(params.get(&input.name)) {
                if let Some(fmt) = &input.formatter {
                    let v = params.remove(&input.name).unwrap_or(Value::Null);
                    match fmt(v.clone()) {
                        Ok(nv) => {
                            params.insert(input.name.clone(), nv);
                        }
                        Err(msg) => {
                            params.insert(input.name.clone(), v);
                            invalid.get_or_insert(msg);
                        }
                    }
                }
                if let (Some(val), Some(v)) = (&input.validator, params.get(&input.name))
                    && let Err(msg) = val(v)
                {
                    invalid.get_or_insert(msg);
                }
            }
            if input.required && is_missing(params.get(&input.name)) {
                missing.get_or_insert(&input.name);
            }
        }
        match (missing, invalid) {
            (Some(name), _) => Err(format!("{name} is a required parameter for this action")),
            (None, Some(msg)) => Err(msg),
            (None, None) => Ok(()),
        }
    }

    fn documentation(&self) -> Value {
        let mut inputs = Map::new();
        for i in &self.inputs {
            let mut doc = Map::new();
            if !i.description.is_empty() {
                doc.insert("description".into(), Value::String(i.description.clone()));
            }
            doc.insert("required".into(), Value::Bool(i.required));
            if let Some(d) = &i.default {
                doc.insert("default".into(), d.clone());
            }
            inputs.insert(i.name.clone(), Value::Object(doc));
        }
        json!({
            "name": &*self.name,
            "version": self.version,
            "description": self.description,
            "inputs": inputs,
            "outputExample": self.output_example,
        })
    }
}

/// Absent, `null` or `""`.
fn is_missing(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// A request's `messageId` as JSON text, ready to be written into its reply. A fresh id (the
/// common case) is formatted in place, without an allocation.
#[derive(Debug, Clone)]
pub(crate) enum MessageId {
    Fresh([u8; 38]),
    Given(Box<str>),
}

impl MessageId {
    pub(crate) fn fresh() -> MessageId {
        let mut b = [b'"'; 38];
        uuid::Uuid::new_v4()
            .hyphenated()
            .encode_lower(&mut b[1..37]);
        MessageId::Fresh(b)
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Quotes around a lower-case hyphenated UUID: always ASCII.
            MessageId::Fresh(b) => std::str::from_utf8(b).unwrap_or("null"),
            MessageId::Given(s) => s,
        }
    }
}

type FinishFn = dyn FnOnce(&mut Map<String, Value>) + Send;

/// What an action works with: its params in, its response out.
pub struct ActionData {
    /// The action's name (middleware that runs for several actions tells them apart).
    pub action: Arc<str>,
    /// The action's version.
    pub version: u32,
    /// The request's params after defaults, formatters and validators.
    pub params: Map<String, Value>,
    /// Fields of the reply, in insertion order.
    pub response: Map<String, Value>,
    /// The caller, as it was when the call started (plus this call's own data changes).
    pub connection: ConnectionInfo,
    pub api: Arc<Api>,
    later: Option<(Duration, Box<FinishFn>)>,
    effects: Effects,
    /// Set once the action took a [`Responder`].
    deferred: Option<Arc<responder::Shared>>,
}

/// What an action asked the loop to do besides answering: applied before its reply is
/// written, in the order asked.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub data: Vec<DataChange>,
    pub commands: Vec<ServerCommand>,
}

impl Effects {
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty() && self.commands.is_empty()
    }
}

impl ActionData {
    /// Sets a value on the caller's connection, visible to its later actions and hooks
    /// (and at once in `self.connection`). Socket connections only: an HTTP request has no
    /// connection to keep it on.
    pub fn set_connection_data(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        self.connection
            .data_mut()
            .insert(key.clone(), value.clone());
        self.effects.data.push(DataChange::Set(key, value));
    }

    /// Removes a value from the caller's connection.
    pub fn remove_connection_data(&mut self, key: &str) {
        self.connection.data_mut().shift_remove(key);
        self.effects.data.push(DataChange::Remove(key.to_owned()));
    }

    /// Answers later: the reply is what the returned [`Responder`] sends, from any thread,
    /// when the work is done (the action returns `Ok(())` at once and holds no worker
    /// meanwhile). If the action returns an `Err` instead, that is the reply and the
    /// responder is ignored. A responder dropped without answering answers with an error.
    pub fn responder(&mut self) -> Responder {
        let shared = self
            .deferred
            .get_or_insert_with(|| responder::Shared::new(Arc::clone(&self.action)));
        Responder::new(Arc::clone(shared))
    }

    /// Asks the loop to broadcast, send, create or destroy a room: it happens before this
    /// action's reply is written (from outside an action, use [`Api::command`]).
    pub fn command(&mut self, command: ServerCommand) {
        self.effects.commands.push(command);
    }

    /// Answers after `delay` without holding a worker thread meanwhile: when the time comes,
    /// `finish` completes the response on the event loop (keep it short: it must not block),
    /// and the reply is sent. For actions that wait on a clock, like `sleepTest`.
    pub fn respond_after(
        &mut self,
        delay: Duration,
        finish: impl FnOnce(&mut Map<String, Value>) + Send + 'static,
    ) {
        self.later = Some((delay, Box::new(finish)));
    }
}

/// How a job's reply is framed.
pub(crate) enum ReplyFormat {
    /// A socket protocol line with its counters.
    Socket { count: u64, id: MessageId },
    /// An HTTP response body; the status follows the outcome.
    Http,
}

/// A job's encoded reply.
pub(crate) enum Reply {
    Socket(Vec<u8>),
    Http {
        status: u16,
        body: Vec<u8>,
    },
    /// The action asked to answer after a delay ([`ActionData::respond_after`]).
    Later(Box<Later>),
    /// A [`Responder`] will answer; nothing to send yet.
    Deferred,
    /// A `Later` whose time has come.
    Due(Box<Later>),
}

/// A response waiting for its time.
pub(crate) struct Later {
    pub delay: Duration,
    finish: Box<FinishFn>,
    response: Map<String, Value>,
    format: ReplyFormat,
}

impl Later {
    /// Completes the response (on the loop; a panic becomes an error reply) and encodes it.
    pub(crate) fn finish(self, action: &str) -> Reply {
        let Later {
            finish,
            mut response,
            format,
            ..
        } = self;
        match catch_unwind(AssertUnwindSafe(|| finish(&mut response))) {
            Ok(()) => encode_reply(format, &response, None, Outcome::Ok),
            Err(_) => {
                log::warn!("action `{action}` panicked completing its delayed response");
                let text = format!("internal error in action {action}");
                encode_reply(format, &Map::new(), Some(&text), Outcome::Panic)
            }
        }
    }
}

/// Encodes a result in the request's format (socket line with counters, or HTTP body).
fn encode_reply(
    format: ReplyFormat,
    response: &Map<String, Value>,
    error: Option<&str>,
    outcome: Outcome,
) -> Reply {
    // Most replies (a few fields, the counters, a UUID messageId) fit in 256 bytes: one
    // allocation, no regrowth.
    let mut out = Vec::with_capacity(256);
    match format {
        ReplyFormat::Socket { count, id } => {
            encode::action_reply(&mut out, response, error, count, RawJson(id.as_str()));
            Reply::Socket(out)
        }
        ReplyFormat::Http => {
            encode::action_object(&mut out, response, error);
            let status = match outcome {
                Outcome::Ok => 200,
                Outcome::InvalidInput => 422,
                Outcome::Error | Outcome::Panic => 500,
            };
            Reply::Http { status, body: out }
        }
    }
}

/// What comes back from a worker: the reply, what the action asked the loop to do, and
/// what the metrics need.
pub(crate) struct Done {
    pub action: Arc<str>,
    pub outcome: Outcome,
    pub seconds: f64,
    pub reply: Reply,
    /// `None` when the action asked for nothing (the common case: no allocation).
    pub effects: Option<Box<Effects>>,
}

/// Everything a worker needs to run one action and encode its reply.
pub(crate) struct Job {
    /// The caller's endpoint (where a [`Responder`]'s answer goes).
    pub conn: actionwire_reactor::ConnId,
    pub action: Arc<Action>,
    pub params: Map<String, Value>,
    pub scrub: bool,
    pub connection: ConnectionInfo,
    pub api: Arc<Api>,
    pub format: ReplyFormat,
}

impl Job {
    /// Runs on a worker: inputs, the action itself (panics caught), then the encoded reply.
    pub(crate) fn run(self) -> Done {
        let Job {
            conn,
            action,
            mut params,
            scrub,
            connection,
            api,
            format,
        } = self;
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            if let Err(msg) = action.prepare(&mut params) {
                return (
                    Map::new(),
                    Some(msg),
                    Outcome::InvalidInput,
                    None,
                    None,
                    None,
                );
            }
            if scrub {
                params.retain(|k, _| {
                    SAFE_PARAMS.contains(&k.as_str()) || action.inputs.iter().any(|i| i.name == *k)
                });
            }
            let mut data = ActionData {
                action: Arc::clone(&action.name),
                version: action.version,
                params,
                // Room for a few fields up front: no regrowth while the action fills it.
                response: Map::with_capacity(4),
                connection,
                api,
                later: None,
                effects: Effects::default(),
                deferred: None,
            };
            let err = run_with_middleware(&action, &mut data).err();
            let outcome = if err.is_some() {
                Outcome::Error
            } else {
                Outcome::Ok
            };
            let effects = (!data.effects.is_empty()).then(|| Box::new(data.effects));
            let deferred = data.deferred.map(|d| (d, Arc::clone(&data.api)));
            (data.response, err, outcome, data.later, effects, deferred)
        }));
        let (response, error, outcome, later, effects, deferred) =
            result.unwrap_or_else(|payload| {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::warn!("action `{}` panicked: {msg}", action.name);
                (
                    Map::new(),
                    Some(format!("internal error in action {}", action.name)),
                    Outcome::Panic,
                    None,
                    None,
                    None,
                )
            });
        let seconds = started.elapsed().as_secs_f64();
        let reply = match (later, deferred) {
            (_, Some((shared, api))) if error.is_none() => match api.completer.get() {
                Some(completer) => shared.action_returned(responder::Call {
                    conn,
                    action: Arc::clone(&action.name),
                    format,
                    started,
                    completer: completer.clone(),
                }),
                // Only before the server is built, which runs no actions.
                None => {
                    shared.action_failed();
                    let text = format!("internal error in action {}", action.name);
                    encode_reply(format, &Map::new(), Some(&text), Outcome::Error)
                }
            },
            (_, Some((shared, _))) => {
                shared.action_failed();
                encode_reply(format, &response, error.as_deref(), outcome)
            }
            (Some((delay, finish)), None) if error.is_none() => Reply::Later(Box::new(Later {
                delay,
                finish,
                response,
                format,
            })),
            _ => encode_reply(format, &response, error.as_deref(), outcome),
        };
        Done {
            action: Arc::clone(&action.name),
            outcome,
            seconds,
            reply,
            effects,
        }
    }
}

/// `pre` middleware in order (the first refusal stops the call), the action, then `post`
/// middleware in order when it succeeded.
fn run_with_middleware(action: &Action, data: &mut ActionData) -> Result<(), String> {
    for m in action.chain.iter() {
        m.run_pre(data)?;
    }
    (action.run)(data)?;
    for m in action.chain.iter() {
        m.run_post(data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_letters(v: &Value) -> Result<(), String> {
        match v.as_str() {
            Some(s) if s.chars().count() >= 3 => Ok(()),
            _ => Err("inputs should be at least 3 letters long".into()),
        }
    }

    fn action() -> Action {
        Action::new("t", |_| Ok(()))
            .input(Input::new("a").required().validator(three_letters))
            .input(Input::new("b").required())
            .input(Input::new("c").default_value(json!(7)).formatter(|v| {
                v.as_u64()
                    .map(|n| json!(n * 2))
                    .ok_or_else(|| "c must be a number".to_string())
            }))
    }

    #[test]
    fn required_beats_validator_and_first_missing_wins() {
        let a = action();
        let mut p = Map::new();
        p.insert("a".into(), json!("x"));
        assert_eq!(
            a.prepare(&mut p),
            Err("b is a required parameter for this action".into())
        );
        let mut p = Map::new();
        p.insert("a".into(), json!(""));
        assert_eq!(
            a.prepare(&mut p),
            Err("a is a required parameter for this action".into())
        );
        let mut p = Map::new();
        p.insert("a".into(), json!("x"));
        p.insert("b".into(), json!("y"));
        assert_eq!(
            a.prepare(&mut p),
            Err("inputs should be at least 3 letters long".into())
        );
    }

    #[test]
    fn default_then_formatter() {
        let a = action();
        let mut p = Map::new();
        p.insert("a".into(), json!("xyz"));
        p.insert("b".into(), json!("y"));
        assert_eq!(a.prepare(&mut p), Ok(()));
        assert_eq!(p["c"], json!(14));
        p.insert("c".into(), json!("nope"));
        assert_eq!(a.prepare(&mut p), Err("c must be a number".into()));
    }

    #[test]
    fn registry_refuses_duplicates_and_checks_api_version() {
        assert_eq!(
            Registry::new(vec![action(), action()], vec![]).err(),
            Some(RegistryError::Duplicate("t".into(), 1))
        );
        let two =
            Registry::new(vec![action().version(3), action().version(1)], vec![]).expect("two");
        assert_eq!(two.find("t", None).map(|a| a.version), Some(3));
        assert_eq!(two.find("t", Some(&json!(1))).map(|a| a.version), Some(1));
        assert_eq!(two.find("t", Some(&json!("3"))).map(|a| a.version), Some(3));
        assert!(two.find("t", Some(&json!(2))).is_none());
        assert!(two.find("t", Some(&json!("03"))).is_none());
        assert!(two.find("t", Some(&json!(-1))).is_none());
        let r = Registry::new(vec![action().version(2)], vec![]).expect("registry");
        assert!(r.find("t", None).is_some());
        assert!(r.find("t", Some(&json!(2))).is_some());
        assert!(r.find("t", Some(&json!("2"))).is_some());
        assert!(r.find("t", Some(&json!(1))).is_none());
        assert!(r.accepts_param("a") && r.accepts_param("messageId"));
        assert!(!r.accepts_param("zzz"));
        assert_eq!(
            r.documentation()["t"]["2"]["inputs"]["a"]["required"],
            json!(true)
        );
    }
}
