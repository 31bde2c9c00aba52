//! Checking one replica of a chunk: its header against the manifest's record, its payload
//! decoded, and the bytes against the hash they are stored under (a delta's with its base's
//! applied, against the chunk's own); and a chunk's bytes kept in the manifest. Nothing that
//! fails here is handed out.

use super::{ChunkUnreadable, ReplicaError};
use crate::codec::frames::Table;
use crate::codec::{self, ChunkHeader, Codec, HEADER_LEN, Hash32};
use crate::member::Image;
use crate::store::manifest::ChunkRef;
use crate::store::member::Member;
use std::ops::Range;

/// Decodes a replica's stored image into `out` and checks it against the hash it is stored
/// under (a delta's bytes are checked as the delta they are; see `Store::load_chunk_into`).
pub fn check_image(image: &[u8], chunk: &ChunkRef, out: &mut [u8]) -> Result<(), ReplicaError> {
    check_stored(image, chunk, None, out)
}

/// `check_image`, or for a delta given its (checked) `base` bytes: decodes the delta, applies
/// the base and checks the result against the chunk's own hash, which it matches only when the
/// replica holds the delta's exact bytes and the manifest pairs it with this base.
pub(super) fn check_stored(
    image: &[u8],
    chunk: &ChunkRef,
    base: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), ReplicaError> {
    decode_image(image, chunk, out)?;
    let (got, expected) = match base {
        // The base applied and the hash a piece at a time, while the piece is in the cache.
        Some(base) => {
            let op = chunk.delta_op();
            let mut hasher = blake3::Hasher::new();
            for (o, b) in out.chunks_mut(DELTA_PIECE).zip(base.chunks(DELTA_PIECE)) {
                op.apply(o, b);
                hasher.update(o);
            }
            (Hash32(*hasher.finalize().as_bytes()), chunk.hash)
        }
        None => (Hash32::of(out), *chunk.object()),
    };
    if got != expected {
        return Err(ReplicaError::HashMismatch);
    }
    Ok(())
}

/// Why a delta replica and an image of its base did not make the chunk (`check_delta`).
pub(super) enum DeltaFault {
    /// The delta replica is not what it says: its header, its payload or its frame table.
    Delta(ReplicaError),
    /// The base's image is not what it says, or the two do not make the chunk's hash: either
    /// can be at fault.
    Unsure,
}

/// Decodes a delta replica's `image` with an image of its base chunk (`base_image` of `base`,
/// not checked yet) into `out` in one pass (`codec::delta`), and checks the result against the
/// chunk's own hash, which it matches only when both images hold their exact bytes and the
/// manifest pairs the delta with this base: the base's bytes need no hash of their own.
pub(super) fn check_delta(
    image: &[u8],
    chunk: &ChunkRef,
    (base_image, base): (&[u8], &ChunkRef),
    out: &mut [u8],
) -> Result<(), DeltaFault> {
    if out.len() as u64 != chunk.len {
        return Err(DeltaFault::Delta(wrong_buffer(out.len(), chunk.len)));
    }
    let delta = header_and_payload(image, chunk).map_err(DeltaFault::Delta)?;
    let base = header_and_payload(base_image, base).map_err(|_| DeltaFault::Unsure)?;
    let op = chunk.delta_op();
    let mut hasher = blake3::Hasher::new();
    let table = codec::delta::decode_with_base(op, base, delta, out, &mut |piece| {
        hasher.update(piece);
    })
    .map_err(|(side, e)| match side {
        codec::delta::Side::Delta => DeltaFault::Delta(ReplicaError::Corrupt(e.to_string())),
        codec::delta::Side::Base => DeltaFault::Unsure,
    })?;
    if let Some(table) = &table {
        check_table(table, chunk).map_err(DeltaFault::Delta)?;
    }
    if Hash32(*hasher.finalize().as_bytes()) != chunk.hash {
        return Err(DeltaFault::Unsure);
    }
    Ok(())
}

/// A replica's image split into its header, checked against the manifest's record of `chunk`,
/// and its payload.
fn header_and_payload<'i>(
    image: &'i [u8],
    chunk: &ChunkRef,
) -> Result<(ChunkHeader, &'i [u8]), ReplicaError> {
    if image.len() < HEADER_LEN {
        return Err(ReplicaError::Corrupt(format!(
            "file is {} bytes, shorter than a header",
            image.len()
        )));
    }
    let (head, payload) = image.split_at(HEADER_LEN);
    Ok((checked_header(head, chunk)?, payload))
}

/// A replica's `image` of `chunk`, kept once its header is the chunk's (its bytes are checked
/// later: a delta's base with the delta, `check_delta`).
pub(super) fn checked_image(image: Image, chunk: &ChunkRef) -> Result<Image, ReplicaError> {
    header_and_payload(&image, chunk)?;
    Ok(image)
}

/// A caller's buffer of `len` bytes for a chunk of `chunk_len`: the caller's error, not the
/// replica's.
fn wrong_buffer(len: usize, chunk_len: u64) -> ReplicaError {
    ReplicaError::Io(format!(
        "a buffer of {len} bytes for a chunk of {chunk_len}"
    ))
}

