//! The cluster over Redis: two actionwire nodes on one private Redis (started per test on a
//! free loopback port, stopped with it) share chat, room membership and cluster calls.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{Client, GUARD, TestServer, error_text, ok_data, require_tool, wait_until};

/// A redis-server of this test's own.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Redis::on(port)
    }

    /// On a given port (to restart one where nodes expect it).
    pub fn on(port: u16) -> Redis {
        require_tool("redis-server");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let r = Redis { port, child };
        wait_until("redis-server accepts connections", || {
            r.connection_now().is_some()
        });
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn connection_now(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut c = client.get_connection_with_timeout(GUARD).ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    pub fn connection(&self) -> redis::Connection {
        self.connection_now().expect("redis connection")
    }

    pub fn cmd<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        cmd.query(&mut self.connection()).expect("redis command")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node on `redis`, its link up.
pub fn node(redis: &Redis, id: &str) -> TestServer {
    node_with(redis, id, Vec::new())
}

/// A node on `redis` with actions of its own, its link up.
pub fn node_with(redis: &Redis, id: &str, actions: Vec<actionwire::Action>) -> TestServer {
    let (url, id) = (redis.url(), id.to_owned());
    let tweak = move |c: &mut actionwire::Config| {
        c.redis.set_url(&url).expect("url");
        c.general.server_id = id;
    };
    let server = TestServer::with_actions(tweak, actions);
    wait_until("the node's cluster link is up", || {
        server.api.cluster_link_up() == Some(true)
    });
    server
}

pub fn joined(server: &TestServer, room: &str) -> Client {
    let mut c = server.client();
    let r = c.request(&format!("roomAdd {room}"));
    assert_eq!(ok_data(&r), json!(true), "{r}");
    c
}

pub fn member_ids(view: &Value) -> Vec<String> {
    let mut ids: Vec<String> = view["members"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

pub fn id_of(c: &mut Client) -> String {
    c.request("detailsView")["data"]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

#[test]
fn chat_crosses_nodes_both_ways_and_the_sender_sees_its_line_once() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "nodeA"), node(&redis, "nodeB"));
    let mut on_a = joined(&a, "defaultRoom");
    let mut on_b = joined(&b, "defaultRoom");
    let a_id = id_of(&mut on_a);
    let r = on_a.request("say defaultRoom hello from A");
    assert_eq!(r["status"], "OK", "{r}");
    let mine = on_a.json();
    assert_eq!(
        (mine["message"].clone(), mine["from"].clone()),
        (json!("hello from A"), json!(a_id))
    );
    let there = on_b.json();
    assert_eq!(there, mine, "node B's member gets the same line");
    // The other way; A's member gets B's line, and its own line never came back twice:
    // the next line on A is B's message.
    assert_eq!(on_b.request("say defaultRoom hi from B")["status"], "OK");
    let _ = on_b.json();
    let line = on_a.json();
    assert_eq!(line["message"], "hi from B", "{line}");
    // Server broadcasts cross too: from 0.
    a.api
        .broadcast("defaultRoom", json!({"notice": "deploy"}))
        .expect("broadcast");
    let line = on_b.json();
    assert_eq!(
        (line["message"].clone(), line["from"].clone()),
        (json!({"notice": "deploy"}), json!(0))
    );
}

#[test]
fn room_view_lists_every_nodes_members_until_they_leave() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "nodeA"), node(&redis, "nodeB"));
    let mut on_a = joined(&a, "defaultRoom");
    let mut on_b = joined(&b, "defaultRoom");
    let mut gone = joined(&b, "defaultRoom");
    let (ida, idb, idg) = (id_of(&mut on_a), id_of(&mut on_b), id_of(&mut gone));
    let mut all = vec![ida.clone(), idb.clone(), idg.clone()];
    all.sort();
    let view = ok_data(&on_a.request("roomView defaultRoom"));
    assert_eq!(member_ids(&view), all, "{view}");
    assert_eq!(view["membersCount"], 3);
    assert_eq!(
        view["members"][&idb],
        json!({"id": idb, "joinedAt": view["members"][&idb]["joinedAt"]}),
        "host is not shown"
    );
    // In Redis, each entry names its node.
    let entry: String = redis.cmd(
        redis::cmd("HGET")
            .arg("actionhero:chatRoom:members:defaultRoom")
            .arg(&idb),
    );
    assert_eq!(
        serde_json::from_str::<Value>(&entry).expect("json")["host"],
        "nodeB"
    );
    // Pipelined: the view waits for Redis, the leave after it is answered after it.
    gone.send("roomView defaultRoom");
    gone.send("roomLeave defaultRoom");
    gone.send("roomView defaultRoom");
    assert_eq!(member_ids(&ok_data(&gone.json())), all);
    assert_eq!(ok_data(&gone.json()), json!(true));
    assert_eq!(
        error_text(&gone.json()),
        "connection not in this room (defaultRoom)"
    );
    drop(gone);
    // A disconnect removes the member too.
    on_b.send("quit");
    let _ = on_b.json();
    wait_until("B's members are gone from Redis", || {
        let n: usize = redis.cmd(redis::cmd("HLEN").arg("actionhero:chatRoom:members:defaultRoom"));
        n == 1
    });
    let view = ok_data(&on_a.request("roomView defaultRoom"));
    assert_eq!(member_ids(&view), vec![ida]);
}

