//! Protocol details found by running random sessions in lockstep against actionhero 20.0.0:
//! integral JSON numbers, `apiVersion` values meaning "not given", empty `messageId`s,
//! `cacheTest`'s `lastReadAt` and scalar key/values. Each case is the exact line that
//! differed.

use std::time::Instant;

use actionwire::cache::CacheError;
use serde_json::json;

use crate::harness::*;

#[test]
fn integral_json_numbers_are_integers() {
    let srv = TestServer::start();
    let mut c = srv.client();
    for line in [
        r#"{"action":"randomNumber","params":{"apiVersion":1.0}}"#,
        r#"{"action":"randomNumber","params":{"apiVersion":1e0}}"#,
    ] {
        let r = c.request(line);
        assert!(r["randomNumber"].is_f64(), "{line}: {r}");
    }
    let sent = Instant::now();
    let r = c.request(r#"{"action":"sleepTest","params":{"sleepDuration":100.0}}"#);
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(r["sleepDuration"], 100);
    assert!(r["sleepDelta"].as_u64().expect("delta") >= 100, "{r}");
    assert!(sent.elapsed().as_millis() >= 100);
    // A fraction is still not a whole number of milliseconds.
    let r = c.request(r#"{"action":"sleepTest","params":{"sleepDuration":100.5}}"#);
    assert_eq!(
        error_text(&r),
        "sleepDuration must be a whole number of milliseconds"
    );
}

#[test]
fn api_version_zero_empty_and_null_mean_the_latest_and_odd_strings_name_none() {
    let srv = TestServer::start();
    let mut c = srv.client();
    for v in ["0", r#""""#, "null", "1", r#""1""#, "0.0"] {
        let line = format!(r#"{{"action":"randomNumber","params":{{"apiVersion":{v}}}}}"#);
        let r = c.request(&line);
        assert!(r["randomNumber"].is_f64(), "{line}: {r}");
    }
    for v in [
        r#""01""#, r#""+1""#, r#""1.0""#, r#"" 1""#, "2", "1.5", "-1", r#""0""#,
    ] {
        let line = format!(r#"{{"action":"randomNumber","params":{{"apiVersion":{v}}}}}"#);
        assert_eq!(
            error_text(&c.request(&line)),
            "unknown action or invalid apiVersion",
            "{line}"
        );
    }
}

#[test]
fn an_empty_message_id_counts_as_not_given() {
    let srv = TestServer::start();
    let mut c = srv.client();
    let r = c.request(r#"{"action":"randomNumber","params":{"messageId":""}}"#);
    let id = r["messageId"].as_str().expect("messageId");
    assert!(is_uuid_v4(id), "a fresh UUID, not \"\": {r}");
    // With a sticky messageId, that one.
    c.request("paramAdd messageId=sticky-7");
    let r = c.request(r#"{"action":"randomNumber","params":{"messageId":""}}"#);
    assert_eq!(r["messageId"], "sticky-7");
    // An empty sticky messageId is not given either.
    c.request("paramAdd messageId=");
    let r = c.request("randomNumber");
    assert!(
        is_uuid_v4(r["messageId"].as_str().expect("messageId")),
        "{r}"
    );
    let r = c.request("paramsView");
    assert!(
        is_uuid_v4(r["messageId"].as_str().expect("messageId")),
        "{r}"
    );
}

#[test]
fn cache_test_reports_the_previous_read_time() {
    let srv = TestServer::start();
    let mut c = srv.client();
    // cacheTest saves a fresh entry and reads it once: there was no read before.
    let r = c.request(r#"{"action":"cacheTest","params":{"key":"abc","value":"defg"}}"#);
    let load = &r["cacheTestResults"]["loadResp"];
    assert_eq!(load["lastReadAt"], json!(null), "{r}");
    assert!(load["createdAt"].is_u64());
    // The cache API actions use reports it the same way.
    let api = &srv.api;
    api.cache.save("k", json!("v"), None).expect("saved");
    let first = api.cache.load("k").expect("hit");
    assert_eq!(first.last_read_at, None);
    let second = api.cache.load("k").expect("hit");
    assert!(
        second.last_read_at.is_some_and(|t| t >= first.created_at),
        "{second:?}"
    );
    assert_eq!(api.cache.load("nope"), Err(CacheError::NotFound));
}

#[test]
fn cache_test_uses_numbers_and_booleans_as_their_text() {
    let srv = TestServer::start();
    let mut c = srv.client();
    let r = c.request(r#"{"action":"cacheTest","params":{"key":1.5,"value":true}}"#);
    let load = &r["cacheTestResults"]["loadResp"];
    assert_eq!(load["key"], "cacheTest_1.5", "{r}");
    assert_eq!(load["value"], "true", "{r}");
    let r = c.request(r#"{"action":"cacheTest","params":{"key":100.0,"value":12345}}"#);
    let load = &r["cacheTestResults"]["loadResp"];
    assert_eq!(load["key"], "cacheTest_100");
    assert_eq!(load["value"], "12345");
    // Arrays and objects keep their JSON (their text counts for the length check).
    let r = c.request(r#"{"action":"cacheTest","params":{"key":"abc","value":[1,2]}}"#);
    assert_eq!(r["cacheTestResults"]["loadResp"]["value"], json!([1, 2]));
    // Too short as text is refused as before.
    let r = c.request(r#"{"action":"cacheTest","params":{"key":12,"value":"abc"}}"#);
    assert_eq!(error_text(&r), "inputs should be at least 3 letters long");
}
