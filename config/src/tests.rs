//! The configuration's own tests: defaults, actionhero's names, refusals naming their key.

use super::*;

#[test]
fn empty_document_gives_the_defaults() {
    let c = Config::from_json("{}").expect("valid");
    assert_eq!(c, Config::default());
    assert_eq!(c.servers.socket.port, 5000);
    assert_eq!(c.servers.socket.delimiter, "\n");
    assert_eq!(c.servers.socket.max_line_bytes, 1048576);
    assert_eq!(c.general.simultaneous_actions, 5);
    assert_eq!(c.general.pending_shutdown_wait_limit, 5000);
    assert_eq!(c.workers.handshake_threads, 1);
    let rooms: Vec<&String> = c.general.starting_chat_rooms.keys().collect();
    assert_eq!(rooms, ["defaultRoom", "otherRoom"]);
}

#[test]
fn actionhero_names_are_read() {
    let c = Config::from_json(
        r#"{"general":{"welcomeMessage":"hi","paths":{"public":["/srv/a","/srv/b"]},
            "startingChatRooms":{"lobby":{}}},
            "servers":{"socket":{"bindIP":"127.0.0.1","port":6000,"delimiter":"\r\n",
            "maxDataLength":10}},"workers":{"count":3,"handshakeThreads":0}}"#,
    )
    .expect("valid");
    assert_eq!(c.general.welcome_message, "hi");
    assert_eq!(c.general.paths.public.len(), 2);
    assert_eq!(c.servers.socket.bind_ip, "127.0.0.1");
    assert_eq!(c.servers.socket.port, 6000);
    assert_eq!(c.servers.socket.delimiter, "\r\n");
    assert_eq!(c.workers.count, 3);
    assert_eq!(c.workers.handshake_threads, 0);
    let c = Config::from_json(r#"{"general":{"paths":{"public":"/srv"}}}"#).expect("valid");
    assert_eq!(c.general.paths.public, vec![PathBuf::from("/srv")]);
}

fn error_of(json: &str) -> ConfigError {
    Config::from_json(json).expect_err("must be refused")
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let e = error_of(r#"{"servers":{"socket":{"prot":5000}}}"#);
    assert!(e.to_string().contains("servers.socket"), "{e}");
    assert!(e.message.contains("unknown field `prot`"), "{e}");
    let e = error_of(r#"{"nope":1}"#);
    assert!(e.message.contains("unknown field `nope`"), "{e}");
}

#[test]
fn wrong_types_and_impossible_values_name_the_key() {
    let e = error_of(r#"{"servers":{"socket":{"port":70000}}}"#);
    assert_eq!(e.key, "servers.socket.port");
    let e = error_of(r#"{"servers":{"socket":{"port":"5000"}}}"#);
    assert_eq!(e.key, "servers.socket.port");
    let e = error_of(r#"{"servers":{"socket":{"delimiter":""}}}"#);
    assert_eq!(e.key, "servers.socket.delimiter");
    let e = error_of(r#"{"servers":{"socket":{"bindIP":"localhost"}}}"#);
    assert_eq!(e.key, "servers.socket.bindIP");
    let e = error_of(r#"{"general":{"simultaneousActions":0}}"#);
    assert_eq!(e.key, "general.simultaneousActions");
    let e = error_of(r#"{"servers":{"socket":{"maxLineBytes":0}}}"#);
    assert_eq!(e.key, "servers.socket.maxLineBytes");
    let e = error_of(r#"{"workers":{"count":5000}}"#);
    assert_eq!(e.key, "workers.count");
    let e = error_of(r#"{"workers":{"handshakeThreads":5000}}"#);
    assert_eq!(e.key, "workers.handshakeThreads");
    let e = error_of(r#"{"general":{"startingChatRooms":{"a":{"x":1}}}}"#);
    assert_eq!(e.key, "general.startingChatRooms.a");
    let e = error_of(r#"{"servers":{"socket":{"secure":true}}}"#);
    assert_eq!(e.key, "servers.socket.serverOptions.cert");
    let e = error_of(r#"{"servers":{"socket":{"secure":true,"serverOptions":{"cert":"c"}}}}"#);
    assert_eq!(e.key, "servers.socket.serverOptions.key");
    let e = error_of(
        r#"{"servers":{"socketTls":{"enabled":true,"serverOptions":{"cert":"c","key":"k","requestCert":true}}}}"#,
    );
    assert_eq!(e.key, "servers.socketTls.serverOptions.ca");
    let e = error_of("{");
    assert!(e.message.contains("EOF"), "{e}");
}

#[test]
fn the_servers_cipher_order_is_honored_unless_turned_off() {
    let c = Config::from_json("{}").expect("valid");
    assert!(c.servers.socket.server_options.honor_cipher_order);
    let c =
        Config::from_json(r#"{"servers":{"socket":{"serverOptions":{"honorCipherOrder":false}}}}"#)
            .expect("valid");
    assert!(!c.servers.socket.server_options.honor_cipher_order);
}

#[test]
fn later_features_are_accepted_and_listed() {
    let c = Config::from_json(
        r#"{"servers":{"socket":{"keepAliveInterval":1000,"serverOptions":{"cert":"c.pem"}}}}"#,
    )
    .expect("valid");
    assert_eq!(
        c.inactive_keys(),
        vec!["servers.socket.serverOptions (used only with secure: true)"]
    );
    let c = Config::from_json(r#"{"redis":{"enabled":true},"general":{"cacheMaxEntries":5}}"#)
        .expect("valid");
    assert_eq!(c.inactive_keys().len(), 1);
    assert!(c.inactive_keys()[0].starts_with("general.cacheMaxEntries"));
}

#[test]
fn missing_file_is_named() {
    let e = Config::load(Path::new("/nonexistent/actionwire.json")).expect_err("missing");
    assert!(e.message.contains("/nonexistent/actionwire.json"), "{e}");
}

#[test]
fn relative_paths_in_a_file_are_relative_to_the_file() {
    let dir = std::env::temp_dir().join(format!("aw-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("c.json");
    std::fs::write(
        &file,
        r#"{"general":{"paths":{"public":["www","/srv/abs"]}},
           "servers":{"socketTls":{"serverOptions":{"cert":"tls/cert.pem","key":"/etc/k.pem"}}}}"#,
    )
    .expect("write");
    let c = Config::load(&file).expect("loads");
    assert_eq!(
        c.general.paths.public,
        [dir.join("www"), PathBuf::from("/srv/abs")]
    );
    let tls = &c.servers.socket_tls.server_options;
    assert_eq!(tls.cert, Some(dir.join("tls/cert.pem")));
    assert_eq!(tls.key, Some(PathBuf::from("/etc/k.pem")));
    assert_eq!(tls.ca, None);
    // What the file does not set keeps its default, relative to the working directory.
    std::fs::write(&file, r#"{"general":{"welcomeMessage":"hi"}}"#).expect("write");
    let c = Config::load(&file).expect("loads");
    assert_eq!(c.general.paths.public, [PathBuf::from("public")]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_shipped_example_configuration_is_valid() {
    let c = Config::from_json(include_str!("../../deploy/config.example.json"))
        .expect("deploy/config.example.json parses and validates");
    assert_eq!(c.general.server_id, "edge-1");
    assert!(c.servers.web.enabled);
}
