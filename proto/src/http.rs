//! HTTP/1.1 request heads, sans-IO: [`parse`] reads a head from the front of a buffer (with
//! `httparse`) into the few fields the HTTP front door routes on, and decides the refusals
//! (431 for headers over the limit or too many of them, 400 for malformed heads and bad or
//! conflicting `Content-Length`s). No sockets, no clock.

/// Headers parsed per request at most (431 beyond).
pub const MAX_HEADERS: usize = 64;

/// The parts of a request head the routes need, owned (the input buffer moves on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The request target as sent (path and query string).
    pub path: String,
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    pub content_length: usize,
    /// Lower-cased.
    pub content_type: String,
    pub expect_continue: bool,
    /// A `Transfer-Encoding` header was present.
    pub chunked: bool,
}

/// What parsing the buffer gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A complete head of `len` bytes.
    Head(Head, usize),
    /// Refused: answer with this status and close.
    Refuse(u16, &'static str),
}

/// Reads the request head at the front of `input`, refusing one longer than `max_header`
/// bytes (even before it is complete).
pub fn parse(input: &[u8], max_header: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(input) {
        Ok(httparse::Status::Partial) if input.len() > max_header => {
            return Parsed::Refuse(431, "request headers too large");
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Ok(httparse::Status::Complete(len)) if len > max_header => {
            return Parsed::Refuse(431, "request headers too large");
        }
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refuse(431, "too many request headers");
        }
        Err(_) => return Parsed::Refuse(400, "malformed request"),
    };
    let http11 = req.version == Some(1);
    let mut head = Head {
        method: req.method.unwrap_or("").to_owned(),
        path: req.path.unwrap_or("").to_owned(),
        keep_alive: http11,
        content_length: 0,
        content_type: String::new(),
        expect_continue: false,
        chunked: false,
    };
    let mut lengths = Vec::new();
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => lengths.push(n),
                Err(_) => return Parsed::Refuse(400, "invalid Content-Length"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            head.content_type = value.to_ascii_lowercase();
        } else if h.name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    lengths.dedup();
    match lengths.as_slice() {
        [] => {}
        [n] => head.content_length = *n,
        _ => return Parsed::Refuse(400, "conflicting Content-Length headers"),
    }
    Parsed::Head(head, len)
}

/// The reason phrase of a status this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        408 => "Request Timeout",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        match parse(raw.as_bytes(), 8192) {
            Parsed::Head(h, len) => {
                assert_eq!(len, raw.find("\r\n\r\n").expect("end") + 4);
                h
            }
            Parsed::Partial => panic!("partial"),
            Parsed::Refuse(s, t) => panic!("refused {s} {t}"),
        }
    }

    #[test]
    fn heads_and_keep_alive_rules() {
        let h = head("GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(h.keep_alive && h.method == "GET" && h.path == "/status");
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        let h = head(
            "POST /api/x HTTP/1.1\r\nContent-Length: 12\r\nContent-Type: Application/JSON\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(h.content_length, 12);
        assert_eq!(h.content_type, "application/json");
        assert!(h.expect_continue);
        assert!(head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").chunked);
    }

    #[test]
    fn refusals() {
        let refuse = |raw: &[u8], max| match parse(raw, max) {
            Parsed::Refuse(s, _) => s,
            _ => 0,
        };
        assert_eq!(
            refuse(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 8192),
            400
        );
        assert_eq!(
            refuse(
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                8192
            ),
            400
        );
        assert_eq!(refuse(b"\x01\x02 nonsense\r\n\r\n", 8192), 400);
        assert_eq!(refuse(&[b'a'; 300], 256), 431);
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            refuse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(), 8192),
            431
        );
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost:", 8192),
            Parsed::Partial
        ));
    }

    #[test]
    fn the_header_limit_is_inclusive() {
        let raw = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
        let n = raw.len();
        assert!(matches!(parse(raw, n), Parsed::Head(_, len) if len == n));
        assert!(matches!(parse(raw, n - 1), Parsed::Refuse(431, _)));
        // An unfinished head may fill the limit, not pass it.
        let partial = &raw[..n - 2];
        assert_eq!(parse(partial, partial.len()), Parsed::Partial);
        assert!(matches!(
            parse(partial, partial.len() - 1),
            Parsed::Refuse(431, _)
        ));
    }

    #[test]
    fn reason_phrases_of_every_status_sent() {
        let phrases = [
            (100, "Continue"),
            (200, "OK"),
            (400, "Bad Request"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (411, "Length Required"),
            (413, "Content Too Large"),
            (422, "Unprocessable Content"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (503, "Service Unavailable"),
        ];
        for (status, phrase) in phrases {
            assert_eq!(reason(status), phrase, "{status}");
        }
        assert_eq!(reason(299), "");
    }
}
