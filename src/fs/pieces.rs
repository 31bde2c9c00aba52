//! What a read needs from the chunk cache: whole chunks, or, for a chunk larger than the whole
//! cache, windows of it (each a quarter of the cache at most, cached under a key of its own).
//! A window is decoded from the chunk in pieces and checked against the chunk's hash before it
//! is cached (`Store::load_window_into`), so memory stays within the budget however large the
//! chunks a manifest or a member claims.

use crate::codec::Hash32;
use crate::store::manifest::FileEntry;
use std::ops::Range;

/// One buffer a read needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The chunk it is of.
    pub index: usize,
    /// Its cache key: the chunk's hash, or the window's own key.
    pub key: Hash32,
    /// Where it starts in the file.
    pub start: u64,
    /// Its bytes within the chunk, for a window (`None`: the whole chunk).
    pub window: Option<Range<u64>>,
}

/// Whether a chunk of `len` bytes is read in windows under a cache of `capacity` bytes.
pub fn windowed(len: u64, capacity: u64) -> bool {
    len > capacity
}

/// The length of the windows a chunk larger than a cache of `capacity` bytes is read in: a
/// quarter of the cache, in whole 64 KiB.
pub fn window_len(capacity: u64) -> u64 {
    (capacity / 4 / (64 << 10)).max(1) * (64 << 10)
}

/// The cache key of window `k` (of `len` bytes each) of chunk `hash`.
fn window_key(hash: &Hash32, k: u64, len: u64) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"shardfs chunk window");
    h.update(&hash.0);
    h.update(&k.to_le_bytes());
    h.update(&len.to_le_bytes());
    Hash32(*h.finalize().as_bytes())
}

/// The pieces holding bytes `range` of `file` (inside it), chunks `first..=last`, in order.
pub fn pieces(
    file: &FileEntry,
    range: &Range<u64>,
    (first, last): (usize, usize),
    capacity: u64,
) -> Vec<Piece> {
    let mut out = Vec::new();
    for index in first..=last {
        let c = &file.chunks[index];
        if !windowed(c.len, capacity) {
            out.push(Piece {
                index,
                key: c.hash,
                start: c.offset,
                window: None,
            });
            continue;
        }
        let w = window_len(capacity);
        let from = range.start.max(c.offset) - c.offset;
        let to = range.end.min(c.offset + c.len) - c.offset;
        for k in from / w..to.div_ceil(w) {
            let start = k * w;
            out.push(Piece {
                index,
                key: window_key(&c.hash, k, w),
                start: c.offset + start,
                window: Some(start..(start + w).min(c.len)),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_chunks_are_whole_and_large_ones_come_in_windows() {
        let mib = 1 << 20;
        // A 4 MiB cache: windows of 1 MiB; chunk 1 (10 MiB) is windowed, 0 and 2 are not.
        let f = FileEntry::of_chunks_for_test(&[4 * mib, 10 * mib, 2 * mib]);
        let all = pieces(&f, &(0..16 * mib), (0, 2), 4 * mib);
        assert_eq!(all.len(), 1 + 10 + 1);
        assert_eq!(all[0].window, None);
        assert_eq!(all[1].window, Some(0..mib));
        assert_eq!(all[10].window, Some(9 * mib..10 * mib));
        assert_eq!(all[11].start, 14 * mib);
        // Keys differ between windows and from the chunk's own.
        assert_ne!(all[1].key, all[2].key);
        assert_ne!(all[1].key, f.chunks[1].hash);
        // A read inside one window needs that window only; its bytes sum up.
        let one = pieces(&f, &(6 * mib + 5..6 * mib + 9), (1, 1), 4 * mib);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].start, 6 * mib);
        assert_eq!(one[0].window, Some(2 * mib..3 * mib));
        // The last window of a chunk that is not a whole number of windows is short.
        let g = FileEntry::of_chunks_for_test(&[5 * mib + 3]);
        let tail = pieces(&g, &(5 * mib..5 * mib + 3), (0, 0), 4 * mib);
        assert_eq!(tail[0].window, Some(5 * mib..5 * mib + 3));
    }
}
