//! Handing a partly read chunk to the kernel's page cache when the chunk cache must let it go.
//! An mmap loader touches the first page of every tensor before it reads them through, so the
//! kernel takes a little of many chunks and comes back for the rest seconds later; a cache
//! smaller than those chunks together evicts them in between, and each would be fetched and
//! decoded again. Instead, an evicted chunk the kernel has taken part of is stored whole into the
//! file's page cache (FUSE's store notification) on a thread of its own, so the kernel has the
//! rest when it comes back. The store waits for pages the kernel is reading (their reads are
//! answered by the reader threads, which never wait for it); when its short queue is full, the
//! chunk is simply let go, as before.

use super::sent::SentBytes;
use crate::cache::Chunk;
use crate::codec::Hash32;
use crate::store::manifest::FileEntry;
use crate::workers::Workers;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The kernel's page cache of the mount's files, as the FUSE adapter's notifications reach it.
pub trait PageStore: Send + Sync {
    /// Puts bytes into a file's page cache.
    fn store(&self, ino: u64, offset: u64, bytes: &[u8]) -> std::io::Result<()>;
    /// Empties a file's page cache.
    fn invalidate(&self, ino: u64) -> std::io::Result<()>;
}

/// Chunks waiting to be stored, beyond the one being stored: each holds its memory until then.
const WAITING: usize = 4;

/// The most partly sent chunks remembered (far more than any cache holds).
const REMEMBERED: usize = 1 << 16;

/// Where a partly sent chunk sits.
struct Partial {
    ino: u64,
    offset: u64,
    len: u64,
    /// The file's size: a chunk at its end stores its last, partial page too.
    file_size: u64,
    /// The chunks before and after it in the file, whose bytes complete the pages it shares.
    prev: Option<Hash32>,
    next: Option<Hash32>,
    index: usize,
    sent: Arc<SentBytes>,
}

pub(super) struct Handover {
    kernel: OnceLock<Arc<dyn PageStore>>,
    partial: Mutex<HashMap<Hash32, Partial>>,
    pool: Option<Workers>,
    /// Chunks stored into the page cache so far.
    pub handed: Arc<AtomicU64>,
    /// Chunks let go instead: the queue was full, or the kernel did not take them.
    pub missed: Arc<AtomicU64>,
}

