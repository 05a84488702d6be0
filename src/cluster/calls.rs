//! This node's own cluster calls (`do`), as actionhero's `api.redis.doCluster` makes them:
//! published with a new `messageId`, answered by the first matching `doResponse`, or given
//! up after `general.rpcTimeout`. With a `connectionId`, only the node holding that
//! connection acts and answers; without it every node does (this one too: its own call
//! comes back from Redis), and the first answer wins.
//!
//! The pending calls live on the loop; each has one timer and a bounded count.

use std::collections::HashMap;

use actionwire_reactor::TimerId;
use serde_json::Value;
use uuid::Uuid;

/// Calls waiting for an answer at most; beyond, a call fails at once with
/// [`CallError::TooMany`].
pub(crate) const MAX_PENDING_CALLS: usize = 10_000;

/// Why a cluster call has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// Redis is off (`redis.enabled` is false).
    NoCluster,
    /// The link to Redis is down, or its queue full: the call was not published.
    Unavailable,
    /// Too many calls are waiting for answers already.
    TooMany,
    /// No node answered within `general.rpcTimeout`.
    TimedOut,
    /// The server stopped before an answer came.
    Stopped,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CallError::NoCluster => "the cluster is off (redis.enabled is false)",
            CallError::Unavailable => "the cluster link is down",
            CallError::TooMany => "too many cluster calls are waiting for answers",
            CallError::TimedOut => "no node answered within general.rpcTimeout",
            CallError::Stopped => "the server stopped before an answer came",
        })
    }
}

impl std::error::Error for CallError {}

/// How a call ended: the vocabulary of the `calls` counters in `status` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Answered,
    Failed(CallError),
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 6] = [
        Outcome::Answered,
        Outcome::Failed(CallError::NoCluster),
        Outcome::Failed(CallError::Unavailable),
        Outcome::Failed(CallError::TooMany),
        Outcome::Failed(CallError::TimedOut),
        Outcome::Failed(CallError::Stopped),
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Failed(CallError::NoCluster) => "no_cluster",
            Outcome::Failed(CallError::Unavailable) => "unavailable",
            Outcome::Failed(CallError::TooMany) => "too_many",
            Outcome::Failed(CallError::TimedOut) => "timed_out",
            Outcome::Failed(CallError::Stopped) => "stopped",
        }
    }

    /// Its place in [`Outcome::ALL`] (and in the counters).
    pub(crate) fn index(self) -> usize {
        let i = Outcome::ALL.iter().position(|o| *o == self);
        debug_assert!(i.is_some(), "every outcome is listed in ALL");
        i.unwrap_or(0)
    }
}

/// What the caller hears, once: the answer's `response` (`None` when the answer had
/// none), or why there is none. Runs on the loop thread: keep it short.
pub type CallDone = Box<dyn FnOnce(Result<Option<Value>, CallError>) + Send>;

/// A call handed to the loop.
pub(crate) struct OutCall {
    pub method: String,
    pub connection_id: Option<Uuid>,
    pub args: Vec<Value>,
    pub done: CallDone,
}

impl std::fmt::Debug for OutCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutCall")
            .field("method", &self.method)
            .field("connection_id", &self.connection_id)
            .finish_non_exhaustive()
    }
}

/// The calls waiting for answers, by `messageId`.
#[derive(Default)]
pub(crate) struct Pending {
    calls: HashMap<String, (CallDone, TimerId)>,
}

impl Pending {
    pub(crate) fn is_full(&self) -> bool {
        self.calls.len() >= MAX_PENDING_CALLS
    }

    pub(crate) fn insert(&mut self, message_id: String, done: CallDone, timer: TimerId) {
        debug_assert!(!self.is_full());
        let before = self.calls.insert(message_id, (done, timer));
        debug_assert!(before.is_none(), "message ids are fresh v4 uuids");
    }

    /// The call with this id, if still waiting (an answer after the first, or after the
    /// timeout, finds nothing).
    pub(crate) fn take(&mut self, message_id: &str) -> Option<(CallDone, TimerId)> {
        self.calls.remove(message_id)
    }

    /// Every waiting call (at stop).
    pub(crate) fn drain(&mut self) -> Vec<CallDone> {
        self.calls.drain().map(|(_, (done, _))| done).collect()
    }
}
