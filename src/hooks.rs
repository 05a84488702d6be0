//! Application hooks: connection, action and chat middleware, and the commands server code
//! sends to the loop (broadcast to a room, send to one connection, create and destroy rooms).
//!
//! Middleware has a name and a priority (lower runs first; equal priorities keep the order
//! they were added in) and any subset of its hooks:
//!
//! - [`ConnectionMiddleware`]: `create` when a socket connection opens (it may set data on
//!   the connection, or refuse it: the reason is sent in the Bye line) and `destroy` when it
//!   closes (with the close reason).
//! - [`ActionMiddleware`]: `pre` before an action runs (an `Err` refuses the call with that
//!   error) and `post` after it succeeded (it may change the response; an `Err` turns the
//!   reply into an error). Global, or named by the actions that want it
//!   ([`crate::Action::middleware`]). They run where the action runs (a worker thread), so
//!   they may block as the action may.
//! - [`ChatMiddleware`]: `join` / `leave` (an `Err` refuses `roomAdd` / `roomLeave` with that
//!   error), `on_say_receive` once per message before it is delivered (it may rewrite the
//!   message, or refuse it: `say` answers with the error and nobody receives it), and `say`
//!   once per recipient (it may rewrite that member's copy, or return `false` to skip them).
//!
//! **Connection and chat hooks run on the event loop thread and must not block**: every other
//! client waits while one runs. Do I/O in an action instead. A hook that takes longer than
//! [`SLOW_HOOK`] is counted (`actionwire_slow_hooks_total`) and logged; a hook that panics
//! is treated as a refusal (and logged), never as a crash.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::actions::ActionData;
use crate::connection::ConnectionInfo;

/// What a hook answers: `Err(text)` refuses, and `text` is what the client is told.
pub type HookResult = Result<(), String>;

/// The priority of middleware that does not set one (actionhero's default).
pub const DEFAULT_PRIORITY: i32 = 100;

/// A loop hook running longer than this is counted and logged as blocking the loop.
pub const SLOW_HOOK: Duration = Duration::from_millis(10);

type CreateFn = dyn Fn(&ConnectionInfo, &mut Map<String, Value>) -> HookResult + Send + Sync;
type DestroyFn = dyn Fn(&ConnectionInfo, &str) + Send + Sync;
type ActionHookFn = dyn Fn(&mut ActionData) -> HookResult + Send + Sync;
type RoomFn = dyn Fn(&ConnectionInfo, &str) -> HookResult + Send + Sync;
type SayReceiveFn = dyn Fn(Option<&ConnectionInfo>, &mut ChatMessage) -> HookResult + Send + Sync;
type SayFn = dyn Fn(&ConnectionInfo, &mut ChatMessage) -> bool + Send + Sync;

/// Hooks on a socket connection's life. See the [module documentation](self).
#[derive(Clone)]
pub struct ConnectionMiddleware {
    name: String,
    priority: i32,
    create: Option<Arc<CreateFn>>,
    destroy: Option<Arc<DestroyFn>>,
}

impl fmt::Debug for ConnectionMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionMiddleware")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("create", &self.create.is_some())
            .field("destroy", &self.destroy.is_some())
            .finish()
    }
}

impl ConnectionMiddleware {
    pub fn new(name: impl Into<String>) -> ConnectionMiddleware {
        ConnectionMiddleware {
            name: name.into(),
            priority: DEFAULT_PRIORITY,
            create: None,
            destroy: None,
        }
    }

    /// Lower runs first.
    pub fn priority(mut self, p: i32) -> ConnectionMiddleware {
        self.priority = p;
        self
    }

    /// Runs when a socket connection opens (after its TLS handshake, before the welcome
    /// line). The map is the connection's data, visible to later hooks and to actions. An
    /// `Err` refuses the connection: the Bye line carries the text as its `reason`.
    pub fn on_create(
        mut self,
        f: impl Fn(&ConnectionInfo, &mut Map<String, Value>) -> HookResult + Send + Sync + 'static,
    ) -> ConnectionMiddleware {
        self.create = Some(Arc::new(f));
        self
    }

