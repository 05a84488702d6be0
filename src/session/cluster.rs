//! The session layer's side of the cluster: what the loop does with the bus's events
//! (link changes, chat and cluster calls from other nodes, answers to its questions), and
//! the write-through of this node's room members to Redis.
//!
//! A verb whose answer needs Redis (`roomView`, and `roomAdd` of a room this node does not
//! know) pauses its connection's input: the reply comes when Redis answers, and the
//! lines after it are read only then, so replies keep their order and a `say` right after
//! a `roomAdd` finds the connection in the room.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actionwire_proto::ScanConfig;
use actionwire_proto::scanner::Flow;
use actionwire_reactor::ConnId;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{AppCore, AppEvent, State};
use crate::cluster::calls::{CallError, OutCall, Outcome};
use crate::cluster::wire::{self, BusChat, Call, Incoming, Sender};
use crate::cluster::{Answer, BusEvent, Op, Query};
use crate::hooks::ChatMessage;

/// A verb waiting for Redis.
#[derive(Debug)]
pub(super) enum Wait {
    View {
        conn: ConnId,
        room: Arc<str>,
        count: u64,
        mid: String,
    },
    Join {
        conn: ConnId,
        room: String,
        change: bool,
        count: u64,
        mid: String,
    },
    /// `roomAdd`/`roomLeave` done here: the OK waits for the membership write.
    Written {
        conn: ConnId,
        count: u64,
        mid: String,
    },
}

impl Wait {
    fn conn(&self) -> ConnId {
        match self {
            Wait::View { conn, .. } | Wait::Join { conn, .. } | Wait::Written { conn, .. } => *conn,
        }
    }
}

/// A verb whose OK (`true`) may wait for a membership write.
pub(super) struct Ack<'a> {
    pub conn: ConnId,
    pub count: u64,
    pub mid: &'a str,
}

impl State {
    /// Starts the bus threads (the socket listener is bound: the server id is known).
    pub(super) fn cluster_start(&mut self, core: &mut AppCore) {
        let server_id = self.api.server_id().to_owned();
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let events = core.event_sender();
        // The bus waits when the loop's queue is full rather than losing a message; it
        // stops once the loop has.
        let post = move |e: BusEvent| events.send(AppEvent::Bus(e)).is_ok();
        match cluster.start(server_id, post) {
            Ok(()) => {
                let _ = self.api.cluster.set(Arc::clone(&cluster.counters));
            }
            Err(e) => log::error!("cluster: cannot start the Redis threads: {e}"),
        }
    }

    pub(super) fn on_bus(&mut self, scan: &ScanConfig, core: &mut AppCore, event: BusEvent) {
        match event {
            BusEvent::Link { part, up, detail } => self.link_changed(part, up, &detail),
            BusEvent::Received(incoming) => match *incoming {
                Incoming::Chat(chat) => self.bus_chat(core, chat),
                Incoming::Do(call) => self.bus_call(core, call),
                Incoming::DoResponse {
                    message_id,
                    response,
                } => self.call_answered(core, &message_id, response),
            },
            BusEvent::Answer { ticket, answer } => self.answered(scan, core, ticket, answer),
        }
    }

