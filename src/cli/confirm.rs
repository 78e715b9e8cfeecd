//! Production safety: a change to a service whose `environment` is `production`
//! (deploy, rollback, `db restore`, `db down`) is confirmed by typing the service's name
//! on a terminal, or asked for with `--yes`. Without a terminal and without `--yes` it
//! is refused (exit 2) so a pipeline that forgot the flag stops before changing
//! anything rather than hanging on a prompt nobody sees.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use super::output::fail;

/// `Ok` when the change may go ahead: not production, `--yes`, or the name typed.
pub fn production(
    environment: Option<&str>,
    service: &str,
    what: &str,
    yes: bool,
) -> Result<(), ExitCode> {
    if yes || environment != Some("production") {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(fail(
            2,
            "confirmation_required",
            format!(
                "`{service}` is a production service and there is no terminal to confirm {what} on: pass --yes to go ahead"
            ),
        ));
    }
    eprint!("`{service}` is a PRODUCTION service: {what}.\nType the service name to confirm: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() == service {
        Ok(())
    } else {
        Err(fail(
            1,
            "not_confirmed",
            format!("not confirmed (expected `{service}`); nothing was changed"),
        ))
    }
}
