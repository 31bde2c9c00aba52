//! Where a file is cut into chunks. `fixed` cuts every `chunk_size` bytes. `tensor` reads the
//! layout of a safetensors, GGUF or PyTorch zip file and cuts on tensor boundaries: a large tensor gets chunks of its own, about `chunk_size` each; small neighbouring
//! tensors and headers are grouped so that no chunk is tiny. Each cut records what it holds, so
//! float tensors get the float codec and readers of one tensor decompress only its chunks.
//! Anything unrecognised, or a header that does not check out, falls back to fixed cuts.

pub mod gguf;
pub mod safetensors;
pub mod torchzip;

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

/// What a run of bytes holds while cuts are being assembled.
#[derive(Debug, Clone)]
struct Piece {
    start: u64,
    end: u64,
    tensor: Option<(Content, TensorTag)>,
}

/// Cuts on tensor boundaries. `spans` must be sorted, non-overlapping and inside `size`.
pub fn by_tensor(size: u64, spans: &[TensorSpan], chunk_size: u64) -> Vec<Cut> {
    let groups = group_pieces(pieces(size, spans, chunk_size), chunk_size);
    // A group of nothing but empty tensors has no bytes to store.
    groups
        .iter()
        .filter(|g| group_span(g) > 0)
        .map(|g| make_cut(g[0].start, g[g.len() - 1].end, g))
        .collect()
}

/// The bytes from the first piece of `g` to the end of its last.
fn group_span(g: &[Piece]) -> u64 {
    g.first().zip(g.last()).map_or(0, |(f, l)| l.end - f.start)
}

/// The file as pieces: gaps (headers, padding) and tensors, large tensors split into
/// ~chunk_size parts whose length is a whole number of elements.
fn pieces(size: u64, spans: &[TensorSpan], chunk_size: u64) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut at = 0;
    for s in spans {
        if s.start > at {
            pieces.push(Piece {
                start: at,
                end: s.start,
                tensor: None,
            });
        }
        let tag = TensorTag {
            name: s.name.clone(),
            dtype: s.dtype.clone(),
        };
        let len = s.end - s.start;
        let grouping = match (s.float_width, s.block) {
            (Some(w), _) => Content::Floats(w),
            (None, Some(b)) if b >= 2 => Content::Blocks(b),
            _ => Content::Bytes,
        };
        let width = unit(grouping) as u64;
        let parts = len.div_ceil(chunk_size).max(1);
        // Whole elements, and never past the largest chunk a reader accepts.
        let part =
            ((len.div_ceil(parts)).div_ceil(width) * width).min(MAX_CHUNK_SIZE / width * width);
        let mut p = s.start;
        while p < s.end || (p == s.start && len == 0) {
            let e = (p + part.max(1)).min(s.end);
            pieces.push(Piece {
                start: p,
                end: e,
                tensor: Some((grouping, tag.clone())),
            });
            if e == p {
                break;
            }
            p = e;
        }
        at = at.max(s.end);
    }
    if at < size {
        pieces.push(Piece {
            start: at,
            end: size,
            tensor: None,
        });
    }
    pieces
}

