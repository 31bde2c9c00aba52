//! Where a file is cut into chunks. `fixed` cuts every `chunk_size` bytes. `tensor` reads the
//! layout of a safetensors, GGUF or PyTorch zip file and cuts on tensor boundaries: a large tensor gets chunks of its own, about `chunk_size` each; small neighbouring
//! tensors and headers are grouped so that no chunk is tiny. Each cut records what it holds, so
//! float tensors get the float codec and readers of one tensor decompress only its chunks.
//! Anything unrecognised, or a header that does not check out, falls back to fixed cuts.

mod by_tensor;
pub mod gguf;
pub mod safetensors;
pub mod torchzip;

pub use by_tensor::by_tensor;

use crate::codec::Content;
use serde::{Deserialize, Serialize};
use std::io;
use thiserror::Error;

/// The largest chunk size a store accepts.
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;
/// The smallest chunk size `pack` takes: below it a model becomes millions of chunk files (and
/// as many requests) for no better ratio or read.
pub const MIN_PACK_CHUNK_SIZE: u64 = 64 << 10;
/// The default chunk size.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkingError {
    #[error("chunk size must be at least 1 byte")]
    Zero,
    #[error("chunk size {0} is over the 1 GiB limit")]
    TooLarge(u64),
    #[error(
        "chunk size {0} is below 64KiB: smaller chunks make millions of chunk files for no gain"
    )]
    TooSmall(u64),
}

/// Why a file's layout could not be used.
#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("{0}")]
    Invalid(String),
    #[error("read error: {0}")]
    Io(#[from] io::Error),
}

/// Random access to the bytes of a file being laid out (a file, or a slice in tests).
pub trait ReadAt {
    fn len(&self) -> u64;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes in memory, as a `ReadAt`.
pub struct Bytes<'a>(pub &'a [u8]);

impl ReadAt for Bytes<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A file with its length, as a `ReadAt`.
pub struct FileAt {
    pub file: std::fs::File,
    pub len: u64,
}

impl ReadAt for FileAt {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
}

/// One tensor's bytes in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpan {
    pub name: String,
    pub dtype: String,
    /// Element width when the dtype is a float the float codec handles (2 or 4 bytes).
    pub float_width: Option<usize>,
    /// Bytes per quantization block, for block-quantized tensors (GGUF Q8_0, Q4_K, ...).
    pub block: Option<usize>,
    pub start: u64,
    pub end: u64,
}

/// Sorts spans by offset and refuses overlapping ones (`format` names the parser in the error).
pub(crate) fn sorted_disjoint(
    mut spans: Vec<TensorSpan>,
    format: &str,
) -> Result<Vec<TensorSpan>, LayoutError> {
    spans.sort_by_key(|s| (s.start, s.end));
    if let Some(w) = spans.windows(2).find(|w| w[1].start < w[0].end) {
        return Err(LayoutError::Invalid(format!(
            "{format}: {} and {} overlap",
            w[0].name, w[1].name
        )));
    }
    Ok(spans)
}

/// A tensor (or part of one) held by a chunk, as manifests record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorTag {
    pub name: String,
    pub dtype: String,
}

/// Float dtypes the float codec handles, by the names safetensors, GGUF and torch use.
pub fn dtype_float_width(dtype: &str) -> Option<usize> {
    match dtype {
        "BF16" | "F16" | "bfloat16" | "float16" | "half" => Some(2),
        "F32" | "float32" | "float" => Some(4),
        _ => None,
    }
}

/// How files are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Partition {
    /// Tensor boundaries where the format is recognised, fixed cuts otherwise.
    Tensor,
    /// Every `chunk_size` bytes.
    Fixed,
}

/// One chunk of a file: `len` bytes at `offset`, and what they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub offset: u64,
    pub len: u64,
    pub content: Content,
    pub tensors: Vec<TensorTag>,
}

impl Cut {
    fn bytes(offset: u64, len: u64) -> Cut {
        Cut {
            offset,
            len,
            content: Content::Bytes,
            tensors: Vec::new(),
        }
    }
}

/// A chunk size `pack` takes: at least `MIN_PACK_CHUNK_SIZE`, at most `MAX_CHUNK_SIZE`.
pub fn check_pack_chunk_size(chunk_size: u64) -> Result<(), ChunkingError> {
    if chunk_size < MIN_PACK_CHUNK_SIZE {
        return Err(ChunkingError::TooSmall(chunk_size));
    }
    check_chunk_size(chunk_size)
}

