//! The cache behind `cacheTest`, available to user actions through [`Api`]: in this
//! process by default, in Redis (actionhero's keys and entry format) when the cluster is
//! on, so every node of the cluster, actionhero's included, sees the same entries.
//!
//! Both stores answer the same calls with the same errors (`Object not found`, `Object
//! expired`, `Object locked`), so an action does not know which one it talks to. With
//! Redis a call waits on the network: call the cache from an action that runs on the
//! workers (the default), never from one declared inline.
//!
//! [`Api`]: crate::Api

mod memory;
mod shared;

use std::sync::OnceLock;

use serde_json::{Value, json};

pub use memory::Memory;
pub(crate) use shared::Shared;

/// How long a lock holds when no duration is given (actionhero's `lockDuration`).
pub const DEFAULT_LOCK_MS: u64 = 10_000;

/// One cache entry, as `load` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Value,
    /// Milliseconds since the epoch when the entry expires (`None`: never).
    pub expire_timestamp: Option<u64>,
    pub created_at: u64,
    /// When the entry was read before this read (`None` on its first read), as
    /// actionhero's cache reports it.
    pub last_read_at: Option<u64>,
}

impl Entry {
    /// actionhero's answer to a load: `{"key","value","expireTimestamp","createdAt",
    /// "lastReadAt"}`.
    pub fn to_json(&self, key: &str) -> Value {
        json!({
            "key": key,
            "value": self.value,
            "expireTimestamp": self.expire_timestamp,
            "createdAt": self.created_at,
            "lastReadAt": self.last_read_at,
        })
    }
}

/// Why a cache call failed. The first three display as actionhero's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    NotFound,
    Expired,
    /// Another node holds the key's lock.
    Locked,
    /// The in-process cache holds `general.cacheMaxEntries` entries.
    Full {
        max_entries: usize,
    },
    /// Redis could not be reached or answered with an error.
    Unavailable(String),
    /// The key holds something that is not a cache entry.
    Malformed,
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::NotFound => f.write_str("Object not found"),
            CacheError::Expired => f.write_str("Object expired"),
            CacheError::Locked => f.write_str("Object locked"),
            CacheError::Full { max_entries } => {
                write!(f, "the cache is full ({max_entries} entries)")
            }
            CacheError::Unavailable(why) => write!(f, "the cache is unavailable: {why}"),
            CacheError::Malformed => f.write_str("the cache entry is not a cache entry"),
        }
    }
}

impl std::error::Error for CacheError {}

/// Where the entries live.
#[derive(Debug)]
enum Store {
    Memory(Memory),
    Shared(Box<Shared>),
}

/// The cache: one set of calls over either store, safe to share between threads.
#[derive(Debug)]
pub struct Cache {
    store: Store,
    /// Who holds the locks this node takes: its `serverId`, known once the socket
    /// listener is bound.
    owner: OnceLock<String>,
}

impl Cache {
    /// The in-process cache, holding at most `max_entries`.
    pub fn in_memory(max_entries: usize) -> Cache {
        Cache {
            store: Store::Memory(Memory::new(max_entries)),
            owner: OnceLock::new(),
        }
    }

    pub(crate) fn in_redis(shared: Shared) -> Cache {
        Cache {
            store: Store::Shared(Box::new(shared)),
            owner: OnceLock::new(),
        }
    }

    /// Names this node as the holder of the locks it takes (set once).
    pub(crate) fn set_owner(&self, server_id: &str) {
        let _ = self.owner.set(server_id.to_owned());
    }

    fn owner(&self) -> &str {
        self.owner.get().map_or("", String::as_str)
    }

    /// Saves `value` under `key`, expiring after `ttl_ms` (`None`: never). Refused with
    /// [`CacheError::Locked`] while another node holds the key's lock.
    pub fn save(&self, key: &str, value: Value, ttl_ms: Option<u64>) -> Result<(), CacheError> {
        match &self.store {
            Store::Memory(m) => m.save(key, value, ttl_ms, crate::time::now_ms()),
            Store::Shared(s) => s.save(self.owner(), key, value, ttl_ms),
        }
    }

    /// Loads an entry and stamps its read time; the entry returned carries the time of the
    /// read before (`None` the first time).
    pub fn load(&self, key: &str) -> Result<Entry, CacheError> {
        match &self.store {
            Store::Memory(m) => m.load(key, crate::time::now_ms()),
            Store::Shared(s) => s.load(self.owner(), key),
        }
    }

    /// Removes an entry; true if it existed.
    pub fn destroy(&self, key: &str) -> Result<bool, CacheError> {
        match &self.store {
            Store::Memory(m) => Ok(m.destroy(key)),
            Store::Shared(s) => s.destroy(self.owner(), key),
        }
    }

    /// Entries held: this process's (expired ones not yet swept included), or every
    /// cache key in Redis, counted without blocking Redis.
    pub fn size(&self) -> Result<usize, CacheError> {
        match &self.store {
            Store::Memory(m) => Ok(m.size()),
            Store::Shared(s) => s.size(),
        }
    }

    /// Takes the key's lock for `ttl_ms` (`None`: [`DEFAULT_LOCK_MS`]); false when a lock
    /// is already held (by anyone, this node included).
    pub fn lock(&self, key: &str, ttl_ms: Option<u64>) -> Result<bool, CacheError> {
        let ttl = ttl_ms.unwrap_or(DEFAULT_LOCK_MS).max(1);
        match &self.store {
            Store::Memory(m) => Ok(m.lock(key, ttl, crate::time::now_ms())),
            Store::Shared(s) => s.lock(self.owner(), key, ttl),
        }
    }

    /// Releases this node's lock on the key; false when another node holds it.
    pub fn unlock(&self, key: &str) -> Result<bool, CacheError> {
        match &self.store {
            Store::Memory(m) => Ok(m.unlock(key)),
            Store::Shared(s) => s.unlock(self.owner(), key),
        }
    }
}