/// Pieces grouped into chunks.
fn group_pieces(pieces: Vec<Piece>, chunk_size: u64) -> Vec<Vec<Piece>> {
    // Group: a piece of at least half a chunk stands alone; smaller neighbours share a chunk up
    // to chunk_size. A small gap between two large pieces (a zip record header, padding) joins
    // the chunk before it rather than making a tiny chunk of its own.
    let mut groups: Vec<Vec<Piece>> = Vec::new();
    let mut group: Vec<Piece> = Vec::new();
    for piece in pieces {
        let len = piece.end - piece.start;
        if len == 0 {
            if let Some((_, tag)) = &piece.tensor {
                // An empty tensor has no bytes to hold; name it in the current group.
                group.push(Piece {
                    start: piece.start,
                    end: piece.start,
                    tensor: Some((Content::Bytes, tag.clone())),
                });
            }
            continue;
        }
        let small_gap = piece.tensor.is_none() && len * 16 < chunk_size;
        if small_gap
            && group_span(&group) == 0
            && let Some(prev) = groups.last_mut().filter(|g| {
                group_span(g) + len <= (chunk_size + chunk_size / 8).min(MAX_CHUNK_SIZE)
            })
        {
            prev.push(piece);
            continue;
        }
        if len * 2 >= chunk_size {
            groups.push(std::mem::take(&mut group));
            groups.push(vec![piece]);
            continue;
        }
        // One codec per chunk: a piece of other content than the group so far, large enough to
        // matter, starts a chunk of its own kind (a header and an integer tensor in front of a
        // float tensor made all of it plain bytes: 547 KB with zstd where the float codec took
        // MiniLM's position embeddings to 430 KB).
        if other_kind(&group, &piece, chunk_size) || group_span(&group) + len > chunk_size {
            groups.push(std::mem::take(&mut group));
        }
        group.push(piece);
    }
    groups.push(group);
    groups
}

/// Bytes per element of a grouping (1 for plain bytes).
fn unit(content: Content) -> usize {
    match content {
        Content::Floats(w) | Content::Blocks(w) | Content::Ints(w) => w.max(1),
        Content::Fp8(f) => f.width(),
        Content::Bytes => 1,
    }
}

/// Bytes of one content that matter beside another: a sixteenth of a chunk, and at least 16 KiB
/// (below that a chunk of its own saves less than its manifest entry and file cost).
fn matters(len: u64, chunk_size: u64) -> bool {
    len * 16 >= chunk_size && len >= 16 << 10
}

/// Whether `piece` joining `group` would store bytes that matter as other content than their
/// own: floats as plain bytes behind a header and an integer tensor, or the reverse.
fn other_kind(group: &[Piece], piece: &Piece, chunk_size: u64) -> bool {
    let (Some(first), Some(last)) = (group.first(), group.last()) else {
        return false;
    };
    let (piece_matters, group_matters) = (
        matters(piece.end - piece.start, chunk_size),
        matters(last.end - first.start, chunk_size),
    );
    if !piece_matters && !group_matters {
        return false;
    }
    let together = content_over(first.start, piece.end, group.iter().chain([piece]));
    (piece_matters && together != content_over(piece.start, piece.end, [piece]))
        || (group_matters && together != content_over(first.start, last.end, group))
}

/// A cut over `[start, end)` holding `pieces`, tagged with their tensors.
fn make_cut(start: u64, end: u64, pieces: &[Piece]) -> Cut {
    let mut tensors: Vec<TensorTag> = Vec::new();
    for (_, tag) in pieces.iter().filter_map(|p| p.tensor.as_ref()) {
        if tensors.last() != Some(tag) {
            tensors.push(tag.clone());
        }
    }
    Cut {
        offset: start,
        len: end - start,
        content: content_over(start, end, pieces),
        tensors,
    }
}

/// How `[start, end)` holding `pieces` is stored: grouped content (floats of one width, or
/// quantization blocks of one size) when every byte that is not a small header belongs to such
/// tensors, aligned to their element; plain bytes otherwise.
fn content_over<'a>(start: u64, end: u64, pieces: impl IntoIterator<Item = &'a Piece>) -> Content {
    let mut grouping: Option<Content> = None;
    let mut grouped_bytes = 0;
    let mut uniform = true;
    for p in pieces {
        let Some((content, _)) = &p.tensor else {
            continue;
        };
        if p.end == p.start {
            continue;
        }
        if *content == Content::Bytes
            || grouping.is_some_and(|g| g != *content)
            || !(p.start - start).is_multiple_of(unit(*content) as u64)
        {
            uniform = false;
        }
        grouping = Some(*content);
        grouped_bytes += p.end - p.start;
    }
    match grouping {
        Some(g) if uniform && grouped_bytes * 8 >= (end - start) * 7 => g,
        _ => Content::Bytes,
    }
}

