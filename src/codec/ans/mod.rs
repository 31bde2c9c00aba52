//! An order-0 entropy coder for one byte group: interleaved rANS (range asymmetric numeral
//! systems) with byte frequencies scaled to 2^12. It codes within a fraction of a percent of the
//! group's order-0 entropy, where a Huffman code (zstd's literals) loses 1-2% on the exponent
//! bytes of float weights, whose commonest values are far from powers of two in probability.
//!
//! Stream: the lowest and highest byte present (u8 each), then each frequency from the lowest to
//! the highest as a LEB128 varint (0: absent; they add up to 2^12), then the final states (u32
//! LE; 8, 16 or 32 of them by the group's length, `lanes_for`), the lengths in words of all but
//! the last stream (LEB128; a stream per eight states), then the streams of renormalisation
//! words (u16 LE), each in the order the decoder reads it. Byte i of the group is decoded from
//! state i % lanes, after which that state, if it fell below 2^16, takes in the next word of its
//! stream. The states do not wait on each other, nor the streams: on x86-64 with AVX2 they are
//! decoded eight at a time (`avx2`), elsewhere one at a time, to the same bytes.
//!
//! Decoding takes any bytes: a stream that is not one this encoder made fails, or decodes to
//! bytes that the frame's hash then rejects; it never reads out of bounds and never loops.

use super::{CodecError, varint};

#[cfg(target_arch = "x86_64")]
mod avx2;

/// log2 of the sum of the frequencies.
const SCALE_LOG: u32 = 12;
const SCALE: u32 = 1 << SCALE_LOG;
/// The lower bound of a normalised state; states stay in [LOW, 2^32).
const LOW: u32 = 1 << 16;
/// The least frequency of a byte present (see `normalise`).
const MIN_FREQ: u32 = 2;

fn bad(why: &str) -> CodecError {
    CodecError::Decompress(format!("entropy-coded group: {why}"))
}

/// Byte frequencies of `data` scaled to add up to `SCALE`, every byte present at least 2 (so
/// that the encoder's division is one multiply for every frequency; a byte seen once in 2^12 or
/// fewer then takes a slot more than its share, which costs the others a few bits): the
/// rounding that costs the fewest bits for these counts.
fn normalise(counts: &[u64; 256], total: u64) -> [u32; 256] {
    let mut freqs = [0u32; 256];
    let mut sum = 0u32;
    for (f, &c) in freqs.iter_mut().zip(counts) {
        if c > 0 {
            *f = ((c * u64::from(SCALE) + total / 2) / total).max(u64::from(MIN_FREQ)) as u32;
            sum += *f;
        }
    }
    // Each step moves one unit where it costs (or gains) the fewest bits: count × log2 of the
    // change of the frequency.
    while sum != SCALE {
        let grow = sum < SCALE;
        let cost = |s: usize| {
            let (c, f) = (counts[s] as f64, f64::from(freqs[s]));
            if grow {
                -c * ((f + 1.0) / f).log2()
            } else if freqs[s] > MIN_FREQ {
                c * (f / (f - 1.0)).log2()
            } else {
                f64::INFINITY
            }
        };
        let best = (0..256)
            .filter(|&s| counts[s] > 0)
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)));
        let Some(best) = best else { break };
        if grow {
            freqs[best] += 1;
            sum += 1;
        } else {
            freqs[best] -= 1;
            sum -= 1;
        }
    }
    freqs
}

/// How many times each byte value occurs in `data`.
pub(super) fn count(data: &[u8]) -> [u64; 256] {
    // Four tables counted in turn: with one, a run of equal bytes (the exponents of neighbouring
    // weights) makes each increment wait for the previous one to the same counter. Measured: the
    // count took 70% of the grouping codec's encode time, a fifth of `pack`'s CPU.
    let mut tables = [[0u64; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        for (t, &b) in tables.iter_mut().zip(q) {
            t[b as usize] += 1;
        }
    }
    for &b in quads.remainder() {
        tables[0][b as usize] += 1;
    }
    let mut counts = [0u64; 256];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = tables.iter().map(|t| t[i]).sum();
    }
    counts
}

/// The varint at `stream[*at..]`.
fn get_varint(stream: &[u8], at: &mut usize) -> Result<u64, CodecError> {
    varint::get(stream, at).map_err(|e| match e {
        varint::Unread::Short => bad("short stream"),
        varint::Unread::TooLong => bad("bad varint"),
    })
}

