//! Buffers for decompressed chunks: anonymous memory mappings, backed by transparent huge pages
//! where the system allows (`madvise`). A 4 MiB chunk then costs two page faults instead of a
//! thousand. A dropped buffer's mapping is kept for the next chunk while its spare pool has room
//! (`SparePool::keep`): its pages stay resident, so reusing it skips the kernel's zeroing of fresh
//! pages, measured at a quarter of the daemon's CPU time on a cold read. Beyond that room a
//! dropped buffer returns its memory to the system at once, so the daemon's resident size follows
//! its cache. Pools of buffers that live briefly (a chunk file's bytes while they are checked,
//! an export's chunks while they are written) round their mappings up to size classes, so that
//! the next buffer of a similar length reuses one instead of mapping fresh memory, which this
//! VM's kernel zeroes at ~2 GB/s (a sixth of a one-shot export's CPU). Also a small shared pool
//! of scratch buffers (the float codec's byte groups, replies that span chunks), reused across
//! threads but bounded in number, so that many reader threads do not each keep megabytes of
//! scratch.

use parking_lot::Mutex;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

const HUGE: usize = 2 << 20;

/// A fixed-length byte buffer in its own mapping.
pub struct ChunkBuf {
    /// The mapping's start.
    ptr: NonNull<u8>,
    /// The buffer's bytes: `len` of them, from `at` in the mapping (see `into_view`).
    at: usize,
    len: usize,
    map_len: usize,
    /// Where the mapping goes when the buffer is dropped.
    pool: &'static SparePool,
}

// SAFETY: the mapping is owned by this value alone; &ChunkBuf only gives shared reads.
unsafe impl Send for ChunkBuf {}
// SAFETY: as above.
unsafe impl Sync for ChunkBuf {}

/// Mappings of dropped buffers, kept for reuse up to a limit in bytes (0 keeps none).
pub struct SparePool {
    spare: Mutex<Spare>,
    /// Whether the mappings made for it are rounded up to a size class (`map_len`).
    classes: bool,
}

struct Spare {
    maps: Vec<(NonNull<u8>, usize)>,
    bytes: usize,
    limit: usize,
    /// What its owner's budget leaves for spare buffers now (see `leave_room`).
    room: usize,
}

// SAFETY: the pool owns the mappings it holds; they are only handed out under its lock.
unsafe impl Send for Spare {}

/// The pool `ChunkBuf::for_overwrite` draws from and gives back to.
pub static SPARE: SparePool = SparePool::new();

fn unmap(maps: Vec<(NonNull<u8>, usize)>) -> usize {
    maps.into_iter()
        .map(|(ptr, len)| {
            // SAFETY: the caller owns these mappings and nothing refers to them any more.
            unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
            len
        })
        .sum()
}

impl SparePool {
    /// A pool that keeps nothing until `keep` gives it room.
    pub const fn new() -> SparePool {
        SparePool::with_limit(0)
    }

    /// A pool that keeps up to `bytes` from the start.
    pub const fn with_limit(bytes: usize) -> SparePool {
        SparePool {
            spare: Mutex::new(Spare {
                maps: Vec::new(),
                bytes: 0,
                limit: bytes,
                room: usize::MAX,
            }),
            classes: false,
        }
    }

    /// `with_limit` for buffers that live briefly and vary in length: each mapping made for it
    /// from 1 MiB on is rounded up to whole 2 MiB (huge pages over the whole 2 MiB a buffer in
    /// it uses, `advise_huge`), so a kept one serves the next buffer up to that size. (The chunk cache's pool keeps exact lengths: a
    /// cached chunk holds its memory for long, and a rounded one would hold up to 2 MiB more.)
    pub const fn in_classes(bytes: usize) -> SparePool {
        let mut pool = SparePool::with_limit(bytes);
        pool.classes = true;
        pool
    }

    /// The length of the mapping made, or taken from this pool, for a buffer of `len` bytes.
    fn map_len(&self, len: usize) -> usize {
        if self.classes && len >= HUGE / 2 {
            len.next_multiple_of(HUGE)
        } else {
            len.next_multiple_of(4096)
        }
    }

    /// Keeps up to `bytes` of dropped buffers' mappings for reuse. Memory kept here stays
    /// resident: its owner counts it in its memory budget (`bytes`) and trims it (`trim`).
    pub fn keep(&self, bytes: usize) {
        let mut spare = self.spare.lock();
        spare.limit = bytes;
        let over = spare.bytes.saturating_sub(bytes);
        let surplus = Self::pop(&mut spare, over);
        drop(spare);
        unmap(surplus);
    }

