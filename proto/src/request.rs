//! Request classification and verb argument parsing (the protocol reference's "Verbs" and "Actions").
//!
//! A line is, in this order of checks: a verb (its first space-separated word is one of the
//! case-sensitive verb names), a JSON object request, or a bare action call whose first word
//! names the action.

use serde_json::{Map, Value};

/// The socket verbs. Names are case-sensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Quit,
    Exit,
    ParamAdd,
    ParamView,
    ParamDelete,
    ParamsView,
    ParamsDelete,
    RoomAdd,
    RoomLeave,
    RoomChange,
    RoomView,
    Say,
    DetailsView,
    Documentation,
    File,
}

impl Verb {
    /// Every verb, for documentation and tests.
    pub const ALL: [Verb; 15] = [
        Verb::Quit,
        Verb::Exit,
        Verb::ParamAdd,
        Verb::ParamView,
        Verb::ParamDelete,
        Verb::ParamsView,
        Verb::ParamsDelete,
        Verb::RoomAdd,
        Verb::RoomLeave,
        Verb::RoomChange,
        Verb::RoomView,
        Verb::Say,
        Verb::DetailsView,
        Verb::Documentation,
        Verb::File,
    ];

    /// The verb's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Quit => "quit",
            Verb::Exit => "exit",
            Verb::ParamAdd => "paramAdd",
            Verb::ParamView => "paramView",
            Verb::ParamDelete => "paramDelete",
            Verb::ParamsView => "paramsView",
            Verb::ParamsDelete => "paramsDelete",
            Verb::RoomAdd => "roomAdd",
            Verb::RoomLeave => "roomLeave",
            Verb::RoomChange => "roomChange",
            Verb::RoomView => "roomView",
            Verb::Say => "say",
            Verb::DetailsView => "detailsView",
            Verb::Documentation => "documentation",
            Verb::File => "file",
        }
    }

    /// Looks a word up, case-sensitively.
    pub fn from_word(word: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.name() == word)
    }
}

/// The action named by a JSON request.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonAction {
    Named(String),
    /// `action` missing or not a string: answered with "unknown action".
    Missing,
}

/// A classified line.
#[derive(Debug, Clone, PartialEq)]
pub enum Request<'a> {
    /// A verb and the rest of the line after the first space ("" when there is none).
    Verb { verb: Verb, args: &'a str },
    /// A JSON object request. `params` is `Some` only when `params` was an object.
    Json {
        action: JsonAction,
        params: Option<Map<String, Value>>,
    },
    /// A bare action call: the first word names the action.
    Bare { action: &'a str },
    /// A JSON object nested deeper than the limit: refused before it is parsed.
    TooDeep { limit: usize },
}

/// Deepest nesting of JSON objects and arrays in `text` (brackets inside strings do not
/// count). Stops counting once past `limit`, so it costs one pass at most.
pub fn json_depth(text: &str, limit: usize) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    max = depth;
                    if max > limit {
                        return max;
                    }
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Splits at the first single space: `("word", "rest")`, or `(line, "")` without a space.
pub fn first_word(line: &str) -> (&str, &str) {
    line.split_once(' ').unwrap_or((line, ""))
}

/// Nesting serde_json itself refuses (its recursion limit); a larger configured limit
/// could never be reached.
pub const MAX_JSON_DEPTH: usize = 128;

/// Classifies one decoded line; JSON objects nested deeper than `max_depth` are refused.
pub fn classify(line: &str, max_depth: usize) -> Request<'_> {
    let (word, rest) = first_word(line);
    if let Some(verb) = Verb::from_word(word) {
        return Request::Verb { verb, args: rest };
    }
    let is_object = line.trim_start().starts_with('{');
    if is_object && json_depth(line, max_depth) > max_depth {
        return Request::TooDeep { limit: max_depth };
    }
    if is_object && let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(line) {
        let action = match obj.remove("action") {
            Some(Value::String(name)) => JsonAction::Named(name),
            _ => JsonAction::Missing,
        };
        let params = match obj.remove("params") {
            Some(Value::Object(p)) => Some(p),
            _ => None,
        };
        return Request::Json { action, params };
    }
    Request::Bare { action: word }
}

/// Why `paramAdd` arguments were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamAddError {
    KeyRequired,
}

/// Parses `paramAdd` arguments: `key=value` (value = everything after the first `=`),
/// `key value` (value = the rest after the first space) or `key` alone (value `""`).
/// The form is chosen by the first word: if it contains `=`, it is `key=value`.
pub fn param_add(args: &str) -> Result<(&str, &str), ParamAddError> {
    let (word, rest) = first_word(args);
    let (key, value) = match word.split_once('=') {
        Some((key, _)) => (key, &args[key.len() + 1..]),
        None => (word, rest),
    };
    if key.is_empty() {
        Err(ParamAddError::KeyRequired)
    } else {
        Ok((key, value))
    }
}

