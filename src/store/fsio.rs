//! Crash-safe file writes: every file of a store is written under `tmp/`, fsynced, renamed into
//! place, and its directory fsynced, so a crash leaves the old file or the new one, never half.

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

/// Writes `data` to `dest` atomically, staging it in `tmp_dir` (same filesystem). The caller
/// fsyncs `dest`'s directory (at once with `sync_dir`, or batched for many chunk files).
pub fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8]) -> io::Result<()> {
    let stem = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = tmp_dir.join(tmp_name(stem));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
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
        write_atomic(&tmp, &dest, b"one").unwrap();
        write_atomic(&tmp, &dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        fs::write(tmp.join(tmp_name("x")), b"left over").unwrap();
        assert_eq!(clean_tmp(&tmp).unwrap(), 1);
        assert_eq!(clean_tmp(&dir.path().join("none")).unwrap(), 0);
        // A failed write leaves nothing behind.
        assert!(write_atomic(&tmp, &dir.path().join("missing/dir/f"), b"x").is_err());
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
