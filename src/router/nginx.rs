//! nginx as a [`Router`](super::Router): Cutover owns one include file and nothing else.
//!
//! The file holds the service's `upstream` block (one server, or two with `weight=`
//! for a canary split) and a small verification `server` on a loopback address that
//! proxies to that upstream and names the upstream that answered
//! (`X-Cutover-Upstream: $upstream_addr`). Why a server of our own: the user's server
//! blocks stay untouched, and "nginx routes to the new slot" becomes a fact we can ask
//! nginx itself after the reload, instead of trusting that a `SIGHUP` worked.
//!
//! A change is: render → swap the file in (the old one kept as `<file>.prev`) → `nginx
//! -t` on the full configuration → reload → ask the verification server until the new
//! slot answers. A failed test puts the old file back before nginx ever loads anything;
//! a failed reload or verification puts it back and reloads again. Either way the
//! deployment fails before the switch and traffic stays where it was.
//!
//! What nginx cannot do here: report per-slot statistics (open-source nginx has no
//! per-upstream counters, so the watch's error-rate and latency triggers see nothing;
//! health checks and exits still roll back), or report in-flight requests (the drain
//! is a fixed grace). The preview header is not routed: checks reach the new slot at
//! its own address, and nothing about nginx changes before the switch.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;

use super::external::{read_or_empty, run, with_suffix, write_atomic, External};
use super::RouterError;
use crate::checks::http::{send, ProbeRequest};
use crate::config::NginxRouterConfig;
use crate::domain::endpoint::Endpoint;
use crate::domain::routing::Target;
use crate::domain::Slot;

/// The response header the verification server sets.
pub const UPSTREAM_HEADER: &str = "x-cutover-upstream";

pub struct NginxRouter {
    service: String,
    config: NginxRouterConfig,
    /// One change at a time: the file, the test and the reload are one transaction.
    lock: tokio::sync::Mutex<()>,
}

impl NginxRouter {
    pub fn new(service: &str, config: NginxRouterConfig) -> Self {
        NginxRouter {
            service: service.to_string(),
            config,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The include file for these servers: `(target, weight)`, weight `None` when only
    /// one server is rendered.
    pub fn render(&self, servers: &[(Target, u32)]) -> String {
        let c = &self.config;
        let mut out = format!(
            "# Managed by Cutover for service `{}`: rewritten on every switch (the previous\n\
             # version is kept next to it as .prev). Do not edit by hand.\n",
            self.service
        );
        for (t, w) in servers {
            out.push_str(&format!(
                "# cutover-slot {} {} {w} {}\n",
                t.slot, t.endpoint, t.identity
            ));
        }
        out.push_str(&format!("upstream {} {{\n", c.upstream));
        for (t, w) in servers {
            let weight = if servers.len() > 1 {
                format!(" weight={w}")
            } else {
                String::new()
            };
            // max_fails=0: a slot is never taken out by nginx's passive checks; Cutover
            // decides where traffic goes.
            out.push_str(&format!(
                "    server {}{weight} max_fails=0;  # {}\n",
                t.endpoint, t.slot
            ));
        }
        if c.keepalive > 0 {
            out.push_str(&format!("    keepalive {};\n", c.keepalive));
        }
        out.push_str("}\n");
        out.push_str(&format!(
            "server {{\n    listen {};\n    access_log off;\n    location / {{\n        \
             proxy_pass http://{};\n        proxy_http_version 1.1;\n        \
             proxy_set_header Connection \"\";\n        \
             add_header X-Cutover-Upstream $upstream_addr always;\n    }}\n}}\n",
            c.verify_listen, c.upstream
        ));
        out
    }

    /// Installs `text` and makes nginx run it; on any failure the previous file is back
    /// (and loaded again if a reload had happened).
    async fn install_text(&self, text: &str, expect: &[SocketAddr]) -> Result<(), RouterError> {
        let c = &self.config;
        let _guard = self.lock.lock().await;
        let previous = read_or_empty(&c.include)?;
        if previous == text {
            return Ok(());
        }
        let prev_path = with_suffix(&c.include, ".prev");
        write_atomic(&prev_path, &previous)?;
        write_atomic(&c.include, text)?;
        if let Err(e) = run(&c.test_command, c.timeout).await {
            write_atomic(&c.include, &previous)?;
            return Err(nginx_said("the new configuration failed the test", e));
        }
        let loaded = match run(&c.reload_command, c.timeout).await {
            Ok(_) => self.verify(expect).await,
            Err(e) => Err(nginx_said("the reload failed", e)),
        };
        if let Err(e) = loaded {
            write_atomic(&c.include, &previous)?;
            // Best effort: nginx may already run the new file.
            let _ = run(&c.reload_command, c.timeout).await;
            return Err(e);
        }
        Ok(())
    }

    /// Asks nginx, on fresh connections, until the answering upstream is one of
    /// `expect` three times in a row (old workers may still answer right after a
    /// reload).
    async fn verify(&self, expect: &[SocketAddr]) -> Result<(), RouterError> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let mut streak = 0;
        let mut last = String::from("no answer yet");
        while tokio::time::Instant::now() < deadline {
            match self.ask().await {
                Ok(Some(addr)) if expect.contains(&addr) => {
                    streak += 1;
                    if streak >= 3 {
                        return Ok(());
                    }
                    continue;
                }
                Ok(other) => {
                    last = format!(
                        "answered by {}",
                        other.map_or("-".into(), |a| a.to_string())
                    )
                }
                Err(e) => last = e,
            }
            streak = 0;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(RouterError::Rejected(format!(
            "nginx did not route to {} within {:?} after the reload (verification server {}: {last})",
            expect.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" or "),
            self.config.timeout,
            self.config.verify_listen
        )))
    }

    /// The upstream address nginx used for one request through the verification server.
    async fn ask(&self) -> Result<Option<SocketAddr>, String> {
        let c = &self.config;
        let resp = send(
            c.verify_listen,
            ProbeRequest::get(c.verify_path.clone()),
            Duration::from_secs(2),
        )
        .await
        .map_err(|e| e.to_string())?;
        let header = resp
            .headers
            .get(UPSTREAM_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // With retries nginx lists every upstream tried ("a, b"); the last answered.
        Ok(header
            .rsplit([',', ' '])
            .find(|s| !s.is_empty())
            .and_then(|s| s.parse().ok()))
    }

    /// Slot → endpoint as written in the current file.
    fn slots_in_file(&self) -> Result<Vec<(Slot, Endpoint)>, RouterError> {
        let text = read_or_empty(&self.config.include)?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("# cutover-slot ")?.split_whitespace();
                let slot = match w.next()? {
                    "blue" => Slot::Blue,
                    "green" => Slot::Green,
                    _ => return None,
                };
                Some((slot, w.next()?.parse().ok()?))
            })
            .collect())
    }
}

