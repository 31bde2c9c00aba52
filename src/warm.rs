//! `shardfs warm`: reads a file, or every file under a folder, through the mount with several
//! readers at once, so that it sits in the page cache before a loader starts. Each reader takes
//! the next 16 MiB segment, so the daemon sees several sequential streams and keeps both cores
//! decompressing. A file that cannot be read is reported and the rest are read all the same.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

const SEGMENT: u64 = 16 << 20;

/// What a warm-up read.
#[derive(Debug, Clone)]
pub struct WarmSummary {
    pub files: usize,
    /// Bytes read (of the files read whole).
    pub bytes: u64,
    pub seconds: f64,
    /// Files that could not be read whole, with the first error of each.
    pub failed: Vec<(PathBuf, String)>,
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

/// What a warm-up fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The page cache: plain reads.
    PageCache,
    /// The mount's local tier: reads bypass the page cache (`O_DIRECT`), so that every byte
    /// reaches the daemon, which then copies every chunk to the tier.
    LocalTier,
}

impl Fill {
    /// `LocalTier` when `--local` was given.
    pub fn local_tier_if(flag: bool) -> Fill {
        if flag {
            Fill::LocalTier
        } else {
            Fill::PageCache
        }
    }
}

/// Reads everything under `path` with `readers` threads, to fill what `fill` names.
pub fn warm(
    path: &Path,
    readers: usize,
    progress: &dyn crate::progress::Progress,
    fill: Fill,
) -> Result<WarmSummary, String> {
    let direct = fill == Fill::LocalTier;
    let mut files = Vec::new();
    collect(path, &mut files).map_err(|e| format!("{}: {e}", path.display()))?;
    let segments: Vec<(usize, u64)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, (_, len))| (0..len.div_ceil(SEGMENT)).map(move |s| (i, s * SEGMENT)))
        .collect();
    let total: u64 = files.iter().map(|(_, l)| l).sum();
    let bar = progress;
    bar.start("warming", total);
    let next = AtomicUsize::new(0);
    let broken: Vec<AtomicBool> = files.iter().map(|_| AtomicBool::new(false)).collect();
    let failed = parking_lot::Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..readers.max(1) {
            s.spawn(|| {
                // Aligned to a page, as direct reads may need.
                let mut backing = vec![0u8; (1 << 20) + 4096];
                let skip = backing.as_ptr().align_offset(4096);
                let buf = &mut backing[skip..skip + (1 << 20)];
                // Each reader opens files itself: the kernel keeps read-ahead state per open
                // file, and the daemon per handle, so each reader is its own sequential stream.
                let mut open: Option<(usize, File)> = None;
                while let Some(&(fi, start)) = segments.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if broken[fi].load(Ordering::Relaxed) {
                        continue;
                    }
                    let (path, len) = &files[fi];
                    let read = read_segment(&mut open, fi, path, start, *len, direct, buf, bar);
                    if let Err(e) = read
                        && !broken[fi].swap(true, Ordering::Relaxed)
                    {
                        failed.lock().push((path.clone(), e));
                    }
                }
            });
        }
    });
    bar.finish();
    let mut failed = failed.into_inner();
    failed.sort();
    let bytes = files
        .iter()
        .zip(&broken)
        .filter(|(_, b)| !b.load(Ordering::Relaxed))
        .map(|((_, len), _)| len)
        .sum();
    Ok(WarmSummary {
        files: files.len(),
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        failed,
    })
}

/// Reads bytes `start..start + SEGMENT` of file `fi` (opened into `open` unless it is the one
/// open there).
#[allow(clippy::too_many_arguments)]
fn read_segment(
    open: &mut Option<(usize, File)>,
    fi: usize,
    path: &Path,
    start: u64,
    len: u64,
    direct: bool,
    buf: &mut [u8],
    bar: &dyn crate::progress::Progress,
) -> Result<(), String> {
    if open.as_ref().is_none_or(|(i, _)| *i != fi) {
        let file = File::options()
            .read(true)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(path)
            .map_err(|e| e.to_string())?;
        *open = Some((fi, file));
    }
    let Some((_, handle)) = open.as_ref() else {
        return Ok(());
    };
    let end = (start + SEGMENT).min(len);
    let mut at = start;
    while at < end {
        let want = ((end - at) as usize).min(buf.len());
        let n = handle
            .read_at(&mut buf[..want], at)
            .map_err(|e| format!("at byte {at}: {e}"))?;
        if n == 0 {
            return Err(format!("ended early at byte {at}"));
        }
        at += n as u64;
        bar.advance(n as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Progress as numbers.
    #[derive(Default)]
    struct Counted {
        started: AtomicU64,
        done: AtomicU64,
        finished: AtomicBool,
    }

    impl crate::progress::Progress for Counted {
        fn start(&self, _: &str, total: u64) {
            self.started.store(total, Ordering::Relaxed);
        }
        fn advance(&self, bytes: u64) {
            self.done.fetch_add(bytes, Ordering::Relaxed);
        }
        fn finish(&self) {
            self.finished.store(true, Ordering::Relaxed);
        }
    }

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
        let told = Counted::default();
        let s = warm(dir.path(), 3, &told, Fill::PageCache).unwrap();
        assert_eq!((s.files, s.bytes), (3, SEGMENT * 2 + 8));
        assert!(s.failed.is_empty());
        // The progress told matches: the total up front, every byte as it was read, then done.
        let total = SEGMENT * 2 + 8;
        assert_eq!(told.started.load(Ordering::Relaxed), total);
        assert_eq!(told.done.load(Ordering::Relaxed), total);
        assert!(told.finished.load(Ordering::Relaxed));
        let silent = crate::progress::Silent;
        assert!(warm(&dir.path().join("missing"), 2, &silent, Fill::PageCache).is_err());
    }
}
