//! FP8 for `pack --lossy fp8`: float tensors quantized to E4M3 (the OCP "E4M3FN" format: 4
//! exponent bits, 3 mantissa bits, largest magnitude 448) with one power-of-two scale per block
//! of `BLOCK` values, and read back in their own dtype. Two halves:
//!
//! - `quantize_block` rounds values in place to what their FP8 form reads back as (the narrowing
//!   a lossy pack applies to a copy of the file). The error bound: with the block's scale `2^k`
//!   the smallest that fits its largest magnitude `M` (so `224 · 2^k < M ≤ 448 · 2^k`), each
//!   value moves by at most 1/16 of itself (half a unit in the last of 3 mantissa bits) and, near
//!   zero, by at most `2^-10 · 2^k` (< M / 2^17); so never by more than M / 16.
//! - The `fp8` chunk codec stores such values as their codes and the block scales, each group
//!   entropy-coded. It is exact: `encode` refuses (and the chunk gets another codec) unless every
//!   value decodes back to the same bits, so it is lossless for whatever it stores.
//!
//! Payload: format (u8: 0 bf16, 1 fp16, 2 fp32), block count (u32 LE), then the scales group and
//! the codes group, each as its mode (u8, as the grouping codec's: 0 raw, 1 zstd, 2 sparse, 3
//! entropy-coded; earlier packs wrote 0 and 1 only), stored length (u32 LE) and bytes.

use super::CodecError;
use super::group::{GroupCompressor, GroupDecompressor, Mode, unpack};

/// Values per scale.
pub const BLOCK: usize = 128;
/// The largest E4M3 magnitude.
const MAX: f32 = 448.0;
/// Block scales `2^k` are kept within the normal f32 range.
const K_MIN: i32 = -126;
const K_MAX: i32 = 127;

/// A float dtype the FP8 codec reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Bf16,
    F16,
    F32,
}

impl Format {
    /// The format of a dtype as safetensors, GGUF and torch name it.
    pub fn of_dtype(dtype: &str) -> Option<Format> {
        match dtype {
            "BF16" | "bfloat16" => Some(Format::Bf16),
            "F16" | "float16" | "half" => Some(Format::F16),
            "F32" | "float32" | "float" => Some(Format::F32),
            _ => None,
        }
    }

    pub fn width(self) -> usize {
        match self {
            Format::Bf16 | Format::F16 => 2,
            Format::F32 => 4,
        }
    }

    fn id(self) -> u8 {
        match self {
            Format::Bf16 => 0,
            Format::F16 => 1,
            Format::F32 => 2,
        }
    }

    fn from_id(id: u8) -> Option<Format> {
        [Format::Bf16, Format::F16, Format::F32]
            .into_iter()
            .find(|f| f.id() == id)
    }

    /// The value of one element's bytes.
    fn read(self, b: &[u8]) -> f32 {
        match self {
            Format::Bf16 => f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16),
            Format::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Format::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// Writes `v` as one element (exact for every value an FP8 code and a scale make, except
    /// fp16 out of its range, which `quantize_block` never writes).
    fn write(self, v: f32, out: &mut [u8]) {
        match self {
            Format::Bf16 => out.copy_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes()),
            Format::F16 => out.copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            Format::F32 => out.copy_from_slice(&v.to_le_bytes()),
        }
    }
}

/// The value of each E4M3 code (the two NaN codes read as NaN; they are never written).
fn value(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = (i32::from((code >> 3) & 15), f32::from(code & 7));
    if e == 15 && code & 7 == 7 {
        return f32::NAN;
    }
    let magnitude = if e == 0 {
        m * (2f32).powi(-9)
    } else {
        (1.0 + m / 8.0) * (2f32).powi(e - 7)
    };
    sign * magnitude
}

fn values() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|c| value(c as u8)))
}