/// How one byte value is coded: the state past which it must shrink first (its frequency ×
/// 2^(32 - SCALE_LOG), so that the coded state stays under 2^32), x / frequency as a multiply
/// by 2^64 / frequency rounded up (exact for x < 2^32 and frequencies from 2 to 2^12), its
/// frequency and where its slots start.
#[derive(Clone, Copy, Default)]
struct Coder {
    bound: u64,
    magic: u64,
    freq: u32,
    start: u32,
}

impl Coder {
    fn for_freqs(freqs: &[u32; 256]) -> [Coder; 256] {
        let mut coders = [Coder::default(); 256];
        let mut at = 0;
        for (c, &f) in coders.iter_mut().zip(freqs) {
            if f > 0 {
                *c = Coder {
                    bound: u64::from(f) << (32 - SCALE_LOG),
                    magic: u64::MAX / u64::from(f) + 1,
                    freq: f,
                    start: at,
                };
            }
            at += f;
        }
        coders
    }

    /// Codes one byte into `x`, first writing its low word to `words[*len]` if it must shrink
    /// (no branch: the word is always written, and `len` counts it only where it is kept).
    #[inline(always)]
    fn put(&self, x: &mut u32, words: &mut [u16], len: &mut usize) {
        let out = u64::from(*x) >= self.bound;
        words[*len] = *x as u16;
        *len += usize::from(out);
        let y = if out { *x >> 16 } else { *x };
        let q = ((u128::from(y) * u128::from(self.magic)) >> 64) as u32;
        *x = (q << SCALE_LOG) + (y - q * self.freq) + self.start;
    }
}

/// States whose words one stream holds, in turn: one vector of the AVX2 decoder.
const WIDE: usize = 8;

/// How many states code a group of `n` bytes: 32 for a frame's exponents, bf16 or fp32 (four
/// vectors whose work overlaps: 1.45 G bytes/s here, where 16 states, two vectors, decode
/// 0.8), fewer for shorter groups, where each state's four bytes at the end would weigh more.
fn lanes_for(n: usize) -> usize {
    match n {
        24576.. => 32,
        12288.. => 16,
        _ => 8,
    }
}