pub fn check_chunk_size(chunk_size: u64) -> Result<(), ChunkingError> {
    match chunk_size {
        0 => Err(ChunkingError::Zero),
        n if n > MAX_CHUNK_SIZE => Err(ChunkingError::TooLarge(n)),
        _ => Ok(()),
    }
}

/// Cuts a file of `size` bytes every `chunk_size` bytes.
pub fn fixed(size: u64, chunk_size: u64) -> Result<Vec<Cut>, ChunkingError> {
    check_chunk_size(chunk_size)?;
    let mut cuts = Vec::with_capacity(size.div_ceil(chunk_size) as usize);
    let mut offset = 0;
    while offset < size {
        let len = chunk_size.min(size - offset);
        cuts.push(Cut::bytes(offset, len));
        offset += len;
    }
    Ok(cuts)
}

/// The tensors of a recognised model file, or why none could be read.
pub fn layout(src: &dyn ReadAt) -> Result<Option<Vec<TensorSpan>>, LayoutError> {
    if gguf::looks_like(src) {
        return gguf::parse(src).map(Some);
    }
    if torchzip::looks_like(src) {
        return torchzip::parse(src).map(Some);
    }
    if safetensors::looks_like(src) {
        return safetensors::parse(src).map(Some);
    }
    Ok(None)
}

/// Cuts a file by `partition`; with `tensor`, falls back to fixed cuts (logging why) when the
/// layout is unknown or unusable.
pub fn plan(
    src: &dyn ReadAt,
    partition: Partition,
    chunk_size: u64,
    name: &str,
) -> Result<Vec<Cut>, ChunkingError> {
    check_chunk_size(chunk_size)?;
    if partition == Partition::Tensor {
        match layout(src) {
            Ok(Some(spans)) => return Ok(by_tensor(src.len(), &spans, chunk_size)),
            Ok(None) => {
                // Named as a model format but not one inside: worth a line (a damaged header).
                let named = [".safetensors", ".gguf", ".pt", ".pth"]
                    .iter()
                    .find(|ext| name.to_ascii_lowercase().ends_with(*ext));
                if let Some(ext) = named {
                    log::warn!(
                        "{name}: named {ext} but its header is not one; cutting it in fixed-size chunks"
                    );
                }
            }
            Err(e) => log::warn!("{name}: {e}; cutting it in fixed-size chunks"),
        }
    }
    fixed(src.len(), chunk_size)
}

#[cfg(test)]
mod tests {
    use super::by_tensor::tests::assert_tiles;
    use super::*;

    fn bytes_cut(offset: u64, len: u64) -> Cut {
        Cut::bytes(offset, len)
    }

    #[test]
    fn fixed_cuts_cover_the_file() {
        assert!(fixed(0, 4).unwrap().is_empty());
        assert_eq!(fixed(1, 4).unwrap(), vec![bytes_cut(0, 1)]);
        assert_eq!(fixed(4, 4).unwrap(), vec![bytes_cut(0, 4)]);
        assert_eq!(
            fixed(9, 4).unwrap(),
            vec![bytes_cut(0, 4), bytes_cut(4, 4), bytes_cut(8, 1)]
        );
        assert_eq!(fixed(9, 0), Err(ChunkingError::Zero));
        assert_eq!(
            fixed(9, MAX_CHUNK_SIZE + 1),
            Err(ChunkingError::TooLarge(MAX_CHUNK_SIZE + 1))
        );
    }

    #[test]
    fn safetensors_files_are_planned_by_tensor() {
        let img = safetensors::tests::image(&[
            ("w1", "BF16", vec![4096], vec![1; 8192]),
            ("w2", "F32", vec![4096], vec![2; 16384]),
            ("bias", "F32", vec![4], vec![3; 16]),
        ]);
        let cuts = plan(&Bytes(&img[..]), Partition::Tensor, 8192, "m").unwrap();
        assert_tiles(&cuts, img.len() as u64);
        assert!(cuts.iter().any(|c| c.content == Content::Floats(2)));
        assert!(cuts.iter().any(|c| c.content == Content::Floats(4)));
        // A broken header falls back to fixed cuts.
        let mut broken = img.clone();
        broken[20] = b'#';
        let cuts = plan(&Bytes(&broken[..]), Partition::Tensor, 8192, "m").unwrap();
        assert_eq!(cuts, fixed(broken.len() as u64, 8192).unwrap());
        assert_eq!(
            plan(&Bytes(&img[..]), Partition::Fixed, 8192, "m").unwrap(),
            fixed(img.len() as u64, 8192).unwrap()
        );
    }
}