/// Where a replica's `image` holds `chunk`'s bytes as they are, checked against its hash: a
/// chunk stored raw (codec `none`, in one piece, or in frames after their table), which can
/// then be used in place, without a copy. `Ok(None)` for an image stored any other way (and
/// for one that is not what it says: `check_image` decodes it and says why).
pub(super) fn check_in_place(
    image: &[u8],
    chunk: &ChunkRef,
) -> Result<Option<Range<usize>>, ReplicaError> {
    // The manifest's codec says which replicas can be raw: a compressed chunk's header is not
    // read here and again by the decoder.
    if chunk.codec != Codec::None || chunk.delta.is_some() || image.len() < HEADER_LEN {
        return Ok(None);
    }
    let (head, payload) = image.split_at(HEADER_LEN);
    let header = checked_header(head, chunk)?;
    if header.codec != Codec::None || payload.len() as u64 != header.payload_len {
        return Ok(None);
    }
    let table = match header.frame_log {
        0 => None,
        _ => {
            let Ok(table) = Table::parse(&header, payload) else {
                return Ok(None);
            };
            // Raw frames lie end to end, each as long as its output.
            let raw = (0..table.len()).all(|i| {
                let (s, o) = (table.stored(&(i..i + 1)), table.output(i));
                s.end - s.start == o.end - o.start
            });
            if !raw {
                return Ok(None);
            }
            Some(table)
        }
    };
    let start = HEADER_LEN + table.as_ref().map_or(0, |t| t.table_len() as usize);
    if (image.len() - start.min(image.len())) as u64 != chunk.len {
        return Ok(None);
    }
    if Hash32::of(&image[start..]) != *chunk.object() {
        return Err(ReplicaError::HashMismatch);
    }
    if let Some(table) = &table {
        check_table(table, chunk)?;
    }
    Ok(Some(start..image.len()))
}

/// A replica's chunk file header (`head` starts with it), checked against the manifest's record
/// of `chunk`: its length, and a payload no larger than any image of the chunk can have.
pub(super) fn checked_header(head: &[u8], chunk: &ChunkRef) -> Result<ChunkHeader, ReplicaError> {
    let header = ChunkHeader::parse(head).map_err(|e| ReplicaError::Corrupt(e.to_string()))?;
    if header.raw_len != chunk.len {
        return Err(ReplicaError::Corrupt(format!(
            "header says {} bytes, expected {}",
            header.raw_len, chunk.len
        )));
    }
    if HEADER_LEN as u64 + header.payload_len > max_image_len(chunk.len) {
        return Err(ReplicaError::Corrupt(format!(
            "header says {} payload bytes, more than any image of its chunk",
            header.payload_len
        )));
    }
    Ok(header)
}

/// A frame table of a replica of `chunk` must match the hash it is stored under, or reads of
/// single frames from this replica would all fail (whole reads check the bytes themselves).
pub(super) fn check_table(table: &Table, chunk: &ChunkRef) -> Result<(), ReplicaError> {
    if !table.matches(chunk.object()) {
        return Err(ReplicaError::Corrupt(
            "its frame table does not match its hash".into(),
        ));
    }
    Ok(())
}

/// Checks a chunk file's header against the manifest's record and decodes its payload into
/// `out`.
fn decode_image(image: &[u8], chunk: &ChunkRef, out: &mut [u8]) -> Result<(), ReplicaError> {
    let (header, payload) = header_and_payload(image, chunk)?;
    if out.len() as u64 != chunk.len {
        return Err(wrong_buffer(out.len(), chunk.len));
    }
    if payload.len() as u64 != header.payload_len {
        return Err(ReplicaError::Corrupt(format!(
            "file holds {} payload bytes, its header says {}",
            payload.len(),
            header.payload_len
        )));
    }
    // The bytes are checked against the hash by the caller, the frame table here.
    let table = codec::decode_with_table(header, payload, out)
        .map_err(|e| ReplicaError::Corrupt(e.to_string()))?;
    table.map_or(Ok(()), |t| check_table(&t, chunk))
}

/// The largest stored image a chunk of `len` bytes can have (the worst case of its codec):
/// bounds what a read of a member may allocate.
pub fn max_image_len(len: u64) -> u64 {
    let whole = HEADER_LEN as u64 + zstd::zstd_safe::compress_bound(len as usize) as u64;
    // In frames: the table, and each frame at its own worst (its codec's header included).
    let frames = codec::frames::count(len, codec::frames::FRAME_LOG) as u64;
    let framed = codec::frames::head_len(len, codec::frames::FRAME_LOG) as u64
        + frames * codec::frames::max_frame_stored();
    whole.max(framed)
}

/// One replica's stored image from `member`, returned only when it decodes to the chunk's bytes
/// (then in `scratch`, of the chunk's length). For the sync commands, which copy images as
/// they are stored.
pub fn verified_image(
    member: &Member,
    chunk: &ChunkRef,
    scratch: &mut [u8],
) -> Result<Image, ReplicaError> {
    let image = member
        .io
        .get_chunk(chunk.object(), max_image_len(chunk.len))?;
    check_image(&image, chunk, scratch)?;
    Ok(image)
}

/// A delta is applied to its base and hashed in pieces of this many bytes (a multiple of every
/// op's element).
const DELTA_PIECE: usize = 64 << 10;

/// What `load_chunk_into` names as the source of a chunk whose bytes are in the manifest.
pub const INLINE: &str = "the manifest";

/// A chunk's inline bytes into `out`, once they match its length and hash.
pub fn inline_into(chunk: &ChunkRef, bytes: &[u8], out: &mut [u8]) -> Result<(), ChunkUnreadable> {
    if bytes.len() != out.len() || Hash32::of(bytes) != chunk.hash {
        return Err(ChunkUnreadable {
            hash: chunk.hash,
            len: chunk.len,
            details: "its bytes in the manifest do not match its hash".into(),
        });
    }
    out.copy_from_slice(bytes);
    Ok(())
}
