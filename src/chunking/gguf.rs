//! The GGUF layout (versions 2 and 3): magic, version, tensor and metadata counts, the metadata
//! key/values (every value type, arrays included), the tensor infos (name, dimensions, ggml
//! type, offset), and the data section, aligned to `general.alignment` (default 32). Only the
//! header is read; counts, lengths and offsets are checked against the file before use, and
//! nesting and allocation are bounded, so a hostile header is refused rather than followed.

use super::{LayoutError, ReadAt, TensorSpan, dtype_float_width};

const MAGIC: &[u8; 4] = b"GGUF";
/// More tensors or metadata entries than this is not a model, it is an attack.
const MAX_COUNT: u64 = 1 << 20;
/// Strings longer than this (a metadata value or a name) are refused.
const MAX_STRING: u64 = 1 << 24;
/// Arrays nested deeper than this are refused.
const MAX_DEPTH: u32 = 4;
/// The header is read in pieces of this size.
const READ_BLOCK: usize = 1 << 20;

fn bad(why: impl Into<String>) -> LayoutError {
    LayoutError::Invalid(format!("gguf: {}", why.into()))
}

/// A forward reader over the header, buffered so that thousands of small fields cost a few reads.
struct Cursor<'a> {
    src: &'a dyn ReadAt,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a dyn ReadAt) -> Cursor<'a> {
        Cursor {
            src,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    fn take(&mut self, n: u64) -> Result<&[u8], LayoutError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.src.len())
            .ok_or_else(|| bad("header runs past the end of the file"))?;
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || end > buf_end {
            let want = (n as usize)
                .max(READ_BLOCK)
                .min((self.src.len() - self.pos) as usize);
            self.buf.resize(want, 0);
            self.src.read_exact_at(&mut self.buf, self.pos)?;
            self.buf_start = self.pos;
        }
        let at = (self.pos - self.buf_start) as usize;
        self.pos = end;
        Ok(&self.buf[at..at + n as usize])
    }

    fn skip(&mut self, n: u64) -> Result<(), LayoutError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.src.len())
            .ok_or_else(|| bad("header runs past the end of the file"))?;
        self.pos = end;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, LayoutError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, LayoutError> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Ok(u64::from_le_bytes(w))
    }

    fn string(&mut self) -> Result<String, LayoutError> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(bad(format!("a string of {n} bytes")));
        }
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    /// Skips one metadata value of `kind`, returning it when it is an unsigned integer.
    fn value(&mut self, kind: u32, depth: u32) -> Result<Option<u64>, LayoutError> {
        let fixed = match (fixed_width(kind), kind) {
            (Some(w), _) => w,
            (None, 8) => {
                let n = self.u64()?;
                if n > MAX_STRING {
                    return Err(bad(format!("a string of {n} bytes")));
                }
                self.skip(n)?;
                return Ok(None);
            }
            (None, 9) => {
                if depth >= MAX_DEPTH {
                    return Err(bad("arrays nested too deep"));
                }
                let item = self.u32()?;
                let count = self.u64()?;
                if let Some(width) = fixed_width(item) {
                    let bytes = count
                        .checked_mul(width)
                        .ok_or_else(|| bad("array size overflows"))?;
                    self.skip(bytes)?;
                } else {
                    // Strings or arrays: each at least 8 bytes, so the count is bounded by the file.
                    if count > self.src.len() / 8 {
                        return Err(bad(format!("an array of {count} items")));
                    }
                    for _ in 0..count {
                        self.value(item, depth + 1)?;
                    }
                }
                return Ok(None);
            }
            (None, other) => return Err(bad(format!("unknown metadata type {other}"))),
        };
        let b = self.take(fixed)?;
        Ok(match (kind, b.len()) {
            (4, 4) => Some(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            (10, 8) => Some(u64::from_le_bytes([
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
            ])),
            _ => None,
        })
    }
}

