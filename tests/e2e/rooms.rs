//! The protocol reference's room verbs and "Chat rooms", with two and three clients.

use serde_json::{Value, json};

use crate::harness::*;

fn id_of(c: &mut Client) -> String {
    ok_data(&c.request("detailsView"))["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

#[test]
fn room_add_leave_and_errors() {
    let srv = TestServer::start();
    let mut c = srv.client();
    assert_eq!(ok_data(&c.request("roomAdd defaultRoom")), true);
    assert_eq!(
        error_text(&c.request("roomAdd defaultRoom")),
        "connection already in this room (defaultRoom)"
    );
    assert_eq!(
        error_text(&c.request("roomAdd nowhere")),
        "room does not exist"
    );
    assert_eq!(error_text(&c.request("roomAdd")), "room does not exist");
    assert_eq!(ok_data(&c.request("roomAdd otherRoom")), true);
    assert_eq!(
        ok_data(&c.request("detailsView"))["rooms"],
        json!(["defaultRoom", "otherRoom"])
    );
    assert_eq!(ok_data(&c.request("roomLeave defaultRoom")), true);
    assert_eq!(
        error_text(&c.request("roomLeave defaultRoom")),
        "connection not in this room (defaultRoom)"
    );
    assert_eq!(
        error_text(&c.request("roomLeave nowhere")),
        "connection not in this room (nowhere)"
    );
    assert_eq!(
        ok_data(&c.request("detailsView"))["rooms"],
        json!(["otherRoom"])
    );
}

#[test]
fn room_change_leaves_every_room() {
    let srv = TestServer::start();
    let mut c = srv.client();
    c.request("roomAdd defaultRoom");
    c.request("roomAdd otherRoom");
    assert_eq!(ok_data(&c.request("roomChange defaultRoom")), true);
    assert_eq!(
        ok_data(&c.request("detailsView"))["rooms"],
        json!(["defaultRoom"])
    );
    assert_eq!(
        error_text(&c.request("roomChange nowhere")),
        "room does not exist"
    );
    assert_eq!(
        ok_data(&c.request("detailsView"))["rooms"],
        json!(["defaultRoom"]),
        "a failed change leaves nothing"
    );
}

#[test]
fn room_view_with_and_without_argument() {
    let srv = TestServer::start();
    let mut a = srv.client();
    let mut b = srv.client();
    let (ida, idb) = (id_of(&mut a), id_of(&mut b));
    assert_eq!(error_text(&a.request("roomView")), "a room is required");
    a.request("roomAdd defaultRoom");
    b.request("roomAdd defaultRoom");
    let v = ok_data(&a.request("roomView"));
    assert_eq!(keys(&v), ["room", "members", "membersCount"]);
    assert_eq!(v["room"], "defaultRoom");
    assert_eq!(v["membersCount"], 2);
    for id in [&ida, &idb] {
        assert_eq!(v["members"][id]["id"], id.as_str());
        assert!(v["members"][id]["joinedAt"].is_u64());
    }
    assert_eq!(ok_data(&a.request("roomView defaultRoom")), v);
    a.request("roomAdd otherRoom");
    assert_eq!(error_text(&a.request("roomView")), "a room is required");
    assert_eq!(
        error_text(&b.request("roomView otherRoom")),
        "connection not in this room (otherRoom)"
    );
    assert_eq!(
        error_text(&b.request("roomView nowhere")),
        "connection not in this room (nowhere)"
    );
}

both! {
    fn say_fans_out_to_every_member_sender_after_its_ok(t) {
        let srv = TestServer::over(t);
        let mut a = srv.client();
        let mut b = srv.client();
        let mut c = srv.client();
        let mut outsider = srv.client();
        let ida = id_of(&mut a);
        for cl in [&mut a, &mut b, &mut c] {
            cl.request("roomAdd defaultRoom");
        }
        outsider.request("roomAdd otherRoom");
        let before = actionwire::time::now_ms();
        a.send("say defaultRoom  hello,   world ");
        let ok = a.json();
        assert_eq!(ok_data(&ok), Value::Null, "the sender's OK comes first");
        for cl in [&mut a, &mut b, &mut c] {
            let m = cl.json();
            assert_eq!(keys(&m), ["message", "room", "from", "context", "sentAt"]);
            assert_eq!(m["message"], " hello,   world ", "spacing kept");
            assert_eq!(m["room"], "defaultRoom");
            assert_eq!(m["from"], ida.as_str());
            assert_eq!(m["context"], "user");
            assert!(m["sentAt"].as_u64().expect("ms") >= before);
        }
        // The outsider got nothing: its next line is the reply to its own request.
        assert_eq!(outsider.request("paramsView")["messageCount"], 2);
        assert_eq!(
            ok_data(&b.request("roomView defaultRoom"))["membersCount"],
            3
        );
    }
}

#[test]
fn say_errors() {
    let srv = TestServer::start();
    let mut c = srv.client();
    for bad in ["say", "say defaultRoom", "say defaultRoom "] {
        assert_eq!(
            error_text(&c.request(bad)),
            "both room and message are required",
            "{bad}"
        );
    }
    assert_eq!(
        error_text(&c.request("say defaultRoom hi")),
        "connection not in this room (defaultRoom)"
    );
}

both! {
    fn closing_connections_leave_their_rooms(t) {
        let srv = TestServer::over(t);
        let mut a = srv.client();
        a.request("roomAdd defaultRoom");
        {
            let mut b = srv.client();
            b.request("roomAdd defaultRoom");
            assert_eq!(ok_data(&a.request("roomView"))["membersCount"], 2);
            b.shutdown_write();
            b.expect_closed();
        }
        // EOF is processed by the server after our close: ask until it shows (bounded).
        let mut count = Value::Null;
        for _ in 0..500 {
            count = ok_data(&a.request("roomView"))["membersCount"].clone();
            if count == 1 {
                break;
            }
        }
        assert_eq!(count, 1);
    }
}

#[test]
fn auto_created_rooms() {
    let srv = TestServer::with(|c| c.general.auto_create_rooms = true);
    let mut a = srv.client();
    let mut b = srv.client();
    assert_eq!(ok_data(&a.request("roomAdd fresh")), true);
    assert_eq!(ok_data(&b.request("roomAdd fresh")), true);
    b.send("say fresh hi");
    assert_eq!(ok_data(&b.json()), Value::Null);
    assert_eq!(b.json()["message"], "hi");
    assert_eq!(a.json()["message"], "hi");
    assert_eq!(srv.api.rooms(), 3);
    a.request("roomLeave fresh");
    b.request("roomLeave fresh");
    assert_eq!(srv.api.rooms(), 2, "an empty client-created room goes away");
    assert_eq!(error_text(&a.request("roomAdd")), "room does not exist");
}

#[test]
fn starting_rooms_come_from_config() {
    let srv = TestServer::with(|c| {
        c.general.starting_chat_rooms = serde_json::from_value(json!({"lobby": {}})).expect("map");
    });
    let mut c = srv.client();
    assert_eq!(ok_data(&c.request("roomAdd lobby")), true);
    assert_eq!(
        error_text(&c.request("roomAdd defaultRoom")),
        "room does not exist"
    );
}

#[test]
fn client_created_rooms_are_capped_server_wide() {
    let srv = TestServer::with(|c| {
        c.general.auto_create_rooms = true;
        c.general.max_rooms = 3;
    });
    let mut a = srv.client();
    let mut b = srv.client();
    assert_eq!(ok_data(&a.request("roomAdd one")), true);
    assert_eq!(
        error_text(&b.request("roomAdd two")),
        "too many rooms on this server (limit 3)"
    );
    assert_eq!(
        ok_data(&b.request("roomAdd one")),
        true,
        "existing rooms can be joined"
    );
    a.request("roomLeave one");
    b.request("roomLeave one");
    assert_eq!(
        ok_data(&b.request("roomAdd two")),
        true,
        "room freed when empty"
    );
}