fn nginx_said(what: &str, e: RouterError) -> RouterError {
    match e {
        RouterError::Rejected(m) => RouterError::Rejected(format!("nginx: {what}: {m}")),
        RouterError::Unreachable(m) => RouterError::Unreachable(format!("nginx: {what}: {m}")),
        other => other,
    }
}

#[async_trait]
impl External for NginxRouter {
    const KIND: &'static str = "nginx";

    fn service(&self) -> &str {
        &self.service
    }

    fn full_weight(&self) -> u32 {
        1
    }

    /// Renders the include for `servers`, installs it and checks nginx answers from them.
    /// A host name is written as is (nginx resolves it when it loads the file); the
    /// verification expects any of its addresses now.
    async fn install(&self, servers: &[(Target, u32)]) -> Result<(), RouterError> {
        let mut expect: Vec<SocketAddr> = Vec::new();
        for (t, _) in servers {
            let addrs = t.endpoint.resolve().await.map_err(|e| {
                RouterError::Rejected(format!("nginx: the {} slot's {}: {e}", t.slot, t.endpoint))
            })?;
            expect.extend(addrs);
        }
        self.install_text(&self.render(servers), &expect).await
    }

    async fn observed(&self) -> Result<Option<Slot>, RouterError> {
        let addr = self.ask().await.map_err(|e| {
            RouterError::Unreachable(format!(
                "nginx verification server {}: {e}",
                self.config.verify_listen
            ))
        })?;
        let Some(addr) = addr else { return Ok(None) };
        for (slot, endpoint) in self.slots_in_file()? {
            if endpoint
                .resolve()
                .await
                .is_ok_and(|all| all.contains(&addr))
            {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// nginx does not report in-flight requests per upstream server.
    async fn in_flight(&self, _slot: Slot) -> Result<Option<u64>, RouterError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn router() -> NginxRouter {
        NginxRouter::new(
            "web",
            NginxRouterConfig {
                include: PathBuf::from("/nonexistent/web.conf"),
                upstream: "web_up".into(),
                test_command: vec!["nginx".into(), "-t".into()],
                reload_command: vec!["nginx".into(), "-s".into(), "reload".into()],
                verify_listen: "127.0.0.1:8099".parse().unwrap(),
                verify_path: "/".into(),
                timeout: Duration::from_secs(1),
                keepalive: 8,
            },
        )
    }

    fn t(slot: Slot, port: u16) -> Target {
        Target::new("web", slot, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn a_host_name_is_rendered_as_is_with_the_slot_identity() {
        let target = Target {
            slot: Slot::Blue,
            endpoint: "web-blue.prod.svc.cluster.local:8080".parse().unwrap(),
            identity: "web-blue".into(),
        };
        let text = router().render(&[(target, 1)]);
        assert!(
            text.contains("    server web-blue.prod.svc.cluster.local:8080 max_fails=0;  # blue\n"),
            "{text}"
        );
        assert!(
            text.contains("# cutover-slot blue web-blue.prod.svc.cluster.local:8080 1 web-blue\n"),
            "{text}"
        );
    }

    #[test]
    fn one_live_slot_renders_one_server_without_weight() {
        let text = router().render(&[(t(Slot::Green, 4001), 1)]);
        assert!(text.contains("upstream web_up {\n    server 127.0.0.1:4001 max_fails=0;  # green\n    keepalive 8;\n}"), "{text}");
        assert!(text.contains("listen 127.0.0.1:8099;"), "{text}");
        assert!(text.contains("add_header X-Cutover-Upstream $upstream_addr always;"));
    }

    #[test]
    fn a_canary_split_renders_weights_that_add_up_to_one_hundred() {
        let text = router().render(&[(t(Slot::Blue, 4000), 90), (t(Slot::Green, 4001), 10)]);
        assert!(
            text.contains("server 127.0.0.1:4000 weight=90 max_fails=0;  # blue"),
            "{text}"
        );
        assert!(
            text.contains("server 127.0.0.1:4001 weight=10 max_fails=0;  # green"),
            "{text}"
        );
    }
}
