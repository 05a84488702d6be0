//! `redis.*`: the Redis server of the cluster (actionhero's names), and the
//! `redis://[:password@]host[:port][/db]` URL form the command line takes.
//!
//! With `redis.enabled`, a node joins the cluster on that Redis: rooms, chat and the cache
//! are shared with the other nodes (actionwire and actionhero alike). The bus settings that
//! actionhero keeps under `general.*` (`serverToken`, `channel`, `rpcTimeout`, the key
//! prefixes) are in [`crate::General`].

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// `redis.*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Redis {
    /// Join the cluster. Off: rooms, chat and the cache stay in this process.
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    /// The database number (keys only: pub/sub channels ignore it).
    pub db: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 6379,
            db: 0,
            password: None,
        }
    }
}

impl Redis {
    /// Sets the server from `redis://[:password@]host[:port][/db]` and enables the cluster.
    pub fn set_url(&mut self, text: &str) -> Result<(), String> {
        let rest = text
            .strip_prefix("redis://")
            .ok_or_else(|| "must start with redis://".to_string())?;
        if rest.contains(['?', '#', ' ']) {
            return Err("must not contain a query, a fragment or spaces".into());
        }
        let (password, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => match auth.split_once(':') {
                Some(("", pw)) if !pw.is_empty() => (Some(pw.to_owned()), rest),
                Some(("", _)) => return Err("the password after `:` is empty".into()),
                _ => {
                    return Err("user names are not supported: write redis://:password@host".into());
                }
            },
            None => (None, rest),
        };
        let (authority, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, d)) => (
                a,
                d.parse::<u32>()
                    .map_err(|_| format!("`{d}` is not a database number"))?,
            ),
            None => (rest, 0),
        };
        let (host, port) = crate::authority::parse(authority, 6379)?;
        *self = Redis {
            enabled: true,
            host: host.to_owned(),
            port,
            db,
            password,
        };
        Ok(())
    }

    /// The server as a URL, password hidden (for log lines).
    pub fn display_url(&self) -> String {
        let auth = if self.password.is_some() { ":***@" } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("redis://{auth}{host}:{}/{}", self.port, self.db)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.host.is_empty() {
            return Err(ConfigError::new("redis.host", "must not be empty"));
        }
        if self.port == 0 {
            return Err(ConfigError::new("redis.port", "must be a port (1-65535)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> Result<Redis, String> {
        let mut r = Redis::default();
        r.set_url(url).map(|()| r)
    }

    #[test]
    fn urls_of_every_shape_are_read() {
        let r = parsed("redis://10.0.0.5").expect("valid");
        assert_eq!((r.host.as_str(), r.port, r.db), ("10.0.0.5", 6379, 0));
        assert!(r.enabled && r.password.is_none());
        let r = parsed("redis://:s3cr@t@cache.internal:6380/2").expect("valid");
        assert_eq!(r.password.as_deref(), Some("s3cr@t"));
        assert_eq!((r.host.as_str(), r.port, r.db), ("cache.internal", 6380, 2));
        let r = parsed("redis://[::1]:7000/").expect("valid");
        assert_eq!((r.host.as_str(), r.port, r.db), ("::1", 7000, 0));
        assert_eq!(r.display_url(), "redis://[::1]:7000/0");
        let r = parsed("redis://:pw@h:1/3").expect("valid");
        assert_eq!(r.display_url(), "redis://:***@h:1/3");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://h", "redis://"),
            ("redis://", "host"),
            ("redis://h:0", "port"),
            ("redis://h:x", "port"),
            ("redis://h/x", "database"),
            ("redis://user:pw@h", "user names"),
            ("redis://:@h", "password"),
            ("redis://h?x=1", "query"),
            ("redis://[::1", "closed"),
        ] {
            let e = parsed(url).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
