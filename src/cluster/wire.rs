//! The bus's messages: what this node publishes on the cluster's channel and how what it
//! receives is read (the protocol reference, "Cluster"). Sans-IO: bytes in, typed messages
//! out, and JSON text with actionhero's field order out.
//!
//! A received message is handled only when its `serverToken` is this cluster's; anything
//! foreign, unparsable, of an unknown `messageType` or missing a field it needs is
//! dropped with a [`Drop`] reason (counted by the caller), never an error.

use serde::Serialize;
use serde_json::{Map, Value};

/// Why a received message was dropped (the `reason` label of
/// `actionwire_cluster_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drop {
    /// Not a JSON object, or missing a field its type needs.
    Malformed,
    /// Another cluster's (or a forged) `serverToken`.
    ForeignToken,
    /// A `messageType` this node does not handle.
    UnknownType,
}

impl Drop {
    pub(crate) const ALL: [Drop; 3] = [Drop::Malformed, Drop::ForeignToken, Drop::UnknownType];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::ForeignToken => "foreign_token",
            Drop::UnknownType => "unknown_type",
        }
    }
}

/// A message received from the bus, this cluster's token checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    Chat(BusChat),
    /// A cluster call (`do`).
    Do(Call),
    /// An answer to a cluster call (`doResponse`).
    DoResponse {
        message_id: String,
        response: Option<Value>,
    },
}

/// A chat message from the bus. Fields absent from the bus message stay absent from the
/// lines written to members.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BusChat {
    /// The publishing node (its own echoes are skipped).
    pub server_id: Option<String>,
    pub room: String,
    pub message: Option<Value>,
    /// `connection.id`: the sender's connection id, or `0` for the server.
    pub from: Option<Value>,
    pub sent_at: Option<Value>,
}

impl BusChat {
    /// The line written to each local member of the room:
    /// `{"message","room","from","context":"user","sentAt"}`.
    pub(crate) fn line(&self) -> Vec<u8> {
        let mut m = Map::new();
        if let Some(v) = &self.message {
            m.insert("message".into(), v.clone());
        }
        m.insert("room".into(), Value::String(self.room.clone()));
        if let Some(v) = &self.from {
            m.insert("from".into(), v.clone());
        }
        m.insert("context".into(), Value::String("user".into()));
        if let Some(v) = &self.sent_at {
            m.insert("sentAt".into(), v.clone());
        }
        let mut out = serde_json::to_vec(&m).unwrap_or_default();
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// A cluster call (`do`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub server_id: Option<String>,
    /// `messageId` (actionhero 18: `requestId`).
    pub message_id: String,
    pub method: String,
    /// Only the node holding this connection acts; absent: every node.
    pub connection_id: Option<String>,
    pub args: Vec<Value>,
}

/// Reads one bus message.
pub(crate) fn parse(payload: &[u8], token: &str) -> Result<Incoming, Drop> {
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(payload) else {
        return Err(Drop::Malformed);
    };
    if m.get("serverToken").and_then(Value::as_str) != Some(token) {
        return Err(Drop::ForeignToken);
    }
    let server_id = match m.remove("serverId") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let message_id = |m: &mut Map<String, Value>| match m
        .remove("messageId")
        .or_else(|| m.remove("requestId"))
    {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(Drop::Malformed),
    };
    match m.get("messageType").and_then(Value::as_str) {
        Some("chat") => {
            let Some(Value::Object(mut conn)) = m.remove("connection") else {
                return Err(Drop::Malformed);
            };
            let Some(Value::String(room)) = conn.remove("room") else {
                return Err(Drop::Malformed);
            };
            Ok(Incoming::Chat(BusChat {
                server_id,
                room,
                message: m.remove("message"),
                from: conn.remove("id"),
                sent_at: m.remove("sentAt"),
            }))
        }
        Some("do") => {
            let message_id = message_id(&mut m)?;
            let Some(Value::String(method)) = m.remove("method") else {
                return Err(Drop::Malformed);
            };
            let args = match m.remove("args") {
                Some(Value::Array(a)) => a,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(Drop::Malformed),
            };
            let connection_id = match m.remove("connectionId") {
                Some(Value::String(s)) => Some(s),
                None | Some(Value::Null) => None,
                Some(_) => return Err(Drop::Malformed),
            };
            Ok(Incoming::Do(Call {
                server_id,
                message_id,
                method,
                connection_id,
                args,
            }))
        }
        Some("doResponse") => Ok(Incoming::DoResponse {
            message_id: message_id(&mut m)?,
            response: m.remove("response"),
        }),
        Some(_) => Err(Drop::UnknownType),
        None => Err(Drop::Malformed),
    }
}

/// Who a published chat message is from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sender<'a> {
    Connection(&'a str),
    /// The server itself (`"id":0`).
    Server,
}

impl Serialize for Sender<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Sender::Connection(id) => s.serialize_str(id),
            Sender::Server => s.serialize_u8(0),
        }
    }
}

