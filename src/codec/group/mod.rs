//! The byte-grouping codec: byte i of every element of `width` bytes goes to group i, and each
//! group is stored entropy-coded (`ans`), with zstd, sparse or raw, whichever is smallest. For float tensors (width 2 or 4) each
//! element is first rotated left by one bit so that the sign moves to the lowest bit and the
//! exponent fills the top byte exactly (bf16 and fp32; fp16 gets its 5 exponent bits in the top
//! byte too): the exponent group, ~2.7 bits of information per byte, shrinks to a third (coded
//! by `ans` within 0.7% of its order-0 entropy, where zstd's Huffman code is 2% over), while
//! the mantissa groups are near-random and stay raw; fp32 tensors holding bf16 values have two
//! all-zero groups, which cost nothing. For quantized blocks (GGUF Q8_0, Q4_K, ...; width = the
//! block's bytes, no rotation) the scales are separated from the quants, which then code better.
//!
//! Payload: `width` (u16 LE), then per group its mode (u8: 0 raw, 1 zstd, 2 sparse: nearly all
//! zeros, see `sparse`; 3 entropy-coded, see `ans`) and stored length (u64 LE), then the groups in order (lowest byte first),
//! then the `raw_len % width` trailing bytes.

use super::{CodecError, ans, sparse};

mod interleave;
pub(super) use interleave::join;
use interleave::split;

/// How one group is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Raw,
    Zstd,
    Sparse,
    Ans,
}

impl Mode {
    pub(super) fn id(self) -> u8 {
        match self {
            Mode::Raw => 0,
            Mode::Zstd => 1,
            Mode::Sparse => 2,
            Mode::Ans => 3,
        }
    }

    pub(super) fn from_id(id: u8) -> Option<Mode> {
        [Mode::Raw, Mode::Zstd, Mode::Sparse, Mode::Ans]
            .into_iter()
            .find(|m| m.id() == id)
    }
}

/// A group is kept compressed only when that saves at least this fraction.
const MIN_SAVING: f64 = 0.02;

/// Order-0 entropy of `data` in bits per byte, how many of its bytes are zero, and the counts
/// they come from: a group above 8 × (1 − MIN_SAVING) bits cannot be compressed enough to keep,
/// so it is stored raw without trying (the mantissa groups), and only a group nearly all zeros
/// is tried sparse.
fn entropy_and_zeros(data: &[u8]) -> (f64, usize, [u64; 256]) {
    let counts = ans::count(data);
    (bits_per_byte(&counts), counts[0] as usize, counts)
}

/// Order-0 entropy in bits per byte of bytes with these counts.
fn bits_per_byte(counts: &[u64; 256]) -> f64 {
    let n = counts.iter().sum::<u64>() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether a sample of `group` (eight pieces of 2 KiB spread over it) is so near random that the
/// whole is surely above the bar to try compressing it (a float's mantissa bytes): then it is
/// not counted whole, which was the larger part of a bf16 chunk's encode once its exponents
/// were entropy-coded. The margin (0.05 bits) is over twice what 16 KiB of a random group falls
/// short of 8 bits by (about 0.02), so a group near the bar is always counted whole.
fn plainly_random(group: &[u8]) -> bool {
    const PIECE: usize = 2048;
    const PIECES: usize = 8;
    if group.len() < 4 * PIECE * PIECES {
        return false;
    }
    let stride = group.len() / PIECES;
    let mut counts = [0u64; 256];
    for k in 0..PIECES {
        for &b in &group[k * stride..k * stride + PIECE] {
            counts[b as usize] += 1;
        }
    }
    bits_per_byte(&counts) > 8.0 * (1.0 - MIN_SAVING) + 0.05
}

/// Compresses one group (zstd, tuned for it).
pub type GroupCompressor<'a> = dyn FnMut(&[u8]) -> Result<Vec<u8>, CodecError> + 'a;
/// Decompresses one group into a slice of exactly its length, returning the bytes produced.
pub type GroupDecompressor<'a> = dyn FnMut(&[u8], &mut [u8]) -> Result<usize, CodecError> + 'a;

/// Whether `width` can be grouped (and rotated, for floats).
fn valid_width(width: usize, rotate: bool) -> bool {
    (2..=MAX_WIDTH).contains(&width) && (!rotate || width == 2 || width == 4)
}

fn table_len(width: usize) -> usize {
    2 + width * 9
}

/// The widest element the codec takes (a GGUF Q8_K block is 292 bytes).
pub const MAX_WIDTH: usize = 1024;

/// Encodes `raw` as elements of `width` bytes, rotating floats (`rotate`, widths 2 and 4), and
/// appends the payload to `out`. `groups` (exactly the whole elements' bytes, `raw.len() / width
/// * width`, contents unspecified) holds the byte groups on the way.
pub fn encode(
    raw: &[u8],
    width: usize,
    rotate: bool,
    groups: &mut [u8],
    compress: &mut GroupCompressor<'_>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if !valid_width(width, rotate) {
        return Err(CodecError::Compress(format!(
            "cannot group elements of {width} bytes"
        )));
    }
    let n = raw.len() / width;
    if groups.len() != n * width {
        return Err(CodecError::Compress(format!(
            "{} bytes for the groups of {n} elements of {width}",
            groups.len()
        )));
    }
    split(raw, width, rotate, groups);
    // The table's entries are filled in as the groups go out after it. With no whole element
    // they stay zero (raw, empty), which keeps the layout uniform.
    let start = out.len();
    out.resize(start + table_len(width), 0);
    out[start..start + 2].copy_from_slice(&(width as u16).to_le_bytes());
    let table = start + 2;
    for (j, g) in groups.chunks_exact(n.max(1)).take(width).enumerate() {
        let packed = pack_group(g, rotate, compress)?;
        let (mode, bytes) = match &packed {
            Some((mode, p)) => (*mode, &p[..]),
            None => (Mode::Raw, g),
        };
        let entry = &mut out[table + j * 9..table + (j + 1) * 9];
        entry[0] = mode.id();
        entry[1..].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&raw[n * width..]);
    Ok(())
}

