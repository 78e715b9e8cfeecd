//! `cutover serve`: wires the store, proxy, router, runtimes, controller and API
//! together, reconciles state from the store, then serves until SIGINT/SIGTERM.
//!
//! Order matters for crash safety: listeners are bound first (a busy port fails fast,
//! before anything is created), then the state directory's lock is taken (one daemon
//! per state directory, `state_lock.rs`), routing is restored from the store (`boot`)
//! before the proxy accepts a single request, and the proxy keeps serving while
//! deployments run.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
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

mod api_tls;
mod housekeeping;
mod state_lock;
pub mod upgrade;

pub use state_lock::{LockError, StateLock, LOCK_FILE};

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Stop every slot's release when the daemon exits (by default they keep running
    /// and are adopted by the next `serve`).
    pub stop_on_exit: bool,
    /// The TLS listeners' certificates, loaded (and checked) before anything starts.
    pub tls: Arc<proxy::tls::TlsEdge>,
}

/// Runs the daemon until a shutdown signal; on `SIGHUP`, hands its sockets to a new
/// daemon started from the same binary path (an upgrade or a restart) and exits once
/// that one serves (see `upgrade.rs`).
pub async fn serve(config: Config, opts: ServeOptions) -> anyhow::Result<()> {
    let limit = match state_lock::raise_open_file_limit() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            None
        }
    };
    let invocation = upgrade::Invocation::current();
    let inherited = upgrade::Inherited::from_env()?;
    let proxy_listeners = proxy::listeners_from_config(&config);
    if let Some(n) = limit {
        tracing::debug!(limit = n, "open-file limit");
        let max = config.proxy.edge.max_connections;
        if let Some(w) = state_lock::descriptor_shortfall(n, proxy_listeners.len(), max) {
            tracing::warn!("{w}");
        }
    }
    let (bound, api_std, ready) = match inherited {
        Some(inh) => {
            let bound = proxy::workers::Bound::from_sockets(&proxy_listeners, inh.sockets.proxy)
                .context("cannot take over the proxy's sockets")?;
            (bound, inh.sockets.api, Some(inh.ready))
        }
        None => {
            let (bound, api) = bind_all(&config, &proxy_listeners).await?;
            (bound, api, None)
        }
    };
    // Copies kept to hand over to a successor.
    let sockets = upgrade::Sockets {
        api: api_std.try_clone()?,
        proxy: bound.sockets()?,
    };

    // One daemon per state directory (see `state_lock.rs`). A successor waits for its
    // predecessor to let go.
    let state_dir = config.daemon.state_dir.clone();
    let lock = match ready {
        Some(_) => acquire_waiting(&state_dir, upgrade::READY_TIMEOUT).await?,
        None => StateLock::acquire(&state_dir)?,
    };
    let db_path = state_dir.join("cutover.db");
    let store = Arc::new(Store::open(&db_path)?);
    let token = Arc::new(api_token(&config, &state_dir)?);

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
    let upstream_tls = config
        .services
        .values()
        .filter_map(|svc| Some((svc.name.clone(), svc.upstream_tls.clone()?)))
        .collect();
    for place in config.insecure_tls_places() {
        tracing::warn!(
            "{place}: tls_insecure_skip_verify = true, any certificate is accepted (for tests only)"
        );
    }
    let router = Arc::new(
        BuiltinRouter::new(routes.clone(), stats.clone())
            .with_sticky(sticky)
            .with_upstream_tls(upstream_tls),
    );
    let runtimes = runtimes_from_config(&config, &state_dir)?;
    let routers = routers_from_config(&config, router)?;
    let mut settings = ProxySettings::from_config(&config.proxy);
    settings.tls = opts.tls.clone();
    let config = Arc::new(config);
    let controller = Controller::new(config.clone(), store.clone(), routers, runtimes.clone());
    controller
        .boot()
        .await
        .context("cannot restore state from the store")?;

    // One proxy per worker thread: each has its own upstream connection pool.
    let (stop_tx, stop_rx) = watch::channel(false);
    let proxy_workers = proxy::workers::Workers::start(
        bound,
        || Proxy::new(routes.clone(), settings.clone()),
        stop_rx,
        config.proxy.drain_timeout,
    )?;
    let mut registry = api::metrics::registry(stats, store.clone(), controller.switch_times());
    api::tls_metrics::register(&mut registry, opts.tls.clone());
    let registry = Arc::new(registry);
    let plane = ControlPlane {
        controller: controller.clone(),
        store: store.clone(),
        config: config.clone(),
        token,
        registry,
        api_guard: Arc::new(api::ApiGuard::new(&config.api)),
        tls: opts.tls.clone(),
    };
    let api_addr = api_std.local_addr()?;
    let mut running = Some(plane.start(api_std, lock)?);
    if let Some(ready) = ready {
        ready.signal();
        tracing::info!("took over from the previous daemon");
    }
    tracing::info!(api = %api_addr, services = config.services.len(), "cutover is serving");
    // For a person at the terminal, on stdout: stderr carries the log lines only, so
    // `--log-format json` stays one JSON object a line.
    let _ = writeln!(
        std::io::stdout(),
        "cutover: serving {} service(s); API on http://{api_addr}",
        config.services.len()
    );

    // Certificates follow their files; SIGUSR1 (not SIGHUP: that is the hand-over)
    // reloads them at once.
    let tls_reload = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(proxy::tls::reload::watch(
        opts.tls.clone(),
        tls_reload.clone(),
        stop_tx.subscribe(),
    ));
    // ACME certificates (issue 13): one task per `[proxy.tls.acme]`.
    for l in &config.proxy.edge.tls {
        if let (Some(acme), Some(store)) = (&l.acme, opts.tls.store(l.listen)) {
            let task = proxy::tls::acme::AcmeTask::new(
                acme.clone(),
                store,
                opts.tls.challenges().clone(),
                &state_dir,
            );
            tokio::spawn(task.run(stop_tx.subscribe()));
        }
    }
    let mut signals = Signals::new()?;
    let mut handed_over = false;
    loop {
        match signals.next().await {
            Received::Stop => break,
            Received::ReloadTls => tls_reload.notify_one(),
            Received::Upgrade => {
                if controller.deploying_any() {
                    tracing::error!("SIGHUP: a deployment is running; not handing over now (send SIGHUP again once it finished)");
                    continue;
                }
                tracing::info!("SIGHUP: handing the sockets to a new daemon");
                if let Some(r) = running.take() {
                    r.stop().await;
                }
                // A deployment the API accepted while it was stopping must finish here.
                if controller.deploying_any() {
                    tracing::error!("SIGHUP: a deployment began meanwhile; not handing over now (send SIGHUP again once it finished)");
                    let lock = StateLock::acquire(&state_dir)?;
                    running = Some(plane.start(sockets.api.try_clone()?, lock)?);
                    continue;
                }
                match hand_over(&invocation, &sockets).await {
                    Ok(()) => {
                        handed_over = true;
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "the new daemon did not take over; serving on");
                        let lock = StateLock::acquire(&state_dir)?;
                        running = Some(plane.start(sockets.api.try_clone()?, lock)?);
                    }
                }
            }
        }
    }
    tracing::info!(handed_over, "shutting down");
    if let Some(r) = running.take() {
        r.stop().await;
    }
    // Stop accepting; requests in flight finish (up to the drain timeout).
    let _ = stop_tx.send(true);
    drop(sockets);
    let _ = tokio::task::spawn_blocking(move || proxy_workers.join()).await;
    if opts.stop_on_exit && !handed_over {
        for (name, rt) in &runtimes {
            for slot in Slot::ALL {
                let _ = rt.stop(name, slot).await;
            }
        }
    }
    Ok(())
}

