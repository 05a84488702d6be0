//! Redis killed while two nodes serve, then back on the same port (empty, as a Redis
//! without persistence comes back): the nodes keep serving their own clients, count what
//! they could not publish, and once linked again re-write their members and chat across.

use serde_json::json;

use crate::cluster::{Redis, joined, member_ids, node_with};
use crate::harness::{error_text, ok_data, wait_until};

use crate::cache_actions;

const MEMBERS: &str = "actionhero:chatRoom:members:defaultRoom";

#[test]
fn redis_killed_and_restarted_while_serving() {
    let redis = Redis::start();
    let port = redis.port;
    let a = node_with(&redis, "nodeA", cache_actions::cache_actions());
    let b = node_with(&redis, "nodeB", Vec::new());
    let mut on_a = joined(&a, "defaultRoom");
    let mut also_a = joined(&a, "defaultRoom");
    let mut on_b = joined(&b, "defaultRoom");
    let n: usize = redis.cmd(redis::cmd("HLEN").arg(MEMBERS));
    assert_eq!(n, 3);

    drop(redis);
    wait_until("both nodes see the link down", || {
        a.api.cluster_link_up() == Some(false) && b.api.cluster_link_up() == Some(false)
    });
    // Local service goes on: verbs, local chat, actions; the cache says why it cannot.
    assert_eq!(on_a.request("say defaultRoom alone")["status"], "OK");
    assert_eq!(on_a.json()["message"], "alone");
    assert_eq!(also_a.json()["message"], "alone");
    let view = ok_data(&on_a.request("roomView defaultRoom"));
    assert_eq!(
        member_ids(&view).len(),
        2,
        "local members while Redis is away: {view}"
    );
    let r = on_a.request(r#"{"action":"randomNumber"}"#);
    assert!(r["randomNumber"].is_number(), "{r}");
    let r = on_a.request(r#"{"action":"cacheSave","params":{"key":"k","value":1}}"#);
    assert!(
        error_text(&r).starts_with("the cache is unavailable"),
        "{r}"
    );
    let status = on_a.request(r#"{"action":"status"}"#);
    assert_eq!(status["cluster"]["link"], "down", "{status}");
    assert!(
        status["cluster"]["publishFailed"].as_u64() >= Some(1),
        "{status}"
    );
    // A member that joins while Redis is away is written when it comes back.
    let mut late_b = joined(&b, "defaultRoom");

    let redis = Redis::on(port);
    wait_until("both nodes link up again", || {
        a.api.cluster_link_up() == Some(true) && b.api.cluster_link_up() == Some(true)
    });
    wait_until("every live member re-written", || {
        let n: usize = redis.cmd(redis::cmd("HLEN").arg(MEMBERS));
        n == 4
    });
    let rooms: bool = redis.cmd(
        redis::cmd("SISMEMBER")
            .arg("actionhero:chatRoom:rooms")
            .arg("defaultRoom"),
    );
    assert!(rooms, "the node's rooms are written again");
    assert_eq!(on_b.request("say defaultRoom back")["status"], "OK");
    assert_eq!(on_b.json()["message"], "back");
    for c in [&mut on_a, &mut also_a, &mut late_b] {
        assert_eq!(c.json()["message"], "back");
    }
    let view = ok_data(&on_b.request("roomView defaultRoom"));
    assert_eq!(member_ids(&view).len(), 4, "{view}");
    let r = on_a.request(r#"{"action":"cacheSave","params":{"key":"k","value":1}}"#);
    assert_eq!(r["saved"], json!(true), "the cache works again: {r}");
    let status = on_a.request(r#"{"action":"status"}"#);
    assert!(
        status["cluster"]["reconnects"].as_u64() >= Some(1),
        "{status}"
    );
}
