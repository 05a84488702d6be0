//! Rooms and chat on the loop: the room verbs, `say`, and what server code asks for
//! (broadcast, send to one connection, create and destroy rooms), with chat middleware
//! around each (see `hooks.rs`).
//!
//! A message is encoded once and shared by every member's output queue, unless some
//! middleware looks at each recipient: then each member gets its own copy.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actionwire_proto::encode::{self, From};
use actionwire_proto::request;
use actionwire_reactor::ConnId;
use serde_json::Value;

use super::cluster::{Ack, Wait};
use super::socket::{socket, socket_mut};
use super::{AppCore, State};
use crate::actions::Effects;
use crate::cluster::Query;
use crate::cluster::calls::{CallError, OutCall};
use crate::connection::ConnectionInfo;
use crate::hooks::{ChatMessage, HookKind, ServerCommand};
use crate::rooms::{AddError, JoinError};
use crate::time::now_ms;
use actionwire_proto::scanner::Flow;

/// What a destroyed room's members are told (actionhero's text).
const ROOM_DELETED: &str = "this room has been deleted";

impl State {
    /// The room count and names server code reads, after any change to the set of rooms.
    pub(super) fn rooms_changed(&mut self) {
        self.api.rooms.store(self.rooms.len(), Ordering::Relaxed);
        if self.rooms_seen != self.rooms.version() {
            self.rooms_seen = self.rooms.version();
            let names = self.rooms.names();
            *self
                .api
                .room_names
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = names;
        }
    }

