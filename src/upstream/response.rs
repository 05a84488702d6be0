//! Reading one HTTP/1.1 response from a backend, sans-IO: bytes in, a [`Response`] out.
//!
//! The head is parsed by `httparse`; the body is read by `Content-Length`, as chunks
//! (sizes by `httparse::parse_chunk_size`, trailers skipped) or until the backend closes
//! when it gives neither. `1xx` heads are skipped. Everything a backend sends for one
//! response counts against one size limit, so a backend cannot make the loop buffer more
//! than `upstream.maxResponseBytes` for a call.

/// Headers read from a response head at most.
const MAX_HEADERS: usize = 64;

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The connection may carry another request (HTTP/1.1 without `Connection: close`, a
    /// framed body, and nothing sent after it).
    pub reusable: bool,
}

/// Why a response could not be read: the connection is unusable after any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadFailure {
    /// More than the limit, head and body together.
    TooLarge,
    /// Not HTTP, or a framing error.
    Malformed(String),
    /// The backend closed before the response was complete (`begun`: some of it came).
    Closed { begun: bool },
}

impl ReadFailure {
    /// For the caller's error reply.
    pub(crate) fn describe(&self) -> String {
        match self {
            ReadFailure::TooLarge => {
                "the backend's answer is over upstream.maxResponseBytes".into()
            }
            ReadFailure::Malformed(why) => format!("the backend's answer is not HTTP ({why})"),
            ReadFailure::Closed { begun: false } => {
                "the backend closed the connection without answering".into()
            }
            ReadFailure::Closed { begun: true } => {
                "the backend closed the connection in the middle of its answer".into()
            }
        }
    }
}

/// What feeding bytes achieved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    More,
    Done(Response),
    Failed(ReadFailure),
}

#[derive(Debug)]
enum Body {
    Length(usize),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many data bytes of the current chunk are still to come.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

#[derive(Debug)]
enum Stage {
    Head,
    Body {
        status: u16,
        keep_alive: bool,
        body: Body,
    },
}

/// One response being read. Reset it (or make a new one) for the next request.
#[derive(Debug)]
pub(crate) struct ResponseReader {
    limit: usize,
    /// Bytes received and not consumed yet.
    buf: Vec<u8>,
    /// Decoded body so far.
    body: Vec<u8>,
    /// Bytes received for this response.
    received: usize,
    stage: Stage,
}

impl ResponseReader {
    pub(crate) fn new(limit: usize) -> ResponseReader {
        ResponseReader {
            limit,
            buf: Vec::new(),
            body: Vec::new(),
            received: 0,
            stage: Stage::Head,
        }
    }

    /// Whether any byte of a response has arrived.
    pub(crate) fn begun(&self) -> bool {
        self.received > 0
    }

    /// Takes bytes from the backend.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Progress {
        self.received += data.len();
        if self.received > self.limit {
            return Progress::Failed(ReadFailure::TooLarge);
        }
        self.buf.extend_from_slice(data);
        self.advance()
    }

    /// The backend closed its side: a body read until the close is complete; anything
    /// else is cut short.
    pub(crate) fn closed(&mut self) -> Progress {
        match self.stage {
            Stage::Body {
                status,
                body: Body::UntilClose,
                ..
            } => Progress::Done(Response {
                status,
                body: std::mem::take(&mut self.body),
                reusable: false,
            }),
            _ => Progress::Failed(ReadFailure::Closed {
                begun: self.begun(),
            }),
        }
    }

    fn advance(&mut self) -> Progress {
        loop {
            match &mut self.stage {
                Stage::Head => match self.head() {
                    Ok(true) => {}
                    Ok(false) => return Progress::More,
                    Err(f) => return Progress::Failed(f),
                },
                Stage::Body {
                    status,
                    keep_alive,
                    body,
                } => {
                    let (status, keep_alive) = (*status, *keep_alive);
                    let done = match body {
                        Body::Length(remaining) => {
                            let n = (*remaining).min(self.buf.len());
                            self.body.extend_from_slice(&self.buf[..n]);
                            self.buf.drain(..n);
                            *remaining -= n;
                            *remaining == 0
                        }
                        Body::UntilClose => {
                            self.body.append(&mut self.buf);
                            false
                        }
                        Body::Chunked(chunk) => {
                            match chunked(chunk, &mut self.buf, &mut self.body) {
                                Ok(done) => done,
                                Err(f) => return Progress::Failed(f),
                            }
                        }
                    };
                    if !done {
                        return Progress::More;
                    }
                    // Anything after the response was not asked for: do not reuse.
                    let reusable = keep_alive && self.buf.is_empty();
                    return Progress::Done(Response {
                        status,
                        body: std::mem::take(&mut self.body),
                        reusable,
                    });
                }
            }
        }
    }

    /// Parses a head if a whole one is buffered: true when the stage moved on.
    fn head(&mut self) -> Result<bool, ReadFailure> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        let len = match r.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(e) => return Err(ReadFailure::Malformed(e.to_string())),
        };
        let status = r.code.unwrap_or(0);
        let http11 = r.version == Some(1);
        let mut length = None;
        let mut chunked = false;
        let mut close = !http11;
        for h in r.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                match value.parse::<usize>() {
                    Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => return Err(ReadFailure::Malformed("bad Content-Length".into())),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                        close = false;
                    }
                }
            }
        }
        self.buf.drain(..len);
        if (100..200).contains(&status) {
            return Ok(true); // an interim answer (100 Continue): the real one follows
        }
        let body = if status == 204 || status == 304 {
            Body::Length(0)
        } else if chunked {
            Body::Chunked(Chunk::Size)
        } else if let Some(n) = length {
            Body::Length(n)
        } else {
            close = true;
            Body::UntilClose
        };
        self.stage = Stage::Body {
            status,
            keep_alive: !close,
            body,
        };
        Ok(true)
    }
}

