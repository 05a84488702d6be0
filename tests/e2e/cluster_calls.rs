//! This node's own cluster calls (`do` out, the first `doResponse` back, or
//! `general.rpcTimeout`): server code on node A acting on a connection node B holds.

use std::sync::mpsc;
use std::time::Duration;

use actionwire::{CallError, Uuid};
use serde_json::{Value, json};

use crate::cluster::{Redis, id_of, joined, node};
use crate::harness::{GUARD, TestServer, error_text, wait_until};

type Answer = Result<Option<Value>, CallError>;

/// Makes a call from `server` and waits for what `done` hears.
fn call(server: &TestServer, method: &str, conn: Option<Uuid>, args: Value) -> Answer {
    let (tx, rx) = mpsc::channel();
    let args = args.as_array().cloned().unwrap_or_default();
    server
        .api
        .cluster_call(method, conn, args, move |r| {
            let _ = tx.send(r);
        })
        .expect("handed to the loop");
    let answer = rx.recv_timeout(GUARD).expect("done is called");
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "done is called once"
    );
    answer
}

fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).expect("uuid")
}

#[test]
fn a_node_calls_the_node_holding_a_connection_and_hears_the_first_answer() {
    let redis = Redis::start();
    let url = redis.url();
    let a = TestServer::with(move |c| {
        c.redis.set_url(&url).expect("url");
        c.general.server_id = "nodeA".into();
        c.general.rpc_timeout = 300;
    });
    wait_until("node A linked", || a.api.cluster_link_up() == Some(true));
    let b = node(&redis, "nodeB");
    let mut on_b = joined(&b, "defaultRoom");
    let id_b = id_of(&mut on_b);

    // A message to a connection held by B, sent from A's server code.
    a.api
        .send_to(uuid(&id_b), json!({"from": "node A"}))
        .expect("sent");
    assert_eq!(on_b.json(), json!({"from": "node A"}));

    // removeMember on B's connection, asked by A: B acts and answers true.
    let r = call(
        &a,
        "api.chatRoom.removeMember",
        Some(uuid(&id_b)),
        json!([id_b, "defaultRoom"]),
    );
    assert_eq!(r, Ok(Some(json!(true))));
    assert_eq!(
        error_text(&on_b.request("roomView defaultRoom")),
        "connection not in this room (defaultRoom)"
    );
    let n: usize = redis.cmd(redis::cmd("HLEN").arg("actionhero:chatRoom:members:defaultRoom"));
    assert_eq!(n, 0);

    // Without a connection every node answers (A too); A hears the first, once.
    assert_eq!(
        call(&a, "api.log", None, json!(["hello from A's code"])),
        Ok(None)
    );

    // Nobody holds this connection: no answer within rpcTimeout.
    let nobody = Uuid::new_v4();
    let r = call(
        &a,
        "api.chatRoom.removeMember",
        Some(nobody),
        json!([nobody.to_string(), "defaultRoom"]),
    );
    assert_eq!(r, Err(CallError::TimedOut));

    let status = a.client().request(r#"{"action":"status"}"#);
    let calls = &status["cluster"]["calls"];
    assert_eq!(
        (calls["answered"].as_u64(), calls["timed_out"].as_u64()),
        (Some(3), Some(1)),
        "{status}"
    );

    // Redis gone: the call fails at once.
    drop(redis);
    wait_until("node A sees the link down", || {
        a.api.cluster_link_up() == Some(false)
    });
    assert_eq!(
        call(&a, "api.log", None, json!(["anyone?"])),
        Err(CallError::Unavailable)
    );
}

#[test]
fn without_the_cluster_a_call_says_so() {
    let server = TestServer::start();
    assert_eq!(
        call(&server, "api.log", None, json!(["x"])),
        Err(CallError::NoCluster)
    );
}
