//! The cache in Redis, as actionhero 20 keeps it (the protocol reference, "Cluster",
//! cache): entry `<cachePrefix><key>` is a string holding
//! `{"value","expireTimestamp","createdAt","readAt"}`, lock `<lockPrefix><key>` a string
//! holding the locker's `serverId`.
//!
//! Each write checks the lock and writes in one Lua script, so a lock taken by another
//! node between the check and the write cannot be missed (actionhero checks, then
//! writes). Calls run on the caller's thread over a small pool of connections, each
//! bounded by [`IO_TIMEOUT`]; a pooled connection found broken (Redis restarted) is
//! replaced and the call tried once more on a fresh one.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::{Connection, RedisResult, Script};
use serde_json::{Value, json};

use super::{CacheError, Entry};

/// A cache call waiting longer than this on Redis fails as unavailable.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys asked for per `SCAN` step when counting entries.
const SCAN_COUNT: usize = 1000;

/// `KEYS[1]` entry, `KEYS[2]` lock; `ARGV[1]` owner, `ARGV[2]` entry text, `ARGV[3]`
/// seconds to live (0: none). 0 when another node holds the lock.
const SAVE: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
";

/// A read's `readAt` stamp: as [`SAVE`], but `ARGV[3]` is the entry's expiry in ms since
/// the epoch (0: none), and an entry destroyed since it was read is not brought back
/// (-1).
const REFRESH: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return 1
";

/// `KEYS[1]` entry, `KEYS[2]` lock, `ARGV[1]` owner: -1 when locked, else keys deleted.
const DESTROY: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return -1 end
return redis.call('DEL', KEYS[1])
";

/// `KEYS[1]` lock, `ARGV[1]` owner, `ARGV[2]` ms: 1 when taken. A lock already held, by
/// anyone, is not taken again (actionhero's `SETNX`); set with its expiry in one step,
/// so a lock never outlives a crash.
const LOCK: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// `KEYS[1]` lock, `ARGV[1]` owner: 0 when another node holds it.
const UNLOCK: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// The cache's side of Redis.
pub(crate) struct Shared {
    client: redis::Client,
    idle: Mutex<Vec<Connection>>,
    /// Connections kept between calls (about one per worker).
    max_idle: usize,
    cache_prefix: String,
    lock_prefix: String,
    scripts: Scripts,
}

struct Scripts {
    save: Script,
    refresh: Script,
    destroy: Script,
    lock: Script,
    unlock: Script,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cache_prefix", &self.cache_prefix)
            .field("lock_prefix", &self.lock_prefix)
            .finish_non_exhaustive()
    }
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    value: Value,
    expire_timestamp: Option<u64>,
    created_at: u64,
    read_at: Option<u64>,
}

impl Stored {
    /// actionhero's text, in its field order.
    fn encode(&self) -> String {
        json!({
            "value": self.value,
            "expireTimestamp": self.expire_timestamp,
            "createdAt": self.created_at,
            "readAt": self.read_at,
        })
        .to_string()
    }

    fn parse(text: &str) -> Option<Stored> {
        let mut v: Value = serde_json::from_str(text).ok()?;
        let o = v.as_object_mut()?;
        let ms = |v: Option<&Value>| -> Option<Option<u64>> {
            match v {
                None | Some(Value::Null) => Some(None),
                // JavaScript writes integers; a float is rounded down rather than refused.
                Some(n) => n
                    .as_u64()
                    .or_else(|| n.as_f64().map(|f| f as u64))
                    .map(Some),
            }
        };
        Some(Stored {
            expire_timestamp: ms(o.get("expireTimestamp"))?,
            created_at: ms(o.get("createdAt"))?.unwrap_or(0),
            read_at: ms(o.get("readAt"))?,
            value: o.remove("value").unwrap_or(Value::Null),
        })
    }
}

