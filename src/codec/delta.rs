//! Deltas against a base chunk: how a delta is made from a chunk and its base and undone
//! (`DeltaOp`), and a delta decoded with its base in one pass: the two payloads decoded side by
//! side, a frame at a time where both are in frames, and the base's bytes applied to the delta's
//! while both are in the cache. Neither the base nor the delta is checked here: the caller hashes
//! each piece of the result as it is handed over and checks the whole against the chunk's own
//! hash, which only the delta's exact bytes with its base's exact bytes make.

use super::frames::{self, Table};
use super::{ChunkHeader, CodecError, xor_into};
use serde::{Deserialize, Serialize};

/// How a delta's bytes are made from a chunk and its base. Floats that a fine-tune moved a little
/// differ in their low bits: as integers the difference is small, where the XOR flips every bit
/// below the highest that changed (a carry). Measured on a MiniLM fine-tune, the byte groups'
/// order-0 bound: fp32 1.99x as XOR, 2.49x as differences; bf16 6.28x and 7.07x.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeltaOp {
    /// The XOR of the two (chunks that are not floats of one width).
    #[default]
    Xor,
    /// Each 2-byte element's difference from the base's (wrapping, little-endian), zigzagged so
    /// that small differences of either sign are small numbers; trailing bytes XORed.
    Diff16,
    /// The same for 4-byte elements.
    Diff32,
}

impl DeltaOp {
    /// The op for a chunk of floats of `width` bytes.
    pub fn for_floats(width: usize) -> DeltaOp {
        match width {
            2 => DeltaOp::Diff16,
            4 => DeltaOp::Diff32,
            _ => DeltaOp::Xor,
        }
    }

    pub fn is_xor(&self) -> bool {
        *self == DeltaOp::Xor
    }

    /// Bytes per element (1 for the XOR).
    pub fn width(self) -> usize {
        match self {
            DeltaOp::Xor => 1,
            DeltaOp::Diff16 => 2,
            DeltaOp::Diff32 => 4,
        }
    }

    /// Turns `chunk` (of `base`'s length) into its delta against `base`.
    pub fn make(self, chunk: &mut [u8], base: &[u8]) {
        self.each(chunk, base, true)
    }

    /// Turns `delta` (of `base`'s length) back into the chunk it was made from.
    pub fn apply(self, delta: &mut [u8], base: &[u8]) {
        self.each(delta, base, false)
    }

    /// Makes (`make`) or undoes each whole element of `out` against the base's, in place; the
    /// trailing bytes (and every byte, for the XOR) XORed.
    fn each(self, out: &mut [u8], base: &[u8], make: bool) {
        let whole = out.len().min(base.len()) / self.width() * self.width();
        let (head, tail) = out.split_at_mut(whole);
        let base_head = &base[..whole];
        match (self, make) {
            (DeltaOp::Xor, _) => xor_into(head, base_head),
            (DeltaOp::Diff16, true) => words(head, base_head, u16::diff),
            (DeltaOp::Diff16, false) => words(head, base_head, u16::undiff),
            (DeltaOp::Diff32, true) => words(head, base_head, u32::diff),
            (DeltaOp::Diff32, false) => words(head, base_head, u32::undiff),
        }
        xor_into(tail, &base[whole..]);
    }
}

/// A little-endian word of 2 or 4 bytes, and its difference from a base's: the two's-complement
/// difference zigzagged, a number that is small when the difference is small, of either sign
/// (0, -1, 1, -2, ... as 0, 1, 2, 3, ...).
trait Word: Copy + Default {
    const BYTES: usize;
    fn load(b: &[u8]) -> Self;
    fn store(self, b: &mut [u8]);
    /// `self`'s difference from `base`, zigzagged.
    fn diff(self, base: Self) -> Self;
    /// The word whose `diff` from `base` is `self`.
    fn undiff(self, base: Self) -> Self;
}

macro_rules! word {
    ($t:ty, $top:expr) => {
        impl Word for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn load(b: &[u8]) -> $t {
                let mut w = [0u8; std::mem::size_of::<$t>()];
                w.copy_from_slice(&b[..Self::BYTES]);
                <$t>::from_le_bytes(w)
            }
            fn store(self, b: &mut [u8]) {
                b.copy_from_slice(&self.to_le_bytes());
            }
            fn diff(self, base: $t) -> $t {
                let d = self.wrapping_sub(base);
                (d << 1) ^ (0 as $t).wrapping_sub(d >> $top)
            }
            fn undiff(self, base: $t) -> $t {
                base.wrapping_add((self >> 1) ^ (0 as $t).wrapping_sub(self & 1))
            }
        }
    };
}

word!(u16, 15);
word!(u32, 31);

/// `f` on each word of `out` (whole words) with the base's, in place: sixteen at a time through
/// arrays, which the compiler vectorizes (word by word through the byte slices it does not: 1.9
/// against 32 GB/s for 2-byte words, measured in the cache).
fn words<W: Word>(out: &mut [u8], base: &[u8], f: impl Fn(W, W) -> W) {
    const LANES: usize = 16;
    let block = LANES * W::BYTES;
    let mut outs = out.chunks_exact_mut(block);
    let mut bases = base.chunks_exact(block);
    for (o, b) in (&mut outs).zip(&mut bases) {
        let (mut d, mut w) = ([W::default(); LANES], [W::default(); LANES]);
        for k in 0..LANES {
            d[k] = W::load(&o[k * W::BYTES..]);
            w[k] = W::load(&b[k * W::BYTES..]);
        }
        for k in 0..LANES {
            f(d[k], w[k]).store(&mut o[k * W::BYTES..(k + 1) * W::BYTES]);
        }
    }
    let (o, b) = (outs.into_remainder(), bases.remainder());
    for (o, b) in o.chunks_exact_mut(W::BYTES).zip(b.chunks_exact(W::BYTES)) {
        f(W::load(o), W::load(b)).store(o);
    }
}