#[cfg(test)]
mod tests {
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

    fn span(name: &str, dtype: &str, start: u64, end: u64) -> TensorSpan {
        TensorSpan {
            name: name.into(),
            dtype: dtype.into(),
            float_width: dtype_float_width(dtype),
            block: (dtype == "Q8_0").then_some(34),
            start,
            end,
        }
    }

    /// Cuts tile the file exactly.
    fn assert_tiles(cuts: &[Cut], size: u64) {
        let mut at = 0;
        for c in cuts {
            assert_eq!(c.offset, at, "{cuts:?}");
            assert!(c.len > 0);
            at += c.len;
        }
        assert_eq!(at, size);
    }

    #[test]
    fn large_tensors_get_their_own_chunks_small_ones_are_grouped() {
        let k = 1024;
        // header 64 bytes, two small tensors, one big bf16 tensor of 10 KiB, one small int tensor.
        let spans = vec![
            span("a", "F32", 64, 64 + 100 * 4),
            span("b", "F32", 464, 464 + 200),
            span("big", "BF16", 1024, 1024 + 10 * k),
            span("ids", "I64", 11 * k, 11 * k + 80),
        ];
        let size = 11 * k + 80;
        let cuts = by_tensor(size, &spans, 4 * k);
        assert_tiles(&cuts, size);
        // The header, a, b (and the padding up to big) share the first chunk.
        assert_eq!(cuts[0].offset, 0);
        assert_eq!(
            cuts[0]
                .tensors
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        // big is split into 3 chunks of ~3.4 KiB, each its own, each float16-coded.
        let big: Vec<&Cut> = cuts
            .iter()
            .filter(|c| c.tensors.iter().any(|t| t.name == "big"))
            .collect();
        assert_eq!(big.len(), 3);
        for c in &big {
            assert_eq!(c.tensors.len(), 1);
            assert_eq!(c.content, Content::Floats(2));
            assert_eq!(c.len % 2, 0);
            assert!(c.offset >= 1024 && c.offset + c.len <= 11 * k);
        }
        assert_eq!(cuts.last().unwrap().tensors[0].name, "ids");
        assert_eq!(cuts.last().unwrap().content, Content::Bytes);
    }

    #[test]
    fn floats_that_matter_never_share_a_chunk_with_a_header_and_an_integer_tensor() {
        let (k, chunk) = (1024, 4 << 20);
        // MiniLM's front: an 11 KiB header, position ids (I64), two small LayerNorm tensors,
        // then 768 KiB of position embeddings; then a large float tensor, 64 KiB of I64 and a
        // small float tensor.
        let spans = vec![
            span("ids", "I64", 11 * k, 15 * k),
            span("ln.b", "F32", 15 * k, 16 * k + 512),
            span("ln.w", "F32", 16 * k + 512, 18 * k),
            span("pos", "F32", 18 * k, 786 * k),
            span("tok", "F32", 786 * k, 789 * k),
            span("word", "F32", 789 * k, 789 * k + 3 * chunk),
            span("mask", "I64", 789 * k + 3 * chunk, 853 * k + 3 * chunk),
            span("bias", "F32", 853 * k + 3 * chunk, 854 * k + 3 * chunk),
        ];
        let size = 854 * k + 3 * chunk;
        let cuts = by_tensor(size, &spans, chunk);
        assert_tiles(&cuts, size);
        let names = |c: &Cut| c.tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        // The header with the ids and the small floats: plain bytes, 18 KiB.
        assert_eq!((cuts[0].len, cuts[0].content), (18 * k, Content::Bytes));
        assert_eq!(names(&cuts[0]), ["ids", "ln.b", "ln.w"]);
        // The position embeddings (and the small tensor after them): floats.
        assert_eq!(names(&cuts[1]), ["pos", "tok"]);
        assert_eq!(cuts[1].content, Content::Floats(4));
        // The integer tensor after the large one does not make the small float beside it
        // bytes, nor join a float chunk: plain bytes of its own with the small one.
        let mask = cuts
            .iter()
            .find(|c| names(c).contains(&"mask".into()))
            .unwrap();
        assert_eq!(mask.content, Content::Bytes);
        assert!(
            cuts.iter()
                .filter(|c| names(c).contains(&"word".into()))
                .all(|c| c.content == Content::Floats(4))
        );
        // Small tensors of other kinds still share a chunk (the case above, scaled down).
        let small = vec![span("a", "I64", 64, 1024), span("b", "F32", 1024, 2048)];
        assert_eq!(by_tensor(2048, &small, chunk).len(), 1);
    }

    #[test]
    fn cuts_never_pass_the_largest_chunk() {
        // A 1 GiB tensor and a small gap at the largest chunk size: the gap may not join it.
        for (block, float, big) in [
            (None, Some(4), MAX_CHUNK_SIZE),
            (Some(210), None, MAX_CHUNK_SIZE / 210 * 210),
        ] {
            let spans = [TensorSpan {
                name: "w".into(),
                dtype: "X".into(),
                float_width: float,
                block,
                start: 64,
                end: 64 + big,
            }];
            let size = 64 + big + 4096;
            let cuts = by_tensor(size, &spans, MAX_CHUNK_SIZE);
            assert!(cuts.iter().all(|c| c.len <= MAX_CHUNK_SIZE), "{cuts:?}");
            assert_eq!(cuts.iter().map(|c| c.len).sum::<u64>(), size);
            assert!(
                cuts.windows(2)
                    .all(|w| w[0].offset + w[0].len == w[1].offset)
            );
        }
    }

    #[test]
    fn small_gaps_between_large_tensors_join_the_chunk_before() {
        // Like a torch zip: each 4 KiB record preceded by an 80-byte local header.
        let mut spans = Vec::new();
        let mut at = 0;
        for i in 0..4 {
            at += 80;
            spans.push(span(&format!("r{i}"), "F32", at, at + 4096));
            at += 4096;
        }
        let cuts = by_tensor(at + 22, &spans, 4096);
        assert_tiles(&cuts, at + 22);
        assert_eq!(cuts.len(), 5, "{cuts:?}");
        assert_eq!(cuts[0].len, 80, "the leading header has no chunk before it");
        for c in &cuts[1..] {
            assert!(c.len >= 4096);
            assert_eq!(c.content, Content::Floats(4));
        }
    }

    #[test]
    fn quantized_tensors_are_cut_on_whole_blocks() {
        let spans = vec![span("q", "Q8_0", 32, 32 + 34 * 1000)];
        let cuts = by_tensor(32 + 34 * 1000, &spans, 10_000);
        assert_tiles(&cuts, 32 + 34 * 1000);
        let q: Vec<&Cut> = cuts
            .iter()
            .filter(|c| c.tensors.iter().any(|t| t.name == "q"))
            .collect();
        assert!(q.len() >= 3);
        for c in q {
            assert_eq!(c.content, Content::Blocks(34));
            assert_eq!((c.offset - 32) % 34, 0);
        }
    }

    #[test]
    fn mixed_or_misaligned_chunks_use_the_byte_codec() {
        // bf16 then f32 in one small group: mixed widths.
        let spans = vec![span("h", "BF16", 8, 108), span("f", "F32", 108, 208)];
        let cuts = by_tensor(208, &spans, 1 << 20);
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].content, Content::Bytes);
        // A float tensor starting at an odd offset within its chunk.
        let spans = vec![span("h", "BF16", 9, 1009)];
        let cuts = by_tensor(1009, &spans, 1 << 20);
        assert_eq!(cuts[0].content, Content::Bytes);
        // Aligned and mostly floats: float codec.
        let spans = vec![span("h", "BF16", 8, 1008)];
        assert_eq!(
            by_tensor(1008, &spans, 1 << 20)[0].content,
            Content::Floats(2)
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
