//! Reading a store back: one replica of a chunk (read, check header and length, decompress,
//! check BLAKE3), a chunk with failover over its replicas, whole-file export, and the log of
//! members' failures (one warning per episode, not per chunk). Bytes that fail their hash are
//! never handed out.

use super::manifest::{ChunkRef, FileEntry};
use super::member::Member;
use super::{Store, StoreError, io_err};
use crate::buffer::{ChunkBuf, SparePool};
use crate::codec::{self, ChunkHeader, HEADER_LEN, Hash32};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use thiserror::Error;

/// Why one replica of a chunk could not be used.
#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error("not among the members that opened")]
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

/// Chunk files are read into mappings of their own, kept here for the next reads (a few chunk
/// files' worth). From 2 MiB they sit in huge pages, so a chunk file's read reaches the device
/// as a few large requests rather than one per megabyte of scattered 4 KiB pages (measured on a
/// cold read of a 1 GiB file: requests of ~910 KiB instead of ~600 KiB, device latency
/// 0.8-0.9 ms instead of 2.4-3.4 ms, the read 0.49-0.54 s instead of 0.61-0.92 s).
static PAYLOADS: SparePool = SparePool::with_limit(16 << 20);

/// Direct I/O wants buffers, offsets and lengths aligned to the device's block size.
const DIRECT_ALIGN: usize = 4096;

/// Whether the page cache holds all `len` bytes of `file`, asked without reading anything
/// (`cachestat`, Linux 6.5; older kernels answer no).
fn in_page_cache(file: &File, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    /// The syscall's number, the same on every architecture.
    const SYS_CACHESTAT: libc::c_long = 451;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let range = Range { off: 0, len };
    let mut stat = Stat::default();
    // SAFETY: cachestat reads `range` and fills `stat`, both live for the call.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    r == 0 && stat.nr_cache >= len.div_ceil(page)
}

/// Opens a chunk file for direct I/O, or `None` where the filesystem does not allow it.
fn open_direct(path: &std::path::Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads all of `dst` from offset 0 of a file opened for direct I/O. `dst` is aligned and `room`
/// more bytes follow it, so every request covers whole blocks. `Ok(false)`: the file could not
/// be read this way (the filesystem refused, or a short read left an unaligned offset), read it
/// through the page cache instead.
fn read_direct(file: &File, dst: &mut [u8], room: usize) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = dst.len();
    let aligned = len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
    if aligned > len + room {
        return Ok(false);
    }
    // SAFETY: the caller guarantees `room` writable bytes after `dst` in the same buffer.
    let whole = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr(), aligned) };
    let mut done = 0;
    while done < len {
        match file.read_at(&mut whole[done..], done as u64) {
            Ok(n) if n > 0 && (n % DIRECT_ALIGN == 0 || done + n >= len) => done += n,
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads one replica file of `chunk` from `member` into `out` (exactly the chunk's length) and
/// verifies it; `out` holds the chunk's bytes only when this returns `Ok`.
pub fn read_replica_into(
    member: &Member,
    chunk: &ChunkRef,
    out: &mut [u8],
) -> Result<(), ReplicaError> {
    let path = member.chunk_path(&chunk.hash);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReplicaError::Missing),
        Err(e) => return Err(ReplicaError::Io(e)),
    };
    let file_len = file.metadata().map_err(ReplicaError::Io)?.len();
    if file_len < HEADER_LEN as u64 {
        return Err(ReplicaError::Corrupt(format!(
            "file is {file_len} bytes, shorter than a header"
        )));
    }
    // A payload may not be larger than the worst case of its codec: bounds the allocation.
    let max_payload = zstd::zstd_safe::compress_bound(chunk.len as usize) as u64;
    if file_len - HEADER_LEN as u64 > max_payload {
        return Err(ReplicaError::Corrupt(format!(
            "{file_len}-byte file for a {}-byte chunk",
            chunk.len
        )));
    }
    let file_len = file_len as usize;
    let mut buf = ChunkBuf::for_overwrite_in(&PAYLOADS, file_len + 2 * DIRECT_ALIGN)
        .map_err(ReplicaError::Io)?;
    let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
    let room = buf.len() - at - file_len;
    let image = &mut buf[at..at + file_len];
    let shrank = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReplicaError::Corrupt("file shrank while being read".into())
        } else {
            ReplicaError::Io(e)
        }
    };
    // From the page cache when it holds the file (just packed, or read by another tool);
    // otherwise with direct I/O: a chunk is read once and kept decompressed, so a copy in the
    // page cache would only cost a memory copy (measured at a sixth of the daemon's CPU time on a
    // cold read) and crowd out the decompressed bytes.
    let mut done = false;
    if !in_page_cache(&file, file_len as u64)
        && let Some(direct) = open_direct(&path).map_err(ReplicaError::Io)?
    {
        done = read_direct(&direct, image, room).map_err(ReplicaError::Io)?;
    }
    if !done {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(image, 0).map_err(shrank)?;
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
