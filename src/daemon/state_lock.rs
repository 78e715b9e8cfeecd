//! The state directory's lock: one daemon per state directory, for as long as it runs.
//!
//! Why: two daemons on one state directory share one store. Without a lock the second
//! one's boot reconciliation took over the first one's running deployment (marked it
//! interrupted, stopped its release) and then ran its own. The store's unique index
//! keeps one deployment per service *row*, but it cannot tell a crashed daemon from a
//! live one; an OS lock can: it is released when its holder dies, however it dies, so
//! a restart after `kill -9` takes it at once.
//!
//! The lock is `flock`-style (`File::try_lock`) on `<state_dir>/cutover.lock`, which
//! holds the holder's pid for the error message. The file is never deleted: deleting a
//! lock file while another process waits on it is how two holders happen.
//!
//! Files Cutover creates here are private (0700 directory, 0600 files): the store holds
//! release handles and history, the token directory the API token.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "cutover.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another cutover daemon{holder} holds the state directory {dir}; stop it first, or give this one its own `daemon.state_dir`")]
    Held { dir: String, holder: String },
    #[error("cannot lock the state directory {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the daemon's lifetime; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
    /// The lock file's inode when taken: a different one (or none) at the same path
    /// means the directory was removed or replaced under the daemon.
    ino: u64,
}

impl StateLock {
    /// Creates the state directory (mode 0700) if needed and takes its lock, or says
    /// which process holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let shown = dir.display().to_string();
        let io = |source| LockError::Io {
            dir: shown.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    dir: shown,
                    holder: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        let ino = file.metadata().map_err(io)?.ino();
        Ok(StateLock { file, path, ino })
    }

    /// Whether the lock file this daemon holds is still the one at its path: `false`
    /// when the state directory was removed (or the file replaced) while it ran.
    pub fn still_in_place(&self) -> bool {
        let _ = &self.file;
        std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino)
    }
}

/// Raises the open-file soft limit to the hard limit: every proxied request holds two
/// descriptors, and the usual soft default (1024) caps a busy proxy at a few hundred
/// clients. Returns the limit in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    Ok(hard.max(soft))
}

/// Descriptors the proxy may need beyond two per client connection: the API, the
/// store, log files, checks, a few spare upstream connections.
const DESCRIPTOR_MARGIN: u64 = 256;

/// A warning when `limit` open files cannot serve `listeners` × `max_connections`
/// busy clients (a client connection and its upstream connection each), else `None`.
pub fn descriptor_shortfall(
    limit: u64,
    listeners: usize,
    max_connections: usize,
) -> Option<String> {
    let wanted = (listeners as u64)
        .saturating_mul(max_connections as u64)
        .saturating_mul(2)
        .saturating_add(DESCRIPTOR_MARGIN);
    (listeners > 0 && limit < wanted).then(|| {
        format!(
            "the open-file limit ({limit}) is below what {listeners} listener(s) × max_connections ({max_connections}) can use ({wanted}: two per connection and {DESCRIPTOR_MARGIN} more); past it, requests get 503 \"proxy overloaded\". Raise the hard limit (LimitNOFILE= in the systemd unit, `ulimit -Hn`) or lower [proxy] max_connections"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_limit_too_small_for_max_connections_is_named() {
        assert_eq!(descriptor_shortfall(1_048_576, 2, 10_000), None);
        assert_eq!(descriptor_shortfall(20_256, 1, 10_000), None);
        let w = descriptor_shortfall(20_255, 1, 10_000).unwrap();
        assert!(w.contains("(20255)") && w.contains("(20256"), "{w}");
        assert_eq!(
            descriptor_shortfall(1024, 0, 10_000),
            None,
            "no listener, no proxy"
        );
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state).unwrap();
        let err = StateLock::acquire(&state).unwrap_err().to_string();
        assert!(
            err.contains(&format!("(pid {})", std::process::id()))
                && err.contains(&state.display().to_string()),
            "{err}"
        );
        drop(first);
        let again = StateLock::acquire(&state).unwrap();
        assert!(again.still_in_place());
    }

    #[test]
    fn the_directory_and_the_lock_file_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _lock = StateLock::acquire(&state).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(LOCK_FILE)), 0o600);
    }

    #[test]
    fn a_removed_state_directory_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let lock = StateLock::acquire(&state).unwrap();
        std::fs::remove_dir_all(&state).unwrap();
        assert!(!lock.still_in_place());
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{getrlimit, Resource};
        let limit = raise_open_file_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
        assert_eq!(limit, hard);
    }
}
