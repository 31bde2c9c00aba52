//! The mount's open file handles (each one's data source and read-ahead state) and what the
//! mount is doing now, for `status` and `/metrics`: the files open and what each has read, the
//! bytes served over the last seconds, the reads waiting for a chunk and the read-ahead loads in
//! flight. A loader that is slow shows reads served quickly and none
//! waiting; a member that is slow shows reads waiting and its latency.

use crate::readahead::Stream;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Seconds the recent throughput is averaged over (whole seconds before the current one).
const RECENT_SECS: u64 = 5;
const SLOTS: usize = 8;

/// Where an open file's bytes come from.
pub(super) enum Source {
    /// The store's chunks, through the cache.
    Chunks,
    /// The file's local copy, read by the daemon.
    Copy(std::fs::File),
    /// The file's local copy, read by the kernel itself (FUSE passthrough).
    Passthrough,
}

impl Source {
    pub fn mode(&self) -> OpenMode {
        match self {
            Source::Chunks => OpenMode::Chunks,
            Source::Copy(_) => OpenMode::LocalCopy,
            Source::Passthrough => OpenMode::Passthrough,
        }
    }
}

/// Where an open file's bytes come from, as `status` names it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum OpenMode {
    #[default]
    #[serde(rename = "chunks")]
    Chunks,
    #[serde(rename = "local copy")]
    LocalCopy,
    #[serde(rename = "passthrough")]
    Passthrough,
}

impl std::fmt::Display for OpenMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenMode::Chunks => "chunks",
            OpenMode::LocalCopy => "local copy",
            OpenMode::Passthrough => "passthrough",
        })
    }
}

/// One open file handle.
pub(super) struct OpenFile {
    /// `model/path` of the file.
    pub path: String,
    pub ino: u64,
    pub hash: crate::codec::Hash32,
    pub source: Source,
    opened: Instant,
    reads: AtomicU64,
    bytes: AtomicU64,
    /// Where this handle's reader is going, for read-ahead.
    pub stream: Mutex<Stream>,
}

impl OpenFile {
    pub fn served(&self, bytes: u64) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Bytes served per second, in slots for the last few seconds.
#[derive(Default)]
struct Rate {
    /// (second since the epoch, bytes served in it)
    slots: [(AtomicU64, AtomicU64); SLOTS],
}

fn now_secs() -> u64 {
    crate::clock::now_unix_secs()
}

impl Rate {
    fn add(&self, now: u64, bytes: u64) {
        let (sec, n) = &self.slots[(now % SLOTS as u64) as usize];
        // The first add of a new second claims the slot; a racing add may lose a few bytes to
        // the reset, which a throughput figure can afford.
        if sec.swap(now, Ordering::Relaxed) != now {
            n.store(0, Ordering::Relaxed);
        }
        n.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes per second over the `RECENT_SECS` whole seconds before this one.
    fn recent(&self, now: u64) -> f64 {
        let total: u64 = (1..=RECENT_SECS)
            .map(|back| {
                let t = now - back;
                let (sec, n) = &self.slots[(t % SLOTS as u64) as usize];
                if sec.load(Ordering::Relaxed) == t {
                    n.load(Ordering::Relaxed)
                } else {
                    0
                }
            })
            .sum();
        total as f64 / RECENT_SECS as f64
    }
}

#[derive(Default)]
pub(super) struct Handles {
    pub by_fh: Mutex<HashMap<u64, Arc<OpenFile>>>,
    rate: Rate,
    /// Reads waiting for a chunk to load.
    pub waiting: AtomicU64,
    /// Read-ahead loads queued or running.
    pub ahead: AtomicU64,
}

/// An open file as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OpenReport {
    pub path: String,
    #[serde(default)]
    pub mode: OpenMode,
    pub reads: u64,
    pub bytes_served: u64,
    pub open_seconds: f64,
}

/// What the mount is doing now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Activity {
    pub open_files: Vec<OpenReport>,
    /// Bytes served per second over the last 5 whole seconds.
    pub recent_bytes_per_second: f64,
    pub reads_waiting: u64,
    pub readahead_in_flight: u64,
}

impl Handles {
    pub fn open(
        &self,
        fh: u64,
        path: String,
        ino: u64,
        hash: crate::codec::Hash32,
        source: Source,
    ) {
        let file = OpenFile {
            path,
            ino,
            hash,
            source,
            opened: Instant::now(),
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stream: Mutex::new(Stream::default()),
        };
        self.by_fh.lock().insert(fh, Arc::new(file));
    }

    pub fn handle(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.by_fh.lock().get(&fh).cloned()
    }

    pub fn close(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.by_fh.lock().remove(&fh)
    }

    pub fn served(&self, bytes: u64) {
        self.rate.add(now_secs(), bytes);
    }

    pub fn activity(&self) -> Activity {
        let mut open_files: Vec<OpenReport> = self
            .by_fh
            .lock()
            .values()
            .map(|f| OpenReport {
                path: f.path.clone(),
                mode: f.source.mode(),
                reads: f.reads.load(Ordering::Relaxed),
                bytes_served: f.bytes.load(Ordering::Relaxed),
                open_seconds: f.opened.elapsed().as_secs_f64(),
            })
            .collect();
        open_files.sort_by_key(|f| std::cmp::Reverse(f.bytes_served));
        Activity {
            open_files,
            recent_bytes_per_second: self.rate.recent(now_secs()),
            reads_waiting: self.waiting.load(Ordering::Relaxed),
            readahead_in_flight: self.ahead.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_whole_past_seconds_only() {
        let r = Rate::default();
        let now = 1_000_000;
        r.add(now - 1, 3000);
        r.add(now - 1, 2000);
        r.add(now, 1000);
        // This second's bytes are not in yet.
        assert_eq!(r.recent(now), 1000.0);
        // Six seconds on, the slot of second now-1 is out of the window; then reused.
        assert_eq!(r.recent(now + 6), 0.0);
        r.add(now - 1 + SLOTS as u64, 500);
        assert_eq!(r.recent(now + SLOTS as u64), 100.0);
    }
}
