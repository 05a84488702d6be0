//! The `actionwire` binary: help, configuration errors, and SIGTERM on a real process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_actionwire");

#[test]
fn help_explains_every_flag() {
    let out = run_bounded(Command::new(BIN).arg("--help"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let flags = [
        ("--config", "ACTIONWIRE_CONFIG"),
        ("--port", "ACTIONWIRE_PORT"),
        ("--bind", "ACTIONWIRE_BIND"),
        ("--workers", "ACTIONWIRE_WORKERS"),
        ("--handshake-threads", "ACTIONWIRE_HANDSHAKE_THREADS"),
        ("--keep-alive-interval", "ACTIONWIRE_KEEP_ALIVE_INTERVAL"),
        ("--idle-timeout", "ACTIONWIRE_IDLE_TIMEOUT"),
        ("--handshake-timeout", "ACTIONWIRE_HANDSHAKE_TIMEOUT"),
        ("--set-keep-alive", "ACTIONWIRE_SET_KEEP_ALIVE"),
        ("--tls-cert", "ACTIONWIRE_TLS_CERT"),
        ("--tls-key", "ACTIONWIRE_TLS_KEY"),
        ("--tls-port", "ACTIONWIRE_TLS_PORT"),
        ("--web-port", "ACTIONWIRE_WEB_PORT"),
        ("--upstream", "ACTIONWIRE_UPSTREAM"),
        ("--redis", "ACTIONWIRE_REDIS"),
        ("--processes", "ACTIONWIRE_PROCESSES"),
        ("--log-level", "ACTIONWIRE_LOG_LEVEL"),
    ];
    for (flag, var) in flags {
        assert!(text.contains(flag), "--help mentions {flag}:\n{text}");
        assert!(text.contains(&format!("env: {var}")), "--help names {var}");
        assert!(
            readme.contains(&format!("`{flag}")) && readme.contains(&format!("`{var}`")),
            "the README's flag table lists {flag} and {var}"
        );
    }
    // And nothing undocumented: every flag --help lists is one of these (or --help/--version).
    // Option lines start with the flag (`--port <PORT>`, `-h, --help`).
    let listed = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .find(|w| w.starts_with("--"))
        });
    for flag in listed {
        assert!(
            flags.iter().any(|(f, _)| *f == flag) || ["--help", "--version"].contains(&flag),
            "{flag} is in --help but not checked here (nor, probably, in the README)"
        );
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
        let out = run_bounded(Command::new(BIN).arg("--config").arg(&path));
        assert_eq!(out.status.code(), Some(2), "{json}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{json}: {err}");
        assert_eq!(err.lines().count(), 1, "said once: {err}");
        assert!(
            err.starts_with("actionwire: configuration error: "),
            "{err}"
        );
    }
    let out = run_bounded(Command::new(BIN).args(["--port", "70000"]));
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
    let line = start_line(&mut child);
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("address")
        .parse::<std::net::SocketAddr>()
        .expect("socket address");
    let mut c = Client::connect(addr);
    assert_eq!(c.welcome["context"], "api");
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(c.line(), r#"{"status":"Bye!","context":"api"}"#);
    c.expect_closed();
    drop(c); // our FIN ends the server's linger
    let status = wait_bounded(&mut child);
    assert!(status.success(), "exit status {status}");
}

/// The server's start-up log line (the one with its addresses). The rest of its log is
/// drained on a thread, so the server never writes into a closed pipe.
fn start_line(child: &mut std::process::Child) -> String {
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines().map(|l| l.expect("read log"));
    let line = lines
        .find(|l| l.contains("listening on "))
        .expect("the server logs its addresses");
    std::thread::spawn(move || lines.for_each(drop));
    line
}

#[test]
fn bind_applies_to_every_listener_without_a_bind_ip_of_its_own() {
    let pki = pki();
    let mut child = Command::new(BIN)
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--web-port",
            "0",
            "--tls-port",
            "0",
        ])
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .args(["--log-level", "info"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let line = start_line(&mut child);
    let addr_after = |marker: &str| -> std::net::SocketAddr {
        line.split(marker)
            .nth(1)
            .and_then(|rest| rest.split([' ', ',', ';', ')']).next())
            .unwrap_or_else(|| panic!("{marker} in {line}"))
            .parse()
            .unwrap_or_else(|e| panic!("{marker} in {line}: {e}"))
    };
    let main = addr_after("listening on ");
    let tls = addr_after("and TLS on ");
    let web = addr_after("and HTTP on ");
    for a in [main, tls, web] {
        assert_eq!(a.ip().to_string(), "127.0.0.1", "{line}");
        std::net::TcpStream::connect(a).expect("listening");
    }
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(wait_bounded(&mut child).success());
}

/// Runs the binary with `args`, `env` (and no inherited ACTIONWIRE_* variables), returns its
/// start-up line, then stops it with SIGTERM and checks it exits cleanly.
fn start_line_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ACTIONWIRE_")) {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .args(["--port", "0", "--bind", "127.0.0.1", "--log-level", "info"])
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let line = start_line(&mut child);
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(wait_bounded(&mut child).success(), "{args:?} {env:?}");
    line
}

