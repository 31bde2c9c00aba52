//! The cache without a mount: the budget, eviction order, single flight, room and deadlines.

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

const MB4: usize = 4 << 20;

/// A cache of three 4 MiB chunks with a spare pool of its own.
fn three_chunk_cache() -> (&'static SparePool, ChunkCache) {
    let pool: &'static SparePool = Box::leak(Box::default());
    (pool, ChunkCache::with_spare(3 * MB4 as u64, pool))
}

/// A 4 MiB chunk of one byte, its buffer taken from `pool`.
fn filled(pool: &'static SparePool, byte: u8) -> Result<ChunkBuf, String> {
    let mut b = ChunkBuf::for_overwrite_in(pool, MB4).map_err(|e| e.to_string())?;
    b.fill(byte);
    Ok(b)
}

#[test]
fn freed_buffers_serve_the_next_loads_within_the_budget() {
    let (pool, cache) = three_chunk_cache();
    let load = |byte: u8| move || filled(pool, byte);
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

#[test]
fn a_reader_that_joined_read_ahead_has_had_the_chunk() {
    let cache = std::sync::Arc::new(new_cache(200));
    let (started, finish) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            cache.get_ahead(key(0), 100, LIMIT, || {
                started.wait();
                finish.wait();
                buf(0, 100)
            })
        });
        started.wait();
        // The reader joins the load read-ahead started, which then lands.
        let reader = s.spawn(|| cache.get(key(0), 100, LIMIT, || unreachable!()).1);
        while cache.hits.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        finish.wait();
        assert_eq!(reader.join().unwrap(), Served::Joined);
    });
    cache
        .get_ahead(key(1), 100, LIMIT, || buf(1, 100))
        .unwrap()
        .0
        .unwrap();
    // Chunk 0 was a reader's: read-ahead may take its place (it could not if 0 still counted as
    // unread).
    assert!(
        cache
            .get_ahead(key(2), 100, LIMIT, || buf(2, 100))
            .is_some()
    );
    assert!(!cache.contains_or_loading(&key(0)));
    assert!(cache.contains_or_loading(&key(1)) && cache.contains_or_loading(&key(2)));
}

#[test]
fn read_ahead_that_cannot_fit_evicts_nothing() {
    let cache = new_cache(300);
    // A chunk a reader had, and one read-ahead loaded that no reader has had yet.
    cache.get(key(0), 100, LIMIT, || buf(0, 100)).0.unwrap();
    cache
        .get_ahead(key(1), 200, LIMIT, || buf(1, 200))
        .unwrap()
        .0
        .unwrap();
    // 250 bytes do not fit even with chunk 0 gone: it stays.
    assert!(
        cache
            .get_ahead(key(2), 250, LIMIT, || unreachable!())
            .is_none()
    );
    assert!(cache.contains_or_loading(&key(0)));
}

#[test]
fn a_buffer_freed_after_its_chunk_left_the_cache_stays_within_the_budget() {
    let (pool, cache) = three_chunk_cache();
    let load = |byte: u8| move || filled(pool, byte);
    // A reply still holds chunk 0 when a fourth load evicts it from the full cache...
    let held = cache.get(key(0), MB4 as u64, LIMIT, load(0)).0.unwrap();
    for i in 1..4 {
        cache
            .get(key(i), MB4 as u64, LIMIT, load(i as u8))
            .0
            .unwrap();
    }
    assert_eq!(cache.used_bytes(), 3 * MB4 as u64);
    // ...and lets it go later: the cache is full, so its buffer goes back to the system.
    drop(held);
    assert_eq!(pool.bytes(), 0);
    assert_eq!(cache.used_bytes(), 3 * MB4 as u64);
    // Once a chunk leaves, a freed buffer is kept again for the next load.
    let held = cache.get_cached(&key(3)).unwrap();
    cache.release(&key(3));
    drop(held);
    assert_eq!(pool.bytes(), MB4);
    assert_eq!(cache.used_bytes(), 3 * MB4 as u64);
}