/// Which of the two payloads did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Base,
    Delta,
}

/// Where either is stored in one piece, `op` and `each` go this many bytes at a time (a multiple
/// of every op's width).
const PIECE: usize = 64 << 10;

/// A base's frames and, for a base stored in one piece, its whole bytes, while they are XORed in.
static SCRATCH: crate::buffer::ScratchPool = crate::buffer::ScratchPool::new(4);

/// Decodes the delta payload `delta` into `out` (the chunk's exact length) with the base payload
/// `base` (a chunk of the same length) applied by `op`, handing each piece of `out` to `each`
/// once it is final. The delta's frame table, if it is in frames, for the caller to check
/// against the delta's hash. Nothing is checked against a hash here.
pub fn decode_with_base(
    op: DeltaOp,
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
        return whole(op, base, delta, out, each);
    }
    let base_table = Table::parse(&base_header, base_payload).map_err(|e| (Side::Base, e))?;
    let delta_table = Table::parse(&delta_header, delta_payload).map_err(|e| (Side::Delta, e))?;
    if base_table.len() != delta_table.len() || base_header.raw_len != delta_header.raw_len {
        return Err((Side::Base, CodecError::BadHeader));
    }
    // A step of frames at a time (two whole ones, their entropy-coded groups together), as
    // `frames::decode_whole` goes.
    SCRATCH.with_len(2 * frames::FRAME as usize, |scratch| {
        for step in delta_table.steps() {
            let at = delta_table.outputs(&step);
            let dst = &mut out[at.start as usize..at.end as usize];
            let src = &mut scratch[..dst.len()];
            base_table
                .decode_step(base_header.codec, &step, base_payload, src)
                .map_err(|e| (Side::Base, e))?;
            delta_table
                .decode_step(delta_header.codec, &step, delta_payload, dst)
                .map_err(|e| (Side::Delta, e))?;
            op.apply(dst, src);
            each(dst);
        }
        Ok(Some(delta_table))
    })
}

/// `decode_with_base` where either payload is stored in one piece: the base decoded whole into
/// a scratch buffer, the delta into `out`, then applied and handed over a piece at a time.
fn whole(
    op: DeltaOp,
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
            op.apply(o, b);
            each(o);
        }
        Ok(table)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecChoice, Content, HEADER_LEN, encode};

    fn image(raw: &[u8], choice: CodecChoice, content: Content) -> (ChunkHeader, Vec<u8>) {
        let (_, image) = encode(raw, choice, 3, content).unwrap();
        (ChunkHeader::parse(&image).unwrap(), image)
    }

    #[test]
    fn every_op_undoes_itself_at_every_length_and_value() {
        let extremes: Vec<u8> = [0u8, 1, 0x7f, 0x80, 0xff].repeat(40);
        for op in [DeltaOp::Xor, DeltaOp::Diff16, DeltaOp::Diff32] {
            for len in [0, 1, 2, 3, 5, 8, 199] {
                let chunk = &extremes[..len];
                let base: Vec<u8> = extremes[1..=len].to_vec();
                let mut delta = chunk.to_vec();
                op.make(&mut delta, &base);
                op.apply(&mut delta, &base);
                assert_eq!(delta, chunk, "{op:?}, {len} bytes");
            }
        }
        // Small differences of either sign are small numbers.
        let (base, up, down) = (
            1000u16.to_le_bytes(),
            1001u16.to_le_bytes(),
            999u16.to_le_bytes(),
        );
        for (chunk, want) in [(up, 2u16), (down, 1)] {
            let mut d = chunk.to_vec();
            DeltaOp::Diff16.make(&mut d, &base);
            assert_eq!(d, want.to_le_bytes());
        }
    }

    #[test]
    fn a_delta_and_its_base_decode_to_the_chunk_in_one_pass_however_each_is_stored() {
        for (len, op) in [
            (1001, DeltaOp::Diff16),
            (300_000, DeltaOp::Xor),
            (300_002, DeltaOp::Diff32),
            (5 << 20, DeltaOp::Diff16),
        ] {
            let base = crate::codec::tests::floaty(len);
            let mut chunk = base.clone();
            for b in chunk.iter_mut().step_by(97) {
                *b ^= 0x11;
            }
            let mut delta = chunk.clone();
            op.make(&mut delta, &base);
            // Every way the two can be stored: in frames or not, compressed or raw.
            let bases = [
                image(&base, CodecChoice::Auto, Content::Floats(2)),
                image(&base, CodecChoice::None, Content::Bytes),
                image(&base, CodecChoice::Auto, Content::Blocks(4)),
            ];
            let (dh, di) = image(&delta, CodecChoice::Auto, Content::Ints(op.width().max(2)));
            for (bh, bi) in &bases {
                let mut out = vec![0u8; len];
                let mut seen = Vec::new();
                let table = decode_with_base(
                    op,
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
            let e = decode_with_base(
                op,
                (*bh, &bi[HEADER_LEN..bi.len() - 1]),
                (dh, &di[HEADER_LEN..]),
                &mut cut,
                &mut |_| {},
            );
            assert_eq!(e.unwrap_err().0, Side::Base);
            let e = decode_with_base(
                op,
                (*bh, &bi[HEADER_LEN..]),
                (dh, &di[HEADER_LEN..di.len() - 1]),
                &mut cut,
                &mut |_| {},
            );
            assert_eq!(e.unwrap_err().0, Side::Delta);
        }
    }
}
