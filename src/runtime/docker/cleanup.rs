//! Cleanup of old releases: keep the images of the last `keep_releases` releases for a
//! fast rollback, remove older ones.
//!
//! Why a ledger file: the order of releases is the order they were *deployed*, which
//! neither image creation times nor tags say. Each start puts its version first in
//! `<state_dir>/docker/<service>.releases` (one version a line, newest first). Only
//! images this runtime deployed are ever removed, never one it merely finds; images
//! still used by a slot's container (live, standby, or stopped for inspection) are kept
//! whatever their age, and removal is by reference, so an image tagged twice loses only
//! this tag.

use std::path::{Path, PathBuf};

use bollard::query_parameters::RemoveImageOptions;
use bollard::Docker;

use super::engine::{message, not_found};

/// The ordered list of versions one service deployed.
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn new(dir: &Path, service: &str) -> Self {
        Ledger {
            path: dir.join(format!("{service}.releases")),
        }
    }

    /// Versions, newest first.
    pub fn read(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn write(&self, versions: &[String]) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("releases.tmp");
        std::fs::write(&tmp, versions.join("\n") + "\n")?;
        std::fs::rename(tmp, &self.path)
    }

    /// Puts `version` first (moving it if it was deployed before).
    pub fn record(&self, version: &str) -> std::io::Result<()> {
        let mut versions = self.read();
        versions.retain(|v| v != version);
        versions.insert(0, version.to_string());
        self.write(&versions)
    }

    /// Forgets versions whose images were removed.
    pub fn forget(&self, gone: &[String]) -> std::io::Result<()> {
        let mut versions = self.read();
        versions.retain(|v| !gone.contains(v));
        self.write(&versions)
    }
}

/// Which versions to remove: those beyond the `keep` newest that are not `in_use`.
pub fn expired(ledger: &[String], in_use: &[String], keep: usize) -> Vec<String> {
    ledger
        .iter()
        .filter(|v| !in_use.contains(v))
        .skip(keep)
        .cloned()
        .collect()
}

/// Removes the images of `versions` (by the reference `image_of` gives); returns the
/// versions whose image is gone now.
pub async fn remove_images(
    docker: &Docker,
    versions: &[String],
    image_of: impl Fn(&str) -> String,
) -> Vec<String> {
    let mut gone = Vec::new();
    for v in versions {
        let image = image_of(v);
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        match docker.remove_image(&image, Some(options), None).await {
            Ok(_) => {
                tracing::info!(%image, "removed the image of an old release");
                gone.push(v.clone());
            }
            Err(e) if not_found(&e) => gone.push(v.clone()),
            // In use by a container Cutover does not manage, for one: keep it.
            Err(e) => {
                tracing::warn!(%image, error = %message(&e), "cannot remove an old release's image")
            }
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_newest_releases_beyond_those_in_use_are_kept() {
        let ledger = v(&["v5", "v4", "v3", "v2", "v1"]);
        assert_eq!(expired(&ledger, &v(&["v5", "v4"]), 2), v(&["v1"]));
        assert_eq!(
            expired(&ledger, &v(&["v5", "v4"]), 0),
            v(&["v3", "v2", "v1"])
        );
        // A rollback to an old release keeps that one, whatever its place.
        assert_eq!(expired(&ledger, &v(&["v5", "v1"]), 1), v(&["v3", "v2"]));
    }

    #[test]
    fn a_redeployed_version_moves_to_the_front_of_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path(), "web");
        for version in ["v1", "v2", "v3", "v1"] {
            ledger.record(version).unwrap();
        }
        assert_eq!(ledger.read(), v(&["v1", "v3", "v2"]));
        ledger.forget(&v(&["v3"])).unwrap();
        assert_eq!(ledger.read(), v(&["v1", "v2"]));
    }
}
