//! The local decompressed tier (`mount --local-cache DIR`, else the default folder `place`
//! picks): whole decompressed copies of the files a mount serves, on a local disk, named by the
//! file's BLAKE3 (so versions and models that share a file share its copy, and a copy outlives
//! the daemon).
//!
//! A copy is built as the file's chunks are read and verified: each chunk is written at its
//! offset into `<hash>.part` by a writer thread (`writer.rs`; by direct I/O, `copy_file.rs`), and the byte ranges
//! that are in are counted (by range, not chunk index: two chunkings of one file, from two
//! models or a re-pack, fill the same copy). The copy trails the read and never holds it up: a
//! chunk read while the writer is behind is noted as missed, and the writer loads the missed
//! chunks again once no chunk has come for a while (only chunks a reader read: a partial load
//! copies only its part). When every byte is in, the copy is synced, hashed whole and compared with its
//! name, and only then renamed to `<hash>`: a copy is never handed out before that check. All
//! file I/O (create, preallocate, write, sync, hash, unlink) is done by the writer thread outside
//! the state's lock, so a reader or a FUSE session thread never waits on the tier's disk; a
//! writer that panics turns the tier off (logged) and reads go on from the store. At start, `.part` files (a daemon
//! killed mid-copy) are deleted, and every complete copy found is hashed again before it is used
//! (one at a time, in the background; until then its file is read from the store as usual). A
//! copy that fails is deleted. The tier holds at most `limit` bytes, copies being built
//! included: the least recently opened copies that no one holds open go first; a file that does
//! not fit is not copied (it is offered again a minute later).

mod copy_file;
pub mod place;
mod state;
mod writer;

use crate::cache::Chunk;
use crate::codec::Hash32;
use crate::store::manifest::FileEntry;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use state::{Copy, Filling, State};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Chunks waiting for the writer: a bound on the memory they hold beyond the cache. Few: the
/// tier is on by default, so what it holds counts against every mount's memory bound (cache +
/// 64 MiB); a chunk's write takes about two milliseconds.
const QUEUED: usize = 2;
/// A file the tier could not take (no room, a failed write) is offered again after this.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(60);
/// A chunk offered to the writer: chunk `index` of a file, and its bytes.
type Offered = (Arc<FileEntry>, usize, Chunk);

/// How the writer gets a missed chunk again (chunk `index` of a file): verified bytes, or
/// `None` when they cannot be had now.
pub type Reload = Box<dyn Fn(&Arc<FileEntry>, usize) -> Option<Chunk> + Send + Sync>;

/// The tier as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TierReport {
    pub dir: String,
    pub limit: u64,
    pub used: u64,
    /// Checked copies, and copies being built.
    pub copies: u64,
    pub filling: u64,
    /// Opens served from a copy (passthrough or reads from the copy).
    pub hits: u64,
    pub evicted: u64,
    /// Copies found damaged (at start, or when built) and deleted.
    pub damaged: u64,
    /// Files whose page cache through the mount was emptied once passthrough could serve them.
    #[serde(default)]
    pub page_caches_dropped: u64,
    /// Chunks read while the writer was behind and loaded again to complete their copies.
    #[serde(default)]
    pub reloaded: u64,
}

pub struct Tier {
    /// The folder's lock, held while the tier is open.
    _lock: File,
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
    queue: crossbeam_channel::Sender<Offered>,
    /// Set when the writer failed for good: no copy is offered or opened any more.
    off: AtomicBool,
    /// Makes the writer panic at its next chunk (tests of its supervision).
    #[cfg(test)]
    panic_next: AtomicBool,
    /// Held by a test to hold the writer up before its next step (`hold_writer`).
    #[cfg(any(test, feature = "twins"))]
    writer_gate: Mutex<()>,
    pub hits: AtomicU64,
    evicted: AtomicU64,
    damaged: AtomicU64,
    /// Files whose page cache through the mount was emptied once their copy could serve them.
    pub page_caches_dropped: AtomicU64,
    reloaded: AtomicU64,
    /// Told the hash of each copy as it becomes servable (made, or found and checked).
    ready: std::sync::OnceLock<ReadyHook>,
    /// Loads chunks the writer missed (without it, a copy with a missed chunk completes only
    /// when that chunk is read again).
    reload: std::sync::OnceLock<Reload>,
}

/// What [`Tier::on_ready`] is told.
pub type ReadyHook = Box<dyn Fn(Hash32) + Send + Sync>;

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tier({})", self.dir.display())
    }
}

