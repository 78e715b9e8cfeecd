//! Restarting or upgrading Cutover itself without failing a request: the listening
//! sockets are handed to the new daemon, never closed.
//!
//! Why sockets and not a second `SO_REUSEPORT` bind: the kernel gives every
//! `SO_REUSEPORT` socket its own accept queue, and the connections waiting in the old
//! daemon's queues are reset when it closes them. A socket handed over is the *same*
//! socket (one queue): nothing is queued twice and nothing is lost.
//!
//! The hand-over (on `SIGHUP`, see `daemon/mod.rs`):
//! 1. the old daemon stops its control plane (API, reaper, supervisor) and releases the
//!    state lock — only between deployments, so no runner is cut short;
//! 2. it starts the binary at the path it was started from (the new version after an
//!    upgrade) with the same arguments, passing every listening socket (proxy, API)
//!    and the write end of a pipe as inherited descriptors, described in
//!    [`ENV`];
//! 3. the new daemon takes the sockets instead of binding, waits for the state lock,
//!    restores routing from the store like any boot, starts serving on the same
//!    sockets, and writes `ready` to the pipe;
//! 4. the old daemon stops accepting, lets its in-flight requests finish (up to
//!    `drain_timeout`) and exits. Both accept from the same queue until then.
//!
//! If the new daemon does not report ready within [`READY_TIMEOUT`] (it failed to
//! start, the config is broken, ...), the old one kills it, takes its lock back and
//! resumes its control plane; traffic never stopped.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

/// The environment variable that describes inherited descriptors:
/// `ready=<fd>;api=<fd>;proxy=<addr>@<fd>,<addr>@<fd>,...` (one proxy socket per worker
/// per address, in worker order).
pub const ENV: &str = "CUTOVER_INHERITED_FDS";

/// How long the old daemon waits for the new one to serve.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Descriptors handed over by the daemon that started this one.
#[derive(Debug)]
pub struct Inherited {
    /// The API socket and the proxy's, `(address, socket)` in the order the old
    /// daemon's workers held them.
    pub sockets: Sockets,
    /// Where to say `ready`.
    pub ready: Ready,
}

/// The pipe back to the daemon that started this one.
#[derive(Debug)]
pub struct Ready(OwnedFd);

impl Inherited {
    /// Takes the descriptors named in [`ENV`], if it is set (and unsets it, so that
    /// releases started later do not see it).
    pub fn from_env() -> anyhow::Result<Option<Inherited>> {
        let Some(spec) = std::env::var_os(ENV) else {
            return Ok(None);
        };
        std::env::remove_var(ENV);
        let spec = spec.to_string_lossy().into_owned();
        let mut api = None;
        let mut ready = None;
        let mut proxy = Vec::new();
        for part in spec.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .with_context(|| format!("{ENV}: expected key=value, got `{part}`"))?;
            match key {
                "api" => api = Some(take_listener(parse_fd(value)?, None)?),
                "ready" => ready = Some(take_fd(parse_fd(value)?)?),
                "proxy" => {
                    for one in value.split(',').filter(|p| !p.is_empty()) {
                        let (addr, fd) = one
                            .rsplit_once('@')
                            .with_context(|| format!("{ENV}: expected addr@fd, got `{one}`"))?;
                        let addr: SocketAddr = addr
                            .parse()
                            .with_context(|| format!("{ENV}: bad address `{addr}`"))?;
                        proxy.push((addr, take_listener(parse_fd(fd)?, Some(addr))?));
                    }
                }
                other => bail!("{ENV}: unknown key `{other}`"),
            }
        }
        Ok(Some(Inherited {
            sockets: Sockets {
                api: api.with_context(|| format!("{ENV}: no api socket"))?,
                proxy,
            },
            ready: Ready(ready.with_context(|| format!("{ENV}: no ready pipe"))?),
        }))
    }
}

impl Ready {
    /// Tells the old daemon that this one serves now.
    pub fn signal(self) {
        let mut f = std::fs::File::from(self.0);
        let _ = std::io::Write::write_all(&mut f, b"ready\n");
    }
}

fn parse_fd(text: &str) -> anyhow::Result<RawFd> {
    text.parse::<RawFd>()
        .ok()
        .filter(|fd| *fd > 2)
        .with_context(|| format!("{ENV}: bad descriptor `{text}`"))
}