/// Bytes of a fixed-size metadata value type (integers, floats, bool).
fn fixed_width(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Name, elements per block and bytes per block of a ggml tensor type.
fn ggml_type(t: u32) -> Option<(&'static str, u64, u64)> {
    Some(match t {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        39 => ("MXFP4", 32, 17),
        _ => return None,
    })
}

/// Whether the file starts with the GGUF magic.
pub fn looks_like(src: &dyn ReadAt) -> bool {
    let mut m = [0u8; 4];
    src.len() >= 4 && src.read_exact_at(&mut m, 0).is_ok() && &m == MAGIC
}

/// One tensor as the table gives it: name, element count, ggml type, offset in the data.
struct TensorInfo {
    name: String,
    elems: u64,
    kind: u32,
    offset: u64,
}

/// Reads the tensor table. Offsets in the result are absolute file offsets.
pub fn parse(src: &dyn ReadAt) -> Result<Vec<TensorSpan>, LayoutError> {
    let mut c = Cursor::new(src);
    if c.take(4)? != MAGIC {
        return Err(bad("no magic"));
    }
    let version = c.u32()?;
    if version != 2 && version != 3 {
        return Err(bad(format!(
            "version {version} is not supported (2 and 3 are)"
        )));
    }
    let n_tensors = c.u64()?;
    let n_kv = c.u64()?;
    if n_tensors > MAX_COUNT || n_kv > MAX_COUNT {
        return Err(bad(format!(
            "{n_tensors} tensors and {n_kv} metadata entries"
        )));
    }
    let alignment = read_alignment(&mut c, n_kv)?;
    let infos = (0..n_tensors)
        .map(|_| read_tensor_info(&mut c))
        .collect::<Result<Vec<_>, _>>()?;
    let data_start = c
        .pos
        .div_ceil(alignment)
        .checked_mul(alignment)
        .ok_or_else(|| bad("data start overflows"))?;
    if data_start > src.len() {
        return Err(bad("data section starts past the end of the file"));
    }
    let data_len = src.len() - data_start;
    // Tensors of unknown types end where the next tensor begins.
    let mut starts: Vec<u64> = infos.iter().map(|i| i.offset).collect();
    starts.sort_unstable();
    let spans = infos
        .into_iter()
        .map(|info| span_of(info, &starts, data_start, data_len))
        .collect::<Result<Vec<_>, _>>()?;
    super::sorted_disjoint(spans, "gguf")
}

/// Walks the `n_kv` metadata entries; returns the data alignment they set (32 by default).
fn read_alignment(c: &mut Cursor, n_kv: u64) -> Result<u64, LayoutError> {
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = c.string()?;
        let kind = c.u32()?;
        let value = c.value(kind, 0)?;
        if key == "general.alignment" {
            alignment = value
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| bad("general.alignment is not a power of two"))?;
        }
    }
    Ok(alignment)
}

fn read_tensor_info(c: &mut Cursor) -> Result<TensorInfo, LayoutError> {
    let name = c.string()?;
    let n_dims = c.u32()?;
    if n_dims > 8 {
        return Err(bad(format!("{name}: {n_dims} dimensions")));
    }
    let mut elems: Option<u64> = Some(1);
    for _ in 0..n_dims {
        let d = c.u64()?;
        elems = elems.and_then(|e| e.checked_mul(d));
    }
    let kind = c.u32()?;
    let offset = c.u64()?;
    Ok(TensorInfo {
        name,
        elems: elems.ok_or_else(|| bad("tensor size overflows"))?,
        kind,
        offset,
    })
}