/// This node's identity on the bus: what every message it publishes carries.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub token: String,
    pub server_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatOut<'a> {
    message_type: &'static str,
    server_token: &'a str,
    server_id: &'a str,
    message: &'a Value,
    sent_at: u64,
    connection: ChatConnection<'a>,
}

#[derive(Serialize)]
struct ChatConnection<'a> {
    id: Sender<'a>,
    room: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DoOut<'a> {
    message_type: &'static str,
    server_id: &'a str,
    server_token: &'a str,
    message_id: &'a str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_id: Option<&'a str>,
    args: &'a [Value],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DoResponseOut<'a> {
    message_type: &'static str,
    server_id: &'a str,
    server_token: &'a str,
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a Value>,
}

impl Identity {
    /// `{"messageType":"chat","serverToken","serverId","message","sentAt","connection":{"id","room"}}`.
    pub(crate) fn chat(
        &self,
        room: &str,
        message: &Value,
        from: Sender<'_>,
        sent_at: u64,
    ) -> String {
        to_string(&ChatOut {
            message_type: "chat",
            server_token: &self.token,
            server_id: &self.server_id,
            message,
            sent_at,
            connection: ChatConnection { id: from, room },
        })
    }

    /// `{"messageType":"do","serverId","serverToken","messageId","method","connectionId"?,"args"}`.
    pub(crate) fn call(
        &self,
        message_id: &str,
        method: &str,
        connection_id: Option<&str>,
        args: &[Value],
    ) -> String {
        to_string(&DoOut {
            message_type: "do",
            server_id: &self.server_id,
            server_token: &self.token,
            message_id,
            method,
            connection_id,
            args,
        })
    }

    /// `{"messageType":"doResponse","serverId","serverToken","messageId","response"?}`.
    pub(crate) fn response(&self, message_id: &str, response: Option<&Value>) -> String {
        to_string(&DoResponseOut {
            message_type: "doResponse",
            server_id: &self.server_id,
            server_token: &self.token,
            message_id,
            response,
        })
    }
}

