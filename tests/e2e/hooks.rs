//! Application hooks (the library API): connection, action and chat middleware, and server
//! code that broadcasts, sends to one connection, and creates and destroys rooms; each seen
//! through the socket protocol (and HTTP where it applies).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};

use actionwire::{
    Action, ActionMiddleware, ChatMessage, ChatMiddleware, ConnectionMiddleware, Input,
    ServerCommand, Uuid,
};

use crate::harness::*;

fn with_web(c: &mut actionwire::Config) {
    c.servers.web.enabled = true;
    c.servers.web.port = 0;
    c.servers.web.bind_ip = Some("127.0.0.1".into());
}

/// (status, body) of a GET on the web listener.
fn get(web: std::net::SocketAddr, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://{web}{path}"))
        .call()
        .expect("request");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().expect("body"))
}

/// A metric's value from the exposition text.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

/// `login` (password `sesame`), `whoami` and `secret`, with an `auth` pre-processor that
/// refuses everything but `login` until the connection is logged in, and a global
/// post-processor that stamps replies.
fn login_app(b: actionwire::ServerBuilder) -> actionwire::ServerBuilder {
    b.action(
        Action::new("login", |data| {
            if data.params["password"] != "sesame" {
                return Err("wrong password".into());
            }
            let user = data.params["user"].clone();
            data.set_connection_data("authenticated", json!(true));
            data.set_connection_data("user", user.clone());
            data.response.insert("welcome".into(), user);
            Ok(())
        })
        .input(Input::new("user").required())
        .input(Input::new("password").required()),
    )
    .action(Action::new("whoami", |data| {
        let user = data.connection.data("user").cloned().unwrap_or(Value::Null);
        data.response.insert("user".into(), user);
        Ok(())
    }))
    .action(
        Action::new("secret", |data| {
            data.response.insert("secret".into(), json!("swordfish"));
            data.response
                .insert("order".into(), data.params["order"].clone());
            Ok(())
        })
        .input(Input::new("order").default_value(json!([])))
        .middleware("trace-b")
        .middleware("trace-a"),
    )
    .action_middleware(
        ActionMiddleware::new("auth")
            .global()
            .priority(1)
            .pre(|data| {
                let logged_in = data.connection.data("authenticated") == Some(&json!(true));
                if logged_in || &*data.action == "login" {
                    Ok(())
                } else {
                    Err("not logged in".into())
                }
            }),
    )
    .action_middleware(ActionMiddleware::new("stamp").global().post(|data| {
        if data.response.contains_key("secret") && data.params["order"] == json!([]) {
            return Err("middleware saw no order".into());
        }
        data.response.insert("stamped".into(), json!(true));
        Ok(())
    }))
    // Named by `secret`: run by priority (a, then b), not in the order named.
    .action_middleware(trace("trace-b", 20))
    .action_middleware(trace("trace-a", 10))
}

fn trace(name: &'static str, priority: i32) -> ActionMiddleware {
    ActionMiddleware::new(name)
        .priority(priority)
        .pre(move |data| {
            let mut order = data.params["order"].as_array().cloned().unwrap_or_default();
            order.push(json!(name));
            data.params.insert("order".into(), Value::Array(order));
            Ok(())
        })
}

