//! The protocol reference's "Verbs": every verb, its success data and each error text.

use serde_json::{Value, json};

use crate::harness::*;

both! {
    fn seed_000_telnet_session(t) {
        let srv = TestServer::over(t);
        let mut c = srv.client();
        let d = ok_data(&c.request("detailsView"));
        assert_eq!(d["remoteIP"], "127.0.0.1");
        let r = c.request("randomNumber");
        let n = r["randomNumber"].as_f64().expect("number");
        assert!((0.0..1.0).contains(&n));
        assert_eq!(
            r["stringRandomNumber"],
            format!("Your random number is {}", r["randomNumber"])
        );
        assert_eq!(r["messageCount"], 2);
        let r = c.request("cacheTest");
        assert_eq!(
            error_text(&r),
            "key is a required parameter for this action"
        );
        assert_eq!(ok_data(&c.request("paramAdd key=myKey")), Value::Null);
        assert_eq!(ok_data(&c.request("paramAdd value=myValue")), Value::Null);
        let p = ok_data(&c.request("paramsView"));
        assert_eq!(
            p,
            json!({"action":"cacheTest","key":"myKey","value":"myValue"})
        );
        let r = c.request("cacheTest");
        assert_eq!(r["messageCount"], 7);
        let res = &r["cacheTestResults"];
        assert_eq!(res["saveResp"], true);
        assert!(res["sizeResp"].as_u64().expect("size") >= 1);
        assert_eq!(res["loadResp"]["key"], "cacheTest_myKey");
        assert_eq!(res["loadResp"]["value"], "myValue");
        let created = res["loadResp"]["createdAt"].as_u64().expect("ms");
        assert_eq!(
            res["loadResp"]["expireTimestamp"].as_u64().expect("ms"),
            created + 5000
        );
        // The read before this one: cacheTest's entry was never read before.
        assert_eq!(res["loadResp"]["lastReadAt"], Value::Null);
        assert_eq!(res["deleteResp"], true);
        assert_eq!(ok_data(&c.request("roomAdd defaultRoom")), true);
        let r = c.request("say defaultRoom hooray!");
        assert_eq!(ok_data(&r), Value::Null);
        assert_eq!(r["messageCount"], 9);
        let chat = c.json();
        assert_eq!(chat["message"], "hooray!");
        c.send("quit");
        assert_eq!(c.line(), r#"{"status":"Bye!","context":"api"}"#);
        c.expect_closed();
    }
}

both! {
    fn quit_and_exit_say_bye_and_close(t) {
        let srv = TestServer::over(t);
        for verb in ["quit", "exit", "quit now please"] {
            let mut c = srv.client();
            c.request("roomAdd defaultRoom");
            // Lines after quit in the same write are never answered.
            c.send_raw(format!("{verb}\nparamsView\n").as_bytes());
            assert_eq!(c.line(), r#"{"status":"Bye!","context":"api"}"#);
            c.expect_closed();
        }
        let mut watcher = srv.client();
        watcher.request("roomAdd defaultRoom");
        let view = ok_data(&watcher.request("roomView defaultRoom"));
        assert_eq!(view["membersCount"], 1, "quitting left the room");
    }
}

#[test]
fn verbs_are_case_sensitive() {
    let srv = TestServer::start();
    let mut c = srv.client();
    assert_eq!(
        error_text(&c.request("QUIT")),
        "unknown action or invalid apiVersion"
    );
    assert_eq!(
        error_text(&c.request("paramsview")),
        "unknown action or invalid apiVersion"
    );
}

#[test]
fn param_add_forms_and_errors() {
    let srv = TestServer::start();
    let mut c = srv.client();
    c.request("paramAdd key=a b=c");
    assert_eq!(c.request("paramView key")["data"], "a b=c");
    c.request("paramAdd key value with  spaces");
    assert_eq!(c.request("paramView key")["data"], "value with  spaces");
    c.request("paramAdd value");
    assert_eq!(c.request("paramView value")["data"], "");
    assert_eq!(
        error_text(&c.request("paramAdd")),
        "a param key is required"
    );
    assert_eq!(
        error_text(&c.request("paramAdd =x")),
        "a param key is required"
    );
    assert_eq!(
        error_text(&c.request("paramAdd nope=1")),
        "param nope is not accepted by any action"
    );
    for safe in ["action", "apiVersion", "callback", "file", "messageId"] {
        assert_eq!(
            ok_data(&c.request(&format!("paramAdd {safe}=1"))),
            Value::Null,
            "{safe} is always accepted"
        );
    }
    assert_eq!(
        ok_data(&c.request("paramAdd sleepDuration=5")),
        Value::Null,
        "an input of some action is accepted"
    );
}

#[test]
fn param_scrubbing_can_be_disabled() {
    let srv = TestServer::with(|c| c.general.disable_param_scrubbing = true);
    let mut c = srv.client();
    assert_eq!(ok_data(&c.request("paramAdd anything=1")), Value::Null);
    assert_eq!(c.request("paramView anything")["data"], "1");
}

#[test]
fn param_view_delete_and_params_view_delete() {
    let srv = TestServer::start();
    let mut c = srv.client();
    assert_eq!(ok_data(&c.request("paramView key")), Value::Null);
    c.request("paramAdd key=k1");
    c.request("paramAdd value=v1");
    c.request("paramAdd key=k2");
    assert_eq!(
        ok_data(&c.request("paramsView")),
        json!({"key":"k2","value":"v1"}),
        "insertion order, replaced in place"
    );
    assert_eq!(ok_data(&c.request("paramDelete key")), Value::Null);
    assert_eq!(ok_data(&c.request("paramDelete never")), Value::Null);
    assert_eq!(ok_data(&c.request("paramsView")), json!({"value":"v1"}));
    assert_eq!(ok_data(&c.request("paramsDelete")), Value::Null);
    assert_eq!(ok_data(&c.request("paramsView")), json!({}));
}

#[test]
fn params_per_connection_are_capped() {
    let srv = TestServer::with(|c| {
        c.general.disable_param_scrubbing = true;
        c.general.max_params_per_connection = 3;
    });
    let mut c = srv.client();
    for k in ["a", "b", "c"] {
        ok_data(&c.request(&format!("paramAdd {k}=1")));
    }
    assert_eq!(
        error_text(&c.request("paramAdd d=1")),
        "too many params on this connection (limit 3)"
    );
    ok_data(&c.request("paramAdd a=2"));
}

#[test]
fn documentation_lists_every_action() {
    let srv = TestServer::start();
    let mut c = srv.client();
    let d = ok_data(&c.request("documentation"));
    for name in [
        "randomNumber",
        "cacheTest",
        "sleepTest",
        "status",
        "showDocumentation",
    ] {
        let doc = &d[name]["1"];
        assert_eq!(
            keys(doc),
            ["name", "version", "description", "inputs", "outputExample"]
        );
        assert_eq!(doc["name"], name);
    }
    assert_eq!(d["cacheTest"]["1"]["inputs"]["key"]["required"], true);
    let r = c.request("showDocumentation");
    assert_eq!(r["documentation"], d);
}

mod files {
    use super::*;
    use std::path::PathBuf;

    struct Public(PathBuf);
    impl Drop for Public {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }

    fn public() -> (Public, PathBuf) {
        let root = std::env::temp_dir().join(format!(
            "aw-e2e-files-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        let public = root.join("public");
        std::fs::create_dir_all(public.join("docs")).expect("mkdir");
        std::fs::write(public.join("hello.txt"), "hello world\n").expect("write");
        std::fs::write(public.join("with space.txt"), "spaced").expect("write");
        std::fs::write(public.join("docs/index.html"), "<h1>docs</h1>").expect("write");
        std::fs::write(root.join("secret.txt"), "secret").expect("write");
        std::os::unix::fs::symlink(root.join("secret.txt"), public.join("escape"))
            .expect("symlink");
        (Public(root), public)
    }

    both! {
        fn file_serves_raw_bytes_from_the_public_directory_only(t) {
            let (_guard, dir) = public();
            let d2 = dir.clone();
            let srv = TestServer::over_with(t, move |c| c.general.paths.public = vec![d2]);
            let mut c = srv.client();
            c.send("file hello.txt");
            assert_eq!(c.bytes(12), b"hello world\n", "raw bytes, nothing else");
            assert_eq!(c.request("paramsView")["messageCount"], 2);
            c.send("file with space.txt");
            assert_eq!(c.bytes(6), b"spaced");
            c.send("file docs");
            assert_eq!(
                c.bytes(13),
                b"<h1>docs</h1>",
                "a directory serves index.html"
            );
            let abs = dir.join("hello.txt");
            c.send(&format!("file {}", abs.display()));
            assert_eq!(c.bytes(12), b"hello world\n");
            // The sticky `file` param is used by a bare `file`, and left unchanged.
            c.request("paramAdd file=hello.txt");
            c.send("file");
            assert_eq!(c.bytes(12), b"hello world\n");
            assert_eq!(c.request("paramView file")["data"], "hello.txt");
            for bad in [
                "file ../secret.txt",
                "file escape",
                "file /etc/passwd",
                "file docs/../../secret.txt",
                "file missing.txt",
                "file .",
            ] {
                let r = c.request(bad);
                assert_eq!(error_text(&r), "That file is not found", "{bad}");
                assert!(r["messageCount"].is_u64() && r["messageId"].is_string());
            }
            c.request("paramsDelete");
            assert_eq!(error_text(&c.request("file")), "That file is not found");
        }
    }

    both! {
        fn files_opened_off_the_loop_keep_their_place_among_pipelined_lines(t) {
            let (_guard, dir) = public();
            let d2 = dir.clone();
            let srv = TestServer::over_with(t, move |c| c.general.paths.public = vec![d2]);
            let mut c = srv.client();
            // Each `file` is opened on a worker; the lines after it wait for it.
            c.send_raw(
                b"paramAdd key=abc\nfile hello.txt\nparamView key\nfile missing.txt\nfile hello.txt\nparamsView\n",
            );
            assert_eq!(c.json()["messageCount"], 1);
            assert_eq!(c.bytes(12), b"hello world\n");
            let r = c.json();
            assert_eq!((r["data"].clone(), r["messageCount"].clone()), (json!("abc"), json!(3)));
            let r = c.json();
            assert_eq!(error_text(&r), "That file is not found");
            assert_eq!(r["messageCount"], 4);
            assert_eq!(c.bytes(12), b"hello world\n");
            assert_eq!(c.json()["messageCount"], 6);
        }
    }

    #[test]
    fn queued_files_per_connection_are_capped() {
        let (_guard, dir) = public();
        // Larger than the socket buffers can take: it stays queued while the client does
        // not read, and the small files queue behind it.
        let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 249) as u8).collect();
        std::fs::write(dir.join("big.bin"), &big).expect("write");
        let d2 = dir.clone();
        let srv = TestServer::with(move |c| {
            c.general.paths.public = vec![d2];
            c.servers.web.enabled = true; // for /metrics
            c.servers.web.port = 0;
            c.servers.web.bind_ip = Some("127.0.0.1".into());
        });
        let mut c = srv.client();
        // 100 file requests and a paramsView in one write, none read yet: 64 files are
        // queued, the rest refused. One write, so one read takes every line: with 64 files
        // queued the server stops reading this connection (backpressure), and a line sent
        // later would wait for the client to read.
        let mut burst = "file big.bin\n".to_owned();
        burst.push_str(&"file hello.txt\n".repeat(99));
        burst.push_str("paramsView\n");
        c.send_raw(burst.as_bytes());
        // Nothing is read until the server has taken every line: reading earlier would let
        // the big file drain and later files be written before the cap is reached.
        wait_until("the server read all 101 lines", || {
            srv.metric("actionwire_lines_received_total")
                .is_some_and(|n| n >= 101.0)
        });
        assert!(c.bytes(big.len()) == big, "the big file first, intact");
        for _ in 2..=64 {
            assert_eq!(c.bytes(12), b"hello world\n");
        }
        for n in 65..=100 {
            let r = c.json();
            assert_eq!(r["messageCount"], n);
            assert_eq!(
                error_text(&r),
                "too many files queued on this connection (limit 64)"
            );
        }
        assert_eq!(c.json()["messageCount"], 101);
        c.send("file hello.txt");
        assert_eq!(c.bytes(12), b"hello world\n", "served again once read");
    }

    both! {
        fn large_file_is_streamed_completely(t) {
            let (_guard, dir) = public();
            let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
            std::fs::write(dir.join("big.bin"), &content).expect("write");
            let d2 = dir.clone();
            // An output limit far below the file size: files are streamed, not buffered.
            let srv = TestServer::over_with(t, move |c| {
                c.general.paths.public = vec![d2];
                c.servers.socket.output_buffer_hard_limit = 256 * 1024;
                c.servers.socket.output_buffer_soft_limit = 128 * 1024;
            });
            let mut c = srv.client();
            c.send("file big.bin");
            c.send("paramsView");
            assert!(c.bytes(content.len()) == content, "file bytes intact");
            assert_eq!(
                c.json()["messageCount"],
                2,
                "the next reply follows the file"
            );
        }
    }
}

#[test]
fn param_bytes_per_connection_are_capped() {
    let srv = TestServer::with(|c| c.general.max_param_bytes_per_connection = 1000);
    let mut c = srv.client();
    let v = "x".repeat(600);
    ok_data(&c.request(&format!("paramAdd key={v}")));
    assert_eq!(
        error_text(&c.request(&format!("paramAdd value={v}"))),
        "params too large on this connection (limit 1000 bytes)"
    );
    // Replacing a value counts the new size, not both.
    ok_data(&c.request(&format!("paramAdd key={}", "y".repeat(900))));
    assert_eq!(c.request("paramView value")["data"], Value::Null);
}
