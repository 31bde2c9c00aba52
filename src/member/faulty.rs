//! A test twin: wraps any member and makes its calls slow, failing, stalled, short or corrupt
//! on demand: every call of one kind, or only its k-th, so a test can break a repair or a pack
//! half-way. It wraps every call the kinds implement (the object calls, and the chunk, member
//! file, flush and lock calls they may do their own way), so the rest (manifests, store-level
//! files) see the same faults. Built for tests: the crate's own, and integration
//! tests through the `twins` feature.

use super::{
    ChunkEntry, ChunkHead, Expect, IfPresent, Image, Listed, Lock, MemberError, MemberIo,
    ObjectInfo, Setup, Stale, Stored, Sweep,
};
use crate::codec::Hash32;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a call does instead of (or besides) its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Answers after this long.
    Slow(Duration),
    /// Fails at once, as a refused connection does.
    Fail,
    /// Times out after this long, as a stalled endpoint does.
    Stall(Duration),
    /// Reads come back with one byte flipped; writes store one byte flipped.
    Corrupt,
    /// Reads come back, and writes are stored, without their second half.
    Short,
}

/// The calls a fault can be aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    ReadInfo,
    Init,
    Get,
    ReadAt,
    Stat,
    Put,
    Write,
    List,
    Delete,
    GetChunk,
    ReadChunkAt,
    ChunkHead,
    PutChunk,
    ListChunks,
    DeleteChunk,
    CleanStale,
    Flush,
    Lock,
}

const OPS: usize = 18;

/// A fault for calls of kind `op`: every one from now on (`nth: None`), or only the `nth`
/// counted from the wrapper's creation (1 is the first).
#[derive(Debug, Clone, Copy)]
struct Rule {
    op: Op,
    nth: Option<u64>,
    fault: Fault,
}

#[derive(Debug)]
pub struct Faulty {
    inner: Arc<dyn MemberIo>,
    rules: Mutex<Vec<Rule>>,
    calls: [AtomicU64; OPS],
    /// Chunk reads asked of this member.
    pub gets: AtomicU64,
}

impl Faulty {
    pub fn new(inner: Arc<dyn MemberIo>) -> Faulty {
        Faulty {
            inner,
            rules: Mutex::new(Vec::new()),
            calls: Default::default(),
            gets: AtomicU64::new(0),
        }
    }

    /// Every chunk read from now on does `fault` (`Fault::None` clears it).
    pub fn set(&self, fault: Fault) {
        self.on(Op::GetChunk, fault);
    }

    /// Every call of kind `op` from now on does `fault` (`Fault::None` clears it).
    pub fn on(&self, op: Op, fault: Fault) {
        let mut rules = self.rules.lock();
        rules.retain(|r| r.op != op || r.nth.is_some());
        rules.push(Rule {
            op,
            nth: None,
            fault,
        });
    }

    /// The `nth` call of kind `op` (counted from the wrapper's creation, 1 is the first) does
    /// `fault`; the others work.
    pub fn on_nth(&self, op: Op, nth: u64, fault: Fault) {
        self.rules.lock().push(Rule {
            op,
            nth: Some(nth),
            fault,
        });
    }

    /// Calls of kind `op` made so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls[op as usize].load(Ordering::Relaxed)
    }

    /// Counts a call of kind `op` and returns the fault it meets.
    fn fault(&self, op: Op) -> Fault {
        let n = self.calls[op as usize].fetch_add(1, Ordering::Relaxed) + 1;
        let rules = self.rules.lock();
        rules
            .iter()
            .rev()
            .find(|r| r.op == op && r.nth.is_none_or(|k| k == n))
            .map_or(Fault::None, |r| r.fault)
    }

    /// Runs `work` under the fault the call meets: time and failure faults here, data faults
    /// (`Corrupt`, `Short`) handed to `work`, which applies them with `mangle`.
    fn run<T>(
        &self,
        op: Op,
        work: impl FnOnce(Fault) -> Result<T, MemberError>,
    ) -> Result<T, MemberError> {
        match self.fault(op) {
            Fault::Slow(d) => {
                std::thread::sleep(d);
                work(Fault::None)
            }
            Fault::Fail => Err(MemberError::Unavailable("connection refused".into())),
            Fault::Stall(d) => {
                std::thread::sleep(d);
                Err(MemberError::TimedOut(d))
            }
            other => work(other),
        }
    }
}

/// `bytes` as a data fault leaves them.
fn mangle(fault: Fault, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match fault {
        Fault::Corrupt => {
            if let Some(last) = out.last_mut() {
                *last ^= 0x5a;
            }
        }
        Fault::Short => out.truncate(bytes.len() / 2),
        _ => {}
    }
    out
}

