//! `upstream.*`: forwarding actions to an HTTP backend (edge mode).
//!
//! The backend speaks actionhero's web API: `POST <url>/<action>` with the params as a JSON
//! object. The URL is checked here for its shape only (scheme, host, port); the server
//! resolves the host name once at start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// `upstream.*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Upstream {
    /// Base URL of the backend's action API, e.g. `http://10.0.0.5:8080/api`
    /// (`https://` speaks TLS). Absent: nothing is forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Action names forwarded even when defined locally; `*` forwards every action that
    /// is not defined locally.
    pub actions: Vec<String>,
    /// One forwarded call (waiting for a connection, connecting, the request and the whole
    /// response) must finish within this long, ms.
    pub timeout: u64,
    /// Keep-alive connections to the backend at most (connecting ones included).
    pub max_connections: usize,
    /// Calls waiting for a connection at most; beyond, a call is refused at once.
    pub max_queued: usize,
    /// A backend response (head and body) larger than this is refused and its connection
    /// closed, bytes.
    pub max_response_bytes: usize,
    /// An idle backend connection is closed after this long, ms. Keep it below the
    /// backend's own keep-alive timeout (Node's default is 5 s), so that it is this side
    /// that closes an idle connection, never a request racing the backend's close.
    pub keep_alive_timeout: u64,
    /// PEM file of extra certificate authorities to trust for an `https://` backend (the
    /// Mozilla roots are always trusted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            url: None,
            actions: vec!["*".to_owned()],
            timeout: 10_000,
            max_connections: 256,
            max_queued: 10_000,
            max_response_bytes: 1 << 20,
            keep_alive_timeout: 4_000,
            ca: None,
        }
    }
}

/// Where a URL points: what the server needs to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `https`.
    pub tls: bool,
    /// Host name or address as written (without IPv6 brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`/api`), empty for the root.
    pub path: String,
}

impl UpstreamUrl {
    /// Parses `http[s]://host[:port][/path]`; no user info, query or fragment.
    pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
        let (tls, rest) = if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else {
            return Err("must start with http:// or https://".into());
        };
        if rest.contains(['?', '#', '@', ' ']) {
            return Err("must not contain a query, a fragment, user info or spaces".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = crate::authority::parse(authority, default_port)?;
        Ok(UpstreamUrl {
            tls,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

impl Upstream {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let err = |k: &str, m: &str| Err(ConfigError::new(k, m));
        if let Some(url) = &self.url
            && let Err(m) = UpstreamUrl::parse(url)
        {
            return err("upstream.url", &m);
        }
        if self.actions.iter().any(|a| a.is_empty() || a.contains(' ')) {
            return err(
                "upstream.actions",
                "action names must be non-empty and contain no space (`*` = every action not defined locally)",
            );
        }
        if self.timeout == 0 {
            return err("upstream.timeout", "must be at least 1 ms");
        }
        if self.max_connections == 0 {
            return err("upstream.maxConnections", "must be at least 1");
        }
        if self.max_response_bytes < 256 {
            return err("upstream.maxResponseBytes", "must be at least 256 bytes");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_what_a_connect_needs() {
        let u = UpstreamUrl::parse("http://10.0.0.5:8080/api/").expect("valid");
        assert_eq!(
            u,
            UpstreamUrl {
                tls: false,
                host: "10.0.0.5".into(),
                port: 8080,
                path: "/api".into()
            }
        );
        let u = UpstreamUrl::parse("https://backend.internal").expect("valid");
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, ""));
        let u = UpstreamUrl::parse("http://[::1]:9/x").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        let u = UpstreamUrl::parse("http://[::1]").expect("valid");
        assert_eq!(u.port, 80);
        for bad in [
            "ftp://x",
            "http://",
            "http://:80",
            "http://h:0",
            "http://h:99999",
            "http://h:x",
            "http://u@h",
            "http://h/a?b",
            "http://[::1",
            "http://[::1]x",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |u: Upstream| u.validate().expect_err("refused").key;
        let url = |s: &str| Upstream {
            url: Some(s.into()),
            ..Upstream::default()
        };
        assert_eq!(bad(url("localhost:80")), "upstream.url");
        assert_eq!(
            bad(Upstream {
                timeout: 0,
                ..url("http://h")
            }),
            "upstream.timeout"
        );
        assert_eq!(
            bad(Upstream {
                max_connections: 0,
                ..Upstream::default()
            }),
            "upstream.maxConnections"
        );
        assert_eq!(
            bad(Upstream {
                actions: vec!["a b".into()],
                ..Upstream::default()
            }),
            "upstream.actions"
        );
        assert!(url("http://127.0.0.1:8080/api").validate().is_ok());
    }
}
