//! What the local tier holds, in memory: its checked copies, the copies being built (the byte
//! ranges written so far, the chunks the writer missed) and the files it refused for a while.
//! `mod.rs` keeps it under a lock.

use super::copy_file::CopyFile;
use crate::codec::Hash32;
use crate::store::manifest::FileEntry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A checked copy.
#[derive(Debug)]
pub(super) struct Copy {
    pub(super) size: u64,
    /// Handles reading it (normal or passthrough opens): it is not evicted while any are.
    pub(super) held: u32,
    /// When it was last opened (a counter: larger is later).
    pub(super) opened: u64,
    /// Checked since it was last written (copies found at start are not, until hashed).
    pub(super) checked: bool,
}

/// A copy being built.
pub(super) struct Filling {
    /// Opened by the writer (outside the state's lock) when the first chunk arrives.
    pub(super) file: Option<Arc<CopyFile>>,
    pub(super) size: u64,
    /// Byte ranges written, sorted and merged.
    pub(super) have: Vec<(u64, u64)>,
    /// Byte spans of chunks in the writer's queue (a few): a chunk is queued once.
    queued: Vec<(u64, u64)>,
    /// Chunks read while the writer was behind (chunk `index` of a file), to be loaded again,
    /// and their byte spans (one note per span).
    missed: Vec<(Arc<FileEntry>, usize)>,
    missed_spans: HashSet<(u64, u64)>,
}

impl Filling {
    pub(super) fn new(size: u64) -> Filling {
        Filling {
            file: None,
            size,
            have: Vec::new(),
            queued: Vec::new(),
            missed: Vec::new(),
            missed_spans: HashSet::new(),
        }
    }

    /// Notes `span` as queued for the writer: `false` if it already is.
    pub(super) fn queue(&mut self, span: (u64, u64)) -> bool {
        let new = !self.queued.contains(&span);
        if new {
            self.queued.push(span);
        }
        new
    }

    /// `span` left the writer's queue (taken, or never let in).
    pub(super) fn dequeued(&mut self, span: (u64, u64)) {
        self.queued.retain(|s| *s != span);
    }

    /// Chunk `index` of `file` was read but not written: noted once (at most one note per
    /// chunk of the file, so the list is bounded by the file's chunks).
    pub(super) fn missed(&mut self, file: &Arc<FileEntry>, index: usize) {
        let Some(c) = file.chunks.get(index) else {
            return;
        };
        if self.missed_spans.insert((c.offset, c.len)) {
            self.missed.push((file.clone(), index));
        }
    }

    pub(super) fn covers(&self, start: u64, end: u64) -> bool {
        let i = self.have.partition_point(|r| r.1 < end);
        self.have.get(i).is_some_and(|r| r.0 <= start && end <= r.1)
    }

    pub(super) fn add(&mut self, start: u64, end: u64) {
        let (mut start, mut end) = (start, end);
        self.have.retain(|&(a, b)| {
            let touches = a <= end && start <= b;
            if touches {
                start = start.min(a);
                end = end.max(b);
            }
            !touches
        });
        let at = self.have.partition_point(|r| r.0 < start);
        self.have.insert(at, (start, end));
    }

    pub(super) fn complete(&self) -> bool {
        self.size == 0 || self.have.first() == Some(&(0, self.size))
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) copies: HashMap<Hash32, Copy>,
    pub(super) filling: HashMap<Hash32, Filling>,
    /// Files that did not fit, or failed, and when: tried again after `RETRY_AFTER`.
    pub(super) refused: HashMap<Hash32, std::time::Instant>,
    /// Copies evicted whose files the writer has yet to delete.
    pub(super) evicted: Vec<Hash32>,
    pub(super) clock: u64,
}

impl State {
    pub(super) fn has_missed(&self) -> bool {
        self.filling.values().any(|f| !f.missed.is_empty())
    }

    /// A chunk a copy being built missed and still lacks, taken off its list.
    pub(super) fn next_missed(&mut self) -> Option<(Arc<FileEntry>, usize)> {
        for fill in self.filling.values_mut() {
            while let Some((file, index)) = fill.missed.pop() {
                let Some(c) = file.chunks.get(index) else {
                    continue;
                };
                fill.missed_spans.remove(&(c.offset, c.len));
                if !fill.covers(c.offset, c.offset + c.len) {
                    return Some((file, index));
                }
            }
        }
        None
    }

    /// Drops every note of a missed chunk (nothing can load them again).
    pub(super) fn forget_missed(&mut self) {
        for fill in self.filling.values_mut() {
            fill.missed.clear();
            fill.missed_spans.clear();
        }
    }

    pub(super) fn used(&self) -> u64 {
        self.copies.values().map(|c| c.size).sum::<u64>()
            + self.filling.values().map(|f| f.size).sum::<u64>()
    }
}