impl Tier {
    /// Opens (creating) the tier in `dir`, clears what a killed daemon left, and starts the
    /// writer and the check of the copies found. One daemon at a time has a tier folder: a
    /// second is refused while the first runs.
    pub fn open(dir: &Path, limit: u64) -> Result<Arc<Tier>, String> {
        Self::make_dir(dir)?;
        let lock = place::lock(dir)?;
        let (queue, queued) = crossbeam_channel::bounded(QUEUED);
        let tier = Arc::new(Tier {
            _lock: lock,
            dir: dir.to_path_buf(),
            limit,
            state: Mutex::new(State::default()),
            queue,
            off: AtomicBool::new(false),
            #[cfg(test)]
            panic_next: AtomicBool::new(false),
            #[cfg(any(test, feature = "twins"))]
            writer_gate: Mutex::new(()),
            hits: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            damaged: AtomicU64::new(0),
            page_caches_dropped: AtomicU64::new(0),
            reloaded: AtomicU64::new(0),
            ready: std::sync::OnceLock::new(),
            reload: std::sync::OnceLock::new(),
        });
        let found = tier.adopt_found()?;
        tier.clone().start_writer(found, queued)?;
        Ok(tier)
    }

    /// Makes the tier's folder (0700) unless it is there.
    fn make_dir(dir: &Path) -> Result<(), String> {
        use std::os::unix::fs::DirBuilderExt;
        if fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
            return Err(format!("local tier {}: not a directory", dir.display()));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("local tier {}: {e}", dir.display()))
    }

    /// Takes in the copies a previous mount left (the newest that fit the limit; the others
    /// and unfinished parts are deleted), to be checked before they are served.
    fn adopt_found(&self) -> Result<Vec<Hash32>, String> {
        let mut candidates = Vec::new();
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| format!("local tier {}: {e}", self.dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            match name.parse::<Hash32>().ok() {
                Some(hash) => {
                    let meta = entry.metadata().ok();
                    let size = meta.as_ref().map_or(0, |m| m.len());
                    let made = meta.and_then(|m| m.modified().ok());
                    candidates.push((hash, size, made));
                }
                // Parts of copies a killed daemon was building, and anything else: not ours.
                None if name.ends_with(".part") => {
                    let _ = fs::remove_file(&path);
                }
                None => {}
            }
        }
        // A mount with a smaller limit than the last one: the newest copies that fit are kept,
        // the others deleted now.
        candidates.sort_by_key(|c| std::cmp::Reverse(c.2));
        let (mut kept_bytes, mut dropped) = (0u64, 0u64);
        let mut found = Vec::new();
        for (hash, size, _) in candidates {
            if kept_bytes + size > self.limit {
                let _ = fs::remove_file(self.path(&hash));
                dropped += 1;
                continue;
            }
            kept_bytes += size;
            found.push(hash);
            self.state.lock().copies.insert(
                hash,
                Copy {
                    size,
                    held: 0,
                    opened: 0,
                    checked: false,
                },
            );
        }
        if dropped > 0 {
            log::info!(
                "the local tier held more than its limit of {} bytes: {dropped} older copies deleted",
                self.limit
            );
            self.evicted.fetch_add(dropped, Ordering::Relaxed);
        }
        Ok(found)
    }

    fn path(&self, hash: &Hash32) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    fn part_path(&self, hash: &Hash32) -> PathBuf {
        self.dir.join(format!("{}.part", hash.to_hex()))
    }

    /// Holds the writer up (before its next step) until the guard is dropped: chunks offered
    /// meanwhile beyond the queue's few are missed (tests of the tier catching up).
    #[cfg(any(test, feature = "twins"))]
    pub fn hold_writer(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.writer_gate.lock()
    }

    /// From now on the writer loads the chunks it missed with `reload`.
    pub fn on_missed(&self, reload: Reload) {
        let _ = self.reload.set(reload);
    }

    /// A checked copy of `file`, opened and held until `release` (`None`: no copy yet).
    pub fn open_copy(&self, file: &FileEntry) -> Option<File> {
        if self.off.load(Ordering::Relaxed) {
            return None;
        }
        let ready = |st: &State| {
            st.copies
                .get(&file.blake3)
                .is_some_and(|c| c.checked && c.size == file.size)
        };
        if !ready(&self.state.lock()) {
            return None;
        }
        // Opened outside the lock; kept only if the copy is still there once held.
        let f = open_nofollow(&self.path(&file.blake3)).ok()?;
        let mut st = self.state.lock();
        if !ready(&st) {
            return None;
        }
        st.clock += 1;
        let clock = st.clock;
        let c = st.copies.get_mut(&file.blake3)?;
        c.held += 1;
        c.opened = clock;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(f)
    }

    /// From now on `hook` is told of each copy that becomes servable, on the writer's thread.
    pub fn on_ready(&self, hook: ReadyHook) {
        let _ = self.ready.set(hook);
    }

    fn tell_ready(&self, hash: Hash32) {
        if let Some(hook) = self.ready.get() {
            hook(hash);
        }
    }

    /// Whether a checked copy of the file of `hash` is there.
    pub fn has_copy(&self, hash: &Hash32) -> bool {
        self.state
            .lock()
            .copies
            .get(hash)
            .is_some_and(|c| c.checked)
    }

    /// A handle that `open_copy` gave out is closed.
    pub fn release(&self, hash: &Hash32) {
        if let Some(c) = self.state.lock().copies.get_mut(hash) {
            c.held = c.held.saturating_sub(1);
        }
    }

    /// A chunk of `file` was read and verified: it goes into the file's copy, when the file
    /// has none yet and fits. Never waits and never touches the disk: when the writer is behind
    /// (a few chunks), the chunk is noted as missed, for the writer to load again when idle.
    pub fn offer(&self, file: &Arc<FileEntry>, index: usize, chunk: &Chunk) {
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        let Some(c) = file.chunks.get(index) else {
            return;
        };
        let span = (c.offset, c.offset + c.len);
        let hash = file.blake3;
        {
            let mut st = self.state.lock();
            if st.copies.contains_key(&hash) {
                return;
            }
            if let Some(at) = st.refused.get(&hash) {
                if at.elapsed() < RETRY_AFTER {
                    return;
                }
                st.refused.remove(&hash);
            }
            if !st.filling.contains_key(&hash) && !self.reserve(&mut st, file) {
                return;
            }
            // A chunk is read in several requests: it is queued once.
            let queued = st
                .filling
                .get_mut(&hash)
                .is_some_and(|f| !f.covers(span.0, span.1) && f.queue(span));
            if !queued {
                return;
            }
        }
        if let Err(crossbeam_channel::TrySendError::Full(_)) =
            self.queue.try_send((file.clone(), index, chunk.clone()))
            && let Some(fill) = self.state.lock().filling.get_mut(&hash)
        {
            fill.dequeued(span);
            fill.missed(file, index);
        }
    }

    /// Reserves room for a copy of `file` (its file is made by the writer): `false` when room
    /// cannot be made. The copies evicted for it are deleted by the writer.
    fn reserve(&self, st: &mut State, file: &FileEntry) -> bool {
        let hash = file.blake3;
        // Evicting would not make room: leave the others be.
        let evictable: u64 = st
            .copies
            .values()
            .filter(|c| c.held == 0)
            .map(|c| c.size)
            .sum();
        if st.used() - evictable + file.size > self.limit {
            log::info!(
                "'{}' ({} bytes) does not fit in the local tier: not copied",
                file.path,
                file.size
            );
            st.refused.insert(hash, std::time::Instant::now());
            return false;
        }
        while st.used() + file.size > self.limit {
            // There is one: what can be evicted makes room (checked above).
            let v = st
                .copies
                .iter()
                .filter(|(_, c)| c.held == 0)
                .min_by_key(|(_, c)| c.opened)
                .map(|(h, _)| *h);
            let Some(v) = v else { return false };
            st.copies.remove(&v);
            self.evicted.fetch_add(1, Ordering::Relaxed);
            st.evicted.push(v);
        }
        st.filling.insert(hash, Filling::new(file.size));
        true
    }

    pub fn report(&self) -> TierReport {
        let st = self.state.lock();
        TierReport {
            dir: self.dir.display().to_string(),
            limit: self.limit,
            used: st.used(),
            copies: st.copies.values().filter(|c| c.checked).count() as u64,
            filling: st.filling.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            damaged: self.damaged.load(Ordering::Relaxed),
            page_caches_dropped: self.page_caches_dropped.load(Ordering::Relaxed),
            reloaded: self.reloaded.load(Ordering::Relaxed),
        }
    }
}

/// Opens a regular file of the tier for reading; a link or anything else is refused.
fn open_nofollow(path: &Path) -> io::Result<File> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// The BLAKE3 of a whole file, hashed on every core.
fn hash_file(path: &Path) -> io::Result<Hash32> {
    let mut f = open_nofollow(path)?;
    let mut hasher = blake3::Hasher::new();
    // Small, for the same reason as `QUEUED` (it was 16 MiB).
    let mut buf = vec![0u8; 2 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update_rayon(&buf[..n]);
    }
    Ok(Hash32(*hasher.finalize().as_bytes()))
}

#[cfg(test)]
mod tests;