/// How one byte group is stored: the smallest of the ways tried, where it saves enough over the
/// group raw (`None`: raw). `rotate` says the group is a float's byte (no repeats for zstd).
pub(super) fn pack_group(
    g: &[u8],
    rotate: bool,
    compress: &mut GroupCompressor<'_>,
) -> Result<Option<(Mode, Vec<u8>)>, CodecError> {
    let (bits, zeros, counts) = match plainly_random(g) {
        true => (8.0, 0, [0; 256]),
        false => entropy_and_zeros(g),
    };
    let worth_trying = !g.is_empty() && bits < 8.0 * (1.0 - MIN_SAVING);
    // The smallest of the ways tried, kept where it saves enough over the group raw. A group
    // nearly all zeros (a delta's top bytes) is tried sparse and with zstd only: sparse
    // decodes with a fill and a store per other byte, several times faster than any coder.
    // Otherwise `ans`, and zstd too where there may be repeats for its matches to find
    // (quantization scales, a delta's differences: not rotated) or the group is nearly one
    // value (where `ans` still stores its states); a float group's bytes have no such
    // repeats, so zstd's Huffman code only loses to `ans` there, and is not run. Where zstd
    // is tried, `ans` decodes more slowly than it, so it is kept only where 2% smaller: each
    // way's length is weighed so in the choice.
    let mut tried: Vec<(Mode, Vec<u8>, f64)> = Vec::new();
    if worth_trying {
        let sparse = match sparse::fits(g.len(), zeros) {
            true => sparse::encode(g, compress)?,
            false => None,
        };
        let with_zstd = sparse.is_some() || !rotate || bits < 1.0;
        if sparse.is_none() {
            let mut coded = Vec::new();
            ans::encode(g, &counts, &mut coded);
            let weight = if with_zstd {
                1.0 / (1.0 - MIN_SAVING)
            } else {
                1.0
            };
            let len = coded.len() as f64 * weight;
            tried.push((Mode::Ans, coded, len));
        }
        if with_zstd {
            let zstd = compress(g)?;
            let len = zstd.len() as f64;
            tried.push((Mode::Zstd, zstd, len));
        }
        if let Some(sparse) = sparse {
            let len = sparse.len() as f64;
            tried.push((Mode::Sparse, sparse, len));
        }
    }
    let packed = tried
        .into_iter()
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .map(|(mode, bytes, _)| (mode, bytes));
    Ok(packed.filter(|(_, p)| (p.len() as f64) <= g.len() as f64 * (1.0 - MIN_SAVING)))
}

/// How a grouped payload is laid out: its element width and, per group, its mode and stored
/// length, checked to add up to the payload.
pub(super) struct Table {
    pub width: usize,
    /// Per group: how it is stored, and its stored length.
    pub groups: Vec<(Mode, usize)>,
}

