//! The byte-grouping codec for float tensors. Each element is first rotated left by one bit so
//! that the sign moves to the lowest bit and the exponent fills the top byte exactly (bf16 and
//! fp32; fp16 gets its 5 exponent bits in the top byte too). Then byte i of every element goes
//! to group i, and each group is stored with zstd (level 1) or raw, whichever is smaller: the
//! exponent group, which carries ~2.7 bits of information per byte, shrinks to a third, while the
//! mantissa groups are near-random and stay raw. fp32 tensors holding bf16 values have two
//! all-zero groups, which cost nothing.
//!
//! Payload: `width` (u8), then per group its mode (u8: 0 raw, 1 zstd) and stored length (u64 LE),
//! then the groups in order (lowest byte first), then the `raw_len % width` trailing bytes raw.

use super::CodecError;

const RAW: u8 = 0;
const ZSTD: u8 = 1;
/// A group is kept compressed only when that saves at least this fraction.
const MIN_SAVING: f64 = 0.02;

/// Order-0 entropy of `data` in bits per byte: a group above 8 × (1 − MIN_SAVING) bits cannot
/// be compressed enough to keep, so it is stored raw without trying (the mantissa groups).
fn entropy_bits(data: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Compresses one group (zstd, tuned for it).
pub type GroupCompressor<'a> = dyn FnMut(&[u8]) -> Result<Vec<u8>, CodecError> + 'a;
/// Decompresses one group into a slice of exactly its length, returning the bytes produced.
pub type GroupDecompressor<'a> = dyn FnMut(&[u8], &mut [u8]) -> Result<usize, CodecError> + 'a;

fn table_len(width: usize) -> usize {
    1 + width * 9
}

/// Splits `raw` into `width` byte groups (after the rotation), one after the other in `groups`.
fn split(raw: &[u8], width: usize, groups: &mut [u8]) {
    let n = raw.len() / width;
    match width {
        2 => {
            let (lo, hi) = groups.split_at_mut(n);
            for ((c, l), h) in raw.chunks_exact(2).zip(lo.iter_mut()).zip(hi.iter_mut()) {
                let v = u16::from_le_bytes([c[0], c[1]]).rotate_left(1);
                *l = v as u8;
                *h = (v >> 8) as u8;
            }
        }
        _ => {
            let (b0, rest) = groups.split_at_mut(n);
            let (b1, rest) = rest.split_at_mut(n);
            let (b2, b3) = rest.split_at_mut(n);
            for (i, c) in raw.chunks_exact(4).enumerate() {
                let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]])
                    .rotate_left(1)
                    .to_le_bytes();
                b0[i] = v[0];
                b1[i] = v[1];
                b2[i] = v[2];
                b3[i] = v[3];
            }
        }
    }
}

