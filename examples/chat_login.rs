//! A small chat server with a login and a private room: the application hooks at work.
//!
//! ```text
//! cargo run --example chat_login -- --port 5000
//! nc localhost 5000
//! roomAdd lobby
//! roomAdd staff                → {"error":"staff only: log in first", …}
//! {"action":"announce","params":{"text":"hi"}}  → {"error":"log in first", …}
//! {"action":"login","params":{"user":"ada","password":"staff"}}
//! roomAdd staff                → ok
//! say staff hello              → every member of staff reads {"message":"ada: hello", …}
//! {"action":"announce","params":{"text":"tea is ready"}}
//!                              → lobby members read {"message":{"announcement":"tea is ready","by":"ada"},"from":0, …}
//! ```
//!
//! What runs where: the connection and chat middleware run on the event loop (they only look
//! at memory: they must never block); the action middleware runs on a worker thread with
//! the action it wraps.

use std::process::ExitCode;

use actionwire::{
    Action, ActionMiddleware, ChatMiddleware, Config, ConnectionMiddleware, Input, Server,
    ServerCommand,
};
use serde_json::{Map, Value, json};

/// The one account this demo knows.
const PASSWORD: &str = "staff";

fn main() -> ExitCode {
    let mut config = Config::default();
    let mut rooms = Map::new();
    rooms.insert("lobby".into(), json!({}));
    rooms.insert("staff".into(), json!({}));
    config.general.starting_chat_rooms = rooms;

    // Every connection starts as a guest, named after its port.
    let guests = ConnectionMiddleware::new("guests")
        .on_create(|conn, data| {
            data.insert(
                "nick".into(),
                json!(format!("guest-{}", conn.remote.port())),
            );
            Ok(())
        })
        .on_destroy(|conn, reason| log::info!("{} left ({reason})", conn.id));

    // `login` marks the connection; the data it sets is there for its later actions and for
    // the chat middleware.
    let login = Action::new("login", |data| {
        if data.params["password"] != PASSWORD {
            return Err("wrong password".into());
        }
        let user = data.params["user"].clone();
        data.set_connection_data("nick", user.clone());
        data.set_connection_data("staff", json!(true));
        data.response.insert("welcome".into(), user);
        Ok(())
    })
    .description("Logs the connection in as staff")
    .input(
        Input::new("user")
            .required()
            .description("Your name in chat"),
    )
    .input(Input::new("password").required());

    // A broadcast from server code: a chat line from the server (`"from":0`).
    let announce = Action::new("announce", |data| {
        let by = data.connection.data("nick").cloned().unwrap_or(Value::Null);
        let text = data.params["text"].clone();
        data.command(ServerCommand::Broadcast {
            room: "lobby".into(),
            message: json!({"announcement": text, "by": by}),
        });
        Ok(())
    })
    .description("Announces something to the lobby (staff only)")
    .input(Input::new("text").required())
    .middleware("staff-only");

    let staff_only =
        ActionMiddleware::new("staff-only").pre(|data| match data.connection.data("staff") {
            Some(Value::Bool(true)) => Ok(()),
            _ => Err("log in first".into()),
        });

    let rooms = ChatMiddleware::new("rooms")
        .join(|conn, room| match room {
            "staff" if conn.data("staff") != Some(&json!(true)) => {
                Err("staff only: log in first".into())
            }
            _ => Ok(()),
        })
        // A client's message is signed with its nick before anyone reads it (the server's
        // own broadcasts, `sender` None, pass as they are).
        .on_say_receive(|sender, msg| {
            let (Some(sender), Some(text)) = (sender, msg.message.as_str()) else {
                return Ok(());
            };
            let nick = sender.data("nick").and_then(Value::as_str).unwrap_or("?");
            msg.message = json!(format!("{nick}: {text}"));
            Ok(())
        });

    let builder = Server::builder(config)
        .action(login)
        .action(announce)
        .action_middleware(staff_only)
        .connection_middleware(guests)
        .chat_middleware(rooms);
    actionwire::cli::run(builder)
}
