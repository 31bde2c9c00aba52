//! LEB128 varints, as the codecs' own tables write small numbers: seven bits a byte, lowest
//! first, the top bit set on every byte but the last. Read back from bytes a member holds: at
//! most five bytes (35 bits), never past the end.

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unread {
    /// The bytes end inside it.
    Short,
    /// Its five bytes all say another follows.
    TooLong,
}

/// Appends `v`.
pub(super) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `bytes[*at..]`, moving `at` past it.
#[inline]
pub(super) fn get(bytes: &[u8], at: &mut usize) -> Result<u64, Unread> {
    let mut v = 0u64;
    for shift in [0, 7, 14, 21, 28] {
        let b = *bytes.get(*at).ok_or(Unread::Short)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Unread::TooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_cut_or_too_long() {
        let values = [
            0,
            1,
            0x7f,
            0x80,
            300,
            4096,
            u64::from(u32::MAX),
            (1 << 35) - 1,
        ];
        let mut out = Vec::new();
        for v in values {
            put(&mut out, v);
        }
        let mut at = 0;
        for v in values {
            assert_eq!(get(&out, &mut at), Ok(v));
        }
        assert_eq!(at, out.len());
        assert_eq!(get(&[0x80, 0x80], &mut 0), Err(Unread::Short));
        assert_eq!(get(&[0xff; 6], &mut 0), Err(Unread::TooLong));
    }
}
