//! Sequential-read detection for one open file: after two reads in a row that continue where
//! the previous one ended (give or take the reordering of parallel kernel readahead), it asks for
//! the next chunks to be loaded ahead. Random reads ask for nothing.

use std::ops::Range;

/// Reads may arrive this far from the expected offset and still count as sequential: a large
/// read() makes the kernel send dozens of 1 MiB requests at once, which arrive out of order.
const SLACK: u64 = 16 << 20;

#[derive(Debug, Default)]
pub struct Readahead {
    next_offset: u64,
    streak: u32,
    /// Chunks below this index were already asked for.
    requested_until: usize,
}

impl Readahead {
    /// Records a read of `[offset, offset + len)` that touches chunks `first..=last`, and returns
    /// the chunk indices (below `n_chunks`) to load ahead, at most `window` past `last`.
    pub fn on_read(
        &mut self,
        offset: u64,
        len: u64,
        last: usize,
        n_chunks: usize,
        window: usize,
    ) -> Range<usize> {
        let sequential = offset == 0
            || (offset + SLACK >= self.next_offset && offset <= self.next_offset + SLACK);
        self.streak = if sequential {
            self.streak.saturating_add(1)
        } else {
            0
        };
        self.next_offset = self.next_offset.max(offset + len);
        if !sequential {
            self.next_offset = offset + len;
            self.requested_until = 0;
        }
        if self.streak < 2 || window == 0 {
            return 0..0;
        }
        let start = (last + 1).max(self.requested_until);
        let end = (last + 1 + window).min(n_chunks);
        if start >= end {
            return 0..0;
        }
        self.requested_until = end;
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = 1 << 20; // chunk size in these tests
    const R: u64 = 128 << 10; // kernel read size

    fn read(ra: &mut Readahead, offset: u64) -> Range<usize> {
        ra.on_read(offset, R, ((offset + R - 1) / C) as usize, 100, 4)
    }

    #[test]
    fn sequential_reads_prefetch_a_sliding_window() {
        let mut ra = Readahead::default();
        assert_eq!(read(&mut ra, 0), 0..0, "one read is not a pattern yet");
        assert_eq!(read(&mut ra, R), 1..5);
        assert_eq!(read(&mut ra, 2 * R), 0..0, "already requested");
        // Crossing into chunk 1 extends the window by one.
        assert_eq!(read(&mut ra, C), 5..6);
        // Near the end the window is cut at the last chunk.
        let mut offset = 2 * C;
        let mut asked = 6;
        while offset < 100 * C {
            let r = read(&mut ra, offset);
            if !r.is_empty() {
                assert_eq!(r.start, asked);
                asked = r.end;
            }
            offset += R;
        }
        assert_eq!(asked, 100);
    }

    #[test]
    fn random_reads_prefetch_nothing() {
        let mut ra = Readahead::default();
        let mut x: u64 = 12345;
        let mut total = 0;
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Uniform over a 4 GiB file.
            let offset = ((x >> 20) % (4096 * C)) / 4096 * 4096;
            total += ra
                .on_read(offset, 4096, (offset / C) as usize, 4096, 4)
                .len();
        }
        assert!(total < 20, "random reads triggered {total} prefetches");
    }

    #[test]
    fn slightly_reordered_reads_stay_sequential() {
        let mut ra = Readahead::default();
        read(&mut ra, 0);
        read(&mut ra, 2 * R);
        assert_eq!(read(&mut ra, R), 0..0);
        assert_eq!(read(&mut ra, 3 * R), 0..0);
        assert_eq!(read(&mut ra, 9 * R), 5..6);
    }
}
