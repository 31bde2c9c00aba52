//! Sequential-read detection for one open file: after two reads in a row that continue where
//! the previous one ended (give or take the reordering of parallel kernel readahead), or one when
//! the chunks come from a far member, it asks for the next chunks to be loaded ahead, and names
//! the chunks the stream has left behind so the cache can let them go first (a file larger than
//! the cache then does not evict the chunks loaded ahead before they are read). Random reads ask
//! for nothing. How wide the window is, is `Policy`'s business (mod.rs).

use super::keys::ByName;
use super::tensor::InTensor;
use std::ops::Range;

/// Reads may arrive this far from the expected offset and still count as sequential: a large
/// read() makes the kernel send dozens of 1 MiB requests at once, which arrive out of order.
const SLACK: u64 = 16 << 20;

/// Chunks this far behind the current read are still kept as recently used: reordered reads
/// may come back for them.
const BEHIND_MARGIN: usize = 4;

#[derive(Debug, Default)]
pub struct Stream {
    next_offset: u64,
    streak: u32,
    /// Chunks below this index were already asked for.
    requested_until: usize,
    /// Chunks below this index were already reported as left behind.
    passed_until: usize,
    /// The tensor the reader is in, and how far past it read-ahead may reach.
    pub(super) tensor: InTensor,
    /// The reader's jumps against the file's name order.
    pub(super) names: ByName,
}

/// What a read suggests to the cache.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advice {
    /// Chunks to load ahead.
    pub ahead: Range<usize>,
    /// Chunks the stream has passed: first to go when memory is needed.
    pub behind: Range<usize>,
    /// Whether the reads are a stream (then chunks are loaded whole, ahead of the reader).
    pub streaming: bool,
}

impl Stream {
    /// Records a read of `[offset, offset + len)` that touches chunks `first..=last`: the chunk
    /// indices (below `n_chunks`) to load ahead, at most `window` past `last`, and those left
    /// behind. `far` tells whether the chunks come from a member a round trip away, where waiting for a
    /// second read to confirm the stream costs a round trip of its own.
    pub fn on_read(
        &mut self,
        offset: u64,
        len: u64,
        (first, last): (usize, usize),
        n_chunks: usize,
        window: usize,
        far: impl FnOnce() -> bool,
    ) -> Advice {
        let sequential = self.continues(offset);
        self.streak = if sequential {
            self.streak.saturating_add(1)
        } else {
            0
        };
        self.next_offset = self.next_offset.max(offset + len);
        if !sequential {
            self.next_offset = offset + len;
            self.requested_until = 0;
            self.passed_until = first;
        }
        // A read at offset 0 counts as continuing, but alone it says nothing of the next one.
        let trusted = self.streak >= 2 || (self.streak >= 1 && offset > 0 && far());
        if !trusted {
            return Advice::default();
        }
        let mut advice = Advice {
            streaming: true,
            ..Advice::default()
        };
        let behind_end = first.saturating_sub(BEHIND_MARGIN);
        if behind_end > self.passed_until {
            advice.behind = self.passed_until..behind_end;
            self.passed_until = behind_end;
        }
        let start = (last + 1).max(self.requested_until);
        let end = (last + 1 + window).min(n_chunks);
        if window > 0 && start < end {
            self.requested_until = end;
            advice.ahead = start..end;
        }
        advice
    }

    /// Whether a read at `offset` continues the stream (give or take `SLACK`); one at 0 always
    /// counts as a start.
    pub fn continues(&self, offset: u64) -> bool {
        offset == 0 || (offset + SLACK >= self.next_offset && offset <= self.next_offset + SLACK)
    }

