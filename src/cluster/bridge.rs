//! The two threads between the event loop and Redis, so that the loop never waits on it:
//!
//! - the **command thread** takes [`Op`]s from the loop (a bounded queue) and runs them on
//!   one Redis connection: publications, membership writes, queries whose answers go back
//!   to the loop as events;
//! - the **subscriber thread** holds the second connection, subscribed to the channel, and
//!   hands each message to the loop already parsed (dropped ones are counted here).
//!
//! Each thread reconnects on its own with a capped back-off and reports its part of the
//! link going up or down once per change. While the command connection is down, ops are
//! not kept for later: publications are dropped and counted, queries are answered
//! [`Answer::Unavailable`] at once (the loop answers from local state), membership writes
//! are dropped (the loop re-syncs every live member when the link is back).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use redis::{Commands, Connection, RedisResult};

use super::wire::{self, Drop, Incoming};

/// Back-off between connection attempts: doubled from the first to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A Redis command taking longer than this counts as the link failing.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the subscriber looks up from its socket to see whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(500);

/// What the loop asks of Redis.
#[derive(Debug)]
pub(crate) enum Op {
    /// `PUBLISH <channel> <message>`.
    Publish(String),
    /// `HSET <members:room> <id> <entry>`; with a ticket, [`Answer::Written`] once done
    /// (a verb's reply waits for it).
    Join {
        room: Arc<str>,
        id: String,
        entry: String,
        ticket: Option<u64>,
    },
    /// `HDEL <members:room> <id>` (the ticket as for `Join`).
    Leave {
        room: Arc<str>,
        id: String,
        ticket: Option<u64>,
    },
    /// `SADD <rooms> <name>...`: rooms that exist.
    AddRooms(Vec<String>),
    /// `SREM <rooms> <room>` and `DEL <members:room>`.
    DestroyRoom(String),
    /// After (re)connecting: this node's members that are not in `live` are removed from
    /// every room, then every live one is written again.
    Resync {
        live: Vec<(Arc<str>, String, String)>,
    },
    Query {
        ticket: u64,
        query: Query,
    },
    /// Publish `farewell`, then end the thread.
    Stop {
        farewell: String,
    },
}

/// A question whose answer the loop waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// `SISMEMBER <rooms> <room>`.
    RoomExists(String),
    /// `HGETALL <members:room>`.
    Members(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    RoomExists(bool),
    /// Connection id → member entry (JSON text), as stored.
    Members(Vec<(String, String)>),
    /// A membership write reached Redis.
    Written,
    /// The link is down: answer from local state.
    Unavailable,
}

/// Which of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Commands,
    Subscriber,
}

/// What the threads tell the loop.
#[derive(Debug)]
pub(crate) enum BusEvent {
    Link {
        part: Part,
        up: bool,
        detail: String,
    },
    Received(Box<Incoming>),
    Answer {
        ticket: u64,
        answer: Answer,
    },
}

/// Counters shared by the threads and the loop (`/metrics`, `status`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Both connections are up (set by the loop, which sees both).
    pub link_up: AtomicBool,
    pub published: AtomicU64,
    /// Publications lost: the link was down or the queue to Redis was full.
    pub publish_failed: AtomicU64,
    pub received: AtomicU64,
    pub dropped: [AtomicU64; 3],
    pub reconnects: AtomicU64,
    /// This node's own cluster calls, by outcome (`calls::Outcome::index`).
    pub calls: [AtomicU64; super::calls::Outcome::ALL.len()],
}

