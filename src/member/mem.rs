//! A test twin: a member held in memory, with the semantics the other kinds have (capped reads,
//! conditional puts, chunk puts that set a damaged file aside, an exclusive lock), so the store,
//! repair, rebalance and gc can be tested without disks or servers. Built for tests: the crate's
//! own, and integration tests through the `twins` feature.

use super::{
    ChunkEntry, ChunkHead, Expect, IfPresent, Image, Listed, Lock, MemberError, MemberIo, Setup,
    Stale, Stored, Sweep,
};
use crate::codec::{HEADER_LEN, Hash32};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// An object held: its bytes, when it was written, and its tag (a write counter).
#[derive(Debug, Clone)]
struct Object {
    bytes: Vec<u8>,
    modified: SystemTime,
    tag: u64,
}

#[derive(Debug, Default)]
struct State {
    /// The member file, once `init` wrote it.
    info: Option<Vec<u8>>,
    objects: BTreeMap<String, Object>,
    chunks: HashMap<Hash32, Object>,
    /// Damaged chunk images set aside by a replacing put.
    damaged: Vec<Object>,
    writes: u64,
}

impl State {
    fn object(&mut self, bytes: Vec<u8>) -> Object {
        self.writes += 1;
        Object {
            bytes,
            modified: SystemTime::now(),
            tag: self.writes,
        }
    }
}

/// A member in memory.
#[derive(Debug)]
pub struct MemMember {
    location: String,
    state: Mutex<State>,
    locked: Arc<AtomicBool>,
}

