//! Where a mount's local tier lives when `mount` is given no `--local-cache`, how much it may
//! take there, and the lock that gives one daemon a tier folder. The default tier is a
//! convenience: a failure to make it leaves the mount without a tier (logged), never without
//! a mount; a folder asked for by `--local-cache` must open.

use super::Tier;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The default tier's share of its disk's free space at mount time.
const FREE_SHARE: u64 = 2;
/// A default tier folder no mount has held for this long is deleted when another default tier
/// opens (mountpoints come and go; their copies are only a cache).
const STALE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The folder the default tiers live in: `$XDG_CACHE_HOME/shardfs/tier`, else
/// `/var/cache/shardfs/tier` for root and `~/.cache/shardfs/tier` for anyone else.
pub fn default_root() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = match xdg {
        Some(p) => p,
        None if rustix::process::geteuid().is_root() => PathBuf::from("/var/cache"),
        None => crate::home::home_dir()?.join(".cache"),
    };
    Some(base.join("shardfs").join("tier"))
}

/// A folder name for the tier of `mountpoint`: readable (`mnt-models`) and, by a hash of the
/// whole path, distinct for two mountpoints that read alike (`/a-b` and `/a/b`).
pub fn folder_name(mountpoint: &Path) -> String {
    let path = mountpoint.as_os_str().as_encoded_bytes();
    let readable: String = String::from_utf8_lossy(path)
        .trim_matches('/')
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' => c,
            _ => '-',
        })
        .take(64)
        .collect();
    let hash = blake3::hash(path).to_hex();
    format!("{readable}-{}", &hash[..8])
}

/// `asked`, but no more than a share of the free space of the disk `dir` is (or will be) on:
/// that of its nearest folder already there.
fn bounded_by_free_space(dir: &Path, asked: u64) -> u64 {
    match dir.ancestors().find_map(|d| rustix::fs::statvfs(d).ok()) {
        Some(st) => asked.min(st.f_bavail.saturating_mul(st.f_frsize) / FREE_SHARE),
        None => asked,
    }
}

/// Opens the default tier of the mount at `mountpoint` (at most `asked` bytes, and at most
/// half the free space of its disk), or says in the log why the mount has none.
pub fn open_default(mountpoint: &Path, asked: u64) -> Option<Arc<Tier>> {
    let Some(root) = default_root() else {
        log::warn!("no local tier: this user has no home folder for the cache");
        return None;
    };
    let dir = root.join(folder_name(mountpoint));
    let opened = Tier::open(&dir, bounded_by_free_space(&dir, asked));
    prune_stale(&root, &dir);
    match opened {
        Ok(tier) => {
            log::info!(
                "local tier {} (at most {})",
                dir.display(),
                crate::units::format_bytes(tier.limit)
            );
            Some(tier)
        }
        Err(e) => {
            log::warn!("no local tier: {e}");
            None
        }
    }
}

/// Deletes the folders under `root` but `keep` that no mount holds and none has held for
/// [`STALE`] (by their lock file's time, set by every mount that takes it). Only real folders
/// are looked at, and what they hold is deleted without following a link.
fn prune_stale(root: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if path == keep || !is_dir {
            continue;
        }
        let last_held = std::fs::symlink_metadata(path.join(".lock")).and_then(|m| m.modified());
        let stale = last_held.is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE));
        // Held while it is deleted, so that no mount opens it meanwhile.
        if let (true, Ok(_held)) = (stale, lock(&path)) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => log::info!("deleted the unused local tier {}", path.display()),
                Err(e) => log::warn!(
                    "cannot delete the unused local tier {}: {e}",
                    path.display()
                ),
            }
        }
    }
}

/// Takes the lock of the tier folder `dir` (its `.lock` file), held as long as the file is
/// open: two daemons sharing a folder would delete each other's copies being made.
pub(super) fn lock(dir: &Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| format!("local tier {}: {e}", path.display()))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(format!("local tier {}: not a regular file", path.display()));
    }
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            // When it was last held: what tells an unused default tier (`prune_stale`).
            let _ = file.set_modified(std::time::SystemTime::now());
            Ok(file)
        }
        Err(rustix::io::Errno::WOULDBLOCK) => Err(format!(
            "local tier {}: in use by another mount",
            dir.display()
        )),
        Err(e) => Err(format!("local tier {}: cannot lock: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_read_like_the_path_and_differ_for_paths_that_read_alike() {
        let a = folder_name(Path::new("/mnt/models"));
        assert!(a.starts_with("mnt-models-"), "{a}");
        assert_ne!(
            folder_name(Path::new("/a-b")),
            folder_name(Path::new("/a/b"))
        );
        assert!(!folder_name(Path::new("/x/../../etc")).contains('/'));
    }

    #[test]
    fn a_tier_folder_is_had_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let second = lock(dir.path()).unwrap_err();
        assert!(second.contains("in use by another mount"), "{second}");
        drop(first);
        lock(dir.path()).unwrap();
    }

    #[test]
    fn only_folders_unheld_for_a_week_are_pruned() {
        let root = tempfile::tempdir().unwrap();
        let folder = |name: &str| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("copy"), b"bytes").unwrap();
            dir
        };
        let age = |dir: &Path, days: u64| {
            let lock = File::options().write(true).open(dir.join(".lock")).unwrap();
            let then = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86400);
            lock.set_modified(then).unwrap();
        };
        let (old, recent, held, keep) = (
            folder("old"),
            folder("recent"),
            folder("held"),
            folder("keep"),
        );
        for dir in [&old, &recent, &held, &keep] {
            drop(lock(dir).unwrap());
        }
        age(&old, 8);
        age(&recent, 6);
        age(&keep, 30);
        let holder = lock(&held).unwrap();
        age(&held, 30);
        // A link to a folder outside: neither it nor what it points at is touched.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("theirs"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        prune_stale(root.path(), &keep);
        assert!(!old.exists());
        assert!(recent.join("copy").exists() && held.join("copy").exists());
        assert!(keep.join("copy").exists());
        assert!(outside.path().join("theirs").exists());
        drop(holder);
    }

    #[test]
    fn the_default_tier_takes_at_most_half_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let free = || {
            let st = rustix::fs::statvfs(dir.path()).unwrap();
            st.f_bavail * st.f_frsize
        };
        // Other tests write to the same disk meanwhile: the free space is read on both sides.
        let before = free();
        let got = bounded_by_free_space(dir.path(), u64::MAX);
        let after = free();
        assert!(before.min(after) / 2 <= got && got <= before.max(after) / 2);
        // A folder not made yet: its disk is that of the nearest folder there.
        let later = bounded_by_free_space(&dir.path().join("not/yet"), u64::MAX);
        let last = free();
        assert!(before.min(last) / 2 <= later && later <= before.max(last) / 2);
        assert_eq!(bounded_by_free_space(dir.path(), 1), 1);
    }
}
