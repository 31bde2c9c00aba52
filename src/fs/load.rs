//! How the read path gets chunks: through the chunk cache (a read waits for room, read-ahead
//! takes only room there is), from the store's replicas into a buffer of its own (a delta with
//! its base, the base through the cache too), or a window of a chunk larger than the cache.
//! Failed replicas are counted and reported to the members' trouble record.

use super::FsError;
use super::core::Shared;
use super::pieces::{Piece, window_len};
use crate::buffer::ChunkBuf;
use crate::cache::{Chunk, Served};
use crate::store::manifest::{ChunkRef, FileEntry};
use std::cell::Cell;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A chunk that could not be had: the error for the reader, and why (for the log).
pub(super) struct LoadFailed {
    pub(super) error: FsError,
    pub(super) why: String,
}

/// Whether a chunk is loaded for a read that waits for it, or ahead of one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum For {
    Read,
    Ahead,
}

impl For {
    fn name(self) -> &'static str {
        match self {
            For::Read => "for a read",
            For::Ahead => "ahead",
        }
    }
}

impl Shared {
    /// Loads chunk `index` of `file` through the cache.
    pub(super) fn load(
        &self,
        file: &Arc<FileEntry>,
        index: usize,
        why: For,
    ) -> Result<Chunk, LoadFailed> {
        let (cache, stats) = (&self.cache, &self.counts);
        let c = &file.chunks[index];
        let no_memory = Cell::new(false);
        let limit = self.store.load_deadline(c);
        let load = || {
            let base = c
                .delta
                .as_ref()
                .and_then(|d| self.base_through_cache(&d.base, limit))
                .transpose()?;
            self.load_into_buf(c, base.as_deref().map(|b| &b[..]), &no_memory)
        };
        // Read-ahead takes only room the budget has now; a read waits for it.
        let (result, served) = match why {
            For::Ahead => {
                cache
                    .get_ahead(c.hash, c.len, limit, load)
                    .ok_or_else(|| LoadFailed {
                        error: FsError::NoMemory,
                        why: "no room for read-ahead".into(),
                    })?
            }
            For::Read => cache.get(c.hash, c.len, limit, load),
        };
        if served == Served::Loaded && result.is_ok() {
            log::debug!(
                "'{}' chunk {index} ({}): loaded ({})",
                file.path,
                c.hash,
                why.name()
            );
            stats.chunks_decompressed.fetch_add(1, Ordering::Relaxed);
            if why == For::Ahead {
                stats.chunks_prefetched.fetch_add(1, Ordering::Relaxed);
            }
        }
        let chunk = result.map_err(|why| load_failed(&no_memory, why))?;
        if let Some(tier) = &self.tier {
            tier.offer(file, index, &chunk);
        }
        Ok(chunk)
    }

    /// Chunk `index` of `file` again, for the local tier, which missed it when it was read: from
    /// the cache while it is there, else from the store into a buffer of its own that is not
    /// cached (the tier's catching up must not push out what readers use).
    pub(super) fn reload_for_tier(&self, file: &FileEntry, index: usize) -> Option<Chunk> {
        let c = file.chunks.get(index)?;
        if let Some(chunk) = self.cache.peek(&c.hash) {
            return Some(chunk);
        }
        match self.load_into_buf(c, None, &Cell::new(false)) {
            Ok(buf) => Some(Arc::new(buf)),
            Err(e) => {
                log::debug!("'{}' chunk {index} for the local tier: {e}", file.path);
                None
            }
        }
    }

    /// The base chunk of a delta through the chunk cache, so that reads of the base model and of
    /// its fine-tunes share it: only where the cache has room now (or holds it), never waiting
    /// for room while the delta's own load holds some; `None` leaves it to the store's load.
    fn base_through_cache(
        &self,
        base: &ChunkRef,
        limit: std::time::Duration,
    ) -> Option<Result<crate::cache::Chunk, String>> {
        let no_memory = Cell::new(false);
        let load = || self.load_into_buf(base, None, &no_memory);
        let (got, _) = self.cache.get_ahead(base.hash, base.len, limit, load)?;
        Some(got.map_err(|why| format!("its base chunk {}: {why}", base.hash)))
    }

