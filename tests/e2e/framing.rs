//! The protocol reference's "Connecting", "Sending requests" and "Counters".

use serde_json::Value;

use crate::harness::*;

both! {
    fn welcome_and_connection_details(t) {
        let before = actionwire::time::now_ms();
        let srv = TestServer::over(t);
        let mut c = srv.client();
        assert_eq!(
            serde_json::to_string(&c.welcome).expect("json"),
            r#"{"welcome":"Hello! Welcome to the actionhero api","context":"api"}"#
        );
        let reply = c.request("detailsView");
        assert_eq!(
            keys(&reply),
            ["status", "context", "data", "messageCount", "messageId"]
        );
        let d = ok_data(&reply);
        assert_eq!(
            keys(&d),
            [
                "id",
                "fingerprint",
                "remoteIP",
                "remotePort",
                "params",
                "connectedAt",
                "rooms",
                "totalActions",
                "pendingActions"
            ]
        );
        let id = d["id"].as_str().expect("id");
        assert!(is_uuid_v4(id), "{id}");
        assert_eq!(d["fingerprint"], d["id"]);
        assert_eq!(d["remoteIP"], "127.0.0.1");
        let local = c.stream.local_addr().expect("local");
        assert_eq!(d["remotePort"], local.port());
        let at = d["connectedAt"].as_u64().expect("ms");
        assert!(at >= before && at <= actionwire::time::now_ms());
        assert_eq!(
            d["rooms"],
            serde_json::json!([]),
            "no room is joined automatically"
        );
        assert_eq!(d["params"], serde_json::json!({}));
        assert_eq!(d["totalActions"], 0);
        assert_eq!(d["pendingActions"], 0);
        let other = srv.client().request("detailsView");
        assert_ne!(ok_data(&other)["id"], d["id"], "ids are unique");
    }
}

#[test]
fn welcome_text_is_configurable() {
    let srv = TestServer::with(|c| c.general.welcome_message = "hi \"there\"".into());
    let c = srv.client();
    assert_eq!(c.welcome["welcome"], "hi \"there\"");
    assert_eq!(c.welcome["context"], "api");
}

#[test]
fn dual_stack_listener_reports_ipv4_peers_as_dotted_ipv4() {
    let mut cfg = test_config();
    cfg.servers.socket.bind_ip = "::".into();
    let server = match actionwire::Server::builder(cfg).build() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipped: no IPv6 on this machine ({e})");
            return;
        }
    };
    let port = server.local_addr().port();
    let handle = server.shutdown_handle();
    let t = std::thread::spawn(move || server.run());
    let mut c = Client::connect(([127, 0, 0, 1], port).into());
    let d = ok_data(&c.request("detailsView"));
    assert_eq!(d["remoteIP"], "127.0.0.1");
    handle.shutdown();
    t.join().expect("join").expect("clean stop");
}

both! {
    fn lf_cr_and_crlf_end_lines_and_empty_lines_are_ignored(t) {
        let srv = TestServer::over(t);
        let mut c = srv.client();
        c.send_raw(b"paramView a\rparamView b\r\nparamView c\n\n\n\r\n");
        for n in 1..=3 {
            assert_eq!(c.json()["messageCount"], n);
        }
        // Nothing was counted for the empty lines: the next request is number 4.
        assert_eq!(c.request("paramsView")["messageCount"], 4);
    }
}

#[test]
fn a_line_of_spaces_is_an_action_named_nothing() {
    let srv = TestServer::start();
    let mut c = srv.client();
    let r = c.request("   ");
    assert_eq!(error_text(&r), "unknown action or invalid apiVersion");
    assert_eq!(r["messageCount"], 1);
}

both! {
    fn request_split_byte_by_byte(t) {
        let srv = TestServer::over(t);
        let mut c = srv.client();
        for b in "paramAdd messageId=héllo wörld\n".bytes() {
            c.send_raw(&[b]);
        }
        let r = c.json();
        assert_eq!(ok_data(&r), Value::Null);
        assert_eq!(c.request("paramView messageId")["data"], "héllo wörld");
    }
}

both! {
    fn invalid_utf8_becomes_replacement_characters(t) {
        let srv = TestServer::over(t);
        let mut c = srv.client();
        c.send_raw(b"paramAdd messageId=a\xffb\n");
        c.json();
        assert_eq!(c.request("paramView messageId")["data"], "a\u{FFFD}b");
    }
}

both! {
    fn pipelining_a_thousand_requests_in_one_write(t) {
        let srv = TestServer::over(t);
        let mut c = srv.client();
        let mut batch = String::new();
        for i in 0..1000 {
            if i % 2 == 0 {
                batch.push_str("paramView x\n");
            } else {
                batch.push_str("roomView defaultRoom\n");
            }
        }
        c.send_raw(batch.as_bytes());
        for n in 1..=1000u64 {
            let r = c.json();
            assert_eq!(r["messageCount"], n, "verbs are answered in arrival order");
            if n % 2 == 0 {
                assert_eq!(error_text(&r), "connection not in this room (defaultRoom)");
            } else {
                assert_eq!(ok_data(&r), Value::Null);
            }
        }
    }
}

