//! Encoders for every server message, with the key order of the protocol reference (`docs/protocol.md`).
//!
//! Each function appends one complete message (JSON object + `\r\n`) to a caller-owned
//! buffer, so replies can be batched into one write and broadcasts encoded once.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::scanner::LineLength;

/// Line terminator of every server message.
pub const EOL: &[u8] = b"\r\n";

/// Text that is already valid JSON (a message id, a pre-encoded document), written verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'a>(pub &'a str);

/// Who sent a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From<'a> {
    /// A connection, by its id.
    Connection(&'a str),
    /// The server itself (`"from":0`).
    Server,
}

/// Writes any serialisable value as JSON. Serialising into a `Vec` fails only for values
/// serde_json cannot represent (maps with non-string keys), which no caller passes; such a
/// value is written as `null` rather than corrupting the stream.
pub fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, value).is_err() {
        debug_assert!(false, "value could not be encoded as JSON");
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
}

/// Writes a string as JSON: copied between quotes when nothing in it needs escaping (names,
/// sentences, ids: nearly every string a reply holds), else through serde_json. Either way
/// the bytes are exactly serde_json's, which escapes only `"`, `\\` and control characters.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        write_json(out, s);
    }
}

/// Whether any byte is `"`, `\\` or a control character: eight bytes at a time (a reply's
/// strings are checked on every call; byte by byte this was most of encoding a reply).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Sets a byte's high bit where that byte of `v` is below `n` (exact for bytes below
    // 0x80; a byte at or above 0x80 never sets it, and a borrow can only add false hits,
    // which fall back to the byte-by-byte check).
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        if below(v, 0x20)
            | below(v ^ (ONES * u64::from(b'"')), 1)
            | below(v ^ (ONES * u64::from(b'\\')), 1)
            != 0
            && chunk.iter().any(|&b| escaped(b))
        {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| escaped(b))
}

fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Writes a JSON value, a top-level string through [`write_str`]'s fast path.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => write_str(out, s),
        other => write_json(out, other),
    }
}

fn key(out: &mut Vec<u8>, first: bool, name: &str) {
    out.extend_from_slice(if first { b"{\"" } else { b",\"" });
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `"context":"response","messageCount":N,"messageId":ID}` + EOL: the end of every response.
fn counters(out: &mut Vec<u8>, message_count: u64, message_id: RawJson<'_>) {
    out.extend_from_slice(b"\"context\":\"response\"");
    ok_tail(out, message_count, message_id);
}

/// `{"welcome":<text>,"context":"api"}`
pub fn welcome(out: &mut Vec<u8>, text: &str) {
    key(out, true, "welcome");
    write_json(out, text);
    out.extend_from_slice(b",\"context\":\"api\"}\r\n");
}

/// `{"status":"OK","context":"response","data":<data>,"messageCount":N,"messageId":ID}`
pub fn verb_ok<T: Serialize + ?Sized>(out: &mut Vec<u8>, data: &T, count: u64, id: RawJson<'_>) {
    out.extend_from_slice(OK_HEAD);
    write_json(out, data);
    ok_tail(out, count, id);
}

/// As [`verb_ok`] with pre-encoded data.
pub fn verb_ok_raw(out: &mut Vec<u8>, data: RawJson<'_>, count: u64, id: RawJson<'_>) {
    out.extend_from_slice(OK_HEAD);
    out.extend_from_slice(data.0.as_bytes());
    ok_tail(out, count, id);
}

const OK_HEAD: &[u8] = b"{\"status\":\"OK\",\"context\":\"response\",\"data\":";

/// `,"messageCount":N,"messageId":ID}` + EOL.
fn ok_tail(out: &mut Vec<u8>, count: u64, id: RawJson<'_>) {
    out.extend_from_slice(b",\"messageCount\":");
    write_json(out, &count);
    out.extend_from_slice(b",\"messageId\":");
    out.extend_from_slice(id.0.as_bytes());
    out.extend_from_slice(b"}\r\n");
}

/// `{"error":<text>,"context":"response","messageCount":N,"messageId":ID}`
pub fn error(out: &mut Vec<u8>, text: &str, count: u64, id: RawJson<'_>) {
    key(out, true, "error");
    write_json(out, text);
    out.push(b',');
    counters(out, count, id);
}

/// An action reply: the response's fields in order, then `error` if it failed, then the
/// context and counters. Response fields named `error`, `context`, `messageCount` or
/// `messageId` are left out: the protocol's own keys always win.
pub fn action_reply(
    out: &mut Vec<u8>,
    response: &Map<String, Value>,
    error: Option<&str>,
    count: u64,
    id: RawJson<'_>,
) {
    out.push(b'{');
    for (k, v) in response {
        if matches!(
            k.as_str(),
            "error" | "context" | "messageCount" | "messageId"
        ) {
            continue;
        }
        write_str(out, k);
        out.push(b':');
        write_value(out, v);
        out.push(b',');
    }
    if let Some(text) = error {
        out.extend_from_slice(b"\"error\":");
        write_json(out, text);
        out.push(b',');
    }
    counters(out, count, id);
}

/// An action's result as a bare object (the HTTP body): its response fields in order, then
/// `error` if it failed. A response field named `error` is left out, as in [`action_reply`].
pub fn action_object(out: &mut Vec<u8>, response: &Map<String, Value>, error: Option<&str>) {
    out.push(b'{');
    let mut first = true;
    for (k, v) in response {
        if k == "error" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, k);
        out.push(b':');
        write_value(out, v);
    }
    if let Some(text) = error {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"\"error\":");
        write_json(out, text);
    }
    out.push(b'}');
}

