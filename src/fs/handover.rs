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

/// Puts bytes into a file's page cache (the FUSE adapter's store notification).
pub trait PageStore: Send + Sync {
    fn store(&self, ino: u64, offset: u64, bytes: &[u8]) -> std::io::Result<()>;
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
    index: usize,
    sent: Arc<SentBytes>,
}

pub(super) struct Handover {
    kernel: OnceLock<Arc<dyn PageStore>>,
    partial: Mutex<HashMap<Hash32, Partial>>,
    pool: Option<Workers>,
    /// Chunks stored into the page cache so far.
    pub handed: Arc<AtomicU64>,
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
        }
    }

    /// Evicted chunks go to `kernel` from now on.
    pub fn to(&self, kernel: Arc<dyn PageStore>) {
        let _ = self.kernel.set(kernel);
    }

    /// A read of chunks `first..=last` of file `ino` was recorded in `sent`: remembers the
    /// chunks the kernel has taken part of, forgets those it has whole.
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
                        index,
                        sent: sent.clone(),
                    },
                );
            }
        }
    }

    /// The chunk cache evicted `chunk`: if the kernel has taken part of it, stores it whole into
    /// the file's page cache. Called under the cache's lock: only queues the work.
    pub fn evicted(&self, key: &Hash32, chunk: &Chunk) {
        let (Some(kernel), Some(pool)) = (self.kernel.get(), &self.pool) else {
            return;
        };
        let Some(p) = self.partial.lock().remove(key) else {
            return;
        };
        if p.sent.sent(p.index) >= p.len || chunk.len() as u64 != p.len {
            return;
        }
        let (kernel, chunk, handed) = (kernel.clone(), chunk.clone(), self.handed.clone());
        let key = *key;
        let queued = pool.try_spawn(move || match kernel.store(p.ino, p.offset, &chunk) {
            Ok(()) => {
                p.sent.mark_complete(p.index, p.len);
                handed.fetch_add(1, Ordering::Relaxed);
                log::debug!("chunk {key}: stored into the page cache as it left the cache");
            }
            Err(e) => log::debug!("chunk {key}: the kernel did not take it ({e})"),
        });
        if !queued {
            log::debug!("chunk {key}: let go (the page cache handover is busy)");
        }
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
    }

    #[test]
    fn an_evicted_chunk_the_kernel_has_part_of_is_stored_whole_and_counts_as_sent() {
        let file = FileEntry::of_chunks_for_test(&[100; 3]);
        let sent = Arc::new(SentBytes::new(3));
        let kernel = Arc::new(Kernel::default());
        let h = Handover::new();
        h.to(kernel.clone());
        let cache = crate::cache::ChunkCache::new(1 << 20);
        // Chunk 0 sent whole, chunk 1 only in part (a read of 0..150).
        sent.record(&cache, &file, 0, 150, 0);
        h.noted(7, &file, (0, 1), &sent);
        let chunk = |i: u8| Arc::new(ChunkBuf::from_slice(&[i; 100]).unwrap());
        h.evicted(&file.chunks[0].hash, &chunk(0));
        h.evicted(&file.chunks[2].hash, &chunk(2));
        h.evicted(&file.chunks[1].hash, &chunk(1));
        let mut stored = kernel.0.lock();
        while stored.is_empty() {
            kernel.1.wait(&mut stored);
        }
        // Only the part-sent chunk, whole, at its place in file 7.
        assert_eq!(*stored, vec![(7, 100, vec![1u8; 100])]);
        drop(stored);
        while h.handed.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert!(sent.complete(&file, 1));
        assert_eq!(kernel.0.lock().len(), 1);
    }
}
