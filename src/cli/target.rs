//! Which daemon a command talks to, with which token, on whose behalf.
//!
//! A CI runner talking to a remote daemon has no config file: `--api URL` or
//! `CUTOVER_API_URL`, and `CUTOVER_TOKEN` (or `--token`), are enough. Precedence is
//! flag, then environment, then the config file's `[api]`. The token is best given in
//! the environment: a `--token` argument is visible in the process list to every
//! user of the machine.
//!
//! Who triggered a deployment (`triggered_by`, stored with it) is never `unknown`:
//! `--actor`, `CUTOVER_ACTOR`, then the CI system's user variable, then the OS user.

use std::path::Path;
use std::process::ExitCode;

use super::output::fail;
use super::Cli;
use crate::api::client::ApiClient;
use crate::config::{self, Config};

/// The daemon to call, and the config file when one was read.
pub struct Target {
    pub client: ApiClient,
    pub config: Option<Config>,
}

/// Loads the config, reporting every problem with exit code 2.
pub fn load_config(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| fail(2, "invalid_config", e))
}

/// Resolves the daemon's address and token: flag, then environment, then config file.
pub fn resolve(cli: &Cli) -> Result<Target, ExitCode> {
    let trace = super::output::mode().verbose > 0;
    let token = cli.token.clone().filter(|t| !t.is_empty());
    if let Some(url) = cli.api.as_deref().filter(|u| !u.is_empty()) {
        // A config file only adds the token, and only when none was given.
        let config = match (&token, cli.config.exists()) {
            (None, true) => Some(load_config(&cli.config)?),
            _ => None,
        };
        let token = token.or_else(|| config.as_ref().and_then(crate::daemon::client_token));
        let mut client = ApiClient::from_url(url, token).map_err(|e| fail(2, "usage", e))?;
        // An https:// daemon: trusted by CUTOVER_API_CA_FILE, else the config's
        // `[api] tls_ca_file`, else the system store.
        if client.base().starts_with("https://") {
            let ca_file = std::env::var_os("CUTOVER_API_CA_FILE")
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    config
                        .as_ref()
                        .and_then(|c| c.api.tls.as_ref()?.ca_file.clone())
                });
            client = client.with_tls(&crate::tls::ClientTls {
                ca_file,
                ..Default::default()
            });
        }
        return Ok(Target {
            client: client.traced(trace),
            config,
        });
    }
    if !cli.config.exists() {
        return Err(fail(
            2,
            "usage",
            format!(
                "no daemon to talk to: pass --api URL, set CUTOVER_API_URL, or give a config file with -c/CUTOVER_CONFIG ({} does not exist)",
                cli.config.display()
            ),
        ));
    }
    let cfg = load_config(&cli.config)?;
    let token = token.or_else(|| crate::daemon::client_token(&cfg));
    Ok(Target {
        client: client_for_config(&cfg, token).traced(trace),
        config: Some(cfg),
    })
}

/// The client for the daemon a config file describes: its `[api] listen`, over HTTPS
/// trusting `tls_ca_file` (else the system store) when the API serves TLS.
pub fn client_for_config(cfg: &Config, token: Option<String>) -> ApiClient {
    let client = ApiClient::new(cfg.api.listen, token);
    match &cfg.api.tls {
        Some(tls) => client.with_tls(&crate::tls::ClientTls {
            ca_file: tls.ca_file.clone(),
            ..Default::default()
        }),
        None => client,
    }
}

/// CI systems' variables naming the person who started the run, in the order they are
/// tried, with the prefix the actor gets (`github:octocat`).
pub const CI_ACTORS: [(&str, &str); 5] = [
    ("GITHUB_ACTOR", "github"),
    ("GITLAB_USER_LOGIN", "gitlab"),
    ("BUILDKITE_BUILD_CREATOR", "buildkite"),
    ("CIRCLE_USERNAME", "circleci"),
    ("BITBUCKET_STEP_TRIGGERER_UUID", "bitbucket"),
];

/// Who is asking: `--actor`/`CUTOVER_ACTOR` as given, else `<ci>:<login>` from a CI
/// variable, else `cli:<user>` from `USER`, `LOGNAME` or the uid's passwd entry, else
/// `cli:uid-<uid>`.
pub fn actor(given: Option<&str>) -> String {
    actor_from(given, &|k| std::env::var(k).ok())
}

fn actor_from(given: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> String {
    let set = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if let Some(a) = set(given.map(str::to_string)) {
        return a;
    }
    for (var, ci) in CI_ACTORS {
        if let Some(login) = set(env(var)) {
            return format!("{ci}:{login}");
        }
    }
    let user = set(env("USER"))
        .or_else(|| set(env("LOGNAME")))
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid-{}", nix::unistd::getuid()));
    format!("cli:{user}")
}

#[cfg(test)]
mod tests {
    use super::actor_from;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_flag_wins_then_ci_variables_then_the_os_user() {
        let all = [("GITHUB_ACTOR", "octocat"), ("USER", "alice")];
        assert_eq!(actor_from(Some("release-bot"), &env(&all)), "release-bot");
        assert_eq!(actor_from(None, &env(&all)), "github:octocat");
        assert_eq!(
            actor_from(
                None,
                &env(&[("GITLAB_USER_LOGIN", "gl"), ("USER", "alice")])
            ),
            "gitlab:gl"
        );
        assert_eq!(actor_from(None, &env(&[("USER", "alice")])), "cli:alice");
        assert_eq!(actor_from(None, &env(&[("LOGNAME", "bob")])), "cli:bob");
        assert_eq!(
            actor_from(Some("  "), &env(&[("USER", "alice")])),
            "cli:alice"
        );
    }

    #[test]
    fn with_no_variable_at_all_the_uid_names_the_user_never_unknown() {
        let a = actor_from(None, &env(&[]));
        assert!(
            a.starts_with("cli:") && a.len() > 4 && !a.contains("unknown"),
            "{a}"
        );
    }
}