    /// Chunk `c` loaded from the store into a buffer of its own (a delta with its `base`'s
    /// bytes, when the cache has them); `no_memory` is set where there is no buffer.
    fn load_into_buf(
        &self,
        c: &ChunkRef,
        base: Option<&[u8]>,
        no_memory: &Cell<bool>,
    ) -> Result<ChunkBuf, String> {
        let mut buf = self.chunk_buf(c, c.len, no_memory)?;
        let failed = |member: &str, e: &_| self.replica_failed(c, member, e);
        let member = match base {
            Some(base) => self.store.load_delta_into(c, base, &mut buf, &failed),
            None => self.store.load_chunk_buf(c, &mut buf, &failed),
        }
        .map_err(|e| e.to_string())?;
        self.trouble.served(&member);
        Ok(buf)
    }

    /// A buffer for `len` bytes of chunk `c`; `no_memory` is set where there is none.
    fn chunk_buf(
        &self,
        c: &ChunkRef,
        len: u64,
        no_memory: &Cell<bool>,
    ) -> Result<ChunkBuf, String> {
        ChunkBuf::for_overwrite(len as usize).map_err(|e| {
            no_memory.set(true);
            format!("no memory for chunk {}: {e}", c.hash)
        })
    }

    /// A replica of chunk `c` on `member` could not be used; the next is tried.
    pub(super) fn replica_failed(
        &self,
        c: &ChunkRef,
        member: &str,
        e: &crate::store::reader::ReplicaError,
    ) {
        self.counts
            .replica_failovers
            .fetch_add(1, Ordering::Relaxed);
        log::debug!("chunk {}: member {member} failed", c.hash);
        self.trouble.failed(member, e);
    }

    /// Loads piece `p` of `file`, bytes `window` of a chunk larger than the whole cache, through
    /// the cache: the chunk is decoded in pieces and only the window is kept (see `pieces`).
    pub(super) fn load_window(
        &self,
        file: &Arc<FileEntry>,
        p: &Piece,
        window: Range<u64>,
    ) -> Result<Chunk, LoadFailed> {
        let c = &file.chunks[p.index];
        warn_windowed(c, self.cache.capacity());
        let len = window.end - window.start;
        let no_memory = Cell::new(false);
        let load = || {
            let mut buf = self.chunk_buf(c, len, &no_memory)?;
            let member = self
                .store
                .load_window_into(c, window, &mut buf, &|member, e| {
                    self.replica_failed(c, member, e)
                })
                .map_err(|e| e.to_string())?;
            self.trouble.served(&member);
            Ok(buf)
        };
        // The decoder's working memory counts against the budget while it runs.
        let in_flight = len + crate::codec::stream::STREAM_MEMORY;
        let limit = self.store.load_deadline(c);
        let (result, served) = self.cache.get(p.key, in_flight, limit, load);
        if served == Served::Loaded && result.is_ok() {
            self.counts
                .chunks_decompressed
                .fetch_add(1, Ordering::Relaxed);
        }
        result.map_err(|why| load_failed(&no_memory, why))
    }
}

/// Why a load failed, for the reader: out of memory where `no_memory` is set, EIO otherwise.
fn load_failed(no_memory: &Cell<bool>, why: String) -> LoadFailed {
    LoadFailed {
        error: if no_memory.get() {
            FsError::NoMemory
        } else {
            FsError::Io
        },
        why,
    }
}

/// Says once per mount that chunks larger than the cache are read in windows, and what that
/// costs.
fn warn_windowed(c: &ChunkRef, capacity: u64) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        log::warn!(
            "chunk {} holds {} bytes, more than the whole cache ({} bytes): it is read in windows of {} bytes, each decoding the whole chunk; a --cache-size larger than the chunks reads them once",
            c.hash,
            c.len,
            capacity,
            window_len(capacity)
        );
    }
}
