//! [`Api`]: the server-wide facilities actions and server code reach from any thread
//! (cache, counters, health, documentation, and commands to the event loop).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use actionwire_reactor::{EventSender, ReactorStats, SendError};
use serde_json::Value;
use uuid::Uuid;

use crate::cache::Cache;
use crate::cluster::calls::{CallError, OutCall};
use crate::hooks::{CommandError, ServerCommand};
use crate::session::AppEvent;

/// Server-wide facilities available to actions and server code from any thread.
#[derive(Debug)]
pub struct Api {
    pub cache: Cache,
    /// This node's id (`general.serverId`, or `<host name>:<socket port>`), set once the
    /// socket listener is bound.
    pub(crate) server_id: std::sync::OnceLock<String>,
    /// The cluster link's state and counters, when the cluster is on.
    pub(crate) cluster: std::sync::OnceLock<Arc<crate::cluster::Counters>>,
    pub(crate) started: Instant,
    /// Seconds since the Unix epoch at start (`process_start_time_seconds`).
    pub(crate) started_unix: f64,
    /// Loop lag, worker queue and drain state for `/status`.
    pub health: crate::health::Health,
    /// `maxConnections` as in effect (after 0 was resolved).
    pub(crate) max_connections: usize,
    /// Worker threads.
    pub(crate) workers: usize,
    pub(crate) reactor: Arc<ReactorStats>,
    pub(crate) rooms: AtomicUsize,
    /// Room names as the loop last saw them (updated when a room is created or deleted).
    pub(crate) room_names: std::sync::Mutex<Vec<String>>,
    pub(crate) pending_actions: AtomicUsize,
    /// The `documentation` object: local actions, and forwarded ones once the backend's
    /// documentation has been fetched.
    pub(crate) documentation: std::sync::RwLock<Arc<Value>>,
    /// The loop's event queue, once the loop exists.
    pub(crate) events: std::sync::OnceLock<EventSender<AppEvent>>,
    /// Where a [`crate::actions::Responder`]'s answer goes, once the loop exists.
    pub(crate) completer:
        std::sync::OnceLock<actionwire_reactor::Completer<crate::session::Completion>>,
}

impl Api {
    /// This node's id: `general.serverId`, or `<host name>:<socket port>`.
    pub fn server_id(&self) -> &str {
        self.server_id.get().map_or("", String::as_str)
    }

    /// The cluster link: `None` without Redis, else whether both connections to Redis are
    /// up.
    pub fn cluster_link_up(&self) -> Option<bool> {
        let counters = self.cluster.get()?;
        Some(counters.link_up.load(Ordering::Relaxed))
    }

