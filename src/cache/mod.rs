//! The byte-bounded LRU of decompressed chunks, with single-flight loading: when several readers
//! want the same chunk at once, one loads it and the others wait for that load. No lock is held
//! while a chunk is read or decompressed. Chunks being loaded, and the freed chunk buffers kept for
//! reuse (buffer.rs), count against the budget: a load that does not fit waits (up to
//! [`ROOM_WAIT`]) until loads under way finish, so memory in flight never grows past the budget
//! however many readers ask at once. A chunk larger than the whole budget loads alone (the mount
//! never asks for one: it reads such a chunk in windows, see `fs/pieces.rs`).
//! Read-ahead never waits for room: it skips, and it never evicts a chunk read-ahead loaded that
//! no reader has asked for yet (that would fetch it twice). A reader joined to another's load waits no
//! longer than that load's own deadline.

use crate::buffer::{ChunkBuf, SPARE, SparePool};
use crate::codec::Hash32;
use lru::LruCache;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Waits for the load another reader started to end, no longer than its deadline (which the
/// loader moves once the load is admitted).
fn join(f: &Flight) -> Result<Chunk, String> {
    let mut done = f.done.lock();
    while done.is_none() {
        let deadline = *f.deadline.lock();
        if f.cond.wait_until(&mut done, deadline).timed_out()
            && done.is_none()
            && *f.deadline.lock() <= deadline
        {
            return Err("the load of this chunk another read started did not end in time".into());
        }
    }
    done.clone().unwrap_or_else(|| Err("load vanished".into()))
}

/// Who asks for a chunk: a reader waits for room and marks the chunk read; read-ahead never
/// waits, and what it loads stays until a reader has had it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asker {
    Reader,
    ReadAhead,
}

/// Longest a load waits for room in the budget before it fails.
pub const ROOM_WAIT: Duration = Duration::from_secs(30);

/// Most bytes of freed chunk buffers kept for reuse.
const SPARE_MAX: u64 = 64 << 20;

/// A decompressed chunk, shared between the cache and readers.
pub type Chunk = Arc<ChunkBuf>;

/// How a `get` was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Hit,
    /// Waited for another reader's load of the same chunk.
    Joined,
    /// Loaded it.
    Loaded,
}

struct Flight {
    done: Mutex<Option<Result<Chunk, String>>>,
    cond: Condvar,
    /// When the load must have ended: readers joined to it wait until then at most. Set when
    /// the load is admitted (before, waiting for room has its own deadline).
    deadline: Mutex<Instant>,
}

struct Inner {
    lru: LruCache<Hash32, Chunk>,
    cached_bytes: u64,
    inflight: HashMap<Hash32, Arc<Flight>>,
    inflight_bytes: u64,
    /// Chunks read-ahead loaded that no reader has asked for yet.
    unread: std::collections::HashSet<Hash32>,
}

/// Hears of each chunk evicted to make room (not of one released, nor of a failed load), with a
/// look at the chunks still cached (which it does not make more recent). It runs under the
/// cache's lock: it may queue work, never call the cache.
pub type OnEvict = Box<dyn Fn(&Hash32, &Chunk, &dyn Fn(&Hash32) -> Option<Chunk>) + Send + Sync>;

pub struct ChunkCache {
    capacity: u64,
    on_evict: std::sync::OnceLock<OnEvict>,
    /// Where freed chunk buffers wait for reuse; counted in the capacity.
    spare: &'static SparePool,
    inner: Mutex<Inner>,
    /// Signalled when a load ends or a chunk leaves: bytes in flight or cached went down.
    room: Condvar,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Loads waiting for room now.
    pub waiting_for_room: AtomicU64,
}

impl ChunkCache {
    /// A cache of `capacity` bytes whose chunk buffers come from (and go back to) `SPARE`.
    pub fn new(capacity: u64) -> ChunkCache {
        ChunkCache::with_spare(capacity, &SPARE)
    }

