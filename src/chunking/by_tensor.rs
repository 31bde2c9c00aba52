//! Cutting a file whose tensors are known: its bytes as pieces (headers and gaps, tensors, large
//! tensors in parts of whole elements), grouped into chunks (a large piece alone, small
//! neighbours together, never bytes that matter stored as another content than their own), and
//! what each chunk is stored as.

use super::{Cut, MAX_CHUNK_SIZE, TensorSpan, TensorTag};
use crate::codec::Content;

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
pub(super) mod tests {
    use super::*;
    use crate::chunking::dtype_float_width;

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
    pub(in crate::chunking) fn assert_tiles(cuts: &[Cut], size: u64) {
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
}