    /// Runs when a connection that passed `create` closes, with the close reason (`quit`,
    /// `eof`, `idle_timeout`, … as `/metrics` names them).
    pub fn on_destroy(
        mut self,
        f: impl Fn(&ConnectionInfo, &str) + Send + Sync + 'static,
    ) -> ConnectionMiddleware {
        self.destroy = Some(Arc::new(f));
        self
    }
}

/// Hooks around actions. See the [module documentation](self).
#[derive(Clone)]
pub struct ActionMiddleware {
    name: String,
    priority: i32,
    global: bool,
    inline: bool,
    pre: Option<Arc<ActionHookFn>>,
    post: Option<Arc<ActionHookFn>>,
}

impl fmt::Debug for ActionMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionMiddleware")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("global", &self.global)
            .finish_non_exhaustive()
    }
}

impl ActionMiddleware {
    pub fn new(name: impl Into<String>) -> ActionMiddleware {
        ActionMiddleware {
            name: name.into(),
            priority: DEFAULT_PRIORITY,
            global: false,
            inline: false,
            pre: None,
            post: None,
        }
    }

    /// Lower runs first.
    pub fn priority(mut self, p: i32) -> ActionMiddleware {
        self.priority = p;
        self
    }

    /// Runs for every action (otherwise only for actions that name it).
    pub fn global(mut self) -> ActionMiddleware {
        self.global = true;
        self
    }

    /// Declares that its hooks never block, so inline actions ([`crate::Action::inline`])
    /// stay on the event loop with it. Without this, an inline action this middleware wraps
    /// runs on a worker.
    pub fn inline(mut self) -> ActionMiddleware {
        self.inline = true;
        self
    }

    pub(crate) fn is_inline(&self) -> bool {
        self.inline
    }

    /// Runs before the action, after its inputs were processed. An `Err` refuses the call:
    /// the action does not run and the reply's `error` is the text.
    pub fn pre(
        mut self,
        f: impl Fn(&mut ActionData) -> HookResult + Send + Sync + 'static,
    ) -> ActionMiddleware {
        self.pre = Some(Arc::new(f));
        self
    }

    /// Runs after the action succeeded; it may change `data.response`. An `Err` makes the
    /// reply an error (the response fields set so far stay).
    pub fn post(
        mut self,
        f: impl Fn(&mut ActionData) -> HookResult + Send + Sync + 'static,
    ) -> ActionMiddleware {
        self.post = Some(Arc::new(f));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn is_global(&self) -> bool {
        self.global
    }

    pub(crate) fn priority_value(&self) -> i32 {
        self.priority
    }

    pub(crate) fn run_pre(&self, data: &mut ActionData) -> HookResult {
        self.pre.as_ref().map_or(Ok(()), |f| f(data))
    }

    pub(crate) fn run_post(&self, data: &mut ActionData) -> HookResult {
        self.post.as_ref().map_or(Ok(()), |f| f(data))
    }
}

/// A chat message on its way to a room's members: the fields of the chat line
/// `{"message","room","from","context":"user","sentAt"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub room: String,
    /// Any JSON: a client's `say` sends a string; server code may send objects.
    pub message: Value,
    /// The sender's connection id; `None` for the server (`"from":0`).
    pub from: Option<Uuid>,
    /// Milliseconds since the Unix epoch.
    pub sent_at: u64,
}

/// Hooks on rooms and chat, run on the event loop. See the [module documentation](self).
#[derive(Clone)]
pub struct ChatMiddleware {
    name: String,
    priority: i32,
    join: Option<Arc<RoomFn>>,
    leave: Option<Arc<RoomFn>>,
    on_say_receive: Option<Arc<SayReceiveFn>>,
    say: Option<Arc<SayFn>>,
}

impl fmt::Debug for ChatMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatMiddleware")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("join", &self.join.is_some())
            .field("leave", &self.leave.is_some())
            .field("on_say_receive", &self.on_say_receive.is_some())
            .field("say", &self.say.is_some())
            .finish()
    }
}

