//! A backend's answer as the caller's reply (the protocol reference, "Edge mode"): the
//! backend's JSON without its `serverInformation` and `requesterInformation` blocks, in the
//! backend's field order, `error` making it an error reply; then, on the socket, `context`
//! and the counters exactly as for a local action. What went wrong on the way is an error
//! reply that names it.

use actionwire_proto::{RawJson, encode};
use serde_json::{Map, Value};

use super::response::Response;
use crate::actions::{Reply, ReplyFormat};
use crate::metrics::Outcome;

/// The blocks actionhero's web server adds to every answer, dropped from the reply.
const METADATA: [&str; 2] = ["serverInformation", "requesterInformation"];

/// Why a forwarded call has no answer from the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Unreachable, closed early, not HTTP, not a JSON object, too large.
    Unavailable(String),
    /// `upstream.timeout` passed.
    TimedOut,
    /// `upstream.maxQueued` calls were already waiting.
    QueueFull,
}

impl Failure {
    /// The reply's `error` text.
    pub(crate) fn text(&self) -> String {
        match self {
            Failure::Unavailable(why) => format!("upstream unavailable: {why}"),
            Failure::TimedOut => "upstream timed out".to_owned(),
            Failure::QueueFull => {
                "upstream unavailable: too many calls waiting for the backend".to_owned()
            }
        }
    }

    /// The status of an HTTP front door answer.
    fn http_status(&self) -> u16 {
        match self {
            Failure::Unavailable(_) => 502,
            Failure::TimedOut => 504,
            Failure::QueueFull => 503,
        }
    }
}

/// The caller's reply and the action outcome (for metrics) of a forwarded call.
pub(crate) fn reply_of(format: ReplyFormat, result: Result<Response, Failure>) -> (Reply, Outcome) {
    let answer = result.and_then(|r| match serde_json::from_slice::<Value>(&r.body) {
        Ok(Value::Object(fields)) => Ok((r.status, fields)),
        _ => Err(Failure::Unavailable(format!(
            "the backend answered {} with a body that is not a JSON object",
            r.status
        ))),
    });
    let (status, fields, error) = match answer {
        Ok((status, mut fields)) => {
            for key in METADATA {
                fields.shift_remove(key);
            }
            let error = match fields.shift_remove("error") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(other) => Some(other.to_string()),
            };
            (status, fields, error)
        }
        Err(f) => (f.http_status(), Map::new(), Some(f.text())),
    };
    let outcome = match (&error, status) {
        (None, _) => Outcome::Ok,
        (Some(_), 422) => Outcome::InvalidInput,
        (Some(_), _) => Outcome::Error,
    };
    let mut out = Vec::with_capacity(128);
    let reply = match format {
        ReplyFormat::Socket { count, id } => {
            // `context` and the counters are this server's (the encoder leaves the
            // backend's out).
            encode::action_reply(
                &mut out,
                &fields,
                error.as_deref(),
                count,
                RawJson(id.as_str()),
            );
            Reply::Socket(out)
        }
        ReplyFormat::Http => {
            encode::action_object(&mut out, &fields, error.as_deref());
            Reply::Http { status, body: out }
        }
    };
    (reply, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::MessageId;

    fn socket(result: Result<Response, Failure>) -> (String, Outcome) {
        let format = ReplyFormat::Socket {
            count: 3,
            id: MessageId::Given("\"m\"".into()),
        };
        match reply_of(format, result) {
            (Reply::Socket(b), o) => (String::from_utf8(b).expect("utf8"), o),
            _ => panic!("a socket reply"),
        }
    }

    fn answered(status: u16, body: &str) -> Result<Response, Failure> {
        Ok(Response {
            status,
            body: body.as_bytes().to_vec(),
            reusable: true,
        })
    }

    #[test]
    fn metadata_is_dropped_and_the_backend_order_kept() {
        let (line, o) = socket(answered(
            200,
            r#"{"z":1,"serverInformation":{"serverName":"x"},"a":[2],"requesterInformation":{"id":"i"}}"#,
        ));
        assert_eq!(
            line,
            r#"{"z":1,"a":[2],"context":"response","messageCount":3,"messageId":"m"}"#.to_owned()
                + "\r\n"
        );
        assert_eq!(o, Outcome::Ok);
    }

    #[test]
    fn an_error_field_makes_an_error_reply() {
        let (line, o) = socket(answered(
            422,
            r#"{"serverInformation":{},"error":"x is a required parameter for this action"}"#,
        ));
        assert!(
            line.starts_with(r#"{"error":"x is a required parameter for this action","context""#),
            "{line}"
        );
        assert_eq!(o, Outcome::InvalidInput);
        let (line, o) = socket(answered(400, r#"{"error":{"code":7}}"#));
        assert!(line.starts_with(r#"{"error":"{\"code\":7}","#), "{line}");
        assert_eq!(o, Outcome::Error);
    }

    #[test]
    fn failures_name_their_cause() {
        let (line, _) = socket(answered(502, "<html>bad gateway</html>"));
        assert!(line.contains("upstream unavailable: the backend answered 502 with a body that is not a JSON object"), "{line}");
        let (line, o) = socket(Err(Failure::TimedOut));
        assert!(
            line.starts_with(r#"{"error":"upstream timed out","context":"response""#),
            "{line}"
        );
        assert_eq!(o, Outcome::Error);
        match reply_of(ReplyFormat::Http, Err(Failure::QueueFull)) {
            (Reply::Http { status, body }, _) => {
                assert_eq!(status, 503);
                assert!(String::from_utf8_lossy(&body).contains("too many calls waiting"));
            }
            _ => panic!("an HTTP reply"),
        }
        match reply_of(
            ReplyFormat::Http,
            answered(404, r#"{"error":"unknown action or invalid apiVersion"}"#),
        ) {
            (Reply::Http { status, .. }, _) => assert_eq!(status, 404),
            _ => panic!("an HTTP reply"),
        }
    }
}
