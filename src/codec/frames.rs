//! Frames: a chunk of more than one frame (`FRAME` bytes of output) is stored as independently
//! decodable frames, so that a small read decodes, and on an object store fetches, only the
//! frames it covers; a whole-chunk read still fetches the chunk in one request.
//!
//! A framed chunk file has `frame_log` in its header and, at the start of its payload, a table of
//! one entry per frame: the frame's stored length (u32 LE) and its BLAKE3 chaining value (32
//! bytes); the frames' payloads follow in order, each an ordinary payload of the chunk's codec
//! for that frame's bytes. Frames are aligned powers of two of BLAKE3's 1 KiB chunks, so each is
//! a whole subtree of the BLAKE3 tree of the chunk: the table's chaining values merge into the
//! chunk's own hash (the one the trusted manifest names it by). A reader checks the table against
//! that hash before using it, and every frame it decodes against its entry: no byte of a frame is
//! handed out before it has matched, and the chunk's hash stays the BLAKE3 of its bytes.

use super::{ChunkHeader, Codec, CodecError, HEADER_LEN, Hash32};
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use std::ops::Range;

/// log2 of the bytes of output per frame (128 KiB).
pub const FRAME_LOG: u8 = 17;
/// Bytes of output per frame; the last frame of a chunk may be shorter.
pub const FRAME: u64 = 1 << FRAME_LOG;
/// Bytes per table entry: stored length and chaining value.
pub const ENTRY_LEN: usize = 4 + 32;

/// Frames in a chunk of `raw_len` bytes with frames of `2^log`.
pub fn count(raw_len: u64, log: u8) -> usize {
    raw_len.div_ceil(1 << log) as usize
}

/// Whether a chunk of `raw_len` bytes is stored in frames when its codec allows.
pub fn wanted(raw_len: u64) -> bool {
    raw_len > FRAME
}

/// Bytes from the start of a framed chunk file to the end of its table.
pub fn head_len(raw_len: u64, log: u8) -> usize {
    HEADER_LEN + count(raw_len, log) * ENTRY_LEN
}

/// The most one frame's payload can take: its codec's worst case and its own header.
pub fn max_frame_stored() -> u64 {
    zstd::zstd_safe::compress_bound(FRAME as usize) as u64 + 64
}

/// Whether a header's frame size is one a chunk can have: the one frame size this version
/// writes (a member cannot make a reader take a table of one entry per 4 KiB), and two frames or
/// more.
pub(super) fn valid_log(log: u8, raw_len: u64) -> bool {
    log == FRAME_LOG && raw_len > FRAME
}

/// The chaining value of frame `index` (of frames of `2^log`), its bytes `frame`.
pub fn chaining_value(frame: &[u8], index: usize, log: u8) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.set_input_offset((index as u64) << log);
    h.update(frame);
    h.finalize_non_root()
}

/// The chaining values of the frames of `raw` (more than one frame).
pub fn chaining_values(raw: &[u8]) -> Vec<[u8; 32]> {
    raw.chunks(FRAME as usize)
        .enumerate()
        .map(|(i, f)| chaining_value(f, i, FRAME_LOG))
        .collect()
}

/// The BLAKE3 hash of a chunk, with the chaining values of its frames where it has more than
/// one: one pass over the bytes names the chunk and makes its frame table (`encode_hashed`).
pub fn hash_chunk(raw: &[u8]) -> (Hash32, Option<Vec<[u8; 32]>>) {
    if !wanted(raw.len() as u64) {
        return (Hash32::of(raw), None);
    }
    let cvs = chaining_values(raw);
    (root(&cvs), Some(cvs))
}

/// The root hash of frames with these chaining values (two or more), merged the way BLAKE3's
/// tree is built: the left subtree the largest power of two of frames short of the whole.
fn root(cvs: &[[u8; 32]]) -> Hash32 {
    fn subtree(cvs: &[ChainingValue]) -> ChainingValue {
        match cvs.len() {
            1 => cvs[0],
            n => {
                let left = left_len(n);
                merge_subtrees_non_root(&subtree(&cvs[..left]), &subtree(&cvs[left..]), Mode::Hash)
            }
        }
    }
    let left = left_len(cvs.len());
    let hash = merge_subtrees_root(&subtree(&cvs[..left]), &subtree(&cvs[left..]), Mode::Hash);
    Hash32(*hash.as_bytes())
}