impl ChatMiddleware {
    pub fn new(name: impl Into<String>) -> ChatMiddleware {
        ChatMiddleware {
            name: name.into(),
            priority: DEFAULT_PRIORITY,
            join: None,
            leave: None,
            on_say_receive: None,
            say: None,
        }
    }

    /// Lower runs first.
    pub fn priority(mut self, p: i32) -> ChatMiddleware {
        self.priority = p;
        self
    }

    /// Before a connection joins a room (`roomAdd`, `roomChange`): an `Err` refuses it
    /// with that error.
    pub fn join(
        mut self,
        f: impl Fn(&ConnectionInfo, &str) -> HookResult + Send + Sync + 'static,
    ) -> ChatMiddleware {
        self.join = Some(Arc::new(f));
        self
    }

    /// Before a connection leaves a room (`roomLeave`, or the rooms `roomChange` leaves): an
    /// `Err` refuses it with that error. When a connection closes or its room is destroyed
    /// the hook still runs, but cannot keep it in the room.
    pub fn leave(
        mut self,
        f: impl Fn(&ConnectionInfo, &str) -> HookResult + Send + Sync + 'static,
    ) -> ChatMiddleware {
        self.leave = Some(Arc::new(f));
        self
    }

    /// Once per message, before anyone receives it: it may rewrite the message. The sender
    /// is `None` for a broadcast from server code. An `Err` drops the message; a client's
    /// `say` is answered with the error.
    pub fn on_say_receive(
        mut self,
        f: impl Fn(Option<&ConnectionInfo>, &mut ChatMessage) -> HookResult + Send + Sync + 'static,
    ) -> ChatMiddleware {
        self.on_say_receive = Some(Arc::new(f));
        self
    }

    /// Once per recipient, with that recipient and its own copy of the message: it may
    /// rewrite the copy, or return `false` to not deliver it to this member.
    pub fn say(
        mut self,
        f: impl Fn(&ConnectionInfo, &mut ChatMessage) -> bool + Send + Sync + 'static,
    ) -> ChatMiddleware {
        self.say = Some(Arc::new(f));
        self
    }
}

/// What server code asks the loop to do. Send it with [`crate::Api::command`] from any
/// thread, or with [`ActionData::command`] from an action (then it takes effect before the
/// action's reply is written).
#[derive(Debug, Clone, PartialEq)]
pub enum ServerCommand {
    /// A chat line from the server (`"from":0`) to every member of `room`. Chat middleware
    /// runs as for a client's `say`.
    Broadcast { room: String, message: Value },
    /// `message` written to one connection as a JSON line (as actionhero's
    /// `connection.sendMessage`); with the cluster on, to a connection on any node.
    Send { to: Uuid, message: Value },
    /// Creates a room (kept until destroyed, even when empty).
    AddRoom(String),
    /// Tells the room's members `this room has been deleted`, removes them, and deletes it.
    DestroyRoom(String),
}

/// Why [`crate::Api::command`] could not hand a command to the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The loop's event queue is full (it is far behind); try again later.
    Busy,
    /// The server has stopped, or has not started yet.
    NotRunning,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommandError::Busy => "the event loop's queue is full",
            CommandError::NotRunning => "the server is not running",
        })
    }
}

impl std::error::Error for CommandError {}

/// The loop's hook kinds (a metric label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookKind {
    Create,
    Destroy,
    Join,
    Leave,
    SayReceive,
    Say,
}

impl HookKind {
    pub(crate) const ALL: [HookKind; 6] = [
        HookKind::Create,
        HookKind::Destroy,
        HookKind::Join,
        HookKind::Leave,
        HookKind::SayReceive,
        HookKind::Say,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            HookKind::Create => "connection_create",
            HookKind::Destroy => "connection_destroy",
            HookKind::Join => "chat_join",
            HookKind::Leave => "chat_leave",
            HookKind::SayReceive => "chat_on_say_receive",
            HookKind::Say => "chat_say",
        }
    }
}