    /// Keeps no more than `bytes` from now on (a budget that changes with what else it holds):
    /// a buffer dropped while the pool holds that much goes back to the system. Nothing kept is
    /// let go here (the owner trims what it must).
    pub fn leave_room(&self, bytes: usize) {
        self.spare.lock().room = bytes;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.spare.lock().bytes
    }

    /// Returns kept mappings to the system until at least `bytes` are freed or none is left;
    /// returns the bytes freed.
    pub fn trim(&self, bytes: usize) -> usize {
        let freed = Self::pop(&mut self.spare.lock(), bytes);
        unmap(freed)
    }

    fn pop(spare: &mut Spare, bytes: usize) -> Vec<(NonNull<u8>, usize)> {
        let mut out = Vec::new();
        let mut total = 0;
        while total < bytes {
            let Some(m) = spare.maps.pop() else { break };
            spare.bytes -= m.1;
            total += m.1;
            out.push(m);
        }
        out
    }

    /// The smallest kept mapping of at least `map_len` bytes, if one is no more than twice that.
    fn take(&self, map_len: usize) -> Option<(NonNull<u8>, usize)> {
        let mut spare = self.spare.lock();
        let (i, _) = spare
            .maps
            .iter()
            .enumerate()
            .filter(|(_, m)| m.1 >= map_len && m.1 <= 2 * map_len)
            .min_by_key(|(_, m)| m.1)?;
        let m = spare.maps.swap_remove(i);
        spare.bytes -= m.1;
        Some(m)
    }

    /// Keeps a mapping if there is room; gives it back otherwise.
    fn put(&self, ptr: NonNull<u8>, map_len: usize) -> Option<(NonNull<u8>, usize)> {
        let mut spare = self.spare.lock();
        if spare.bytes + map_len > spare.limit.min(spare.room) {
            return Some((ptr, map_len));
        }
        spare.bytes += map_len;
        spare.maps.push((ptr, map_len));
        None
    }
}

impl Default for SparePool {
    fn default() -> SparePool {
        SparePool::new()
    }
}

/// A fresh anonymous private mapping of `len` bytes.
fn map_anon(len: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: an anonymous private mapping; the result is checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr)
}

/// A fresh mapping of `map_len` bytes (a multiple of 4 KiB) that starts on a huge-page boundary,
/// with huge pages asked for the first `len` (`advise_huge`).
fn map_huge(map_len: usize, len: usize) -> io::Result<*mut libc::c_void> {
    let base = map_anon(map_len + HUGE)?;
    let head = (base as usize).next_multiple_of(HUGE) - base as usize;
    // SAFETY: both ranges lie in the mapping just made and nothing refers to them.
    let ptr = unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        libc::munmap(base.cast::<u8>().add(head + map_len).cast(), HUGE - head);
        base.cast::<u8>().add(head).cast::<libc::c_void>()
    };
    advise_huge(ptr, len);
    Ok(ptr)
}

/// Asks for huge pages over the whole 2 MiB units of the first `len` bytes of a mapping made by
/// `map_huge`. Past them pages stay 4 KiB, faulted in as they are written: a buffer a little
/// over a multiple of 2 MiB, or one in a mapping rounded up to its class, does not make the
/// kernel zero, and hold, a mostly unused huge page.
fn advise_huge(ptr: *mut libc::c_void, len: usize) {
    let whole = len / HUGE * HUGE;
    if whole > 0 {
        // SAFETY: the range is inside the mapping; the advice only affects its pages, and if it
        // fails the buffer just stays in 4 KiB pages.
        unsafe { libc::madvise(ptr, whole, libc::MADV_HUGEPAGE) };
    }
}

impl ChunkBuf {
    /// A buffer of `len` bytes with unspecified contents (a reused mapping's old bytes, or zeros):
    /// the caller must overwrite all of it before anyone reads it. Drawn from `SPARE`.
    pub fn for_overwrite(len: usize) -> io::Result<ChunkBuf> {
        ChunkBuf::for_overwrite_in(&SPARE, len)
    }

    /// `for_overwrite`, drawing from and giving back to `pool`.
    pub fn for_overwrite_in(pool: &'static SparePool, len: usize) -> io::Result<ChunkBuf> {
        if len == 0 {
            return Ok(ChunkBuf {
                ptr: NonNull::dangling(),
                at: 0,
                len: 0,
                map_len: 0,
                pool,
            });
        }
        if let Some(kept) = ChunkBuf::kept(pool, len) {
            return Ok(kept);
        }
        let map_len = pool.map_len(len);
        let ptr = if map_len >= HUGE {
            map_huge(map_len, len)?
        } else {
            map_anon(map_len)?
        };
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(ChunkBuf {
            ptr,
            at: 0,
            len,
            map_len,
            pool,
        })
    }

