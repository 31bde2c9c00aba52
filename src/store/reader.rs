//! Reading a store back: one replica of a chunk (read, check header and length, decompress,
//! check BLAKE3), a chunk with failover over its replicas, whole-file export, and the log of
//! members' failures (one warning per episode, not per chunk). Bytes that fail their hash are
//! never handed out.

use super::manifest::{ChunkRef, FileEntry};
use super::member::Member;
use super::{Store, StoreError, io_err};
use crate::codec::{self, ChunkHeader, HEADER_LEN, Hash32};
use crate::member::MemberError;
use parking_lot::Mutex;
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Write;
use thiserror::Error;

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
    pub fn kind(&self) -> &'static str {
        match self {
            ReplicaError::MemberUnavailable(_) | ReplicaError::Missing => "missing",
            ReplicaError::Io(_) | ReplicaError::TimedOut(_) => "unreadable",
            ReplicaError::Corrupt(_) | ReplicaError::HashMismatch => "corrupt",
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

/// Reads one replica of `chunk` from `member` into `out` (exactly the chunk's length) and
/// verifies it; `out` holds the chunk's bytes only when this returns `Ok`.
pub fn read_replica_into(
    member: &Member,
    chunk: &ChunkRef,
    out: &mut [u8],
) -> Result<(), ReplicaError> {
    // A stored image may not be larger than the worst case of its codec: bounds the allocation.
    let max_len = HEADER_LEN as u64 + zstd::zstd_safe::compress_bound(chunk.len as usize) as u64;
    let image = member
        .io
        .get_chunk(&chunk.hash, max_len)
        .map_err(ReplicaError::from)?;
    check_image(&image, chunk, out)
}

/// Decodes a replica's stored image into `out` and checks it against the chunk's hash.
pub fn check_image(image: &[u8], chunk: &ChunkRef, out: &mut [u8]) -> Result<(), ReplicaError> {
    if image.len() < HEADER_LEN {
        return Err(ReplicaError::Corrupt(format!(
            "file is {} bytes, shorter than a header",
            image.len()
        )));
    }
    decode_image(image, chunk, out)?;
    if Hash32::of(out) != chunk.hash {
        return Err(ReplicaError::HashMismatch);
    }
    Ok(())
}

/// Checks a chunk file's header against the manifest's record and decodes its payload into
/// `out`.
fn decode_image(image: &[u8], chunk: &ChunkRef, out: &mut [u8]) -> Result<(), ReplicaError> {
    let (head, payload) = image.split_at(HEADER_LEN);
    let header = ChunkHeader::parse(head).map_err(|e| ReplicaError::Corrupt(e.to_string()))?;
    if header.raw_len != chunk.len || out.len() as u64 != chunk.len {
        return Err(ReplicaError::Corrupt(format!(
            "header says {} bytes, expected {}",
            header.raw_len, chunk.len
        )));
    }
    if payload.len() as u64 != header.payload_len {
        return Err(ReplicaError::Corrupt(format!(
            "file holds {} payload bytes, its header says {}",
            payload.len(),
            header.payload_len
        )));
    }
    codec::decode_into(header, payload, out).map_err(|e| ReplicaError::Corrupt(e.to_string()))
}

impl Store {
    /// Reads one replica by member id and returns its verified bytes.
    pub fn read_replica_of(
        &self,
        member_id: &str,
        chunk: &ChunkRef,
    ) -> Result<Vec<u8>, ReplicaError> {
        let mut out = vec![0u8; chunk.len as usize];
        self.read_replica_into_of(member_id, chunk, &mut out)?;
        Ok(out)
    }

    /// Reads one replica by member id into `out`; it holds the chunk only on `Ok`.
    fn read_replica_into_of(
        &self,
        member_id: &str,
        chunk: &ChunkRef,
        out: &mut [u8],
    ) -> Result<(), ReplicaError> {
        match self.member(member_id) {
            Some(m) => read_replica_into(m, chunk, out),
            None => Err(ReplicaError::MemberUnavailable(member_id.to_string())),
        }
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
    pub fn load_chunk_into<'c>(
        &self,
        chunk: &'c ChunkRef,
        out: &mut [u8],
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<&'c str, ChunkUnreadable> {
        let mut details = Vec::new();
        for id in &chunk.members {
            match self.read_replica_into_of(id, chunk, out) {
                Ok(()) => return Ok(id),
                Err(e) => {
                    on_failure(id, &e);
                    details.push(format!("member {id}: {e}"));
                }
            }
        }
        Err(ChunkUnreadable {
            hash: chunk.hash,
            len: chunk.len,
            details: details.join("; "),
        })
    }

    /// Streams one file's exact bytes to `out`, reading chunks a window at a time in parallel.
    /// Stops at the first chunk with no good replica; checks the whole-file hash at the end.
    pub fn export_file(
        &self,
        file: &FileEntry,
        out: &mut dyn Write,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<(), StoreError> {
        let window = rayon::current_num_threads().max(1) * 2;
        let mut hasher = blake3::Hasher::new();
        for batch in file.chunks.chunks(window) {
            let loaded: Vec<Result<Vec<u8>, ChunkUnreadable>> = batch
                .par_iter()
                .map(|c| self.load_chunk(c, on_failure))
                .collect();
            for (chunk, data) in batch.iter().zip(loaded) {
                let data = data.map_err(|e| {
                    StoreError::Source(format!(
                        "file '{}' bytes {}..{}: {e}",
                        file.path,
                        chunk.offset,
                        chunk.offset + chunk.len
                    ))
                })?;
                hasher.update(&data);
                out.write_all(&data)
                    .map_err(io_err(std::path::Path::new("output")))?;
            }
        }
        if Hash32(*hasher.finalize().as_bytes()) != file.blake3 {
            return Err(StoreError::Source(format!(
                "file '{}': whole-file hash does not match the manifest",
                file.path
            )));
        }
        Ok(())
    }
}