impl Counters {
    pub(crate) fn dropped(&self, why: Drop) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn calls(&self, outcome: super::calls::Outcome) -> u64 {
        self.calls[outcome.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn count_call(&self, outcome: super::calls::Outcome) {
        self.calls[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Where the threads find Redis, and the names they use there.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub client: redis::Client,
    pub channel: String,
    pub token: String,
    pub rooms_key: String,
    pub members_prefix: String,
    /// This node's `serverId` (its members' `host`).
    pub server_id: String,
}

impl Target {
    fn members_key(&self, room: &str) -> String {
        format!("{}{room}", self.members_prefix)
    }

    fn connect(&self) -> RedisResult<Connection> {
        let con = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }
}

/// Reports link changes to the loop once per change.
struct LinkReporter<F> {
    part: Part,
    up: Option<bool>,
    post: F,
}

impl<F: Fn(BusEvent) -> bool> LinkReporter<F> {
    fn report(&mut self, up: bool, detail: String) {
        if self.up != Some(up) {
            self.up = Some(up);
            (self.post)(BusEvent::Link {
                part: self.part,
                up,
                detail,
            });
        }
    }
}

/// The command thread's body. `post` hands an event to the loop (false once it has stopped).
pub(crate) fn commands(
    target: Target,
    ops: Receiver<Op>,
    counters: Arc<Counters>,
    post: impl Fn(BusEvent) -> bool,
) {
    let mut link = LinkReporter {
        part: Part::Commands,
        up: None,
        post: &post,
    };
    let mut backoff = BACKOFF_FIRST;
    let mut con: Option<Connection> = None;
    loop {
        if con.is_none() {
            match target.connect() {
                Ok(c) => {
                    con = Some(c);
                    backoff = BACKOFF_FIRST;
                    link.report(true, String::new());
                }
                Err(e) => {
                    link.report(false, e.to_string());
                    // Wait out the back-off, answering what comes meanwhile as "down".
                    let until = std::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    loop {
                        let left = until.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match ops.recv_timeout(left) {
                            Ok(Op::Stop { .. }) | Err(RecvTimeoutError::Disconnected) => return,
                            Ok(op) => while_down(op, &counters, &post),
                            Err(RecvTimeoutError::Timeout) => break,
                        }
                    }
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let Ok(first) = ops.recv() else {
            return; // the loop is gone
        };
        // Everything queued meanwhile goes in the same pipeline (one round trip), up to a
        // batch; a re-sync or the stop runs on its own after it.
        let mut batch = Vec::new();
        let mut alone = None;
        if batched(&first) {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) if batched(&op) => batch.push(op),
                    Ok(op) => {
                        alone = Some(op);
                        break;
                    }
                    Err(_) => break,
                }
            }
        } else {
            alone = Some(first);
        }
        let Some(c) = con.as_mut() else {
            continue;
        };
        let mut failed = None;
        if !batch.is_empty()
            && let Err(e) = run_batch(c, &target, batch, &counters, &post)
        {
            failed = Some(e);
        }
        if let Some(op) = alone {
            let stop = matches!(op, Op::Stop { .. });
            if failed.is_some() {
                if stop {
                    return;
                }
                while_down(op, &counters, &post);
            } else {
                match run(c, &target, op, &counters, &post) {
                    Ok(()) if stop => return,
                    Ok(()) => {}
                    Err(_) if stop => return,
                    Err(e) => failed = Some(e),
                }
            }
        }
        if let Some(e) = failed {
            log::debug!("cluster: Redis command failed: {e}");
            con = None;
            link.report(false, e.to_string());
        }
    }
}

/// Ops run together in one pipeline at most.
const MAX_BATCH: usize = 512;

/// Whether an op goes in a pipeline with others (a re-sync reads before it writes, and
/// the stop ends the thread: those run alone).
fn batched(op: &Op) -> bool {
    !matches!(op, Op::Resync { .. } | Op::Stop { .. })
}

/// Runs `ops` as one pipeline: each op's command(s) are queued in order, sent in one
/// write, and their replies read back in order, so a batch of N ops costs one round trip
/// instead of N. A reply that is an error fails only its own op; a broken connection
/// fails them all (and the link).
fn run_batch(
    con: &mut Connection,
    t: &Target,
    ops: Vec<Op>,
    counters: &Counters,
    post: &impl Fn(BusEvent) -> bool,
) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for op in &ops {
        match op {
            Op::Publish(message) => {
                pipe.publish(&t.channel, message);
            }
            Op::Join {
                room, id, entry, ..
            } => {
                pipe.hset(t.members_key(room), id, entry);
            }
            Op::Leave { room, id, .. } => {
                pipe.hdel(t.members_key(room), id);
            }
            Op::AddRooms(rooms) if rooms.is_empty() => {}
            Op::AddRooms(rooms) => {
                pipe.sadd(&t.rooms_key, rooms);
            }
            Op::DestroyRoom(room) => {
                pipe.srem(&t.rooms_key, room).del(t.members_key(room));
            }
            Op::Query {
                query: Query::RoomExists(room),
                ..
            } => {
                pipe.sismember(&t.rooms_key, room);
            }
            Op::Query {
                query: Query::Members(room),
                ..
            } => {
                pipe.hgetall(t.members_key(room));
            }
            Op::Resync { .. } | Op::Stop { .. } => {
                debug_assert!(false, "run alone, never batched");
            }
        }
    }
    let replies: Vec<RedisResult<redis::Value>> = match pipe.query(con) {
        Ok(r) => r,
        Err(e) => {
            for op in ops {
                while_down(op, counters, post);
            }
            return Err(e);
        }
    };
    let mut replies = replies.into_iter();
    let mut next = || {
        replies
            .next()
            .unwrap_or_else(|| Err(std::io::Error::other("a reply is missing").into()))
    };
    for op in ops {
        match op {
            Op::Publish(_) => {
                let counter = match next() {
                    Ok(_) => &counters.published,
                    Err(_) => &counters.publish_failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Op::Join { ticket, .. } | Op::Leave { ticket, .. } => {
                if let Err(e) = written(next().map(drop), ticket, post) {
                    log::debug!("cluster: membership write failed: {e}");
                }
            }
            Op::AddRooms(rooms) if rooms.is_empty() => {}
            Op::AddRooms(_) => {
                if let Err(e) = next() {
                    log::warn!("cluster: rooms not added in Redis: {e}");
                }
            }
            Op::DestroyRoom(room) => {
                if let Err(e) = next().and_then(|_| next()) {
                    log::warn!("cluster: room {room} not removed from Redis: {e}");
                }
            }
            Op::Query { ticket, query } => {
                let reply = next();
                let answer = match query {
                    Query::RoomExists(_) => reply
                        .and_then(|v| Ok(redis::from_redis_value(v)?))
                        .map(Answer::RoomExists),
                    Query::Members(_) => reply
                        .and_then(|v| Ok(redis::from_redis_value(v)?))
                        .map(Answer::Members),
                };
                // A verb waits for this: it is answered even when Redis failed.
                post(BusEvent::Answer {
                    ticket,
                    answer: answer.unwrap_or(Answer::Unavailable),
                });
            }
            Op::Resync { .. } | Op::Stop { .. } => {}
        }
    }
    Ok(())
}

/// An op that arrives while the link is down.
fn while_down(op: Op, counters: &Counters, post: &impl Fn(BusEvent) -> bool) {
    match op {
        Op::Publish(_) => {
            counters.publish_failed.fetch_add(1, Ordering::Relaxed);
        }
        Op::Query { ticket, .. }
        | Op::Join {
            ticket: Some(ticket),
            ..
        }
        | Op::Leave {
            ticket: Some(ticket),
            ..
        } => {
            post(BusEvent::Answer {
                ticket,
                answer: Answer::Unavailable,
            });
        }
        // Re-synced when the link is back.
        Op::Join { .. }
        | Op::Leave { .. }
        | Op::AddRooms(_)
        | Op::DestroyRoom(_)
        | Op::Resync { .. }
        | Op::Stop { .. } => {}
    }
}

/// Runs an op that is not batched: a re-sync, or the farewell.
fn run(
    con: &mut Connection,
    t: &Target,
    op: Op,
    counters: &Counters,
    post: &impl Fn(BusEvent) -> bool,
) -> RedisResult<()> {
    match op {
        Op::Resync { live } => resync(con, t, live),
        Op::Stop { farewell } => con.publish::<_, _, i64>(&t.channel, farewell).map(drop),
        other => run_batch(con, t, vec![other], counters, post),
    }
}

/// A membership write's outcome, told to the verb that waits for it (if any).
fn written(
    r: RedisResult<()>,
    ticket: Option<u64>,
    post: &impl Fn(BusEvent) -> bool,
) -> RedisResult<()> {
    if let Some(ticket) = ticket {
        let answer = if r.is_ok() {
            Answer::Written
        } else {
            Answer::Unavailable
        };
        post(BusEvent::Answer { ticket, answer });
    }
    r
}

/// Removes this node's members that are not live (left behind by a crash, or while the
/// link was down), then writes every live one.
fn resync(
    con: &mut Connection,
    t: &Target,
    live: Vec<(Arc<str>, String, String)>,
) -> RedisResult<()> {
    let live_ids: std::collections::HashSet<(&str, &str)> =
        live.iter().map(|(r, id, _)| (&**r, id.as_str())).collect();
    let rooms: Vec<String> = con.smembers(&t.rooms_key)?;
    let mut stale = 0usize;
    for room in &rooms {
        let members: Vec<(String, String)> = con.hgetall(t.members_key(room))?;
        let gone: Vec<&str> = members
            .iter()
            .filter(|(id, entry)| {
                host_of(entry).as_deref() == Some(t.server_id.as_str())
                    && !live_ids.contains(&(room.as_str(), id.as_str()))
            })
            .map(|(id, _)| id.as_str())
            .collect();
        if !gone.is_empty() {
            stale += gone.len();
            con.hdel::<_, _, ()>(t.members_key(room), gone)?;
        }
    }
    if !live.is_empty() {
        let mut pipe = redis::pipe();
        for (room, id, entry) in &live {
            pipe.hset(t.members_key(room), id, entry).ignore();
        }
        pipe.query::<()>(con)?;
    }
    if stale > 0 {
        log::info!(
            "cluster: removed {stale} members this node ({}) had left in Redis",
            t.server_id
        );
    }
    Ok(())
}

/// The `host` of a member entry.
fn host_of(entry: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(entry).ok()?;
    Some(v.get("host")?.as_str()?.to_owned())
}

/// The subscriber thread's body: until `stop` is set or the loop is gone.
pub(crate) fn subscriber(
    target: Target,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    post: impl Fn(BusEvent) -> bool,
) {
    let mut link = LinkReporter {
        part: Part::Subscriber,
        up: None,
        post: &post,
    };
    let mut backoff = BACKOFF_FIRST;
    while !stop.load(Ordering::Relaxed) {
        let failure = match listen(&target, &counters, &stop, &post, &mut link) {
            Ok(()) => return, // stopped, or the loop is gone
            Err(e) => e,
        };
        link.report(false, failure.to_string());
        std::thread::sleep(backoff.min(STOP_POLL));
        backoff = (backoff * 2).min(BACKOFF_CAP);
        counters.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

fn listen<F: Fn(BusEvent) -> bool>(
    t: &Target,
    counters: &Counters,
    stop: &AtomicBool,
    post: &F,
    link: &mut LinkReporter<&F>,
) -> RedisResult<()> {
    let mut con = t.client.get_connection_with_timeout(IO_TIMEOUT)?;
    let mut pubsub = con.as_pubsub();
    pubsub.subscribe(&t.channel)?;
    pubsub.set_read_timeout(Some(STOP_POLL))?;
    link.report(true, String::new());
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let msg = match pubsub.get_message() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Err(e),
        };
        counters.received.fetch_add(1, Ordering::Relaxed);
        match wire::parse(msg.get_payload_bytes(), &t.token) {
            Ok(incoming) => {
                if !post(BusEvent::Received(Box::new(incoming))) {
                    return Ok(());
                }
            }
            Err(why) => {
                counters.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
                log::debug!("cluster: bus message dropped ({})", why.label());
            }
        }
    }
}
