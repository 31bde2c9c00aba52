//! Chunk encoding: choosing a codec for a chunk and encoding and decoding it, and the small
//! header that makes every chunk file self-describing. The codecs' own files: byte grouping
//! (`group`) and its groups of nearly all zeros (`sparse`), fp8 (`fp8`), frames (`frames`), a
//! delta decoded with its base (`delta`), decoding in pieces (`stream`), the zstd contexts
//! (`zstd_ctx`); the BLAKE3 hash that names chunks is `hash`.
//!
//! A chunk file is `HEADER_LEN` bytes of header followed by the payload:
//! `b"SHC1"`, codec id (u8), frame size log2 (u8, 0 for a chunk stored in one piece), two zero
//! bytes, uncompressed length (u64 little-endian), payload length (u64 little-endian). The
//! payload length lets a torn or truncated file be told from a whole one without decompressing
//! it. A chunk of more than one frame is stored in frames (`frames`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

mod ans;
pub mod delta;
pub mod fp8;
pub mod frames;
pub mod group;
mod hash;
mod sparse;
pub mod stream;
mod varint;
mod zstd_ctx;

pub use hash::Hash32;
#[cfg(test)]
use zstd_ctx::group_zstd;
use zstd_ctx::{Tuning, zstd_compress, zstd_decompress};

pub const HEADER_LEN: usize = 24;
const MAGIC: &[u8; 4] = b"SHC1";

/// `auto` keeps a compressed chunk only when it saves at least this fraction of the bytes.
const AUTO_MIN_SAVING: f64 = 0.02;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("chunk file is shorter than its header")]
    Short,
    #[error("chunk file has a bad header")]
    BadHeader,
    #[error("unknown codec id {0}")]
    UnknownCodec(u8),
    #[error("chunk holds {found} bytes, expected {expected}")]
    WrongLength { expected: u64, found: u64 },
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("compression failed: {0}")]
    Compress(String),
    /// The stored bytes could not be read (a chunk decoded in pieces reads as it goes).
    #[error("reading the stored chunk: {0}")]
    Read(String),
}

/// How a stored chunk is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Codec {
    None,
    Zstd,
    /// Byte-grouped 2-byte floats (bf16, fp16), see `group`.
    Float16,
    /// Byte-grouped 4-byte floats (fp32), see `group`.
    Float32,
    /// Byte-grouped quantization blocks (GGUF Q8_0, Q4_K, ...), see `group`.
    Blocks,
    /// Floats that are FP8 values times a block scale (`pack --lossy fp8`), see `fp8`.
    Fp8,
}

impl Codec {
    fn id(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd => 1,
            Codec::Float16 => 2,
            Codec::Float32 => 3,
            Codec::Blocks => 4,
            Codec::Fp8 => 5,
        }
    }

    fn from_id(id: u8) -> Result<Codec, CodecError> {
        match id {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Zstd),
            2 => Ok(Codec::Float16),
            3 => Ok(Codec::Float32),
            4 => Ok(Codec::Blocks),
            5 => Ok(Codec::Fp8),
            other => Err(CodecError::UnknownCodec(other)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Zstd => "zstd",
            Codec::Float16 => "float16",
            Codec::Float32 => "float32",
            Codec::Blocks => "blocks",
            Codec::Fp8 => "fp8",
        }
    }
}

/// What `pack --codec` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecChoice {
    /// zstd when it saves at least 2%, raw otherwise.
    Auto,
    Zstd,
    None,
}

/// The parsed header of a chunk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub codec: Codec,
    pub raw_len: u64,
    pub payload_len: u64,
    /// log2 of the frame size of a chunk stored in frames (`frames`); 0 for one piece.
    pub frame_log: u8,
}

impl ChunkHeader {
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(MAGIC);
        h[4] = self.codec.id();
        h[5] = self.frame_log;
        h[8..16].copy_from_slice(&self.raw_len.to_le_bytes());
        h[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        h
    }

    pub fn parse(bytes: &[u8]) -> Result<ChunkHeader, CodecError> {
        if bytes.len() < HEADER_LEN {
            return Err(CodecError::Short);
        }
        if &bytes[..4] != MAGIC || bytes[6..8] != [0, 0] {
            return Err(CodecError::BadHeader);
        }
        let codec = Codec::from_id(bytes[4])?;
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let (frame_log, raw_len) = (bytes[5], word(8));
        if frame_log != 0 && !frames::valid_log(frame_log, raw_len) {
            return Err(CodecError::BadHeader);
        }
        Ok(ChunkHeader {
            codec,
            raw_len,
            payload_len: word(16),
            frame_log,
        })
    }
}

