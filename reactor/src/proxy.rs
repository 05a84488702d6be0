//! The PROXY protocol (HAProxy's v1 text and v2 binary headers) on listeners that ask for it
//! ([`crate::ListenerOptions::proxy_protocol`]).
//!
//! A load balancer in front of the server sends the client's real address before anything
//! else. An endpoint on such a listener waits for that header before it is anything else:
//! no TLS handshake, no `on_open`, no keep-alive or idle timer, only the handshake deadline.
//! The header is found by peeking at the socket and then consumed by reading exactly its
//! length, so the bytes after it stay in the socket for the transport (TLS or plain) as if
//! the header had never been there; no buffer is kept per endpoint. A connection whose first
//! bytes are not a valid header is closed ([`CloseReason::BadProxyHeader`]). Parsing is the
//! `ppp` crate's.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use ppp::{HeaderResult, PartialResult};

use crate::endpoint::{CloseReason, ConnId};
use crate::event_loop::Reactor;
use crate::handler::Handler;

/// Longest header accepted: v1 is at most 107 bytes; v2 is 16 bytes, the addresses and the
/// TLVs a balancer adds (a few hundred bytes in practice).
pub(crate) const MAX_HEADER: usize = 4096;

/// What the bytes at the start of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// A valid header of `len` bytes. `source` is the client's address, or `None` for a
    /// header that names none (v1 `UNKNOWN`, v2 `LOCAL`: the balancer's own health check).
    Valid {
        len: usize,
        source: Option<SocketAddr>,
    },
    Invalid(String),
}

/// Classifies the first bytes of a connection.
pub(crate) fn parse(bytes: &[u8]) -> Header {
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return if bytes.len() >= MAX_HEADER {
            Header::Invalid(format!("no complete header in {MAX_HEADER} bytes"))
        } else {
            Header::Incomplete
        };
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            use ppp::v1::Addresses;
            let source = match h.addresses {
                Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                Addresses::Unknown => None,
            };
            Header::Valid {
                len: h.header.len(),
                source,
            }
        }
        HeaderResult::V2(Ok(h)) => {
            use ppp::v2::{Addresses, Command};
            let source = match (h.command, &h.addresses) {
                (Command::Proxy, Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (Command::Proxy, Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            Header::Valid {
                len: h.len(),
                source,
            }
        }
        HeaderResult::V1(Err(e)) => Header::Invalid(format!("not a PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => Header::Invalid(format!("not a PROXY v2 header: {e}")),
    }
}

impl<H: Handler> Reactor<H> {
    /// Looks for the PROXY header of an endpoint that awaits one. Returns true once the
    /// header is consumed (or none was awaited): the endpoint goes on through its transport.
    pub(crate) fn read_proxy_header(&mut self, id: ConnId) -> bool {
        let tick = self.core.timers.tick32();
        let Some(ep) = self.core.ep_mut(id) else {
            return false;
        };
        if !ep.awaiting_proxy {
            return true;
        }
        let n = match ep.stream.peek(&mut self.read_buf[..MAX_HEADER]) {
            Ok(0) => {
                ep.eof = true;
                self.core.kill(id, CloseReason::Eof);
                return false;
            }
            Ok(n) => n,
            // As for any read: wait for the edge, retry, or close.
            Err(e) => {
                self.read_failed(id, e);
                return false;
            }
        };
        let why = match parse(&self.read_buf[..n]) {
            Header::Valid { len, source } => Ok((len, source)),
            // The rest is still on its way: the next edge brings it (peeked bytes stay in
            // the socket, and new bytes raise a new edge).
            Header::Incomplete if !ep.read_closed => {
                ep.readable = false;
                return false;
            }
            // The peer ended its side mid-header (peeking never consumes the bytes, so
            // without this its reset or FIN would wait for the handshake timeout).
            Header::Incomplete => match ep.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    log::debug!("{id:?} ({}): reset during its PROXY header: {e}", ep.peer);
                    self.core.kill(id, CloseReason::Error);
                    return false;
                }
                Ok(None) => Err("ended during its PROXY header".to_string()),
            },
            Header::Invalid(why) => Err(why),
        };
        let (len, source) = match why {
            Ok(header) => header,
            Err(why) => {
                log::debug!("{id:?} ({}): {why}; closing", ep.peer);
                self.core
                    .stats
                    .proxy_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.core.kill(id, CloseReason::BadProxyHeader);
                return false;
            }
        };
        debug_assert!(len <= n, "a valid header lies within the peeked bytes");
        // Consume exactly the header; what follows is the transport's.
        if let Err(e) = ep.stream.read_exact(&mut self.read_buf[..len]) {
            log::debug!("{id:?} ({}): consuming the PROXY header: {e}", ep.peer);
            self.core.kill(id, CloseReason::Error);
            return false;
        }
        ep.awaiting_proxy = false;
        ep.last_rx = tick;
        let balancer = ep.peer;
        if let Some(source) = source {
            ep.peer = source;
        }
        let tls = ep.transport.is_tls();
        self.core
            .stats
            .bytes_in
            .fetch_add(len as u64, Ordering::Relaxed);
        log::debug!(
            "{id:?}: PROXY header from {balancer} names {}",
            source.map_or_else(|| "no client".to_string(), |s| s.to_string())
        );
        // Idle and keep-alive timers apply from now (a TLS endpoint's after its handshake).
        self.core.schedule(id);
        if let Some(source) = source {
            self.handler.on_proxied(&mut self.core, id, source);
        }
        if !tls && self.core.is_open(id) {
            self.handler.on_open(&mut self.core, id);
        }
        self.core.is_open(id) || tls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers_name_the_client() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 5000\r\nparamView x\n";
        assert_eq!(
            parse(h),
            Header::Valid {
                len: 42,
                source: Some("192.0.2.7:51234".parse().expect("addr"))
            }
        );
        let h6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 5000\r\n";
        assert_eq!(
            parse(h6),
            Header::Valid {
                len: h6.len(),
                source: Some("[2001:db8::7]:4000".parse().expect("addr"))
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Header::Valid {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn v2_headers_name_the_client_unless_local() {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend([0x21, 0x11, 0, 12]); // v2 PROXY, TCP over IPv4, 12 bytes of addresses
        h.extend([198, 51, 100, 9, 10, 0, 0, 1, 0x30, 0x39, 0x13, 0x88]);
        let len = h.len();
        h.extend(b"tls bytes");
        assert_eq!(
            parse(&h),
            Header::Valid {
                len,
                source: Some("198.51.100.9:12345".parse().expect("addr"))
            }
        );
        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Header::Valid {
                len: 16,
                source: None
            }
        );
    }

    #[test]
    fn partial_headers_wait_and_garbage_is_refused() {
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7"), Header::Incomplete);
        assert_eq!(parse(b"\r\n\r\n\0\r\nQU"), Header::Incomplete);
        assert_eq!(parse(b"PRO"), Header::Incomplete);
        assert!(matches!(parse(b"paramView x\r\n"), Header::Invalid(_)));
        assert!(matches!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Header::Invalid(_)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 999.0.2.7 10.0.0.1 1 2\r\n"),
            Header::Invalid(_)
        ));
        // A v1 line never ends within the limit.
        let long = vec![b'P'; MAX_HEADER];
        assert!(matches!(parse(&long), Header::Invalid(_)));
    }
}