    /// A cache counting the buffers kept in `spare` (its chunks' pool) in its capacity. The pool
    /// keeps at most `SPARE_MAX` (or the capacity): enough for the buffers a stream of loads
    /// cycles through, while memory a finished load freed goes back to the system.
    pub fn with_spare(capacity: u64, spare: &'static SparePool) -> ChunkCache {
        spare.keep(capacity.min(SPARE_MAX) as usize);
        ChunkCache {
            capacity,
            on_evict: std::sync::OnceLock::new(),
            spare,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                cached_bytes: 0,
                inflight: HashMap::new(),
                inflight_bytes: 0,
                unread: Default::default(),
            }),
            room: Condvar::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            waiting_for_room: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Evicted chunks are shown to `hook` from now on (see [`OnEvict`]).
    pub fn on_evict(&self, hook: OnEvict) {
        let _ = self.on_evict.set(hook);
    }

    /// Bytes held by cached chunks, chunks being loaded and spare buffers kept for reuse.
    pub fn used_bytes(&self) -> u64 {
        let inner = self.inner.lock();
        inner.cached_bytes + inner.inflight_bytes + self.spare.bytes() as u64
    }

    /// Whether `key` is cached or being loaded.
    pub fn contains_or_loading(&self, key: &Hash32) -> bool {
        let inner = self.inner.lock();
        inner.lru.contains(key) || inner.inflight.contains_key(key)
    }

    /// Makes `key` the first chunk to go when memory is needed (a reader has passed it).
    pub fn demote(&self, key: &Hash32) {
        self.inner.lock().lru.demote(key);
    }

    /// Drops `key` from the cache (every byte of it was sent to the kernel, whose page cache holds
    /// them now). Its memory is freed, or reused, once no reply holds it.
    pub fn release(&self, key: &Hash32) {
        let mut inner = self.inner.lock();
        inner.unread.remove(key);
        if let Some(chunk) = inner.lru.pop(key) {
            inner.cached_bytes -= chunk.len() as u64;
            self.leave_room_for_spares(&inner);
            self.room.notify_all();
        }
    }

    /// Lets buffers freed from now on wait as spares only in the room cached chunks leave: a
    /// chunk a reply still held when it left the cache then goes back to the system if its
    /// buffer would take the budget over. (Loads in flight are counted on taking a spare.)
    fn leave_room_for_spares(&self, inner: &Inner) {
        let room = self.capacity.saturating_sub(inner.cached_bytes);
        self.spare
            .leave_room(usize::try_from(room).unwrap_or(usize::MAX));
    }