/// The largest power of two below `n` (n >= 2).
fn left_len(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// A framed chunk's table, parsed and consistent with its header.
#[derive(Debug, Clone)]
pub struct Table {
    log: u8,
    raw_len: u64,
    cvs: Vec<[u8; 32]>,
    /// Where each frame's payload starts, from the end of the table; one more for the end.
    starts: Vec<u64>,
}

impl Table {
    /// Parses the table at the start of a framed chunk's payload (`bytes` holds at least the
    /// table). Checks its lengths against the header and each frame's against the most a frame
    /// can take; not yet its chaining values (`matches`).
    pub fn parse(header: &ChunkHeader, bytes: &[u8]) -> Result<Table, CodecError> {
        let log = header.frame_log;
        if !valid_log(log, header.raw_len) {
            return Err(CodecError::BadHeader);
        }
        let n = count(header.raw_len, log);
        let table_len = n * ENTRY_LEN;
        if bytes.len() < table_len || (header.payload_len as usize) < table_len {
            return Err(CodecError::Short);
        }
        let mut cvs = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(n + 1);
        let mut at = 0u64;
        for (i, e) in bytes[..table_len].chunks_exact(ENTRY_LEN).enumerate() {
            starts.push(at);
            let mut len = [0u8; 4];
            len.copy_from_slice(&e[..4]);
            let len = u64::from(u32::from_le_bytes(len));
            if len > max_frame_stored() {
                return Err(CodecError::Decompress(format!(
                    "frame {i} is larger than any frame can be"
                )));
            }
            at += len;
            let mut cv = [0u8; 32];
            cv.copy_from_slice(&e[4..]);
            cvs.push(cv);
        }
        starts.push(at);
        if table_len as u64 + at != header.payload_len {
            return Err(CodecError::Decompress(format!(
                "frame table covers {} payload bytes, the header says {}",
                table_len as u64 + at,
                header.payload_len
            )));
        }
        Ok(Table {
            log,
            raw_len: header.raw_len,
            cvs,
            starts,
        })
    }

    /// Whether the table's chaining values make up the chunk of hash `hash`: then each frame can
    /// be checked on its own.
    pub fn matches(&self, hash: &Hash32) -> bool {
        root(&self.cvs) == *hash
    }

    /// Frames in the chunk (two or more).
    pub fn len(&self) -> usize {
        self.cvs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cvs.is_empty()
    }

    /// Bytes of the table itself.
    pub fn table_len(&self) -> u64 {
        (self.cvs.len() * ENTRY_LEN) as u64
    }

    /// How many frames the chunk has.
    pub fn frames(&self) -> usize {
        self.cvs.len()
    }

    /// Where frame `i`'s bytes lie in the chunk.
    pub fn output(&self, i: usize) -> Range<u64> {
        let start = (i as u64) << self.log;
        start..(start + (1 << self.log)).min(self.raw_len)
    }

    /// Where frames `frames` are stored, from the start of the payload.
    pub fn stored(&self, frames: &Range<usize>) -> Range<u64> {
        let t = self.table_len();
        t + self.starts[frames.start]..t + self.starts[frames.end]
    }

    /// The frames that hold bytes `range` of the chunk.
    pub fn covering(&self, range: &Range<u64>) -> Range<usize> {
        let first = (range.start >> self.log) as usize;
        let end = (range.end.div_ceil(1 << self.log) as usize).min(self.len());
        first.min(end)..end
    }

    /// The frames a whole chunk is decoded by, in order: two whole frames at a time (a grouping
    /// codec's entropy-coded groups of both decode together, `decode_two_frames`), the last
    /// alone if odd or short.
    pub fn steps(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let pairs = (self.raw_len >> self.log) as usize / 2;
        let singles = 2 * pairs..self.len();
        (0..pairs)
            .map(|p| 2 * p..2 * p + 2)
            .chain(singles.map(|i| i..i + 1))
    }

    /// Where frames `frames` lie in the chunk.
    pub fn outputs(&self, frames: &Range<usize>) -> Range<u64> {
        self.output(frames.start).start..self.output(frames.end - 1).end
    }

    /// Decodes `step` (one of `steps`) of the framed `payload` into `out` (its bytes),
    /// unchecked: for a whole chunk, whose bytes are checked against its hash together.
    pub fn decode_step(
        &self,
        codec: Codec,
        step: &Range<usize>,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(), CodecError> {
        let stored = |i: usize| {
            let at = self.stored(&(i..i + 1));
            &payload[at.start as usize..at.end as usize]
        };
        let at = self.outputs(step);
        if out.len() as u64 != at.end - at.start {
            return Err(CodecError::WrongLength {
                expected: at.end - at.start,
                found: out.len() as u64,
            });
        }
        if step.len() == 2 {
            let (a, b) = out.split_at_mut(1 << self.log);
            let (i, j) = (step.start, step.start + 1);
            if let Some(done) = super::decode_two_frames(codec, (stored(i), a), (stored(j), b)) {
                return done;
            }
        }
        for i in step.clone() {
            let frame = self.output(i);
            let (from, to) = (frame.start - at.start, frame.end - at.start);
            self.decode_frame(codec, i, stored(i), &mut out[from as usize..to as usize])?;
        }
        Ok(())
    }

    /// Decodes frame `i` from its stored bytes into `out` (the frame's length), unchecked: for
    /// a whole chunk, whose bytes are checked against its hash together.
    pub fn decode_frame(
        &self,
        codec: Codec,
        i: usize,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<(), CodecError> {
        let at = self.output(i);
        if out.len() as u64 != at.end - at.start {
            return Err(CodecError::WrongLength {
                expected: at.end - at.start,
                found: out.len() as u64,
            });
        }
        let header = ChunkHeader {
            codec,
            raw_len: out.len() as u64,
            payload_len: stored.len() as u64,
            frame_log: 0,
        };
        super::decode_into(header, stored, out)
    }

    /// Decodes frame `i` from its stored bytes into `out` (the frame's length) and checks it
    /// against its chaining value.
    pub fn decode(
        &self,
        codec: Codec,
        i: usize,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<(), CodecError> {
        self.decode_frame(codec, i, stored, out)?;
        if chaining_value(out, i, self.log) != self.cvs[i] {
            return Err(CodecError::Decompress(format!(
                "frame {i} does not match its chaining value"
            )));
        }
        Ok(())
    }
}

/// Decodes a whole framed payload into `out`, a step of frames at a time (`Table::steps`). The
/// bytes are checked against the chunk's hash by the caller as any chunk's are; `Table::matches`
/// checks the table.
pub(super) fn decode_whole(
    header: ChunkHeader,
    payload: &[u8],
    out: &mut [u8],
) -> Result<Table, CodecError> {
    let table = Table::parse(&header, payload)?;
    for step in table.steps() {
        let at = table.outputs(&step);
        let out = &mut out[at.start as usize..at.end as usize];
        table.decode_step(header.codec, &step, payload, out)?;
    }
    Ok(table)
}

/// Appends the payload of one frame to the buffer; the codec it took.
pub(super) type EncodeFrame<'a> = dyn FnMut(&[u8], &mut Vec<u8>) -> Result<Codec, CodecError> + 'a;

/// Encodes `raw` (more than one frame) in frames into `out` (which holds the header's room),
/// each frame through `encode_frame` (appending its payload, returning its codec: the same for
/// every frame); the codec used. The table goes in front of the frames.
pub(super) fn encode(
    raw: &[u8],
    cvs: &[[u8; 32]],
    out: &mut Vec<u8>,
    encode_frame: &mut EncodeFrame<'_>,
) -> Result<Codec, CodecError> {
    let n = count(raw.len() as u64, FRAME_LOG);
    if cvs.len() != n {
        return Err(CodecError::Compress(
            "chaining values of other frames".into(),
        ));
    }
    let table_at = out.len();
    out.resize(table_at + n * ENTRY_LEN, 0);
    let mut codec = None;
    for (i, frame) in raw.chunks(FRAME as usize).enumerate() {
        let start = out.len();
        let c = encode_frame(frame, out)?;
        if codec.is_some_and(|was| was != c) {
            return Err(CodecError::Compress(
                "frames of one chunk took different codecs".into(),
            ));
        }
        codec = Some(c);
        let len = u32::try_from(out.len() - start)
            .map_err(|_| CodecError::Compress("a frame larger than 4 GiB".into()))?;
        let e = &mut out[table_at + i * ENTRY_LEN..table_at + (i + 1) * ENTRY_LEN];
        e[..4].copy_from_slice(&len.to_le_bytes());
        e[4..].copy_from_slice(&cvs[i]);
    }
    codec.ok_or_else(|| CodecError::Compress("no frames".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_chaining_values_merge_into_the_chunks_blake3() {
        let data: Vec<u8> = (0..(40u64 << 17) + 777)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for frames in [2u64, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 40] {
            for tail in [0u64, 1, 1023, 1024, 1025, FRAME - 1] {
                let len = ((frames - 1) << FRAME_LOG) + if tail == 0 { FRAME } else { tail };
                let bytes = &data[..len as usize];
                let (hash, cvs) = hash_chunk(bytes);
                assert_eq!(hash, Hash32::of(bytes), "{frames} frames, tail {tail}");
                assert_eq!(cvs.map(|c| c.len()), Some(frames as usize));
            }
        }
    }

    /// bf16-like values: small exponents, random mantissas.
    fn weights(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (0x3c00 | (x & 0x03ff) as u16 | ((x >> 20) as u16 & 0x8000)).to_le_bytes();
            out.extend_from_slice(&v);
        }
        out.truncate(len);
        out
    }

    #[test]
    fn chunks_of_more_than_one_frame_are_stored_in_frames_and_read_back_exactly() {
        use crate::codec::{CodecChoice, Content, decode_into, encode};
        let data = weights(3 * FRAME as usize + 100);
        let hash = Hash32::of(&data);
        for (choice, content) in [
            (CodecChoice::Auto, Content::Floats(2)),
            (CodecChoice::Auto, Content::Floats(4)),
            (CodecChoice::Auto, Content::Bytes),
            (CodecChoice::Zstd, Content::Floats(2)),
            (CodecChoice::None, Content::Bytes),
        ] {
            let (codec, image) = encode(&data, choice, 3, content).unwrap();
            let header = ChunkHeader::parse(&image).unwrap();
            assert_eq!(header.frame_log, FRAME_LOG, "{choice:?} {content:?}");
            let payload = &image[HEADER_LEN..];
            let mut whole = vec![0u8; data.len()];
            decode_into(header, payload, &mut whole).unwrap();
            assert!(whole == data, "{choice:?} {content:?}");
            // One frame alone, as a small read takes it.
            let table = Table::parse(&header, payload).unwrap();
            assert!(table.matches(&hash));
            assert_eq!(table.len(), 4);
            let s = table.stored(&(3..4));
            let mut last = vec![0u8; 100];
            table
                .decode(
                    codec,
                    3,
                    &payload[s.start as usize..s.end as usize],
                    &mut last,
                )
                .unwrap();
            assert!(last[..] == data[3 * FRAME as usize..]);
        }
        // A chunk of one frame, and quantization blocks, are stored in one piece.
        for (len, content) in [
            (FRAME as usize, Content::Floats(2)),
            (3 << 17, Content::Blocks(34)),
        ] {
            let (_, image) = encode(&data[..len], CodecChoice::Auto, 3, content).unwrap();
            assert_eq!(ChunkHeader::parse(&image).unwrap().frame_log, 0);
        }
    }

    #[test]
    fn a_table_is_checked_against_the_header_and_the_hash() {
        let raw: Vec<u8> = (0..(3 * FRAME + 5)).map(|i| (i % 7) as u8).collect();
        let mut out = vec![0u8; HEADER_LEN];
        let codec = encode(&raw, &chaining_values(&raw), &mut out, &mut |f, out| {
            out.extend_from_slice(f);
            Ok(Codec::None)
        })
        .unwrap();
        let header = ChunkHeader {
            codec,
            raw_len: raw.len() as u64,
            payload_len: (out.len() - HEADER_LEN) as u64,
            frame_log: FRAME_LOG,
        };
        let payload = &out[HEADER_LEN..];
        let table = Table::parse(&header, payload).unwrap();
        assert!(table.matches(&Hash32::of(&raw)));
        assert!(!table.matches(&Hash32::of(b"another chunk")));
        assert_eq!(table.covering(&(FRAME - 1..FRAME + 1)), 0..2);
        assert_eq!(table.covering(&(3 * FRAME..3 * FRAME + 5)), 3..4);
        // A frame that does not match its entry is refused.
        let s = table.stored(&(1..2));
        let mut frame = payload[s.start as usize..s.end as usize].to_vec();
        let mut got = vec![0u8; FRAME as usize];
        table.decode(codec, 1, &frame, &mut got).unwrap();
        assert!(got[..] == raw[FRAME as usize..2 * FRAME as usize]);
        frame[9] ^= 1;
        assert!(table.decode(codec, 1, &frame, &mut got).is_err());
        // A table whose lengths do not add up to the payload is refused.
        let short = ChunkHeader {
            payload_len: header.payload_len - 1,
            ..header
        };
        assert!(Table::parse(&short, payload).is_err());
        let one_frame = ChunkHeader {
            raw_len: FRAME,
            ..header
        };
        assert!(Table::parse(&one_frame, payload).is_err());
    }
}