    /// Bytes `range` of this buffer as the buffer, without a copy: the mapping stays whole (and
    /// goes back to its pool when the buffer is dropped). `None` when `range` is not inside it.
    pub fn into_view(mut self, range: std::ops::Range<usize>) -> Option<ChunkBuf> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        self.at += range.start;
        self.len = range.end - range.start;
        Some(self)
    }

    /// The bytes of memory the buffer holds: its mapping's, which may be more than its length.
    pub fn mapped_len(&self) -> usize {
        self.map_len
    }

    /// `for_overwrite_in(pool, len)`, but taking a kept mapping of `first` where it holds one
    /// that fits (the buffer then goes back to `first`). A chunk file read into one of the chunk
    /// cache's spare mappings can stay in the cache as the chunk (a raw chunk, used in place)
    /// and return to the cache's pool when evicted, instead of draining the reader's pool.
    pub fn for_overwrite_from(
        (first, pool): (&'static SparePool, &'static SparePool),
        len: usize,
    ) -> io::Result<ChunkBuf> {
        ChunkBuf::kept(first, len).map_or_else(|| ChunkBuf::for_overwrite_in(pool, len), Ok)
    }

    /// A buffer of `len` bytes in a mapping `pool` kept, if it holds one that fits (none does
    /// for 0 bytes: `SparePool::take` gives no more than twice the length asked).
    fn kept(pool: &'static SparePool, len: usize) -> Option<ChunkBuf> {
        let (ptr, map_len) = pool.take(pool.map_len(len))?;
        if pool.classes && map_len >= HUGE {
            // A longer buffer than the mapping was first made for: its new whole 2 MiB units
            // can be huge pages too (where they have not been written in 4 KiB pages yet).
            advise_huge(ptr.as_ptr().cast(), len);
        }
        Some(ChunkBuf {
            ptr,
            at: 0,
            len,
            map_len,
            pool,
        })
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> io::Result<ChunkBuf> {
        let mut b = ChunkBuf::for_overwrite(data.len())?;
        b.copy_from_slice(data);
        Ok(b)
    }
}

impl Deref for ChunkBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping holds `at + len` bytes (or ptr is dangling with both 0) for the
        // value's life.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(self.at), self.len) }
    }
}

impl DerefMut for ChunkBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.at), self.len) }
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        if self.map_len == 0 {
            return;
        }
        if let Some(back) = self.pool.put(self.ptr, self.map_len) {
            unmap(vec![back]);
        }
    }
}

impl std::fmt::Debug for ChunkBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkBuf({} bytes)", self.len)
    }
}

/// A bounded pool of reusable scratch `Vec`s shared by all threads.
pub struct ScratchPool {
    free: parking_lot::Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

/// Buffers larger than this are not kept.
const MAX_KEPT: usize = 64 << 20;

impl ScratchPool {
    pub const fn new(keep: usize) -> ScratchPool {
        ScratchPool {
            free: parking_lot::Mutex::new(Vec::new()),
            keep,
        }
    }

    /// Runs `f` with a buffer (length and contents unspecified: `f` resizes it), then keeps the
    /// buffer for the next caller if the pool has room.
    pub fn with<T>(&self, f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
        let mut buf = self.free.lock().pop().unwrap_or_default();
        let out = f(&mut buf);
        if buf.capacity() <= MAX_KEPT {
            let mut free = self.free.lock();
            if free.len() < self.keep {
                free.push(buf);
            }
        }
        out
    }

