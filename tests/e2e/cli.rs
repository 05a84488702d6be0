//! The `actionwire` binary: help, configuration errors, and SIGTERM on a real process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_actionwire");

#[test]
fn help_explains_every_flag() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--port", "--bind", "--workers", "--log-level"] {
        assert!(text.contains(flag), "--help mentions {flag}:\n{text}");
    }
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let dir = std::env::temp_dir().join(format!("aw-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let cases = [
        (
            r#"{"servers":{"socket":{"port":70000}}}"#,
            "servers.socket.port",
        ),
        (
            r#"{"servers":{"socket":{"delimiter":""}}}"#,
            "servers.socket.delimiter",
        ),
        (
            r#"{"servers":{"socket":{"prot":1}}}"#,
            "unknown field `prot`",
        ),
        (r#"{"workers":{"count":"two"}}"#, "workers.count"),
    ];
    for (json, expect) in cases {
        let path = dir.join("c.json");
        std::fs::write(&path, json).expect("write");
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{json}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{json}: {err}");
    }
    let out = Command::new(BIN)
        .args(["--port", "70000"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigterm_says_bye_and_exits_cleanly() {
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--bind", "127.0.0.1", "--log-level", "info"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server logs its address")
            .expect("read log");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("address")
                .parse::<std::net::SocketAddr>()
                .expect("socket address");
        }
    };
    let mut c = Client::connect(addr);
    assert_eq!(c.welcome["context"], "api");
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(c.line(), r#"{"status":"Bye!","context":"api"}"#);
    c.expect_closed();
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
}
