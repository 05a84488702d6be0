//! Actions that answer later through a `Responder`, from threads of their own, holding no
//! worker meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};

use actionwire::{Action, Input};

use crate::harness::*;

/// Opens when `n` calls have started; every responder thread waits for it.
#[derive(Default)]
struct Gate {
    started: Mutex<usize>,
    all_in: Condvar,
}

impl Gate {
    fn arrive_and_wait(&self, n: usize) -> bool {
        let mut started = self.started.lock().expect("gate");
        *started += 1;
        self.all_in.notify_all();
        let (started, timeout) = self
            .all_in
            .wait_timeout_while(started, GUARD, |s| *s < n)
            .expect("gate");
        drop(started);
        !timeout.timed_out()
    }
}

fn fields(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn later_actions(gate: Arc<Gate>, calls: usize, answered_late: Arc<AtomicUsize>) -> Vec<Action> {
    vec![
        // Answers from a thread of its own once every one of `calls` calls has started: with
        // one worker, that only happens if no call holds the worker while it waits.
        Action::new("gathered", move |data| {
            let n = data.params["n"].as_u64().unwrap_or(0);
            let responder = data.responder();
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                let all_in = gate.arrive_and_wait(calls);
                responder.respond(Ok(fields(&[("n", json!(n)), ("allIn", json!(all_in))])));
            });
            Ok(())
        })
        .input(Input::new("n").required()),
        Action::new("answeredInside", |data| {
            data.responder()
                .respond(Ok(fields(&[("now", json!(true))])));
            Ok(())
        }),
        Action::new("forgetful", |data| {
            drop(data.responder());
            Ok(())
        }),
        Action::new("changesItsMind", move |data| {
            let responder = data.responder();
            let late = Arc::clone(&answered_late);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50)); // pacing: after the error
                responder.respond(Ok(fields(&[("late", json!(true))])));
                late.fetch_add(1, Ordering::SeqCst);
            });
            Err("refused at once".into())
        }),
        Action::new("slowAnswer", |data| {
            let responder = data.responder();
            // A number over the socket, text from a query string.
            let ms = data.params["ms"]
                .as_u64()
                .or_else(|| data.params["ms"].as_str()?.parse().ok())
                .unwrap_or(0);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(ms)); // the work being waited for
                responder.respond(Ok(fields(&[("slept", json!(ms))])));
            });
            Ok(())
        })
        .input(Input::new("ms").required()),
    ]
}

#[test]
fn twenty_calls_wait_together_on_one_worker_and_all_answer() {
    const CALLS: usize = 20;
    let gate = Arc::new(Gate::default());
    let late = Arc::new(AtomicUsize::new(0));
    let srv = TestServer::with_actions(
        |c| c.workers.count = 1,
        later_actions(Arc::clone(&gate), CALLS, late),
    );
    let mut clients: Vec<Client> = (0..4).map(|_| srv.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        for j in 0..CALLS / 4 {
            let n = i * 100 + j;
            c.send(&format!(r#"{{"action":"gathered","params":{{"n":{n}}}}}"#));
        }
    }
    let mut answered = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got: Vec<u64> = (0..CALLS / 4)
            .map(|_| {
                let r = c.json();
                assert_eq!(
                    r["allIn"], true,
                    "every call was in before any answered: {r}"
                );
                r["n"].as_u64().expect("n")
            })
            .collect();
        got.sort_unstable();
        let want: Vec<u64> = (0..CALLS / 4).map(|j| (i * 100 + j) as u64).collect();
        assert_eq!(got, want, "each connection got its own answers");
        answered += got.len();
    }
    assert_eq!(answered, CALLS);
    // Nothing is pending any more.
    for c in &mut clients {
        assert_eq!(ok_data(&c.request("detailsView"))["pendingActions"], 0);
    }
}

#[test]
fn answers_before_return_after_an_error_and_from_a_dropped_responder() {
    let late = Arc::new(AtomicUsize::new(0));
    let srv = TestServer::with_actions(
        |_| {},
        later_actions(Arc::new(Gate::default()), 1, Arc::clone(&late)),
    );
    let mut c = srv.client();
    let r = c.request("answeredInside");
    assert_eq!(r["now"], true);
    assert_eq!(keys(&r), ["now", "context", "messageCount", "messageId"]);
    assert_eq!(
        error_text(&c.request("forgetful")),
        "action forgetful did not answer"
    );
    assert_eq!(error_text(&c.request("changesItsMind")), "refused at once");
    wait_until("the late answer given", || late.load(Ordering::SeqCst) == 1);
    // The late answer was dropped: the next line is the next request's reply.
    let r = c.request(r#"{"action":"slowAnswer","params":{"ms":1}}"#);
    assert_eq!(r["slept"], 1, "{r}");
    let details = ok_data(&c.request("detailsView"));
    assert_eq!(details["pendingActions"], 0);
    assert_eq!(details["totalActions"], 4);
}

#[test]
fn a_late_answer_for_a_closed_connection_is_dropped_and_http_waits_for_its_answer() {
    let srv = TestServer::with_actions(
        |c| {
            c.servers.web.enabled = true;
            c.servers.web.port = 0;
            c.servers.web.bind_ip = Some("127.0.0.1".into());
        },
        later_actions(Arc::new(Gate::default()), 1, Arc::new(AtomicUsize::new(0))),
    );
    let mut gone = srv.client();
    gone.send(r#"{"action":"slowAnswer","params":{"ms":200}}"#);
    drop(gone);
    // Over HTTP the response waits for the answer.
    let web = srv.web_addr.expect("web");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://{web}/api/slowAnswer?ms=300"))
        .call()
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(body["slept"], 300);
    // The closed connection's answer came and went (300 ms > 200 ms); the server serves on.
    let mut c = srv.client();
    assert!(c.request("randomNumber")["randomNumber"].is_f64());
    // Only the status call itself is pending.
    assert_eq!(c.request("status")["pendingActions"], 1);
}