/// Codes `data`, whose bytes' counts are `counts` (`count`), and appends the stream to `out`
/// (nothing for no bytes).
pub fn encode(data: &[u8], counts: &[u64; 256], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let freqs = normalise(counts, data.len() as u64);
    let lo = freqs.iter().position(|&f| f > 0).unwrap_or(0);
    let hi = freqs.iter().rposition(|&f| f > 0).unwrap_or(0);
    out.push(lo as u8);
    out.push(hi as u8);
    for &f in &freqs[lo..=hi] {
        varint::put(out, u64::from(f));
    }
    let coders = Coder::for_freqs(&freqs);
    let lanes = lanes_for(data.len());
    // Per stream (WIDE lanes): at most one word per byte, and one more written and not kept.
    let room = data.len().div_ceil(lanes) * WIDE + 1;
    let mut words = vec![vec![0u16; room]; lanes / WIDE];
    let mut lens = [0usize; MAX_LANES / WIDE];
    let mut states = [LOW; MAX_LANES];
    // Backwards, as rANS codes (the decoder reads forwards): the partial block at the end
    // first, then whole blocks, each lane's byte in turn from the last lane down, so that each
    // stream's words come out in the exact reverse of the order the decoder takes them in.
    let whole = data.len() / lanes * lanes;
    for (i, &b) in data.iter().enumerate().skip(whole).rev() {
        let lane = i - whole;
        let k = lane / WIDE;
        coders[b as usize].put(&mut states[lane], &mut words[k], &mut lens[k]);
    }
    for block in data[..whole].chunks_exact(lanes).rev() {
        for (k, (xs, bs)) in states[..lanes]
            .chunks_exact_mut(WIDE)
            .zip(block.chunks_exact(WIDE))
            .enumerate()
            .rev()
        {
            let (w, len) = (&mut words[k], &mut lens[k]);
            for (x, &b) in xs.iter_mut().zip(bs).rev() {
                coders[b as usize].put(x, w, len);
            }
        }
    }
    for x in &states[..lanes] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    for &len in &lens[..lanes / WIDE - 1] {
        varint::put(out, len as u64);
    }
    for (w, &len) in words.iter().zip(&lens) {
        out.reserve(len * 2);
        for w in w[..len].iter().rev() {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

/// The most states a stream has.
const MAX_LANES: usize = 32;

/// The decoder's table: per slot, the byte it decodes to (bits 24-31), where the slot is among
/// that byte's slots (12-23), and the byte's frequency less one (0-11): one load per byte.
type Slots = [u32; SCALE as usize];

fn entry_freq(e: u32) -> u32 {
    (e & 0xfff) + 1
}

fn entry_bias(e: u32) -> u32 {
    e >> 12 & 0xfff
}

/// A decoder at some byte of the group: the states, and per stream where its next word is and
/// where its words end (in words from the start of the streams).
struct Cursor {
    lanes: usize,
    states: [u32; MAX_LANES],
    next: [usize; MAX_LANES / WIDE],
    ends: [usize; MAX_LANES / WIDE],
}

/// Decodes `dst` (bytes `from..` of the group) one byte at a time from the streams' `words`
/// (u16 LE); a stream that runs out reads zeros.
fn decode_scalar(slots: &Slots, words: &[u8], at: &mut Cursor, dst: &mut [u8], from: usize) {
    for (i, o) in dst.iter_mut().enumerate().skip(from) {
        let lane = i % at.lanes;
        let x = &mut at.states[lane];
        let e = slots[(*x & (SCALE - 1)) as usize];
        *o = (e >> 24) as u8;
        *x = entry_freq(e) * (*x >> SCALE_LOG) + entry_bias(e);
        if *x < LOW {
            let k = lane / WIDE;
            let next = at.next[k];
            let w = match words.get(next * 2..next * 2 + 2) {
                Some(w) if next < at.ends[k] => u16::from_le_bytes([w[0], w[1]]),
                _ => 0,
            };
            *x = *x << 16 | u32::from(w);
            at.next[k] += 1;
        }
    }
}

/// Decodes a stream into `dst`, exactly its length.
pub fn decode(stream: &[u8], dst: &mut [u8]) -> Result<(), CodecError> {
    decode_with(stream, dst, true)
}

/// Decodes two streams of groups of one length at once, each into its `dst`: their states'
/// work interleaves (eight vectors in flight, where one group has four), 2.3 against 1.55 G
/// bytes/s here with AVX-512's registers. The same bytes as `decode` of each.
pub fn decode_pair(a: (&[u8], &mut [u8]), b: (&[u8], &mut [u8])) -> Result<(), CodecError> {
    decode_pair_with(a, b, true)
}

/// `decode_pair`, with AVX-512's registers where the CPU has them and `wide` allows.
fn decode_pair_with(
    a: (&[u8], &mut [u8]),
    b: (&[u8], &mut [u8]),
    wide: bool,
) -> Result<(), CodecError> {
    let ((sa, da), (sb, db)) = (a, b);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = wide;
    #[cfg(target_arch = "x86_64")]
    if da.len() == db.len() && lanes_for(da.len()) == MAX_LANES && avx2::available() {
        let mut pa = prepare(sa, da)?;
        let mut pb = prepare(sb, db)?;
        let (ga, gb) = ((&*pa.slots, pa.words), (&*pb.slots, pb.words));
        // SAFETY: the CPU has what `avx2` needs, checked just above; both have 32 lanes.
        let from =
            unsafe { avx2::decode_pair(&ga, &mut pa.cursor, da, &gb, &mut pb.cursor, db, wide) };
        finish(&mut pa, da, from, true)?;
        return finish(&mut pb, db, from, true);
    }
    decode(sa, da)?;
    decode(sb, db)
}

/// A stream read up to its words: the decoder's table, its cursor at the first byte, and the
/// words.
struct Prepared<'s> {
    slots: Box<Slots>,
    cursor: Cursor,
    words: &'s [u8],
}

/// `decode`, with vectors where the CPU has them and `vectors` allows (the tests check that
/// both ways give the same bytes).
fn decode_with(stream: &[u8], dst: &mut [u8], vectors: bool) -> Result<(), CodecError> {
    if dst.is_empty() {
        return if stream.is_empty() {
            Ok(())
        } else {
            Err(bad("bytes for an empty group"))
        };
    }
    let mut p = prepare(stream, dst)?;
    finish(&mut p, dst, 0, vectors)
}

/// Reads `stream`'s table, states and lengths for a group of `dst.len()` bytes (not none).
fn prepare<'s>(stream: &'s [u8], dst: &[u8]) -> Result<Prepared<'s>, CodecError> {
    let (lo, hi) = match stream {
        [lo, hi, ..] if lo <= hi => (*lo, *hi),
        _ => return Err(bad("bad frequency table")),
    };
    let mut at = 2;
    let mut slots: Box<Slots> = Box::new([0; SCALE as usize]);
    let mut start = 0u32;
    for s in lo..=hi {
        let f = get_varint(stream, &mut at)?;
        if f > u64::from(SCALE - start) {
            return Err(bad("frequencies add up to more than the scale"));
        }
        let f = f as u32;
        let range = start as usize..(start + f) as usize;
        for (k, e) in slots[range].iter_mut().enumerate() {
            *e = u32::from(s) << 24 | (k as u32) << 12 | (f - 1);
        }
        start += f;
    }
    if start != SCALE {
        return Err(bad("frequencies do not add up to the scale"));
    }
    let lanes = lanes_for(dst.len());
    let streams = lanes / WIDE;
    let mut cursor = Cursor {
        lanes,
        states: [0; MAX_LANES],
        next: [0; MAX_LANES / WIDE],
        ends: [0; MAX_LANES / WIDE],
    };
    for x in &mut cursor.states[..lanes] {
        let b = stream.get(at..at + 4).ok_or_else(|| bad("short states"))?;
        *x = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        at += 4;
    }
    let mut lens = [0usize; MAX_LANES / WIDE];
    for len in &mut lens[..streams - 1] {
        *len = get_varint(stream, &mut at)? as usize;
    }
    let words = &stream[at..];
    let given: usize = lens.iter().sum();
    if !words.len().is_multiple_of(2) || given > words.len() / 2 {
        return Err(bad("stream lengths do not match its bytes"));
    }
    lens[streams - 1] = words.len() / 2 - given;
    let mut end = 0;
    for (k, len) in lens[..streams].iter().enumerate() {
        cursor.next[k] = end;
        end += len;
        cursor.ends[k] = end;
    }
    Ok(Prepared {
        slots,
        cursor,
        words,
    })
}