#[test]
fn room_add_finds_a_room_another_node_created() {
    let redis = Redis::start();
    let a = node(&redis, "nodeA");
    let mut c = a.client();
    assert_eq!(
        error_text(&c.request("roomAdd elsewhere")),
        "room does not exist"
    );
    // As actionhero's createChatRoom does on another node:
    let _: i64 = redis.cmd(
        redis::cmd("SADD")
            .arg("actionhero:chatRoom:rooms")
            .arg("elsewhere"),
    );
    c.send("roomAdd elsewhere");
    c.send("say elsewhere hi");
    assert_eq!(ok_data(&c.json()), json!(true));
    assert_eq!(
        c.json()["status"],
        "OK",
        "the say after the join finds it joined"
    );
    assert_eq!(c.json()["message"], "hi");
    // The configured rooms are in the cluster's set.
    let rooms: Vec<String> = redis.cmd(redis::cmd("SMEMBERS").arg("actionhero:chatRoom:rooms"));
    assert!(
        rooms.contains(&"defaultRoom".to_owned()) && rooms.contains(&"otherRoom".to_owned()),
        "{rooms:?}"
    );
}

#[test]
fn cluster_calls_act_on_the_node_holding_the_connection() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "nodeA"), node(&redis, "nodeB"));
    let mut on_b = joined(&b, "defaultRoom");
    let idb = id_of(&mut on_b);
    let mut sub = redis.connection();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("actionhero").expect("subscribe");
    pubsub.set_read_timeout(Some(GUARD)).expect("timeout");
    let publish = |m: &Value| {
        let _: i64 = redis.cmd(redis::cmd("PUBLISH").arg("actionhero").arg(m.to_string()));
    };
    // Removing B's member, asked on the bus (as node A or an actionhero node would).
    publish(
        &json!({"messageType":"do","serverId":"x","serverToken":"change-me","messageId":"m1",
        "method":"api.chatRoom.removeMember","connectionId":idb,"args":[idb,"defaultRoom"]}),
    );
    let answer = loop {
        let msg = pubsub.get_message().expect("bus message");
        let v: Value = serde_json::from_slice(msg.get_payload_bytes()).expect("json");
        // Other answers (to the nodes' join announcements) may be on the channel too.
        if v["messageType"] == "doResponse" && v["messageId"] == "m1" {
            break v;
        }
    };
    assert_eq!(
        answer,
        json!({"messageType":"doResponse","serverId":"nodeB","serverToken":"change-me","messageId":"m1","response":true})
    );
    assert_eq!(
        error_text(&on_b.request("roomView defaultRoom")),
        "connection not in this room (defaultRoom)"
    );
    // A message for that connection, through the bus.
    publish(
        &json!({"messageType":"do","serverId":"x","serverToken":"change-me","messageId":"m2",
        "method":"api.connections.applyResponder","connectionId":idb,"args":[idb,"sendMessage",{"welcome":"back"}]}),
    );
    assert_eq!(on_b.json(), json!({"welcome": "back"}));
    // Garbage, foreign tokens and unknown types are dropped; both nodes keep serving.
    for junk in [
        "not json",
        r#"{"messageType":"chat","serverToken":"other","connection":{"room":"defaultRoom"}}"#,
        r#"{"messageType":"gossip","serverToken":"change-me"}"#,
        r#"{"messageType":"chat","serverToken":"change-me"}"#,
    ] {
        let _: i64 = redis.cmd(redis::cmd("PUBLISH").arg("actionhero").arg(junk));
    }
    wait_until("the junk is counted as dropped", || {
        let status = on_b.request(r#"{"action":"status"}"#);
        let d = &status["cluster"]["dropped"];
        d["malformed"] == 2 && d["foreign_token"] == 1 && d["unknown_type"] == 1
    });
    let status = b.api.cluster_link_up();
    assert_eq!(status, Some(true));
    let mut on_a = joined(&a, "defaultRoom");
    assert_eq!(on_b.request("roomAdd defaultRoom")["status"], "OK");
    assert_eq!(on_a.request("say defaultRoom still here")["status"], "OK");
    let _ = on_a.json();
    assert_eq!(on_b.json()["message"], "still here");
}

