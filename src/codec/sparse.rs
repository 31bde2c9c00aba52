//! A byte group that is nearly all zeros, stored as where its other bytes are and what they
//! hold. The top bytes of a delta against a base are such a group: the XOR of two checkpoints'
//! exponent bytes is zero wherever a weight stayed in its binade (98.6% of them in a 300-step
//! fine-tune), the top byte of their difference nearly always (99.97%). zstd codes those runs of
//! zeros as many short matches, which cost more to decode than the whole rest of the delta; here a decode is one fill with zeros and one store per
//! other byte, and the positions and values, each entropy-coded, take less room too.
//!
//! Stored: the count of non-zero bytes (u32 LE), the length of the unpacked list (u32 LE), then
//! the list compressed: each non-zero byte's distance from the end of the one before
//! (LEB128), then their values in order.

use super::group::{GroupCompressor, GroupDecompressor};
use super::{CodecError, varint};

/// A group with more non-zero bytes than one in this many is not stored this way: each of them
/// costs a decode its own store.
const MIN_ZEROS_PER_BYTE: usize = 10;

/// The list of positions and values while it is unpacked.
static LISTS: crate::buffer::ScratchPool = crate::buffer::ScratchPool::new(4);

fn bad(why: &str) -> CodecError {
    CodecError::Decompress(format!("sparse group: {why}"))
}

/// Whether a group of `len` bytes, `zeros` of them zero, may be stored sparse.
pub fn fits(len: usize, zeros: usize) -> bool {
    (len - zeros.min(len)) * MIN_ZEROS_PER_BYTE <= len
}

/// `group` stored sparse, or `None` when too many of its bytes are not zero.
pub fn encode(
    group: &[u8],
    compress: &mut GroupCompressor<'_>,
) -> Result<Option<Vec<u8>>, CodecError> {
    let count = group.iter().filter(|&&b| b != 0).count();
    if !fits(group.len(), group.len() - count) {
        return Ok(None);
    }
    let mut list = Vec::with_capacity(count * 2);
    let mut next = 0usize;
    for (i, _) in group.iter().enumerate().filter(|(_, b)| **b != 0) {
        varint::put(&mut list, (i - next) as u64);
        next = i + 1;
    }
    list.extend(group.iter().filter(|&&b| b != 0));
    let too_long = |_| CodecError::Compress("a sparse group over 4 GiB".into());
    let mut out = Vec::with_capacity(8 + list.len() / 2);
    out.extend_from_slice(&u32::try_from(count).map_err(too_long)?.to_le_bytes());
    out.extend_from_slice(&u32::try_from(list.len()).map_err(too_long)?.to_le_bytes());
    out.extend_from_slice(&compress(&list)?);
    Ok(Some(out))
}

/// Decodes a sparse group from its `stored` bytes into `out` (exactly the group's length).
pub fn decode(
    stored: &[u8],
    out: &mut [u8],
    decompress: &mut GroupDecompressor<'_>,
) -> Result<(), CodecError> {
    let word = |at: usize| -> Result<usize, CodecError> {
        let b = stored.get(at..at + 4).ok_or_else(|| bad("short"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (count, list_len) = (word(0)?, word(4)?);
    // No more non-zero bytes than `encode` stores this way, and each entry takes its value and
    // at most five bytes of distance: a member's claim of more is refused before anything is
    // allocated for it (the list is then at most 0.6 of the group).
    if count > out.len()
        || !fits(out.len(), out.len() - count)
        || list_len < 2 * count
        || list_len > 6 * count
    {
        return Err(bad("counts that no group of its length has"));
    }
    LISTS.with_len(list_len, |list| {
        if decompress(&stored[8..], list)? != list_len {
            return Err(bad("list of the wrong length"));
        }
        out.fill(0);
        let (gaps, values) = list.split_at(list_len - count);
        let (mut at, mut next) = (0usize, 0usize);
        for &value in values {
            let gap = varint::get(gaps, &mut at).map_err(|e| match e {
                varint::Unread::Short => bad("list ends early"),
                varint::Unread::TooLong => bad("a distance too long"),
            })?;
            let i = next + gap as usize;
            *out.get_mut(i)
                .ok_or_else(|| bad("a byte past the group's end"))? = value;
            next = i + 1;
        }
        if at != gaps.len() {
            return Err(bad("list of the wrong length"));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{group_zstd, zstd_decompress};

    fn sparse(len: usize, every: usize) -> Vec<u8> {
        let mut x: u32 = 99;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if ((x >> 8) as usize).is_multiple_of(every) {
                    (x >> 20) as u8 | 1
                } else {
                    0
                }
            })
            .collect()
    }

    #[test]
    fn a_group_of_mostly_zeros_round_trips_smaller_than_zstd_makes_it() {
        for (len, every) in [(0, 2), (1, 70), (65536, 70), (65536, 12), (300_000, 5000)] {
            let group = sparse(len, every);
            let stored = encode(&group, &mut group_zstd).unwrap().unwrap();
            let mut out = vec![7u8; len];
            decode(&stored, &mut out, &mut zstd_decompress).unwrap();
            assert!(out == group, "{len} bytes, 1 in {every}");
            if len >= 65536 {
                let zstd = group_zstd(&group).unwrap();
                assert!(
                    stored.len() < zstd.len(),
                    "{} vs {}",
                    stored.len(),
                    zstd.len()
                );
            }
        }
        // Long runs of zeros: distances of several bytes.
        let mut far = vec![0u8; 1 << 20];
        far[(1 << 20) - 1] = 5;
        far[3] = 1;
        let stored = encode(&far, &mut group_zstd).unwrap().unwrap();
        let mut out = vec![0u8; far.len()];
        decode(&stored, &mut out, &mut zstd_decompress).unwrap();
        assert!(out == far);
        // Too many bytes that are not zero: not stored this way.
        assert!(
            encode(&sparse(65536, 5), &mut group_zstd)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_damaged_sparse_group_is_refused() {
        let group = sparse(65536, 70);
        let stored = encode(&group, &mut group_zstd).unwrap().unwrap();
        let mut out = vec![0u8; group.len()];
        let mut damaged = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut s = stored.clone();
            f(&mut s);
            decode(&s, &mut out, &mut zstd_decompress).is_err()
        };
        assert!(damaged(&|s| s.truncate(6)));
        assert!(damaged(&|s| s[0] = s[0].wrapping_add(1)), "one entry more");
        assert!(damaged(&|s| s[..4].copy_from_slice(&u32::MAX.to_le_bytes())));
        assert!(damaged(
            &|s| s[4..8].copy_from_slice(&u32::MAX.to_le_bytes())
        ));
        assert!(damaged(&|s| s.truncate(s.len() - 1)));
        // More non-zero bytes than a sparse group holds: refused before its list is unpacked.
        let mut dense = stored.clone();
        let count = (group.len() / 5) as u32;
        dense[..4].copy_from_slice(&count.to_le_bytes());
        dense[4..8].copy_from_slice(&(2 * count).to_le_bytes());
        let e = decode(&dense, &mut out, &mut zstd_decompress).unwrap_err();
        assert!(e.to_string().contains("counts"), "{e}");
        // A group shorter than its positions reach.
        let mut short = vec![0u8; group.len() / 2];
        assert!(decode(&stored, &mut short, &mut zstd_decompress).is_err());
    }
}
