//! The protocol reference's "Actions": action calls, params, the order of checks, built-ins, the worker pool.

use serde_json::{Value, json};

use actionwire::{Action, Input};

use crate::harness::*;

#[test]
fn json_request_params_are_used_for_that_request_only() {
    let srv = TestServer::start();
    let mut c = srv.client();
    c.request("paramAdd key=sticky");
    c.request("paramAdd value=stickyValue");
    let r = c.request(r#"{"action":"cacheTest","params":{"key":"abc","value":"def"}}"#);
    assert_eq!(r["cacheTestResults"]["loadResp"]["key"], "cacheTest_abc");
    assert_eq!(r["cacheTestResults"]["loadResp"]["value"], "def");
    assert_eq!(
        ok_data(&c.request("paramsView")),
        json!({"key":"sticky","value":"stickyValue"}),
        "a JSON request never changes sticky params"
    );
    // Without `params`, the sticky params are used.
    let r = c.request(r#"{"action":"cacheTest"}"#);
    assert_eq!(r["cacheTestResults"]["loadResp"]["key"], "cacheTest_sticky");
    // With `params`, only those: the sticky ones are not merged in.
    let r = c.request(r#"{"action":"cacheTest","params":{"key":"abc"}}"#);
    assert_eq!(
        error_text(&r),
        "value is a required parameter for this action"
    );
}

#[test]
fn bare_calls_and_unknown_actions() {
    let srv = TestServer::start();
    let mut c = srv.client();
    let r = c.request("randomNumber with ignored words");
    assert!(r["randomNumber"].is_f64());
    assert_eq!(ok_data(&c.request("paramView action")), "randomNumber");
    for line in [
        "noSuchAction",
        r#"{"params":{}}"#,
        r#"{"action":5}"#,
        "{}",
        "123",
        "[]",
        r#""x""#,
        "null",
    ] {
        let r = c.request(line);
        assert_eq!(
            error_text(&r),
            "unknown action or invalid apiVersion",
            "{line}"
        );
        assert_eq!(keys(&r), ["error", "context", "messageCount", "messageId"]);
    }
    let r = c.request(r#"{"action":"randomNumber","params":{"apiVersion":2}}"#);
    assert_eq!(error_text(&r), "unknown action or invalid apiVersion");
    let r = c.request(r#"{"action":"randomNumber","params":{"apiVersion":1}}"#);
    assert!(r["randomNumber"].is_f64());
}

#[test]
fn inputs_required_then_validator() {
    let srv = TestServer::start();
    let mut c = srv.client();
    let r = c.request(r#"{"action":"cacheTest","params":{"key":"ab"}}"#);
    assert_eq!(
        error_text(&r),
        "value is a required parameter for this action"
    );
    let r = c.request(r#"{"action":"cacheTest","params":{"key":"ab","value":"xyz"}}"#);
    assert_eq!(error_text(&r), "inputs should be at least 3 letters long");
    let r = c.request(r#"{"action":"cacheTest","params":{"key":"","value":"xyz"}}"#);
    assert_eq!(
        error_text(&r),
        "key is a required parameter for this action"
    );
}

both! {
    fn replies_arrive_in_completion_order(t) {
        let srv = TestServer::over(t);
        let mut c = srv.client();
        c.send(r#"{"action":"sleepTest","params":{"sleepDuration":400}}"#);
        c.send("randomNumber");
        let first = c.json();
        assert_eq!(
            first["messageCount"], 2,
            "the fast action overtakes: {first}"
        );
        assert!(first["randomNumber"].is_f64());
        let second = c.json();
        assert_eq!(second["messageCount"], 1);
        assert_eq!(second["sleepDuration"], 400);
        let delta = second["sleepDelta"].as_u64().expect("ms");
        assert!(delta >= 400, "slept {delta} ms");
        assert_eq!(
            second["sleepEnded"].as_u64().expect("ms") - second["sleepStarted"].as_u64().expect("ms"),
            delta
        );
    }
}

both! {
    fn pending_limit_and_action_counters(t) {
        let srv = TestServer::over_with(t, |c| c.general.simultaneous_actions = 2);
        let mut c = srv.client();
        c.send(r#"{"action":"sleepTest","params":{"sleepDuration":800}}"#);
        c.send(r#"{"action":"sleepTest","params":{"sleepDuration":800}}"#);
        c.send("randomNumber");
        c.send("detailsView");
        let refused = c.json();
        assert_eq!(refused["messageCount"], 3);
        assert_eq!(error_text(&refused), "you have too many pending requests");
        let d = ok_data(&c.json());
        assert_eq!(d["pendingActions"], 2);
        assert_eq!(d["totalActions"], 3, "the refused call counts too");
        let mut done = [
            c.json()["messageCount"].clone(),
            c.json()["messageCount"].clone(),
        ];
        done.sort_by_key(|v| v.as_u64());
        assert_eq!(done, [1, 2], "both sleeps answered, in either order");
        let d = ok_data(&c.request("detailsView"));
        assert_eq!(d["pendingActions"], 0);
        assert_eq!(d["totalActions"], 3, "verbs do not count");
    }
}

#[test]
fn sleep_test_input_checks() {
    let srv = TestServer::start();
    let mut c = srv.client();
    let r = c.request(r#"{"action":"sleepTest","params":{"sleepDuration":"nope"}}"#);
    assert_eq!(
        error_text(&r),
        "sleepDuration must be a whole number of milliseconds"
    );
    let r = c.request(r#"{"action":"sleepTest","params":{"sleepDuration":99999999}}"#);
    assert_eq!(error_text(&r), "sleepDuration must be at most 60000 ms");
    c.request("paramAdd sleepDuration=10");
    let r = c.request("sleepTest");
    assert_eq!(
        r["sleepDuration"], 10,
        "sticky string param formatted to a number"
    );
}

#[test]
fn status_action() {
    let srv = TestServer::with(|c| c.general.server_id = "edge-7".into());
    let mut c = srv.client();
    let _other = srv.client();
    let r = c.request("status");
    assert_eq!(r["id"], "edge-7");
    assert_eq!(r["actionheroVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["name"], "actionwire");
    assert_eq!(r["nodeStatus"], "Node Healthy");
    assert_eq!(r["problems"], json!([]));
    assert_eq!(r["connections"], 2);
    assert_eq!(r["rooms"], 2);
    assert_eq!(r["pendingActions"], 1, "the status call itself is pending");
    assert!(r["uptime"].is_u64());
    assert!(r["consumedMemoryMB"].as_f64().expect("mb") > 0.0);
    assert!(r["description"].is_string() && r["version"].is_string());
}

fn custom_actions() -> Vec<Action> {
    vec![
        Action::new("boom", |_| panic!("kaboom")),
        Action::new("fails", |data| {
            data.response.insert("partial".into(), json!(1));
            Err("it went wrong".into())
        }),
        Action::new("greet", |data| {
            let name = data.params["name"].as_str().unwrap_or_default().to_owned();
            data.response
                .insert("greeting".into(), Value::from(format!("hello {name}")));
            data.response
                .insert("paramsSeen".into(), Value::from(data.params.len()));
            Ok(())
        })
        .input(
            Input::new("name")
                .required()
                .formatter(|v| Ok(Value::from(v.as_str().unwrap_or("").to_uppercase()))),
        ),
    ]
}

#[test]
fn user_actions_errors_and_panics() {
    let srv = TestServer::with_actions(|_| {}, custom_actions());
    let mut c = srv.client();
    for _ in 0..6 {
        // More panics than workers: every one is answered and the pool survives.
        let r = c.request("boom");
        assert_eq!(error_text(&r), "internal error in action boom");
    }
    let r = c.request("fails");
    assert_eq!(
        keys(&r),
        ["partial", "error", "context", "messageCount", "messageId"]
    );
    assert_eq!(r["error"], "it went wrong");
    let r = c.request(r#"{"action":"greet","params":{"name":"ada","junk":"x","messageId":"m"}}"#);
    assert_eq!(r["greeting"], "hello ADA");
    assert_eq!(
        r["paramsSeen"], 2,
        "params are scrubbed to inputs and safe params"
    );
    assert!(c.request("randomNumber")["randomNumber"].is_f64());
}

#[test]
fn duplicate_action_names_refuse_to_start() {
    let err = actionwire::Server::builder(test_config())
        .action(Action::new("status", |_| Ok(())))
        .build()
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "action error: action `status` version 1 is defined twice"
    );
}

#[test]
fn versions_of_one_action_are_picked_by_api_version() {
    let v = |n: u32| {
        Action::new("greet", move |d| {
            d.response.insert("version".into(), serde_json::json!(n));
            Ok(())
        })
        .version(n)
        .description(format!("greets, version {n}"))
        .input(
            Input::new(format!("name{n}"))
                .description("who to greet")
                .default_value(serde_json::json!("ada")),
        )
    };
    // Registered out of order: the highest is the default all the same.
    let srv = TestServer::with_actions(|_| {}, vec![v(2), v(1), v(3)]);
    let mut c = srv.client();
    assert_eq!(c.request(r#"{"action":"greet"}"#)["version"], 3);
    for (given, version) in [("1", 1), ("\"2\"", 2), ("3", 3), ("0", 3), ("null", 3)] {
        let r = c.request(&format!(
            r#"{{"action":"greet","params":{{"apiVersion":{given}}}}}"#
        ));
        assert_eq!(r["version"], version, "apiVersion {given}");
    }
    let r = c.request(r#"{"action":"greet","params":{"apiVersion":4}}"#);
    assert_eq!(error_text(&r), "unknown action or invalid apiVersion");
    // documentation lists every version, with the inputs' descriptions.
    let docs = ok_data(&c.request("documentation"));
    let greet = docs["greet"].as_object().expect("greet");
    assert_eq!(keys(&docs["greet"]), ["1", "2", "3"]);
    assert_eq!(greet["2"]["description"], "greets, version 2");
    assert_eq!(greet["2"]["inputs"]["name2"]["description"], "who to greet");
    assert_eq!(greet["2"]["version"], 2);
}

#[test]
fn sleep_test_does_not_hold_a_worker() {
    // One worker: if a sleep held it, the fast action would wait behind the sleep.
    let srv = TestServer::with(|c| c.workers.count = 1);
    let mut c = srv.client();
    c.send(r#"{"action":"sleepTest","params":{"sleepDuration":1500}}"#);
    c.send(r#"{"action":"sleepTest","params":{"sleepDuration":1500}}"#);
    c.send("randomNumber");
    let first = c.json();
    assert_eq!(
        first["messageCount"], 3,
        "answered while both sleeps run: {first}"
    );
    let mut rest = [c.json(), c.json()];
    rest.sort_by_key(|v| v["messageCount"].as_u64());
    for (r, n) in rest.iter().zip([1, 2]) {
        assert_eq!(r["messageCount"], n);
        assert_eq!(
            keys(r)[..4],
            ["sleepStarted", "sleepEnded", "sleepDelta", "sleepDuration"]
        );
        assert!(r["sleepDelta"].as_u64().expect("ms") >= 1500);
    }
}