#[test]
fn every_environment_variable_reaches_its_setting() {
    let pki = pki();
    let cert = pki.server_cert.to_str().expect("utf8 path");
    let key = pki.server_key.to_str().expect("utf8 path");
    let dir = std::env::temp_dir().join(format!("aw-env-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("c.json");
    std::fs::write(&file, r#"{"general":{"simultaneousActions":7}}"#).expect("write");
    let file = file.to_str().expect("utf8 path");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("ACTIONWIRE_CONFIG", file)], "simultaneousActions 7;"),
        (&[("ACTIONWIRE_WORKERS", "3")], "workers 3;"),
        (
            &[("ACTIONWIRE_KEEP_ALIVE_INTERVAL", "1234")],
            "keepAliveInterval 1234 ms",
        ),
        (
            &[("ACTIONWIRE_IDLE_TIMEOUT", "2345")],
            "idleTimeout 2345 ms",
        ),
        (
            &[("ACTIONWIRE_HANDSHAKE_TIMEOUT", "3456")],
            "handshakeTimeout 3456 ms",
        ),
        (&[("ACTIONWIRE_SET_KEEP_ALIVE", "1")], "setKeepAlive true;"),
        (
            &[("ACTIONWIRE_SET_KEEP_ALIVE", "yes")],
            "setKeepAlive true;",
        ),
        (
            &[("ACTIONWIRE_SET_KEEP_ALIVE", "off")],
            "setKeepAlive false;",
        ),
        (&[("ACTIONWIRE_WEB_PORT", "0")], ", and HTTP on 127.0.0.1:"),
        (
            &[
                ("ACTIONWIRE_TLS_CERT", cert),
                ("ACTIONWIRE_TLS_KEY", key),
                ("ACTIONWIRE_TLS_PORT", "0"),
            ],
            ", and TLS on 127.0.0.1:",
        ),
        (
            &[("ACTIONWIRE_TLS_CERT", cert), ("ACTIONWIRE_TLS_KEY", key)],
            "(TLS",
        ),
    ];
    for (env, expect) in cases {
        let line = start_line_with(&[], env);
        assert!(line.contains(expect), "{env:?}: {expect:?} not in {line}");
    }
    // Port, bind and log level: the flags above are set on every run, so check them apart.
    let mut cmd = Command::new(BIN);
    let mut child = cmd
        .envs([
            ("ACTIONWIRE_PORT", "0"),
            ("ACTIONWIRE_BIND", "127.0.0.2"),
            ("ACTIONWIRE_LOG_LEVEL", "info"),
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let line = start_line(&mut child);
    assert!(line.contains("listening on 127.0.0.2:"), "{line}");
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(wait_bounded(&mut child).success());
    // A value that is no boolean is refused with exit code 2, naming the variable's flag.
    let out = run_bounded(
        Command::new(BIN)
            .env("ACTIONWIRE_SET_KEEP_ALIVE", "maybe")
            .args(["--port", "0"]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--set-keep-alive"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_flag_wins_over_the_environment_which_wins_over_the_file() {
    let dir = std::env::temp_dir().join(format!("aw-prec-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("c.json");
    std::fs::write(
        &file,
        r#"{"servers":{"socket":{"keepAliveInterval":111,"setKeepAlive":true}}}"#,
    )
    .expect("write");
    let file = file.to_str().expect("utf8 path");
    let env = [
        ("ACTIONWIRE_KEEP_ALIVE_INTERVAL", "222"),
        ("ACTIONWIRE_SET_KEEP_ALIVE", "false"),
    ];
    let only_file = start_line_with(&["--config", file], &[]);
    assert!(
        only_file.contains("keepAliveInterval 111 ms"),
        "{only_file}"
    );
    assert!(only_file.contains("setKeepAlive true;"), "{only_file}");
    let file_and_env = start_line_with(&["--config", file], &env);
    assert!(
        file_and_env.contains("keepAliveInterval 222 ms"),
        "{file_and_env}"
    );
    assert!(
        file_and_env.contains("setKeepAlive false;"),
        "{file_and_env}"
    );
    let all_three = start_line_with(
        &[
            "--config",
            file,
            "--keep-alive-interval",
            "333",
            "--set-keep-alive",
        ],
        &env,
    );
    assert!(
        all_three.contains("keepAliveInterval 333 ms"),
        "{all_three}"
    );
    assert!(all_three.contains("setKeepAlive true;"), "{all_three}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn debug_logs_name_the_client_visible_connection_id() {
    let srv = ChildServer::spawn("true", &["--log-level", "debug"]);
    let mut c = Client::connect(srv.addr);
    let id = ok_data(&c.request("detailsView"))["id"]
        .as_str()
        .expect("id")
        .to_string();
    c.request("roomAdd defaultRoom");
    c.request("randomNumber");
    c.request("noSuchAction");
    c.send("quit");
    c.line();
    c.expect_closed();
    drop(c);
    for line in [
        format!("{id} connected from 127.0.0.1:"),
        format!("{id} verb roomAdd"),
        format!("{id} action randomNumber ok in "),
        format!("{id} action noSuchAction refused: unknown_action"),
        format!("{id} (127.0.0.1:"),
    ] {
        wait_until(&format!("a log line with {line:?}"), || srv.logged(&line));
    }
    wait_until("the close line", || {
        srv.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| l.contains(&id) && l.contains("closed: quit"))
    });
}