impl MemMember {
    /// An empty member named `location` (as an empty directory is).
    pub fn new(location: &str) -> MemMember {
        MemMember {
            location: location.to_string(),
            state: Mutex::new(State::default()),
            locked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The chunks held, sorted.
    pub fn chunk_hashes(&self) -> Vec<Hash32> {
        let mut out: Vec<Hash32> = self.state.lock().chunks.keys().copied().collect();
        out.sort_by_key(|h| h.to_hex());
        out
    }

    /// The keys of the small objects held, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.state.lock().objects.keys().cloned().collect()
    }

    /// Makes every chunk and set-aside file look `by` older (for minimum ages).
    pub fn age(&self, by: Duration) {
        let mut s = self.state.lock();
        let State {
            chunks, damaged, ..
        } = &mut *s;
        for o in chunks.values_mut().chain(damaged.iter_mut()) {
            o.modified -= by;
        }
    }
}

struct MemLock(Arc<AtomicBool>);
impl Lock for MemLock {}
impl Drop for MemLock {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn capped(o: &Object, cap: u64) -> Result<Stored, MemberError> {
    if o.bytes.len() as u64 > cap {
        return Err(MemberError::Corrupt(format!(
            "{}-byte object, larger than {cap} bytes",
            o.bytes.len()
        )));
    }
    Ok(Stored {
        bytes: o.bytes.clone(),
        tag: o.tag.to_string(),
    })
}

impl MemberIo for MemMember {
    fn location(&self) -> &str {
        &self.location
    }
    fn remote(&self) -> bool {
        false
    }
    fn read_info(&self) -> Result<Option<Vec<u8>>, MemberError> {
        Ok(self.state.lock().info.clone())
    }
    fn init(&self, info: &[u8], _setup: Setup) -> Result<(), MemberError> {
        self.state.lock().info = Some(info.to_vec());
        Ok(())
    }
    fn get(&self, key: &str, cap: u64) -> Result<Option<Stored>, MemberError> {
        self.state
            .lock()
            .objects
            .get(key)
            .map(|o| capped(o, cap))
            .transpose()
    }
    fn put(&self, key: &str, bytes: &[u8], cap: u64, expect: &Expect) -> Result<(), MemberError> {
        let mut s = self.state.lock();
        // A damaged object in the way counts as absent.
        let current = s.objects.get(key).and_then(|o| capped(o, cap).ok());
        let matches = match (expect, &current) {
            (Expect::Absent, None) => true,
            (Expect::Tag(t), Some(c)) => *t == c.tag,
            _ => false,
        };
        if !matches {
            return Err(MemberError::Conflict);
        }
        let o = s.object(bytes.to_vec());
        s.objects.insert(key.to_string(), o);
        Ok(())
    }
    fn list(&self, dir: &str) -> Result<Vec<Listed>, MemberError> {
        let prefix = format!("{dir}/");
        Ok(self
            .state
            .lock()
            .objects
            .iter()
            .filter_map(|(k, o)| {
                let name = k.strip_prefix(&prefix).filter(|n| !n.contains('/'))?;
                Some(Listed {
                    name: name.to_string(),
                    stamp: o.tag.to_string(),
                })
            })
            .collect())
    }
    fn delete(&self, key: &str) -> Result<(), MemberError> {
        self.state.lock().objects.remove(key);
        Ok(())
    }
    fn get_chunk(&self, hash: &Hash32, max_len: u64) -> Result<Image, MemberError> {
        let s = self.state.lock();
        let o = s.chunks.get(hash).ok_or(MemberError::Missing)?;
        if o.bytes.len() as u64 > max_len {
            return Err(MemberError::Corrupt(format!(
                "{}-byte object, larger than any image of its chunk",
                o.bytes.len()
            )));
        }
        Ok(Image::Bytes(o.bytes.clone().into()))
    }
    fn read_chunk_at(
        &self,
        hash: &Hash32,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, MemberError> {
        let s = self.state.lock();
        let o = s.chunks.get(hash).ok_or(MemberError::Missing)?;
        usize::try_from(offset)
            .ok()
            .and_then(|at| o.bytes.get(at..at.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                MemberError::Corrupt(format!(
                    "{}-byte object, shorter than the {len} bytes asked at {offset}",
                    o.bytes.len()
                ))
            })
    }
    fn chunk_head(&self, hash: &Hash32) -> Result<Option<ChunkHead>, MemberError> {
        let s = self.state.lock();
        Ok(s.chunks.get(hash).and_then(|o| {
            let header = <[u8; HEADER_LEN]>::try_from(o.bytes.get(..HEADER_LEN)?).ok()?;
            Some(ChunkHead {
                header,
                size: o.bytes.len() as u64,
            })
        }))
    }
    fn put_chunk(
        &self,
        hash: &Hash32,
        image: &[u8],
        present: IfPresent,
    ) -> Result<(), MemberError> {
        let mut s = self.state.lock();
        if let Some(old) = s.chunks.get(hash).cloned() {
            if present == IfPresent::Refuse {
                return Err(MemberError::AlreadyExists);
            }
            s.damaged.push(old);
        }
        let o = s.object(image.to_vec());
        s.chunks.insert(*hash, o);
        Ok(())
    }
    fn list_chunks(&self) -> Result<Vec<ChunkEntry>, MemberError> {
        Ok(self
            .state
            .lock()
            .chunks
            .iter()
            .map(|(hash, o)| ChunkEntry {
                hash: *hash,
                size: o.bytes.len() as u64,
                modified: o.modified,
            })
            .collect())
    }
    fn delete_chunk(&self, hash: &Hash32) -> Result<(), MemberError> {
        match self.state.lock().chunks.remove(hash) {
            Some(_) => Ok(()),
            None => Err(MemberError::Missing),
        }
    }
    fn clean_stale(&self, older_than: Duration, sweep: Sweep) -> Result<Stale, MemberError> {
        let now = SystemTime::now();
        let mut s = self.state.lock();
        let mut stale = Stale::default();
        let mut kept = Vec::new();
        for o in std::mem::take(&mut s.damaged) {
            if now.duration_since(o.modified).unwrap_or_default() < older_than {
                stale.kept_young += 1;
                kept.push(o);
                continue;
            }
            stale.deleted += 1;
            stale.bytes += o.bytes.len() as u64;
            if sweep == Sweep::Count {
                kept.push(o);
            }
        }
        s.damaged = kept;
        Ok(stale)
    }
    fn flush(&self) -> Result<(), MemberError> {
        Ok(())
    }
    fn exclusive_lock(&self) -> bool {
        true
    }
    fn lock(&self) -> Result<Box<dyn Lock>, MemberError> {
        if self.locked.swap(true, Ordering::AcqRel) {
            return Err(MemberError::Unavailable(
                "busy: another pack holds its lock".into(),
            ));
        }
        Ok(Box::new(MemLock(self.locked.clone())))
    }
}