    /// The chunk `key` if it is cached (counted as a hit), without waiting for anything.
    pub fn get_cached(&self, key: &Hash32) -> Option<Chunk> {
        let mut inner = self.inner.lock();
        let chunk = inner.lru.get(key).cloned();
        if chunk.is_some() {
            inner.unread.remove(key);
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        chunk
    }

    /// The chunk `key` if the cache holds it, leaving its place, its counters and its read-ahead
    /// mark as they are (for the local tier catching up, which is not a reader).
    pub fn peek(&self, key: &Hash32) -> Option<Chunk> {
        self.inner.lock().lru.peek(key).cloned()
    }

    /// Returns the chunk `key` (`len` bytes once loaded), from the cache, by joining a load under
    /// way, or by calling `load` on this thread once the budget has room for it. `limit` is the
    /// longest `load` may take (readers that join it wait no longer).
    pub fn get<F>(
        &self,
        key: Hash32,
        len: u64,
        limit: Duration,
        load: F,
    ) -> (Result<Chunk, String>, Served)
    where
        F: FnOnce() -> Result<ChunkBuf, String>,
    {
        self.fetch(key, len, limit, Asker::Reader, load)
            .unwrap_or_else(|| (Err("no room in the chunk cache".into()), Served::Loaded))
    }

    /// As [`get`](Self::get) for read-ahead: `None`, and nothing loaded, when the budget has no
    /// room for the chunk now.
    pub fn get_ahead<F>(
        &self,
        key: Hash32,
        len: u64,
        limit: Duration,
        load: F,
    ) -> Option<(Result<Chunk, String>, Served)>
    where
        F: FnOnce() -> Result<ChunkBuf, String>,
    {
        self.fetch(key, len, limit, Asker::ReadAhead, load)
    }

    fn fetch<F>(
        &self,
        key: Hash32,
        len: u64,
        limit: Duration,
        asker: Asker,
        load: F,
    ) -> Option<(Result<Chunk, String>, Served)>
    where
        F: FnOnce() -> Result<ChunkBuf, String>,
    {
        let mut dropped = Vec::new();
        let mut inner = self.inner.lock();
        if let Some(chunk) = inner.lru.get(&key).cloned() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            if asker == Asker::Reader {
                inner.unread.remove(&key);
            }
            return Some((Ok(chunk), Served::Hit));
        }
        if let Some(f) = inner.inflight.get(&key) {
            let f = f.clone();
            drop(inner);
            self.hits.fetch_add(1, Ordering::Relaxed);
            let joined = join(&f);
            if asker == Asker::Reader {
                // A reader that joined read-ahead's load has had the chunk.
                self.inner.lock().unread.remove(&key);
            }
            return Some((joined, Served::Joined));
        }
        if asker == Asker::ReadAhead && !self.admit(&mut inner, len, asker, &mut dropped) {
            return None;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Registered before it waits for room, so that readers of the same chunk join it.
        let room_by = Instant::now()
            + match asker {
                Asker::Reader => ROOM_WAIT,
                Asker::ReadAhead => Duration::ZERO,
            };
        let flight = Arc::new(Flight {
            done: Mutex::new(None),
            cond: Condvar::new(),
            deadline: Mutex::new(room_by + limit),
        });
        inner.inflight.insert(key, flight.clone());
        if asker == Asker::Reader && !self.wait_for_room(&mut inner, len, room_by, &mut dropped) {
            inner.inflight.remove(&key);
            drop(inner);
            let result: Result<Chunk, String> = Err(format!(
                "no room in the chunk cache for {len} bytes within {} s (loads under way did not finish)",
                ROOM_WAIT.as_secs()
            ));
            *flight.done.lock() = Some(result.clone());
            flight.cond.notify_all();
            return Some((result, Served::Loaded));
        }
        drop(inner);
        drop(dropped);
        *flight.deadline.lock() = Instant::now() + limit;
        // A load that panics still ends its flight, or the readers joined to it would wait
        // forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
            .unwrap_or_else(|_| Err("chunk load failed (internal error, see the log)".into()))
            .map(Arc::new);
        drop(self.landed(key, len, &result, asker));
        *flight.done.lock() = Some(result.clone());
        flight.cond.notify_all();
        Some((result, Served::Loaded))
    }

    /// A load of `len` bytes for `key` ended: it is no longer in flight, and a chunk it loaded
    /// is kept (a chunk larger than the whole budget is handed out but not kept). Returns the
    /// chunks evicted for it, to be let go of after the lock.
    fn landed(
        &self,
        key: Hash32,
        len: u64,
        result: &Result<Chunk, String>,
        asker: Asker,
    ) -> Vec<Chunk> {
        let mut inner = self.inner.lock();
        inner.inflight.remove(&key);
        inner.inflight_bytes -= len;
        self.room.notify_all();
        let Ok(chunk) = result else {
            return Vec::new();
        };
        if chunk.len() as u64 > self.capacity {
            return Vec::new();
        }
        inner.cached_bytes += chunk.len() as u64;
        if let Some(old) = inner.lru.put(key, chunk.clone()) {
            inner.cached_bytes -= old.len() as u64;
        }
        if asker == Asker::ReadAhead {
            inner.unread.insert(key);
        }
        self.evict(&mut inner, 0, asker)
    }

    /// Waits until a reader's load of `len` bytes is admitted (`true`), or `deadline` passes.
    fn wait_for_room(
        &self,
        inner: &mut MutexGuard<'_, Inner>,
        len: u64,
        deadline: Instant,
        dropped: &mut Vec<Chunk>,
    ) -> bool {
        while !self.admit(inner, len, Asker::Reader, dropped) {
            self.waiting_for_room.fetch_add(1, Ordering::SeqCst);
            let timed_out = self.room.wait_until(inner, deadline).timed_out();
            self.waiting_for_room.fetch_sub(1, Ordering::SeqCst);
            if timed_out && !self.admit(inner, len, Asker::Reader, dropped) {
                return false;
            }
        }
        true
    }

    /// Counts a load of `len` bytes in flight if the budget has room for it once every cached
    /// chunk that can go has gone (for read-ahead: every chunk a reader has had), or,
    /// for a reader, if no other load is under way (a chunk larger than the budget loads alone).
    /// Chunks dropped to make room are added to `dropped`, to be let go of after the lock.
    fn admit(&self, inner: &mut Inner, len: u64, asker: Asker, dropped: &mut Vec<Chunk>) -> bool {
        let ahead = asker == Asker::ReadAhead;
        let alone = inner.inflight_bytes == 0;
        // Read-ahead evicts nothing unless that makes room: what it would drop is lost for
        // nothing otherwise.
        if ahead && !self.room_ahead(inner, len) {
            return false;
        }
        inner.inflight_bytes += len;
        dropped.extend(self.evict(inner, len, asker));
        let spare = (self.spare.bytes() as u64).saturating_sub(len);
        if (alone && !ahead) || inner.cached_bytes + inner.inflight_bytes + spare <= self.capacity {
            return true;
        }
        inner.inflight_bytes -= len;
        false
    }

    /// Whether evicting what read-ahead may evict (and every spare buffer) leaves room for a
    /// load of `len` bytes.
    fn room_ahead(&self, inner: &Inner, len: u64) -> bool {
        let evictable: u64 = inner
            .lru
            .iter()
            .filter(|(k, _)| !inner.unread.contains(k))
            .map(|(_, c)| c.len() as u64)
            .sum();
        inner.cached_bytes - evictable + inner.inflight_bytes + len <= self.capacity
    }

    /// Makes cached + in flight + spare buffers fit the capacity, counting on a load that is
    /// about to start (`incoming` bytes) to take its buffer from the spares: returns spare
    /// buffers to the system first, then drops least recently used chunks. The dropped chunks are
    /// returned, to be let go of after the lock: their buffers then serve the loads that needed
    /// the room.
    fn evict(&self, inner: &mut Inner, incoming: u64, asker: Asker) -> Vec<Chunk> {
        let used = |inner: &Inner| {
            let spare = (self.spare.bytes() as u64).saturating_sub(incoming);
            inner.cached_bytes + inner.inflight_bytes + spare
        };
        let over = used(inner).saturating_sub(self.capacity);
        if over > 0 {
            self.spare.trim(over as usize);
        }
        let mut dropped = Vec::new();
        while used(inner) > self.capacity {
            // The least recently used chunk a reader has had; failing that (a reader's load
            // only), the least recently used of all.
            let read = inner
                .lru
                .iter()
                .rev()
                .map(|(k, _)| *k)
                .find(|k| !inner.unread.contains(k));
            let victim = match read {
                Some(k) => Some(k),
                None if asker == Asker::ReadAhead => None,
                None => inner.lru.peek_lru().map(|(k, _)| *k),
            };
            let Some(key) = victim else { break };
            if inner.unread.remove(&key) {
                log::debug!("chunk {key}: evicted before a reader had it (it was loaded ahead)");
            } else {
                log::debug!(
                    "chunk {key}: evicted (memory needed; cached {} in {} chunks, {} unread, in flight {}, spare {})",
                    inner.cached_bytes,
                    inner.lru.len(),
                    inner.unread.len(),
                    inner.inflight_bytes,
                    self.spare.bytes()
                );
            }
            if let Some(chunk) = inner.lru.pop(&key) {
                inner.cached_bytes -= chunk.len() as u64;
                if let Some(hook) = self.on_evict.get() {
                    hook(&key, &chunk, &|k| inner.lru.peek(k).cloned());
                }
                dropped.push(chunk);
            }
        }
        self.leave_room_for_spares(inner);
        dropped
    }
}

#[cfg(test)]
mod tests;