/// How the loop's hooks behaved, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct HookStats {
    /// Calls over [`SLOW_HOOK`], by [`HookKind`].
    pub slow: [u64; HookKind::ALL.len()],
    /// Calls that panicked, by [`HookKind`].
    pub panics: [u64; HookKind::ALL.len()],
    last_warning: Option<Instant>,
}

impl HookStats {
    /// Runs one hook: timed, its panic caught (then `on_panic` makes the answer).
    fn call<T>(
        &mut self,
        kind: HookKind,
        name: &str,
        on_panic: impl FnOnce() -> T,
        f: impl FnOnce() -> T,
    ) -> T {
        let started = Instant::now();
        let out = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => v,
            Err(_) => {
                self.panics[kind as usize] += 1;
                log::error!("{} middleware `{name}` panicked", kind.label());
                on_panic()
            }
        };
        let took = started.elapsed();
        if took > SLOW_HOOK {
            self.slow[kind as usize] += 1;
            // At most one warning per ten seconds: a hook that always blocks would flood.
            let quiet = self
                .last_warning
                .is_some_and(|at| at.elapsed() < Duration::from_secs(10));
            if !quiet {
                self.last_warning = Some(Instant::now());
                log::warn!(
                    "{} middleware `{name}` blocked the event loop for {took:?}: loop hooks must \
                     not block (do I/O in an action)",
                    kind.label()
                );
            }
        }
        out
    }
}

/// The loop's connection and chat middleware, sorted by priority, and how they behaved.
#[derive(Default)]
pub(crate) struct LoopHooks {
    connection: Vec<ConnectionMiddleware>,
    chat: Vec<ChatMiddleware>,
    pub stats: HookStats,
}

impl LoopHooks {
    pub(crate) fn new(
        mut connection: Vec<ConnectionMiddleware>,
        mut chat: Vec<ChatMiddleware>,
    ) -> LoopHooks {
        // Stable sorts: equal priorities keep the order they were added in.
        connection.sort_by_key(|m| m.priority);
        chat.sort_by_key(|m| m.priority);
        LoopHooks {
            connection,
            chat,
            stats: HookStats::default(),
        }
    }

    pub(crate) fn has_connection_hooks(&self) -> bool {
        !self.connection.is_empty()
    }

    /// Whether any middleware looks at each recipient (then a message is encoded per
    /// member instead of once).
    pub(crate) fn has_say(&self) -> bool {
        self.chat.iter().any(|m| m.say.is_some())
    }

    pub(crate) fn create(
        &mut self,
        info: &ConnectionInfo,
        data: &mut Map<String, Value>,
    ) -> HookResult {
        for m in &self.connection {
            let Some(f) = &m.create else { continue };
            let refused = || Err(format!("connection middleware {} failed", m.name));
            self.stats
                .call(HookKind::Create, &m.name, refused, || f(info, data))?;
        }
        Ok(())
    }

    pub(crate) fn destroy(&mut self, info: &ConnectionInfo, reason: &str) {
        for m in &self.connection {
            if let Some(f) = &m.destroy {
                self.stats
                    .call(HookKind::Destroy, &m.name, || (), || f(info, reason));
            }
        }
    }

    /// `join` (or `leave`) hooks in order; the first refusal wins.
    pub(crate) fn room(&mut self, kind: HookKind, info: &ConnectionInfo, room: &str) -> HookResult {
        debug_assert!(matches!(kind, HookKind::Join | HookKind::Leave));
        for m in &self.chat {
            let hook = match kind {
                HookKind::Join => &m.join,
                _ => &m.leave,
            };
            let Some(f) = hook else { continue };
            let refused = || Err(format!("chat middleware {} failed", m.name));
            self.stats.call(kind, &m.name, refused, || f(info, room))?;
        }
        Ok(())
    }

    pub(crate) fn on_say_receive(
        &mut self,
        sender: Option<&ConnectionInfo>,
        message: &mut ChatMessage,
    ) -> HookResult {
        for m in &self.chat {
            let Some(f) = &m.on_say_receive else { continue };
            let refused = || Err(format!("chat middleware {} failed", m.name));
            self.stats
                .call(HookKind::SayReceive, &m.name, refused, || {
                    f(sender, message)
                })?;
        }
        Ok(())
    }

