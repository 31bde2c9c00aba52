//! Test: the wrappers (deadlines, faults) forward every call a kind may do its own way, provided
//! ones included; one they did not forward would run the trait's generic version over the
//! wrapped object calls, and a directory's direct I/O or a bucket's one listing would be lost
//! behind the wrapper without any test failing.

use super::deadline::Deadlined;
use super::faulty::Faulty;
use super::*;
use parking_lot::Mutex;
use std::sync::Arc;

/// A member that answers every call, required or provided, and notes its name.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<&'static str>>);

impl Recorder {
    fn note(&self, name: &'static str) {
        self.0.lock().push(name);
    }
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.0.lock())
    }
}

impl MemberIo for Recorder {
    fn location(&self) -> &str {
        "recorder"
    }
    fn remote(&self) -> bool {
        false
    }
    fn get(&self, _: &str, _: u64) -> Result<Option<Stored>, MemberError> {
        self.note("get");
        Ok(None)
    }
    fn read_at(&self, _: &str, _: u64, len: usize) -> Result<Vec<u8>, MemberError> {
        self.note("read_at");
        Ok(vec![0; len])
    }
    fn stat(&self, _: &str) -> Result<Option<ObjectInfo>, MemberError> {
        self.note("stat");
        Ok(None)
    }
    fn put(&self, _: &str, _: &[u8], _: u64, _: &Expect) -> Result<(), MemberError> {
        self.note("put");
        Ok(())
    }
    fn write(&self, _: &str, _: &[u8], _: IfPresent) -> Result<(), MemberError> {
        self.note("write");
        Ok(())
    }
    fn list(&self, _: &str) -> Result<Vec<Listed>, MemberError> {
        self.note("list");
        Ok(Vec::new())
    }
    fn delete(&self, _: &str) -> Result<(), MemberError> {
        self.note("delete");
        Ok(())
    }
    fn read_info(&self) -> Result<Option<Vec<u8>>, MemberError> {
        self.note("read_info");
        Ok(None)
    }
    fn init(&self, _: &[u8], _: Setup) -> Result<(), MemberError> {
        self.note("init");
        Ok(())
    }
    fn get_chunk(&self, _: &Hash32, _: u64) -> Result<Image, MemberError> {
        self.note("get_chunk");
        Ok(Image::Bytes(bytes::Bytes::new()))
    }
    fn read_chunk_at(&self, _: &Hash32, _: u64, len: usize) -> Result<Vec<u8>, MemberError> {
        self.note("read_chunk_at");
        Ok(vec![0; len])
    }
    fn chunk_head(&self, _: &Hash32) -> Result<Option<ChunkHead>, MemberError> {
        self.note("chunk_head");
        Ok(None)
    }
    fn put_chunk(&self, _: &Hash32, _: &[u8], _: IfPresent) -> Result<(), MemberError> {
        self.note("put_chunk");
        Ok(())
    }
    fn list_chunks(&self) -> Result<Vec<ChunkEntry>, MemberError> {
        self.note("list_chunks");
        Ok(Vec::new())
    }
    fn delete_chunk(&self, _: &Hash32) -> Result<(), MemberError> {
        self.note("delete_chunk");
        Ok(())
    }
    fn sweep_damaged(&self, _: Duration, _: Sweep) -> Result<Stale, MemberError> {
        self.note("sweep_damaged");
        Ok(Stale::default())
    }
    fn flush(&self) -> Result<(), MemberError> {
        self.note("flush");
        Ok(())
    }
    fn exclusive_lock(&self) -> bool {
        self.note("exclusive_lock");
        true
    }
    fn lock(&self) -> Result<Box<dyn Lock>, MemberError> {
        self.note("lock");
        Ok(Box::new(NoLock))
    }
    fn free_space(&self) -> Result<Option<u64>, MemberError> {
        self.note("free_space");
        Ok(Some(1))
    }
}

type Call = fn(&dyn MemberIo) -> Result<(), MemberError>;

