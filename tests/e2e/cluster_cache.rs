//! The cache in Redis: two nodes on one private Redis see each other's entries (in
//! actionhero's format, so actionhero nodes do too), honour each other's locks, and count
//! the entries cluster-wide. The actions are the `cache_actions` example's.

use serde_json::{Value, json};

use crate::cluster::{Redis, node_with};
use crate::harness::{Client, TestServer, error_text};

use crate::cache_actions;

fn cache_node(redis: &Redis, id: &str) -> TestServer {
    node_with(redis, id, cache_actions::cache_actions())
}

fn call(c: &mut Client, action: &str, params: Value) -> Value {
    c.request(&json!({"action": action, "params": params}).to_string())
}

const ENTRY: &str = "actionhero:cache:greeting";

#[test]
fn an_entry_saved_on_one_node_is_read_on_the_other_in_actionheros_format() {
    let redis = Redis::start();
    let (a, b) = (cache_node(&redis, "nodeA"), cache_node(&redis, "nodeB"));
    let (mut on_a, mut on_b) = (a.client(), b.client());
    let value = json!({"hello": ["world", 1, null], "nested": {"z": 1, "a": 2}});
    let r = call(
        &mut on_a,
        "cacheSave",
        json!({"key": "greeting", "value": value, "ttl": 60_000}),
    );
    assert_eq!(r["saved"], true, "{r}");

    // As actionhero stores it: the field order, integer times, a TTL of ceil(60 s).
    let raw: String = redis.cmd(redis::cmd("GET").arg(ENTRY));
    let stored: Value = serde_json::from_str(&raw).expect("json");
    let fields: Vec<&String> = stored.as_object().expect("object").keys().collect();
    assert_eq!(
        fields,
        ["value", "expireTimestamp", "createdAt", "readAt"],
        "{raw}"
    );
    assert_eq!(stored["value"], value);
    assert_eq!(stored["readAt"], Value::Null);
    let created = stored["createdAt"].as_u64().expect("createdAt");
    assert_eq!(stored["expireTimestamp"].as_u64(), Some(created + 60_000));
    let ttl: i64 = redis.cmd(redis::cmd("TTL").arg(ENTRY));
    assert!((59..=60).contains(&ttl), "TTL {ttl}");

    // Read on B: the entry as saved, no read before; read on A: B's read reported.
    let first = call(&mut on_b, "cacheLoad", json!({"key": "greeting"}));
    let e = &first["entry"];
    assert_eq!(
        (
            e["key"].clone(),
            e["value"].clone(),
            e["createdAt"].as_u64()
        ),
        (json!("greeting"), value.clone(), Some(created)),
        "{first}"
    );
    assert_eq!(e["lastReadAt"], Value::Null, "{first}");
    let second = call(&mut on_a, "cacheLoad", json!({"key": "greeting"}));
    let read_at = second["entry"]["lastReadAt"].as_u64().expect("B's read");
    assert!(read_at >= created, "{second}");
    let ttl: i64 = redis.cmd(redis::cmd("PTTL").arg(ENTRY));
    assert!(ttl > 0, "a read keeps the entry's expiry (PTTL {ttl})");

    // Counted cluster-wide; destroyed on B, gone for A.
    call(&mut on_b, "cacheSave", json!({"key": "other", "value": 1}));
    assert_eq!(call(&mut on_a, "cacheSize", json!({}))["size"], 2);
    let ttl: i64 = redis.cmd(redis::cmd("TTL").arg("actionhero:cache:other"));
    assert_eq!(ttl, -1, "an entry without a ttl never expires in Redis");
    assert_eq!(
        call(&mut on_b, "cacheDestroy", json!({"key": "greeting"}))["destroyed"],
        true
    );
    let gone = call(&mut on_a, "cacheLoad", json!({"key": "greeting"}));
    assert_eq!(error_text(&gone), "Object not found", "{gone}");
    assert_eq!(
        call(&mut on_a, "cacheDestroy", json!({"key": "greeting"}))["destroyed"],
        false
    );
}

