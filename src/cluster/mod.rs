//! The cluster link: this node's side of the Redis bus shared with other actionwire and
//! actionhero nodes (the protocol reference, "Cluster").
//!
//! The loop never waits on Redis. [`Cluster`] lives on the loop thread and hands [`Op`]s to
//! a command thread through a bounded queue; a subscriber thread parses what arrives on the
//! channel; both report back as [`BusEvent`]s through the loop's event queue (see
//! `bridge.rs`). A full queue or a link that is down never blocks: a publication is
//! dropped and counted, a question is answered from local state.

mod bridge;
pub(crate) mod calls;
pub(crate) mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

pub(crate) use bridge::{Answer, BusEvent, Counters, Op, Part, Query};
use wire::Identity;

/// Ops waiting for the command thread at most; beyond, publications are dropped and
/// counted and questions answered locally.
const MAX_QUEUED_OPS: usize = 65_536;

/// At stop, how long the farewell may take to reach Redis.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The cluster's settings, fixed at start (`redis.*` and the bus keys of `general.*`).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub redis: actionwire_config::Redis,
    pub token: String,
    pub channel: String,
    /// `general.serverId` as configured (empty: `<host name>:<socket port>`).
    pub server_id: String,
    /// How long this node's own cluster calls wait for an answer.
    pub rpc_timeout: std::time::Duration,
}

impl Settings {
    /// `None` when the cluster is off.
    pub(crate) fn from_config(cfg: &actionwire_config::Config) -> Option<Settings> {
        let g = &cfg.general;
        cfg.redis.enabled.then(|| Settings {
            redis: cfg.redis.clone(),
            token: g.server_token.clone(),
            channel: g.channel.clone(),
            server_id: g.server_id.clone(),
            rpc_timeout: std::time::Duration::from_millis(g.rpc_timeout),
        })
    }
}

/// A client for the configured Redis (connections are made by its users).
pub(crate) fn client(r: &actionwire_config::Redis) -> std::io::Result<redis::Client> {
    use redis::IntoConnectionInfo as _;
    let info = redis::ConnectionAddr::Tcp(r.host.clone(), r.port)
        .into_connection_info()
        .map_err(std::io::Error::other)?;
    let mut redis_info = redis::RedisConnectionInfo::default().set_db(i64::from(r.db));
    if let Some(pw) = &r.password {
        redis_info = redis_info.set_password(pw.clone());
    }
    redis::Client::open(info.set_redis_settings(redis_info)).map_err(std::io::Error::other)
}

/// Key names in Redis (actionhero's).
const ROOMS_KEY: &str = "actionhero:chatRoom:rooms";
const MEMBERS_PREFIX: &str = "actionhero:chatRoom:members:";

/// The link as the loop sees it.
pub(crate) struct Cluster {
    pub settings: Settings,
    pub identity: Identity,
    ops: Option<SyncSender<Op>>,
    /// The command thread (joined at stop, so the farewell is published before exit).
    commands: Option<std::thread::JoinHandle<()>>,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    /// Commands, subscriber.
    parts: [bool; 2],
    /// Both parts have been up at least once (the join announcement went out).
    announced: bool,
    next_ticket: u64,
    /// This node's own calls waiting for answers.
    pub calls: calls::Pending,
}

impl Cluster {
    pub(crate) fn new(settings: Settings) -> Cluster {
        Cluster {
            identity: Identity {
                token: settings.token.clone(),
                server_id: settings.server_id.clone(),
            },
            settings,
            ops: None,
            commands: None,
            counters: Arc::default(),
            stop: Arc::default(),
            parts: [false; 2],
            announced: false,
            next_ticket: 0,
            calls: calls::Pending::default(),
        }
    }

