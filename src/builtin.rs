//! The five built-in actions of the protocol reference (`docs/protocol.md`, "Actions"): `randomNumber`, `cacheTest`, `sleepTest`,
//! `status` and `showDocumentation`.
//!
//! All but `cacheTest` are inline (they compute from memory and never block); `cacheTest`
//! stays on the workers because the cache it exercises may live in Redis.

use std::time::Duration;

use serde_json::{Value, json};

use crate::actions::{Action, Input, scalar_as_text, whole_number};
use crate::time::now_ms;

/// Longest `sleepTest` accepted.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// All built-in actions.
pub fn all() -> Vec<Action> {
    vec![
        random_number(),
        cache_test(),
        sleep_test(),
        status(),
        show_documentation(),
    ]
}

fn random_number() -> Action {
    Action::new("randomNumber", |data| {
        let n = fastrand::f64();
        // The sentence spells the number exactly as the reply's JSON does (the shortest text
        // that reads back as the same number), formatted once.
        let mut digits = zmij::Buffer::new();
        let mut sentence = String::with_capacity(48);
        sentence.push_str("Your random number is ");
        sentence.push_str(digits.format_finite(n));
        data.response.insert("randomNumber".into(), json!(n));
        data.response
            .insert("stringRandomNumber".into(), Value::String(sentence));
        Ok(())
    })
    .description("I am an API method which will generate a random number")
    .output_example(
        json!({"randomNumber": 0.123, "stringRandomNumber": "Your random number is 0.123"}),
    )
    .inline()
}

/// A param as text: strings as they are, anything else as its JSON.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn at_least_three(v: &Value) -> Result<(), String> {
    if as_text(v).chars().count() >= 3 {
        Ok(())
    } else {
        Err("inputs should be at least 3 letters long".into())
    }
}

fn cache_test() -> Action {
    Action::new("cacheTest", |data| {
        let key = format!("cacheTest_{}", as_text(&data.params["key"]));
        let value = data.params["value"].clone();
        let cache = &data.api.cache;
        let failed = |e: crate::cache::CacheError| e.to_string();
        cache.save(&key, value, Some(5000)).map_err(failed)?;
        let size = cache.size().map_err(failed)?;
        let load = cache.load(&key).map_err(failed)?.to_json(&key);
        let deleted = cache.destroy(&key).map_err(failed)?;
        data.response.insert(
            "cacheTestResults".into(),
            json!({"saveResp": true, "sizeResp": size, "loadResp": load, "deleteResp": deleted}),
        );
        Ok(())
    })
    .description("I will test the internal cache functions of the API")
    .input(
        Input::new("key")
            .required()
            .formatter(|v| Ok(scalar_as_text(v)))
            .validator(at_least_three),
    )
    .input(
        Input::new("value")
            .required()
            .formatter(|v| Ok(scalar_as_text(v)))
            .validator(at_least_three),
    )
    .output_example(json!({"cacheTestResults": {"saveResp": true, "sizeResp": 1,
        "loadResp": {"key": "cacheTest_key", "value": "value", "expireTimestamp": 1420953274716u64,
        "createdAt": 1420953269716u64, "lastReadAt": 1420953269716u64}, "deleteResp": true}}))
}

fn sleep_test() -> Action {
    Action::new("sleepTest", |data| {
        let ms = data.params["sleepDuration"].as_u64().unwrap_or(0);
        let started = now_ms();
        data.response.insert("sleepStarted".into(), json!(started));
        // The wait runs on the event loop's clock, not on a worker thread: thousands of
        // sleeps can be in flight at once.
        data.respond_after(Duration::from_millis(ms), move |r| {
            let ended = now_ms();
            r.insert("sleepEnded".into(), json!(ended));
            r.insert("sleepDelta".into(), json!(ended.saturating_sub(started)));
            r.insert("sleepDuration".into(), json!(ms));
        });
        Ok(())
    })
    .description("I will sleep and then return")
    .input(
        Input::new("sleepDuration")
            .required()
            .default_value(json!(1000))
            .formatter(|v| {
                let n = match &v {
                    Value::Number(_) => whole_number(&v),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                n.map(Value::from).ok_or_else(|| {
                    "sleepDuration must be a whole number of milliseconds".to_string()
                })
            })
            .validator(|v| match v.as_u64() {
                Some(n) if n <= MAX_SLEEP_MS => Ok(()),
                _ => Err(format!("sleepDuration must be at most {MAX_SLEEP_MS} ms")),
            }),
    )
    .output_example(
        json!({"sleepStarted": 1420953571322u64, "sleepEnded": 1420953572327u64,
        "sleepDelta": 1005, "sleepDuration": 1000}),
    )
    .inline()
}

/// Resident memory of this process in MB (two decimals), from /proc; 0 where unavailable.
fn consumed_memory_mb() -> f64 {
    let kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    (kb / 1024.0 * 100.0).round() / 100.0
}

/// The `status` action's fields (also `GET /status`).
pub fn status_fields(api: &crate::Api) -> serde_json::Map<String, Value> {
    let mut r = serde_json::Map::new();
    fill_status(api, &mut r);
    r
}

fn status() -> Action {
    Action::new("status", |data| {
        fill_status(&data.api, &mut data.response);
        Ok(())
    })
    .description("I will return some basic information about the API")
    .output_example(
        json!({"id": "actionwire-host", "actionheroVersion": env!("CARGO_PKG_VERSION"),
        "uptime": 10469, "nodeStatus": "Node Healthy", "problems": [], "connections": 1,
        "rooms": 2, "pendingActions": 1}),
    )
    .inline()
}

fn fill_status(api: &crate::Api, r: &mut serde_json::Map<String, Value>) {
    {
        r.insert("id".into(), json!(api.server_id()));
        r.insert("actionheroVersion".into(), json!(env!("CARGO_PKG_VERSION")));
        r.insert("name".into(), json!(env!("CARGO_PKG_NAME")));
        r.insert("description".into(), json!(env!("CARGO_PKG_DESCRIPTION")));
        r.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        r.insert("uptime".into(), json!(api.uptime_ms()));
        if let Some(c) = api.cluster.get() {
            r.insert("cluster".into(), crate::cluster::status(c));
        }
        r.insert("consumedMemoryMB".into(), json!(consumed_memory_mb()));
        let (status, problems) = crate::health::node_status(api);
        r.insert("nodeStatus".into(), json!(status));
        r.insert("problems".into(), json!(problems));
        r.insert("connections".into(), json!(api.connections()));
        r.insert("rooms".into(), json!(api.rooms()));
        r.insert("pendingActions".into(), json!(api.pending_actions()));
        r.insert("keepAlivePingsSent".into(), json!(api.keepalive_pings()));
        r.insert("idleTimeouts".into(), json!(api.idle_timeouts()));
        r.insert("handshakeTimeouts".into(), json!(api.handshake_timeouts()));
    }
}

fn show_documentation() -> Action {
    Action::new("showDocumentation", |data| {
        let docs = Value::clone(&data.api.documentation());
        data.response.insert("documentation".into(), docs);
        Ok(())
    })
    .description("return API documentation")
    .inline()
}
