//! Slot log files (`<state_dir>/logs/<service>-<slot>.log`): how they are opened and
//! how they are kept from filling the disk.
//!
//! A release writes its stdout and stderr straight into its log file (no pipe through
//! the daemon: a release outlives its daemon, and a pipe would break when the daemon
//! goes). So rotation cannot close and reopen the writer's file; it copies and
//! truncates: the file is copied to `.1` (older copies shifted to `.2`, ... up to the
//! configured count, the oldest dropped) and then truncated to 0. The file is opened
//! with `O_APPEND`, so the release's next write lands at the new end of file instead
//! of at its old offset (which would leave a sparse file as large as before). Lines
//! written between the copy and the truncation are lost: a window of one copy, the
//! price of never interrupting the release.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Opens a slot's log for a release being started: the previous release's log (if
/// any) is rotated to `.1` first, so a failed start's output and the one before stay
/// readable. Readable by the daemon's user only (a release's output may hold secrets).
pub fn open_slot_log(path: &Path, keep: u32) -> io::Result<File> {
    if path.metadata().is_ok_and(|m| m.len() > 0) {
        shift(path, keep)?;
        std::fs::rename(path, numbered(path, 1))?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Rotates `path` if it is larger than `max_bytes`; `keep` rotated copies at most.
/// Returns whether it rotated.
pub fn rotate_if_larger(path: &Path, max_bytes: u64, keep: u32) -> io::Result<bool> {
    let len = match path.metadata() {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max_bytes {
        return Ok(false);
    }
    shift(path, keep)?;
    std::fs::copy(path, numbered(path, 1))?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// Rotates every `*.log` in `dir` that is larger than `max_bytes`; returns the files
/// rotated. A missing directory (nothing started yet) is not an error.
pub fn rotate_dir(dir: &Path, max_bytes: u64, keep: u32) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut rotated = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") && rotate_if_larger(&path, max_bytes, keep)?
        {
            rotated.push(path);
        }
    }
    Ok(rotated)
}

/// `.1` → `.2`, ... so `.1` is free; the copy numbered `keep` is dropped.
fn shift(path: &Path, keep: u32) -> io::Result<()> {
    let keep = keep.max(1);
    let _ = std::fs::remove_file(numbered(path, keep));
    for n in (1..keep).rev() {
        let from = numbered(path, n);
        if from.exists() {
            std::fs::rename(&from, numbered(path, n + 1))?;
        }
    }
    Ok(())
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn size(p: &Path) -> u64 {
        p.metadata().map_or(0, |m| m.len())
    }

    /// A real process writing to its log through the descriptor the runtime gives it:
    /// rotation copies what it wrote, the file starts again from 0 (not sparse), and
    /// the process goes on writing into the same file.
    #[test]
    fn a_writing_process_is_rotated_by_size_and_keeps_writing_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("web-blue.log");
        let file = open_slot_log(&log, 3).unwrap();
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while :; do i=$((i+1)); echo \"line $i of the release\"; sleep 0.001; done",
            ])
            .stdout(file)
            .spawn()
            .unwrap();
        let wait_for = |what: &str, f: &dyn Fn() -> bool| {
            let start = Instant::now();
            while !f() {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "timed out: {what}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let max = 4096;
        let mut rotations = 0;
        while rotations < 4 {
            wait_for("the log to outgrow the limit", &|| size(&log) > max);
            assert!(rotate_if_larger(&log, max, 3).unwrap());
            rotations += 1;
        }
        // The live file started again from 0 and grows at its new end.
        wait_for("the process to write again", &|| size(&log) > 0);
        let blocks = {
            use std::os::unix::fs::MetadataExt;
            log.metadata().unwrap().blocks() * 512
        };
        assert!(
            size(&log) < 1024 * 1024 && blocks <= size(&log) + 64 * 1024,
            "the file is not sparse at its old size: {} bytes, {blocks} allocated",
            size(&log)
        );
        let text = std::fs::read_to_string(&log).unwrap();
        let first = text.lines().next().unwrap_or_default().to_string();
        assert!(first.starts_with("line ") || first.is_empty(), "{first:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        // Three copies kept, the newest in .1; a fourth was dropped.
        for n in 1..=3 {
            let copy = numbered(&log, n);
            assert!(size(&copy) > max, "{} holds a rotated log", copy.display());
            assert!(std::fs::read_to_string(&copy)
                .unwrap()
                .contains("of the release"));
        }
        assert!(!numbered(&log, 4).exists());
        let newest: u64 = last_line_number(&numbered(&log, 1));
        let older: u64 = last_line_number(&numbered(&log, 2));
        assert!(newest > older, ".1 is newer than .2");
    }

    fn last_line_number(p: &Path) -> u64 {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .last()
            .unwrap()
    }

    #[test]
    fn starting_a_release_keeps_the_previous_log_as_dot_one_and_small_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("web-green.log");
        std::fs::write(&log, "the previous release\n").unwrap();
        drop(open_slot_log(&log, 2).unwrap());
        assert_eq!(
            std::fs::read_to_string(numbered(&log, 1)).unwrap(),
            "the previous release\n"
        );
        assert_eq!(size(&log), 0);
        assert!(
            rotate_dir(dir.path(), 4096, 2).unwrap().is_empty(),
            "nothing over the limit"
        );
        assert!(rotate_dir(&dir.path().join("missing"), 4096, 2)
            .unwrap()
            .is_empty());
    }
}
