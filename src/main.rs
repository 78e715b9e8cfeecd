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

/// mimalloc (version 2) instead of the C library's malloc. Why (issue #16, BENCHMARKS.md
/// "Memory per idle connection"): a connection allocates while it is busy (its task,
/// buffers, the upstream connection) and frees it all when it goes idle, keeping only
/// a slab slot. glibc's malloc kept those freed chunks resident between the few
/// long-lived ones, so 10,000 connections that were each busy once kept about 2.5 KiB
/// apiece. mimalloc puts each size class in pages of its own and gives back the pages
/// that empty out; [`tidy`] makes sure that happens on a thread that has gone quiet.
/// mimalloc 3 (the crate's default) kept about 8 times more than 2 here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run by each proxy worker thread once a second, and by the control plane's threads
/// when they go idle, at most once a second (`workers::set_tidy`): mimalloc frees the
/// pages of the thread's heap that emptied and returns their memory once its purge
/// delay has passed, work it otherwise does only when that thread allocates again, so
/// a thread that went quiet after a busy period would keep it all.
#[allow(unsafe_code)]
fn tidy() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any
    // time; it only walks the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

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
    cutover::proxy::workers::set_tidy(tidy);
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