impl Shared {
    pub(crate) fn new(
        client: redis::Client,
        max_idle: usize,
        cache_prefix: &str,
        lock_prefix: &str,
    ) -> Shared {
        Shared {
            client,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
            cache_prefix: cache_prefix.to_owned(),
            lock_prefix: lock_prefix.to_owned(),
            scripts: Scripts {
                save: Script::new(SAVE),
                refresh: Script::new(REFRESH),
                destroy: Script::new(DESTROY),
                lock: Script::new(LOCK),
                unlock: Script::new(UNLOCK),
            },
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connect(&self) -> RedisResult<Connection> {
        let con = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    /// Runs `call` on a pooled connection (or a new one). A pooled connection that turns
    /// out broken is dropped and the call runs once more on a new connection: the request
    /// did not reach a live server.
    fn with<T>(&self, call: impl Fn(&mut Connection) -> RedisResult<T>) -> Result<T, CacheError> {
        let pooled = self.idle().pop();
        let from_pool = pooled.is_some();
        let first = match pooled {
            Some(c) => Ok(c),
            None => self.connect(),
        };
        let mut con = first.map_err(unavailable)?;
        let result = match call(&mut con) {
            // Not after a timeout: Redis may be slow rather than gone, and waiting twice
            // would double the caller's wait.
            Err(e)
                if from_pool
                    && !e.is_timeout()
                    && (e.is_connection_dropped() || e.is_io_error()) =>
            {
                con = self.connect().map_err(unavailable)?;
                call(&mut con)
            }
            other => other,
        };
        // A connection that answered (even with an error reply) serves the next call.
        if result
            .as_ref()
            .map_or_else(|e| !e.is_unrecoverable_error(), |_| true)
        {
            let mut idle = self.idle();
            if idle.len() < self.max_idle {
                idle.push(con);
            }
        }
        result.map_err(unavailable)
    }

    fn keys(&self, key: &str) -> (String, String) {
        (
            format!("{}{key}", self.cache_prefix),
            format!("{}{key}", self.lock_prefix),
        )
    }

    pub(crate) fn save(
        &self,
        owner: &str,
        key: &str,
        value: Value,
        ttl_ms: Option<u64>,
    ) -> Result<(), CacheError> {
        let now = crate::time::now_ms();
        let text = Stored {
            value,
            expire_timestamp: ttl_ms.map(|t| now.saturating_add(t)),
            created_at: now,
            read_at: None,
        }
        .encode();
        let seconds = ttl_ms.map_or(0, |t| t.div_ceil(1000).max(1));
        let (entry, lock) = self.keys(key);
        let saved: i64 = self.with(|c| {
            self.scripts
                .save
                .key(&entry)
                .key(&lock)
                .arg(owner)
                .arg(&text)
                .arg(seconds)
                .invoke(c)
        })?;
        if saved == 1 {
            Ok(())
        } else {
            Err(CacheError::Locked)
        }
    }

    pub(crate) fn load(&self, owner: &str, key: &str) -> Result<Entry, CacheError> {
        let (entry, lock) = self.keys(key);
        let (text, holder): (Option<String>, Option<String>) =
            self.with(|c| redis::cmd("MGET").arg(&entry).arg(&lock).query(c))?;
        let text = text.ok_or(CacheError::NotFound)?;
        let stored = Stored::parse(&text).ok_or(CacheError::Malformed)?;
        let now = crate::time::now_ms();
        if stored.expire_timestamp.is_some_and(|t| t < now) {
            return Err(CacheError::Expired);
        }
        if holder.is_some_and(|h| h != owner) {
            return Err(CacheError::Locked);
        }
        let read = Stored {
            read_at: Some(now),
            ..stored.clone()
        };
        let text = read.encode();
        let refreshed: i64 = self.with(|c| {
            self.scripts
                .refresh
                .key(&entry)
                .key(&lock)
                .arg(owner)
                .arg(&text)
                .arg(stored.expire_timestamp.unwrap_or(0))
                .invoke(c)
        })?;
        match refreshed {
            1 => Ok(Entry {
                value: stored.value,
                expire_timestamp: stored.expire_timestamp,
                created_at: stored.created_at,
                last_read_at: stored.read_at,
            }),
            0 => Err(CacheError::Locked),
            _ => Err(CacheError::NotFound),
        }
    }

    pub(crate) fn destroy(&self, owner: &str, key: &str) -> Result<bool, CacheError> {
        let (entry, lock) = self.keys(key);
        let n: i64 = self.with(|c| {
            self.scripts
                .destroy
                .key(&entry)
                .key(&lock)
                .arg(owner)
                .invoke(c)
        })?;
        if n < 0 {
            Err(CacheError::Locked)
        } else {
            Ok(n == 1)
        }
    }

    /// Counts the cache's keys with `SCAN` (never `KEYS`, which blocks Redis while it
    /// walks the whole key space).
    pub(crate) fn size(&self) -> Result<usize, CacheError> {
        let pattern = format!("{}*", glob_escape(&self.cache_prefix));
        self.with(|c| {
            let mut cursor = 0u64;
            let mut count = 0usize;
            loop {
                let (next, keys): (u64, Vec<redis::Value>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query(c)?;
                count += keys.len();
                if next == 0 {
                    return Ok(count);
                }
                cursor = next;
            }
        })
    }

    pub(crate) fn lock(&self, owner: &str, key: &str, ttl_ms: u64) -> Result<bool, CacheError> {
        let (_, lock) = self.keys(key);
        let taken: i64 = self.with(|c| {
            self.scripts
                .lock
                .key(&lock)
                .arg(owner)
                .arg(ttl_ms)
                .invoke(c)
        })?;
        Ok(taken == 1)
    }

    pub(crate) fn unlock(&self, owner: &str, key: &str) -> Result<bool, CacheError> {
        let (_, lock) = self.keys(key);
        let released: i64 = self.with(|c| self.scripts.unlock.key(&lock).arg(owner).invoke(c))?;
        Ok(released == 1)
    }
}

fn unavailable(e: redis::RedisError) -> CacheError {
    CacheError::Unavailable(e.to_string())
}

/// `prefix` as a `SCAN MATCH` pattern that matches it literally.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for ch in prefix.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_written_in_actionheros_field_order() {
        let s = Stored {
            value: json!({"b": 1, "a": [true]}),
            expire_timestamp: Some(1_796_151_797_889),
            created_at: 1_796_151_792_889,
            read_at: None,
        };
        assert_eq!(
            s.encode(),
            r#"{"value":{"b":1,"a":[true]},"expireTimestamp":1796151797889,"createdAt":1796151792889,"readAt":null}"#
        );
        assert_eq!(Stored::parse(&s.encode()), Some(s));
    }

    #[test]
    fn entries_written_by_actionhero_are_read() {
        let text = r#"{"value":"defg","expireTimestamp":null,"createdAt":1.5e3,"readAt":1700}"#;
        assert_eq!(
            Stored::parse(text),
            Some(Stored {
                value: json!("defg"),
                expire_timestamp: None,
                created_at: 1500,
                read_at: Some(1700),
            })
        );
        for bad in ["", "null", "[1]", r#"{"value":1,"createdAt":"x"}"#] {
            assert_eq!(Stored::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn prefixes_are_matched_literally() {
        assert_eq!(glob_escape("a:*?[x]\\"), "a:\\*\\?\\[x\\]\\\\");
    }
}