/// Serialising these structs cannot fail (string keys, no custom errors).
fn to_string<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A member entry in `<room's members hash>`: `{"id","joinedAt","host"}`.
pub(crate) fn member_entry(id: &str, joined_at: u64, host: &str) -> String {
    serde_json::json!({"id": id, "joinedAt": joined_at, "host": host}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> Identity {
        Identity {
            token: "change-me".into(),
            server_id: "nodeA".into(),
        }
    }

    #[test]
    fn published_messages_have_actionheros_field_order() {
        let id = "bf9e6ffe-0392-4f96-b7b7-a6c2aae88e36";
        assert_eq!(
            me().chat(
                "defaultRoom",
                &json!("hello"),
                Sender::Connection(id),
                1796151792889
            ),
            format!(
                r#"{{"messageType":"chat","serverToken":"change-me","serverId":"nodeA","message":"hello","sentAt":1796151792889,"connection":{{"id":"{id}","room":"defaultRoom"}}}}"#
            )
        );
        assert!(
            me().chat("r", &json!({"a": 1}), Sender::Server, 5)
                .ends_with(r#""message":{"a":1},"sentAt":5,"connection":{"id":0,"room":"r"}}"#)
        );
        assert_eq!(
            me().call(
                "m1",
                "api.chatRoom.removeMember",
                Some("c1"),
                &[json!("c1"), json!("tmpRoom")]
            ),
            r#"{"messageType":"do","serverId":"nodeA","serverToken":"change-me","messageId":"m1","method":"api.chatRoom.removeMember","connectionId":"c1","args":["c1","tmpRoom"]}"#
        );
        assert_eq!(
            me().call("m2", "api.log", None, &[json!("hi")]),
            r#"{"messageType":"do","serverId":"nodeA","serverToken":"change-me","messageId":"m2","method":"api.log","args":["hi"]}"#
        );
        assert_eq!(
            me().response("m1", Some(&json!(true))),
            r#"{"messageType":"doResponse","serverId":"nodeA","serverToken":"change-me","messageId":"m1","response":true}"#
        );
        assert_eq!(
            me().response("m1", None),
            r#"{"messageType":"doResponse","serverId":"nodeA","serverToken":"change-me","messageId":"m1"}"#
        );
        assert_eq!(
            member_entry("c1", 7, "nodeA"),
            r#"{"id":"c1","joinedAt":7,"host":"nodeA"}"#
        );
    }

    #[test]
    fn what_this_node_publishes_it_reads_back() {
        let chat = me().chat("lobby", &json!("hi"), Sender::Connection("c9"), 42);
        let Ok(Incoming::Chat(c)) = parse(chat.as_bytes(), "change-me") else {
            panic!("a chat");
        };
        assert_eq!(c.server_id.as_deref(), Some("nodeA"));
        assert_eq!(
            String::from_utf8(c.line()).expect("utf8"),
            "{\"message\":\"hi\",\"room\":\"lobby\",\"from\":\"c9\",\"context\":\"user\",\"sentAt\":42}\r\n"
        );
        let call = me().call("m", "api.log", None, &[json!("x")]);
        let Ok(Incoming::Do(c)) = parse(call.as_bytes(), "change-me") else {
            panic!("a call");
        };
        assert_eq!(
            (c.method.as_str(), c.connection_id, c.args),
            ("api.log", None, vec![json!("x")])
        );
        let resp = me().response("m", Some(&json!(true)));
        assert_eq!(
            parse(resp.as_bytes(), "change-me"),
            Ok(Incoming::DoResponse {
                message_id: "m".into(),
                response: Some(json!(true))
            })
        );
    }

    #[test]
    fn absent_chat_fields_stay_absent_and_requestid_is_read() {
        let m = br#"{"messageType":"chat","serverToken":"t","connection":{"room":"r"}}"#;
        let Ok(Incoming::Chat(c)) = parse(m, "t") else {
            panic!("a chat");
        };
        assert_eq!(c.line(), b"{\"room\":\"r\",\"context\":\"user\"}\r\n");
        let m = br#"{"messageType":"doResponse","serverToken":"t","requestId":"r1"}"#;
        assert_eq!(
            parse(m, "t"),
            Ok(Incoming::DoResponse {
                message_id: "r1".into(),
                response: None
            })
        );
    }

    #[test]
    fn what_cannot_be_handled_is_dropped_with_a_reason() {
        for (m, why) in [
            (&b"not json"[..], Drop::Malformed),
            (b"[1,2]", Drop::Malformed),
            (
                br#"{"messageType":"chat","serverToken":"x","connection":{"room":"r"}}"#,
                Drop::ForeignToken,
            ),
            (
                br#"{"messageType":"chat","connection":{"room":"r"}}"#,
                Drop::ForeignToken,
            ),
            (
                br#"{"messageType":"chat","serverToken":"t"}"#,
                Drop::Malformed,
            ),
            (
                br#"{"messageType":"chat","serverToken":"t","connection":{"id":"c"}}"#,
                Drop::Malformed,
            ),
            (
                br#"{"messageType":"do","serverToken":"t","messageId":"m"}"#,
                Drop::Malformed,
            ),
            (
                br#"{"messageType":"do","serverToken":"t","method":"api.log"}"#,
                Drop::Malformed,
            ),
            (
                br#"{"messageType":"do","serverToken":"t","messageId":"m","method":"x","args":5}"#,
                Drop::Malformed,
            ),
            (
                br#"{"messageType":"doResponse","serverToken":"t"}"#,
                Drop::Malformed,
            ),
            (
                br#"{"messageType":"gossip","serverToken":"t"}"#,
                Drop::UnknownType,
            ),
            (br#"{"serverToken":"t"}"#, Drop::Malformed),
        ] {
            assert_eq!(parse(m, "t"), Err(why), "{}", String::from_utf8_lossy(m));
        }
    }
}