impl Table {
    /// The bytes of the payload the groups start at.
    pub fn len(&self) -> usize {
        table_len(self.width)
    }
}

/// Reads the table of a grouped payload of `payload_len` bytes from `head` (its first bytes, at
/// least the whole table), for a chunk of `raw_len` bytes.
pub(super) fn read_table(
    head: &[u8],
    rotate: bool,
    raw_len: usize,
    payload_len: u64,
) -> Result<Table, CodecError> {
    let bad = |why: &str| CodecError::Decompress(format!("grouped codec: {why}"));
    let width = match head {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
        _ => return Err(bad("empty payload")),
    };
    if !valid_width(width, rotate) {
        return Err(bad("bad element width"));
    }
    let n = raw_len / width;
    let tail = raw_len - n * width;
    let table = head
        .get(2..table_len(width))
        .ok_or_else(|| bad("short table"))?;
    let mut groups = Vec::with_capacity(width);
    let mut total = 0u64;
    for e in table.chunks_exact(9) {
        let mut len = [0u8; 8];
        len.copy_from_slice(&e[1..]);
        let len = u64::from_le_bytes(len);
        let mode = Mode::from_id(e[0]).ok_or_else(|| bad("bad group entry"))?;
        if (mode == Mode::Raw && len != n as u64) || len > payload_len {
            return Err(bad("bad group entry"));
        }
        total += len;
        groups.push((mode, len as usize));
    }
    if table_len(width) as u64 + total + tail as u64 != payload_len {
        return Err(bad("group lengths do not add up to the payload"));
    }
    Ok(Table { width, groups })
}

/// Decodes a grouped payload into `out` (the chunk's exact length). `scratch` is reused between
/// calls; `decompress` fills a slice exactly or fails.
pub fn decode(
    payload: &[u8],
    rotate: bool,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
    decompress: &mut GroupDecompressor<'_>,
) -> Result<(), CodecError> {
    decode_all(&mut [(payload, out)], rotate, scratch, decompress)
}

/// `decode` of two payloads (two frames of a chunk) at once: where both code their j-th group
/// by rANS at one length, the two are decoded together (`ans::decode_pair`, half again as fast).
pub fn decode_two(
    a: (&[u8], &mut [u8]),
    b: (&[u8], &mut [u8]),
    rotate: bool,
    scratch: &mut Vec<u8>,
    decompress: &mut GroupDecompressor<'_>,
) -> Result<(), CodecError> {
    decode_all(&mut [a, b], rotate, scratch, decompress)
}

/// A group of a payload being decoded: its stored bytes and, unless it is stored raw, where it
/// is unpacked to; then its bytes.
enum Group<'a> {
    Packed(Mode, &'a [u8], &'a mut [u8]),
    Ready(&'a [u8]),
}