/// Owns an inherited descriptor and marks it close-on-exec again (releases this daemon
/// starts must not hold the proxy's sockets open).
#[allow(unsafe_code)]
fn take_fd(fd: RawFd) -> anyhow::Result<OwnedFd> {
    // Fails (EBADF) unless `fd` is open in this process.
    fcntl(fd, FcntlArg::F_GETFD).with_context(|| format!("{ENV}: descriptor {fd} is not open"))?;
    // SAFETY: `fd` is open (checked above); it was inherited from the daemon that
    // started this one, which passed it for this process alone, and `from_env` takes
    // each descriptor named in the variable once (the variable is unset first), so
    // nothing else in this process owns or closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(owned.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(owned)
}

/// An inherited listening socket, checked to be one (and on `expect`, when given).
fn take_listener(fd: RawFd, expect: Option<SocketAddr>) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::from(take_fd(fd)?);
    let local = listener
        .local_addr()
        .with_context(|| format!("{ENV}: descriptor {fd} is not a TCP socket"))?;
    if let Some(addr) = expect {
        if local != addr {
            bail!("{ENV}: descriptor {fd} listens on {local}, not {addr}");
        }
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Copies of this daemon's listening sockets, kept to hand over.
#[derive(Debug)]
pub struct Sockets {
    pub api: TcpListener,
    pub proxy: Vec<(SocketAddr, TcpListener)>,
}

impl Sockets {
    pub fn try_clone(&self) -> std::io::Result<Sockets> {
        Ok(Sockets {
            api: self.api.try_clone()?,
            proxy: self
                .proxy
                .iter()
                .map(|(a, l)| Ok((*a, l.try_clone()?)))
                .collect::<std::io::Result<_>>()?,
        })
    }
}

/// How this daemon was started, to start the next one the same way.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub exe: PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

impl Invocation {
    /// The binary's path (resolved now, before an upgrade replaces the file) and the
    /// arguments after it.
    pub fn current() -> std::io::Result<Invocation> {
        let exe = std::env::current_exe()?;
        Ok(Invocation {
            exe,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// A new daemon started with this one's sockets, not yet confirmed ready.
pub struct Successor {
    pub child: std::process::Child,
    ready: std::fs::File,
}

/// Starts the next daemon with `sockets` inherited (they are closed here once it has
/// them; pass copies).
pub fn spawn_successor(inv: &Invocation, sockets: Sockets) -> anyhow::Result<Successor> {
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create the hand-over pipe")?;
    // Inheritable only for the spawn below: no other process is started meanwhile (the
    // control plane is stopped), and the copies are closed right after it.
    let inheritable = |fd: RawFd| fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()));
    let mut spec = format!(
        "ready={};api={}",
        write_end.as_raw_fd(),
        sockets.api.as_raw_fd()
    );
    inheritable(write_end.as_raw_fd())?;
    inheritable(sockets.api.as_raw_fd())?;
    let proxy: Vec<String> = sockets
        .proxy
        .iter()
        .map(|(addr, l)| {
            inheritable(l.as_raw_fd())?;
            Ok(format!("{addr}@{}", l.as_raw_fd()))
        })
        .collect::<nix::Result<_>>()?;
    spec.push_str(";proxy=");
    spec.push_str(&proxy.join(","));
    let child = std::process::Command::new(&inv.exe)
        .args(&inv.args)
        .env(ENV, spec)
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", inv.exe.display()))?;
    drop(write_end);
    drop(sockets);
    Ok(Successor {
        child,
        ready: std::fs::File::from(read_end),
    })
}

impl Successor {
    /// Waits (on a blocking thread) for `ready` on the pipe. `false` when the new
    /// daemon exited (the pipe closed) or did not answer in time; it is then killed.
    pub async fn wait_ready(mut self) -> bool {
        let mut ready = self.ready;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 6];
            ready.read_exact(&mut buf).is_ok() && &buf == b"ready\n"
        });
        let ok = matches!(
            tokio::time::timeout(READY_TIMEOUT, read).await,
            Ok(Ok(true))
        );
        if !ok {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        ok
    }
}
