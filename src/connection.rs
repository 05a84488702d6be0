//! What server code sees of a connection: [`ConnectionInfo`], a cheap snapshot handed to
//! actions and middleware, and the state behind it.
//!
//! A socket connection's rooms, sticky params and middleware data live in one
//! `ConnectionState` behind an `Arc` that the session shares copy-on-write: a snapshot is
//! a reference count, never a copy, and a connection that never sets anything allocates
//! nothing. The loop owns the state; actions read their snapshot and ask for changes
//! ([`crate::ActionData::set_connection_data`]), which the loop applies before their reply.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

/// A connection's rooms, sticky params and the data middleware and actions set on it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionState {
    /// Rooms joined, in join order.
    pub rooms: Vec<Arc<str>>,
    /// Sticky params in insertion order (few per connection: a vector beats a map).
    pub params: Vec<(String, String)>,
    /// Set by connection middleware at connect and by actions; never sent to the client.
    pub data: Map<String, Value>,
}

/// Who called an action, or whom a hook is about: the connection's id and address, and a
/// read-only snapshot of its rooms, sticky params and data as they were when the call
/// started. Cloning it is cheap (a reference count).
///
/// HTTP requests are stateless: their snapshot has no rooms, params or data.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The connection's id (`detailsView`'s `id`; format it with `to_string()`).
    pub id: Uuid,
    /// Peer address (from the PROXY protocol header when the listener expects one); IPv4
    /// peers on a dual-stack listener are reported as IPv4.
    pub remote: SocketAddr,
    state: Option<Arc<ConnectionState>>,
}

impl ConnectionInfo {
    pub(crate) fn new(
        id: Uuid,
        remote: SocketAddr,
        state: Option<Arc<ConnectionState>>,
    ) -> ConnectionInfo {
        ConnectionInfo { id, remote, state }
    }

    /// Rooms the connection is in, in join order.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.state.iter().flat_map(|s| s.rooms.iter().map(|r| &**r))
    }

    /// Whether the connection is in `room`.
    pub fn in_room(&self, room: &str) -> bool {
        self.rooms().any(|r| r == room)
    }

    /// A sticky param (`paramAdd`).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.state.as_ref().and_then(|s| {
            s.params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        })
    }

    /// Every sticky param, in the order they were first set.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.state
            .iter()
            .flat_map(|s| s.params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// A value set by connection middleware or by an earlier action.
    pub fn data(&self, key: &str) -> Option<&Value> {
        self.state.as_ref().and_then(|s| s.data.get(key))
    }

    /// This snapshot's own data, copied from the connection's on the first write (the
    /// connection itself changes when the loop applies the write).
    pub(crate) fn data_mut(&mut self) -> &mut Map<String, Value> {
        &mut Arc::make_mut(self.state.get_or_insert_with(Default::default)).data
    }

    /// Every value set on the connection, in the order first set.
    pub fn data_entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.state
            .iter()
            .flat_map(|s| s.data.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

/// A change to a connection's data, asked for by an action and applied by the loop before
/// the action's reply is written.
#[derive(Debug, Clone)]
pub(crate) enum DataChange {
    Set(String, Value),
    Remove(String),
}

impl DataChange {
    pub(crate) fn apply(self, data: &mut Map<String, Value>) {
        match self {
            DataChange::Set(k, v) => {
                data.insert(k, v);
            }
            DataChange::Remove(k) => {
                data.shift_remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_snapshot_reads_rooms_params_and_data_and_an_empty_one_reads_nothing() {
        let mut state = ConnectionState::default();
        state.rooms.push(Arc::from("lobby"));
        state.params.push(("name".into(), "evan".into()));
        DataChange::Set("authenticated".into(), json!(true)).apply(&mut state.data);
        DataChange::Set("gone".into(), json!(1)).apply(&mut state.data);
        DataChange::Remove("gone".into()).apply(&mut state.data);
        let remote = SocketAddr::from(([127, 0, 0, 1], 5000));
        let info = ConnectionInfo::new(Uuid::nil(), remote, Some(Arc::new(state)));
        assert_eq!(info.rooms().collect::<Vec<_>>(), ["lobby"]);
        assert!(info.in_room("lobby") && !info.in_room("other"));
        assert_eq!(info.param("name"), Some("evan"));
        assert_eq!(info.params().collect::<Vec<_>>(), [("name", "evan")]);
        assert_eq!(info.data("authenticated"), Some(&json!(true)));
        assert_eq!(info.data("gone"), None);
        assert_eq!(info.data_entries().count(), 1);

        let empty = ConnectionInfo::new(Uuid::nil(), remote, None);
        assert_eq!(empty.rooms().count(), 0);
        assert_eq!(empty.param("name"), None);
        assert_eq!(empty.data("authenticated"), None);
    }
}
