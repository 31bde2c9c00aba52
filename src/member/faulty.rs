//! A test twin: wraps any member and makes its chunk reads slow, failing or corrupt on demand,
//! so the store's failover, hedging and down-marking can be tested without a network.

use super::{
    ChunkEntry, ChunkHead, Expect, Image, Listed, Lock, MemberError, MemberIo, Stale, Stored,
};
use crate::codec::Hash32;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What `get_chunk` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Answers after this long.
    Slow(Duration),
    /// Fails at once, as a refused connection does.
    Fail,
    /// Times out after this long, as a stalled endpoint does.
    Stall(Duration),
    /// Answers with one byte of the image flipped.
    Corrupt,
}

#[derive(Debug)]
pub struct Faulty {
    inner: Arc<dyn MemberIo>,
    pub fault: Mutex<Fault>,
    /// Chunk reads asked of this member.
    pub gets: AtomicU64,
}

impl Faulty {
    pub fn new(inner: Arc<dyn MemberIo>) -> Faulty {
        Faulty {
            inner,
            fault: Mutex::new(Fault::None),
            gets: AtomicU64::new(0),
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock() = fault;
    }
}

impl MemberIo for Faulty {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn remote(&self) -> bool {
        true
    }
    fn read_info(&self) -> Result<Option<Vec<u8>>, MemberError> {
        self.inner.read_info()
    }
    fn init(&self, info: &[u8], create: bool) -> Result<(), MemberError> {
        self.inner.init(info, create)
    }
    fn get_chunk(&self, hash: &Hash32, max_len: u64) -> Result<Image, MemberError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let fault = *self.fault.lock();
        match fault {
            Fault::None => self.inner.get_chunk(hash, max_len),
            Fault::Slow(d) => {
                std::thread::sleep(d);
                self.inner.get_chunk(hash, max_len)
            }
            Fault::Fail => Err(MemberError::Unavailable("connection refused".into())),
            Fault::Stall(d) => {
                std::thread::sleep(d);
                Err(MemberError::TimedOut(d))
            }
            Fault::Corrupt => {
                let mut image = self.inner.get_chunk(hash, max_len)?.to_vec();
                if let Some(last) = image.last_mut() {
                    *last ^= 0x5a;
                }
                Ok(Image::Bytes(image.into()))
            }
        }
    }
    fn chunk_head(&self, hash: &Hash32) -> Result<Option<ChunkHead>, MemberError> {
        self.inner.chunk_head(hash)
    }
    fn put_chunk(&self, hash: &Hash32, image: &[u8], replace: bool) -> Result<(), MemberError> {
        self.inner.put_chunk(hash, image, replace)
    }
    fn list_chunks(&self) -> Result<Vec<ChunkEntry>, MemberError> {
        self.inner.list_chunks()
    }
    fn delete_chunk(&self, hash: &Hash32) -> Result<(), MemberError> {
        self.inner.delete_chunk(hash)
    }
    fn clean_stale(&self, older_than: Duration, dry_run: bool) -> Result<Stale, MemberError> {
        self.inner.clean_stale(older_than, dry_run)
    }
    fn get_manifest(&self, name: &str) -> Result<Option<Stored>, MemberError> {
        self.inner.get_manifest(name)
    }
    fn put_manifest(&self, name: &str, bytes: &[u8], expect: &Expect) -> Result<(), MemberError> {
        self.inner.put_manifest(name, bytes, expect)
    }
    fn list_manifests(&self) -> Result<Vec<Listed>, MemberError> {
        self.inner.list_manifests()
    }
    fn get_meta(&self, name: &str) -> Result<Option<Stored>, MemberError> {
        self.inner.get_meta(name)
    }
    fn put_meta(&self, name: &str, bytes: &[u8], expect: &Expect) -> Result<(), MemberError> {
        self.inner.put_meta(name, bytes, expect)
    }
    fn list_meta(&self, dir: &str) -> Result<Vec<String>, MemberError> {
        self.inner.list_meta(dir)
    }
    fn delete_meta(&self, name: &str) -> Result<(), MemberError> {
        self.inner.delete_meta(name)
    }
    fn delete_manifest(&self, name: &str) -> Result<(), MemberError> {
        self.inner.delete_manifest(name)
    }
    fn flush(&self) -> Result<(), MemberError> {
        self.inner.flush()
    }
    fn exclusive_lock(&self) -> bool {
        self.inner.exclusive_lock()
    }
    fn lock(&self) -> Result<Box<dyn Lock>, MemberError> {
        self.inner.lock()
    }
    fn free_space(&self) -> Result<Option<u64>, MemberError> {
        self.inner.free_space()
    }
}
