//! Crash-safe file writes: every file of a store is written under `tmp/` and renamed into place,
//! so a reader never sees half a file. Manifests are fsynced before the rename (`Durable::Now`);
//! chunk files are made durable in one `syncfs` of each member before the manifest that names
//! them is written (`Durable::Later`), which costs one flush instead of one per chunk.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file name unique within this process and across processes.
pub fn tmp_name(stem: &str) -> String {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{stem}.{}.{n}.tmp", std::process::id())
}

/// When a write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// fsync the file before renaming it into place (the caller fsyncs the directory).
    Now,
    /// The caller calls `sync_fs` on the member before relying on the file.
    Later,
}

/// Writes `data` to `dest` atomically, staging it in `tmp_dir` (same filesystem).
pub fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8], durable: Durable) -> io::Result<()> {
    let stem = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = tmp_dir.join(tmp_name(stem));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if durable == Durable::Now {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory so that renames into it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes everything written to the filesystem holding `path` (data and metadata).
pub fn sync_fs(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = File::open(path)?;
    // SAFETY: syncfs takes an open fd.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes every leftover file in a `tmp/` directory (from a pack that was killed).
pub fn clean_tmp(tmp_dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(tmp_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_clean() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let dest = dir.path().join("a.json");
        write_atomic(&tmp, &dest, b"one", Durable::Now).unwrap();
        write_atomic(&tmp, &dest, b"two", Durable::Later).unwrap();
        sync_fs(dir.path()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        fs::write(tmp.join(tmp_name("x")), b"left over").unwrap();
        assert_eq!(clean_tmp(&tmp).unwrap(), 1);
        assert_eq!(clean_tmp(&dir.path().join("none")).unwrap(), 0);
        // A failed write leaves nothing behind.
        assert!(write_atomic(&tmp, &dir.path().join("missing/dir/f"), b"x", Durable::Now).is_err());
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