#[test]
fn entries_written_by_another_kind_of_node_are_read_and_expired_ones_refused() {
    let redis = Redis::start();
    let a = cache_node(&redis, "nodeA");
    let mut c = a.client();
    // What an actionhero node writes for api.cache.save("ah", {n: 1}) and for an entry
    // whose expiry has passed but whose key has not lapsed yet (EXPIRE rounds up).
    redis.cmd::<()>(redis::cmd("SET").arg("actionhero:cache:ah").arg(
        r#"{"value":{"n":1},"expireTimestamp":null,"createdAt":1796151792889,"readAt":1796151792999}"#,
    ));
    redis.cmd::<()>(
        redis::cmd("SET")
            .arg("actionhero:cache:old")
            .arg(r#"{"value":1,"expireTimestamp":1000,"createdAt":500,"readAt":null}"#),
    );
    redis.cmd::<()>(
        redis::cmd("SET")
            .arg("actionhero:cache:junk")
            .arg("not json"),
    );
    let r = call(&mut c, "cacheLoad", json!({"key": "ah"}));
    assert_eq!(
        r["entry"],
        json!({"key": "ah", "value": {"n": 1}, "expireTimestamp": null,
               "createdAt": 1796151792889u64, "lastReadAt": 1796151792999u64}),
        "{r}"
    );
    let expired = call(&mut c, "cacheLoad", json!({"key": "old"}));
    assert_eq!(error_text(&expired), "Object expired", "{expired}");
    let junk = call(&mut c, "cacheLoad", json!({"key": "junk"}));
    assert!(error_text(&junk).contains("not a cache entry"), "{junk}");
    // cacheTest counts every node's entries (three above, plus its own).
    let t = c.request(r#"{"action":"cacheTest","params":{"key":"abc","value":"defg"}}"#);
    assert_eq!(t["cacheTestResults"]["sizeResp"], 4, "{t}");
    assert_eq!(t["cacheTestResults"]["deleteResp"], true, "{t}");
}

#[test]
fn a_lock_held_by_another_node_refuses_writes_and_reads_with_object_locked() {
    let redis = Redis::start();
    let (a, b) = (cache_node(&redis, "nodeA"), cache_node(&redis, "nodeB"));
    let (mut on_a, mut on_b) = (a.client(), b.client());
    call(&mut on_a, "cacheSave", json!({"key": "k", "value": "v0"}));
    let r = call(&mut on_a, "cacheLock", json!({"key": "k"}));
    assert_eq!(r["locked"], true, "{r}");
    // As actionhero keeps it: the holder's serverId, lapsing after 10 s.
    let holder: String = redis.cmd(redis::cmd("GET").arg("actionhero:lock:k"));
    assert_eq!(holder, "nodeA");
    let ttl: i64 = redis.cmd(redis::cmd("TTL").arg("actionhero:lock:k"));
    assert!((9..=10).contains(&ttl), "TTL {ttl}");

    for (action, params) in [
        ("cacheSave", json!({"key": "k", "value": "v1"})),
        ("cacheLoad", json!({"key": "k"})),
        ("cacheDestroy", json!({"key": "k"})),
    ] {
        let r = call(&mut on_b, action, params);
        assert_eq!(error_text(&r), "Object locked", "{action}: {r}");
    }
    assert_eq!(
        call(&mut on_b, "cacheLock", json!({"key": "k"}))["locked"],
        false
    );
    assert_eq!(
        call(&mut on_b, "cacheUnlock", json!({"key": "k"}))["unlocked"],
        false
    );
    // The holder writes through its own lock, and cannot take it twice.
    assert_eq!(
        call(&mut on_a, "cacheSave", json!({"key": "k", "value": "v2"}))["saved"],
        true
    );
    assert_eq!(
        call(&mut on_a, "cacheLock", json!({"key": "k"}))["locked"],
        false
    );
    assert_eq!(
        call(&mut on_a, "cacheUnlock", json!({"key": "k"}))["unlocked"],
        true
    );
    let r = call(&mut on_b, "cacheLoad", json!({"key": "k"}));
    assert_eq!(r["entry"]["value"], "v2", "{r}");

    // A lock an actionhero node took (its serverId, set directly) is honoured the same way.
    redis.cmd::<()>(
        redis::cmd("SET")
            .arg("actionhero:lock:k")
            .arg("ah-node:8080"),
    );
    let r = call(&mut on_a, "cacheSave", json!({"key": "k", "value": "v3"}));
    assert_eq!(error_text(&r), "Object locked", "{r}");
}