#[test]
fn a_pre_processor_refuses_actions_until_login_and_post_processors_change_replies() {
    let srv = TestServer::custom(Transport::Plain, with_web, login_app);
    let mut c = srv.client();
    let r = c.request(r#"{"action":"whoami"}"#);
    assert_eq!(error_text(&r), "not logged in");
    assert!(r.get("stamped").is_none(), "post runs only after success");
    let r = c.request(r#"{"action":"login","params":{"user":"evan","password":"nope"}}"#);
    assert_eq!(error_text(&r), "wrong password");
    let r = c.request(r#"{"action":"login","params":{"user":"evan","password":"sesame"}}"#);
    assert_eq!(r["welcome"], "evan");
    assert_eq!(r["stamped"], true);
    // The data the action set is the connection's from now on.
    let r = c.request(r#"{"action":"whoami"}"#);
    assert_eq!(r["user"], "evan");
    assert_eq!(
        keys(&r),
        ["user", "stamped", "context", "messageCount", "messageId"]
    );
    let r = c.request(r#"{"action":"secret"}"#);
    assert_eq!(r["secret"], "swordfish");
    assert_eq!(r["order"], json!(["trace-a", "trace-b"]));
    // Another connection is not logged in.
    let mut other = srv.client();
    assert_eq!(
        error_text(&other.request("secret")),
        "not logged in",
        "bare calls go through middleware too"
    );
    // HTTP requests are stateless: never logged in.
    let web = srv.web_addr.expect("web");
    let (status, body) = get(web, "/api/whoami");
    assert_eq!(status, 500);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["error"],
        "not logged in"
    );
}

#[test]
fn a_post_processor_error_becomes_the_reply() {
    let srv = TestServer::custom(
        Transport::Plain,
        |_| {},
        |b| {
            b.action(Action::new("fragile", |data| {
                data.response.insert("partial".into(), json!(1));
                Ok(())
            }))
            .action_middleware(
                ActionMiddleware::new("veto")
                    .global()
                    .post(|_| Err("vetoed after the fact".into())),
            )
        },
    );
    let mut c = srv.client();
    let r = c.request("fragile");
    assert_eq!(error_text(&r), "vetoed after the fact");
    assert_eq!(r["partial"], 1, "what the action set stays");
}

#[test]
fn unknown_or_duplicate_middleware_stops_the_server_from_starting() {
    let unknown = actionwire::Server::builder(test_config())
        .action(Action::new("a", |_| Ok(())).middleware("nope"))
        .build();
    let e = unknown.err().expect("refused").to_string();
    assert!(e.contains("`a` asks for middleware `nope`"), "{e}");
    let twice = actionwire::Server::builder(test_config())
        .action_middleware(ActionMiddleware::new("m"))
        .action_middleware(ActionMiddleware::new("m"))
        .build();
    let e = twice.err().expect("refused").to_string();
    assert!(e.contains("`m` is added twice"), "{e}");
}

#[test]
fn connection_middleware_sets_data_refuses_with_a_reason_and_hears_closes() {
    let full = Arc::new(AtomicBool::new(false));
    let closed: Arc<Mutex<Vec<(Uuid, String)>>> = Arc::default();
    let (f, cl) = (Arc::clone(&full), Arc::clone(&closed));
    let srv = TestServer::custom(Transport::Plain, with_web, move |b| {
        b.action(Action::new("origin", |data| {
            let v = data.connection.data("origin").cloned();
            data.response
                .insert("origin".into(), v.unwrap_or(Value::Null));
            Ok(())
        }))
        .connection_middleware(
            ConnectionMiddleware::new("gate")
                .on_create(move |info, data| {
                    if f.load(Ordering::SeqCst) {
                        return Err("server full".into());
                    }
                    data.insert("origin".into(), json!(info.remote.ip().to_string()));
                    Ok(())
                })
                .on_destroy(move |info, reason| {
                    cl.lock()
                        .expect("closed")
                        .push((info.id, reason.to_owned()));
                }),
        )
    });
    let mut c = srv.client();
    assert_eq!(c.request("origin")["origin"], "127.0.0.1");
    let id: Uuid = ok_data(&c.request("detailsView"))["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    full.store(true, Ordering::SeqCst);
    let mut refused = Client::connect_raw(srv.addr);
    assert_eq!(
        refused.json(),
        json!({"status":"Bye!","context":"api","reason":"server full"}),
        "no welcome: the Bye line with the reason"
    );
    refused.expect_closed();
    drop(refused);
    c.send("quit");
    assert_eq!(c.json()["status"], "Bye!");
    drop(c); // our FIN ends the server's linger, and with it the connection
    wait_until("destroy hook", || {
        closed.lock().expect("closed").iter().any(|(u, _)| *u == id)
    });
    let seen = closed.lock().expect("closed").clone();
    assert_eq!(seen, [(id, "quit".to_owned())], "not for the refused one");
    // Counted once the refused client's FIN ends the server's linger.
    let web = srv.web_addr.expect("web");
    wait_until("the refusal counted", || {
        let (_, metrics) = get(web, "/metrics");
        metric(
            &metrics,
            "actionwire_connections_closed_total{reason=\"refused\"}",
        ) == 1.0
    });
}

/// `vip` needs `data.vip`; nobody may leave `jail`; a join hook for `boom` panics; `slow`
/// takes 30 ms to decide.
fn guarded_rooms(b: actionwire::ServerBuilder) -> actionwire::ServerBuilder {
    b.action(Action::new("upgrade", |data| {
        data.set_connection_data("vip", json!(true));
        Ok(())
    }))
    .chat_middleware(
        ChatMiddleware::new("doors")
            .join(|info, room| match room {
                "vip" if info.data("vip") != Some(&json!(true)) => Err("vip only".into()),
                "boom" => panic!("deliberate"),
                "slow" => {
                    std::thread::sleep(Duration::from_millis(30));
                    Ok(())
                }
                _ => Ok(()),
            })
            .leave(|_, room| match room {
                "jail" => Err("no escape".into()),
                _ => Ok(()),
            }),
    )
}

#[test]
fn join_and_leave_middleware_authorize_rooms_and_loop_hooks_are_watched() {
    let srv = TestServer::custom(
        Transport::Plain,
        |c| {
            with_web(c);
            c.general.auto_create_rooms = true;
        },
        guarded_rooms,
    );
    let mut c = srv.client();
    assert_eq!(error_text(&c.request("roomAdd vip")), "vip only");
    assert_eq!(ok_data(&c.request("detailsView"))["rooms"], json!([]));
    c.request("upgrade");
    assert_eq!(ok_data(&c.request("roomAdd vip")), true);
    assert_eq!(ok_data(&c.request("roomAdd jail")), true);
    assert_eq!(error_text(&c.request("roomLeave jail")), "no escape");
    assert_eq!(
        error_text(&c.request("roomChange defaultRoom")),
        "no escape",
        "roomChange would leave jail: refused, nothing changed"
    );
    assert_eq!(
        ok_data(&c.request("detailsView"))["rooms"],
        json!(["vip", "jail"])
    );
    assert_eq!(ok_data(&c.request("roomLeave vip")), true);
    // A panicking hook is a refusal; the server goes on.
    assert_eq!(
        error_text(&c.request("roomAdd boom")),
        "chat middleware doors failed"
    );
    assert_eq!(ok_data(&c.request("roomAdd slow")), true);
    let (_, metrics) = get(srv.web_addr.expect("web"), "/metrics");
    assert_eq!(
        metric(&metrics, "actionwire_hook_panics_total{hook=\"chat_join\"}"),
        1.0
    );
    // At least the 30 ms one (on a loaded machine another call may cross 10 ms too).
    assert!(metric(&metrics, "actionwire_slow_hooks_total{hook=\"chat_join\"}") >= 1.0);
}

#[test]
fn say_middleware_rewrites_once_and_filters_per_recipient() {
    let srv = TestServer::custom(
        Transport::Plain,
        |_| {},
        |b| {
            b.action(Action::new("mute", |data| {
                data.set_connection_data("muted", json!(true));
                Ok(())
            }))
            .chat_middleware(
                ChatMiddleware::new("manners")
                    .on_say_receive(|sender, msg: &mut ChatMessage| {
                        let text = msg.message.as_str().unwrap_or_default().to_owned();
                        if text.contains("spam") {
                            return Err("no spam".into());
                        }
                        let who = sender.map_or(0, |s| s.remote.port());
                        assert!(who > 0, "a client's say names its sender");
                        msg.message = json!(text.replace("darn", "d**n"));
                        Ok(())
                    })
                    .say(|recipient, msg| {
                        if recipient.data("muted") == Some(&json!(true)) {
                            return false;
                        }
                        msg.message =
                            json!(format!("{} (for you)", msg.message.as_str().unwrap_or("")));
                        true
                    }),
            )
        },
    );
    let mut a = srv.client();
    let mut b = srv.client();
    let mut m = srv.client();
    for c in [&mut a, &mut b, &mut m] {
        assert_eq!(ok_data(&c.request("roomAdd defaultRoom")), true);
    }
    m.request("mute");
    assert_eq!(
        error_text(&a.request("say defaultRoom buy spam")),
        "no spam"
    );
    let r = a.request("say defaultRoom darn it");
    assert_eq!(ok_data(&r), Value::Null);
    let own = a.json();
    assert_eq!(own["message"], "d**n it (for you)");
    assert_eq!(own["context"], "user");
    assert_eq!(b.json()["message"], "d**n it (for you)");
    // The muted member got nothing: its next line is the answer to its next request.
    assert_eq!(
        ok_data(&m.request("roomView defaultRoom"))["membersCount"],
        3
    );
}

#[test]
fn server_code_broadcasts_sends_and_manages_rooms() {
    let srv = TestServer::custom(
        Transport::Plain,
        |_| {},
        |b| {
            b.action(
                Action::new("announce", |data| {
                    let room = data.params["room"].as_str().unwrap_or_default().to_owned();
                    let text = data.params["text"].clone();
                    data.command(ServerCommand::Broadcast {
                        room,
                        message: json!({"alert": text}),
                    });
                    Ok(())
                })
                .input(Input::new("room").required())
                .input(Input::new("text").required()),
            )
            .action(
                Action::new("poke", |data| {
                    let to: Uuid = data.params["to"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or("to must be a connection id")?;
                    let from = data.connection.id.to_string();
                    data.command(ServerCommand::Send {
                        to,
                        message: json!({"poke": from}),
                    });
                    Ok(())
                })
                .input(Input::new("to").required()),
            )
        },
    );
    let mut a = srv.client();
    let mut b = srv.client();
    let mut caller = srv.client();
    for c in [&mut a, &mut b] {
        c.request("roomAdd defaultRoom");
    }
    // From an action: the broadcast is out before the caller's reply.
    let r = caller.request(r#"{"action":"announce","params":{"room":"defaultRoom","text":"hi"}}"#);
    assert!(r.get("error").is_none(), "{r}");
    for c in [&mut a, &mut b] {
        let line = c.json();
        assert_eq!(line["message"], json!({"alert": "hi"}));
        assert_eq!(line["from"], 0);
        assert_eq!(line["room"], "defaultRoom");
    }
    // To one connection, by id.
    let a_id = ok_data(&a.request("detailsView"))["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let caller_id = ok_data(&caller.request("detailsView"))["id"].clone();
    let r = caller.request(&format!(
        r#"{{"action":"poke","params":{{"to":"{a_id}"}}}}"#
    ));
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(a.json(), json!({"poke": caller_id}));
    // From outside the loop, through the Api.
    srv.api
        .send_to(a_id.parse().expect("uuid"), json!("psst"))
        .expect("queued");
    assert_eq!(a.line(), r#""psst""#);
    srv.api
        .broadcast("defaultRoom", "from outside")
        .expect("queued");
    assert_eq!(a.json()["message"], "from outside");
    assert_eq!(b.json()["message"], "from outside");
    // Rooms: created from code (empty, kept), joined, destroyed with its members told.
    srv.api.add_room("pop-up").expect("queued");
    wait_until("room created", || {
        srv.api.room_names().contains(&"pop-up".to_owned())
    });
    assert_eq!(ok_data(&a.request("roomAdd pop-up")), true);
    assert_eq!(ok_data(&b.request("roomAdd pop-up")), true);
    srv.api.destroy_room("pop-up").expect("queued");
    for c in [&mut a, &mut b] {
        let line = c.json();
        assert_eq!(line["message"], "this room has been deleted");
        assert_eq!(line["room"], "pop-up");
        assert_eq!(line["from"], 0);
        assert_eq!(
            ok_data(&c.request("detailsView"))["rooms"],
            json!(["defaultRoom"])
        );
        assert_eq!(
            error_text(&c.request("roomAdd pop-up")),
            "room does not exist"
        );
    }
    assert!(!srv.api.room_names().contains(&"pop-up".to_owned()));
}

#[test]
fn an_action_sees_its_callers_rooms_params_and_data() {
    let srv = TestServer::custom(
        Transport::Plain,
        |_| {},
        |b| {
            b.action(
                Action::new("me", |data| {
                    let c = &data.connection;
                    let rooms: Vec<&str> = c.rooms().collect();
                    let params: Map<String, Value> =
                        c.params().map(|(k, v)| (k.to_owned(), json!(v))).collect();
                    let out = json!({
                        "id": c.id.to_string(),
                        "remote": c.remote.to_string(),
                        "rooms": rooms,
                        "params": params,
                        "inOther": c.in_room("otherRoom"),
                        "nick": c.param("nick"),
                        "data": c.data_entries().count(),
                    });
                    data.response.insert("me".into(), out);
                    Ok(())
                })
                .input(Input::new("nick")),
            )
        },
    );
    let mut c = srv.client();
    c.request("roomAdd otherRoom");
    c.request("roomAdd defaultRoom");
    c.request("paramAdd nick=ada");
    let details = ok_data(&c.request("detailsView"));
    let me = c.request("me")["me"].clone();
    assert_eq!(me["id"], details["id"]);
    assert_eq!(
        me["remote"],
        format!("127.0.0.1:{}", c.stream.local_addr().expect("addr").port())
    );
    assert_eq!(me["rooms"], json!(["otherRoom", "defaultRoom"]));
    assert_eq!(me["params"], json!({"nick": "ada", "action": "me"}));
    assert_eq!(me["inOther"], true);
    assert_eq!(me["nick"], "ada");
    assert_eq!(me["data"], 0);
    // A snapshot is taken per call: later changes show in later calls.
    c.request("roomLeave otherRoom");
    assert_eq!(c.request("me")["me"]["rooms"], json!(["defaultRoom"]));
}

/// The name of the thread an action ran on: workers are `actionwire-worker-N`.
fn thread_probe(name: &str) -> Action {
    Action::new(name, |data| {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        if data.params.get("boom").is_some_and(|v| v == "yes") {
            panic!("deliberate");
        }
        data.response.insert("thread".into(), json!(thread));
        Ok(())
    })
    .input(Input::new("boom"))
}

#[test]
fn inline_actions_run_on_the_loop_unless_their_middleware_or_http_says_otherwise() {
    let srv = TestServer::custom(Transport::Plain, with_web, |b| {
        b.action(thread_probe("onLoop").inline())
            .action(thread_probe("onWorker"))
            .action(thread_probe("wrapped").inline().middleware("blocking"))
            .action(thread_probe("wrappedInline").inline().middleware("quick"))
            .action_middleware(ActionMiddleware::new("blocking").pre(|_| Ok(())))
            .action_middleware(ActionMiddleware::new("quick").inline().pre(|_| Ok(())))
    });
    let mut c = srv.client();
    let on_worker = |v: &Value| {
        v["thread"]
            .as_str()
            .expect("thread")
            .starts_with("actionwire-worker-")
    };
    assert!(!on_worker(&c.request("onLoop")));
    assert!(on_worker(&c.request("onWorker")));
    assert!(
        on_worker(&c.request("wrapped")),
        "middleware not declared inline moves it to a worker"
    );
    assert!(!on_worker(&c.request("wrappedInline")));
    assert!(c.request("randomNumber")["randomNumber"].is_f64());
    // A panic inline is an error reply; the loop goes on.
    let r = c.request(r#"{"action":"onLoop","params":{"boom":"yes"}}"#);
    assert_eq!(error_text(&r), "internal error in action onLoop");
    assert!(!on_worker(&c.request("onLoop")));
    // HTTP requests keep the workers.
    let (status, body) = get(srv.web_addr.expect("web"), "/api/onLoop");
    assert_eq!(status, 200);
    assert!(on_worker(&serde_json::from_str(&body).expect("json")));
}
