//! Which bytes of each chunk of a file have gone to the kernel, so that the chunk cache can let go
//! of a chunk the page cache holds whole, and read-ahead can skip it.

use crate::cache::ChunkCache;
use crate::store::manifest::FileEntry;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of each chunk of a file sent to the kernel. Once all of a chunk has gone out through
/// the page cache (not `O_DIRECT`), the kernel holds it: the cache lets the chunk go (its buffer
/// serves the next chunk without fresh pages to zero, and a cold read of a large file keeps only
/// the chunks ahead of the reader) and read-ahead skips it. Counting bytes rather than watching
/// the offset works for readers that come back for skipped parts, as mmap loaders do. When the
/// kernel asks again for a chunk it had, it has dropped pages: the counts start over from there.
pub(super) struct SentBytes(Box<[AtomicU64]>);

impl SentBytes {
    pub(super) fn new(n_chunks: usize) -> SentBytes {
        SentBytes((0..n_chunks).map(|_| AtomicU64::new(0)).collect())
    }

    /// Whether all of chunk `index` of `file` was sent.
    pub(super) fn complete(&self, file: &FileEntry, index: usize) -> bool {
        self.0[index].load(Ordering::Relaxed) >= file.chunks[index].len
    }

    /// Bytes of chunk `index` sent so far.
    pub(super) fn sent(&self, index: usize) -> u64 {
        self.0[index].load(Ordering::Relaxed)
    }

    /// Chunk `index` (of `len` bytes) is in the page cache whole: it was stored there.
    pub(super) fn mark_complete(&self, index: usize, len: u64) {
        self.0[index].fetch_max(len, Ordering::Relaxed);
    }

    /// A read of `range` (chunks `first..=last`) is coming: if the kernel already had one of
    /// those chunks, it has dropped pages, likely the following ones too: counts start over for
    /// `first..until`. A read of only a page a chunk shares with its neighbour says nothing of
    /// the kind (the kernel reads such a page when it needs the neighbour's part).
    pub(super) fn on_read(
        &self,
        file: &FileEntry,
        range: &std::ops::Range<u64>,
        (first, last): (usize, usize),
        until: usize,
    ) {
        let again = |i: usize| self.complete(file, i) && !edge_page_only(&file.chunks[i], range);
        if (first..=last).any(again) {
            for sent in &self.0[first..until.max(last + 1).min(self.0.len())] {
                sent.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Records that `[offset, end)` of `file` was sent, and releases the chunks it completes.
    pub(super) fn record(
        &self,
        cache: &ChunkCache,
        file: &FileEntry,
        offset: u64,
        end: u64,
        first: usize,
    ) {
        for (c, sent) in file.chunks[first..].iter().zip(&self.0[first..]) {
            if c.offset >= end {
                break;
            }
            let part = end.min(c.offset + c.len) - offset.max(c.offset);
            let before = sent.fetch_add(part, Ordering::Relaxed);
            if before < c.len && before + part >= c.len {
                cache.release(&c.hash);
            }
        }
    }
}

/// Whether `range` touches chunk `c` (of more than two pages) only within its first or last page
/// (each shared with a neighbour when the chunk does not start or end on a page boundary).
fn edge_page_only(c: &crate::store::manifest::ChunkRef, range: &std::ops::Range<u64>) -> bool {
    use super::handover::PAGE;
    let (a, b) = (range.start.max(c.offset), range.end.min(c.offset + c.len));
    let head_end = (c.offset / PAGE + 1) * PAGE;
    let tail_start = (c.offset + c.len).saturating_sub(1) / PAGE * PAGE;
    c.len > 2 * PAGE && a < b && (b <= head_end || a >= tail_start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::ChunkBuf;

    /// A file of four 100-byte chunks, each cached.
    fn setup() -> (FileEntry, ChunkCache, SentBytes) {
        let file = FileEntry::of_chunks_for_test(&[100; 4]);
        let cache = ChunkCache::new(1 << 20);
        for c in &file.chunks {
            let buf = ChunkBuf::from_slice(&[1; 100]).unwrap();
            cache
                .get(c.hash, 100, std::time::Duration::from_secs(60), || Ok(buf))
                .0
                .unwrap();
        }
        let sent = SentBytes::new(4);
        (file, cache, sent)
    }

    #[test]
    fn a_chunk_goes_once_all_of_it_was_sent_in_any_order() {
        let (file, cache, sent) = setup();
        let cached = |i: usize| cache.contains_or_loading(&file.chunks[i].hash);
        // The second halves of chunks 0 and 1 first (a read straddling them), as mmap loaders do.
        sent.record(&cache, &file, 50, 150, 0);
        assert!(cached(0) && cached(1));
        sent.record(&cache, &file, 150, 200, 1);
        assert!(cached(0) && !cached(1), "chunk 1 is complete");
        assert!(sent.complete(&file, 1) && !sent.complete(&file, 0));
        sent.record(&cache, &file, 0, 50, 0);
        assert!(!cached(0) && sent.complete(&file, 0));
        assert!(cached(2) && cached(3));
    }

    #[test]
    fn a_chunk_asked_for_again_starts_the_counts_over() {
        let (file, cache, sent) = setup();
        sent.record(&cache, &file, 0, 250, 0);
        // A read of chunks still being sent changes nothing.
        sent.on_read(&file, &(200..300), (2, 2), 4);
        sent.record(&cache, &file, 250, 300, 2);
        assert!((0..3).all(|i| sent.complete(&file, i)));
        // The kernel came back for chunk 1, which it had: it dropped pages, so the counts of 1
        // and the window after it (up to 3) start over; chunk 0 stays complete.
        sent.on_read(&file, &(100..200), (1, 1), 3);
        assert!(sent.complete(&file, 0));
        assert!(!sent.complete(&file, 1) && !sent.complete(&file, 2));
        // Sent again, chunk 1 is complete again (and released again: nothing left to drop).
        sent.record(&cache, &file, 100, 200, 1);
        assert!(sent.complete(&file, 1));
    }

    #[test]
    fn a_read_of_a_page_shared_with_the_neighbour_starts_nothing_over() {
        // Chunks of 10000 bytes: chunk 1 (10000..20000) shares page 8192..12288 with chunk 0
        // and page 16384..20480 with chunk 2.
        let file = FileEntry::of_chunks_for_test(&[10_000; 3]);
        let cache = ChunkCache::new(1 << 20);
        let sent = SentBytes::new(3);
        sent.record(&cache, &file, 0, 30_000, 0);
        // The page chunks 1 and 2 share, asked for alone: chunk 1 stays complete.
        sent.on_read(&file, &(16_384..20_480), (1, 2), 3);
        assert!(sent.complete(&file, 1));
        // A page inside chunk 1: the kernel dropped pages, counts start over.
        sent.on_read(&file, &(12_288..16_384), (1, 1), 3);
        assert!(!sent.complete(&file, 1) && !sent.complete(&file, 2));
        assert!(sent.complete(&file, 0));
    }
}