/// `decode` of each (payload, out) of `parts`, their groups unpacked into `scratch` one after
/// the other.
fn decode_all(
    parts: &mut [(&[u8], &mut [u8])],
    rotate: bool,
    scratch: &mut Vec<u8>,
    decompress: &mut GroupDecompressor<'_>,
) -> Result<(), CodecError> {
    let bad = |why: &str| CodecError::Decompress(format!("grouped codec: {why}"));
    let tables = parts
        .iter()
        .map(|(p, o)| read_table(p, rotate, o.len(), p.len() as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let sizes: Vec<usize> = parts
        .iter()
        .zip(&tables)
        .map(|((_, o), t)| o.len() / t.width)
        .collect();
    let need: usize = tables
        .iter()
        .zip(&sizes)
        .map(|(t, n)| t.groups.iter().filter(|(m, _)| *m != Mode::Raw).count() * n)
        .sum();
    // Grown only: a buffer reused across chunks is not written again to resize it.
    if scratch.len() < need {
        scratch.resize(need, 0);
    }
    let mut free = &mut scratch[..need];
    let mut groups: Vec<Vec<Group<'_>>> = Vec::with_capacity(parts.len());
    let mut tails = Vec::with_capacity(parts.len());
    for ((payload, _), (table, &n)) in parts.iter().zip(tables.iter().zip(&sizes)) {
        let payload: &[u8] = payload;
        let mut at = table.len();
        let mut these = Vec::with_capacity(table.width);
        for &(mode, len) in &table.groups {
            let stored = &payload[at..at + len];
            at += len;
            these.push(if mode == Mode::Raw {
                Group::Ready(stored)
            } else {
                let (dst, rest) = std::mem::take(&mut free).split_at_mut(n);
                free = rest;
                Group::Packed(mode, stored, dst)
            });
        }
        groups.push(these);
        tails.push(&payload[at..]);
    }
    // The j-th groups of two payloads, both coded by rANS at one length: decoded together.
    if let [a, b] = &mut groups[..] {
        for (ga, gb) in a.iter_mut().zip(b.iter_mut()) {
            if let (Group::Packed(Mode::Ans, sa, da), Group::Packed(Mode::Ans, sb, db)) =
                (&mut *ga, &mut *gb)
                && da.len() == db.len()
            {
                ans::decode_pair((sa, da), (sb, db))?;
                for g in [ga, gb] {
                    if let Group::Packed(_, _, dst) = std::mem::replace(g, Group::Ready(&[])) {
                        *g = Group::Ready(dst);
                    }
                }
            }
        }
    }
    for (((_, out), these), (tail, &n)) in
        parts.iter_mut().zip(groups).zip(tails.iter().zip(&sizes))
    {
        let mut ready: Vec<&[u8]> = Vec::with_capacity(these.len());
        for g in these {
            ready.push(match g {
                Group::Ready(bytes) => bytes,
                Group::Packed(mode, stored, dst) => {
                    unpack(mode, stored, dst, decompress)?;
                    dst
                }
            });
        }
        let width = ready.len();
        if width == 0 {
            return Err(bad("no groups"));
        }
        join(&ready, rotate, &mut out[..n * width]);
        out[n * width..].copy_from_slice(tail);
    }
    Ok(())
}

/// Decodes one group stored compressed (`mode` zstd, sparse or entropy-coded) into `dst`,
/// exactly its length.
pub(super) fn unpack(
    mode: Mode,
    stored: &[u8],
    dst: &mut [u8],
    decompress: &mut GroupDecompressor<'_>,
) -> Result<(), CodecError> {
    match mode {
        Mode::Sparse => sparse::decode(stored, dst, decompress),
        Mode::Ans => ans::decode(stored, dst),
        _ if decompress(stored, dst)? != dst.len() => Err(CodecError::Decompress(
            "grouped codec: group decompressed to the wrong length".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::codec::{group_zstd as zstd1, zstd_decompress as unzstd};

    fn enc(raw: &[u8], width: usize, rotate: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut groups = vec![0; raw.len() / width * width];
        encode(raw, width, rotate, &mut groups, &mut zstd1, &mut out).unwrap();
        out
    }

    fn round_trip(raw: &[u8], width: usize) -> Vec<u8> {
        let rotate = width == 2 || width == 4;
        let enc = enc(raw, width, rotate);
        let mut out = vec![0u8; raw.len()];
        decode(&enc, rotate, &mut out, &mut Vec::new(), &mut unzstd).unwrap();
        assert_eq!(out, raw, "width {width}, {} bytes", raw.len());
        enc
    }

    /// bf16 of normal(0, 0.02)-like values.
    pub(crate) fn bf16(n: usize) -> Vec<u8> {
        let mut x: u64 = 7;
        let mut out = Vec::with_capacity(n * 2);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let s: f32 = (0..4)
                .map(|i| ((x >> (i * 16)) & 0xffff) as f32 / 65535.0)
                .sum::<f32>()
                - 2.0;
            out.extend_from_slice(&(s * 0.035).to_bits().to_le_bytes()[2..]);
        }
        out
    }

    #[test]
    fn round_trips_all_shapes() {
        for width in [2, 4, 18, 34, 210, 292] {
            for len in [0, 1, 3, 4, 5, 1000, 4097] {
                round_trip(&bf16(len / 2 + 1)[..len], width);
            }
        }
        // Every 16-bit pattern survives the rotation.
        let all: Vec<u8> = (0..=u16::MAX).flat_map(|v| v.to_le_bytes()).collect();
        round_trip(&all, 2);
        round_trip(&all, 4);
    }

    #[test]
    fn bf16_weights_compress_near_the_entropy_bound() {
        let raw = bf16(1 << 20);
        let enc = round_trip(&raw, 2);
        let ratio = raw.len() as f64 / enc.len() as f64;
        let plain = raw.len() as f64 / zstd::bulk::compress(&raw, 3).unwrap().len() as f64;
        assert!(
            ratio > 1.4 && ratio > plain + 0.1,
            "float codec {ratio:.3}x vs zstd {plain:.3}x"
        );
    }

    #[test]
    fn the_exponents_are_entropy_coded_smaller_than_zstd_codes_them() {
        let raw = bf16(1 << 16);
        let enc = round_trip(&raw, 2);
        let table = read_table(&enc, true, raw.len(), enc.len() as u64).unwrap();
        assert_eq!(table.groups[1].0, Mode::Ans);
        let exponents: Vec<u8> = raw
            .chunks_exact(2)
            .map(|c| (u16::from_le_bytes([c[0], c[1]]).rotate_left(1) >> 8) as u8)
            .collect();
        let zstd = zstd1(&exponents).unwrap().len();
        assert!(
            (table.groups[1].1 as f64) < zstd as f64 * 0.99,
            "{} bytes entropy-coded against zstd's {zstd}",
            table.groups[1].1
        );
    }

    #[test]
    fn fp32_holding_bf16_values_costs_nothing_for_the_zero_halves() {
        let halves = bf16(1 << 18);
        let raw: Vec<u8> = halves
            .chunks_exact(2)
            .flat_map(|h| [0, 0, h[0], h[1]])
            .collect();
        let enc = round_trip(&raw, 4);
        assert!(
            raw.len() as f64 / enc.len() as f64 > 2.7,
            "ratio {}",
            raw.len() as f64 / enc.len() as f64
        );
    }

    /// A delta of bf16 weights against a base (as the XOR of two checkpoints), `n` values: most
    /// mantissas unchanged, nearly every exponent.
    pub(crate) fn bf16_delta(n: usize) -> Vec<u8> {
        let mut x: u64 = 11;
        let mut out = Vec::with_capacity(n * 2);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mantissa = if x.is_multiple_of(3) {
                (x >> 8) as u8 & 0x0f
            } else {
                0
            };
            let exponent = u8::from((x >> 32).is_multiple_of(64));
            // Rotated back: the codec's rotation puts the sign low and the exponent high.
            let v = (u16::from(exponent) << 8 | u16::from(mantissa)).rotate_right(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    #[test]
    fn a_group_of_nearly_all_zeros_is_stored_sparse() {
        let raw = bf16_delta(60_000);
        let enc = round_trip(&raw, 2);
        let table = read_table(&enc, true, raw.len(), enc.len() as u64).unwrap();
        let modes: Vec<Mode> = table.groups.iter().map(|(m, _)| *m).collect();
        assert_eq!(modes, [Mode::Ans, Mode::Sparse]);
        // Smaller than the exponents' group through zstd alone.
        let exponents: Vec<u8> = raw
            .chunks_exact(2)
            .map(|c| (u16::from_le_bytes([c[0], c[1]]).rotate_left(1) >> 8) as u8)
            .collect();
        assert!(table.groups[1].1 < zstd1(&exponents).unwrap().len());
    }

    #[test]
    fn entropy_estimate() {
        assert_eq!(entropy_and_zeros(&[7; 1000]).0, 0.0);
        let all: Vec<u8> = (0..=255).cycle().take(256 * 100).collect();
        let (bits, zeros, _) = entropy_and_zeros(&all);
        assert!((bits - 8.0).abs() < 1e-9 && zeros == 100);
    }

    #[test]
    fn damaged_payloads_fail_cleanly() {
        let raw = bf16(5000);
        let enc = enc(&raw, 2, true);
        let mut out = vec![0u8; raw.len()];
        for cut in [0, 1, 5, 19, enc.len() - 1] {
            assert!(
                decode(&enc[..cut], true, &mut out, &mut Vec::new(), &mut unzstd).is_err(),
                "cut {cut}"
            );
        }
        let mut bad = enc.clone();
        bad[0] = 3; // width 3 cannot be a rotated float
        assert!(decode(&bad, true, &mut out, &mut Vec::new(), &mut unzstd).is_err());
        let mut bad = enc.clone();
        bad[4] = 0xff; // a group length far past the payload
        assert!(decode(&bad, true, &mut out, &mut Vec::new(), &mut unzstd).is_err());
        let mut wrong_len = vec![0u8; raw.len() - 2];
        assert!(decode(&enc, true, &mut wrong_len, &mut Vec::new(), &mut unzstd).is_err());
    }
}