/// Interleaves the groups back into elements and undoes the rotation. No branch per element.
fn join(groups: &[&[u8]], out: &mut [u8]) {
    match groups {
        [lo, hi] => {
            for ((o, &l), &h) in out.chunks_exact_mut(2).zip(lo.iter()).zip(hi.iter()) {
                let v = (u16::from(h) << 8 | u16::from(l)).rotate_right(1);
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        [b0, b1, b2, b3] => {
            let n = b0.len().min(b1.len()).min(b2.len()).min(b3.len());
            for (i, o) in out.chunks_exact_mut(4).take(n).enumerate() {
                let v = u32::from_le_bytes([b0[i], b1[i], b2[i], b3[i]]).rotate_right(1);
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {}
    }
}

/// Encodes `raw` as elements of `width` bytes (2 or 4).
pub fn encode(
    raw: &[u8],
    width: usize,
    compress: &mut GroupCompressor<'_>,
) -> Result<Vec<u8>, CodecError> {
    if width != 2 && width != 4 {
        return Err(CodecError::Compress(format!(
            "float codec needs 2- or 4-byte elements, not {width}"
        )));
    }
    let n = raw.len() / width;
    let mut groups = vec![0u8; n * width];
    split(raw, width, &mut groups);
    let mut table = Vec::with_capacity(table_len(width));
    table.push(width as u8);
    let mut body = Vec::with_capacity(raw.len());
    for g in groups.chunks_exact(n.max(1)).take(width) {
        let worth_trying = n > 0 && entropy_bits(g) < 8.0 * (1.0 - MIN_SAVING);
        let packed = if worth_trying {
            compress(g)?
        } else {
            Vec::new()
        };
        if worth_trying && (packed.len() as f64) <= g.len() as f64 * (1.0 - MIN_SAVING) {
            table.push(ZSTD);
            table.extend_from_slice(&(packed.len() as u64).to_le_bytes());
            body.extend_from_slice(&packed);
        } else {
            table.push(RAW);
            table.extend_from_slice(&(g.len() as u64).to_le_bytes());
            body.extend_from_slice(g);
        }
    }
    if n == 0 {
        // No whole element: an empty table entry per group keeps the layout uniform.
        table.resize(table_len(width), 0);
    }
    table.extend_from_slice(&body);
    table.extend_from_slice(&raw[n * width..]);
    Ok(table)
}

/// Decodes a float-codec payload into `out` (the chunk's exact length). `scratch` is reused
/// between calls; `decompress` fills a slice exactly or fails.
pub fn decode(
    payload: &[u8],
    out: &mut [u8],
    scratch: &mut Vec<u8>,
    decompress: &mut GroupDecompressor<'_>,
) -> Result<(), CodecError> {
    let bad = |why: &str| CodecError::Decompress(format!("float codec: {why}"));
    let width = *payload.first().ok_or_else(|| bad("empty payload"))? as usize;
    if width != 2 && width != 4 {
        return Err(bad("bad element width"));
    }
    let n = out.len() / width;
    let tail = out.len() - n * width;
    let table = payload
        .get(1..table_len(width))
        .ok_or_else(|| bad("short table"))?;
    let mut entries = Vec::with_capacity(width);
    let mut total = 0u64;
    for e in table.chunks_exact(9) {
        let mut len = [0u8; 8];
        len.copy_from_slice(&e[1..]);
        let len = u64::from_le_bytes(len);
        if e[0] > ZSTD || (e[0] == RAW && len != n as u64) || len > payload.len() as u64 {
            return Err(bad("bad group entry"));
        }
        total += len;
        entries.push((e[0], len as usize));
    }
    if table_len(width) as u64 + total + tail as u64 != payload.len() as u64 {
        return Err(bad("group lengths do not add up to the payload"));
    }
    let zstd_groups = entries.iter().filter(|(m, _)| *m == ZSTD).count();
    scratch.resize(zstd_groups * n, 0);
    let mut at = table_len(width);
    let mut unpacked = scratch.chunks_exact_mut(n.max(1));
    let mut groups: Vec<&[u8]> = Vec::with_capacity(width);
    for (mode, len) in entries {
        let stored = &payload[at..at + len];
        at += len;
        if mode == RAW {
            groups.push(stored);
        } else {
            let dst = unpacked.next().ok_or_else(|| bad("group buffer"))?;
            if decompress(stored, dst)? != n {
                return Err(bad("group decompressed to the wrong length"));
            }
            groups.push(dst);
        }
    }
    join(&groups, &mut out[..n * width]);
    out[n * width..].copy_from_slice(&payload[at..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd1(d: &[u8]) -> Result<Vec<u8>, CodecError> {
        zstd::bulk::compress(d, 1).map_err(|e| CodecError::Compress(e.to_string()))
    }

    fn unzstd(src: &[u8], dst: &mut [u8]) -> Result<usize, CodecError> {
        zstd::bulk::decompress_to_buffer(src, dst)
            .map_err(|e| CodecError::Decompress(e.to_string()))
    }

    fn round_trip(raw: &[u8], width: usize) -> Vec<u8> {
        let enc = encode(raw, width, &mut zstd1).unwrap();
        let mut out = vec![0u8; raw.len()];
        decode(&enc, &mut out, &mut Vec::new(), &mut unzstd).unwrap();
        assert_eq!(out, raw, "width {width}, {} bytes", raw.len());
        enc
    }

    /// bf16 of normal(0, 0.02)-like values.
    fn bf16(n: usize) -> Vec<u8> {
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
        for width in [2, 4] {
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

    #[test]
    fn entropy_estimate() {
        assert_eq!(entropy_bits(&[7; 1000]), 0.0);
        let all: Vec<u8> = (0..=255).cycle().take(256 * 100).collect();
        assert!((entropy_bits(&all) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn damaged_payloads_fail_cleanly() {
        let raw = bf16(5000);
        let enc = encode(&raw, 2, &mut zstd1).unwrap();
        let mut out = vec![0u8; raw.len()];
        for cut in [0, 1, 5, 19, enc.len() - 1] {
            assert!(
                decode(&enc[..cut], &mut out, &mut Vec::new(), &mut unzstd).is_err(),
                "cut {cut}"
            );
        }
        let mut bad = enc.clone();
        bad[0] = 3;
        assert!(decode(&bad, &mut out, &mut Vec::new(), &mut unzstd).is_err());
        let mut bad = enc.clone();
        bad[2] = 0xff; // a group length far past the payload
        assert!(decode(&bad, &mut out, &mut Vec::new(), &mut unzstd).is_err());
        let mut wrong_len = vec![0u8; raw.len() - 2];
        assert!(decode(&enc, &mut wrong_len, &mut Vec::new(), &mut unzstd).is_err());
    }
}
