//! Thread-per-core serving: one OS thread per core, each with its own single-threaded
//! tokio runtime, its own `SO_REUSEPORT` listening socket per address (the kernel
//! spreads new connections across them) and its own upstream connection pool.
//!
//! Why: with one shared multi-threaded runtime, a connection's tasks hop between
//! worker threads and wake each other through futexes; the benchmark (BENCHMARKS.md)
//! showed that overhead. Here a connection lives and dies on one thread, like an nginx
//! worker. What the threads share is lock-free: the routing snapshot (`ArcSwap`), the
//! per-slot counters (atomics), the split counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::watch;

use super::{serve_with_grace, ListenerRoutes, Proxy};

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
        for (i, listeners) in bound.per_worker.into_iter().enumerate() {
            let proxy = proxy();
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("cutover-proxy-{i}"))
                .spawn(move || {
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
