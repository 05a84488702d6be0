//! The `actionwire` binary: the command line (`actionwire::cli`) around the built-in actions.

use std::process::ExitCode;

use actionwire::{Config, Server};

fn main() -> ExitCode {
    actionwire::cli::run(Server::builder(Config::default()))
}