    /// Whether the stream has gone past `end` (a chunk's end): a load ahead of that chunk that
    /// has not run yet would come too late, and would load again a chunk the reader may have
    /// taken and let go meanwhile.
    pub fn passed(&self, end: u64) -> bool {
        self.next_offset > end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = 1 << 20; // chunk size in these tests
    const R: u64 = 128 << 10; // kernel read size

    fn read(ra: &mut Stream, offset: u64) -> Range<usize> {
        let chunks = ((offset / C) as usize, ((offset + R - 1) / C) as usize);
        ra.on_read(offset, R, chunks, 100, 4, || false).ahead
    }

    #[test]
    fn sequential_reads_prefetch_a_sliding_window() {
        let mut ra = Stream::default();
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
        let mut ra = Stream::default();
        let mut x: u64 = 12345;
        let mut total = 0;
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Uniform over a 4 GiB file.
            let offset = ((x >> 20) % (4096 * C)) / 4096 * 4096;
            let advice = ra.on_read(
                offset,
                4096,
                ((offset / C) as usize, (offset / C) as usize),
                4096,
                4,
                || false,
            );
            total += advice.ahead.len() + advice.behind.len();
        }
        assert!(total < 20, "random reads triggered {total} prefetches");
    }

    #[test]
    fn chunks_left_behind_are_reported_once() {
        let mut ra = Stream::default();
        let mut behind = Vec::new();
        let mut offset = 0;
        while offset < 20 * C {
            let chunks = ((offset / C) as usize, ((offset + R - 1) / C) as usize);
            behind.extend(ra.on_read(offset, R, chunks, 100, 4, || false).behind);
            offset += R;
        }
        // The stream is in chunk 19: chunks up to 19 - BEHIND_MARGIN are behind it, each once.
        assert_eq!(behind, (0..19 - BEHIND_MARGIN).collect::<Vec<_>>());
        // A jump starts over from where it landed: nothing before it is reported.
        let chunks = (60, 60);
        assert_eq!(
            ra.on_read(60 * C, R, chunks, 100, 4, || false),
            Advice::default()
        );
        ra.on_read(60 * C + R, R, chunks, 100, 4, || false);
        let a = ra.on_read(70 * C, R, (70, 70), 100, 4, || false);
        assert_eq!(a.behind, 60..66);
    }

    #[test]
    fn a_far_member_trusts_a_stream_one_read_sooner_but_not_a_lone_read_at_zero() {
        let mut near = Stream::default();
        let mut far = Stream::default();
        let at = |ra: &mut Stream, offset: u64, far: bool| {
            let c = (offset / C) as usize;
            ra.on_read(offset, R, (c, c), 100, 4, || far).ahead
        };
        assert_eq!(
            at(&mut far, 0, true),
            0..0,
            "a header read at 0 is no stream"
        );
        assert_eq!(at(&mut far, 50 * C, true), 0..0, "a jump is no stream");
        assert_eq!(
            at(&mut far, 50 * C + R, true),
            51..55,
            "one read continues it"
        );
        assert_eq!(at(&mut near, 50 * C, false), 0..0);
        assert_eq!(
            at(&mut near, 50 * C + R, false),
            0..0,
            "near waits for a second"
        );
        assert_eq!(at(&mut near, 50 * C + 2 * R, false), 51..55);
        // A fresh stream that starts just past 0 (a loader skipping a header): far goes at once.
        let (mut near, mut far) = (Stream::default(), Stream::default());
        assert_eq!(at(&mut near, R, false), 0..0);
        assert_eq!(at(&mut far, R, true), 1..5);
    }

    #[test]
    fn slightly_reordered_reads_stay_sequential() {
        let mut ra = Stream::default();
        read(&mut ra, 0);
        read(&mut ra, 2 * R);
        assert_eq!(read(&mut ra, R), 0..0);
        assert_eq!(read(&mut ra, 3 * R), 0..0);
        assert_eq!(read(&mut ra, 9 * R), 5..6);
    }

    #[test]
    fn a_chunk_is_passed_once_the_stream_reads_beyond_its_end() {
        let mut ra = Stream::default();
        read(&mut ra, 0);
        read(&mut ra, R);
        assert!(!ra.passed(C), "chunk 0 is still being read");
        read(&mut ra, C);
        assert!(ra.passed(C) && !ra.passed(2 * C));
        // A jump back starts over: what lies ahead of it is not passed.
        read(&mut ra, 40 * C);
        read(&mut ra, 3 * R);
        assert!(!ra.passed(C));
    }
}
