//! A server with an action of your own, next to the built-in ones.
//!
//! ```text
//! cargo run --example custom_action
//! nc localhost 5000
//! {"action":"add","params":{"a":2,"b":40}}
//! {"sum":42,"context":"response","messageCount":1,"messageId":"…"}
//! ```

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Info)
        .init()?;
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

    let server = Server::builder(Config::default()).action(add).build()?;
    log::info!("{}", server.describe());
    server.run()?;
    Ok(())
}
