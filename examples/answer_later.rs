//! An action that waits on a slow backend without holding a worker: it hands the request
//! and a `Responder` to one backend-client thread, returns at once, and the reply goes out
//! when the backend answers. However many calls are in flight, they cost one thread (the
//! client's), not one each.
//!
//! ```text
//! cargo run --example answer_later -- --port 5000 --workers 1
//! nc localhost 5000
//! {"action":"quote","params":{"symbol":"ACME"}}
//! {"symbol":"ACME","price":42.5,"latencyMs":200,"context":"response",…}
//! ```
//!
//! The "backend" here answers every request 200 ms after it was asked (a stand-in for an
//! HTTP service or a database with an asynchronous client). Send many `quote` calls at once
//! with one worker: they all answer together after ~200 ms.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use actionwire::{Action, Config, Input, Responder, Server};
use serde_json::{Map, json};

/// How long the pretend backend takes.
const LATENCY: Duration = Duration::from_millis(200);

/// One request waiting for the backend.
struct Pending {
    symbol: String,
    asked: Instant,
    responder: Responder,
}

/// The backend client: one thread for every call in flight. Requests are answered in the
/// order they were asked, each `LATENCY` after it.
fn backend_client(requests: Receiver<Pending>) {
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    loop {
        let next_due = waiting.front().map(|p| p.asked + LATENCY);
        let received = match next_due {
            Some(due) => requests.recv_timeout(due.saturating_duration_since(Instant::now())),
            None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(p) => waiting.push_back(p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if waiting.is_empty() => return,
            Err(RecvTimeoutError::Disconnected) => thread::sleep(LATENCY),
        }
        while waiting
            .front()
            .is_some_and(|p| p.asked + LATENCY <= Instant::now())
        {
            let Some(p) = waiting.pop_front() else { break };
            let mut reply = Map::new();
            reply.insert("symbol".into(), json!(p.symbol));
            reply.insert("price".into(), json!(42.5));
            reply.insert(
                "latencyMs".into(),
                json!(p.asked.elapsed().as_millis() as u64),
            );
            p.responder.respond(Ok(reply));
        }
    }
}

fn main() -> ExitCode {
    let (to_backend, requests): (Sender<Pending>, Receiver<Pending>) = mpsc::channel();
    thread::spawn(move || backend_client(requests));

    let quote = Action::new("quote", move |data| {
        let symbol = data.params["symbol"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let pending = Pending {
            symbol,
            asked: Instant::now(),
            responder: data.responder(),
        };
        // If the backend client is gone, the responder comes back inside the error and is
        // dropped here: the caller gets an error reply, never a hang.
        to_backend
            .send(pending)
            .map_err(|_| "the backend client has stopped".to_string())
    })
    .description("A quote from the (slow) backend, answered without holding a worker")
    .input(Input::new("symbol").required());

    actionwire::cli::run(Server::builder(Config::default()).action(quote))
}
