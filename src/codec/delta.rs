//! Decoding a delta with its base in one pass: the two payloads decoded side by side, a frame at
//! a time where both are in frames, and the base's bytes XORed into the delta's while both are
//! in the cache. Neither the base nor the delta is checked here: the caller hashes each piece
//! of the result as it is handed over and checks the whole against the chunk's own hash, which
//! only the delta's exact bytes with its base's exact bytes make.

use super::frames::{self, Table};
use super::{ChunkHeader, CodecError};

/// Which of the two payloads did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Base,
    Delta,
}

/// Where either is stored in one piece, the XOR and `each` go this many bytes at a time.
const PIECE: usize = 64 << 10;

/// A base's frames and, for a base stored in one piece, its whole bytes, while they are XORed in.
static SCRATCH: crate::buffer::ScratchPool = crate::buffer::ScratchPool::new(4);

/// Decodes the delta payload `delta` into `out` (the chunk's exact length) with the base payload
/// `base` (a chunk of the same length) XORed in, handing each piece of `out` to `each` once it
/// is final. The delta's frame table, if it is in frames, for the caller to check against the
/// delta's hash. Nothing is checked against a hash here.
pub fn decode_xor(
    base: (ChunkHeader, &[u8]),
    delta: (ChunkHeader, &[u8]),
    out: &mut [u8],
    each: &mut dyn FnMut(&[u8]),
) -> Result<Option<Table>, (Side, CodecError)> {
    let (base_header, base_payload) = base;
    let (delta_header, delta_payload) = delta;
    for (side, (header, payload)) in [(Side::Base, base), (Side::Delta, delta)] {
        if header.payload_len != payload.len() as u64 {
            let found = payload.len() as u64;
            let expected = header.payload_len;
            return Err((side, CodecError::WrongLength { expected, found }));
        }
    }
    if base_header.frame_log == 0 || base_header.frame_log != delta_header.frame_log {
        return whole(base, delta, out, each);
    }
    let base_table = Table::parse(&base_header, base_payload).map_err(|e| (Side::Base, e))?;
    let delta_table = Table::parse(&delta_header, delta_payload).map_err(|e| (Side::Delta, e))?;
    if base_table.len() != delta_table.len() {
        return Err((Side::Base, CodecError::BadHeader));
    }
    SCRATCH.with_len(frames::FRAME as usize, |scratch| {
        for i in 0..delta_table.len() {
            let at = delta_table.output(i);
            let dst = &mut out[at.start as usize..at.end as usize];
            let src = &mut scratch[..dst.len()];
            let stored = frame(base_payload, &base_table, i);
            base_table
                .decode_frame(base_header.codec, i, stored, src)
                .map_err(|e| (Side::Base, e))?;
            let stored = frame(delta_payload, &delta_table, i);
            delta_table
                .decode_frame(delta_header.codec, i, stored, dst)
                .map_err(|e| (Side::Delta, e))?;
            super::xor_into(dst, src);
            each(dst);
        }
        Ok(Some(delta_table))
    })
}

/// `decode_xor` where either payload is stored in one piece: the base decoded whole into a
/// scratch buffer, the delta into `out`, then XORed and handed over a piece at a time.
fn whole(
    (base_header, base_payload): (ChunkHeader, &[u8]),
    (delta_header, delta_payload): (ChunkHeader, &[u8]),
    out: &mut [u8],
    each: &mut dyn FnMut(&[u8]),
) -> Result<Option<Table>, (Side, CodecError)> {
    SCRATCH.with_len(out.len(), |base| {
        super::decode_into(base_header, base_payload, base).map_err(|e| (Side::Base, e))?;
        let table = super::decode_with_table(delta_header, delta_payload, out)
            .map_err(|e| (Side::Delta, e))?;
        for (o, b) in out.chunks_mut(PIECE).zip(base.chunks(PIECE)) {
            super::xor_into(o, b);
            each(o);
        }
        Ok(table)
    })
}

/// Frame `i`'s stored bytes in `payload`, by its `table`.
fn frame<'p>(payload: &'p [u8], table: &Table, i: usize) -> &'p [u8] {
    let at = table.stored(&(i..i + 1));
    &payload[at.start as usize..at.end as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecChoice, Content, HEADER_LEN, encode, xor_into};

    fn image(raw: &[u8], choice: CodecChoice, content: Content) -> (ChunkHeader, Vec<u8>) {
        let (_, image) = encode(raw, choice, 3, content).unwrap();
        (ChunkHeader::parse(&image).unwrap(), image)
    }

    #[test]
    fn a_delta_and_its_base_decode_to_the_chunk_in_one_pass_however_each_is_stored() {
        for len in [1000, 300_000, 5 << 20] {
            let base = crate::codec::tests::floaty(len);
            let mut chunk = base.clone();
            for b in chunk.iter_mut().step_by(97) {
                *b ^= 0x11;
            }
            let mut delta = chunk.clone();
            xor_into(&mut delta, &base);
            // Every way the two can be stored: in frames or not, compressed or raw.
            let bases = [
                image(&base, CodecChoice::Auto, Content::Floats(2)),
                image(&base, CodecChoice::None, Content::Bytes),
                image(&base, CodecChoice::Auto, Content::Blocks(4)),
            ];
            let (dh, di) = image(&delta, CodecChoice::Auto, Content::Floats(2));
            for (bh, bi) in &bases {
                let mut out = vec![0u8; len];
                let mut seen = Vec::new();
                let table = decode_xor(
                    (*bh, &bi[HEADER_LEN..]),
                    (dh, &di[HEADER_LEN..]),
                    &mut out,
                    &mut |piece| seen.extend_from_slice(piece),
                )
                .unwrap();
                assert_eq!(out, chunk, "{len} bytes, base {:?}", bh.codec);
                assert_eq!(seen, chunk, "every piece handed over once, in order");
                assert_eq!(table.is_some(), dh.frame_log != 0);
            }
            // A damaged payload is named by its side.
            let (bh, bi) = &bases[0];
            let mut cut = vec![0u8; len];
            let e = decode_xor(
                (*bh, &bi[HEADER_LEN..bi.len() - 1]),
                (dh, &di[HEADER_LEN..]),
                &mut cut,
                &mut |_| {},
            );
            assert_eq!(e.unwrap_err().0, Side::Base);
            let e = decode_xor(
                (*bh, &bi[HEADER_LEN..]),
                (dh, &di[HEADER_LEN..di.len() - 1]),
                &mut cut,
                &mut |_| {},
            );
            assert_eq!(e.unwrap_err().0, Side::Delta);
        }
    }
}
