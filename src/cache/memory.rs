//! The in-process store: entries and locks in one map behind a mutex. Entries carry a
//! time-to-live; expired entries are reported `Object expired` once and dropped, and
//! swept when the store is full; the number of entries is capped so it cannot grow
//! without bound.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use super::{CacheError, Entry};

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Key → when its lock lapses (ms). Every lock here is this process's own.
    locks: HashMap<String, u64>,
}

/// A bounded key → value store with TTLs, safe to share between workers.
#[derive(Debug)]
pub struct Memory {
    inner: Mutex<Inner>,
    max_entries: usize,
}

impl Memory {
    pub fn new(max_entries: usize) -> Memory {
        debug_assert!(max_entries > 0);
        Memory {
            inner: Mutex::new(Inner::default()),
            max_entries,
        }
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent (every update
        // is a single insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn save(
        &self,
        key: &str,
        value: Value,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), CacheError> {
        let mut inner = self.lock_inner();
        let map = &mut inner.entries;
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

    pub fn load(&self, key: &str, now_ms: u64) -> Result<Entry, CacheError> {
        let mut inner = self.lock_inner();
        let map = &mut inner.entries;
        match map.get_mut(key) {
            Some(e) if expired(e, now_ms) => {
                map.remove(key);
                Err(CacheError::Expired)
            }
            Some(e) => {
                let before = e.clone();
                e.last_read_at = Some(now_ms);
                Ok(before)
            }
            None => Err(CacheError::NotFound),
        }
    }

    pub fn destroy(&self, key: &str) -> bool {
        self.lock_inner().entries.remove(key).is_some()
    }

    pub fn size(&self) -> usize {
        self.lock_inner().entries.len()
    }

    /// False while an unlapsed lock is held on `key`.
    pub fn lock(&self, key: &str, ttl_ms: u64, now_ms: u64) -> bool {
        let mut inner = self.lock_inner();
        // Lapsed locks go when touched; the map stays no bigger than the locks in use.
        inner.locks.retain(|_, until| *until > now_ms);
        if inner.locks.contains_key(key) {
            return false;
        }
        inner
            .locks
            .insert(key.to_owned(), now_ms.saturating_add(ttl_ms));
        true
    }

    /// Every lock in this store is this process's own, so releasing always succeeds.
    pub fn unlock(&self, key: &str) -> bool {
        self.lock_inner().locks.remove(key);
        true
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
        let c = Memory::new(10);
        c.save("a", json!("x"), Some(100), 1000).expect("saved");
        let e = c.load("a", 1050).expect("present");
        assert_eq!(e.value, json!("x"));
        assert_eq!(e.expire_timestamp, Some(1100));
        assert_eq!(e.created_at, 1000);
        assert_eq!(e.last_read_at, None, "first read: no read before it");
        assert_eq!(c.load("a", 1070).expect("present").last_read_at, Some(1050));
        assert_eq!(c.load("a", 1100), Err(CacheError::Expired));
        assert_eq!(c.load("a", 1100), Err(CacheError::NotFound));
        assert_eq!(c.size(), 0);
        c.save("b", json!(1), None, 0).expect("saved");
        assert!(c.destroy("b"));
        assert!(!c.destroy("b"));
    }

    #[test]
    fn bounded_with_sweep_of_expired_entries() {
        let c = Memory::new(2);
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

    #[test]
    fn a_lock_is_taken_once_until_released_or_lapsed() {
        let c = Memory::new(2);
        assert!(c.lock("k", 100, 0));
        assert!(!c.lock("k", 100, 50), "held");
        assert!(c.lock("k", 100, 100), "lapsed at its deadline");
        assert!(c.unlock("k"));
        assert!(c.lock("k", 100, 120), "released");
    }
}