    /// `roomAdd` (`change`: `roomChange`, which first leaves every other room). In a
    /// cluster, a room unknown here is looked up in Redis first (`asked`: it was): the
    /// connection's input pauses until the answer ([`Flow::Pause`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn room_join(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        room: &str,
        change: bool,
        count: u64,
        mid: &str,
        asked: bool,
    ) -> Flow {
        self.room_join_now(core, id, room, change, count, mid, asked);
        if self.waits_on(id) {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn room_join_now(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        room: &str,
        change: bool,
        count: u64,
        mid: &str,
        asked: bool,
    ) {
        let Some(s) = socket(core, id) else {
            return;
        };
        let (uuid, info) = (s.uuid(), s.info());
        let in_rooms = s.rooms().len();
        if !self.rooms.can_join(room) {
            if !asked && !room.is_empty() {
                let wait = Wait::Join {
                    conn: id,
                    room: room.to_owned(),
                    change,
                    count,
                    mid: mid.to_owned(),
                };
                if self.ask_cluster(core, Query::RoomExists(room.to_owned()), wait) {
                    return;
                }
            }
            return self.error(core, id, "room does not exist", count, mid);
        }
        if !change && in_rooms >= self.settings.max_rooms && !self.rooms.is_member(room, id) {
            let text = format!(
                "too many rooms on this connection (limit {})",
                self.settings.max_rooms
            );
            return self.error(core, id, &text, count, mid);
        }
        if self.rooms.is_member(room, id) && !change {
            let text = format!("connection already in this room ({room})");
            return self.error(core, id, &text, count, mid);
        }
        // Middleware decides before anything changes: joining, and for `roomChange` leaving
        // each room it would leave.
        if let Err(text) = self.hooks.room(HookKind::Join, &info, room) {
            return self.error(core, id, &text, count, mid);
        }
        if change {
            for left in info.rooms().filter(|r| *r != room) {
                if let Err(text) = self.hooks.room(HookKind::Leave, &info, left) {
                    return self.error(core, id, &text, count, mid);
                }
            }
            self.leave_all(core, id, false);
        }
        // A live snapshot would make the session copy its state on the change below.
        drop(info);
        let (known, joined_at) = (self.rooms.contains(room), now_ms());
        match self.rooms.join(room, id, uuid, joined_at) {
            Ok(name) => {
                if !known {
                    self.room_created(&name);
                }
                let ack = Ack {
                    conn: id,
                    count,
                    mid,
                };
                let waits = self.member_joined(core, &name, uuid, joined_at, Some(ack));
                if let Some(s) = socket_mut(core, id) {
                    s.state_mut().rooms.push(name);
                }
                self.rooms_changed();
                if !waits {
                    self.ok(core, id, &true, count, mid);
                }
            }
            Err(JoinError::AlreadyMember) => {
                let text = format!("connection already in this room ({room})");
                self.error(core, id, &text, count, mid);
            }
            Err(JoinError::NoSuchRoom) => self.error(core, id, "room does not exist", count, mid),
            Err(JoinError::TooManyRooms { limit }) => {
                let text = format!("too many rooms on this server (limit {limit})");
                self.error(core, id, &text, count, mid);
            }
        }
    }

    /// `roomLeave` (in a cluster, the OK waits for Redis to drop the member).
    pub(super) fn room_leave(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        room: &str,
        count: u64,
        mid: &str,
    ) -> Flow {
        let Some(info) = socket(core, id).map(|s| s.info()) else {
            return Flow::Continue;
        };
        if !self.rooms.is_member(room, id) {
            let text = format!("connection not in this room ({room})");
            self.error(core, id, &text, count, mid);
            return Flow::Continue;
        }
        if let Err(text) = self.hooks.room(HookKind::Leave, &info, room) {
            self.error(core, id, &text, count, mid);
            return Flow::Continue;
        }
        drop(info);
        let ack = Ack {
            conn: id,
            count,
            mid,
        };
        if self.remove_member(core, id, room, Some(ack)) {
            return Flow::Pause;
        }
        self.ok(core, id, &true, count, mid);
        Flow::Continue
    }

    /// Takes `id` out of `room` (index, the connection's own list, the cluster); true when
    /// `ack`'s reply waits for Redis.
    pub(super) fn remove_member(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        room: &str,
        ack: Option<Ack<'_>>,
    ) -> bool {
        let mut waits = false;
        if let Some(uuid) = self.rooms.member_uuid(room, id) {
            waits = self.member_left(core, room, uuid, ack);
        }
        self.rooms.leave(room, id);
        if let Some(s) = socket_mut(core, id)
            && s.rooms().iter().any(|r| &**r == room)
        {
            s.state_mut().rooms.retain(|r| &**r != room);
        }
        self.rooms_changed();
        waits
    }

    /// Leaves every room (quit, close, `roomChange`). With `notify`, `leave` middleware
    /// hears of each room; it cannot keep the connection in.
    pub(super) fn leave_all(&mut self, core: &mut AppCore, id: ConnId, notify: bool) {
        let Some(s) = socket_mut(core, id) else {
            return;
        };
        if s.rooms().is_empty() {
            return;
        }
        if notify {
            // The connection is leaving whatever the middleware says.
            let info = s.info();
            for room in info.rooms() {
                let _ = self.hooks.room(HookKind::Leave, &info, room);
            }
        }
        let uuid = s.uuid();
        let rooms = std::mem::take(&mut s.state_mut().rooms);
        for room in &rooms {
            self.member_left(core, room, uuid, None);
            self.rooms.leave(room, id);
        }
        self.rooms_changed();
    }

    /// Puts `id` in `room` for a cluster call (`api.chatRoom.addMember`): no middleware,
    /// as for server code. False when it cannot join.
    pub(super) fn add_member(&mut self, core: &mut AppCore, id: ConnId, room: &str) -> bool {
        let Some(uuid) = socket(core, id).map(|s| s.uuid()) else {
            return false;
        };
        let joined_at = now_ms();
        let Ok(name) = self.rooms.join(room, id, uuid, joined_at) else {
            return false;
        };
        self.member_joined(core, &name, uuid, joined_at, None);
        if let Some(s) = socket_mut(core, id) {
            s.state_mut().rooms.push(name);
        }
        self.rooms_changed();
        true
    }

    /// `roomView`: in a cluster, every node's members, from Redis (the connection's input
    /// pauses until the answer).
    pub(super) fn room_view(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        room: &str,
        count: u64,
        mid: &str,
    ) -> Flow {
        let room: Arc<str> = if room.is_empty() {
            match socket(core, id).map(|s| s.rooms()) {
                Some([only]) => Arc::clone(only),
                _ => {
                    self.error(core, id, "a room is required", count, mid);
                    return Flow::Continue;
                }
            }
        } else {
            Arc::from(room)
        };
        if self.rooms.is_member(&room, id) {
            let wait = Wait::View {
                conn: id,
                room: Arc::clone(&room),
                count,
                mid: mid.to_owned(),
            };
            if self.ask_cluster(core, Query::Members(room.to_string()), wait) {
                return Flow::Pause;
            }
            let view = self.rooms.view(&room);
            self.ok(core, id, &view, count, mid);
        } else {
            self.error(
                core,
                id,
                &format!("connection not in this room ({room})"),
                count,
                mid,
            );
        }
        Flow::Continue
    }

    /// `say room message`: the sender's OK, then the message to every member (the
    /// sender's own copy after its OK, both going through its queue in this order).
    pub(super) fn say(
        &mut self,
        core: &mut AppCore,
        id: ConnId,
        args: &str,
        count: u64,
        mid: &str,
    ) {
        let Some((room, message)) = request::say(args) else {
            return self.error(core, id, "both room and message are required", count, mid);
        };
        if !self.rooms.is_member(room, id) {
            let text = format!("connection not in this room ({room})");
            return self.error(core, id, &text, count, mid);
        }
        let Some(info) = socket(core, id).map(|s| s.info()) else {
            return;
        };
        let mut msg = ChatMessage {
            room: room.to_owned(),
            message: Value::String(message.to_owned()),
            from: Some(info.id),
            sent_at: now_ms(),
        };
        if let Err(text) = self.hooks.on_say_receive(Some(&info), &mut msg) {
            return self.error(core, id, &text, count, mid);
        }
        self.ok(core, id, &Value::Null, count, mid);
        self.deliver(core, &msg);
        self.publish_chat(&msg);
    }

    /// A chat line to every member of `msg.room` here: encoded once, or per member when
    /// `say` middleware looks at each recipient.
    pub(super) fn deliver(&mut self, core: &mut AppCore, msg: &ChatMessage) {
        self.metrics.chat_messages += 1;
        let encode = |m: &ChatMessage| {
            let mut line = Vec::with_capacity(128);
            let from = m.from.map(|u| u.to_string());
            let from = from.as_deref().map_or(From::Server, From::Connection);
            encode::chat(&mut line, &m.message, &m.room, from, m.sent_at);
            line
        };
        let members: Vec<ConnId> = self.rooms.members(&msg.room).collect();
        if !self.hooks.has_say() {
            let line: Arc<[u8]> = Arc::from(encode(msg));
            for member in members {
                core.send_shared(member, &line);
                self.metrics.chat_deliveries += 1;
            }
            return;
        }
        for member in members {
            let Some(recipient) = socket(core, member).map(|s| s.info()) else {
                continue;
            };
            let mut copy = msg.clone();
            if self.hooks.say(&recipient, &mut copy) {
                core.send_owned(member, encode(&copy));
                self.metrics.chat_deliveries += 1;
            }
        }
    }

    /// What an action asked for, applied before its reply is written.
    pub(super) fn apply_effects(&mut self, core: &mut AppCore, id: ConnId, effects: Effects) {
        if !effects.data.is_empty()
            && let Some(s) = socket_mut(core, id)
        {
            let data = &mut s.state_mut().data;
            for change in effects.data {
                change.apply(data);
            }
        }
        for command in effects.commands {
            self.command(core, command);
        }
    }

    /// One command from server code.
    pub(super) fn command(&mut self, core: &mut AppCore, command: ServerCommand) {
        match command {
            ServerCommand::Broadcast { room, message } => {
                let mut msg = ChatMessage {
                    room,
                    message,
                    from: None,
                    sent_at: now_ms(),
                };
                match self.hooks.on_say_receive(None, &mut msg) {
                    Ok(()) => {
                        self.deliver(core, &msg);
                        self.publish_chat(&msg);
                    }
                    Err(text) => log::debug!("broadcast to {} dropped: {text}", msg.room),
                }
            }
            ServerCommand::Send { to, message } => match self.by_uuid.get(&to) {
                Some(&member) => {
                    let mut line = Vec::with_capacity(64);
                    encode::write_json(&mut line, &message);
                    line.extend_from_slice(b"\r\n");
                    core.send_owned(member, line);
                }
                // Another node may hold it: actionhero's `api.connections.apply`.
                None if self.cluster.is_some() => {
                    let args = vec![
                        Value::String(to.to_string()),
                        Value::String("sendMessage".into()),
                        message,
                    ];
                    let done = move |r: Result<Option<Value>, CallError>| {
                        if let Err(e) = r {
                            log::debug!("message for {to} not delivered by the cluster: {e}");
                        }
                    };
                    self.cluster_call(
                        core,
                        OutCall {
                            method: "api.connections.applyResponder".into(),
                            connection_id: Some(to),
                            args,
                            done: Box::new(done),
                        },
                    );
                }
                None => log::debug!("message for {to} dropped: no such connection here"),
            },
            ServerCommand::AddRoom(room) => match self.rooms.add(&room) {
                Ok(()) => {
                    self.rooms_changed();
                    self.room_created(&room);
                }
                Err(AddError::Exists) => log::debug!("room {room} exists already"),
                Err(e) => log::warn!("cannot create room {room:?}: {e:?}"),
            },
            ServerCommand::DestroyRoom(room) => self.destroy_room(core, &room),
        }
    }

    /// Tells the members, removes them (their `leave` middleware hears of it), deletes the
    /// room.
    fn destroy_room(&mut self, core: &mut AppCore, room: &str) {
        if !self.rooms.contains(room) {
            log::debug!("cannot destroy room {room}: it does not exist");
            return;
        }
        let msg = ChatMessage {
            room: room.to_owned(),
            message: Value::String(ROOM_DELETED.to_owned()),
            from: None,
            sent_at: now_ms(),
        };
        self.deliver(core, &msg);
        self.publish_chat(&msg);
        self.room_destroyed(room);
        let members = self.rooms.destroy(room).unwrap_or_default();
        for member in members {
            let Some(s) = socket_mut(core, member) else {
                continue;
            };
            let info = s.info();
            let _ = self.hooks.room(HookKind::Leave, &info, room);
            drop(info);
            s.state_mut().rooms.retain(|r| &**r != room);
        }
        self.rooms_changed();
    }

    /// Runs `create` middleware for a new socket connection; the refusal's text when it
    /// refuses.
    pub(super) fn connection_created(&mut self, core: &mut AppCore, id: ConnId) -> Option<String> {
        let s = socket_mut(core, id)?;
        self.by_uuid.insert(s.uuid(), id);
        if !self.hooks.has_connection_hooks() {
            s.created = true;
            return None;
        }
        let info = s.info();
        let mut data = serde_json::Map::new();
        let verdict = self.hooks.create(&info, &mut data);
        let s = socket_mut(core, id)?;
        if !data.is_empty() {
            s.state_mut().data = data;
        }
        match verdict {
            Ok(()) => {
                s.created = true;
                None
            }
            Err(text) => Some(text),
        }
    }

    /// A socket connection closed: out of every room and the id index; `destroy`
    /// middleware when `create` accepted it.
    pub(super) fn connection_closed(&mut self, info: &ConnectionInfo, created: bool, reason: &str) {
        self.by_uuid.remove(&info.id);
        if created {
            self.hooks.destroy(info, reason);
        }
    }
}
