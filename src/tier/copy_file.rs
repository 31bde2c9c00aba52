//! How the tier's writer puts a chunk's bytes into a copy's `.part` file. Whole pages go by
//! direct I/O (`O_DIRECT`): the disk takes them from our memory, with no copy into the page
//! cache, no dirty pages for the kernel to throttle the writer on, and no page cache taken from
//! the file being read. The partial pages at a chunk's two ends (chunks start anywhere in a file)
//! go through the page cache; a page is only ever written one way, so the two never overlap.
//! Where the filesystem refuses direct I/O, every byte goes through the page cache.

use crate::buffer::ChunkBuf;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The unit of direct I/O: the alignment the members' direct reads use, or the page where that
/// is larger, so that no page is written both ways.
fn unit() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as usize;
    page.max(crate::member::direct_io::DIRECT_ALIGN) as u64
}

/// Bytes staged at a time for direct I/O when a chunk's pages are not aligned in memory.
const STAGE: usize = 4 << 20;

/// A copy's file being written: one open for the page cache, one for direct I/O.
pub(super) struct CopyFile {
    buffered: File,
    direct: Option<File>,
    /// Set once direct I/O failed in a way that says the filesystem will not do it.
    no_direct: AtomicBool,
}

impl CopyFile {
    /// Makes the new private file at `path` (whatever is there is removed as an entry first,
    /// never written through) and opens it for direct I/O too where the filesystem can.
    pub(super) fn create(path: &Path) -> io::Result<CopyFile> {
        let _ = std::fs::remove_file(path);
        let buffered = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let direct = File::options()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECT)
            .open(path)
            .ok()
            .filter(|d| same_file(d, &buffered));
        Ok(CopyFile {
            buffered,
            direct,
            no_direct: AtomicBool::new(false),
        })
    }

    /// The open for the page cache (syncing, sizing).
    pub(super) fn file(&self) -> &File {
        &self.buffered
    }

    /// Writes `bytes` at `at`: the whole pages they cover by direct I/O, from `bytes` where
    /// they are aligned in memory or else through `stage`, the rest through the page cache.
    pub(super) fn write_at(&self, bytes: &[u8], at: u64, stage: &mut Stage) -> io::Result<()> {
        let direct = match &self.direct {
            Some(d) if !self.no_direct.load(Ordering::Relaxed) => d,
            _ => return self.buffered.write_all_at(bytes, at),
        };
        let unit = unit();
        let end = at + bytes.len() as u64;
        let (first, last) = (at.div_ceil(unit) * unit, end / unit * unit);
        if first >= last {
            return self.buffered.write_all_at(bytes, at);
        }
        let (head, rest) = bytes.split_at((first - at) as usize);
        let (pages, tail) = rest.split_at((last - first) as usize);
        self.buffered.write_all_at(head, at)?;
        self.buffered.write_all_at(tail, last)?;
        match write_direct(direct, pages, first, stage, unit) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::info!(
                    "local tier: the filesystem refuses direct I/O ({e}): writing through the page cache"
                );
                self.no_direct.store(true, Ordering::Relaxed);
                self.buffered.write_all_at(pages, first)
            }
            other => other,
        }
    }
}

/// Writes whole `pages` at `at` (both aligned to `unit`) through `direct`.
fn write_direct(
    direct: &File,
    pages: &[u8],
    at: u64,
    stage: &mut Stage,
    unit: u64,
) -> io::Result<()> {
    if (pages.as_ptr() as u64).is_multiple_of(unit) {
        return direct.write_all_at(pages, at);
    }
    let buf = stage.buf()?;
    let mut done = 0;
    for piece in pages.chunks(buf.len()) {
        let staged = &mut buf[..piece.len()];
        staged.copy_from_slice(piece);
        direct.write_all_at(staged, at + done)?;
        done += piece.len() as u64;
    }
    Ok(())
}

/// Whether two opens are of the same file (the second open of a path names what the first made).
fn same_file(a: &File, b: &File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The writer's page-aligned staging buffer, made when first needed and kept.
#[derive(Default)]
pub(super) struct Stage(Option<ChunkBuf>);

impl Stage {
    fn buf(&mut self) -> io::Result<&mut ChunkBuf> {
        if self.0.is_none() {
            self.0 = Some(ChunkBuf::for_overwrite(STAGE)?);
        }
        self.0
            .as_mut()
            .ok_or_else(|| io::Error::other("no staging buffer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks cut anywhere, from memory aligned or not, make the file byte for byte.
    #[test]
    fn chunks_cut_anywhere_make_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.part");
        let data: Vec<u8> = (0..(3u32 << 20) + 777)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let f = CopyFile::create(&path).unwrap();
        f.file().set_len(data.len() as u64).unwrap();
        let mut stage = Stage::default();
        // Uneven cuts, written out of order: a chunk under a page, one inside a page, and
        // large ones over many pages.
        let cuts = [0, 100, 4096, 5000, 5001, 1 << 20, (2 << 20) + 3, data.len()];
        let mut pieces: Vec<_> = cuts.windows(2).map(|w| (w[0], w[1])).collect();
        pieces.reverse();
        pieces.swap(0, 3);
        for (a, b) in pieces {
            // Through an aligned buffer of its own as well as straight from `data`.
            if a % 2 == 0 {
                let own = ChunkBuf::from_slice(&data[a..b]).unwrap();
                f.write_at(&own, a as u64, &mut stage).unwrap();
            } else {
                f.write_at(&data[a..b], a as u64, &mut stage).unwrap();
            }
        }
        f.file().sync_all().unwrap();
        // The test folder's filesystem (ext4, tmpfs) takes direct I/O: the pages went that way.
        assert!(f.direct.is_some() && !f.no_direct.load(Ordering::Relaxed));
        drop(f);
        assert!(std::fs::read(&path).unwrap() == data);
    }

    #[test]
    fn what_is_at_the_name_is_replaced_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        let path = dir.path().join("copy.part");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let f = CopyFile::create(&path).unwrap();
        f.write_at(b"new", 0, &mut Stage::default()).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }
}