/// Every call a kind implements, each with the name the wrapped member must see.
fn every_call() -> Vec<(&'static str, Call)> {
    vec![
        ("get", |m| m.get("k", 1).map(drop)),
        ("read_at", |m| m.read_at("k", 0, 1).map(drop)),
        ("stat", |m| m.stat("k").map(drop)),
        ("put", |m| m.put("k", b"x", 1, &Expect::Absent)),
        ("write", |m| m.write("k", b"x", IfPresent::Refuse)),
        ("list", |m| m.list("d").map(drop)),
        ("delete", |m| m.delete("k")),
        ("read_info", |m| m.read_info().map(drop)),
        ("init", |m| m.init(b"{}", Setup::Existing)),
        ("get_chunk", |m| m.get_chunk(&Hash32::of(b"x"), 1).map(drop)),
        ("read_chunk_at", |m| {
            m.read_chunk_at(&Hash32::of(b"x"), 0, 1).map(drop)
        }),
        ("chunk_head", |m| m.chunk_head(&Hash32::of(b"x")).map(drop)),
        ("put_chunk", |m| {
            m.put_chunk(&Hash32::of(b"x"), b"x", IfPresent::Replace)
        }),
        ("list_chunks", |m| m.list_chunks().map(drop)),
        ("delete_chunk", |m| m.delete_chunk(&Hash32::of(b"x"))),
        ("sweep_damaged", |m| {
            m.sweep_damaged(Duration::ZERO, Sweep::Count).map(drop)
        }),
        ("flush", |m| m.flush()),
        ("exclusive_lock", |m| {
            assert!(m.exclusive_lock());
            Ok(())
        }),
        ("lock", |m| m.lock().map(drop)),
        ("free_space", |m| m.free_space().map(drop)),
    ]
}

fn assert_forwards(wrapper: &dyn MemberIo, inner: &Recorder) {
    for (name, call) in every_call() {
        call(wrapper).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            inner.take(),
            vec![name],
            "{name} through {}",
            wrapper.location()
        );
    }
}

#[test]
fn the_wrappers_forward_every_call_a_kind_may_do_its_own_way() {
    let inner = Arc::new(Recorder::default());
    assert_forwards(&Faulty::new(inner.clone()), &inner);
    assert_forwards(&Deadlined::new(inner.clone(), &Options::default()), &inner);
    // The check can fail: a wrapper of the object calls alone hands a chunk read to the
    // generic version, which the wrapped member sees as a stat and a ranged read.
    let thin = Thin(inner.clone());
    assert!(thin.get_chunk(&Hash32::of(b"x"), 1).is_err());
    assert_eq!(inner.take(), vec!["stat"]);
    thin.read_chunk_at(&Hash32::of(b"x"), 0, 1).unwrap();
    assert_eq!(inner.take(), vec!["read_at"]);
}

/// A wrapper that forwards only the calls every kind must implement.
#[derive(Debug)]
struct Thin(Arc<Recorder>);

impl MemberIo for Thin {
    fn location(&self) -> &str {
        self.0.location()
    }
    fn remote(&self) -> bool {
        self.0.remote()
    }
    fn get(&self, key: &str, cap: u64) -> Result<Option<Stored>, MemberError> {
        self.0.get(key, cap)
    }
    fn read_at(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, MemberError> {
        self.0.read_at(key, offset, len)
    }
    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, MemberError> {
        self.0.stat(key)
    }
    fn put(&self, key: &str, bytes: &[u8], cap: u64, expect: &Expect) -> Result<(), MemberError> {
        self.0.put(key, bytes, cap, expect)
    }
    fn write(&self, key: &str, bytes: &[u8], present: IfPresent) -> Result<(), MemberError> {
        self.0.write(key, bytes, present)
    }
    fn list(&self, dir: &str) -> Result<Vec<Listed>, MemberError> {
        self.0.list(dir)
    }
    fn delete(&self, key: &str) -> Result<(), MemberError> {
        self.0.delete(key)
    }
}