/// The E4M3 code nearest `y` (ties to even), for `|y| ≤ 448`.
fn code(y: f32) -> u8 {
    let sign = if y.is_sign_negative() { 0x80 } else { 0 };
    let a = y.abs();
    let magnitude = if a < (2f32).powi(-6) {
        // Subnormal codes step by 2^-9; 8 steps is the smallest normal code.
        (a * 512.0).round_ties_even() as u8
    } else {
        let bits = a.to_bits();
        let rounded = bits + 0x7_FFFF + ((bits >> 20) & 1);
        let e = (rounded >> 23) as i32 - 127 + 7;
        ((e as u32) << 3 | ((rounded >> 20) & 7)) as u8
    };
    sign | magnitude
}

/// `2^k` for a block whose largest magnitude is `max`: the smallest that fits it in E4M3.
fn scale_exponent(max: f32) -> Option<i32> {
    if max == 0.0 {
        return Some(0);
    }
    let mut k = (max / MAX).log2().ceil() as i32;
    while (MAX as f64) * 2f64.powi(k) < f64::from(max) {
        k += 1;
    }
    while (MAX as f64) * 2f64.powi(k - 1) >= f64::from(max) {
        k -= 1;
    }
    (K_MIN..=K_MAX).contains(&k).then_some(k)
}

/// The codes of one block's values and its scale exponent, when every value reads back as the
/// same bits (`None` otherwise: a value that is not an FP8 value times the scale, or not finite).
fn codes_of(format: Format, block: &[u8], codes: &mut Vec<u8>) -> Option<i8> {
    let w = format.width();
    let max = block
        .chunks_exact(w)
        .map(|b| format.read(b).abs())
        .fold(0f32, f32::max);
    if !max.is_finite() {
        return None;
    }
    let k = scale_exponent(max)?;
    let (down, up) = (2f32.powi(-k), 2f32.powi(k));
    let mut back = [0u8; 4];
    for b in block.chunks_exact(w) {
        let c = code(format.read(b) * down);
        format.write(values()[c as usize] * up, &mut back[..w]);
        if back[..w] != *b {
            return None;
        }
        codes.push(c);
    }
    i8::try_from(k).ok()
}

/// Rounds one block of values (in `format`) in place to the values their FP8 codes read back
/// as. A block holding a value that is not finite, or whose scale or FP8 form falls outside the
/// format's range, is left as it is. Returns whether it changed.
pub fn quantize_block(format: Format, block: &mut [u8]) -> bool {
    let w = format.width();
    let max = block
        .chunks_exact(w)
        .map(|b| format.read(b).abs())
        .fold(0f32, f32::max);
    let Some(k) = scale_exponent(max).filter(|_| max.is_finite()) else {
        return false;
    };
    let (down, up) = (2f32.powi(-k), 2f32.powi(k));
    let mut out = block.to_vec();
    for (o, b) in out.chunks_exact_mut(w).zip(block.chunks_exact(w)) {
        let v = values()[code(format.read(b) * down) as usize] * up;
        if !v.is_finite() || (format == Format::F16 && v.abs() > 65504.0) {
            return false;
        }
        format.write(v, o);
    }
    let changed = out != block;
    block.copy_from_slice(&out);
    changed
}

