//! A server with an action of your own, next to the built-in ones.
//!
//! ```text
//! cargo run --example custom_action -- --port 5000 --log-level debug
//! nc localhost 5000
//! {"action":"add","params":{"a":2,"b":40}}
//! {"sum":42,"context":"response","messageCount":1,"messageId":"…"}
//! ```

use std::process::ExitCode;

use actionwire::{Action, Config, Input, Server};
use serde_json::{Value, json};

/// Accepts numbers, or strings holding numbers (sticky params are always strings).
fn number(v: Value) -> Result<Value, String> {
    match &v {
        Value::Number(_) => Ok(v),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map(|n| json!(n))
            .map_err(|_| format!("{s:?} is not a number")),
        _ => Err("expected a number".into()),
    }
}

fn main() -> ExitCode {
    let add = Action::new("add", |data| {
        let a = data.params["a"].as_f64().unwrap_or(0.0);
        let b = data.params["b"].as_f64().unwrap_or(0.0);
        data.response.insert("sum".into(), json!(a + b));
        Ok(())
    })
    .description("Adds two numbers")
    .input(Input::new("a").required().formatter(number))
    .input(Input::new("b").required().formatter(number))
    .output_example(json!({"sum": 42}));

    // The whole `actionwire` command line around this server: flags (`--port`, `--config`,
    // `--log-level`, …), `ACTIONWIRE_*` variables, logging, signals and `bench`.
    actionwire::cli::run(Server::builder(Config::default()).action(add))
}
