//! Actions over the cache: `cacheSave`, `cacheLoad`, `cacheDestroy`, `cacheLock`,
//! `cacheUnlock`, `cacheSize`. With `--redis` the cache lives in Redis in actionhero's
//! format, so entries saved here are read by actionhero nodes and the other way round.
//!
//! ```text
//! cargo run --example cache_actions -- --port 5000 --redis redis://127.0.0.1:6379
//! nc localhost 5000
//! {"action":"cacheSave","params":{"key":"greeting","value":{"hello":"world"},"ttl":60000}}
//! {"saved":true,"context":"response",…}
//! {"action":"cacheLoad","params":{"key":"greeting"}}
//! {"entry":{"key":"greeting","value":{"hello":"world"},"expireTimestamp":…},…}
//! ```
//!
//! The cache answers with actionhero's errors (`Object not found`, `Object expired`,
//! `Object locked`), which become the action's error reply.

use std::process::ExitCode;

use actionwire::{Action, Config, Input, Server};
use serde_json::{Value, json};

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An optional number of milliseconds (sticky params arrive as text).
fn ms(v: &Value) -> Result<Option<u64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_u64().map(Some).ok_or_else(|| format!("bad ttl {n}")),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("bad ttl {s:?}")),
        other => Err(format!("bad ttl {other}")),
    }
}

/// The six actions, for a server builder.
pub fn cache_actions() -> Vec<Action> {
    let key = || Input::new("key").required();
    vec![
        Action::new("cacheSave", |data| {
            let ttl = ms(data.params.get("ttl").unwrap_or(&Value::Null))?;
            let value = data.params["value"].clone();
            let key = text(&data.params["key"]);
            data.api
                .cache
                .save(&key, value, ttl)
                .map_err(|e| e.to_string())?;
            data.response.insert("saved".into(), json!(true));
            Ok(())
        })
        .description("Saves value under key, expiring after ttl ms (none: never)")
        .input(key())
        .input(Input::new("value").required())
        .input(Input::new("ttl")),
        Action::new("cacheLoad", |data| {
            let key = text(&data.params["key"]);
            let entry = data.api.cache.load(&key).map_err(|e| e.to_string())?;
            data.response.insert("entry".into(), entry.to_json(&key));
            Ok(())
        })
        .description("Loads the entry under key")
        .input(key()),
        Action::new("cacheDestroy", |data| {
            let key = text(&data.params["key"]);
            let destroyed = data.api.cache.destroy(&key).map_err(|e| e.to_string())?;
            data.response.insert("destroyed".into(), json!(destroyed));
            Ok(())
        })
        .description("Removes the entry under key")
        .input(key()),
        Action::new("cacheLock", |data| {
            let ttl = ms(data.params.get("ttl").unwrap_or(&Value::Null))?;
            let key = text(&data.params["key"]);
            let locked = data.api.cache.lock(&key, ttl).map_err(|e| e.to_string())?;
            data.response.insert("locked".into(), json!(locked));
            Ok(())
        })
        .description("Takes the lock on key for ttl ms (default 10 s)")
        .input(key())
        .input(Input::new("ttl")),
        Action::new("cacheUnlock", |data| {
            let key = text(&data.params["key"]);
            let unlocked = data.api.cache.unlock(&key).map_err(|e| e.to_string())?;
            data.response.insert("unlocked".into(), json!(unlocked));
            Ok(())
        })
        .description("Releases this node's lock on key")
        .input(key()),
        Action::new("cacheSize", |data| {
            let size = data.api.cache.size().map_err(|e| e.to_string())?;
            data.response.insert("size".into(), json!(size));
            Ok(())
        })
        .description("Counts the cache's entries (cluster-wide with Redis)"),
    ]
}

fn main() -> ExitCode {
    let mut builder = Server::builder(Config::default());
    for action in cache_actions() {
        builder = builder.action(action);
    }
    actionwire::cli::run(builder)
}