/// Decodes the rest of `dst` from byte `from` (a whole number of blocks) and checks that the
/// stream ends where its words do.
fn finish(
    p: &mut Prepared<'_>,
    dst: &mut [u8],
    from: usize,
    vectors: bool,
) -> Result<(), CodecError> {
    let (slots, words) = (&*p.slots, p.words);
    #[cfg(target_arch = "x86_64")]
    let from = if vectors && avx2::available() {
        // SAFETY: the CPU has what `avx2` needs, checked just above.
        from + unsafe { avx2::decode_blocks(slots, words, &mut p.cursor, &mut dst[from..]) }
    } else {
        from
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vectors;
    decode_scalar(slots, words, &mut p.cursor, dst, from);
    let lanes = p.cursor.lanes;
    if p.cursor.next != p.cursor.ends || p.cursor.states[..lanes].iter().any(|&x| x != LOW) {
        return Err(bad("stream does not end where its bytes do"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8]) -> usize {
        let mut enc = Vec::new();
        encode(data, &count(data), &mut enc);
        for vectors in [true, false] {
            let mut out = vec![0u8; data.len()];
            decode_with(&enc, &mut out, vectors).unwrap();
            assert_eq!(out, data, "{} bytes, vectors {vectors}", data.len());
        }
        enc.len()
    }

    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Bytes with a skewed distribution like a float group's exponents.
    fn skewed(n: usize, seed: u64) -> Vec<u8> {
        let mut r = xorshift(seed);
        (0..n)
            .map(|_| (120 + (r() % 8) as u8).saturating_sub((r() % 5) as u8 * (r() % 3) as u8))
            .collect()
    }

    #[test]
    fn round_trips_every_shape() {
        // Every count of lanes, at and next to where it changes, and partial blocks.
        for n in [
            1, 2, 3, 4, 5, 7, 8, 9, 100, 4095, 4096, 4097, 12287, 12288, 49151, 49152, 65541,
        ] {
            round_trip(&skewed(n, n as u64 + 1));
            round_trip(&vec![9u8; n]);
        }
        let all: Vec<u8> = (0..=255u8).cycle().take(256 * 40 + 3).collect();
        round_trip(&all);
        let mut r = xorshift(5);
        let random: Vec<u8> = (0..100_000).map(|_| r() as u8).collect();
        round_trip(&random);
        // A byte seen once among many: its frequency is kept at 1, not rounded away.
        let mut rare = vec![3u8; 1 << 20];
        rare[12345] = 200;
        round_trip(&rare);
    }

    #[test]
    fn codes_within_half_a_percent_of_the_order_0_entropy() {
        let data = skewed(1 << 16, 9);
        let counts = count(&data);
        let n = data.len() as f64;
        let bits: f64 = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| -(c as f64) * (c as f64 / n).log2())
            .sum();
        let stored = round_trip(&data) as f64;
        assert!(
            stored < bits / 8.0 * 1.005,
            "{stored} bytes against an entropy of {:.0}",
            bits / 8.0
        );
    }

    #[test]
    fn two_streams_decoded_together_give_each_its_own_bytes_damaged_or_not() {
        let mut r = xorshift(91);
        // Pairs of 32 lanes at one length (decoded together), of two lengths, and of fewer lanes.
        for (na, nb) in [
            (65536, 65536),
            (24576, 24576),
            (60_001, 60_001),
            (65536, 40_000),
            (9000, 9000),
        ] {
            let (a, b) = (skewed(na, 5), skewed(nb, 6));
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            encode(&a, &count(&a), &mut ea);
            encode(&b, &count(&b), &mut eb);
            for round in 0..300 {
                let (mut ba, mut bb) = (ea.clone(), eb.clone());
                // The first round undamaged; then one stream or both.
                let hits = [
                    round > 0 && !r().is_multiple_of(3),
                    round > 0 && !r().is_multiple_of(3),
                ];
                for (bad, hit) in [&mut ba, &mut bb].into_iter().zip(hits) {
                    if hit {
                        let i = (r() % bad.len() as u64) as usize;
                        bad[i] ^= 1 << (r() % 8);
                    }
                }
                let wide = round % 2 == 0;
                let (mut oa, mut ob) = (vec![0u8; na], vec![0u8; nb]);
                let pair =
                    decode_pair_with((&ba, &mut oa), (&bb, &mut ob), wide).map(|()| (oa, ob));
                let (mut sa, mut sb) = (vec![0u8; na], vec![0u8; nb]);
                let each = decode_with(&ba, &mut sa, false)
                    .and_then(|()| decode_with(&bb, &mut sb, false))
                    .map(|()| (sa, sb));
                match (pair, each) {
                    (Ok(p), Ok(e)) => assert!(
                        p == e,
                        "{na}/{nb} wide {wide}: the pair decoded other bytes"
                    ),
                    (Err(_), Err(_)) => {}
                    (p, e) => panic!("{na}/{nb}: pair ok {}, each ok {}", p.is_ok(), e.is_ok()),
                }
                if round == 0 {
                    let mut oa = vec![0u8; na];
                    let mut ob = vec![0u8; nb];
                    decode_pair((&ea, &mut oa), (&eb, &mut ob)).unwrap();
                    assert!(oa == a && ob == b);
                }
            }
        }
    }

    #[test]
    fn damaged_streams_fail_or_decode_to_something_else_never_panic() {
        let mut r = xorshift(77);
        // 8, 16 and 32 lanes.
        for n in [10_000, 20_000, 60_000] {
            let data = skewed(n, 3);
            let mut enc = Vec::new();
            encode(&data, &count(&data), &mut enc);
            let mut out = vec![0u8; data.len()];
            for cut in [0, 1, 2, 5, 20, enc.len() - 1] {
                assert!(decode(&enc[..cut], &mut out).is_err(), "cut {cut}");
            }
            for _ in 0..700 {
                let mut bad = enc.clone();
                for _ in 0..1 + r() % 4 {
                    let i = (r() % bad.len() as u64) as usize;
                    bad[i] ^= 1 << (r() % 8);
                }
                let scalar = decode_with(&bad, &mut out, false).map(|_| out.clone());
                let vector = decode_with(&bad, &mut out, true).map(|_| out.clone());
                match (scalar, vector) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a, b, "the two decoders differ on a damaged stream");
                        assert_ne!(a, data, "a damaged stream decoded to the original");
                    }
                    (Err(_), Err(_)) => {}
                    _ => panic!("one decoder took a damaged stream the other refused"),
                }
            }
        }
        let data = skewed(10_000, 3);
        let mut out = vec![0u8; data.len()];
        // Frequencies past the scale, or short of it.
        assert!(decode(&[0, 0, 0x80, 0x40], &mut out).is_err());
        assert!(decode(&[0, 1, 1, 1], &mut out).is_err());
        assert!(decode(&[], &mut []).is_ok());
        assert!(decode(&[1], &mut []).is_err());
    }
}
