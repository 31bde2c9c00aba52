//! `shardfs warm`: reads a file, or every file under a folder, through the mount with several
//! readers at once, so that it sits in the page cache before a loader starts. Each reader takes
//! the next 16 MiB segment, so the daemon sees several sequential streams and keeps both cores
//! decompressing.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const SEGMENT: u64 = 16 << 20;

/// What a warm-up read.
#[derive(Debug, Clone)]
pub struct WarmSummary {
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
}

fn collect(path: &Path, out: &mut Vec<(PathBuf, u64)>) -> io::Result<()> {
    let meta = fs::metadata(path)?;
    if meta.is_file() {
        out.push((path.to_path_buf(), meta.len()));
    } else if meta.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for e in entries {
            collect(&e, out)?;
        }
    }
    Ok(())
}

/// Reads everything under `path` with `readers` threads.
/// With `direct`, reads bypass the page cache (`O_DIRECT`), so that every byte reaches the
/// daemon: a mount with a local tier then copies every chunk there.
pub fn warm(
    path: &Path,
    readers: usize,
    progress: bool,
    direct: bool,
) -> Result<WarmSummary, String> {
    let mut files = Vec::new();
    collect(path, &mut files).map_err(|e| format!("{}: {e}", path.display()))?;
    let segments: Vec<(usize, u64)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, (_, len))| (0..len.div_ceil(SEGMENT)).map(move |s| (i, s * SEGMENT)))
        .collect();
    let total: u64 = files.iter().map(|(_, l)| l).sum();
    let bar = crate::units::byte_progress(total, progress, "warming", "");
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..readers.max(1))
            .map(|_| {
                s.spawn(|| -> Result<(), String> {
                    // Aligned to a page, as direct reads may need.
                    let mut backing = vec![0u8; (1 << 20) + 4096];
                    let skip = backing.as_ptr().align_offset(4096);
                    let buf = &mut backing[skip..skip + (1 << 20)];
                    // Each reader opens files itself: the kernel keeps read-ahead state per open
                    // file, and the daemon per handle, so each reader is its own sequential stream.
                    let mut open: Option<(usize, File)> = None;
                    loop {
                        let Some(&(fi, start)) = segments.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            return Ok(());
                        };
                        let (path, len) = &files[fi];
                        if open.as_ref().is_none_or(|(i, _)| *i != fi) {
                            open = Some((
                                fi,
                                File::options()
                                    .read(true)
                                    .custom_flags(if direct { libc::O_DIRECT } else { 0 })
                                    .open(path)
                                    .map_err(|e| format!("{}: {e}", path.display()))?,
                            ));
                        }
                        let Some((_, handle)) = open.as_ref() else {
                            continue;
                        };
                        let end = (start + SEGMENT).min(*len);
                        let mut at = start;
                        while at < end {
                            let want = ((end - at) as usize).min(buf.len());
                            let n = handle
                                .read_at(&mut buf[..want], at)
                                .map_err(|e| format!("{} at byte {at}: {e}", path.display()))?;
                            if n == 0 {
                                return Err(format!("{} ended early at byte {at}", path.display()));
                            }
                            at += n as u64;
                            bar.inc(n as u64);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a reader panicked".into())))
            .collect::<Result<Vec<()>, String>>()
    })?;
    bar.finish_and_clear();
    Ok(WarmSummary {
        files: files.len(),
        bytes: total,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_byte_of_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(
            dir.path().join("a/b/big"),
            vec![7u8; (SEGMENT * 2 + 5) as usize],
        )
        .unwrap();
        fs::write(dir.path().join("small"), b"xyz").unwrap();
        fs::write(dir.path().join("empty"), b"").unwrap();
        let s = warm(dir.path(), 3, false, false).unwrap();
        assert_eq!((s.files, s.bytes), (3, SEGMENT * 2 + 8));
        assert!(warm(&dir.path().join("missing"), 2, false, false).is_err());
    }
}
