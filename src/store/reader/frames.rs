//! Reading only the frames of a chunk that hold a range (a small read of a chunk stored in
//! frames, `codec::frames`): a replica's header and frame table in one ranged read, the table
//! checked against the chunk's hash (the manifest's), then the stored bytes of the frames needed
//! in a second, each frame decoded and checked against its chaining value before any byte of it
//! is handed out. Checked tables are kept for a while (`Tables`, by member and chunk), so the
//! next small read of that replica takes one ranged read: half the round trips on an object
//! store.

use super::{ChunkUnreadable, ReplicaError, check_table, checked_header, recorded};
use crate::codec::frames::{self, FRAME_LOG, Table};
use crate::codec::{ChunkHeader, Codec, HEADER_LEN, Hash32};
use crate::store::Store;
use crate::store::liveness::Record;
use crate::store::manifest::ChunkRef;
use crate::store::member::Member;
use parking_lot::Mutex;
use std::ops::Range;
use std::sync::Arc;

/// What the kept tables may take, in bytes (a 4 MiB chunk's table is 1.3 KB).
const TABLES_BYTES: usize = 4 << 20;

/// A replica's checked header and frame table.
type Checked = Arc<(ChunkHeader, Table)>;

/// Checked frame tables of replicas read lately, by member id and chunk, the least recently
/// used going first past `TABLES_BYTES`. A table is kept only once it matched the chunk's hash;
/// a member that later serves frames the kept table does not match is reported as a bad
/// replica, the table forgotten, and the next read reads it again.
pub struct Tables(Mutex<Kept>);

struct Kept {
    lru: lru::LruCache<(String, Hash32), Checked>,
    bytes: usize,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.0.lock();
        write!(f, "Tables({} kept, {} bytes)", kept.lru.len(), kept.bytes)
    }
}

impl Default for Tables {
    fn default() -> Tables {
        Tables(Mutex::new(Kept {
            lru: lru::LruCache::unbounded(),
            bytes: 0,
        }))
    }
}

impl Tables {
    fn get(&self, member: &str, chunk: &Hash32) -> Option<Checked> {
        self.0
            .lock()
            .lru
            .get(&(member.to_string(), *chunk))
            .cloned()
    }

    fn keep(&self, member: &str, chunk: &Hash32, checked: Checked) {
        let mut kept = self.0.lock();
        kept.bytes += size(&checked);
        if let Some(old) = kept.lru.put((member.to_string(), *chunk), checked) {
            kept.bytes -= size(&old);
        }
        while kept.bytes > TABLES_BYTES {
            let Some((_, old)) = kept.lru.pop_lru() else {
                break;
            };
            kept.bytes -= size(&old);
        }
    }

    /// Forgets every kept table (tests that count a replica's reads from the first).
    #[cfg(test)]
    pub(super) fn clear(&self) {
        let mut kept = self.0.lock();
        kept.lru.clear();
        kept.bytes = 0;
    }

    fn forget(&self, member: &str, chunk: &Hash32) {
        let mut kept = self.0.lock();
        if let Some(old) = kept.lru.pop(&(member.to_string(), *chunk)) {
            kept.bytes -= size(&old);
        }
    }
}

/// The memory a kept table takes, about.
fn size(checked: &Checked) -> usize {
    128 + checked.1.frames() * 40
}

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
    (record, tables): (Option<&Record>, &Tables),
    chunk: &ChunkRef,
    range: &Range<u64>,
) -> Result<Option<Frames>, ReplicaError> {
    let read = |at: u64, len: usize| {
        recorded(record, Vec::len, || {
            m.io.read_chunk_at(chunk.object(), at, len)
        })
        .1
    };
    let checked = match tables.get(m.id(), chunk.object()) {
        Some(checked) => checked,
        None => {
            let head = read(0, frames::head_len(chunk.len, FRAME_LOG))?;
            let header = checked_header(&head, chunk)?;
            if header.frame_log == 0 {
                return Ok(None);
            }
            let table = Table::parse(&header, &head[HEADER_LEN..])
                .map_err(|e| ReplicaError::Corrupt(e.to_string()))?;
            check_table(&table, chunk)?;
            let checked = Arc::new((header, table));
            tables.keep(m.id(), chunk.object(), checked.clone());
            checked
        }
    };
    let got = frames_by_table(m, &read, &checked, range);
    if let Err(ReplicaError::Corrupt(_)) = &got {
        tables.forget(m.id(), chunk.object());
    }
    got.map(Some)
}

/// The frames that hold `range`, read with `read` from `m` and decoded by its `checked` table.
fn frames_by_table(
    m: &Member,
    read: &dyn Fn(u64, usize) -> Result<Vec<u8>, crate::member::MemberError>,
    checked: &Checked,
    range: &Range<u64>,
) -> Result<Frames, ReplicaError> {
    let corrupt = |why: String| ReplicaError::Corrupt(why);
    let (header, table) = (&checked.0, &checked.1);
    let want = table.covering(range);
    let stored = table.stored(&want);
    let from = table.output(want.start).start;
    let to = table.output(want.end - 1).end;
    let mut out = vec![0u8; (to - from) as usize];
    let len = (stored.end - stored.start) as usize;
    let bytes = read(HEADER_LEN as u64 + stored.start, len)?;
    if bytes.len() != len {
        return Err(corrupt(format!(
            "frames {want:?}: {} of {len} stored bytes",
            bytes.len()
        )));
    }
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
    Ok(Frames {
        at: from,
        bytes: out,
        member: m.id().to_string(),
    })
}

impl Store {
    /// The frame tables kept from small reads.
    #[cfg(test)]
    pub(super) fn frame_tables(&self) -> &Tables {
        &self.frame_tables
    }

    /// The frames of `chunk` that hold bytes `range` of it (see `readable_by_frames`), from the
    /// first replica whose table and frames match the chunk's hash, its replicas hedged as for a
    /// whole read (`replicas.rs`); `Ok(None)` when the chunk turns out to be stored in one piece
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
        let (asked, tables) = (chunk.clone(), self.frame_tables.clone());
        let read = Arc::new(move |m: &Member, record: Option<&Record>| {
            read_frames(m, (record, &tables), &asked, &range)
        });
        self.read_replicas(chunk, on_failure, read, &mut Ok)
            .map(|(frames, _)| frames)
    }
}