#[test]
fn members_this_node_left_behind_are_removed_at_start() {
    let redis = Redis::start();
    let key = "actionhero:chatRoom:members:defaultRoom";
    let _: i64 = redis.cmd(
        redis::cmd("SADD")
            .arg("actionhero:chatRoom:rooms")
            .arg("defaultRoom"),
    );
    let _: i64 = redis.cmd(
        redis::cmd("HSET")
            .arg(key)
            .arg("ghost")
            .arg(r#"{"id":"ghost","joinedAt":1,"host":"nodeA"}"#),
    );
    let _: i64 = redis.cmd(
        redis::cmd("HSET")
            .arg(key)
            .arg("other")
            .arg(r#"{"id":"other","joinedAt":1,"host":"nodeZ"}"#),
    );
    let _a = node(&redis, "nodeA");
    wait_until("the ghost member of nodeA's earlier life is gone", || {
        let ids: Vec<String> = redis.cmd(redis::cmd("HKEYS").arg(key));
        ids == ["other"]
    });
}

#[test]
fn without_redis_a_node_serves_locally_and_joins_when_redis_comes() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let a = {
        let url = url.clone();
        TestServer::with(move |c| {
            c.redis.set_url(&url).expect("url");
            c.general.server_id = "nodeA".into();
        })
    };
    wait_until("the node knows its link is down", || {
        a.api.cluster_link_up() == Some(false)
    });
    let mut on_a = joined(&a, "defaultRoom");
    let mut also = joined(&a, "defaultRoom");
    assert_eq!(on_a.request("say defaultRoom local")["status"], "OK");
    assert_eq!(on_a.json()["message"], "local");
    assert_eq!(also.json()["message"], "local");
    assert_eq!(
        member_ids(&ok_data(&on_a.request("roomView defaultRoom"))).len(),
        2
    );
    // Redis arrives: the node links up and writes its live members.
    let redis = Redis::on(port);
    wait_until("the node links up", || {
        a.api.cluster_link_up() == Some(true)
    });
    wait_until("its members are written to Redis", || {
        let n: usize = redis.cmd(redis::cmd("HLEN").arg("actionhero:chatRoom:members:defaultRoom"));
        n == 2
    });
    let b = node(&redis, "nodeB");
    let mut on_b = joined(&b, "defaultRoom");
    assert_eq!(on_b.request("say defaultRoom cross")["status"], "OK");
    assert_eq!(on_a.json()["message"], "cross");
}

#[test]
fn a_node_announces_joining_and_leaving_after_its_members_are_gone() {
    let redis = Redis::start();
    let mut sub = redis.connection();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("actionhero").expect("subscribe");
    pubsub.set_read_timeout(Some(GUARD)).expect("timeout");
    let mut next_log = || loop {
        let msg = pubsub.get_message().expect("bus message");
        let v: Value = serde_json::from_slice(msg.get_payload_bytes()).expect("json");
        if v["method"] == "api.log" {
            break v;
        }
    };
    let a = node(&redis, "nodeA");
    let hello = next_log();
    assert_eq!(
        hello["args"],
        json!(["actionhero member nodeA has joined the cluster"])
    );
    assert_eq!(
        (hello["serverId"].clone(), hello["serverToken"].clone()),
        (json!("nodeA"), json!("change-me"))
    );
    let mut member = joined(&a, "defaultRoom");
    // The member reads its Bye and the close, as a client does.
    let reader = std::thread::spawn(move || {
        assert_eq!(member.json()["status"], "Bye!");
        member.expect_closed();
    });
    a.stop();
    reader.join().expect("member saw the shutdown");
    let bye = next_log();
    assert_eq!(
        bye["args"],
        json!(["actionhero member nodeA has left the cluster"])
    );
    let n: usize = redis.cmd(redis::cmd("HLEN").arg("actionhero:chatRoom:members:defaultRoom"));
    assert_eq!(n, 0, "the member was removed before the farewell");
}
