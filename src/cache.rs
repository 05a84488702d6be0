//! The in-memory cache behind `cacheTest` (and available to user actions through [`Api`]).
//!
//! Entries carry a time-to-live; expired entries are dropped when touched and swept when the
//! cache is full, and the number of entries is capped so it cannot grow without bound.
//!
//! [`Api`]: crate::Api

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

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

/// Why a save was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    Full { max_entries: usize },
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::Full { max_entries } => {
                write!(f, "the cache is full ({max_entries} entries)")
            }
        }
    }
}

/// A bounded key → value store with TTLs, safe to share between workers.
#[derive(Debug)]
pub struct Cache {
    entries: Mutex<HashMap<String, Entry>>,
    max_entries: usize,
}

impl Cache {
    pub fn new(max_entries: usize) -> Cache {
        debug_assert!(max_entries > 0);
        Cache {
            entries: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is
        // a single insert or remove), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves `value` under `key`, expiring `ttl_ms` after `now_ms` (`None`: never).
    pub fn save(
        &self,
        key: &str,
        value: Value,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), CacheError> {
        let mut map = self.lock();
        if map.len() >= self.max_entries && !map.contains_key(key) {
            map.retain(|_, e| !expired(e, now_ms));
            if map.len() >= self.max_entries {
                return Err(CacheError::Full {
                    max_entries: self.max_entries,
                });
            }
        }
        map.insert(
            key.to_owned(),
            Entry {
                value,
                expire_timestamp: ttl_ms.map(|t| now_ms.saturating_add(t)),
                created_at: now_ms,
                last_read_at: None,
            },
        );
        Ok(())
    }

    /// Loads an entry and stamps its read time; the entry returned carries the time of the
    /// read before (`None` the first time). Expired entries are removed and not found.
    pub fn load(&self, key: &str, now_ms: u64) -> Option<Entry> {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(e) if expired(e, now_ms) => {
                map.remove(key);
                None
            }
            Some(e) => {
                let before = e.clone();
                e.last_read_at = Some(now_ms);
                Some(before)
            }
            None => None,
        }
    }

    /// Removes an entry; true if it existed.
    pub fn destroy(&self, key: &str) -> bool {
        self.lock().remove(key).is_some()
    }

    /// Entries held (expired ones not yet swept included).
    pub fn size(&self) -> usize {
        self.lock().len()
    }
}

fn expired(e: &Entry, now_ms: u64) -> bool {
    e.expire_timestamp.is_some_and(|t| t <= now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn save_load_expire_destroy() {
        let c = Cache::new(10);
        c.save("a", json!("x"), Some(100), 1000).expect("saved");
        let e = c.load("a", 1050).expect("present");
        assert_eq!(e.value, json!("x"));
        assert_eq!(e.expire_timestamp, Some(1100));
        assert_eq!(e.created_at, 1000);
        assert_eq!(e.last_read_at, None, "first read: no read before it");
        assert_eq!(c.load("a", 1070).expect("present").last_read_at, Some(1050));
        assert_eq!(c.load("a", 1100), None, "expired at its timestamp");
        assert_eq!(c.size(), 0);
        c.save("b", json!(1), None, 0).expect("saved");
        assert!(c.destroy("b"));
        assert!(!c.destroy("b"));
    }

    #[test]
    fn bounded_with_sweep_of_expired_entries() {
        let c = Cache::new(2);
        c.save("a", json!(1), Some(10), 0).expect("saved");
        c.save("b", json!(2), None, 0).expect("saved");
        assert_eq!(
            c.save("c", json!(3), None, 5),
            Err(CacheError::Full { max_entries: 2 })
        );
        c.save("b", json!(4), None, 5)
            .expect("overwrite is always allowed");
        c.save("c", json!(3), None, 20)
            .expect("expired entry swept");
        assert_eq!(c.size(), 2);
    }
}
