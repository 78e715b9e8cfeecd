//! Thread-per-core serving: one OS thread per core, each with its own single-threaded
//! tokio runtime, its own `SO_REUSEPORT` listening socket per address (the kernel
//! spreads new connections across them) and its own upstream connection pool.
//!
//! Why: with one shared multi-threaded runtime, a connection's tasks hop between
//! worker threads and wake each other through futexes; the benchmark (BENCHMARKS.md)
//! showed that overhead. Here a connection lives and dies on one thread, like an nginx
//! worker. What the threads share is lock-free: the routing snapshot (`ArcSwap`), the
//! per-slot counters (atomics), the split counters.
//!
//! Workers are not pinned to CPUs by default. On the benchmark machine (two cores
//! shared by the load generator, the proxy and the backend) pinned workers left CPU
//! time idle whenever a worker's own CPU was busy with another process while the other
//! CPU had nothing to run: one set of alternating runs gave 44.2k req/s pinned against
//! 46.9k unpinned, with 1.8 % against 0.8 % of CPU time idle; other sets flipped the
//! order, within that machine's ±15 % noise (BENCHMARKS.md). On a machine
//! where the proxy has its cores to itself, `CUTOVER_PROXY_PIN=1` pins worker `i` to
//! the `i`-th allowed CPU when there is exactly one worker per allowed CPU (nginx's
//! `worker_cpu_affinity auto`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::watch;

use super::{serve_with_grace, ListenerRoutes, Proxy};

/// What each worker thread runs once a [`TIDY_EVERY`] (none unless set): the binary's
/// allocator returning the memory of a busy period that ended (`src/main.rs`). The
/// library does not choose the allocator; the binary does and says how to tidy it.
static TIDY: OnceLock<fn()> = OnceLock::new();

/// How often a worker runs the tidy hook: often enough that memory freed when
/// connections go idle is returned within about a second, rarely enough to cost
/// nothing (one wake-up per second per worker; the hook walks only that thread's heap).
pub const TIDY_EVERY: Duration = Duration::from_secs(1);

/// Sets the hook every proxy worker thread runs once a [`TIDY_EVERY`]; the first call
/// wins. `CUTOVER_ALLOC_TIDY=0` leaves it unset (a benchmark setting, to measure it;
/// the workers still drop their spare buffers).
pub fn set_tidy(hook: fn()) {
    if std::env::var("CUTOVER_ALLOC_TIDY").as_deref() != Ok("0") {
        let _ = TIDY.set(hook);
    }
}

/// For the daemon's other threads (the control plane's runtime calls it whenever one
/// of its threads goes idle): runs the tidy hook, at most once a [`TIDY_EVERY`] per
/// thread, so memory freed there (start-up, API calls) goes back too.
pub fn tidy_on_park() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> =
            const { std::cell::Cell::new(None) };
    }
    let Some(hook) = TIDY.get().copied() else {
        return;
    };
    let now = std::time::Instant::now();
    let due = LAST.with(|last| {
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= TIDY_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        hook();
    }
}

/// The worker's tidy loop: the thread's spare buffers go (`h1::pool::trim`), then the
/// hook (see [`set_tidy`]) runs.
async fn tidy_loop() {
    let hook = TIDY.get().copied();
    let mut every = tokio::time::interval(TIDY_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        super::h1::pool::trim();
        super::h1::spare::sweep();
        if let Some(hook) = hook {
            hook();
        }
    }
}

/// Listening sockets bound for every worker: `bound[worker]` holds one socket per
/// address.
pub struct Bound {
    per_worker: Vec<Vec<(std::net::TcpListener, ListenerRoutes)>>,
}

/// How many proxy workers to run: `CUTOVER_PROXY_WORKERS` if set, else one per core.
pub fn default_workers() -> usize {
    std::env::var("CUTOVER_PROXY_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The CPU each worker is pinned to: one per allowed CPU when pinning is turned on
/// (`CUTOVER_PROXY_PIN=1`) and there are exactly as many workers as CPUs this process
/// may run on; else none.
fn pinning(workers: usize) -> Vec<Option<usize>> {
    let on = matches!(
        std::env::var("CUTOVER_PROXY_PIN").as_deref(),
        Ok("1" | "on" | "true")
    );
    let allowed: Vec<usize> = match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    };
    plan_pinning(workers, allowed, on)
}

fn plan_pinning(workers: usize, allowed: Vec<usize>, on: bool) -> Vec<Option<usize>> {
    if !on || allowed.len() != workers || workers < 2 {
        return vec![None; workers];
    }
    allowed.into_iter().map(Some).collect()
}

/// Pins the calling thread to `cpu`; a refusal is logged and serving goes on.
fn pin_current_thread(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(e) = pinned {
        tracing::warn!(cpu, error = %e, "cannot pin a proxy worker to its CPU");
    }
}

/// Binds `workers` sockets per address with `SO_REUSEPORT`. Call from inside a tokio
/// runtime. A port held by another program fails here, before anything else starts.
pub fn bind(listeners: &[(SocketAddr, ListenerRoutes)], workers: usize) -> std::io::Result<Bound> {
    let mut per_worker = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let mut mine = Vec::with_capacity(listeners.len());
        for (addr, routes) in listeners {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.set_nodelay(true)?;
            socket.bind(*addr)?;
            let listener = socket.listen(1024)?.into_std()?;
            mine.push((listener, routes.clone()));
        }
        per_worker.push(mine);
    }
    Ok(Bound { per_worker })
}

