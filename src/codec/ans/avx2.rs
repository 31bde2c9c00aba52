//! The rANS decoder eight states at a time with AVX2: a block of a group's bytes (one per
//! state) is a vector of eight states per stream, each of which looks its slots up with one
//! gather, and the states that fall below 2^16 take the next words of their stream in lane order
//! (a shuffle chosen by which did). The streams' vectors do not wait on each other, so their
//! work overlaps. The same bytes, states and words as `decode_scalar`, which finishes what
//! this leaves.

use super::{Cursor, SCALE, SCALE_LOG, Slots, WIDE};
use std::arch::x86_64::*;

/// For each set of lanes that take a word (a bit per lane), which of the eight words loaded
/// each lane takes: its rank among the lanes that take one.
static RANKS: [[u32; 8]; 256] = ranks();

const fn ranks() -> [[u32; 8]; 256] {
    let mut t = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let mut k = 0;
        let mut rank = 0;
        while k < 8 {
            t[m][k] = rank;
            if m >> k & 1 == 1 {
                rank += 1;
            }
            k += 1;
        }
        m += 1;
    }
    t
}

/// Whether this CPU has what `decode_blocks` uses: AVX2 and POPCNT.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("popcnt")
}

/// Decodes whole blocks of `dst` while every stream surely has the words a block may take of
/// it (eight), and returns how many bytes it decoded; `at` is left where the next byte starts.
///
/// # Safety
/// The CPU must have AVX2 and POPCNT (`available`).
#[target_feature(enable = "avx2,popcnt")]
pub(super) unsafe fn decode_blocks(
    slots: &Slots,
    words: &[u8],
    at: &mut Cursor,
    dst: &mut [u8],
) -> usize {
    match at.lanes / WIDE {
        1 => blocks1(slots, words, at, dst),
        2 => blocks2(slots, words, at, dst),
        _ => blocks4(slots, words, at, dst),
    }
}

/// One step of one stream's vector of states `$x` (words at `$next`): stores its eight bytes at
/// `$out` and leaves the states and the stream's position after them.
macro_rules! step {
    ($c:ident, $words:ident, $x:ident, $next:ident, $out:expr) => {{
        let slot = _mm256_and_si256($x, $c.mask);
        // SAFETY: every index is below SCALE (masked), the length of `slots`.
        let e = unsafe { _mm256_i32gather_epi32::<4>($c.slots.as_ptr().cast(), slot) };
        let freq = _mm256_add_epi32(_mm256_and_si256(e, $c.low12), $c.one);
        let bias = _mm256_and_si256(_mm256_srli_epi32::<12>(e), $c.low12);
        let y = _mm256_add_epi32(
            _mm256_mullo_epi32(freq, _mm256_srli_epi32::<{ SCALE_LOG as i32 }>($x)),
            bias,
        );
        // Below 2^16: the top half is zero.
        let takes = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(y), $c.zero);
        let m = _mm256_movemask_ps(_mm256_castsi256_ps(takes)) as usize;
        // SAFETY: `$next + 8 <= its end <= words.len() / 2` (the loop's condition, and the
        // check before it): the 16 bytes loaded are the stream's (little-endian words, as x86
        // reads them). `RANKS[m]` holds eight u32.
        let (w, rank) = unsafe {
            (
                _mm256_cvtepu16_epi32(_mm_loadu_si128($words.as_ptr().add($next * 2).cast())),
                _mm256_loadu_si256(RANKS[m].as_ptr().cast()),
            )
        };
        let w = _mm256_permutevar8x32_epi32(w, rank);
        $x = _mm256_blendv_epi8(y, _mm256_or_si256(_mm256_slli_epi32::<16>(y), w), takes);
        $next += m.count_ones() as usize;
        let b = _mm256_shuffle_epi8(_mm256_srli_epi32::<24>(e), $c.low_bytes);
        let b = _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
        let o: &mut [u8] = $out;
        // SAFETY: `o` is eight bytes; the low eight bytes of `b` are stored, unaligned.
        unsafe { _mm_storel_epi64(o.as_mut_ptr().cast(), b) };
    }};
}

/// What every step uses.
struct Consts<'a> {
    slots: &'a Slots,
    mask: __m256i,
    low12: __m256i,
    one: __m256i,
    zero: __m256i,
    low_bytes: __m256i,
}

/// One function per count of streams (1, 2 or 4), each stream's states and position in locals
/// of their own, so that the streams' steps overlap.
macro_rules! blocks {
    ($name:ident, $s:literal, [$($k:literal: $x:ident, $n:ident),+]) => {
        #[target_feature(enable = "avx2,popcnt")]
        fn $name(slots: &Slots, words: &[u8], at: &mut Cursor, dst: &mut [u8]) -> usize {
            let lanes = $s * WIDE;
            let count = dst.len() / lanes;
            // The words must be in `words` for the loads: a member's lengths are checked
            // against the stream's bytes before this is called, and again here.
            if at.ends[..$s].iter().any(|&e| e > words.len() / 2) {
                return 0;
            }
            let c = consts(slots);
            $(
                // SAFETY: eight u32 of the states; unaligned load.
                let mut $x = unsafe {
                    _mm256_loadu_si256(at.states[$k * WIDE..].as_ptr().cast())
                };
                let mut $n = at.next[$k];
            )+
            let mut done = 0;
            while done < count $(&& $n + WIDE <= at.ends[$k])+ {
                let out = &mut dst[done * lanes..(done + 1) * lanes];
                $(step!(c, words, $x, $n, &mut out[$k * WIDE..($k + 1) * WIDE]);)+
                done += 1;
            }
            $(
                // SAFETY: eight u32 of the states; unaligned store.
                unsafe {
                    _mm256_storeu_si256(at.states[$k * WIDE..].as_mut_ptr().cast(), $x)
                };
                at.next[$k] = $n;
            )+
            done * lanes
        }
    };
}