/// Appends the fp8 payload of `raw` (elements of `format`) to `out`; `None` (and `out` as it
/// was) when some value is not exactly an FP8 code times its block's scale.
pub fn encode(
    raw: &[u8],
    format: Format,
    compress: &mut GroupCompressor<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<()>, CodecError> {
    let w = format.width();
    if !raw.len().is_multiple_of(w) {
        return Ok(None);
    }
    let blocks = raw.len().div_ceil(BLOCK * w);
    let mut scales = Vec::with_capacity(blocks);
    let mut codes = Vec::with_capacity(raw.len() / w);
    for block in raw.chunks(BLOCK * w) {
        match codes_of(format, block, &mut codes) {
            Some(k) => scales.push(k as u8),
            None => return Ok(None),
        }
    }
    let Ok(count) = u32::try_from(blocks) else {
        return Ok(None);
    };
    out.push(format.id());
    out.extend_from_slice(&count.to_le_bytes());
    // The scales as any bytes (runs repeat along a tensor); the codes as a float's bytes: no
    // repeats for zstd to find, so entropy-coded (`ans`, within 1% of their order-0 bound).
    for (group, float) in [(&scales, false), (&codes, true)] {
        let packed = super::group::pack_group(group, float, compress)?;
        let (mode, bytes) = match &packed {
            Some((mode, p)) => (mode.id(), &p[..]),
            None => (Mode::Raw.id(), &group[..]),
        };
        out.push(mode);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    Ok(Some(()))
}

/// Decodes an fp8 payload into `out` (exactly the chunk's length).
pub fn decode(
    payload: &[u8],
    out: &mut [u8],
    decompress: &mut GroupDecompressor<'_>,
) -> Result<(), CodecError> {
    let bad = |why: &str| CodecError::Decompress(format!("fp8 payload: {why}"));
    let format = payload
        .first()
        .and_then(|&id| Format::from_id(id))
        .ok_or_else(|| bad("unknown format"))?;
    let w = format.width();
    let count = payload
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| bad("short"))?;
    let n = out.len() / w;
    if !out.len().is_multiple_of(w) || count != n.div_ceil(BLOCK) {
        return Err(bad("block count does not match the chunk's length"));
    }
    let mut at = 5;
    let mut group = |len: usize| -> Result<Vec<u8>, CodecError> {
        let head = payload.get(at..at + 5).ok_or_else(|| bad("short"))?;
        let stored = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let bytes = payload
            .get(at + 5..at + 5 + stored)
            .ok_or_else(|| bad("short"))?;
        at += 5 + stored;
        let mut g = vec![0u8; len];
        match Mode::from_id(head[0]).ok_or_else(|| bad("bad group mode"))? {
            Mode::Raw if stored == len => g.copy_from_slice(bytes),
            Mode::Raw => return Err(bad("bad group")),
            mode => unpack(mode, bytes, &mut g, decompress)?,
        }
        Ok(g)
    };
    let scales = group(count)?;
    let codes = group(n)?;
    if at != payload.len() {
        return Err(bad("trailing bytes"));
    }
    let table = values();
    for ((block, codes), &k) in out
        .chunks_mut(BLOCK * w)
        .zip(codes.chunks(BLOCK))
        .zip(&scales)
    {
        let up = 2f32.powi(i32::from(k as i8));
        for (o, &c) in block.chunks_exact_mut(w).zip(codes) {
            format.write(table[c as usize] * up, o);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::codec::{group_zstd as zstd, zstd_decompress as unzstd};

    fn weights(n: usize, format: Format) -> Vec<u8> {
        let mut x: u64 = 99;
        let mut out = vec![0u8; n * format.width()];
        for (i, o) in out.chunks_exact_mut(format.width()).enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            // A few rows of larger values, and exact zeros.
            let v = if i % 1000 == 7 {
                0.0
            } else {
                u * if i / 4096 == 3 { 9.0 } else { 0.05 }
            };
            format.write(v, o);
        }
        out
    }

    #[test]
    fn codes_round_to_the_nearest_value() {
        for c in 0u8..=255 {
            let v = value(c);
            if v.is_nan() {
                continue;
            }
            assert_eq!(value(code(v)).to_bits(), v.to_bits(), "code {c:#x}");
        }
        assert_eq!(value(code(448.0)), 448.0);
        assert_eq!(value(code(0.0)), 0.0);
        // Halfway between 1.0 and 1.125: ties to even (1.0).
        assert_eq!(value(code(1.0625)), 1.0);
        assert_eq!(value(code(1.1875)), 1.25);
    }

    #[test]
    fn quantized_blocks_stay_within_the_bound_and_code_exactly() {
        for format in [Format::Bf16, Format::F16, Format::F32] {
            let original = weights(10_000, format);
            let mut q = original.clone();
            for block in q.chunks_mut(BLOCK * format.width()) {
                quantize_block(format, block);
            }
            let w = format.width();
            for (ob, qb) in original.chunks(BLOCK * w).zip(q.chunks(BLOCK * w)) {
                let max = ob
                    .chunks_exact(w)
                    .map(|b| format.read(b).abs())
                    .fold(0f32, f32::max);
                for (o, q) in ob.chunks_exact(w).zip(qb.chunks_exact(w)) {
                    let (o, q) = (format.read(o), format.read(q));
                    let err = (o - q).abs();
                    assert!(
                        err <= o.abs() / 16.0 + max / 131072.0,
                        "{format:?}: {o} -> {q}"
                    );
                }
            }
            let mut payload = Vec::new();
            assert!(
                encode(&q, format, &mut zstd, &mut payload)
                    .unwrap()
                    .is_some()
            );
            let mut back = vec![0u8; q.len()];
            decode(&payload, &mut back, &mut unzstd).unwrap();
            assert!(back == q, "{format:?}");
            // Not quantized: refused, nothing appended.
            let mut none = Vec::new();
            assert!(
                encode(&original, format, &mut zstd, &mut none)
                    .unwrap()
                    .is_none()
            );
            assert!(none.is_empty());
        }
    }

    #[test]
    fn codes_are_entropy_coded_and_payloads_of_earlier_packs_still_decode() {
        let mut q = weights(20_000, Format::Bf16);
        for block in q.chunks_mut(BLOCK * 2) {
            quantize_block(Format::Bf16, block);
        }
        let mut payload = Vec::new();
        encode(&q, Format::Bf16, &mut zstd, &mut payload)
            .unwrap()
            .unwrap();
        let scales_len = u32::from_le_bytes(payload[6..10].try_into().unwrap()) as usize;
        let codes_at = 10 + scales_len;
        assert_eq!(payload[codes_at], Mode::Ans.id(), "the codes' mode");
        let mut back = vec![0u8; q.len()];
        decode(&payload, &mut back, &mut unzstd).unwrap();
        assert!(back == q);
        // As earlier packs wrote it: both groups zstd-coded (mode 1).
        let n = q.len() / 2;
        let blocks = n.div_ceil(BLOCK);
        let mut codes = Vec::new();
        let mut scales = Vec::new();
        for block in q.chunks(BLOCK * 2) {
            scales.push(codes_of(Format::Bf16, block, &mut codes).unwrap() as u8);
        }
        let mut old = vec![0u8];
        old.extend_from_slice(&(blocks as u32).to_le_bytes());
        for group in [&scales, &codes] {
            let packed = zstd(group).unwrap();
            old.push(1);
            old.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            old.extend_from_slice(&packed);
        }
        let mut back = vec![0u8; q.len()];
        decode(&old, &mut back, &mut unzstd).unwrap();
        assert!(back == q, "an earlier pack's payload");
    }

    #[test]
    fn damaged_payloads_are_refused() {
        let mut q = weights(1000, Format::Bf16);
        for block in q.chunks_mut(BLOCK * 2) {
            quantize_block(Format::Bf16, block);
        }
        let mut payload = Vec::new();
        encode(&q, Format::Bf16, &mut zstd, &mut payload).unwrap();
        let mut out = vec![0u8; q.len()];
        for cut in [0, 3, 7, payload.len() - 1] {
            assert!(decode(&payload[..cut], &mut out, &mut unzstd).is_err());
        }
        let mut wrong_len = vec![0u8; q.len() + 256];
        assert!(decode(&payload, &mut wrong_len, &mut unzstd).is_err());
        let mut bad_format = payload.clone();
        bad_format[0] = 9;
        assert!(decode(&bad_format, &mut out, &mut unzstd).is_err());
    }
}
