//! The `cutover` binary: parse, run, map the result to an exit code.
//!
//! The one place that knows both `cli` (the deployment commands) and `demo` (the demo
//! story and the demo app): they sit side by side in the layer order and neither
//! imports the other, so the demo's commands are added to the CLI's parser here. They
//! come last in `cutover --help`, as they always did.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Subcommand};
use cutover::cli::{self, Cli};
use cutover::demo;

#[derive(Subcommand, Debug)]
enum DemoCommand {
    /// Play the whole story (v1 → v2 → failing v3 → erroring v4) in a temporary directory.
    Demo {
        /// Requests per second of generated load.
        #[arg(long, default_value_t = 50)]
        rate: u32,
    },
    /// The demo HTTP app (a stand-in service for the demo and the tests).
    DemoApp(demo::app::DemoAppCommand),
}

fn main() -> ExitCode {
    let full = DemoCommand::augment_subcommands(Cli::command());
    let matches = full.clone().get_matches();
    match matches.subcommand_name() {
        Some(name) if DemoCommand::has_subcommand(name) => {
            match DemoCommand::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()) {
                DemoCommand::Demo { rate } => cli::edge("warn", demo::story::run(rate)),
                DemoCommand::DemoApp(cmd) => cli::edge("warn", cmd.run()),
            }
        }
        _ => cli::main(
            Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()),
            full,
        ),
    }
}