impl Bound {
    /// Sockets already bound elsewhere (handed over by a previous daemon): `per_worker`
    /// holds, for each worker, one socket per listener in `listeners` order.
    pub fn from_sockets(
        listeners: &[(SocketAddr, ListenerRoutes)],
        sockets: Vec<(SocketAddr, std::net::TcpListener)>,
    ) -> std::io::Result<Bound> {
        let per = listeners.len().max(1);
        if !sockets.len().is_multiple_of(per) || sockets.is_empty() != listeners.is_empty() {
            return Err(std::io::Error::other(format!(
                "{} inherited proxy sockets do not fit {} listener(s)",
                sockets.len(),
                listeners.len()
            )));
        }
        let mut per_worker: Vec<Vec<(std::net::TcpListener, ListenerRoutes)>> = Vec::new();
        for (i, (addr, socket)) in sockets.into_iter().enumerate() {
            let (want, routes) = &listeners[i % per];
            if addr != *want {
                return Err(std::io::Error::other(format!(
                    "inherited proxy socket {addr} where the config listens on {want}"
                )));
            }
            if i % per == 0 {
                per_worker.push(Vec::new());
            }
            if let Some(worker) = per_worker.last_mut() {
                worker.push((socket, routes.clone()));
            }
        }
        Ok(Bound { per_worker })
    }

    /// Copies of every socket, worker by worker in listener order (the order
    /// [`Bound::from_sockets`] reads), to hand to a successor daemon.
    pub fn sockets(&self) -> std::io::Result<Vec<(SocketAddr, std::net::TcpListener)>> {
        let mut out = Vec::new();
        for worker in &self.per_worker {
            for (socket, _) in worker {
                out.push((socket.local_addr()?, socket.try_clone()?));
            }
        }
        Ok(out)
    }
}

/// Running proxy workers.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts one thread per bound worker; each serves until `stop` turns true, then
    /// lets open requests finish for at most `grace`.
    pub fn start(
        bound: Bound,
        proxy: impl Fn() -> Arc<Proxy>,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> std::io::Result<Workers> {
        let mut threads = Vec::new();
        let cpus = pinning(bound.per_worker.len());
        for (i, listeners) in bound.per_worker.into_iter().enumerate() {
            let proxy = proxy();
            let stop = stop.clone();
            let cpu = cpus.get(i).copied().flatten();
            let thread = std::thread::Builder::new()
                .name(format!("cutover-proxy-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        pin_current_thread(cpu);
                    }
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start a proxy worker");
                            return;
                        }
                    };
                    // Ends with the runtime, when the listeners below are done.
                    rt.spawn(tidy_loop());
                    rt.block_on(async move {
                        let mut tasks = Vec::new();
                        for (std_listener, routes) in listeners {
                            let listener = match tokio::net::TcpListener::from_std(std_listener) {
                                Ok(l) => l,
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot adopt a listening socket");
                                    continue;
                                }
                            };
                            let mut stop = stop.clone();
                            let shutdown = async move {
                                let _ = stop.wait_for(|s| *s).await;
                            };
                            tasks.push(tokio::spawn(serve_with_grace(
                                proxy.clone(),
                                listener,
                                routes,
                                shutdown,
                                grace,
                            )));
                        }
                        for t in tasks {
                            let _ = t.await;
                        }
                    });
                })?;
            threads.push(thread);
        }
        Ok(Workers { threads })
    }

    /// Waits for every worker to finish (after the stop signal).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static TIDIED_ON_WORKERS: AtomicUsize = AtomicUsize::new(0);

    fn count_if_worker() {
        let name = std::thread::current().name().map(str::to_owned);
        if name.is_some_and(|n| n.starts_with("cutover-proxy-")) {
            TIDIED_ON_WORKERS.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_worker_thread_runs_the_tidy_hook_again_and_again_until_it_stops() {
        set_tidy(count_if_worker);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let routes = ListenerRoutes {
            by_host: Default::default(),
            default: None,
            preview_only: false,
        };
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let bound = rt.block_on(async { bind(&[(addr, routes)], 2) }).unwrap();
        let table = Arc::new(crate::proxy::table::Routes::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let workers = Workers::start(
            bound,
            || Proxy::new(table.clone(), Default::default()),
            stop_rx,
            Duration::from_secs(1),
        )
        .unwrap();
        // Two workers, each at once and then once a second: at least 4 within 5 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TIDIED_ON_WORKERS.load(Ordering::SeqCst) < 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = stop_tx.send(true);
        workers.join();
        let seen = TIDIED_ON_WORKERS.load(Ordering::SeqCst);
        assert!(seen >= 4, "the hook ran {seen} times on the workers");
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            TIDIED_ON_WORKERS.load(Ordering::SeqCst),
            seen,
            "a stopped worker no longer runs it"
        );
    }

    #[test]
    fn workers_are_pinned_only_when_asked_and_exactly_one_per_allowed_cpu() {
        assert_eq!(plan_pinning(2, vec![2, 5], true), [Some(2), Some(5)]);
        assert_eq!(
            plan_pinning(2, vec![2, 5], false),
            [None, None],
            "not asked for: the default"
        );
        assert_eq!(
            plan_pinning(1, vec![0, 1], true),
            [None],
            "fewer workers than CPUs"
        );
        assert_eq!(
            plan_pinning(3, vec![0, 1], true),
            [None; 3],
            "more workers than CPUs"
        );
        assert_eq!(
            plan_pinning(1, vec![0], true),
            [None],
            "one CPU: nothing to place"
        );
    }
}
