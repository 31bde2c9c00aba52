//! What the local tier holds, in memory: its checked copies, the copies being built (the byte
//! ranges written so far) and the files it refused for a while. `mod.rs` keeps it under a lock.

use crate::codec::Hash32;
use std::collections::HashMap;
use std::fs::File;
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
    pub(super) file: Option<Arc<File>>,
    pub(super) size: u64,
    /// Byte ranges written, sorted and merged.
    pub(super) have: Vec<(u64, u64)>,
}

impl Filling {
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
    pub(super) fn used(&self) -> u64 {
        self.copies.values().map(|c| c.size).sum::<u64>()
            + self.filling.values().map(|f| f.size).sum::<u64>()
    }
}
