//! Reading a store back: one replica of a chunk (read here, checked in `check.rs`) and a chunk
//! with failover over its replicas (a delta with its base), and the log of members' failures
//! (one warning per episode, not per chunk). Which replica is asked, hedging and failover are
//! in `replicas.rs`; windows of chunks too large to hold in `window.rs`; the frames of a small
//! read in `frames.rs`; whole-file export in `export.rs`. Bytes that fail their hash are never
//! handed out.

use super::Store;
use super::liveness::{Outcome, Record};
use super::manifest::ChunkRef;
use super::member::Member;
use crate::codec::Hash32;
use crate::member::{Image, MemberError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

mod check;
mod export;
mod frames;
mod replicas;
mod window;

use check::{
    DeltaFault, check_delta, check_in_place, check_stored, check_table, checked_header,
    checked_image,
};
pub use check::{INLINE, check_image, inline_into, max_image_len, verified_image};
pub use frames::{Frames, Tables, readable_by_frames};

/// Why one replica of a chunk could not be used.
#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error("not among the members that opened")]
    MemberUnavailable(String),
    #[error("replica missing")]
    Missing,
    #[error("read error: {0}")]
    Io(String),
    #[error("no answer within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("corrupt replica: {0}")]
    Corrupt(String),
    #[error("corrupt replica: content hash mismatch")]
    HashMismatch,
}

impl ReplicaError {
    /// `missing` or `corrupt`, as reports name them.
    pub fn kind(&self) -> crate::store::verify::ProblemKind {
        use crate::store::verify::ProblemKind;
        match self {
            ReplicaError::MemberUnavailable(_) | ReplicaError::Missing => ProblemKind::Missing,
            ReplicaError::Io(_) | ReplicaError::TimedOut(_) => ProblemKind::Unreadable,
            ReplicaError::Corrupt(_) | ReplicaError::HashMismatch => ProblemKind::Corrupt,
        }
    }
}

impl From<MemberError> for ReplicaError {
    fn from(e: MemberError) -> ReplicaError {
        match e {
            MemberError::Missing => ReplicaError::Missing,
            MemberError::Corrupt(why) => ReplicaError::Corrupt(why),
            MemberError::TimedOut(d) => ReplicaError::TimedOut(d),
            other => ReplicaError::Io(other.to_string()),
        }
    }
}

/// Members in a failure episode, with the failed reads of each: a member's first failure is a
/// warning, the next ones are logged at debug level only, until the member serves a chunk again
/// (which ends the episode, with one line saying so). One missing disk thus logs one warning,
/// not one per chunk it held.
#[derive(Debug, Default)]
pub struct MemberTrouble(Mutex<HashMap<String, u64>>);

impl MemberTrouble {
    /// A read from `member` failed; the next replica is tried.
    pub fn failed(&self, member: &str, e: &ReplicaError) {
        let mut episodes = self.0.lock();
        let failures = episodes.entry(member.to_string()).or_insert(0);
        *failures += 1;
        if *failures == 1 {
            log::warn!(
                "member {member}: read failed ({e}); reading other replicas, and not logging this member's failures again until it serves a chunk"
            );
        } else {
            log::debug!("member {member}: {e}");
        }
    }

    /// `member` served a chunk: its failure episode, if any, is over.
    pub fn served(&self, member: &str) {
        let mut episodes = self.0.lock();
        if episodes.is_empty() {
            return;
        }
        if let Some(failures) = episodes.remove(member) {
            log::warn!("member {member} serves chunks again, after {failures} failed reads");
        }
    }
}

/// Every replica of a chunk failed.
#[derive(Debug, Error)]
#[error("chunk {hash} ({len} bytes): no good replica ({details})")]
pub struct ChunkUnreadable {
    pub hash: Hash32,
    pub len: u64,
    pub details: String,
}

/// What a member's buffer may hold beyond a raw chunk's bytes to be kept as the chunk's own:
/// its header and frame table, direct I/O's alignment.
const IN_PLACE_SLACK: usize = 64 << 10;

/// What an error of a delta chunk adds when its base was had but no replica of the delta made the
/// chunk with it.
const DELTA_NOTE: &str =
    " (a delta: with its base chunk, which checked out, no replica made the chunk's bytes)";

/// Gets the stored image of the chunk stored under `object` (of `len` bytes) from `member`,
/// and records how it went.
fn fetch(
    member: &Member,
    record: Option<&Record>,
    (object, len): (&Hash32, u64),
) -> (Duration, Result<Image, MemberError>) {
    recorded(
        record,
        |i: &Image| i.len(),
        || member.io.get_chunk(object, max_image_len(len)),
    )
}