/// What a chunk holds, as far as the codec cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Bytes,
    /// Floats of this many bytes (2: bf16/fp16, 4: fp32).
    Floats(usize),
    /// Quantization blocks of this many bytes.
    Blocks(usize),
    /// Integers of this many bytes (2 or 4: the differences of a delta, `delta::DeltaOp`):
    /// grouped like floats, without their rotation, in frames.
    Ints(usize),
    /// Floats of this format narrowed to FP8 values (`pack --lossy fp8`): the fp8 codec where
    /// every value is one, the float codec otherwise.
    Fp8(fp8::Format),
}

/// Encodes `raw` into a complete chunk file image (header + payload). `auto` uses the float codec
/// for float content, the block codec for quantization blocks where it saves 2% over zstd, and
/// zstd otherwise, and stores the chunk raw when the codec chosen does not save 2%.
pub fn encode(
    raw: &[u8],
    choice: CodecChoice,
    level: i32,
    content: Content,
) -> Result<(Codec, Vec<u8>), CodecError> {
    encode_hashed(raw, None, choice, level, content)
}

/// `encode`, given the chaining values of `raw`'s frames where `frames::hash_chunk` made them
/// while naming the chunk (then its bytes are not hashed again for the frame table).
pub fn encode_hashed(
    raw: &[u8],
    cvs: Option<&[[u8; 32]]>,
    choice: CodecChoice,
    level: i32,
    content: Content,
) -> Result<(Codec, Vec<u8>), CodecError> {
    // One buffer from the header on: the groups and the header go straight into it.
    let mut out = Vec::with_capacity(HEADER_LEN + raw.len() + 64);
    out.resize(HEADER_LEN, 0);
    // Quantization blocks and fp8 blocks do not fall on frame boundaries: stored in one piece.
    let framed = frames::wanted(raw.len() as u64)
        && matches!(
            content,
            Content::Bytes | Content::Floats(_) | Content::Ints(_)
        );
    let own;
    let cvs = match cvs {
        Some(cvs) => cvs,
        None if framed => {
            own = frames::chaining_values(raw);
            &own
        }
        None => &[],
    };
    let compressed = if framed {
        match choice {
            CodecChoice::None => None,
            _ => Some(frames::encode(raw, cvs, &mut out, &mut |frame, out| {
                compress_into(frame, choice, level, content, out)?
                    .ok_or_else(|| CodecError::Compress("no codec for a frame".into()))
            })?),
        }
    } else {
        compress_into(raw, choice, level, content, &mut out)?
    };
    let payload_len = out.len() - HEADER_LEN;
    let codec = match compressed {
        Some(codec) if choice == CodecChoice::Zstd => codec,
        Some(codec) if saves(payload_len, raw.len()) => codec,
        _ => {
            out.truncate(HEADER_LEN);
            if framed {
                frames::encode(raw, cvs, &mut out, &mut |frame, out| {
                    out.extend_from_slice(frame);
                    Ok(Codec::None)
                })?;
            } else {
                out.extend_from_slice(raw);
            }
            Codec::None
        }
    };
    let header = ChunkHeader {
        codec,
        raw_len: raw.len() as u64,
        payload_len: (out.len() - HEADER_LEN) as u64,
        frame_log: if framed { frames::FRAME_LOG } else { 0 },
    };
    out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    Ok((codec, out))
}

/// Appends `raw` compressed as `choice` and `content` ask to `out`; the codec used, or `None`
/// for `--codec none`.
fn compress_into(
    raw: &[u8],
    choice: CodecChoice,
    level: i32,
    content: Content,
    out: &mut Vec<u8>,
) -> Result<Option<Codec>, CodecError> {
    let group_zstd = &mut |g: &[u8]| zstd_compress(g, Tuning::Group);
    let content = match (choice, content) {
        (CodecChoice::None, _) => return Ok(None),
        // Values that are not all FP8 values times their block's scale get the float codec.
        (CodecChoice::Auto, Content::Fp8(format)) => {
            if fp8::encode(raw, format, group_zstd, out)?.is_some() {
                return Ok(Some(Codec::Fp8));
            }
            Content::Floats(format.width())
        }
        (_, other) => other,
    };
    let mut grouped = |width: usize, rotate, out: &mut Vec<u8>| {
        GROUP_SCRATCH.with_len(raw.len() / width * width, |groups| {
            group::encode(raw, width, rotate, groups, group_zstd, out)
        })
    };
    Ok(Some(match (choice, content) {
        (CodecChoice::Auto, Content::Floats(width)) if width == 2 || width == 4 => {
            grouped(width, true, out)?;
            if width == 2 {
                Codec::Float16
            } else {
                Codec::Float32
            }
        }
        (CodecChoice::Auto, Content::Ints(width)) if width == 2 || width == 4 => {
            grouped(width, false, out)?;
            Codec::Blocks
        }
        (CodecChoice::Auto, Content::Blocks(width)) if (2..=group::MAX_WIDTH).contains(&width) => {
            grouped(width, false, out)?;
            // The block codec decodes slower than zstd: it is kept only where it saves 2% over
            // zstd, as it must over raw.
            let zstd = zstd_compress(raw, Tuning::Chunk(level))?;
            if saves(out.len() - HEADER_LEN, zstd.len()) {
                Codec::Blocks
            } else {
                out.truncate(HEADER_LEN);
                out.extend_from_slice(&zstd);
                Codec::Zstd
            }
        }
        _ => {
            out.extend_from_slice(&zstd_compress(raw, Tuning::Chunk(level))?);
            Codec::Zstd
        }
    }))
}