/// Where a tensor lies in the file: its size from its type, or, for a type this reader does
/// not know, up to the next tensor's start (`starts`, sorted) or the end of the data.
fn span_of(
    info: TensorInfo,
    starts: &[u64],
    data_start: u64,
    data_len: u64,
) -> Result<TensorSpan, LayoutError> {
    let TensorInfo {
        name,
        elems,
        kind,
        offset,
    } = info;
    let (dtype, size, block_bytes) = match ggml_type(kind) {
        Some((dtype, block, bytes)) => {
            if elems % block != 0 {
                return Err(bad(format!(
                    "{name}: {elems} elements is not a whole number of {dtype} blocks"
                )));
            }
            let size = (elems / block)
                .checked_mul(bytes)
                .ok_or_else(|| bad("tensor size overflows"))?;
            (
                dtype.to_string(),
                size,
                (block > 1).then_some(bytes as usize),
            )
        }
        None => {
            // A binary search: a file of a million such tensors stays n log n.
            let next = starts
                .get(starts.partition_point(|&s| s <= offset))
                .copied()
                .unwrap_or(data_len);
            (
                format!("ggml-type-{kind}"),
                next.saturating_sub(offset),
                None,
            )
        }
    };
    let end = offset
        .checked_add(size)
        .filter(|&e| e <= data_len)
        .ok_or_else(|| bad(format!("{name}: data past the end of the file")))?;
    Ok(TensorSpan {
        float_width: dtype_float_width(&dtype),
        block: block_bytes,
        name,
        dtype,
        start: data_start + offset,
        end: data_start + end,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chunking::Bytes;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// A GGUF v3 image: some metadata of every kind, then (name, ggml type, dims, data) tensors.
    pub fn image(tensors: &[(&str, u32, Vec<u64>, Vec<u8>)], alignment: u64) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&4u64.to_le_bytes());
        string(&mut out, "general.name");
        out.extend_from_slice(&8u32.to_le_bytes());
        string(&mut out, "tiny");
        string(&mut out, "general.alignment");
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&(alignment as u32).to_le_bytes());
        string(&mut out, "tokenizer.ggml.tokens");
        out.extend_from_slice(&9u32.to_le_bytes());
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&3u64.to_le_bytes());
        for t in ["a", "bb", "ccc"] {
            string(&mut out, t);
        }
        string(&mut out, "scores");
        out.extend_from_slice(&9u32.to_le_bytes());
        out.extend_from_slice(&6u32.to_le_bytes());
        out.extend_from_slice(&2u64.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, kind, dims, data) in tensors {
            string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(alignment) * alignment;
        }
        while !(out.len() as u64).is_multiple_of(alignment) {
            out.push(0);
        }
        let base = out.len();
        for ((_, _, _, data), off) in tensors.iter().zip(offsets) {
            out.resize(base + off as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn many_tensors_of_unknown_type_end_where_the_next_begins() {
        // 200k tensors: a scan per tensor for the next start (the old way) would take minutes.
        let data: Vec<Vec<u8>> = (0..200_000u32).map(|i| i.to_le_bytes().repeat(8)).collect();
        let names: Vec<String> = (0..data.len()).map(|i| format!("t{i}")).collect();
        let tensors: Vec<(&str, u32, Vec<u64>, Vec<u8>)> = names
            .iter()
            .zip(&data)
            .map(|(n, d)| (n.as_str(), 99, vec![7], d.clone()))
            .collect();
        let img = image(&tensors, 32);
        let spans = parse(&Bytes(&img)).unwrap();
        assert_eq!(spans.len(), data.len());
        assert!(spans.iter().all(|s| s.dtype == "ggml-type-99"));
        // Each runs to the next one's start (32-aligned), the last to the end of the file.
        assert!(
            spans
                .windows(2)
                .all(|w| w[0].end == w[1].start && w[0].end - w[0].start == 32)
        );
        assert_eq!(spans.last().unwrap().end, img.len() as u64);
    }

    #[test]
    fn parses_a_valid_file() {
        let img = image(
            &[
                ("tok", 1, vec![8, 2], vec![1; 32]),
                ("q", 8, vec![64], vec![2; 68]),
                ("f", 0, vec![3], vec![3; 12]),
            ],
            32,
        );
        assert!(looks_like(&Bytes(&img)));
        let spans = parse(&Bytes(&img)).unwrap();
        assert_eq!(
            spans
                .iter()
                .map(|s| (s.name.as_str(), s.dtype.as_str()))
                .collect::<Vec<_>>(),
            [("tok", "F16"), ("q", "Q8_0"), ("f", "F32")]
        );
        assert_eq!(spans[0].float_width, Some(2));
        assert_eq!(spans[1].float_width, None);
        assert_eq!(spans[1].block, Some(34));
        assert_eq!(spans[0].start % 32, 0);
        assert_eq!(
            &img[spans[1].start as usize..spans[1].end as usize],
            &[2; 68][..]
        );
        assert_eq!(spans[2].end, img.len() as u64);
    }

    #[test]
    fn refuses_hostile_headers() {
        let good = image(&[("w", 0, vec![4], vec![1; 16])], 32);
        assert!(
            parse(&Bytes(&good[..good.len() - 1])).is_err(),
            "data past EOF"
        );
        for cut in [3, 8, 20, 40, 100] {
            assert!(parse(&Bytes(&good[..cut])).is_err(), "truncated at {cut}");
        }
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&Bytes(&huge)).is_err(), "absurd tensor count");
        let mut v1 = good.clone();
        v1[4] = 1;
        assert!(parse(&Bytes(&v1)).is_err(), "version 1");
        // An array claiming billions of strings.
        let mut arr = good.clone();
        let at = arr
            .windows(8)
            .position(|w| w == 3u64.to_le_bytes())
            .unwrap();
        arr[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(parse(&Bytes(&arr)).is_err(), "huge array");
    }
}
