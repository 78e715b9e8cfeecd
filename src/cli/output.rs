//! How the CLI prints: text for people, `--json` for scripts (one JSON document on
//! stdout, errors included), `-q` (errors only; the exit code says the rest) and `-v`
//! (the HTTP calls, `-vv` debug logs too).
//!
//! Why a process-wide mode rather than a parameter: every command and helper prints,
//! and threading three flags through all of them would be noise; the mode is set once,
//! before any command runs, and never changes.

use std::process::ExitCode;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::json;

#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Sets the mode; the first call wins.
pub fn set(mode: Mode) {
    let _ = MODE.set(mode);
}

pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or_default()
}

/// Whether text for people is printed (not `--json`, not `-q`).
pub fn text() -> bool {
    let m = mode();
    !m.json && !m.quiet
}

/// `println!` for text meant for a terminal, skipped in `--json` and `-q`; control
/// characters in the values (versions, reasons, app output) are removed.
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::cli::output::text() {
            println!("{}", $crate::cli::show::printable(&format!($($arg)*)))
        }
    };
}
pub(crate) use say;

/// Prints `value` as the command's JSON answer (pretty, on stdout); nothing under `-q`.
pub fn json_out<T: Serialize + ?Sized>(value: &T) {
    if !mode().quiet {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }
}

/// Reports a failure and returns its exit code: `{"error": {"code", "message"}}` on
/// stdout with `--json`, `error: message` on stderr otherwise (also under `-q`).
pub fn fail(code: u8, kind: &str, message: impl std::fmt::Display) -> ExitCode {
    if mode().json {
        println!(
            "{}",
            json!({ "error": { "code": kind, "message": message.to_string() } })
        );
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(code)
}