    /// Milliseconds since the server started.
    pub fn uptime_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.reactor.open.load(Ordering::Relaxed)
    }

    /// Chat rooms that exist now.
    pub fn rooms(&self) -> usize {
        self.rooms.load(Ordering::Relaxed)
    }

    /// Actions pending on every connection.
    pub fn pending_actions(&self) -> usize {
        self.pending_actions.load(Ordering::Relaxed)
    }

    /// Keep-alive lines sent since start.
    pub fn keepalive_pings(&self) -> u64 {
        self.reactor.keepalive_pings.load(Ordering::Relaxed)
    }

    /// Connections closed by `idleTimeout` since start.
    pub fn idle_timeouts(&self) -> u64 {
        self.reactor.idle_timeouts.load(Ordering::Relaxed)
    }

    /// Connections closed by `handshakeTimeout` since start.
    pub fn handshake_timeouts(&self) -> u64 {
        self.reactor.handshake_timeouts.load(Ordering::Relaxed)
    }

    /// Connections disconnected because they did not read their output (the soft or hard
    /// output limit) since start.
    pub fn output_limit_disconnects(&self) -> u64 {
        self.reactor.closed_output_limit.load(Ordering::Relaxed)
    }

    /// Connections closed because a PROXY protocol header was expected and not sent.
    pub fn proxy_failures(&self) -> u64 {
        self.reactor.proxy_failures.load(Ordering::Relaxed)
    }

    /// TLS handshakes completed since start.
    pub fn tls_handshakes(&self) -> u64 {
        self.reactor.tls_handshakes.load(Ordering::Relaxed)
    }

    /// Of the TLS handshakes completed, those that resumed an earlier session.
    pub fn tls_resumed(&self) -> u64 {
        self.reactor.tls_resumed.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed (bad client hello, refused certificate, …) since start.
    pub fn tls_failures(&self) -> u64 {
        self.reactor.tls_failures.load(Ordering::Relaxed)
    }

    /// The same object the `documentation` verb returns.
    pub fn documentation(&self) -> Arc<Value> {
        let docs = self
            .documentation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&docs)
    }

    /// Hands `command` to the event loop, from any thread; it is applied in the order sent.
    /// Never waits: a full queue is [`CommandError::Busy`]. From an action, prefer
    /// [`crate::ActionData::command`], which also orders it before the action's reply.
    pub fn command(&self, command: ServerCommand) -> Result<(), CommandError> {
        let events = self.events.get().ok_or(CommandError::NotRunning)?;
        events
            .try_send(AppEvent::Command(command))
            .map_err(|e| match e {
                SendError::Full(_) => CommandError::Busy,
                SendError::Stopped(_) => CommandError::NotRunning,
            })
    }

    /// Calls `method` on the cluster, as actionhero's `api.redis.doCluster` does: published
    /// as a `do` with `args`; with `connection`, only the node holding that connection
    /// acts and answers, without it every node does (this one too). `done` hears the
    /// first answer's `response` (`None` when it had none) or why there is none (the link
    /// is down, no answer within `general.rpcTimeout`, …), exactly once, on the loop
    /// thread: keep it short (send on a channel). The methods nodes answer are in the
    /// protocol reference ("Cluster"): `api.chatRoom.removeMember`,
    /// `api.chatRoom.addMember`, `api.connections.applyResponder`, `api.log`.
    ///
    /// When this returns an error, the call was not made and `done` is not called.
    pub fn cluster_call(
        &self,
        method: &str,
        connection: Option<Uuid>,
        args: Vec<Value>,
        done: impl FnOnce(Result<Option<Value>, CallError>) + Send + 'static,
    ) -> Result<(), CommandError> {
        let events = self.events.get().ok_or(CommandError::NotRunning)?;
        let call = OutCall {
            method: method.to_owned(),
            connection_id: connection,
            args,
            done: Box::new(done),
        };
        events
            .try_send(AppEvent::ClusterCall(Box::new(call)))
            .map_err(|e| match e {
                SendError::Full(_) => CommandError::Busy,
                SendError::Stopped(_) => CommandError::NotRunning,
            })
    }

    /// A chat line from the server (`"from":0`) to every member of `room`.
    pub fn broadcast(&self, room: &str, message: impl Into<Value>) -> Result<(), CommandError> {
        self.command(ServerCommand::Broadcast {
            room: room.to_owned(),
            message: message.into(),
        })
    }

    /// `message` as one JSON line to the connection with this id; with the cluster on, a
    /// connection another node holds gets it through a cluster call
    /// (`api.connections.applyResponder`).
    pub fn send_to(&self, connection: Uuid, message: impl Into<Value>) -> Result<(), CommandError> {
        self.command(ServerCommand::Send {
            to: connection,
            message: message.into(),
        })
    }

    /// Creates a room (it stays until destroyed).
    pub fn add_room(&self, room: &str) -> Result<(), CommandError> {
        self.command(ServerCommand::AddRoom(room.to_owned()))
    }

    /// Tells the room's members it was deleted, removes them, and deletes it.
    pub fn destroy_room(&self, room: &str) -> Result<(), CommandError> {
        self.command(ServerCommand::DestroyRoom(room.to_owned()))
    }

    /// The rooms that exist, sorted (as of the loop's last change to them).
    pub fn room_names(&self) -> Vec<String> {
        self.room_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
