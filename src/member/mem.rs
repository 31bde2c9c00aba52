//! A test twin: a member held in memory, with the semantics the other kinds have (capped reads,
//! conditional puts, chunk puts that set a damaged file aside, an exclusive lock), so the store,
//! repair, rebalance and gc can be tested without disks or servers. Built for tests: the crate's
//! own, and integration tests through the `twins` feature.

use super::{Expect, IfPresent, Listed, Lock, MemberError, MemberIo, ObjectInfo, Stored, layout};
use crate::codec::Hash32;
use parking_lot::Mutex;
use std::collections::BTreeMap;
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
    objects: BTreeMap<String, Object>,
    writes: u64,
}

impl State {
    fn insert(&mut self, key: &str, bytes: &[u8]) {
        self.writes += 1;
        let o = Object {
            bytes: bytes.to_vec(),
            modified: SystemTime::now(),
            tag: self.writes,
        };
        self.objects.insert(key.to_string(), o);
    }
}

/// A member in memory. It implements only the calls on named objects (and an exclusive lock):
/// everything else is the trait's provided calls, so the contract suite run on it checks those.
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
        let s = self.state.lock();
        let mut out: Vec<Hash32> = s
            .objects
            .keys()
            .filter(|k| k.starts_with(layout::CHUNKS))
            .filter_map(|k| layout::chunk_name(k.rsplit('/').next()?))
            .collect();
        out.sort_by_key(|h| h.to_hex());
        out
    }

    /// The keys of the objects held, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.state.lock().objects.keys().cloned().collect()
    }

    /// Makes every chunk and set-aside file look `by` older (for minimum ages).
    pub fn age(&self, by: Duration) {
        let mut s = self.state.lock();
        for (key, o) in s.objects.iter_mut() {
            if key.starts_with(layout::CHUNKS) || key.starts_with(layout::DAMAGED) {
                o.modified -= by;
            }
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
    fn get(&self, key: &str, cap: u64) -> Result<Option<Stored>, MemberError> {
        self.state
            .lock()
            .objects
            .get(key)
            .map(|o| capped(o, cap))
            .transpose()
    }
    fn read_at(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, MemberError> {
        let s = self.state.lock();
        let o = s.objects.get(key).ok_or(MemberError::Missing)?;
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
    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, MemberError> {
        Ok(self.state.lock().objects.get(key).map(|o| ObjectInfo {
            size: o.bytes.len() as u64,
            modified: o.modified,
        }))
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
        s.insert(key, bytes);
        Ok(())
    }
    fn write(&self, key: &str, bytes: &[u8], present: IfPresent) -> Result<(), MemberError> {
        let mut s = self.state.lock();
        if present == IfPresent::Refuse && s.objects.contains_key(key) {
            return Err(MemberError::AlreadyExists);
        }
        s.insert(key, bytes);
        Ok(())
    }
    fn list(&self, dir: &str) -> Result<Vec<Listed>, MemberError> {
        let prefix = format!("{dir}/");
        Ok(self
            .state
            .lock()
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, o)| {
                let name = k.strip_prefix(&prefix).filter(|n| !n.contains('/'))?;
                Some(Listed {
                    name: name.to_string(),
                    stamp: o.tag.to_string(),
                    size: o.bytes.len() as u64,
                    modified: o.modified,
                })
            })
            .collect())
    }
    fn delete(&self, key: &str) -> Result<(), MemberError> {
        self.state.lock().objects.remove(key);
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
