//! Reading only the frames of a chunk that hold a range (a small read of a chunk stored in
//! frames, `codec::frames`): one replica at a time, its header and frame table in one ranged
//! read, the table checked against the chunk's hash (the manifest's), then the stored bytes of
//! the frames needed in a second, each frame decoded and checked against its chaining value
//! before any byte of it is handed out.

use super::{ChunkUnreadable, ReplicaError, check_table, checked_header, recorded};
use crate::codec::frames::{self, FRAME_LOG, Table};
use crate::codec::{Codec, HEADER_LEN};
use crate::store::Store;
use crate::store::liveness::Record;
use crate::store::manifest::ChunkRef;
use crate::store::member::Member;
use std::ops::Range;

/// Bytes of a chunk decoded from the frames that hold a range: `bytes` from `at` in the chunk,
/// served by member `member`.
#[derive(Debug)]
pub struct Frames {
    pub at: u64,
    pub bytes: Vec<u8>,
    pub member: String,
}

/// Whether parts of `chunk` may be read by frames: a chunk of more than one frame, of a codec
/// that is stored in frames, whose stored size has room for a frame table. (A replica stored in
/// one piece, as stores made before frames hold, is told by its header and read whole.)
pub fn readable_by_frames(chunk: &ChunkRef) -> bool {
    chunk.delta.is_none()
        && chunk.inline.is_none()
        && frames::wanted(chunk.len)
        && matches!(
            chunk.codec,
            Codec::None | Codec::Zstd | Codec::Float16 | Codec::Float32
        )
        && chunk.stored_len >= frames::head_len(chunk.len, FRAME_LOG) as u64
}

/// The frames of the replica of `chunk` on `m` that hold `range`, checked; `None` when the
/// replica is stored in one piece.
fn read_frames(
    m: &Member,
    record: Option<&Record>,
    chunk: &ChunkRef,
    range: &Range<u64>,
) -> Result<Option<Frames>, ReplicaError> {
    let corrupt = |why: String| ReplicaError::Corrupt(why);
    let read = |at: u64, len: usize| {
        recorded(record, Vec::len, || {
            m.io.read_chunk_at(chunk.object(), at, len)
        })
        .1
    };
    let head = read(0, frames::head_len(chunk.len, FRAME_LOG))?;
    let header = checked_header(&head, chunk)?;
    if header.frame_log == 0 {
        return Ok(None);
    }
    let table = Table::parse(&header, &head[HEADER_LEN..]).map_err(|e| corrupt(e.to_string()))?;
    check_table(&table, chunk)?;
    let want = table.covering(range);
    let stored = table.stored(&want);
    let from = table.output(want.start).start;
    let to = table.output(want.end - 1).end;
    let mut out = vec![0u8; (to - from) as usize];
    let bytes = read(
        HEADER_LEN as u64 + stored.start,
        (stored.end - stored.start) as usize,
    )?;
    for i in want {
        let s = table.stored(&(i..i + 1));
        let o = table.output(i);
        table
            .decode(
                header.codec,
                i,
                &bytes[(s.start - stored.start) as usize..(s.end - stored.start) as usize],
                &mut out[(o.start - from) as usize..(o.end - from) as usize],
            )
            .map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(Some(Frames {
        at: from,
        bytes: out,
        member: m.id().to_string(),
    }))
}

impl Store {
    /// The frames of `chunk` that hold bytes `range` of it (see `readable_by_frames`), from the
    /// first replica whose table and frames match the chunk's hash, its replicas hedged as for a
    /// whole read (`hedge.rs`); `Ok(None)` when the chunk turns out to be stored in one piece
    /// (then it is read whole).
    pub fn load_frames(
        &self,
        chunk: &ChunkRef,
        range: Range<u64>,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<Option<Frames>, ChunkUnreadable> {
        if range.start >= range.end || range.end > chunk.len || !readable_by_frames(chunk) {
            return Ok(None);
        }
        let asked = chunk.clone();
        let read = std::sync::Arc::new(move |m: &Member, record: Option<&Record>| {
            read_frames(m, record, &asked, &range)
        });
        self.read_replicas(chunk, on_failure, read)
            .map(|(frames, _)| frames)
    }
}