/// Parses `say room message…`: the message is the rest of the line after the room, spacing
/// kept. `None` when either part is empty.
pub fn say(args: &str) -> Option<(&str, &str)> {
    let (room, message) = first_word(args);
    (!room.is_empty() && !message.is_empty()).then_some((room, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_sensitive_and_split_on_the_first_space() {
        assert_eq!(
            classify("paramAdd a=b c", 64),
            Request::Verb {
                verb: Verb::ParamAdd,
                args: "a=b c"
            }
        );
        assert_eq!(
            classify("quit", 64),
            Request::Verb {
                verb: Verb::Quit,
                args: ""
            }
        );
        assert_eq!(classify("QUIT", 64), Request::Bare { action: "QUIT" });
        assert_eq!(
            classify("ParamAdd x", 64),
            Request::Bare { action: "ParamAdd" }
        );
        for v in Verb::ALL {
            assert_eq!(Verb::from_word(v.name()), Some(v));
        }
    }

    #[test]
    fn bare_action_is_the_first_word() {
        assert_eq!(
            classify("randomNumber please", 64),
            Request::Bare {
                action: "randomNumber"
            }
        );
        assert_eq!(classify("   ", 64), Request::Bare { action: "" });
        assert_eq!(classify(" x", 64), Request::Bare { action: "" });
    }

    #[test]
    fn json_object_requests() {
        match classify(r#"{"action":"cacheTest","params":{"key":"abc"}}"#, 64) {
            Request::Json {
                action: JsonAction::Named(a),
                params: Some(p),
            } => {
                assert_eq!(a, "cacheTest");
                assert_eq!(p["key"], "abc");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            classify(r#"{"params":{}}"#, 64),
            Request::Json {
                action: JsonAction::Missing,
                params: Some(Map::new())
            }
        );
        assert_eq!(
            classify(r#"{"action":5,"params":7}"#, 64),
            Request::Json {
                action: JsonAction::Missing,
                params: None
            }
        );
    }

    #[test]
    fn json_that_is_not_an_object_is_a_bare_call() {
        assert_eq!(classify("123", 64), Request::Bare { action: "123" });
        assert_eq!(classify("[]", 64), Request::Bare { action: "[]" });
        assert_eq!(classify("null", 64), Request::Bare { action: "null" });
        assert_eq!(classify(r#""x""#, 64), Request::Bare { action: r#""x""# });
        assert_eq!(classify("{broken", 64), Request::Bare { action: "{broken" });
    }

    #[test]
    fn json_nesting_limit() {
        let deep = format!(
            "{{\"action\":\"x\",\"params\":{}1{}}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        assert_eq!(classify(&deep, 64), Request::TooDeep { limit: 64 });
        assert!(matches!(classify(&deep, 128), Request::Json { .. }));
        assert_eq!(json_depth(r#"{"a":"[[[[{{{{","b":[1,{"c":2}]}"#, 10), 3);
        assert_eq!(json_depth(r#"{"a":"\"[[["}"#, 10), 1);
        // Counting stops past the limit.
        assert_eq!(json_depth(&"[".repeat(1000), 5), 6);
        // Closing brackets count: siblings are not nested.
        assert_eq!(json_depth("[[],[],[],{}]", 10), 2);
        assert_eq!(json_depth(r#"{"a":{},"b":{},"c":{"d":[]}}"#, 10), 3);
        // Exactly at the limit is allowed; one more is refused.
        let two = r#"{"action":"x","params":{"a":1}}"#;
        assert!(matches!(classify(two, 2), Request::Json { .. }));
        assert_eq!(classify(two, 1), Request::TooDeep { limit: 1 });
        // Not an object: a bare call, whatever its brackets.
        assert_eq!(
            classify(&"[".repeat(200), 64),
            Request::Bare {
                action: &"[".repeat(200)
            }
        );
    }

    #[test]
    fn param_add_forms() {
        assert_eq!(param_add("k=v"), Ok(("k", "v")));
        assert_eq!(param_add("k=v w=x"), Ok(("k", "v w=x")));
        assert_eq!(param_add("k=a=b"), Ok(("k", "a=b")));
        assert_eq!(param_add("k v w"), Ok(("k", "v w")));
        assert_eq!(param_add("k  v"), Ok(("k", " v")));
        assert_eq!(param_add("k"), Ok(("k", "")));
        assert_eq!(param_add("k="), Ok(("k", "")));
        assert_eq!(param_add("k value=x"), Ok(("k", "value=x")));
        assert_eq!(param_add(""), Err(ParamAddError::KeyRequired));
        assert_eq!(param_add("=v"), Err(ParamAddError::KeyRequired));
        assert_eq!(param_add(" v"), Err(ParamAddError::KeyRequired));
    }

    #[test]
    fn say_keeps_message_spacing() {
        assert_eq!(say("room hi  there "), Some(("room", "hi  there ")));
        assert_eq!(say("room  hi"), Some(("room", " hi")));
        assert_eq!(say("room"), None);
        assert_eq!(say("room "), None);
        assert_eq!(say(""), None);
        assert_eq!(say(" hi"), None);
    }
}