    /// Runs `f` with a buffer of exactly `len` bytes (contents unspecified). A kept buffer only
    /// ever grows: its bytes are not written again to resize it (on a fresh mapping every page
    /// written is a page fault).
    pub fn with_len<T>(&self, len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
        self.with(|buf| {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_hold_their_bytes() {
        for len in [0, 1, 4095, 4096, 5 << 20] {
            let mut b = ChunkBuf::for_overwrite(len).unwrap();
            assert_eq!(b.len(), len);
            if len > 0 {
                b[len - 1] = 7;
                assert_eq!(b[len - 1], 7);
            }
        }
        let c = ChunkBuf::from_slice(b"hello").unwrap();
        assert_eq!(&c[..], b"hello");
        // A view: the bytes inside, in place; a range outside is refused.
        let view = c.into_view(1..4).unwrap();
        assert_eq!(&view[..], b"ell");
        assert_eq!(view.mapped_len(), 4096);
        let mut inner = view.into_view(1..2).unwrap();
        inner[0] = b'L';
        assert_eq!(&inner[..], b"L");
        assert!(inner.into_view(0..2).is_none());
    }

    #[test]
    fn large_buffers_start_on_a_huge_page_and_end_at_their_last_page() {
        let pool: &'static SparePool = Box::leak(Box::default());
        pool.keep(64 << 20);
        let mut b = ChunkBuf::for_overwrite_in(pool, (4 << 20) + 100).unwrap();
        assert_eq!(b.as_ptr() as usize % HUGE, 0);
        b.fill(3);
        assert_eq!(b[(4 << 20) + 99], 3);
        drop(b);
        assert_eq!(
            pool.bytes(),
            (4 << 20) + 4096,
            "the mapping is not rounded to 2 MiB"
        );
    }

    #[test]
    fn a_pool_in_classes_serves_a_longer_buffer_from_a_kept_mapping() {
        static CLASSED: SparePool = SparePool::in_classes(16 << 20);
        static EXACT: SparePool = SparePool::with_limit(16 << 20);
        for (pool, reused) in [(&CLASSED, true), (&EXACT, false)] {
            let mut a = ChunkBuf::for_overwrite_in(pool, 2_600_000).unwrap();
            a.fill(5);
            let (at, mapped) = (a.as_ptr(), a.mapped_len());
            drop(a);
            let mut b = ChunkBuf::for_overwrite_in(pool, 3_900_000).unwrap();
            assert_eq!(b.as_ptr() == at, reused, "classes: {}", pool.classes);
            assert_eq!(b.as_ptr() as usize % HUGE, 0);
            b.fill(6);
            assert_eq!(b[3_899_999], 6);
            if reused {
                assert_eq!(mapped, 4 << 20, "rounded up to whole 2 MiB");
            } else {
                assert_eq!(mapped, 2_600_000usize.next_multiple_of(4096));
            }
            drop(b);
        }
        // Under 1 MiB the class is the length in pages.
        let c = ChunkBuf::for_overwrite_in(&CLASSED, 100_000).unwrap();
        assert_eq!(c.mapped_len(), 100_000usize.next_multiple_of(4096));
    }

    #[test]
    fn a_pool_made_with_a_limit_keeps_from_the_start() {
        static POOL: SparePool = SparePool::with_limit(1 << 20);
        drop(ChunkBuf::for_overwrite_in(&POOL, 1000).unwrap());
        assert_eq!(POOL.bytes(), 4096);
        drop(ChunkBuf::for_overwrite_in(&POOL, 2 << 20).unwrap());
        assert_eq!(POOL.bytes(), 4096, "over the limit: given back");
    }

    #[test]
    fn dropped_buffers_are_reused_up_to_the_spare_limit() {
        let pool: &'static SparePool = Box::leak(Box::default());
        pool.keep(8 << 20);
        let make = |byte, len| {
            let mut b = ChunkBuf::for_overwrite_in(pool, len).unwrap();
            b.fill(byte);
            b
        };
        let (a, b, c) = (make(7, 4 << 20), make(8, 4 << 20), make(9, 3 << 20));
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        drop((a, b, c));
        assert_eq!(pool.bytes(), 8 << 20, "two kept, the third over the limit");
        // A buffer of a size that fits takes one of the kept mappings, old bytes and all.
        let d = ChunkBuf::for_overwrite_in(pool, 3 << 20).unwrap();
        assert!(d.as_ptr() == pa || d.as_ptr() == pb);
        assert!(d[0] == 7 || d[0] == 8);
        assert_eq!(d.len(), 3 << 20);
        // Much smaller buffers do not take a large mapping.
        let e = ChunkBuf::for_overwrite_in(pool, 4096).unwrap();
        assert!(e.as_ptr() != pa && e.as_ptr() != pb);
        drop((d, e));
        assert_eq!(
            pool.bytes(),
            8 << 20,
            "the small one did not fit under the limit"
        );
        // Trimming frees whole mappings until enough is freed.
        assert_eq!(pool.trim(1), 4 << 20);
        assert_eq!(pool.bytes(), 4 << 20);
        pool.keep(0);
        assert_eq!(pool.bytes(), 0);
    }

    #[test]
    fn scratch_pool_reuses_a_bounded_number_of_buffers() {
        let pool = ScratchPool::new(1);
        pool.with(|b| b.resize(100, 1));
        assert!(pool.with(|b| b.capacity()) >= 100, "the buffer is reused");
        assert_eq!(pool.free.lock().len(), 1);
        // with_len hands out exactly the length asked for, from the same buffer.
        assert_eq!(pool.with_len(10, |b| b.len()), 10);
        assert!(
            pool.with(|b| b.capacity()) >= 100,
            "a shorter use does not shrink it"
        );
        // Nested use takes a second buffer; only one is kept afterwards.
        pool.with(|_| pool.with(|b| b.len()));
        assert_eq!(pool.free.lock().len(), 1);
    }
}
