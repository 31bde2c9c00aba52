//! Reading a store back: one replica of a chunk (read, check header and length, decompress,
//! check BLAKE3), a chunk with failover over its replicas, and whole-file export. Bytes that fail
//! their hash are never handed out.

use super::manifest::{ChunkRef, FileEntry};
use super::member::Member;
use super::{Store, StoreError, io_err};
use crate::codec::{self, ChunkHeader, HEADER_LEN, Hash32};
use rayon::prelude::*;
use std::fs::File;
use std::io::{self, Read, Write};
use thiserror::Error;

/// Why one replica of a chunk could not be used.
#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error("member {0} is not available")]
    MemberUnavailable(String),
    #[error("replica missing")]
    Missing,
    #[error("read error: {0}")]
    Io(io::Error),
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
            ReplicaError::Io(_) => "unreadable",
            ReplicaError::Corrupt(_) | ReplicaError::HashMismatch => "corrupt",
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

/// Reads one replica file of `chunk` from `member` and returns its verified bytes.
pub fn read_replica(member: &Member, chunk: &ChunkRef) -> Result<Vec<u8>, ReplicaError> {
    let path = member.chunk_path(&chunk.hash);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReplicaError::Missing),
        Err(e) => return Err(ReplicaError::Io(e)),
    };
    let file_len = file.metadata().map_err(ReplicaError::Io)?.len();
    let mut head = [0u8; HEADER_LEN];
    if file_len < HEADER_LEN as u64 {
        return Err(ReplicaError::Corrupt(format!(
            "file is {file_len} bytes, shorter than a header"
        )));
    }
    file.read_exact(&mut head).map_err(ReplicaError::Io)?;
    let header = ChunkHeader::parse(&head).map_err(|e| ReplicaError::Corrupt(e.to_string()))?;
    if header.raw_len != chunk.len {
        return Err(ReplicaError::Corrupt(format!(
            "header says {} bytes, expected {}",
            header.raw_len, chunk.len
        )));
    }
    let payload_len = file_len - HEADER_LEN as u64;
    // A payload may not be larger than the worst case of its codec: bounds the allocation.
    let max_payload = zstd::zstd_safe::compress_bound(chunk.len as usize) as u64;
    if payload_len > max_payload || (header.codec == codec::Codec::None && payload_len != chunk.len)
    {
        return Err(ReplicaError::Corrupt(format!(
            "payload of {payload_len} bytes for a {}-byte chunk",
            chunk.len
        )));
    }
    let mut payload = Vec::with_capacity(payload_len as usize);
    file.take(payload_len)
        .read_to_end(&mut payload)
        .map_err(ReplicaError::Io)?;
    if payload.len() as u64 != payload_len {
        return Err(ReplicaError::Corrupt("file shrank while being read".into()));
    }
    let data = codec::decode(header, payload, chunk.len)
        .map_err(|e| ReplicaError::Corrupt(e.to_string()))?;
    if Hash32::of(&data) != chunk.hash {
        return Err(ReplicaError::HashMismatch);
    }
    Ok(data)
}

impl Store {
    /// Reads one replica by member id.
    pub fn read_replica_of(
        &self,
        member_id: &str,
        chunk: &ChunkRef,
    ) -> Result<Vec<u8>, ReplicaError> {
        match self.member(member_id) {
            Some(m) => read_replica(m, chunk),
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
        let mut details = Vec::new();
        for id in &chunk.members {
            match self.read_replica_of(id, chunk) {
                Ok(data) => return Ok(data),
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