/// A read of `chunk`'s stored image from a member, for `Store::read_replicas`.
fn image_read(chunk: &ChunkRef) -> replicas::ReplicaRead<Image> {
    let (object, len) = (*chunk.object(), chunk.len);
    std::sync::Arc::new(move |m, record| {
        fetch(m, record, (&object, len))
            .1
            .map_err(ReplicaError::from)
    })
}

/// Makes a request of a member and records in `record` how it went: how long it took, and
/// the bytes it gave (`bytes` of its answer).
fn recorded<T>(
    record: Option<&Record>,
    bytes: impl Fn(&T) -> usize,
    call: impl FnOnce() -> Result<T, MemberError>,
) -> (Duration, Result<T, MemberError>) {
    let started = Instant::now();
    let got = call();
    let took = started.elapsed();
    if let Some(r) = record {
        r.record(
            took,
            match &got {
                Ok(answer) => Outcome::Answered {
                    bytes: bytes(answer) as u64,
                },
                Err(MemberError::Missing | MemberError::Corrupt(_)) => Outcome::NotThere,
                Err(MemberError::TimedOut(_)) => Outcome::TimedOut,
                Err(_) => Outcome::Failed,
            },
        );
    }
    (took, got)
}

impl Store {
    /// The longest one replica of `chunk` may take to arrive: the member deadline plus its
    /// bytes at the slowest rate allowed.
    pub fn replica_deadline(&self, chunk: &ChunkRef) -> Duration {
        self.member_options().deadline(max_image_len(chunk.len))
    }

    /// The longest a whole load of `chunk` may take: every member asked in turn, at worst.
    pub fn load_deadline(&self, chunk: &ChunkRef) -> Duration {
        let members = self.members.len() + self.joined_members().count();
        self.replica_deadline(chunk) * (members as u32 + 1) + Duration::from_secs(2)
    }

    /// Reads one replica by member id and returns its verified bytes.
    pub fn read_replica_of(
        &self,
        member_id: &str,
        chunk: &ChunkRef,
    ) -> Result<Vec<u8>, ReplicaError> {
        let mut out = vec![0u8; chunk.len as usize];
        let member = self
            .member(member_id)
            .ok_or_else(|| ReplicaError::MemberUnavailable(member_id.to_string()))?;
        let record = self.liveness.record(member_id).map(|r| &**r);
        let (_, image) = fetch(member, record, (chunk.object(), chunk.len));
        check_image(&image?, chunk, &mut out)?;
        Ok(out)
    }

