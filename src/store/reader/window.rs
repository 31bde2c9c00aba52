//! Reading a window of a chunk too large to hold whole (a chunk larger than the whole cache):
//! one replica at a time, its stored payload is read by ranges and decoded in pieces
//! (`codec::stream`), every byte goes through the hasher and only the window's bytes are kept.
//! They are handed out only once the whole chunk has matched its hash, so memory stays bounded by
//! the window and the decoder's working memory whatever size a member's chunk claims.

use super::{ChunkUnreadable, ReplicaError, check_table, checked_header, recorded};
use crate::codec::{self, CodecError, HEADER_LEN, Hash32};
use crate::store::Store;
use crate::store::liveness::Record;
use crate::store::manifest::ChunkRef;
use crate::store::member::Member;
use std::ops::Range;

/// Decodes the replica of `chunk` on `m` in pieces and keeps bytes `window` of it in `out`.
/// Each ranged read counts in `record` (the member's requests and bytes fetched).
fn read_window(
    m: &Member,
    record: Option<&Record>,
    chunk: &ChunkRef,
    window: &Range<u64>,
    out: &mut [u8],
) -> Result<(), ReplicaError> {
    let read = |at: u64, len: usize| {
        recorded(record, Vec::len, || {
            m.io.read_chunk_at(chunk.object(), at, len)
        })
        .1
    };
    let header = checked_header(&read(0, HEADER_LEN)?, chunk)?;
    let fetch = |at: u64, len: usize| {
        read(HEADER_LEN as u64 + at, len).map_err(|e| std::io::Error::other(e.to_string()))
    };
    let mut hasher = blake3::Hasher::new();
    let mut pos = 0u64;
    let decoded = codec::stream::decode(header, &fetch, &mut |piece| {
        hasher.update(piece);
        let end = pos + piece.len() as u64;
        let (a, b) = (pos.max(window.start), end.min(window.end));
        if a < b {
            out[(a - window.start) as usize..(b - window.start) as usize]
                .copy_from_slice(&piece[(a - pos) as usize..(b - pos) as usize]);
        }
        pos = end;
        Ok(())
    });
    let table = decoded.map_err(|e| match e {
        CodecError::Read(why) => ReplicaError::Io(why),
        other => ReplicaError::Corrupt(other.to_string()),
    })?;
    if Hash32(*hasher.finalize().as_bytes()) != *chunk.object() {
        return Err(ReplicaError::HashMismatch);
    }
    table.map_or(Ok(()), |t| check_table(&t, chunk))
}

impl Store {
    /// Bytes `window` of `chunk` into `out` (of the window's length), from the first replica
    /// that decodes to the chunk's hash: the listed ones in liveness order, then every other
    /// member (a replica repair or a member change put elsewhere). `Ok` names the member that
    /// served it; `on_failure` hears of every replica that did not.
    pub fn load_window_into(
        &self,
        chunk: &ChunkRef,
        window: Range<u64>,
        out: &mut [u8],
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<String, ChunkUnreadable> {
        // A delta is decoded whole: its bytes mean nothing until its base's are applied. Inline
        // bytes are at hand.
        if chunk.delta.is_some() || chunk.inline.is_some() {
            let whole = self.load_chunk(chunk, on_failure)?;
            let (a, b) = (window.start as usize, window.end as usize);
            out.copy_from_slice(&whole[a..b]);
            return Ok(String::new());
        }
        self.each_replica(chunk, on_failure, |m| {
            let record = self.liveness.record(m.id()).map(|r| &**r);
            read_window(m, record, chunk, &window, out)
        })
        .map(|((), id)| id)
    }
}
