//! Read-ahead: loading a file's chunks before a reader asks for them. `stream.rs` tells a
//! sequential reader from a random one; `tensor.rs` keeps read-ahead inside the tensor being
//! read unless the reader has shown it goes on to the next ones; `keys.rs` knows where a
//! `safe_open` loop, which asks for tensors by name, jumps next; this file decides how far ahead
//! to go (the `--prefetch` cap, the cache budget, the tensor's reach), how many loads run at
//! once (more when a member is a round trip away), and turns each read into a `Plan`. The mount
//! carries the plan out on its prefetch pool, skipping chunks the cache or the kernel already
//! hold.

mod keys;
mod stream;
mod tensor;

use crate::store::manifest::FileEntry;
use std::ops::Range;
use std::time::Duration;
pub use stream::{Advice, Stream};

/// Chunks loaded ahead of a sequential reader by default, per decompression thread.
const WINDOW_PER_THREAD: usize = 8;
/// Further read-ahead loads in flight when a member is remote: they wait on the network, not
/// on a core. 8 x 4 MiB chunks cover 10 Gbit/s at 25 ms.
const REMOTE_IN_FLIGHT: usize = 8;
/// A member whose median answer takes longer than this is far: a round trip, not a disk seek.
pub const FAR: Duration = Duration::from_millis(5);

/// The `--prefetch` default for a mount decompressing on `threads` cores.
pub fn default_window(threads: usize) -> usize {
    WINDOW_PER_THREAD * threads.max(1)
}

/// Read-ahead loads that run at once: twice the cores (while some wait for a chunk file to come
/// off the disk, the others keep the cores decompressing), and more when a member is `remote`
/// (its answer takes a round trip: more chunks in flight cover its bandwidth x latency).
pub fn loaders(threads: usize, remote: bool) -> usize {
    2 * threads.max(1) + if remote { REMOTE_IN_FLIGHT } else { 0 }
}

/// How far a mount reads ahead.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// At most this many chunks past the one being read (`--prefetch`).
    pub max_window: usize,
    /// The chunk cache's budget: chunks loaded ahead take at most half of it.
    pub cache_budget: u64,
    /// How far the kernel reads ahead of a reader (the mount's `--read-ahead`): reads this far
    /// past a tensor's end do not yet say the reader went on to the next tensor.
    pub kernel_ahead: u64,
    /// Whether read-ahead stays in the tensor being read until the reader goes on (see
    /// `tensor.rs`): on a store with a member a network away, where every byte loaded ahead
    /// for nothing is paid for in transfer (and, on an object store, in money). On local disks a
    /// wide window costs a disk read, and keeps the cores decoding at every tensor's end (a cold
    /// `dd` of a file of 16 MiB tensors ran 7% slower with the reach).
    pub tensor_reach: bool,
}

/// What one read asks of read-ahead.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// How many chunks past the read the window reaches.
    pub window: usize,
    /// Chunks to load ahead (those the cache or the kernel hold are skipped by the mount).
    pub fetch: Range<usize>,
    /// Chunks elsewhere in the file to load ahead: where a reader following name order jumps.
    pub elsewhere: Range<usize>,
    /// Chunks the reader has left behind: first to go when memory is needed.
    pub release: Range<usize>,
    /// Whether the reads are a stream.
    pub streaming: bool,
}

impl Policy {
    /// The window after a read ending in chunk `last` of `file`: the `--prefetch` cap, cut so
    /// that it takes at most half of the cache, then stretched (by at most half again, never past
    /// the cache cut) to finish the tensor the window's last chunk holds: a loader wants that
    /// tensor whole before it moves on.
    pub fn window(&self, file: &FileEntry, last: usize) -> usize {
        let chunk_len = file.chunks[last].len.max(1);
        let by_cache = (self.cache_budget / (2 * chunk_len)) as usize;
        let window = self.max_window.min(by_cache);
        let Some(edge) = file.chunks.get(last + window) else {
            return window;
        };
        let Some(open) = edge.tensors.last() else {
            return window;
        };
        let stretch = file.chunks[last + window + 1..]
            .iter()
            .take_while(|c| c.tensors.first().is_some_and(|t| t.name == open.name))
            .count();
        window + stretch.min(window / 2).min(by_cache.saturating_sub(window))
    }

