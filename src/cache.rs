//! The byte-bounded LRU of decompressed chunks, with single-flight loading: when several readers
//! want the same chunk at once, one loads it and the others wait for that load. No lock is held
//! while a chunk is read or decompressed. Chunks being loaded, and the freed chunk buffers kept for
//! reuse (buffer.rs), count against the budget: a load that does not fit waits (up to
//! [`ROOM_WAIT`]) until loads under way finish, so memory in flight never grows past the budget
//! however many readers ask at once. A chunk larger than the whole budget loads alone.
//! Read-ahead never waits for room: it skips, and it never evicts a chunk read-ahead loaded that
//! no reader has asked for yet (that would fetch it twice). A reader joined to another's load waits no
//! longer than that load's own deadline.

use crate::buffer::{ChunkBuf, SPARE, SparePool};
use crate::codec::Hash32;
use lru::LruCache;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

pub struct ChunkCache {
    capacity: u64,
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
            self.room.notify_all();
        }
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
        self.fetch(key, len, limit, true, load)
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
        self.fetch(key, len, limit, false, load)
    }

    fn fetch<F>(
        &self,
        key: Hash32,
        len: u64,
        limit: Duration,
        wait: bool,
        load: F,
    ) -> Option<(Result<Chunk, String>, Served)>
    where
        F: FnOnce() -> Result<ChunkBuf, String>,
    {
        let mut dropped = Vec::new();
        let mut inner = self.inner.lock();
        if let Some(chunk) = inner.lru.get(&key).cloned() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            if wait {
                inner.unread.remove(&key);
            }
            return Some((Ok(chunk), Served::Hit));
        }
        if let Some(f) = inner.inflight.get(&key) {
            let f = f.clone();
            drop(inner);
            self.hits.fetch_add(1, Ordering::Relaxed);
            let mut done = f.done.lock();
            while done.is_none() {
                let deadline = *f.deadline.lock();
                if f.cond.wait_until(&mut done, deadline).timed_out()
                    && done.is_none()
                    && *f.deadline.lock() <= deadline
                {
                    return Some((
                        Err(
                            "the load of this chunk another read started did not end in time"
                                .into(),
                        ),
                        Served::Joined,
                    ));
                }
            }
            let result = done.clone().unwrap_or_else(|| Err("load vanished".into()));
            return Some((result, Served::Joined));
        }
        if !wait && !self.admit(&mut inner, len, !wait, &mut dropped) {
            return None;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Registered before it waits for room, so that readers of the same chunk join it.
        let room_by = Instant::now() + if wait { ROOM_WAIT } else { Duration::ZERO };
        let flight = Arc::new(Flight {
            done: Mutex::new(None),
            cond: Condvar::new(),
            deadline: Mutex::new(room_by + limit),
        });
        inner.inflight.insert(key, flight.clone());
        if wait {
            let deadline = room_by;
            while !self.admit(&mut inner, len, false, &mut dropped) {
                self.waiting_for_room.fetch_add(1, Ordering::SeqCst);
                let timed_out = self.room.wait_until(&mut inner, deadline).timed_out();
                self.waiting_for_room.fetch_sub(1, Ordering::SeqCst);
                if timed_out && !self.admit(&mut inner, len, false, &mut dropped) {
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
            }
        }
        drop(inner);
        drop(dropped);
        *flight.deadline.lock() = Instant::now() + limit;
        // A load that panics still ends its flight, or the readers joined to it would wait
        // forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
            .unwrap_or_else(|_| Err("chunk load failed (internal error, see the log)".into()))
            .map(Arc::new);
        let dropped = {
            let mut inner = self.inner.lock();
            inner.inflight.remove(&key);
            inner.inflight_bytes -= len;
            self.room.notify_all();
            if let Ok(chunk) = &result {
                // A chunk larger than the whole budget is handed out but not kept.
                if chunk.len() as u64 <= self.capacity {
                    inner.cached_bytes += chunk.len() as u64;
                    if let Some(old) = inner.lru.put(key, chunk.clone()) {
                        inner.cached_bytes -= old.len() as u64;
                    }
                    if !wait {
                        inner.unread.insert(key);
                    }
                    self.evict(&mut inner, 0, false)
                } else {
                    Vec::new()
                }
            } else {
                Vec::new()
            }
        };
        drop(dropped);
        *flight.done.lock() = Some(result.clone());
        flight.cond.notify_all();
        Some((result, Served::Loaded))
    }

    /// Counts a load of `len` bytes in flight if the budget has room for it once every cached
    /// chunk that can go has gone (for read-ahead, `ahead`: every chunk a reader has had), or,
    /// for a reader, if no other load is under way (a chunk larger than the budget loads alone). Chunks dropped to make room are added to `dropped`, to be let go of
    /// after the lock.
    fn admit(&self, inner: &mut Inner, len: u64, ahead: bool, dropped: &mut Vec<Chunk>) -> bool {
        let alone = inner.inflight_bytes == 0;
        inner.inflight_bytes += len;
        dropped.extend(self.evict(inner, len, ahead));
        let spare = (self.spare.bytes() as u64).saturating_sub(len);
        if (alone && !ahead) || inner.cached_bytes + inner.inflight_bytes + spare <= self.capacity {
            return true;
        }
        inner.inflight_bytes -= len;
        false
    }

    /// Makes cached + in flight + spare buffers fit the capacity, counting on a load that is
    /// about to start (`incoming` bytes) to take its buffer from the spares: returns spare
    /// buffers to the system first, then drops least recently used chunks. The dropped chunks are
    /// returned, to be let go of after the lock: their buffers then serve the loads that needed
    /// the room.
    fn evict(&self, inner: &mut Inner, incoming: u64, keep_unread: bool) -> Vec<Chunk> {
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
                None if keep_unread => None,
                None => inner.lru.peek_lru().map(|(k, _)| *k),
            };
            let Some(key) = victim else { break };
            inner.unread.remove(&key);
            if let Some(chunk) = inner.lru.pop(&key) {
                inner.cached_bytes -= chunk.len() as u64;
                dropped.push(chunk);
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::atomic::AtomicUsize;

    const LIMIT: Duration = Duration::from_secs(60);

    fn buf(byte: u8, len: usize) -> Result<ChunkBuf, String> {
        Ok(ChunkBuf::from_slice(&vec![byte; len]).unwrap())
    }

    fn key(i: u32) -> Hash32 {
        Hash32::of(&i.to_le_bytes())
    }

    /// A cache with a spare pool of its own (tests run in parallel threads under `cargo test`).
    fn new_cache(capacity: u64) -> ChunkCache {
        ChunkCache::with_spare(capacity, Box::leak(Box::default()))
    }

    #[test]
    fn freed_buffers_serve_the_next_loads_within_the_budget() {
        const MB4: usize = 4 << 20;
        let pool: &'static SparePool = Box::leak(Box::default());
        let cache = ChunkCache::with_spare(3 * MB4 as u64, pool);
        let load = |byte: u8| {
            move || {
                let mut b = ChunkBuf::for_overwrite_in(pool, MB4).unwrap();
                b.fill(byte);
                Ok(b)
            }
        };
        let first = cache
            .get(key(0), MB4 as u64, LIMIT, load(0))
            .0
            .unwrap()
            .as_ptr();
        for i in 1..3 {
            cache
                .get(key(i), MB4 as u64, LIMIT, load(i as u8))
                .0
                .unwrap();
        }
        // Full: loading a fourth chunk evicts chunk 0, whose buffer the load then reuses.
        let (c3, _) = cache.get(key(3), MB4 as u64, LIMIT, load(3));
        let c3 = c3.unwrap();
        assert_eq!(c3.as_ptr(), first);
        assert!(c3.iter().all(|&b| b == 3));
        assert_eq!(cache.used_bytes(), 3 * MB4 as u64);
        drop(c3);
        // A released chunk's buffer waits in the pool, still counted.
        cache.release(&key(3));
        assert_eq!(pool.bytes(), MB4);
        assert_eq!(cache.used_bytes(), 3 * MB4 as u64);
        // A load that cannot use it (twice the size) makes room by returning it to the system.
        let big = move || Ok(ChunkBuf::for_overwrite_in(pool, 2 * MB4).unwrap());
        cache.get(key(9), 2 * MB4 as u64, LIMIT, big).0.unwrap();
        assert!(cache.used_bytes() <= 3 * MB4 as u64);
    }

    #[test]
    fn keeps_within_budget_and_evicts_lru() {
        let cache = new_cache(300);
        for i in 0..3 {
            let (r, s) = cache.get(key(i), 100, LIMIT, || buf(i as u8, 100));
            assert_eq!(r.unwrap()[0], i as u8);
            assert_eq!(s, Served::Loaded);
        }
        assert_eq!(cache.used_bytes(), 300);
        // Touch 0 and 2, then demote 2: loading 3 evicts 2, not 1.
        assert_eq!(
            cache.get(key(0), 100, LIMIT, || unreachable!()).1,
            Served::Hit
        );
        assert!(cache.get_cached(&key(2)).is_some());
        // A demoted chunk goes first even though it was used last.
        cache.demote(&key(2));
        assert!(cache.get_cached(&key(42)).is_none());
        cache.get(key(3), 100, LIMIT, || buf(3, 100)).0.unwrap();
        assert_eq!(cache.used_bytes(), 300);
        assert!(!cache.contains_or_loading(&key(2)));
        assert!(cache.contains_or_loading(&key(0)) && cache.contains_or_loading(&key(3)));
        // A released chunk leaves at once, and its bytes with it.
        cache.release(&key(3));
        assert!(!cache.contains_or_loading(&key(3)));
        assert_eq!(cache.used_bytes(), 200);
        cache.release(&key(3));
        assert_eq!(cache.used_bytes(), 200, "releasing twice changes nothing");
        // Too big to keep: served, not cached.
        assert_eq!(
            cache
                .get(key(9), 1000, LIMIT, || buf(9, 1000))
                .0
                .unwrap()
                .len(),
            1000
        );
        assert!(!cache.contains_or_loading(&key(9)));
        assert!(cache.used_bytes() <= 300);
    }

    #[test]
    fn loads_wait_for_room_and_read_ahead_skips() {
        let cache = Arc::new(new_cache(100));
        let (release, released) = crossbeam_channel::bounded::<()>(0);
        let first_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let a = {
            let (cache, first_done) = (cache.clone(), first_done.clone());
            std::thread::spawn(move || {
                cache
                    .get(key(1), 80, LIMIT, || {
                        released.recv().unwrap();
                        first_done.store(true, Ordering::SeqCst);
                        buf(1, 80)
                    })
                    .0
                    .unwrap();
            })
        };
        while !cache.contains_or_loading(&key(1)) {
            std::thread::yield_now();
        }
        // No room for read-ahead while 80 of 100 bytes are in flight: skipped, nothing loaded.
        assert!(
            cache
                .get_ahead(key(3), 80, LIMIT, || unreachable!())
                .is_none()
        );
        // A read waits until the first load ends, then loads.
        let b = {
            let (cache, first_done) = (cache.clone(), first_done.clone());
            std::thread::spawn(move || {
                cache
                    .get(key(2), 80, LIMIT, || {
                        assert!(first_done.load(Ordering::SeqCst), "loaded past the budget");
                        buf(2, 80)
                    })
                    .0
                    .unwrap();
            })
        };
        while cache.waiting_for_room.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert!(cache.used_bytes() <= 100);
        release.send(()).unwrap();
        a.join().unwrap();
        b.join().unwrap();
        assert!(cache.used_bytes() <= 100);
        // With nothing in flight, a chunk larger than the whole budget loads (alone).
        let (big, _) = cache.get(key(4), 500, LIMIT, || buf(4, 500));
        assert_eq!(big.unwrap().len(), 500);
        // Read-ahead never does: it takes only what fits.
        assert!(
            cache
                .get_ahead(key(5), 500, LIMIT, || unreachable!())
                .is_none()
        );
    }

    #[test]
    fn a_reader_joined_to_a_load_waits_no_longer_than_its_deadline() {
        let cache = Arc::new(new_cache(1000));
        let (release, released) = crossbeam_channel::bounded::<()>(0);
        let loader = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let limit = Duration::from_millis(100);
                cache.get(key(1), 10, limit, || {
                    released.recv().unwrap();
                    buf(1, 10)
                })
            })
        };
        while !cache.contains_or_loading(&key(1)) {
            std::thread::yield_now();
        }
        // The load hangs past its deadline: the joined reader gets an error, not a wait.
        let (joined, served) = cache.get(key(1), 10, LIMIT, || unreachable!());
        assert_eq!(served, Served::Joined);
        assert!(joined.unwrap_err().contains("did not end in time"));
        release.send(()).unwrap();
        assert!(loader.join().unwrap().0.is_ok());
    }

    #[test]
    fn read_ahead_never_evicts_what_it_loaded_for_a_read_still_to_come() {
        let cache = new_cache(300);
        for i in 0..3 {
            assert!(
                cache
                    .get_ahead(key(i), 100, LIMIT, || buf(i as u8, 100))
                    .is_some()
            );
        }
        // Full of chunks no reader has had: more read-ahead finds no room.
        assert!(
            cache
                .get_ahead(key(3), 100, LIMIT, || unreachable!())
                .is_none()
        );
        assert!((0..3).all(|i| cache.contains_or_loading(&key(i))));
        // Once a reader has had chunk 1, read-ahead may take its place (not 0's, older).
        assert_eq!(
            cache.get(key(1), 100, LIMIT, || unreachable!()).1,
            Served::Hit
        );
        assert!(
            cache
                .get_ahead(key(3), 100, LIMIT, || buf(3, 100))
                .is_some()
        );
        assert!(!cache.contains_or_loading(&key(1)));
        assert!(cache.contains_or_loading(&key(0)) && cache.contains_or_loading(&key(2)));
        // A reader's own load may evict unread chunks when nothing else is left.
        cache.get(key(4), 100, LIMIT, || buf(4, 100)).0.unwrap();
        assert!(cache.used_bytes() <= 300);
    }

    #[test]
    fn failures_are_not_cached() {
        let cache = new_cache(1000);
        assert!(
            cache
                .get(key(1), 10, LIMIT, || Err("bad".into()))
                .0
                .is_err()
        );
        assert_eq!(
            cache.get(key(1), 10, LIMIT, || buf(1, 10)).1,
            Served::Loaded
        );
        assert_eq!(cache.used_bytes(), 10);
    }

    #[test]
    fn concurrent_readers_load_once() {
        let cache = Arc::new(new_cache(1 << 20));
        let loads = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads, barrier) = (cache.clone(), loads.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let (r, _) = cache.get(key(7), 4096, LIMIT, || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        // Take long enough that the other readers arrive during the load.
                        let mut h = Hash32::of(b"work");
                        for _ in 0..20_000 {
                            h = Hash32::of(&h.0);
                        }
                        buf(h.0[0], 4096)
                    });
                    r.unwrap()
                })
            })
            .collect();
        let results: Vec<Chunk> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "the chunk was loaded more than once"
        );
        assert!(results.windows(2).all(|w| w[0][..] == w[1][..]));
        assert_eq!(cache.misses.load(Ordering::SeqCst), 1);
        assert_eq!(cache.hits.load(Ordering::SeqCst), 7);
    }
}