/// Decodes chunked data from `buf` into `body`: true once the last chunk and the trailers
/// are read.
fn chunked(chunk: &mut Chunk, buf: &mut Vec<u8>, body: &mut Vec<u8>) -> Result<bool, ReadFailure> {
    let bad = |what: &str| ReadFailure::Malformed(format!("bad chunked body: {what}"));
    let mut at = 0;
    let result = loop {
        let rest = &buf[at..];
        match *chunk {
            Chunk::Size => match httparse::parse_chunk_size(rest) {
                Ok(httparse::Status::Complete((n, 0))) => {
                    at += n;
                    *chunk = Chunk::Trailers;
                }
                Ok(httparse::Status::Complete((n, size))) => {
                    at += n;
                    let size = usize::try_from(size).map_err(|_| bad("chunk too large"))?;
                    *chunk = Chunk::Data(size);
                }
                Ok(httparse::Status::Partial) => break Ok(false),
                Err(_) => break Err(bad("invalid chunk size")),
            },
            Chunk::Data(remaining) => {
                if rest.is_empty() {
                    break Ok(false);
                }
                let n = remaining.min(rest.len());
                body.extend_from_slice(&rest[..n]);
                at += n;
                *chunk = if n == remaining {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(remaining - n)
                };
            }
            Chunk::DataEnd => match rest {
                [b'\r', b'\n', ..] => {
                    at += 2;
                    *chunk = Chunk::Size;
                }
                [] | [b'\r'] => break Ok(false),
                _ => break Err(bad("chunk data not followed by CRLF")),
            },
            Chunk::Trailers => match memchr::memmem::find(rest, b"\r\n") {
                Some(0) => {
                    at += 2;
                    break Ok(true);
                }
                Some(i) => at += i + 2,
                None => break Ok(false),
            },
        }
    };
    buf.drain(..at);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(parts: &[&[u8]]) -> Progress {
        let mut r = ResponseReader::new(1 << 16);
        let mut last = Progress::More;
        for p in parts {
            last = r.feed(p);
            if last != Progress::More {
                break;
            }
        }
        last
    }

    fn done(status: u16, body: &str, reusable: bool) -> Progress {
        Progress::Done(Response {
            status,
            body: body.as_bytes().to_vec(),
            reusable,
        })
    }

    /// Every split of `bytes` into two parts gives the same result.
    fn every_split(bytes: &[u8], want: &Progress) {
        for i in 0..=bytes.len() {
            let got = read_all(&[&bytes[..i], &bytes[i..]]);
            assert_eq!(&got, want, "split at {i}");
        }
    }

    #[test]
    fn content_length_bodies_at_any_split() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
        every_split(r, &done(200, "{\"a\":1}", true));
        let r = b"HTTP/1.1 422 Unprocessable\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        every_split(r, &done(422, "{}", false));
        let r = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        every_split(r, &done(200, "{}", false));
        let r = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}";
        every_split(r, &done(200, "{}", true));
    }

    #[test]
    fn chunked_bodies_at_any_split_with_trailers_and_extensions() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;ext=1\r\n\":1}\r\n0\r\nX-T: 1\r\n\r\n";
        every_split(r, &done(200, "{\"a\":1}", true));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
        every_split(r, &done(200, "", true));
    }

    #[test]
    fn a_body_without_framing_runs_to_the_close() {
        let mut r = ResponseReader::new(1024);
        assert_eq!(r.feed(b"HTTP/1.1 200 OK\r\n\r\n{\"a\""), Progress::More);
        assert_eq!(r.feed(b":1}"), Progress::More);
        assert_eq!(r.closed(), done(200, "{\"a\":1}", false));
    }

    #[test]
    fn interim_heads_are_skipped_and_empty_statuses_have_no_body() {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        every_split(r, &done(204, "", true));
    }

    #[test]
    fn bytes_after_the_response_make_the_connection_unusable() {
        let got = read_all(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP"]);
        assert_eq!(got, done(200, "{}", false));
    }

    #[test]
    fn failures() {
        let too_big = ResponseReader::new(40).feed(&[b'x'; 41]);
        assert_eq!(too_big, Progress::Failed(ReadFailure::TooLarge));
        let mut r = ResponseReader::new(100);
        assert_eq!(r.feed(b"HTTP/1.1 200 OK\r\n"), Progress::More);
        assert_eq!(r.feed(&[b'x'; 83]), Progress::More);
        assert_eq!(r.feed(b"y"), Progress::Failed(ReadFailure::TooLarge));
        assert!(matches!(
            read_all(&[b"garbage\r\n\r\n"]),
            Progress::Failed(ReadFailure::Malformed(_))
        ));
        assert!(matches!(
            read_all(&[b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"]),
            Progress::Failed(ReadFailure::Malformed(_))
        ));
        assert!(matches!(
            read_all(&[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"]),
            Progress::Failed(ReadFailure::Malformed(_))
        ));
        assert!(matches!(
            read_all(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]),
            Progress::Failed(ReadFailure::Malformed(_))
        ));
        assert!(matches!(
            read_all(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab"]),
            Progress::Failed(ReadFailure::Malformed(_))
        ));
        let mut r = ResponseReader::new(100);
        assert_eq!(
            r.closed(),
            Progress::Failed(ReadFailure::Closed { begun: false })
        );
        assert!(!r.begun());
        assert_eq!(
            r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{"),
            Progress::More
        );
        assert!(r.begun());
        assert_eq!(
            r.closed(),
            Progress::Failed(ReadFailure::Closed { begun: true })
        );
    }
}