/// The over-long line reply, with actionhero's legacy (swapped) wording.
pub fn too_long(out: &mut Vec<u8>, max: usize, actual: LineLength, count: u64, id: RawJson<'_>) {
    let actual = match actual {
        LineLength::Exact(n) => n.to_string(),
        LineLength::AtLeast(n) => format!("{n}+"),
    };
    let text = format!("data length is too big ({max} received/{actual} max)");
    out.extend_from_slice(b"{\"status\":\"error\",\"error\":");
    write_json(out, &text);
    out.push(b',');
    counters(out, count, id);
}

/// `{"message":..,"room":..,"from":..,"context":"user","sentAt":ms}`
pub fn chat<M: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    message: &M,
    room: &str,
    from: From<'_>,
    sent_at: u64,
) {
    key(out, true, "message");
    write_json(out, message);
    out.extend_from_slice(b",\"room\":");
    write_json(out, room);
    out.extend_from_slice(b",\"from\":");
    match from {
        From::Connection(id) => write_json(out, id),
        From::Server => out.push(b'0'),
    }
    out.extend_from_slice(b",\"context\":\"user\",\"sentAt\":");
    write_json(out, &sent_at);
    out.extend_from_slice(b"}\r\n");
}

/// `{"status":"Bye!","context":"api"}`, with `"reason"` when the server ended the connection.
pub fn bye(out: &mut Vec<u8>, reason: Option<&str>) {
    out.extend_from_slice(b"{\"status\":\"Bye!\",\"context\":\"api\"");
    if let Some(r) = reason {
        out.extend_from_slice(b",\"reason\":");
        write_json(out, r);
    }
    out.extend_from_slice(b"}\r\n");
}