    fn link_changed(&mut self, part: crate::cluster::Part, up: bool, detail: &str) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let Some((now, first)) = cluster.link(part, up) else {
            return;
        };
        cluster.counters.link_up.store(now, Ordering::Relaxed);
        let url = cluster.settings.redis.display_url();
        if !now {
            log::warn!(
                "cluster: link to {url} down ({detail}); serving from local state and reconnecting"
            );
            return;
        }
        log::info!(
            "cluster: linked to {url} as {} on channel {}",
            cluster.identity.server_id,
            cluster.settings.channel
        );
        // Rooms this node knows exist cluster-wide; its live members replace whatever it
        // left in Redis before (a crash, or while the link was down).
        // The configured rooms are among the lasting ones (unless server code destroyed one).
        cluster.send(Op::AddRooms(self.rooms.lasting_names().collect()));
        let host = cluster.identity.server_id.clone();
        let live = self
            .rooms
            .all_members()
            .map(|(room, uuid, joined)| {
                let id = uuid.to_string();
                let entry = wire::member_entry(&id, joined, &host);
                (room, id, entry)
            })
            .collect();
        cluster.send(Op::Resync { live });
        if first {
            let hello =
                cluster.announcement(&format!("actionhero member {host} has joined the cluster"));
            cluster.publish(hello);
        }
    }

    /// A member joined a room here: written through to Redis. With `ack`, the verb's OK
    /// waits for the write: true when it does (the connection's input pauses).
    pub(super) fn member_joined(
        &mut self,
        core: &mut AppCore,
        room: &Arc<str>,
        uuid: Uuid,
        joined_at: u64,
        ack: Option<Ack<'_>>,
    ) -> bool {
        let Some(cluster) = self.cluster.as_mut().filter(|c| c.is_up()) else {
            return false;
        };
        let id = uuid.to_string();
        let entry = wire::member_entry(&id, joined_at, &cluster.identity.server_id);
        let ticket = ack.as_ref().map(|_| cluster.ticket());
        let room = Arc::clone(room);
        let sent = cluster.send(Op::Join {
            room,
            id,
            entry,
            ticket,
        });
        self.wait_written(core, sent, ticket, ack)
    }

    /// A member left a room here (leave, disconnect, shutdown); `ack` as for a join.
    pub(super) fn member_left(
        &mut self,
        core: &mut AppCore,
        room: &str,
        uuid: Uuid,
        ack: Option<Ack<'_>>,
    ) -> bool {
        let Some(cluster) = self.cluster.as_mut().filter(|c| c.is_up()) else {
            return false;
        };
        let ticket = ack.as_ref().map(|_| cluster.ticket());
        let sent = cluster.send(Op::Leave {
            room: Arc::from(room),
            id: uuid.to_string(),
            ticket,
        });
        self.wait_written(core, sent, ticket, ack)
    }

    fn wait_written(
        &mut self,
        core: &mut AppCore,
        sent: bool,
        ticket: Option<u64>,
        ack: Option<Ack<'_>>,
    ) -> bool {
        let (true, Some(ticket), Some(ack)) = (sent, ticket, ack) else {
            return false;
        };
        core.pause_reading(ack.conn);
        let wait = Wait::Written {
            conn: ack.conn,
            count: ack.count,
            mid: ack.mid.to_owned(),
        };
        self.waits.insert(ticket, wait);
        true
    }

    /// A room was created (server code, or a client with `autoCreateRooms`).
    pub(super) fn room_created(&mut self, room: &str) {
        if let Some(cluster) = &mut self.cluster {
            cluster.send(Op::AddRooms(vec![room.to_owned()]));
        }
    }

    /// A room was destroyed by server code here: gone from the cluster's set too.
    pub(super) fn room_destroyed(&mut self, room: &str) {
        if let Some(cluster) = &mut self.cluster {
            cluster.send(Op::DestroyRoom(room.to_owned()));
        }
    }

    /// A chat message delivered here goes to the other nodes.
    pub(super) fn publish_chat(&mut self, msg: &ChatMessage) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let from = msg.from.map(|u| u.to_string());
        let sender = from.as_deref().map_or(Sender::Server, Sender::Connection);
        let text = cluster
            .identity
            .chat(&msg.room, &msg.message, sender, msg.sent_at);
        cluster.publish(text);
    }

    /// Asks Redis on behalf of a verb; true when the verb now waits for the answer.
    pub(super) fn ask_cluster(&mut self, core: &mut AppCore, query: Query, wait: Wait) -> bool {
        let Some(ticket) = self.cluster.as_mut().and_then(|c| c.ask(query)) else {
            return false;
        };
        core.pause_reading(wait.conn());
        self.waits.insert(ticket, wait);
        true
    }

    /// Whether a verb of `id` waits for Redis.
    pub(super) fn waits_on(&self, id: ConnId) -> bool {
        !self.waits.is_empty() && self.waits.values().any(|w| w.conn() == id)
    }

    fn answered(&mut self, scan: &ScanConfig, core: &mut AppCore, ticket: u64, answer: Answer) {
        let Some(wait) = self.waits.remove(&ticket) else {
            return;
        };
        let conn = wait.conn();
        if !core.is_open(conn) {
            return;
        }
        let flow = match wait {
            Wait::View {
                room, count, mid, ..
            } => {
                match answer {
                    Answer::Members(entries) => {
                        let view = cluster_view(&room, entries);
                        self.ok(core, conn, &view, count, &mid);
                    }
                    // The link went down meanwhile: this node's members.
                    _ => {
                        let view = self.rooms.view(&room);
                        self.ok(core, conn, &view, count, &mid);
                    }
                }
                Flow::Continue
            }
            Wait::Join {
                room,
                change,
                count,
                mid,
                ..
            } => {
                if answer == Answer::RoomExists(true) {
                    // Another node created it: known here from now on.
                    self.rooms.learn(&room);
                    self.rooms_changed();
                }
                self.room_join(core, conn, &room, change, count, &mid, true)
            }
            // Written, or the link went down meanwhile (re-synced when it is back): the
            // membership here is what the verb changed.
            Wait::Written { count, mid, .. } => {
                self.ok(core, conn, &true, count, &mid);
                Flow::Continue
            }
        };
        if flow == Flow::Continue {
            self.resume_lines(scan, core, conn);
        }
    }

    /// A chat message from another node: to this node's members of its room.
    fn bus_chat(&mut self, core: &mut AppCore, chat: BusChat) {
        let me = self.cluster.as_ref().map(|c| c.identity.server_id.as_str());
        if chat.server_id.as_deref() == me {
            return; // delivered here when it was said
        }
        if !self.rooms.contains(&chat.room) {
            return;
        }
        // A complete message from a connection or the server goes through the `say`
        // middleware like local chat; anything else is passed on as it came.
        let from = match &chat.from {
            Some(Value::String(s)) => Uuid::parse_str(s).ok().map(Some),
            Some(v) if v.as_u64() == Some(0) => Some(None),
            _ => None,
        };
        if let (Some(message), Some(from), Some(sent_at)) = (
            &chat.message,
            from,
            chat.sent_at.as_ref().and_then(Value::as_u64),
        ) {
            let msg = ChatMessage {
                room: chat.room.clone(),
                message: message.clone(),
                from,
                sent_at,
            };
            return self.deliver(core, &msg);
        }
        let line: Arc<[u8]> = Arc::from(chat.line());
        let members: Vec<ConnId> = self.rooms.members(&chat.room).collect();
        self.metrics.chat_messages += 1;
        for member in members {
            core.send_shared(member, &line);
            self.metrics.chat_deliveries += 1;
        }
    }

    /// This node's own cluster call: published, then answered by the first `doResponse`
    /// with its id, or failed after `general.rpcTimeout`.
    pub(super) fn cluster_call(&mut self, core: &mut AppCore, call: OutCall) {
        let OutCall {
            method,
            connection_id,
            args,
            done,
        } = call;
        let Some(cluster) = &mut self.cluster else {
            done(Err(CallError::NoCluster));
            return;
        };
        let fail = |cluster: &crate::cluster::Cluster, why| {
            cluster.counters.count_call(Outcome::Failed(why));
            why
        };
        if !cluster.is_up() {
            done(Err(fail(cluster, CallError::Unavailable)));
            return;
        }
        if cluster.calls.is_full() {
            done(Err(fail(cluster, CallError::TooMany)));
            return;
        }
        let id = Uuid::new_v4().to_string();
        let connection = connection_id.map(|c| c.to_string());
        let text = cluster
            .identity
            .call(&id, &method, connection.as_deref(), &args);
        let timeout = cluster.settings.rpc_timeout;
        let timer = match core.set_timer(timeout, AppEvent::ClusterCallTimeout(id.clone())) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("cluster: call {method} not made: {e}");
                done(Err(fail(cluster, CallError::TooMany)));
                return;
            }
        };
        if !cluster.send(Op::Publish(text)) {
            core.cancel_timer(timer);
            done(Err(fail(cluster, CallError::Unavailable)));
            return;
        }
        cluster.calls.insert(id, done, timer);
    }

    /// A `doResponse`: the first answer to one of this node's calls completes it; later
    /// ones (every node answers a call without `connectionId`) and answers to calls of
    /// other nodes find nothing.
    fn call_answered(&mut self, core: &mut AppCore, message_id: &str, response: Option<Value>) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if let Some((done, timer)) = cluster.calls.take(message_id) {
            core.cancel_timer(timer);
            cluster.counters.count_call(Outcome::Answered);
            done(Ok(response));
        }
    }

    pub(super) fn cluster_call_timed_out(&mut self, message_id: &str) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if let Some((done, _)) = cluster.calls.take(message_id) {
            cluster
                .counters
                .count_call(Outcome::Failed(CallError::TimedOut));
            done(Err(CallError::TimedOut));
        }
    }

    /// A cluster call (`do`): acted on and answered when it is for this node.
    fn bus_call(&mut self, core: &mut AppCore, call: Call) {
        let held = |s: &State, id: &str| {
            let uuid = Uuid::parse_str(id).ok()?;
            s.by_uuid.get(&uuid).copied()
        };
        let local = |s: &State, id: Option<&Value>| held(s, id?.as_str()?);
        if let Some(c) = &call.connection_id
            && held(self, c).is_none()
        {
            return; // another node holds that connection
        }
        let args = &call.args;
        let answer: Option<Value> = match call.method.as_str() {
            "api.log" => {
                let text = args.first().and_then(Value::as_str).unwrap_or_default();
                log::info!("cluster: {text}");
                None
            }
            "api.chatRoom.removeMember" => {
                let (Some(conn), Some(room)) = (
                    local(self, args.first()),
                    args.get(1).and_then(Value::as_str),
                ) else {
                    return;
                };
                if !self.rooms.is_member(room, conn) {
                    return;
                }
                self.remove_member(core, conn, room, None);
                Some(Value::Bool(true))
            }
            "api.chatRoom.addMember" => {
                let (Some(conn), Some(room)) = (
                    local(self, args.first()),
                    args.get(1).and_then(Value::as_str),
                ) else {
                    return;
                };
                if !self.add_member(core, conn, room) {
                    return;
                }
                Some(Value::Bool(true))
            }
            "api.connections.applyResponder" => {
                let (Some(conn), Some("sendMessage"), Some(message)) = (
                    local(self, args.first()),
                    args.get(1).and_then(Value::as_str),
                    args.get(2),
                ) else {
                    return;
                };
                let mut line = Vec::with_capacity(64);
                actionwire_proto::encode::write_json(&mut line, message);
                line.extend_from_slice(b"\r\n");
                core.send_owned(conn, line);
                Some(Value::Bool(true))
            }
            other => {
                log::debug!(
                    "cluster: call {other} from {:?} not handled",
                    call.server_id
                );
                return;
            }
        };
        if let Some(cluster) = &mut self.cluster {
            let text = cluster.identity.response(&call.message_id, answer.as_ref());
            cluster.publish(text);
        }
    }
}

/// `roomView`'s object from the room's members in Redis: every node's, in join order,
/// each `{"id","joinedAt"}` (`host` left out).
fn cluster_view(room: &str, entries: Vec<(String, String)>) -> Value {
    let mut list: Vec<(u64, String)> = entries
        .into_iter()
        .map(|(id, entry)| {
            // Only `joinedAt` is read: the other fields are skipped, not built.
            #[derive(serde::Deserialize)]
            struct Joined {
                #[serde(rename = "joinedAt")]
                joined_at: Option<u64>,
            }
            let joined = serde_json::from_str::<Joined>(&entry)
                .ok()
                .and_then(|j| j.joined_at)
                .unwrap_or(0);
            (joined, id)
        })
        .collect();
    list.sort();
    let mut members = Map::new();
    for (joined, id) in &list {
        members.insert(id.clone(), json!({"id": id, "joinedAt": joined}));
    }
    json!({"room": room, "members": members, "membersCount": list.len()})
}