impl MemberIo for Faulty {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn remote(&self) -> bool {
        true
    }
    fn read_info(&self) -> Result<Option<Vec<u8>>, MemberError> {
        self.run(Op::ReadInfo, |f| {
            Ok(self.inner.read_info()?.map(|b| mangle(f, &b)))
        })
    }
    fn init(&self, info: &[u8], setup: Setup) -> Result<(), MemberError> {
        self.run(Op::Init, |f| self.inner.init(&mangle(f, info), setup))
    }
    fn get(&self, key: &str, cap: u64) -> Result<Option<Stored>, MemberError> {
        self.run(Op::Get, |f| {
            Ok(self.inner.get(key, cap)?.map(|s| Stored {
                bytes: mangle(f, &s.bytes),
                tag: s.tag,
            }))
        })
    }
    fn put(&self, key: &str, bytes: &[u8], cap: u64, expect: &Expect) -> Result<(), MemberError> {
        self.run(Op::Put, |f| {
            self.inner.put(key, &mangle(f, bytes), cap, expect)
        })
    }
    fn read_at(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, MemberError> {
        self.run(Op::ReadAt, |f| {
            Ok(mangle(f, &self.inner.read_at(key, offset, len)?))
        })
    }
    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, MemberError> {
        self.run(Op::Stat, |_| self.inner.stat(key))
    }
    fn write(&self, key: &str, bytes: &[u8], present: IfPresent) -> Result<(), MemberError> {
        self.run(Op::Write, |f| {
            self.inner.write(key, &mangle(f, bytes), present)
        })
    }
    fn list(&self, dir: &str) -> Result<Vec<Listed>, MemberError> {
        self.run(Op::List, |_| self.inner.list(dir))
    }
    fn delete(&self, key: &str) -> Result<(), MemberError> {
        self.run(Op::Delete, |_| self.inner.delete(key))
    }
    fn get_chunk(&self, hash: &Hash32, max_len: u64) -> Result<Image, MemberError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.run(Op::GetChunk, |f| {
            let image = self.inner.get_chunk(hash, max_len)?;
            Ok(match f {
                Fault::None => image,
                f => Image::Bytes(mangle(f, &image).into()),
            })
        })
    }
    fn read_chunk_at(
        &self,
        hash: &Hash32,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, MemberError> {
        self.run(Op::ReadChunkAt, |f| {
            Ok(mangle(f, &self.inner.read_chunk_at(hash, offset, len)?))
        })
    }
    fn chunk_head(&self, hash: &Hash32) -> Result<Option<ChunkHead>, MemberError> {
        self.run(Op::ChunkHead, |_| self.inner.chunk_head(hash))
    }
    fn put_chunk(
        &self,
        hash: &Hash32,
        image: &[u8],
        present: IfPresent,
    ) -> Result<(), MemberError> {
        self.run(Op::PutChunk, |f| {
            self.inner.put_chunk(hash, &mangle(f, image), present)
        })
    }
    fn list_chunks(&self) -> Result<Vec<ChunkEntry>, MemberError> {
        self.run(Op::ListChunks, |_| self.inner.list_chunks())
    }
    fn delete_chunk(&self, hash: &Hash32) -> Result<(), MemberError> {
        self.run(Op::DeleteChunk, |_| self.inner.delete_chunk(hash))
    }
    fn sweep_damaged(&self, older_than: Duration, sweep: Sweep) -> Result<Stale, MemberError> {
        self.run(Op::CleanStale, |_| {
            self.inner.sweep_damaged(older_than, sweep)
        })
    }
    fn flush(&self) -> Result<(), MemberError> {
        self.run(Op::Flush, |_| self.inner.flush())
    }
    fn exclusive_lock(&self) -> bool {
        self.inner.exclusive_lock()
    }
    fn lock(&self) -> Result<Box<dyn Lock>, MemberError> {
        self.run(Op::Lock, |_| self.inner.lock())
    }
    fn free_space(&self) -> Result<Option<u64>, MemberError> {
        self.inner.free_space()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::mem::MemMember;

    #[test]
    fn a_fault_aimed_at_the_kth_call_meets_only_that_call() {
        let f = Faulty::new(Arc::new(MemMember::new("mem")));
        f.init(b"{}", Setup::Create).unwrap();
        f.on_nth(Op::Put, 2, Fault::Fail);
        f.put_meta("a.json", b"1", &Expect::Absent).unwrap();
        assert!(matches!(
            f.put_meta("b.json", b"2", &Expect::Absent),
            Err(MemberError::Unavailable(_))
        ));
        f.put_meta("c.json", b"3", &Expect::Absent).unwrap();
        assert_eq!(f.calls(Op::Put), 3);
        // Provided calls go through the wrapped ones: a manifest read meets a Get fault.
        f.put_manifest("m", b"body", &Expect::Absent).unwrap();
        f.on(Op::Get, Fault::Short);
        assert_eq!(f.get_manifest("m").unwrap().unwrap().bytes, b"bo");
        f.on(Op::Get, Fault::None);
        assert_eq!(f.get_manifest("m").unwrap().unwrap().bytes, b"body");
    }
}