    /// Reads a chunk from the first replica that verifies; `on_failure` hears of every replica
    /// that did not.
    pub fn load_chunk(
        &self,
        chunk: &ChunkRef,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<Vec<u8>, ChunkUnreadable> {
        let mut out = vec![0u8; chunk.len as usize];
        self.load_chunk_into(chunk, &mut out, on_failure)?;
        Ok(out)
    }

    /// `load_chunk` into a buffer of the chunk's length; it holds the chunk only on `Ok`, which
    /// names the member that served it.
    ///
    /// Replicas are asked in the order `liveness` gives (members that are down last, and none
    /// while all are down). A
    /// replica that has not answered within its hedge delay is not waited for alone: the next
    /// one is asked too, and the first answer that verifies wins. Each request has the member
    /// deadline, and the whole read gives up after one deadline per replica, so a stalled
    /// member makes a read slower or EIO, never a hang.
    ///
    /// The replica list is a hint: when every listed replica fails, every other member that
    /// opened and is not down is asked for the chunk (by its hash) before the read fails, so a
    /// replica that repair or a member change put elsewhere is still found.
    ///
    /// A chunk stored as a delta is loaded with its base chunk (`load_delta`): the chunk the two
    /// make is checked against the chunk's hash before `out` is handed on, so a manifest that
    /// pairs a delta with the wrong base gives an error, not wrong bytes. A chunk whose bytes are
    /// in the manifest is checked against its hash alone.
    pub fn load_chunk_into(
        &self,
        chunk: &ChunkRef,
        out: &mut [u8],
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<String, ChunkUnreadable> {
        if let Some(inline) = &chunk.inline {
            return inline_into(chunk, &inline.0, out).map(|()| INLINE.to_string());
        }
        match &chunk.delta {
            None => self.load_stored_into(chunk, None, out, on_failure),
            Some(delta) => self.load_delta(chunk, &delta.base, out, on_failure),
        }
    }

    /// `load_chunk_into` of a delta: an image of its `base` chunk (from any replica whose header
    /// is the base's), then the delta's replicas, each decoded with that image in one pass and
    /// checked by the chunk's hash (`check_delta`); the base's bytes are not hashed on their
    /// own. Only when a replica and the image do not make the chunk is the image checked alone,
    /// to tell which is bad: if it is, the base is loaded again from its replicas (each checked
    /// alone, failures reported as for any chunk), and every delta replica is then judged with
    /// bytes of the base that checked out, so no replica is blamed for the other's fault.
    fn load_delta(
        &self,
        chunk: &ChunkRef,
        base: &ChunkRef,
        out: &mut [u8],
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<String, ChunkUnreadable> {
        let mut take_base = |image: Image| checked_image(image, base);
        let (base_image, base_from) =
            self.read_replicas(base, on_failure, image_read(base), &mut take_base)?;
        // Once the image has failed the check that tells: base bytes that checked out, or why
        // none could be had. While none can, the delta's replicas are not blamed.
        let mut known: Option<Result<Vec<u8>, ChunkUnreadable>> = None;
        let base_lost = AtomicBool::new(false);
        let delta_failed = |id: &str, e: &ReplicaError| {
            if !base_lost.load(Ordering::Relaxed) {
                on_failure(id, e);
            }
        };
        let mut accept = |image: Image| {
            if known.is_none() {
                match check_delta(&image, chunk, (&base_image, base), out) {
                    Ok(()) => return Ok(()),
                    Err(DeltaFault::Delta(e)) => return Err(e),
                    Err(DeltaFault::Unsure) => {
                        let mut bytes = vec![0u8; base.len as usize];
                        let got = match check_image(&base_image, base, &mut bytes) {
                            Ok(()) => Ok(()),
                            Err(e) => {
                                on_failure(&base_from, &e);
                                self.load_stored_into(base, None, &mut bytes, on_failure)
                                    .map(|_| ())
                            }
                        };
                        base_lost.store(got.is_err(), Ordering::Relaxed);
                        known = Some(got.map(|()| bytes));
                    }
                }
            }
            match &known {
                Some(Ok(bytes)) => check_stored(&image, chunk, Some(bytes), out),
                _ => Err(ReplicaError::Io("its base chunk is unreadable".into())),
            }
        };
        let read = self.read_replicas(chunk, &delta_failed, image_read(chunk), &mut accept);
        match (read, known) {
            (Ok(((), id)), _) => Ok(id),
            (Err(_), Some(Err(base_unreadable))) => Err(base_unreadable),
            (Err(mut e), Some(Ok(_))) => {
                e.details.push_str(DELTA_NOTE);
                Err(e)
            }
            (Err(mut e), None) => {
                e.details
                    .push_str(" (a delta: no replica of it could be read whole)");
                Err(e)
            }
        }
    }

    /// `load_chunk_into` of a buffer of the chunk's own. A replica stored raw that its member
    /// read into a buffer of its own (a directory member does) is checked there and that buffer
    /// replaces `out`: a chunk stored as it is costs no copy, only its hash. Not where the
    /// buffer's mapping is more than twice the chunk's: the spare pools hand out no larger
    /// mapping for a buffer of their own (`SparePool::take`), and the cache counts a chunk's
    /// length.
    pub fn load_chunk_buf(
        &self,
        chunk: &ChunkRef,
        out: &mut crate::buffer::ChunkBuf,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<String, ChunkUnreadable> {
        if chunk.inline.is_some() || chunk.delta.is_some() {
            return self.load_chunk_into(chunk, out, on_failure);
        }
        let room = 2 * (chunk.len as usize + IN_PLACE_SLACK);
        let mut accept = |image: Image| match image {
            Image::Buf { buf, at, len } if buf.mapped_len() <= room => {
                match check_in_place(&buf[at..at + len], chunk)? {
                    Some(span) => {
                        let view = buf.into_view(at + span.start..at + span.end);
                        *out = view
                            .ok_or_else(|| ReplicaError::Io("a view out of its buffer".into()))?;
                        Ok(())
                    }
                    None => check_stored(&buf[at..at + len], chunk, None, out),
                }
            }
            image => check_stored(&image, chunk, None, out),
        };
        self.read_replicas(chunk, on_failure, image_read(chunk), &mut accept)
            .map(|((), id)| id)
    }

    /// `load_chunk_into` of a delta chunk whose base chunk's bytes (checked) are at hand.
    pub fn load_delta_into(
        &self,
        chunk: &ChunkRef,
        base: &[u8],
        out: &mut [u8],
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<String, ChunkUnreadable> {
        self.load_stored_into(chunk, Some(base), out, on_failure)
            .map_err(|mut e| {
                e.details.push_str(DELTA_NOTE);
                e
            })
    }

    /// `load_chunk_into` of the chunk as it is stored, or, for a delta given its `base` bytes,
    /// of the chunk those make with it (see `check_stored`), over its replicas (`replicas.rs`).
    fn load_stored_into(
        &self,
        chunk: &ChunkRef,
        base: Option<&[u8]>,
        out: &mut [u8],
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<String, ChunkUnreadable> {
        let mut accept = |image: Image| check_stored(&image, chunk, base, out);
        self.read_replicas(chunk, on_failure, image_read(chunk), &mut accept)
            .map(|((), id)| id)
    }
}

#[cfg(test)]
mod tests;