    /// Starts the two threads. `server_id` is this node's id, now that its port is known.
    pub(crate) fn start(
        &mut self,
        server_id: String,
        post: impl Fn(BusEvent) -> bool + Clone + Send + 'static,
    ) -> std::io::Result<()> {
        self.identity.server_id = server_id.clone();
        let client = client(&self.settings.redis)?;
        let target = bridge::Target {
            client,
            channel: self.settings.channel.clone(),
            token: self.settings.token.clone(),
            rooms_key: ROOMS_KEY.into(),
            members_prefix: MEMBERS_PREFIX.into(),
            server_id,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(MAX_QUEUED_OPS);
        let (t, counters, p) = (target.clone(), Arc::clone(&self.counters), post.clone());
        let commands = std::thread::Builder::new()
            .name("actionwire-redis".into())
            .spawn(move || bridge::commands(t, rx, counters, p))?;
        self.commands = Some(commands);
        let (counters, stop) = (Arc::clone(&self.counters), Arc::clone(&self.stop));
        std::thread::Builder::new()
            .name("actionwire-redis-sub".into())
            .spawn(move || bridge::subscriber(target, counters, stop, post))?;
        self.ops = Some(tx);
        Ok(())
    }

    /// Both connections are up.
    pub(crate) fn is_up(&self) -> bool {
        self.parts == [true, true]
    }

    /// One part of the link changed. Returns the whole link's new state when that changed
    /// (for one log line per change), and whether this is its first time up.
    pub(crate) fn link(&mut self, part: Part, up: bool) -> Option<(bool, bool)> {
        let before = self.is_up();
        self.parts[part as usize] = up;
        let now = self.is_up();
        if before == now {
            return None;
        }
        let first = now && !self.announced;
        self.announced |= now;
        Some((now, first))
    }

    /// Hands an op to the command thread; false when it could not take it (a publication
    /// is then counted as failed).
    pub(crate) fn send(&mut self, op: Op) -> bool {
        let Some(tx) = &self.ops else {
            return false;
        };
        let publish = matches!(op, Op::Publish(_));
        match tx.try_send(op) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                if publish {
                    self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
        }
    }

    /// Publishes `message` on the channel (dropped and counted while the link is down).
    pub(crate) fn publish(&mut self, message: String) {
        if self.is_up() {
            self.send(Op::Publish(message));
        } else {
            self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A ticket for an op whose completion a verb waits for.
    pub(crate) fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Asks Redis; the ticket its [`BusEvent::Answer`] will carry, or `None` when the link
    /// is down or busy (answer from local state now).
    pub(crate) fn ask(&mut self, query: Query) -> Option<u64> {
        if !self.is_up() {
            return None;
        }
        let ticket = self.ticket();
        self.send(Op::Query { ticket, query }).then_some(ticket)
    }

    /// `do api.log [text]` to every node (actionhero's boot and shutdown announcements).
    pub(crate) fn announcement(&self, text: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.identity.call(
            &id,
            "api.log",
            None,
            &[serde_json::Value::String(text.into())],
        )
    }

    /// The farewell, then the threads end.
    pub(crate) fn stop(&mut self) {
        let farewell = self.announcement(&format!(
            "actionhero member {} has left the cluster",
            self.identity.server_id
        ));
        self.send(Op::Stop { farewell });
        self.stop.store(true, Ordering::Relaxed);
        self.ops = None;
        // The loop has stopped: waiting here delays nobody. Bounded, in case Redis hangs.
        if let Some(t) = self.commands.take() {
            let deadline = std::time::Instant::now() + STOP_WAIT;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

/// The `cluster` object of the `status` action: the link and the bus counters.
pub(crate) fn status(c: &Counters) -> serde_json::Value {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let dropped: serde_json::Map<String, serde_json::Value> = wire::Drop::ALL
        .iter()
        .map(|d| (d.label().to_owned(), c.dropped(*d).into()))
        .collect();
    let calls: serde_json::Map<String, serde_json::Value> = calls::Outcome::ALL
        .iter()
        .map(|o| (o.label().to_owned(), c.calls(*o).into()))
        .collect();
    serde_json::json!({
        "link": if c.link_up.load(Ordering::Relaxed) { "up" } else { "down" },
        "published": load(&c.published),
        "publishFailed": load(&c.publish_failed),
        "received": load(&c.received),
        "dropped": dropped,
        "reconnects": load(&c.reconnects),
        "calls": calls,
    })
}
