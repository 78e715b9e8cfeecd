//! Test certificates made with the `openssl` CLI (a throw-away CA and leaves with
//! the names asked for), a TLS proxy on `127.0.0.1:0`, and the real TLS clients the
//! tests drive (`openssl s_client`, `curl`, `h2load`, Python's `ssl`).
//!
//! Include it with `#[path = "support/tls.rs"] mod tls;` (after the proxy harness).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use cutover::config::{CertificateFiles, Hsts, TlsListenerConfig};
use cutover::proxy::table::Routes;
use cutover::proxy::tls::TlsEdge;
use cutover::proxy::{serve_with_grace, ListenerRoutes, Proxy, ProxySettings};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A tool the tests need, or a failure saying what to install.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is missing: install the Debian package `{package}`"
    );
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Key algorithms for leaves.
#[derive(Clone, Copy)]
pub enum Key {
    EcdsaP256,
    Rsa2048,
}

/// A throw-away CA in `dir`, signing leaves.
pub struct Ca {
    pub dir: PathBuf,
    pub cert: PathBuf,
    key: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path) -> Ca {
        require("openssl", "openssl");
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "3",
                "-subj",
                "/CN=Cutover Test CA",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        Ca {
            dir: dir.to_path_buf(),
            cert,
            key,
        }
    }

    /// A leaf `<file>.pem`/`<file>.key` with common name `cn` and DNS names `sans`.
    pub fn leaf(&self, file: &str, cn: &str, sans: &[&str], key: Key) -> (PathBuf, PathBuf) {
        let (pem, keyf, csr, ext) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
            self.dir.join(format!("{file}.csr")),
            self.dir.join(format!("{file}.ext")),
        );
        let newkey: &[&str] = match key {
            Key::EcdsaP256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Key::Rsa2048 => &["-newkey", "rsa:2048"],
        };
        run(Command::new("openssl")
            .arg("req")
            .args(newkey)
            .args(["-nodes", "-subj", &format!("/CN={cn}"), "-keyout"])
            .arg(&keyf)
            .arg("-out")
            .arg(&csr));
        let names: Vec<String> = sans.iter().map(|s| format!("DNS:{s}")).collect();
        std::fs::write(&ext, format!("subjectAltName={}\n", names.join(","))).unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&self.cert)
            .arg("-CAkey")
            .arg(&self.key)
            .args(["-CAcreateserial", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&pem));
        (pem, keyf)
    }
}

pub fn files(pair: &(PathBuf, PathBuf)) -> CertificateFiles {
    CertificateFiles {
        cert: pair.0.clone(),
        key: pair.1.clone(),
        names: Vec::new(),
    }
}

/// default.test (ECDSA, listed first: the default), a.test (RSA), *.wild.test (ECDSA).
pub fn three_certs(dir: &Path) -> (Ca, Vec<CertificateFiles>) {
    let ca = Ca::new(dir);
    let d = ca.leaf("default", "default.test", &["default.test"], Key::EcdsaP256);
    let a = ca.leaf("a", "a.test", &["a.test"], Key::Rsa2048);
    let w = ca.leaf("wild", "wild", &["*.wild.test"], Key::EcdsaP256);
    (ca, vec![files(&d), files(&a), files(&w)])
}

/// A listener config for `listen` with these certificates and the defaults.
pub fn listener_config(listen: SocketAddr, certs: Vec<CertificateFiles>) -> TlsListenerConfig {
    TlsListenerConfig {
        listen,
        certificates: certs,
        refuse_unknown_sni: false,
        redirect_from: None,
        hsts: None,
        handshake_timeout: Duration::from_secs(10),
        http2: true,
        reload_interval: Duration::from_secs(10),
        tls13_tickets: cutover::config::DEFAULT_TLS13_TICKETS,
        acme: None,
    }
}

pub fn hsts_year() -> Hsts {
    Hsts {
        max_age: Duration::from_secs(31_536_000),
        include_subdomains: true,
        preload: false,
    }
}

/// A proxy serving TLS on `127.0.0.1:<free>` (and a redirect listener if the config
/// asks for one, on the address given there).
pub struct TlsProxy {
    pub addr: SocketAddr,
    pub edge: Arc<TlsEdge>,
    stops: Vec<oneshot::Sender<()>>,
}

impl TlsProxy {
    /// `config` gets the bound address as its `listen`.
    pub async fn start(
        routes: &Arc<Routes>,
        listener: ListenerRoutes,
        mut config: TlsListenerConfig,
        settings: ProxySettings,
    ) -> TlsProxy {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        config.listen = addr;
        let redirect = config.redirect_from;
        let edge = Arc::new(TlsEdge::from_config(&[config]).expect("certificates load"));
        let mut settings = settings;
        settings.tls = edge.clone();
        let proxy = Proxy::new(routes.clone(), settings);
        let mut stops = Vec::new();
        let mut sockets = vec![(tcp, listener)];
        if let Some(from) = redirect {
            sockets.push((
                TcpListener::bind(from).await.unwrap(),
                ListenerRoutes::default(),
            ));
        }
        for (tcp, routes) in sockets {
            let (stop, stopped) = oneshot::channel::<()>();
            let shutdown = async move {
                let _ = stopped.await;
            };
            tokio::spawn(serve_with_grace(
                proxy.clone(),
                tcp,
                routes,
                shutdown,
                Duration::from_secs(5),
            ));
            stops.push(stop);
        }
        TlsProxy { addr, edge, stops }
    }

    pub fn shutdown(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}

/// The subject line of the certificate served for `sni` (`None`: no SNI), or the
/// handshake's failure.
pub fn served_subject(addr: SocketAddr, sni: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()]);
    match sni {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .map(|l| l.to_string())
        .ok_or_else(|| {
            format!(
                "no certificate: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// `curl` against the proxy as `host`, trusting `ca`; returns the output.
pub fn curl(addr: SocketAddr, host: &str, ca: &Path, args: &[&str], path: &str) -> Output {
    require("curl", "curl");
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{}:127.0.0.1", addr.port()))
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .arg(format!("https://{host}:{}{path}", addr.port()))
        .output()
        .expect("run curl")
}

/// Runs a Python script with `python3 -c`, arguments after it.
pub fn python(script: &str, args: &[&str]) -> Output {
    require("python3", "python3");
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3")
}
