//! Chat rooms, indexed room → members so that `say` costs O(members).
//!
//! Rooms from `startingChatRooms` and rooms server code adds live until server code destroys
//! them. With `autoCreateRooms`, a client may create a room by joining it; such a room is
//! removed when its last member leaves, so client-created rooms cannot accumulate.

use std::collections::HashMap;
use std::sync::Arc;

use actionwire_reactor::ConnId;
use serde_json::{Map, Value, json};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
struct Member {
    uuid: Uuid,
    joined_at: u64,
}

#[derive(Debug, Default)]
struct Room {
    members: HashMap<ConnId, Member>,
    /// Created by a client's join (removed when empty), not from the configuration.
    ephemeral: bool,
}

/// Why joining failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    NoSuchRoom,
    AlreadyMember,
    /// Creating the room would exceed `maxRooms`.
    TooManyRooms {
        limit: usize,
    },
}

/// Why server code could not create a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddError {
    EmptyName,
    Exists,
    /// Creating the room would exceed `maxRooms`.
    TooManyRooms {
        limit: usize,
    },
}

/// Every room and its members.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: HashMap<Arc<str>, Room>,
    auto_create: bool,
    max_rooms: usize,
    /// Counts changes to the set of rooms (not to their members).
    version: u64,
}

impl Rooms {
    pub fn new<'a>(
        starting: impl IntoIterator<Item = &'a str>,
        auto_create: bool,
        max_rooms: usize,
    ) -> Rooms {
        let rooms = starting
            .into_iter()
            .map(|n| (Arc::from(n), Room::default()))
            .collect();
        Rooms {
            rooms,
            auto_create,
            max_rooms,
            version: 0,
        }
    }

    /// Changes whenever a room is created or removed.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every room's name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.rooms.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    /// Creates a room that stays until destroyed, even when empty.
    pub fn add(&mut self, name: &str) -> Result<(), AddError> {
        if name.is_empty() {
            return Err(AddError::EmptyName);
        }
        if self.rooms.contains_key(name) {
            return Err(AddError::Exists);
        }
        if self.rooms.len() >= self.max_rooms {
            return Err(AddError::TooManyRooms {
                limit: self.max_rooms,
            });
        }
        self.rooms.insert(Arc::from(name), Room::default());
        self.version += 1;
        Ok(())
    }

    /// Makes a room known here that exists elsewhere in the cluster (removed again when
    /// its last member here leaves). False when `maxRooms` is reached.
    pub fn learn(&mut self, name: &str) -> bool {
        if self.rooms.contains_key(name) {
            return true;
        }
        if name.is_empty() || self.rooms.len() >= self.max_rooms {
            return false;
        }
        self.rooms.insert(
            Arc::from(name),
            Room {
                members: HashMap::new(),
                ephemeral: true,
            },
        );
        self.version += 1;
        true
    }

    /// Rooms that stay when empty (configured or added by server code), by name.
    pub fn lasting_names(&self) -> impl Iterator<Item = String> + '_ {
        self.rooms
            .iter()
            .filter(|(_, r)| !r.ephemeral)
            .map(|(k, _)| k.to_string())
    }

    /// Every membership: room, member id, joined at (ms).
    pub fn all_members(&self) -> impl Iterator<Item = (Arc<str>, Uuid, u64)> + '_ {
        self.rooms.iter().flat_map(|(name, r)| {
            r.members
                .values()
                .map(move |m| (Arc::clone(name), m.uuid, m.joined_at))
        })
    }

    /// The id a member joined with (for write-through to the cluster).
    pub fn member_uuid(&self, name: &str, id: ConnId) -> Option<Uuid> {
        self.rooms.get(name)?.members.get(&id).map(|m| m.uuid)
    }

    /// Deletes a room; its members, or `None` when there was no such room.
    pub fn destroy(&mut self, name: &str) -> Option<Vec<ConnId>> {
        let room = self.rooms.remove(name)?;
        self.version += 1;
        let mut members: Vec<(ConnId, Member)> = room.members.into_iter().collect();
        members.sort_by_key(|(_, m)| (m.joined_at, m.uuid));
        Some(members.into_iter().map(|(id, _)| id).collect())
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Whether the room exists.
    pub fn contains(&self, name: &str) -> bool {
        self.rooms.contains_key(name)
    }

    /// True if the room exists or would be created by a join.
    pub fn can_join(&self, name: &str) -> bool {
        !name.is_empty() && (self.auto_create || self.rooms.contains_key(name))
    }

    pub fn is_member(&self, name: &str, id: ConnId) -> bool {
        self.rooms
            .get(name)
            .is_some_and(|r| r.members.contains_key(&id))
    }

    /// Adds a member; returns the room's shared name for the connection's own list.
    pub fn join(
        &mut self,
        name: &str,
        id: ConnId,
        uuid: Uuid,
        now_ms: u64,
    ) -> Result<Arc<str>, JoinError> {
        if !self.can_join(name) {
            return Err(JoinError::NoSuchRoom);
        }
        let key = match self.rooms.get_key_value(name) {
            Some((k, _)) => Arc::clone(k),
            None => {
                if self.rooms.len() >= self.max_rooms {
                    return Err(JoinError::TooManyRooms {
                        limit: self.max_rooms,
                    });
                }
                let k: Arc<str> = Arc::from(name);
                self.version += 1;
                self.rooms.insert(
                    Arc::clone(&k),
                    Room {
                        members: HashMap::new(),
                        ephemeral: true,
                    },
                );
                k
            }
        };
        let room = self.rooms.get_mut(&key).ok_or(JoinError::NoSuchRoom)?;
        if room.members.contains_key(&id) {
            return Err(JoinError::AlreadyMember);
        }
        room.members.insert(
            id,
            Member {
                uuid,
                joined_at: now_ms,
            },
        );
        Ok(key)
    }

    /// Removes a member; false if it was not in the room.
    pub fn leave(&mut self, name: &str, id: ConnId) -> bool {
        let Some(room) = self.rooms.get_mut(name) else {
            return false;
        };
        let was = room.members.remove(&id).is_some();
        if room.ephemeral && room.members.is_empty() {
            self.rooms.remove(name);
            self.version += 1;
        }
        was
    }

    /// Memberships over all rooms (O(rooms): for metrics, not the hot path).
    pub fn members_total(&self) -> usize {
        self.rooms.values().map(|r| r.members.len()).sum()
    }

    /// Members of a room (empty for a room that does not exist).
    pub fn members(&self, name: &str) -> impl Iterator<Item = ConnId> + '_ {
        self.rooms
            .get(name)
            .into_iter()
            .flat_map(|r| r.members.keys().copied())
    }

    /// `{"room":R,"members":{<id>:{"id","joinedAt"}},"membersCount":n}`, members in join order.
    pub fn view(&self, name: &str) -> Value {
        let mut list: Vec<&Member> = self
            .rooms
            .get(name)
            .map(|r| r.members.values().collect())
            .unwrap_or_default();
        list.sort_by_key(|m| (m.joined_at, m.uuid));
        let mut members = Map::new();
        for m in &list {
            let id = m.uuid.to_string();
            members.insert(id.clone(), json!({"id": id, "joinedAt": m.joined_at}));
        }
        json!({"room": name, "members": members, "membersCount": list.len()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (ConnId, ConnId) {
        // ConnIds are only minted by the reactor; tests borrow two from a slab-free source.
        (
            actionwire_reactor::ConnId::for_tests(1, 1),
            actionwire_reactor::ConnId::for_tests(2, 1),
        )
    }

    #[test]
    fn join_leave_and_view() {
        let (a, b) = ids();
        let mut r = Rooms::new(["lobby"], false, 10);
        assert_eq!(
            r.join("nope", a, Uuid::nil(), 1),
            Err(JoinError::NoSuchRoom)
        );
        r.join("lobby", a, Uuid::new_v4(), 1).expect("join");
        assert_eq!(
            r.join("lobby", a, Uuid::nil(), 2),
            Err(JoinError::AlreadyMember)
        );
        r.join("lobby", b, Uuid::new_v4(), 2).expect("join");
        assert_eq!(r.view("lobby")["membersCount"], json!(2));
        assert_eq!(r.members("lobby").count(), 2);
        assert!(r.leave("lobby", a));
        assert!(!r.leave("lobby", a));
        assert_eq!(r.len(), 1, "configured rooms stay when empty");
    }

    #[test]
    fn server_code_adds_rooms_that_stay_and_destroys_them_with_their_members() {
        let (a, b) = ids();
        let mut r = Rooms::new(["lobby"], false, 3);
        let v = r.version();
        assert_eq!(r.add(""), Err(AddError::EmptyName));
        assert_eq!(r.add("lobby"), Err(AddError::Exists));
        r.add("vip").expect("added");
        assert!(r.version() > v);
        assert_eq!(r.names(), ["lobby", "vip"]);
        r.join("vip", b, Uuid::new_v4(), 1).expect("join");
        r.join("vip", a, Uuid::new_v4(), 2).expect("join");
        assert!(r.leave("vip", a));
        assert_eq!(r.len(), 2, "an added room stays when empty");
        r.join("vip", a, Uuid::new_v4(), 3).expect("join");
        r.add("third").expect("added");
        assert_eq!(r.add("fourth"), Err(AddError::TooManyRooms { limit: 3 }));
        let v = r.version();
        assert_eq!(r.destroy("vip"), Some(vec![b, a]), "members in join order");
        assert!(r.version() > v);
        assert_eq!(r.destroy("vip"), None);
        assert!(!r.can_join("vip"));
    }

    #[test]
    fn auto_created_rooms_vanish_when_empty() {
        let (a, _) = ids();
        let mut r = Rooms::new([], true, 1);
        assert!(!r.can_join(""));
        r.join("fresh", a, Uuid::nil(), 1).expect("created");
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.join("another", a, Uuid::nil(), 1),
            Err(JoinError::TooManyRooms { limit: 1 })
        );
        assert!(r.leave("fresh", a));
        assert_eq!(r.len(), 0);
    }
}
