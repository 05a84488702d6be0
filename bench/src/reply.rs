//! What a reply line says about its request: answered, an error, or not what `--expect`
//! asked for. The vocabulary of bench errors lives here.

/// How one reply line is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// The server answered with an error: a JSON object with a top-level `error` member
    /// (actionhero's and actionwire's error replies) or a RESP error line (`-ERR …`).
    ErrorReply,
    /// Not starting with the `--expect` prefix.
    Unexpected,
}

/// Classifies a reply line (without its `\n`). `expect`, when given, is checked first: a
/// reply that does not start with it is `Unexpected` whatever it holds.
pub fn classify(line: &[u8], expect: Option<&[u8]>) -> Verdict {
    if expect.is_some_and(|p| !line.starts_with(p)) {
        return Verdict::Unexpected;
    }
    if is_error_reply(line) {
        Verdict::ErrorReply
    } else {
        Verdict::Ok
    }
}

/// Whether a reply reports an error. Cheap for the common case: only a line that mentions
/// `"error"` is parsed as JSON, so a success reply costs one substring search.
pub fn is_error_reply(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.first() {
        Some(b'-') => true,
        Some(b'{') if memchr::memmem::find(line, b"\"error\"").is_some() => {
            #[derive(serde::Deserialize)]
            struct Probe {
                #[serde(default)]
                error: serde_json::Value,
            }
            // A line that is not JSON after all is not an error reply (some line protocols
            // answer with text that starts with a brace).
            serde_json::from_slice::<Probe>(line).is_ok_and(|p| !p.error.is_null())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actionhero_error_replies_are_errors() {
        let unknown = br#"{"error":"unknown action or invalid apiVersion","context":"response","messageCount":1}"#;
        assert_eq!(classify(unknown, None), Verdict::ErrorReply);
        let refused = br#"{"status":"too many pending requests","error":"you have too many pending requests","context":"response"}"#;
        assert!(is_error_reply(refused));
    }

    #[test]
    fn success_replies_are_not_even_when_they_mention_error() {
        assert_eq!(
            classify(br#"{"status":"OK","context":"response","data":null}"#, None),
            Verdict::Ok
        );
        // The word inside data, not a top-level member.
        let data = br#"{"status":"OK","context":"response","data":{"error":"text a user saved"}}"#;
        assert!(!is_error_reply(data));
        let value = br#"{"status":"OK","context":"response","data":"\"error\""}"#;
        assert!(!is_error_reply(value));
        assert!(!is_error_reply(br#"{"error":null,"status":"OK"}"#));
        assert!(!is_error_reply(br#"{"error" but not JSON"#));
        assert!(!is_error_reply(b"+PONG\r"));
        assert!(!is_error_reply(b""));
    }

    #[test]
    fn resp_errors_are_errors() {
        assert!(is_error_reply(b"-ERR unknown command 'PIN'\r"));
        assert_eq!(classify(b"-ERR x", Some(b"+PONG")), Verdict::Unexpected);
    }

    #[test]
    fn expect_is_checked_first() {
        assert_eq!(classify(b"+PONG\r", Some(b"+PONG")), Verdict::Ok);
        assert_eq!(classify(b"+PONG\r", Some(b"$4")), Verdict::Unexpected);
        assert_eq!(
            classify(br#"{"error":"x"}"#, Some(b"{")),
            Verdict::ErrorReply
        );
    }
}