/// `{"context":"api","status":"keep-alive","serverTime":<iso>}`
pub fn keep_alive(out: &mut Vec<u8>, server_time: &str) {
    out.extend_from_slice(b"{\"context\":\"api\",\"status\":\"keep-alive\",\"serverTime\":");
    write_json(out, server_time);
    out.extend_from_slice(b"}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).expect("utf8")
    }

    const ID: RawJson<'static> = RawJson("\"m-1\"");

    proptest::proptest! {
        #[test]
        fn write_str_is_serde_json(text in ".*", raw in proptest::collection::vec(0u8..0x80, 0..40)) {
            for s in [text, String::from_utf8(raw).unwrap_or_default()] {
                let mut out = Vec::new();
                write_str(&mut out, &s);
                proptest::prop_assert_eq!(out, serde_json::to_vec(&s).unwrap_or_default());
                let mut out = Vec::new();
                write_value(&mut out, &Value::String(s.clone()));
                proptest::prop_assert_eq!(out, serde_json::to_vec(&s).unwrap_or_default());
            }
        }
    }

    #[test]
    fn welcome_and_bye() {
        assert_eq!(
            s(|o| welcome(o, "Hello! \"x\"")),
            "{\"welcome\":\"Hello! \\\"x\\\"\",\"context\":\"api\"}\r\n"
        );
        assert_eq!(
            s(|o| bye(o, None)),
            "{\"status\":\"Bye!\",\"context\":\"api\"}\r\n"
        );
        assert_eq!(
            s(|o| bye(o, Some("idle timeout"))),
            "{\"status\":\"Bye!\",\"context\":\"api\",\"reason\":\"idle timeout\"}\r\n"
        );
    }

    #[test]
    fn verb_replies() {
        assert_eq!(
            s(|o| verb_ok(o, &Value::Null, 3, ID)),
            "{\"status\":\"OK\",\"context\":\"response\",\"data\":null,\"messageCount\":3,\"messageId\":\"m-1\"}\r\n"
        );
        assert_eq!(
            s(|o| verb_ok_raw(o, RawJson("{\"a\":[1]}"), 1234567, ID)),
            "{\"status\":\"OK\",\"context\":\"response\",\"data\":{\"a\":[1]},\"messageCount\":1234567,\"messageId\":\"m-1\"}\r\n"
        );
        assert_eq!(
            s(|o| error(o, "room does not exist", 9, ID)),
            "{\"error\":\"room does not exist\",\"context\":\"response\",\"messageCount\":9,\"messageId\":\"m-1\"}\r\n"
        );
    }

    #[test]
    fn action_reply_field_order_and_reserved_keys() {
        let mut resp = Map::new();
        resp.insert("b".into(), json!(1));
        resp.insert("context".into(), json!("evil"));
        resp.insert("a".into(), json!("x"));
        assert_eq!(
            s(|o| action_reply(o, &resp, None, 2, ID)),
            "{\"b\":1,\"a\":\"x\",\"context\":\"response\",\"messageCount\":2,\"messageId\":\"m-1\"}\r\n"
        );
        assert_eq!(
            s(|o| action_reply(o, &Map::new(), Some("bad"), 2, ID)),
            "{\"error\":\"bad\",\"context\":\"response\",\"messageCount\":2,\"messageId\":\"m-1\"}\r\n"
        );
    }

    #[test]
    fn action_object_for_http() {
        let mut resp = Map::new();
        resp.insert("a".into(), json!(1));
        resp.insert("error".into(), json!("shadowed"));
        assert_eq!(s(|o| action_object(o, &resp, None)), r#"{"a":1}"#);
        assert_eq!(
            s(|o| action_object(o, &resp, Some("bad"))),
            r#"{"a":1,"error":"bad"}"#
        );
        assert_eq!(
            s(|o| action_object(o, &Map::new(), Some("x"))),
            r#"{"error":"x"}"#
        );
        assert_eq!(s(|o| action_object(o, &Map::new(), None)), "{}");
    }

    #[test]
    fn too_long_uses_the_legacy_wording() {
        assert_eq!(
            s(|o| too_long(o, 10, LineLength::Exact(12), 1, ID)),
            "{\"status\":\"error\",\"error\":\"data length is too big (10 received/12 max)\",\"context\":\"response\",\"messageCount\":1,\"messageId\":\"m-1\"}\r\n"
        );
        assert!(
            s(|o| too_long(o, 1048576, LineLength::AtLeast(1048576), 1, ID))
                .contains("(1048576 received/1048576+ max)")
        );
    }

    #[test]
    fn chat_and_keep_alive() {
        assert_eq!(
            s(|o| chat(o, "hi \u{1F600}", "r", From::Connection("abc"), 5)),
            "{\"message\":\"hi \u{1F600}\",\"room\":\"r\",\"from\":\"abc\",\"context\":\"user\",\"sentAt\":5}\r\n"
        );
        assert!(s(|o| chat(o, "m", "r", From::Server, 5)).contains("\"from\":0,"));
        assert_eq!(
            s(|o| keep_alive(o, "2012-01-03T19:48:40.136Z")),
            "{\"context\":\"api\",\"status\":\"keep-alive\",\"serverTime\":\"2012-01-03T19:48:40.136Z\"}\r\n"
        );
    }

    #[test]
    fn every_message_is_one_json_object_per_line() {
        let mut out = Vec::new();
        welcome(&mut out, "w\r\nx");
        chat(&mut out, "a\nb", "r", From::Server, 1);
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            let v: Value = serde_json::from_str(l).expect("json");
            assert!(v.is_object());
        }
    }
}