/// XORs `other` into `out` (of the same length): a delta from a chunk and its base, and the
/// chunk back from the delta and the base.
pub fn xor_into(out: &mut [u8], other: &[u8]) {
    for (o, b) in out.iter_mut().zip(other) {
        *o ^= b;
    }
}

/// Whether `len` bytes save at least `AUTO_MIN_SAVING` over `than` bytes: what `auto` asks of
/// a codec over raw, of the slower block codec over zstd, and `pack --base` of a delta over
/// the chunk stored whole.
pub fn saves(len: usize, than: usize) -> bool {
    len as f64 <= than as f64 * (1.0 - AUTO_MIN_SAVING)
}

/// Byte groups: decompressed, before they are interleaved into the chunk; split, before they
/// are compressed.
static GROUP_SCRATCH: crate::buffer::ScratchPool = crate::buffer::ScratchPool::new(4);

/// Decodes a payload (the bytes after the header) into `out`, which must be exactly the chunk's
/// length as the manifest records it; a header that claims another length is refused first.
pub fn decode_into(header: ChunkHeader, payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode_with_table(header, payload, out).map(|_| ())
}

/// Decodes two whole frames of one chunk stored by a grouping codec, each into its `out`, the
/// rANS groups of both at once (`group::decode_two`); `None`, nothing decoded, for any other
/// codec (whose frames decode one at a time).
fn decode_two_frames(
    codec: Codec,
    a: (&[u8], &mut [u8]),
    b: (&[u8], &mut [u8]),
) -> Option<Result<(), CodecError>> {
    let rotate = match codec {
        Codec::Float16 | Codec::Float32 => true,
        Codec::Blocks => false,
        _ => return None,
    };
    Some(
        GROUP_SCRATCH
            .with(|scratch| group::decode_two(a, b, rotate, scratch, &mut zstd_decompress)),
    )
}