impl Handover {
    pub fn new() -> Handover {
        Handover {
            kernel: OnceLock::new(),
            partial: Mutex::new(HashMap::new()),
            pool: Workers::with_queue("handover", 1, Some(WAITING))
                .map_err(|e| log::warn!("cannot start the page cache handover thread: {e}"))
                .ok(),
            handed: Arc::new(AtomicU64::new(0)),
            missed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Evicted chunks go to `kernel` from now on.
    pub fn to(&self, kernel: Arc<dyn PageStore>) {
        let _ = self.kernel.set(kernel);
    }

    /// The kernel's page cache, once the session has started.
    pub fn kernel(&self) -> Option<&Arc<dyn PageStore>> {
        self.kernel.get()
    }

    /// A read of chunks `first..=last` of file `ino` is about to be answered: remembers the
    /// chunks the kernel takes part of, forgets those it has whole (as `sent` records).
    pub fn noted(
        &self,
        ino: u64,
        file: &FileEntry,
        (first, last): (usize, usize),
        sent: &Arc<SentBytes>,
    ) {
        if self.kernel.get().is_none() {
            return;
        }
        let mut partial = self.partial.lock();
        for index in first..=last {
            let c = &file.chunks[index];
            if sent.complete(file, index) {
                partial.remove(&c.hash);
            } else {
                if partial.len() >= REMEMBERED {
                    partial.clear();
                }
                partial.insert(
                    c.hash,
                    Partial {
                        ino,
                        offset: c.offset,
                        len: c.len,
                        file_size: file.size,
                        prev: index.checked_sub(1).map(|i| file.chunks[i].hash),
                        next: file.chunks.get(index + 1).map(|c| c.hash),
                        index,
                        sent: sent.clone(),
                    },
                );
            }
        }
    }

    /// The chunk cache evicted `chunk`: if the kernel has taken part of it, stores it whole into
    /// the file's page cache. Called under the cache's lock, with a look at what it still holds
    /// (`cached`): only copies the neighbours' bytes of the pages shared with them, and queues.
    pub fn evicted(&self, key: &Hash32, chunk: &Chunk, cached: &dyn Fn(&Hash32) -> Option<Chunk>) {
        let (Some(kernel), Some(pool)) = (self.kernel.get(), &self.pool) else {
            return;
        };
        let Some(p) = self.partial.lock().remove(key) else {
            return;
        };
        if p.sent.sent(p.index) >= p.len || chunk.len() as u64 != p.len {
            return;
        }
        let pages = Pages::of(&p, chunk, cached);
        let (kernel, chunk) = (kernel.clone(), chunk.clone());
        let (handed, missed) = (self.handed.clone(), self.missed.clone());
        let key = *key;
        let queued = pool.try_spawn(move || match pages.store(&*kernel, p.ino, &chunk) {
            Ok(()) => {
                p.sent.mark_complete(p.index, p.len);
                handed.fetch_add(1, Ordering::Relaxed);
                log::debug!("chunk {key}: stored into the page cache as it left the cache");
            }
            Err(e) => {
                missed.fetch_add(1, Ordering::Relaxed);
                log::debug!("chunk {key}: the kernel did not take it ({e})")
            }
        });
        if !queued {
            self.missed.fetch_add(1, Ordering::Relaxed);
            log::debug!("chunk {key}: let go (the page cache handover is busy)");
        }
    }
}

/// The kernel's page size, in which its page cache is filled and read.
pub(super) const PAGE: u64 = 4096;

/// What of a chunk goes into the page cache, in whole pages: a page stored in part is kept by
/// the kernel as one still to read, and asked for alone later (which would load the chunk again).
/// The pages it shares with its neighbours are completed from them when they are still cached,
/// and left out otherwise.
struct Pages {
    /// Where the chunk starts in the file.
    offset: u64,
    /// Where in the file the chunk's own whole pages lie.
    inner: std::ops::Range<u64>,
    /// The page it shares with the chunk before it, completed, at its place in the file.
    head: Option<(u64, Vec<u8>)>,
    /// The page it shares with the chunk after it, completed (or the file's last page).
    tail: Option<(u64, Vec<u8>)>,
}

impl Pages {
    fn of(p: &Partial, chunk: &[u8], cached: &dyn Fn(&Hash32) -> Option<Chunk>) -> Pages {
        let (start, end) = (p.offset, p.offset + p.len);
        let inner_start = start.div_ceil(PAGE) * PAGE;
        let inner_end = if end == p.file_size {
            end
        } else {
            end / PAGE * PAGE
        };
        if inner_start > inner_end {
            // A chunk inside one page: nothing of it is stored.
            return Pages {
                offset: start,
                inner: start..start,
                head: None,
                tail: None,
            };
        }
        let neighbour = |hash: Option<Hash32>| hash.and_then(|h| cached(&h));
        let mut head = None;
        if start < inner_start && inner_start <= end {
            let page = inner_start - PAGE;
            let need = (start - page) as usize;
            if let Some(prev) = neighbour(p.prev).filter(|c| c.len() >= need) {
                let mut bytes = prev[prev.len() - need..].to_vec();
                bytes.extend_from_slice(&chunk[..(inner_start - start) as usize]);
                head = Some((page, bytes));
            }
        }
        let mut tail = None;
        if inner_end < end {
            let page_end = (inner_end + PAGE).min(p.file_size);
            let need = (page_end - end) as usize;
            if let Some(next) = neighbour(p.next).filter(|c| c.len() >= need) {
                let mut bytes = chunk[(inner_end - start) as usize..].to_vec();
                bytes.extend_from_slice(&next[..need]);
                tail = Some((inner_end, bytes));
            }
        }
        Pages {
            offset: start,
            inner: inner_start..inner_end,
            head,
            tail,
        }
    }

    /// Stores them into file `ino`'s page cache; `chunk` is the chunk's bytes.
    fn store(&self, kernel: &dyn PageStore, ino: u64, chunk: &[u8]) -> std::io::Result<()> {
        if let Some((at, bytes)) = &self.head {
            kernel.store(ino, *at, bytes)?;
        }
        if !self.inner.is_empty() {
            let from = (self.inner.start - self.offset) as usize;
            let to = (self.inner.end - self.offset) as usize;
            kernel.store(ino, self.inner.start, &chunk[from..to])?;
        }
        if let Some((at, bytes)) = &self.tail {
            kernel.store(ino, *at, bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::ChunkBuf;

    #[derive(Default)]
    struct Kernel(Mutex<Vec<(u64, u64, Vec<u8>)>>, parking_lot::Condvar);

    impl PageStore for Kernel {
        fn store(&self, ino: u64, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
            self.0.lock().push((ino, offset, bytes.to_vec()));
            self.1.notify_all();
            Ok(())
        }

        fn invalidate(&self, _ino: u64) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A handover to a kernel that records what it is given, of a file of three 10000-byte
    /// chunks (not page aligned) whose chunk `i` holds bytes `i`, once the kernel took
    /// bytes `0..taken`.
    fn setup(taken: u64) -> (FileEntry, Arc<SentBytes>, Arc<Kernel>, Handover) {
        let file = FileEntry::of_chunks_for_test(&[10_000; 3]);
        let sent = Arc::new(SentBytes::new(3));
        let kernel = Arc::new(Kernel::default());
        let h = Handover::new();
        h.to(kernel.clone());
        let cache = crate::cache::ChunkCache::new(1 << 20);
        sent.record(&cache, &file, 0, taken, 0);
        h.noted(7, &file, (0, ((taken - 1) / 10_000) as usize), &sent);
        (file, sent, kernel, h)
    }

    fn chunk(i: u8) -> Chunk {
        Arc::new(ChunkBuf::from_slice(&[i; 10_000]).unwrap())
    }

    /// What the kernel was given once `h` handed one chunk over, as (file offset, bytes) runs.
    fn given(h: &Handover, kernel: &Kernel) -> Vec<(u64, Vec<u8>)> {
        let mut stored = kernel.0.lock();
        while h.handed.load(Ordering::SeqCst) == 0 {
            kernel
                .1
                .wait_for(&mut stored, std::time::Duration::from_millis(10));
        }
        stored.iter().map(|(_, at, b)| (*at, b.clone())).collect()
    }

    /// The bytes of that file in `range`.
    fn file_bytes(range: std::ops::Range<u64>) -> Vec<u8> {
        range.map(|at| (at / 10_000) as u8).collect()
    }

    #[test]
    fn an_evicted_chunk_the_kernel_has_part_of_is_stored_whole_and_counts_as_sent() {
        // Chunk 0 taken whole, chunk 1 in part, chunk 2 not at all.
        let (file, sent, kernel, h) = setup(15_000);
        let all = |k: &Hash32| {
            (0..3u8)
                .find(|&i| file.chunks[i as usize].hash == *k)
                .map(chunk)
        };
        h.evicted(&file.chunks[0].hash, &chunk(0), &all);
        h.evicted(&file.chunks[2].hash, &chunk(2), &all);
        h.evicted(&file.chunks[1].hash, &chunk(1), &all);
        // Only the part-taken chunk, in whole pages: those it shares with chunks 0 and 2
        // completed from them, at their places in file 7.
        let given = given(&h, &kernel);
        let at: Vec<u64> = given.iter().map(|(at, _)| *at).collect();
        assert_eq!(at, vec![8192, 12_288, 16_384]);
        assert_eq!(
            given
                .iter()
                .flat_map(|(_, b)| b.clone())
                .collect::<Vec<u8>>(),
            file_bytes(8192..20_480)
        );
        assert!(kernel.0.lock().iter().all(|(ino, _, _)| *ino == 7));
        assert!(sent.complete(&file, 1));
    }

    #[test]
    fn pages_shared_with_neighbours_no_longer_cached_are_left_out() {
        let (file, sent, kernel, h) = setup(15_000);
        h.evicted(&file.chunks[1].hash, &chunk(1), &|_| None);
        let given = given(&h, &kernel);
        assert_eq!(given, vec![(12_288, file_bytes(12_288..16_384))]);
        assert!(sent.complete(&file, 1));
    }

    #[test]
    fn the_last_chunk_stores_the_files_last_page_in_part() {
        // The kernel took a little of chunk 2; chunk 1 is no longer cached.
        let (file, _, kernel, h) = setup(20_100);
        h.evicted(&file.chunks[2].hash, &chunk(2), &|_| None);
        assert_eq!(
            given(&h, &kernel),
            vec![(20_480, file_bytes(20_480..30_000))]
        );
    }
}
