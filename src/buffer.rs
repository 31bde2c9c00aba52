//! Buffers for decompressed chunks: anonymous memory mappings, backed by transparent huge pages
//! where the system allows (`madvise`). A 4 MiB chunk then costs two page faults instead of a
//! thousand, and freeing it returns the memory to the system at once, so the daemon's resident
//! size follows its cache. Also a small shared pool of scratch buffers (compressed payloads,
//! decoded byte groups), reused across threads but bounded in number, so that many reader
//! threads do not each keep megabytes of scratch.

use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

const HUGE: usize = 2 << 20;

/// A fixed-length, zero-initialised byte buffer in its own mapping.
pub struct ChunkBuf {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
}

// SAFETY: the mapping is owned by this value alone; &ChunkBuf only gives shared reads.
unsafe impl Send for ChunkBuf {}
// SAFETY: as above.
unsafe impl Sync for ChunkBuf {}

impl ChunkBuf {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> io::Result<ChunkBuf> {
        if len == 0 {
            return Ok(ChunkBuf {
                ptr: NonNull::dangling(),
                len: 0,
                map_len: 0,
            });
        }
        let align = if len >= HUGE { HUGE } else { 4096 };
        let map_len = len.div_ceil(align) * align;
        // SAFETY: an anonymous private mapping; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if len >= HUGE {
            // SAFETY: advice on the mapping just made; failure only loses the speed-up.
            unsafe { libc::madvise(ptr, map_len, libc::MADV_HUGEPAGE) };
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(ChunkBuf { ptr, len, map_len })
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> io::Result<ChunkBuf> {
        let mut b = ChunkBuf::zeroed(data.len())?;
        b.copy_from_slice(data);
        Ok(b)
    }
}

impl Deref for ChunkBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes (or dangling with len 0) for the value's life.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for ChunkBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        if self.map_len > 0 {
            // SAFETY: unmapping the mapping this value owns.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_hold_their_bytes() {
        for len in [0, 1, 4095, 4096, 5 << 20] {
            let mut b = ChunkBuf::zeroed(len).unwrap();
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            if len > 0 {
                b[len - 1] = 7;
                assert_eq!(b[len - 1], 7);
            }
        }
        let c = ChunkBuf::from_slice(b"hello").unwrap();
        assert_eq!(&c[..], b"hello");
    }

    #[test]
    fn scratch_pool_reuses_a_bounded_number_of_buffers() {
        let pool = ScratchPool::new(1);
        pool.with(|b| b.resize(100, 1));
        assert!(pool.with(|b| b.capacity()) >= 100, "the buffer is reused");
        assert_eq!(pool.free.lock().len(), 1);
        // Nested use takes a second buffer; only one is kept afterwards.
        pool.with(|_| pool.with(|b| b.len()));
        assert_eq!(pool.free.lock().len(), 1);
    }
}