/// `decode_into`, giving back the frame table of a chunk stored in frames, for the caller to
/// check against the chunk's hash.
pub fn decode_with_table(
    header: ChunkHeader,
    payload: &[u8],
    out: &mut [u8],
) -> Result<Option<frames::Table>, CodecError> {
    let expected = out.len() as u64;
    if header.raw_len != expected {
        return Err(CodecError::WrongLength {
            expected,
            found: header.raw_len,
        });
    }
    if header.frame_log != 0 {
        return frames::decode_whole(header, payload, out).map(Some);
    }
    let produced = match header.codec {
        Codec::None => {
            if payload.len() != out.len() {
                return Err(CodecError::WrongLength {
                    expected,
                    found: payload.len() as u64,
                });
            }
            out.copy_from_slice(payload);
            out.len()
        }
        Codec::Zstd => zstd_decompress(payload, out)?,
        Codec::Fp8 => fp8::decode(payload, out, &mut zstd_decompress).map(|()| out.len())?,
        Codec::Float16 | Codec::Float32 | Codec::Blocks => GROUP_SCRATCH
            .with(|scratch| {
                let rotate = header.codec != Codec::Blocks;
                group::decode(payload, rotate, out, scratch, &mut zstd_decompress)
            })
            .map(|()| out.len())?,
    };
    if produced as u64 != expected {
        return Err(CodecError::WrongLength {
            expected,
            found: produced as u64,
        });
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a whole chunk file image (header + payload) of a chunk of `expected` bytes.
    fn decode_file(image: Vec<u8>, expected: u64) -> Result<Vec<u8>, CodecError> {
        let header = ChunkHeader::parse(&image)?;
        if image.len() as u64 != HEADER_LEN as u64 + header.payload_len {
            return Err(CodecError::WrongLength {
                expected: header.payload_len,
                found: (image.len() - HEADER_LEN) as u64,
            });
        }
        let mut out = vec![0u8; usize::try_from(expected).map_err(|_| CodecError::BadHeader)?];
        decode_into(header, &image[HEADER_LEN..], &mut out)?;
        Ok(out)
    }

    pub(super) fn floaty(n: usize) -> Vec<u8> {
        // bf16-like: a narrow exponent byte and a noisy mantissa byte.
        let mut x: u32 = 12345;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 2 == 1 {
                    0x3c | ((x >> 16) as u8 & 1)
                } else {
                    (x >> 8) as u8
                }
            })
            .collect()
    }

    #[test]
    fn round_trips_every_codec() {
        let data = floaty(100_000);
        for choice in [CodecChoice::Auto, CodecChoice::Zstd, CodecChoice::None] {
            let (codec, image) = encode(&data, choice, 3, Content::Bytes).unwrap();
            assert_eq!(ChunkHeader::parse(&image).unwrap().codec, codec);
            assert_eq!(decode_file(image, data.len() as u64).unwrap(), data);
        }
        let (_, empty) = encode(&[], CodecChoice::Auto, 3, Content::Bytes).unwrap();
        assert_eq!(decode_file(empty, 0).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn auto_falls_back_to_raw_on_incompressible_data() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let random: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(
            encode(&random, CodecChoice::Auto, 3, Content::Bytes)
                .unwrap()
                .0,
            Codec::None
        );
        assert_eq!(
            encode(&random, CodecChoice::Zstd, 3, Content::Bytes)
                .unwrap()
                .0,
            Codec::Zstd
        );
        let zeros = vec![0u8; 65536];
        let (codec, image) = encode(&zeros, CodecChoice::Auto, 3, Content::Bytes).unwrap();
        assert_eq!(codec, Codec::Zstd);
        assert!(image.len() < 1000);
    }

    /// GGUF-like quantization blocks of `width` bytes: a two-byte scale (its high byte nearly
    /// constant) and quants drawn from a narrow range.
    fn quant_blocks(blocks: usize, width: usize) -> Vec<u8> {
        let mut x: u32 = 777;
        let mut next = || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            x >> 16
        };
        (0..blocks * width)
            .map(|i| match i % width {
                0 => next() as u8,
                1 => 0x2c | (next() & 1) as u8,
                _ => (next() % 5 + next() % 5) as u8,
            })
            .collect()
    }

    #[test]
    fn auto_keeps_the_block_codec_only_where_it_saves_two_percent_over_zstd() {
        let blocks = quant_blocks(4096, 34);
        let (codec, image) = encode(&blocks, CodecChoice::Auto, 3, Content::Blocks(34)).unwrap();
        let (_, zstd) = encode(&blocks, CodecChoice::Zstd, 3, Content::Bytes).unwrap();
        assert_eq!(codec, Codec::Blocks);
        assert!(saves(image.len() - HEADER_LEN, zstd.len() - HEADER_LEN));
        assert_eq!(decode_file(image, blocks.len() as u64).unwrap(), blocks);
        // Blocks that repeat at a distance zstd matches and the grouping breaks up: zstd.
        let period = quant_blocks(31, 34);
        let repeating: Vec<u8> = period.iter().copied().cycle().take(34 * 4096).collect();
        let (codec, image) = encode(&repeating, CodecChoice::Auto, 3, Content::Blocks(34)).unwrap();
        assert_eq!(codec, Codec::Zstd);
        assert_eq!(
            decode_file(image, repeating.len() as u64).unwrap(),
            repeating
        );
    }

    #[test]
    fn detects_damage() {
        let data = floaty(10_000);
        let (_, image) = encode(&data, CodecChoice::Zstd, 3, Content::Bytes).unwrap();
        assert!(matches!(
            decode_file(image[..10].to_vec(), 10_000),
            Err(CodecError::Short)
        ));
        let mut bad_magic = image.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            decode_file(bad_magic, 10_000),
            Err(CodecError::BadHeader)
        ));
        let mut bad_codec = image.clone();
        bad_codec[4] = 99;
        assert!(matches!(
            decode_file(bad_codec, 10_000),
            Err(CodecError::UnknownCodec(99))
        ));
        let truncated = image[..image.len() - 5].to_vec();
        assert!(decode_file(truncated, 10_000).is_err());
        let mut wrong_len = image.clone();
        wrong_len[8] = wrong_len[8].wrapping_add(1);
        assert!(decode_file(wrong_len, 10_000).is_err());
        let (_, raw) = encode(&data, CodecChoice::None, 3, Content::Bytes).unwrap();
        assert!(matches!(
            decode_file(raw[..raw.len() - 1].to_vec(), 10_000),
            Err(CodecError::WrongLength { .. })
        ));
    }
}
