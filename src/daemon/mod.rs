//! `cutover serve`: wires the store, proxy, router, runtimes, controller and API
//! together, reconciles state from the store, then serves until SIGINT/SIGTERM.
//!
//! Order matters for crash safety: listeners are bound first (a busy port fails fast,
//! before anything is created), then the state directory's lock is taken (one daemon
//! per state directory, `state_lock.rs`), routing is restored from the store (`boot`)
//! before the proxy accepts a single request, and the proxy keeps serving while
//! deployments run.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::domain::Slot;
use crate::orchestrator::Controller;
use crate::proxy::table::{Routes, StatsRegistry};
use crate::proxy::{self, Proxy, ProxySettings};
use crate::router::builtin::BuiltinRouter;
use crate::router::routers_from_config;
use crate::runtime::runtimes_from_config;
use crate::store::Store;

mod state_lock;

pub use state_lock::{LockError, StateLock, LOCK_FILE};

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Stop every slot's release when the daemon exits (by default they keep running
    /// and are adopted by the next `serve`).
    pub stop_on_exit: bool,
}

/// Runs the daemon until a shutdown signal.
pub async fn serve(config: Config, opts: ServeOptions) -> anyhow::Result<()> {
    match state_lock::raise_open_file_limit() {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    // Bind everything first: a busy port is reported before anything is created.
    let proxy_listeners = proxy::listeners_from_config(&config);
    let addrs = || {
        let addrs: Vec<String> = proxy_listeners.iter().map(|(a, _)| a.to_string()).collect();
        format!("cannot listen on {} for the proxy", addrs.join(", "))
    };
    // The proxy's sockets share their port (SO_REUSEPORT, one per worker), which would
    // let them join another process's listeners on the same port: check it is free.
    for (addr, _) in &proxy_listeners {
        drop(std::net::TcpListener::bind(addr).with_context(addrs)?);
    }
    let workers = proxy::workers::default_workers();
    let bound = proxy::workers::bind(&proxy_listeners, workers).with_context(addrs)?;
    let api_listener = bind(config.api.listen, "API").await?;

    // One daemon per state directory (see `state_lock.rs`).
    let state_dir = config.daemon.state_dir.clone();
    let lock = StateLock::acquire(&state_dir)?;
    let db_path = state_dir.join("cutover.db");
    let store = Arc::new(Store::open(&db_path)?);
    let token = api_token(&config, &state_dir)?;

    let names: Vec<&str> = config.services.keys().map(String::as_str).collect();
    let stats = Arc::new(StatsRegistry::new(names));
    let routes = Arc::new(Routes::new());
    // Sticky sessions for canary splits unless a service turns them off.
    let sticky = config
        .services
        .values()
        .map(|svc| {
            let on = match &svc.strategy {
                crate::config::Strategy::Canary(c) => c.sticky,
                crate::config::Strategy::BlueGreen => true,
            };
            (svc.name.clone(), on)
        })
        .collect();
    let router = Arc::new(BuiltinRouter::new(routes.clone(), stats.clone()).with_sticky(sticky));
    let runtimes = runtimes_from_config(&config, &state_dir)?;
    let routers = routers_from_config(&config, router)?;
    let settings = ProxySettings::from_config(&config.proxy);
    let config = Arc::new(config);
    let controller = Controller::new(config.clone(), store.clone(), routers, runtimes.clone());
    controller
        .boot()
        .await
        .context("cannot restore state from the store")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_rx_for_workers = stop_rx.clone();
    let stop_rx_for_api = stop_rx.clone();
    let shutdown = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    // One proxy per worker thread: each has its own upstream connection pool.
    let proxy_workers = proxy::workers::Workers::start(
        bound,
        || Proxy::new(routes.clone(), settings.clone()),
        stop_rx_for_workers,
        config.proxy.drain_timeout,
    )?;
    let state = ApiState {
        controller: controller.clone(),
        token: Arc::new(token),
        registry: Arc::new(api::metrics::registry(
            stats,
            store.clone(),
            controller.switch_times(),
        )),
        stop: stop_rx_for_api,
        guard: Arc::new(api::ApiGuard::new(&config.api)),
    };
    let api_addr = api_listener.local_addr()?;
    let api_task = tokio::spawn({
        let shutdown = shutdown();
        async move {
            axum::serve(
                api_listener,
                api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    });
    let reaper = tokio::spawn(controller.clone().reap_standby(Duration::from_secs(1)));
    let guard = tokio::spawn(guard_state_dir(lock, store.clone(), config.clone()));
    tracing::info!(api = %api_addr, services = config.services.len(), "cutover is serving");
    eprintln!(
        "cutover: serving {} service(s); API on http://{api_addr}",
        config.services.len()
    );

    wait_for_signal().await;
    tracing::info!("shutting down");
    reaper.abort();
    guard.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || proxy_workers.join()).await;
    let _ = api_task.await;
    if opts.stop_on_exit {
        for (name, rt) in &runtimes {
            for slot in Slot::ALL {
                let _ = rt.stop(name, slot).await;
            }
        }
    }
    Ok(())
}

/// Watches the state directory: if it is removed (or its lock file replaced) while
/// the daemon runs, says so loudly, recreates it, takes its lock again and writes the
/// store (still open, on the removed file) back, so that a restart still finds the live
/// release and adopts the running ones instead of orphaning them.
async fn guard_state_dir(mut lock: StateLock, store: Arc<Store>, config: Arc<Config>) {
    let dir = config.daemon.state_dir.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        if lock.still_in_place() {
            continue;
        }
        let shown = dir.display();
        tracing::error!(state_dir = %shown, "the state directory was removed while the daemon runs; writing its state back");
        eprintln!("cutover: ERROR: the state directory {shown} was removed while the daemon runs; writing its state back");
        let restored = StateLock::acquire(&dir)
            .map_err(anyhow::Error::from)
            .and_then(|new_lock| {
                lock = new_lock;
                store.relocate(&dir.join("cutover.db"))?;
                api_token(&config, &dir)?;
                Ok(())
            });
        match restored {
            Ok(()) => {
                let msg = format!(
                    "the state directory {shown} was removed; the daemon wrote its state back"
                );
                for name in config.services.keys() {
                    let _ = store.append_event(
                        name,
                        None,
                        "state_restored",
                        &msg,
                        None,
                        crate::domain::now_ms(),
                    );
                }
                tracing::warn!(state_dir = %shown, "state written back");
            }
            Err(e) => {
                tracing::error!(state_dir = %shown, error = %format!("{e:#}"), "cannot write the state back; retrying");
            }
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// The token mutating API calls need: from the config or its env var, else the one in
/// `<state_dir>/api-token`, generated (mode 0600) on first start.
/// 32 characters from A-Z a-z 0-9, from the operating system's secure random source
/// (about 190 bits).
fn random_token() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut token = String::with_capacity(32);
    while token.len() < 32 {
        let mut bytes = [0u8; 64];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
        // 248 = 4 * 62: rejecting the rest keeps every character equally likely.
        for b in bytes.iter().filter(|b| **b < 248) {
            if token.len() < 32 {
                token.push(char::from(ALPHABET[usize::from(*b) % 62]));
            }
        }
    }
    Ok(token)
}

pub fn api_token(config: &Config, state_dir: &Path) -> anyhow::Result<String> {
    if let Some(t) = &config.api.token {
        return Ok(t.clone());
    }
    let path = state_dir.join("api-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = random_token()?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    Ok(token)
}

/// The token the CLI sends: the config's (or its env var's), else the daemon's file.
pub fn client_token(config: &Config) -> Option<String> {
    config.api.token.clone().or_else(|| {
        std::fs::read_to_string(config.daemon.state_dir.join("api-token"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    })
}

#[cfg(test)]
mod token_tests {
    #[test]
    fn a_generated_token_is_32_alphanumerics_from_the_os_random_source() {
        let (a, b) = (
            super::random_token().unwrap(),
            super::random_token().unwrap(),
        );
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }
}