#[test]
fn custom_delimiter() {
    let srv = TestServer::with(|c| c.servers.socket.delimiter = "<END>".into());
    let mut c = srv.client();
    c.send_raw(b"paramView a<END>paramView b\n<E");
    assert_eq!(c.json()["messageCount"], 1);
    c.send_raw(b"ND>");
    let r = c.json();
    assert_eq!(r["messageCount"], 2);
}

both! {
    fn over_long_line_with_its_delimiter_in_hand(t) {
        let srv = TestServer::over_with(t, |c| c.servers.socket.max_data_length = 10);
        let mut c = srv.client();
        c.send_raw(b"paramView abcdefghijkl\nparamsView\n");
        let r = c.json();
        assert_eq!(
            keys(&r),
            ["status", "error", "context", "messageCount", "messageId"]
        );
        assert_eq!(r["status"], "error");
        assert_eq!(
            r["error"], "data length is too big (10 received/22 max)",
            "actionhero's legacy wording, numbers swapped"
        );
        assert_eq!(r["messageCount"], 1);
        let next = c.json();
        assert_eq!(next["messageCount"], 2, "the connection carries on");
        assert_eq!(ok_data(&next), serde_json::json!({}));
    }
}

both! {
    fn over_long_line_is_refused_while_it_is_still_arriving(t) {
        let srv = TestServer::over_with(t, |c| c.servers.socket.max_line_bytes = 1000);
        let mut c = srv.client();
        c.send_raw(&[b'a'; 1500]);
        // The reply comes before the line is finished.
        let r = c.json();
        assert_eq!(
            r["error"],
            "data length is too big (1000 received/1000+ max)"
        );
        assert_eq!(r["messageCount"], 1);
        // The rest of the line is skipped, however long, and counts nothing more.
        for _ in 0..100 {
            c.send_raw(&[b'b'; 10_000]);
        }
        c.send_raw(b"tail\nparamView x\n");
        let r = c.json();
        assert_eq!(r["messageCount"], 2);
        assert_eq!(ok_data(&r), Value::Null);
    }
}

#[test]
fn the_smaller_of_the_two_limits_applies() {
    let srv = TestServer::with(|c| {
        c.servers.socket.max_data_length = 5000;
        c.servers.socket.max_line_bytes = 100;
    });
    let mut c = srv.client();
    c.send(&"x".repeat(150));
    assert_eq!(
        c.json()["error"],
        "data length is too big (100 received/150 max)"
    );
}

both! {
    fn ctrl_d_and_telnet_ctrl_c_end_the_connection(t) {
        let srv = TestServer::over(t);
        for bytes in [&[0x04u8][..], &[0xFF, 0xF4, 0xFF, 0xFD, 0x06][..]] {
            let mut c = srv.client();
            c.send_raw(bytes);
            assert_eq!(c.line(), r#"{"status":"Bye!","context":"api"}"#);
            c.expect_closed();
        }
    }
}

#[test]
fn ctrl_d_inside_a_line_is_data() {
    let srv = TestServer::start();
    let mut c = srv.client();
    c.send_raw(b"paramAdd messageId=a\x04b\n");
    c.json();
    assert_eq!(c.request("paramView messageId")["data"], "a\u{4}b");
}

both! {
    fn message_ids_fresh_from_request_or_sticky(t) {
        let srv = TestServer::over(t);
        let mut c = srv.client();
        let a = c.request("paramsView");
        let b = c.request("paramsView");
        assert!(is_uuid_v4(a["messageId"].as_str().expect("id")));
        assert_ne!(a["messageId"], b["messageId"], "fresh per request");
        // The id is fixed when the line arrives: setting it is answered with a fresh one.
        let add = c.request("paramAdd messageId=abc");
        assert!(is_uuid_v4(add["messageId"].as_str().expect("id")));
        assert_eq!(
            c.request("paramsView")["messageId"],
            "abc",
            "sticky from now on"
        );
        // A JSON request's own params.messageId wins, for that request only.
        let r = c.request(r#"{"action":"randomNumber","params":{"messageId":"req-1"}}"#);
        assert_eq!(r["messageId"], "req-1");
        assert_eq!(keys(&r).last().map(String::as_str), Some("messageId"));
        let r = c.request(r#"{"action":"randomNumber","params":{"messageId":42}}"#);
        assert_eq!(r["messageId"], 42);
        // Deleting it is still answered with the old id.
        assert_eq!(c.request("paramDelete messageId")["messageId"], "abc");
        let fresh = c.request("paramsView");
        assert!(is_uuid_v4(fresh["messageId"].as_str().expect("id")));
    }
}

#[test]
fn every_response_counts_and_api_messages_do_not() {
    let srv = TestServer::start();
    let mut c = srv.client();
    assert!(c.welcome.get("messageCount").is_none());
    assert!(c.welcome.get("messageId").is_none());
    let r = c.request("randomNumber");
    let k = keys(&r);
    assert_eq!(&k[k.len() - 3..], ["context", "messageCount", "messageId"]);
    assert_eq!(r["messageCount"], 1);
    c.request("roomAdd defaultRoom");
    c.send("say defaultRoom hi");
    assert_eq!(c.json()["messageCount"], 3);
    let chat = c.json();
    assert_eq!(chat["context"], "user");
    assert!(chat.get("messageCount").is_none());
    assert_eq!(c.request("paramsView")["messageCount"], 4);
}