blocks!(blocks1, 1, [0: x0, n0]);
blocks!(blocks2, 2, [0: x0, n0, 1: x1, n1]);
blocks!(blocks4, 4, [0: x0, n0, 1: x1, n1, 2: x2, n2, 3: x3, n3]);

/// A group's decoder table and words.
pub(super) type Group<'a> = (&'a Slots, &'a [u8]);

/// `decode_blocks` of two groups of 32 states and one length at once, a step of each of their
/// eight vectors in turn; returns how many bytes of each it decoded (the same count for both).
/// With AVX-512 the compiler has 32 vector registers for the sixteen states and what the steps
/// keep (2.3 G bytes/s here); with AVX2's 16 it spills some (1.9).
///
/// `wide` asks for AVX-512's registers, where the CPU has them (the tests take both ways).
///
/// # Safety
/// The CPU must have AVX2 and POPCNT (`available`); both cursors must have 32 lanes.
pub(super) unsafe fn decode_pair(
    a: &Group<'_>,
    ca: &mut Cursor,
    da: &mut [u8],
    b: &Group<'_>,
    cb: &mut Cursor,
    db: &mut [u8],
    wide: bool,
) -> usize {
    if wide && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
        // SAFETY: checked just above; AVX2 and POPCNT by the caller.
        unsafe { pair_wide(a, ca, da, b, cb, db) }
    } else {
        // SAFETY: AVX2 and POPCNT by the caller.
        unsafe { pair_narrow(a, ca, da, b, cb, db) }
    }
}

/// One function per set of registers the compiler may use.
macro_rules! pair {
    ($name:ident, $features:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name(
            a: &Group<'_>,
            ca: &mut Cursor,
            da: &mut [u8],
            b: &Group<'_>,
            cb: &mut Cursor,
            db: &mut [u8],
        ) -> usize {
            let lanes = 4 * WIDE;
            let count = da.len().min(db.len()) / lanes;
            let ((sa, wa), (sb, wb)) = (*a, *b);
            // As in `blocks!`: the words must be in the streams' bytes.
            if ca.lanes != lanes
                || cb.lanes != lanes
                || ca.ends[..4].iter().any(|&e| e > wa.len() / 2)
                || cb.ends[..4].iter().any(|&e| e > wb.len() / 2)
            {
                return 0;
            }
            let (c, d) = (consts(sa), consts(sb));
            // SAFETY: eight u32 of the states per load; unaligned.
            let load = |cur: &Cursor, k: usize| unsafe {
                _mm256_loadu_si256(cur.states[k * WIDE..].as_ptr().cast())
            };
            let (mut x0, mut x1, mut x2, mut x3) =
                (load(ca, 0), load(ca, 1), load(ca, 2), load(ca, 3));
            let (mut y0, mut y1, mut y2, mut y3) =
                (load(cb, 0), load(cb, 1), load(cb, 2), load(cb, 3));
            let [mut n0, mut n1, mut n2, mut n3] = ca.next;
            let [mut m0, mut m1, mut m2, mut m3] = cb.next;
            let mut done = 0;
            while done < count
                && n0 + WIDE <= ca.ends[0]
                && n1 + WIDE <= ca.ends[1]
                && n2 + WIDE <= ca.ends[2]
                && n3 + WIDE <= ca.ends[3]
                && m0 + WIDE <= cb.ends[0]
                && m1 + WIDE <= cb.ends[1]
                && m2 + WIDE <= cb.ends[2]
                && m3 + WIDE <= cb.ends[3]
            {
                let oa = &mut da[done * lanes..(done + 1) * lanes];
                let ob = &mut db[done * lanes..(done + 1) * lanes];
                step!(c, wa, x0, n0, &mut oa[..WIDE]);
                step!(d, wb, y0, m0, &mut ob[..WIDE]);
                step!(c, wa, x1, n1, &mut oa[WIDE..2 * WIDE]);
                step!(d, wb, y1, m1, &mut ob[WIDE..2 * WIDE]);
                step!(c, wa, x2, n2, &mut oa[2 * WIDE..3 * WIDE]);
                step!(d, wb, y2, m2, &mut ob[2 * WIDE..3 * WIDE]);
                step!(c, wa, x3, n3, &mut oa[3 * WIDE..]);
                step!(d, wb, y3, m3, &mut ob[3 * WIDE..]);
                done += 1;
            }
            for (cur, xs, ns) in [
                (ca, [x0, x1, x2, x3], [n0, n1, n2, n3]),
                (cb, [y0, y1, y2, y3], [m0, m1, m2, m3]),
            ] {
                for (k, x) in xs.into_iter().enumerate() {
                    // SAFETY: eight u32 of the states; unaligned store.
                    unsafe { _mm256_storeu_si256(cur.states[k * WIDE..].as_mut_ptr().cast(), x) };
                }
                cur.next = ns;
            }
            done * lanes
        }
    };
}

pair!(pair_narrow, "avx2,popcnt");
pair!(pair_wide, "avx2,popcnt,avx512f,avx512vl");

#[target_feature(enable = "avx2,popcnt")]
fn consts(slots: &Slots) -> Consts<'_> {
    Consts {
        slots,
        mask: _mm256_set1_epi32((SCALE - 1) as i32),
        low12: _mm256_set1_epi32(0xfff),
        one: _mm256_set1_epi32(1),
        zero: _mm256_setzero_si256(),
        // Byte 0 of each u32, gathered into the low four bytes of each 128-bit half.
        low_bytes: _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        ),
    }
}
