//! `--processes 2`: the real binary supervising two single-loop processes on one port,
//! joined through a private Redis: both answer on the port, rooms are shared between
//! them, a killed child comes back with the same `serverId` (clearing the members its
//! earlier life left), and SIGTERM stops them all gracefully.

use std::collections::BTreeMap;

use serde_json::json;

use crate::cluster::{Redis, member_ids};
use crate::harness::{ChildServer, Client, ok_data, wait_bounded, wait_until};

const LISTENING: &str = "listening on";

/// The children's pids, from the kernel's list of the parent's children.
fn children(parent: &ChildServer) -> Vec<i32> {
    let pid = parent.child.id();
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("children list")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect()
}

/// Connects until one client lands on each of the two processes (the kernel hashes each
/// connection: 200 tries all landing on one process would take odds of 2^-199).
fn one_client_each(server: &ChildServer) -> BTreeMap<String, Client> {
    let mut by_id = BTreeMap::new();
    for _ in 0..200 {
        let mut c = Client::connect(server.addr);
        let id = c.request(r#"{"action":"status"}"#)["id"]
            .as_str()
            .expect("serverId")
            .to_owned();
        by_id.entry(id).or_insert(c);
        if by_id.len() == 2 {
            break;
        }
    }
    assert_eq!(
        by_id.len(),
        2,
        "both processes answer on the port: {:?}",
        by_id.keys()
    );
    by_id
}

#[test]
fn two_processes_share_a_port_and_rooms_and_are_supervised() {
    let redis = Redis::start();
    let url = redis.url();
    let server = ChildServer::spawn("true", &["--processes", "2", "--redis", &url]);
    wait_until("both processes listen", || {
        server.count_logged(LISTENING) == 2
    });
    wait_until("both processes joined the cluster", || {
        server.count_logged("linked to redis") == 2
    });
    let mut clients = one_client_each(&server);
    let ids: Vec<String> = clients.keys().cloned().collect();
    let port = server.addr.port();
    assert!(ids[0].ends_with(&format!(":{port}:0")), "{ids:?}");
    assert!(ids[1].ends_with(&format!(":{port}:1")), "{ids:?}");

    // Rooms are shared: a line said on one process reaches the member on the other.
    for c in clients.values_mut() {
        assert_eq!(ok_data(&c.request("roomAdd defaultRoom")), json!(true));
    }
    let (first, second) = (ids[0].clone(), ids[1].clone());
    let said = clients
        .get_mut(&first)
        .expect("client")
        .request("say defaultRoom across processes");
    assert_eq!(said["status"], "OK", "{said}");
    let other = clients.get_mut(&second).expect("client");
    assert_eq!(other.json()["message"], "across processes");
    let view = ok_data(&other.request("roomView defaultRoom"));
    assert_eq!(member_ids(&view).len(), 2, "{view}");

    // Child 1 killed: restarted with the same serverId, which clears its dead member.
    let pids = children(&server);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let mut killed = None;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(status.contains("actionwire"), "{status}");
        killed.get_or_insert(pid);
    }
    let killed = killed.expect("a child");
    // SAFETY: signalling a process this test started (through the supervisor).
    assert_eq!(unsafe { libc::kill(killed, libc::SIGKILL) }, 0);
    wait_until("the supervisor restarts it", || {
        server.count_logged(LISTENING) == 3 && server.count_logged("linked to redis") == 3
    });
    wait_until("the dead process's member is gone from the room", || {
        let n: usize = redis.cmd(redis::cmd("HLEN").arg("actionhero:chatRoom:members:defaultRoom"));
        n == 1
    });
    let mut again = one_client_each(&server);
    assert_eq!(
        again.keys().cloned().collect::<Vec<_>>(),
        ids,
        "the same two serverIds"
    );
    for c in again.values_mut() {
        assert_eq!(ok_data(&c.request("roomAdd otherRoom")), json!(true));
    }
    let c = again.get_mut(&second).expect("client");
    assert_eq!(c.request("say otherRoom still shared")["status"], "OK");
    assert_eq!(
        again.get_mut(&first).expect("client").json()["message"],
        "still shared"
    );

    // SIGTERM: every process shuts down gracefully and the parent exits 0.
    drop(clients);
    server.signal(libc::SIGTERM);
    for mut c in again.into_values() {
        let (rest, _) = c.drain();
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.contains(r#""status":"Bye!""#),
            "each live client is told: {rest}"
        );
    }
    let mut server = server;
    let status = wait_bounded(&mut server.child);
    assert!(status.success(), "{status}");
    assert!(server.logged("every process has exited"));
}

#[test]
fn more_than_one_process_without_the_cluster_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_actionwire"))
        .args(["--processes", "2", "--port", "0", "--bind", "127.0.0.1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("general.processes") && err.contains("--redis"),
        "{err}"
    );
}

#[test]
fn a_child_that_cannot_start_stops_them_all_with_the_start_up_error() {
    let redis = Redis::start();
    let url = redis.url();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_actionwire"))
        .args([
            "--processes",
            "2",
            "--redis",
            &url,
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(2), "the start-up error's exit code");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(err.contains("cannot read /nonexistent/cert.pem"), "{err}");
    assert!(err.contains("could not start"), "{err}");
}