    /// What the read of `range` (chunks `first..=last` of `file`) through `stream` asks for.
    /// `latency` is the median answer of the member holding chunk `last`, when known. The window
    /// is cut at the tensor's reach (see `tensor.rs`): past the end of the tensor being read only
    /// as far as the reader has earned by going on from one tensor into the next.
    pub fn plan(
        &self,
        stream: &mut Stream,
        file: &FileEntry,
        range: Range<u64>,
        (first, last): (usize, usize),
        latency: impl FnOnce() -> Option<Duration>,
    ) -> Plan {
        let mut window = self.window(file, last);
        let continues = stream.continues(range.start);
        let reach = stream.tensor.on_read(
            file,
            (continues, range.end),
            last,
            (self.kernel_ahead, window + 1, self.max_window),
        );
        if let Some(reach) = reach.filter(|_| self.tensor_reach) {
            // The chunk after the one being read is always asked for: the kernel's own
            // read-ahead runs past it anyway, and a stream never waits on a load it could see.
            window = window.min(reach.saturating_sub(last).max(1));
        }
        let elsewhere = stream.names.on_read(
            file,
            (continues, &range),
            (first, last),
            (last + window, tensor::KERNEL_WINDOWS * self.kernel_ahead),
        );
        let Advice {
            ahead,
            behind,
            streaming,
        } = stream.on_read(
            range.start,
            range.end - range.start,
            (first, last),
            file.chunks.len(),
            window,
            || latency().is_some_and(|l| l > FAR),
        );
        Plan {
            window,
            fetch: ahead,
            elsewhere: if streaming { elsewhere } else { 0..0 },
            release: behind,
            streaming,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunking::TensorTag;
    use crate::codec::{Codec, Hash32};
    use crate::store::manifest::ChunkRef;

    pub(super) const C: u64 = 1 << 20;

    /// A file of 1 MiB chunks, chunk i holding the tensors `names[i]` (comma-separated).
    pub(super) fn file(names: &[&str]) -> FileEntry {
        let chunks = names
            .iter()
            .enumerate()
            .map(|(i, n)| ChunkRef {
                offset: i as u64 * C,
                len: C,
                hash: Hash32::of(&i.to_le_bytes()),
                codec: Codec::None,
                stored_len: C,
                members: vec![],
                tensors: n
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(|t| TensorTag {
                        name: t.into(),
                        dtype: "BF16".into(),
                    })
                    .collect(),
                delta: None,
                inline: None,
            })
            .collect();
        FileEntry {
            path: "f".into(),
            size: names.len() as u64 * C,
            mode: 0o644,
            mtime_secs: 0,
            mtime_nanos: 0,
            blake3: Hash32::of(b"f"),
            chunks,
            lossy: None,
        }
    }

    fn policy(max_window: usize, cache_budget: u64) -> Policy {
        Policy {
            max_window,
            cache_budget,
            kernel_ahead: 0,
            tensor_reach: true,
        }
    }

    #[test]
    fn the_window_is_the_cap_cut_to_half_the_cache() {
        let f = file(&[""; 100]);
        assert_eq!(policy(16, 1 << 30).window(&f, 0), 16);
        assert_eq!(
            policy(16, 8 * C).window(&f, 0),
            4,
            "half of 8 chunks of cache"
        );
        assert_eq!(policy(16, C).window(&f, 0), 0, "no room: nothing ahead");
        assert_eq!(
            policy(0, 1 << 30).window(&f, 0),
            0,
            "--prefetch 0 turns it off"
        );
    }

    #[test]
    fn the_window_stretches_to_finish_the_tensor_it_ends_in_by_at_most_half() {
        // Chunks 0-1 hold "a", 2-9 hold "b" (it starts in chunk 1), 10 on hold "c".
        let mut names = vec!["a", "a,b"];
        names.extend(["b"; 8]);
        names.extend(["c"; 20]);
        let f = file(&names);
        // From chunk 0 a window of 4 ends in chunk 4, inside "b" (up to chunk 9): +2 at most.
        assert_eq!(policy(4, 1 << 30).window(&f, 0), 6);
        // A window of 8 ends in chunk 8: one more chunk finishes "b".
        assert_eq!(policy(8, 1 << 30).window(&f, 0), 9);
        // Never past the cache's half: 12 chunks of cache allow 6.
        assert_eq!(policy(4, 12 * C).window(&f, 0), 6);
        assert_eq!(policy(4, 10 * C).window(&f, 0), 5);
        // An untagged file, or a window ending at a tensor's end, is not stretched.
        assert_eq!(policy(4, 1 << 30).window(&file(&[""; 30]), 0), 4);
        assert_eq!(policy(9, 1 << 30).window(&f, 0), 9);
        // Near the end of the file the window is what it is (the stream cuts it at the end).
        assert_eq!(policy(4, 1 << 30).window(&f, 28), 4);
    }

    #[test]
    fn a_plan_loads_ahead_of_a_stream_and_a_far_member_starts_it_one_read_sooner() {
        let f = file(&[""; 100]);
        let p = policy(4, 1 << 30);
        let near = || Some(Duration::from_micros(300));
        let far = || Some(Duration::from_millis(30));
        let read = |s: &mut Stream, at: u64, latency: &dyn Fn() -> Option<Duration>| {
            let c = (at / C) as usize;
            p.plan(s, &f, at..at + 4096, (c, c), latency).fetch
        };
        let (mut a, mut b) = (Stream::default(), Stream::default());
        assert_eq!(read(&mut a, 4096, &near), 0..0);
        assert_eq!(read(&mut a, 8192, &near), 1..5);
        assert_eq!(read(&mut b, 4096, &far), 1..5);
        // No latency known yet counts as near.
        let mut c = Stream::default();
        assert_eq!(read(&mut c, 4096, &|| None), 0..0);
        // The window reported is the one the plan used.
        let mut d = Stream::default();
        let plan = p.plan(&mut d, &f, 0..4096, (0, 0), near);
        assert_eq!((plan.window, plan.fetch), (4, 0..0));
    }

    #[test]
    fn loaders_cover_the_cores_and_a_remote_members_round_trip() {
        assert_eq!(loaders(2, false), 4);
        assert_eq!(loaders(2, true), 4 + REMOTE_IN_FLIGHT);
        assert_eq!(loaders(0, false), 2, "at least one core");
        assert_eq!(default_window(2), 16);
    }
}