    /// Every `say` hook for one recipient; `false` when one of them skips it.
    pub(crate) fn say(&mut self, recipient: &ConnectionInfo, message: &mut ChatMessage) -> bool {
        for m in &self.chat {
            let Some(f) = &m.say else { continue };
            if !self
                .stats
                .call(HookKind::Say, &m.name, || false, || f(recipient, message))
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info() -> ConnectionInfo {
        ConnectionInfo::new(Uuid::nil(), ([127, 0, 0, 1], 1).into(), None)
    }

    #[test]
    fn middleware_shows_its_name_and_which_hooks_it_has() {
        let chat = ChatMiddleware::new("rooms").priority(5).join(|_, _| Ok(()));
        assert_eq!(
            format!("{chat:?}"),
            "ChatMiddleware { name: \"rooms\", priority: 5, join: true, leave: false, \
             on_say_receive: false, say: false }"
        );
        let conn = ConnectionMiddleware::new("gate").on_destroy(|_, _| {});
        assert_eq!(
            format!("{conn:?}"),
            "ConnectionMiddleware { name: \"gate\", priority: 100, create: false, destroy: true }"
        );
    }

    #[test]
    fn lower_priority_runs_first_and_ties_keep_their_order() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let m = |name: &'static str, p: i32| {
            let order = Arc::clone(&order);
            ChatMiddleware::new(name).priority(p).join(move |_, _| {
                order.lock().expect("order").push(name);
                Ok(())
            })
        };
        let mut hooks = LoopHooks::new(vec![], vec![m("c", 200), m("a", 10), m("b", 200)]);
        hooks
            .room(HookKind::Join, &info(), "lobby")
            .expect("joined");
        assert_eq!(*order.lock().expect("order"), ["a", "c", "b"]);
    }

    #[test]
    fn the_first_refusal_wins_and_a_panic_is_a_refusal() {
        let mut hooks = LoopHooks::new(
            vec![],
            vec![
                ChatMiddleware::new("boom").join(|_, room| {
                    assert_ne!(room, "bad", "deliberate");
                    Ok(())
                }),
                ChatMiddleware::new("private").join(|_, room| match room {
                    "secret" => Err("not allowed in secret".into()),
                    _ => Ok(()),
                }),
            ],
        );
        assert_eq!(
            hooks.room(HookKind::Join, &info(), "secret"),
            Err("not allowed in secret".into())
        );
        assert_eq!(
            hooks.room(HookKind::Join, &info(), "bad"),
            Err("chat middleware boom failed".into())
        );
        assert_eq!(hooks.stats.panics[HookKind::Join as usize], 1);
        assert!(hooks.room(HookKind::Leave, &info(), "secret").is_ok());
    }

    #[test]
    fn say_hooks_rewrite_and_skip_per_recipient_and_slow_ones_are_counted() {
        let mut hooks = LoopHooks::new(
            vec![],
            vec![
                ChatMiddleware::new("shout").say(|_, m| {
                    m.message = json!(m.message.as_str().unwrap_or("").to_uppercase());
                    true
                }),
                ChatMiddleware::new("slow").say(|_, m| {
                    std::thread::sleep(SLOW_HOOK + Duration::from_millis(5));
                    m.message != json!("SKIP")
                }),
            ],
        );
        assert!(hooks.has_say() && !hooks.has_connection_hooks());
        let mut m = ChatMessage {
            room: "r".into(),
            message: json!("hi"),
            from: None,
            sent_at: 1,
        };
        assert!(hooks.say(&info(), &mut m));
        assert_eq!(m.message, json!("HI"));
        let mut skip = ChatMessage {
            message: json!("skip"),
            ..m
        };
        assert!(!hooks.say(&info(), &mut skip));
        assert_eq!(hooks.stats.slow[HookKind::Say as usize], 2);
    }
}
