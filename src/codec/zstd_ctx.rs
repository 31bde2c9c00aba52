//! The zstd side of the codecs: each thread's compression contexts (one per tuning, reused
//! across chunks), how zstd is tuned for whole chunks and for byte groups, and each thread's
//! decompression context.

use super::CodecError;

thread_local! {
    /// zstd contexts of this thread, one per level, reused across chunks.
    static COMPRESSORS: std::cell::RefCell<Vec<(Tuning, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// How zstd is tuned for a kind of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tuning {
    /// A whole chunk at a level. At the fast levels (1-3) the search tables are sized as for
    /// 128 KiB inputs, which keeps them in cache and is faster on weights (whose gain comes from
    /// entropy coding, not long matches) at the same ratio.
    Chunk(i32),
    /// A byte group (a float exponent, a quantization scale): level 1 with a tiny match finder,
    /// so nearly everything is Huffman-coded literals. Measured on bf16 exponents against plain
    /// level 1: ratio 3.07x vs 2.78x, compression 3x faster, decompression 1.8x faster.
    Group,
}

pub(super) fn zstd_compress(raw: &[u8], tuning: Tuning) -> Result<Vec<u8>, CodecError> {
    use zstd::zstd_safe::CParameter;
    let fail = |e: std::io::Error| CodecError::Compress(e.to_string());
    COMPRESSORS.with(|cell| {
        let mut contexts = cell.borrow_mut();
        let at = match contexts.iter().position(|(t, _)| *t == tuning) {
            Some(i) => i,
            None => {
                let params: &[CParameter] = match tuning {
                    Tuning::Chunk(level) if level <= 3 => &[
                        CParameter::WindowLog(17),
                        CParameter::HashLog(16),
                        CParameter::ChainLog(16),
                    ],
                    Tuning::Chunk(_) => &[],
                    Tuning::Group => &[
                        CParameter::WindowLog(17),
                        CParameter::HashLog(6),
                        CParameter::MinMatch(7),
                    ],
                };
                let level = match tuning {
                    Tuning::Chunk(level) => level,
                    Tuning::Group => 1,
                };
                let mut c = zstd::bulk::Compressor::new(level).map_err(fail)?;
                for p in params {
                    c.set_parameter(*p).map_err(fail)?;
                }
                contexts.push((tuning, c));
                contexts.len() - 1
            }
        };
        contexts[at].1.compress(raw).map_err(fail)
    })
}

/// The byte groups' zstd, for the tests of the codecs that code groups (`group`, `fp8`).
#[cfg(test)]
pub(super) fn group_zstd(g: &[u8]) -> Result<Vec<u8>, CodecError> {
    zstd_compress(g, Tuning::Group)
}

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// zstd-decompresses `src` into `dst`, returning the bytes produced (never more than `dst`).
pub(super) fn zstd_decompress(src: &[u8], dst: &mut [u8]) -> Result<usize, CodecError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| CodecError::Decompress(e.to_string()))?,
            );
        }
        match slot.as_mut() {
            Some(d) => d
                .decompress_to_buffer(src, dst)
                .map_err(|e| CodecError::Decompress(e.to_string())),
            None => Err(CodecError::Decompress("no decompressor".into())),
        }
    })
}