/// Binds the proxy's and the API's sockets (nothing is created before: a busy port
/// fails first).
async fn bind_all(
    config: &Config,
    proxy_listeners: &[(SocketAddr, proxy::ListenerRoutes)],
) -> anyhow::Result<(proxy::workers::Bound, std::net::TcpListener)> {
    let addrs = || {
        let addrs: Vec<String> = proxy_listeners.iter().map(|(a, _)| a.to_string()).collect();
        format!("cannot listen on {} for the proxy", addrs.join(", "))
    };
    // The proxy's sockets share their port (SO_REUSEPORT, one per worker), which would
    // let them join another process's listeners on the same port: check it is free.
    for (addr, _) in proxy_listeners {
        drop(std::net::TcpListener::bind(addr).with_context(addrs)?);
    }
    let workers = proxy::workers::default_workers();
    let bound = proxy::workers::bind(proxy_listeners, workers).with_context(addrs)?;
    let api = bind(config.api.listen, "API").await?.into_std()?;
    Ok((bound, api))
}

/// Takes the state lock once its holder (the daemon handing over) lets go.
async fn acquire_waiting(dir: &Path, within: Duration) -> anyhow::Result<StateLock> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match StateLock::acquire(dir) {
            Ok(lock) => return Ok(lock),
            Err(LockError::Held { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Starts a successor with copies of `sockets` and waits until it serves.
async fn hand_over(
    invocation: &std::io::Result<upgrade::Invocation>,
    sockets: &upgrade::Sockets,
) -> anyhow::Result<()> {
    let inv = invocation
        .as_ref()
        .map_err(|e| anyhow::anyhow!("cannot find this binary's path: {e}"))?;
    let successor = upgrade::spawn_successor(inv, sockets.try_clone()?)?;
    let pid = successor.child.id();
    if successor.wait_ready().await {
        tracing::info!(pid, "the new daemon serves; this one drains and exits");
        Ok(())
    } else {
        anyhow::bail!(
            "the new daemon (pid {pid}) did not report ready within {:?}",
            upgrade::READY_TIMEOUT
        )
    }
}

/// What the daemon needs to (re)start its control plane: the API, the standby reaper,
/// the supervisor and the state directory's guard.
struct ControlPlane {
    controller: Arc<Controller>,
    store: Arc<Store>,
    config: Arc<Config>,
    token: Arc<String>,
    registry: Arc<prometheus_client::registry::Registry>,
    /// Kept across restarts of the control plane (its failed-authentication lockouts).
    api_guard: Arc<api::ApiGuard>,
    tls: Arc<proxy::tls::TlsEdge>,
}

/// A running control plane; [`Running::stop`] ends it and releases the state lock.
struct Running {
    api_stop: watch::Sender<bool>,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
    reaper: tokio::task::JoinHandle<()>,
    supervisor: tokio::task::JoinHandle<()>,
    /// Holds the state lock.
    guard: tokio::task::JoinHandle<()>,
    /// Retention and slot log rotation.
    housekeeping: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    fn start(
        &self,
        api_listener: std::net::TcpListener,
        lock: StateLock,
    ) -> anyhow::Result<Running> {
        api_listener.set_nonblocking(true)?;
        let api_listener = TcpListener::from_std(api_listener)?;
        let (api_stop, api_stop_rx) = watch::channel(false);
        let state = ApiState {
            controller: self.controller.clone(),
            token: self.token.clone(),
            registry: self.registry.clone(),
            stop: api_stop_rx.clone(),
            guard: self.api_guard.clone(),
            tls: self.tls.clone(),
        };
        let app = api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let mut rx = api_stop_rx;
        let stopped = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let api = match &self.config.api.tls {
            None => tokio::spawn(async move {
                axum::serve(api_listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }),
            Some(tls) => {
                let config =
                    crate::tls::server_config(&tls.cert_file, &tls.key_file, &[b"http/1.1"])
                        .context("[api] tls_cert_file/tls_key_file")?;
                // `tap_io` only for axum's `ConnectInfo<SocketAddr>`, which it provides
                // for tapped listeners.
                let listener = api_tls::TlsListener::new(api_listener, config)?.tap_io(|_| {});
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await
                })
            }
        };
        Ok(Running {
            api_stop,
            api,
            reaper: tokio::spawn(self.controller.clone().reap_standby(Duration::from_secs(1))),
            supervisor: tokio::spawn(self.controller.clone().supervise()),
            guard: tokio::spawn(guard_state_dir(
                lock,
                self.store.clone(),
                self.config.clone(),
            )),
            housekeeping: tokio::spawn(housekeeping::run(self.store.clone(), self.config.clone())),
        })
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.api_stop.send(true);
        let _ = self.api.await;
        self.reaper.abort();
        self.supervisor.abort();
        self.guard.abort();
        self.housekeeping.abort();
        // Dropping the guard's future releases the lock.
        let _ = self.guard.await;
        let _ = self.supervisor.await;
        let _ = self.reaper.await;
    }
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
        let _ = writeln!(std::io::stdout(), "cutover: ERROR: the state directory {shown} was removed while the daemon runs; writing its state back");
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

/// What the daemon was told to do.
enum Received {
    /// SIGINT or SIGTERM: drain and exit.
    Stop,
    /// SIGHUP: hand the sockets to a new daemon, then drain and exit.
    Upgrade,
    /// SIGUSR1: reload the TLS certificates from their files.
    ReloadTls,
}

/// The signals the daemon acts on, registered once (so none is missed between waits).
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    async fn next(&mut self) -> Received {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Received::Stop,
            _ = self.term.recv() => Received::Stop,
            _ = self.hup.recv() => Received::Upgrade,
            _ = self.usr1.recv() => Received::ReloadTls,
        }
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
