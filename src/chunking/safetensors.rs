//! The safetensors layout: an 8-byte little-endian header length, a JSON header naming every
//! tensor's dtype, shape and `data_offsets` within the data section, then the data. Only the
//! header is read, and nothing in it is trusted: lengths past the end of the file, offsets out of
//! range or overlapping, and shapes that disagree with their byte ranges are all refused.

use super::{LayoutError, ReadAt, TensorSpan, dtype_float_width};
use serde_json::Value;
use std::io::Write;

/// safetensors itself refuses headers above 100 MB.
const MAX_HEADER: u64 = 100_000_000;

/// Bytes per element of a safetensors dtype.
fn elem_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        _ => return None,
    })
}

/// Whether the file starts like a safetensors file (a plausible length, then `{`).
pub fn looks_like(src: &dyn ReadAt) -> bool {
    let mut head = [0u8; 9];
    if src.len() < 10 || src.read_exact_at(&mut head, 0).is_err() {
        return false;
    }
    let n = u64::from_le_bytes([
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ]);
    head[8] == b'{' && (2..=MAX_HEADER).contains(&n) && n <= src.len() - 8
}

/// A checked safetensors header: the file's first bytes (length prefix and JSON) and its table.
struct Header {
    bytes: Vec<u8>,
    table: serde_json::Map<String, Value>,
}

fn bad(why: String) -> LayoutError {
    LayoutError::Invalid(format!("safetensors: {why}"))
}

/// Reads and checks the length prefix and the JSON header.
fn read_header(src: &dyn ReadAt) -> Result<Header, LayoutError> {
    let size = src.len();
    let mut len = [0u8; 8];
    if size < 8 {
        return Err(bad("shorter than its length prefix".into()));
    }
    src.read_exact_at(&mut len, 0)?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || header_len > size - 8 {
        return Err(bad(format!(
            "header length {header_len} does not fit a {size}-byte file"
        )));
    }
    let mut bytes = vec![0u8; 8 + header_len as usize];
    src.read_exact_at(&mut bytes, 0)?;
    let json: Value =
        serde_json::from_slice(&bytes[8..]).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    match json {
        Value::Object(table) => Ok(Header { bytes, table }),
        _ => Err(bad("header is not an object".into())),
    }
}

/// Reads the tensor table. Offsets in the result are absolute file offsets.
pub fn parse(src: &dyn ReadAt) -> Result<Vec<TensorSpan>, LayoutError> {
    spans(&read_header(src)?, src.len())
}

/// The tensors `header` describes in a file of `size` bytes, checked against it.
fn spans(header: &Header, size: u64) -> Result<Vec<TensorSpan>, LayoutError> {
    let table = &header.table;
    let data_start = header.bytes.len() as u64;
    let data_len = size - data_start;
    let mut spans = Vec::with_capacity(table.len());
    for (name, info) in table {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{name}: no dtype")))?;
        let offsets = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .ok_or_else(|| bad(format!("{name}: no data_offsets")))?;
        let (start, end) = match (offsets[0].as_u64(), offsets[1].as_u64()) {
            (Some(s), Some(e)) if s <= e && e <= data_len => (s, e),
            _ => return Err(bad(format!("{name}: data_offsets out of range"))),
        };
        let shape = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("{name}: no shape")))?;
        if let Some(es) = elem_size(dtype) {
            let mut count: u64 = 1;
            for d in shape {
                let d = d
                    .as_u64()
                    .ok_or_else(|| bad(format!("{name}: bad shape")))?;
                count = count
                    .checked_mul(d)
                    .ok_or_else(|| bad(format!("{name}: shape overflows")))?;
            }
            if count.checked_mul(es) != Some(end - start) {
                return Err(bad(format!(
                    "{name}: shape and dtype do not match its {} bytes",
                    end - start
                )));
            }
        }
        spans.push(TensorSpan {
            name: name.clone(),
            dtype: dtype.to_string(),
            float_width: dtype_float_width(dtype),
            block: None,
            start: data_start + start,
            end: data_start + end,
        });
    }
    super::sorted_disjoint(spans, "safetensors")
}

/// fp32 -> bf16, rounding to nearest even; NaNs stay NaN (quiet, same sign).
pub fn f32_to_bf16(bits: u32) -> u16 {
    if (bits & 0x7fff_ffff) > 0x7f80_0000 {
        return ((bits >> 16) as u16) | 0x0040;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// What `to_bf16` did.
#[derive(Debug, Clone)]
pub struct Narrowed {
    /// Tensors converted from F32.
    pub tensors: usize,
    pub original_size: u64,
    pub original_blake3: crate::codec::Hash32,
}

/// Writes to `out` a valid safetensors file equal to `src` except that every F32 tensor is
/// stored as BF16 (rounded to nearest even) with a header to match. Returns `None`, writing
/// nothing, when `src` has no F32 tensor or its header does not check out.
pub fn to_bf16(src: &dyn ReadAt, out: &mut dyn Write) -> Result<Option<Narrowed>, LayoutError> {
    let header = read_header(src)?;
    let spans = spans(&header, src.len())?;
    if !spans.iter().any(|s| s.dtype == "F32") {
        return Ok(None);
    }
    let data_start = header.bytes.len() as u64;
    let mut table = header.table;
    // New offsets, in the order the data lies.
    let mut at = 0u64;
    for s in &spans {
        let narrow = s.dtype == "F32";
        let len = if narrow {
            (s.end - s.start) / 2
        } else {
            s.end - s.start
        };
        if let Some(info) = table.get_mut(&s.name).and_then(Value::as_object_mut) {
            if narrow {
                info.insert("dtype".into(), Value::from("BF16"));
            }
            info.insert("data_offsets".into(), serde_json::json!([at, at + len]));
        }
        at += len;
    }
    let mut new_header =
        serde_json::to_vec(&table).map_err(|e| LayoutError::Invalid(e.to_string()))?;
    while !new_header.len().is_multiple_of(8) {
        new_header.push(b' ');
    }
    let mut original = blake3::Hasher::new();
    original.update(&header.bytes);
    out.write_all(&(new_header.len() as u64).to_le_bytes())?;
    out.write_all(&new_header)?;
    // Copy the data section in file order; bytes between tensors (none in a well-formed file)
    // count for the original hash but are not kept.
    let mut pos = data_start;
    let mut buf = vec![0u8; 4 << 20];
    let mut narrow_buf = Vec::with_capacity(2 << 20);
    let mut copy = |from: u64,
                    to: u64,
                    narrow: bool,
                    out: &mut dyn Write,
                    keep: bool|
     -> Result<(), LayoutError> {
        let mut p = from;
        while p < to {
            let n = ((to - p) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], p)?;
            original.update(&buf[..n]);
            if keep && narrow {
                narrow_buf.clear();
                for w in buf[..n].chunks_exact(4) {
                    let v = f32_to_bf16(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
                    narrow_buf.extend_from_slice(&v.to_le_bytes());
                }
                out.write_all(&narrow_buf)?;
            } else if keep {
                out.write_all(&buf[..n])?;
            }
            p += n as u64;
        }
        Ok(())
    };
    for s in &spans {
        copy(pos, s.start, false, out, false)?;
        copy(s.start, s.end, s.dtype == "F32", out, true)?;
        pos = s.end;
    }
    copy(pos, src.len(), false, out, false)?;
    Ok(Some(Narrowed {
        tensors: spans.iter().filter(|s| s.dtype == "F32").count(),
        original_size: src.len(),
        original_blake3: crate::codec::Hash32(*original.finalize().as_bytes()),
    }))
}

/// Writes to `out` a copy of `src` (same header, same layout) in which every BF16, F16 and F32
/// tensor holds its values rounded to FP8 E4M3 with a power-of-two scale per block of
/// `fp8::BLOCK` values, counted from the tensor's start (see `codec::fp8` for the error bound).
/// Returns `None`, writing nothing, when `src` has no such tensor.
pub fn to_fp8(src: &dyn ReadAt, out: &mut dyn Write) -> Result<Option<Narrowed>, LayoutError> {
    use crate::codec::fp8::{self, Format};
    let header = read_header(src)?;
    let spans = spans(&header, src.len())?;
    let format = |s: &TensorSpan| Format::of_dtype(&s.dtype);
    if !spans.iter().any(|s| format(s).is_some()) {
        return Ok(None);
    }
    let mut original = blake3::Hasher::new();
    // Pieces a whole number of blocks long, for every width.
    let piece = fp8::BLOCK * 4 * 8192;
    let mut buf = vec![0u8; piece];
    let mut copy = |from: u64, to: u64, f: Option<Format>| -> Result<(), LayoutError> {
        let mut p = from;
        while p < to {
            let n = ((to - p) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], p)?;
            original.update(&buf[..n]);
            if let Some(f) = f {
                for block in buf[..n].chunks_mut(fp8::BLOCK * f.width()) {
                    fp8::quantize_block(f, block);
                }
            }
            out.write_all(&buf[..n])?;
            p += n as u64;
        }
        Ok(())
    };
    let mut pos = 0;
    for s in &spans {
        copy(pos, s.start, None)?;
        copy(s.start, s.end, format(s))?;
        pos = s.end;
    }
    copy(pos, src.len(), None)?;
    Ok(Some(Narrowed {
        tensors: spans.iter().filter(|s| format(s).is_some()).count(),
        original_size: src.len(),
        original_blake3: crate::codec::Hash32(*original.finalize().as_bytes()),
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chunking::Bytes;

    /// A safetensors image with the given (name, dtype, shape, data) tensors, in order.
    pub fn image(tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut at = 0;
        for (name, dtype, shape, data) in tensors {
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + data.len()]}),
            );
            at += data.len();
        }
        let mut h = serde_json::to_vec(&header).unwrap();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        for (_, _, _, data) in tensors {
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn parses_a_valid_file() {
        let img = image(&[
            ("b", "BF16", vec![2, 3], vec![1; 12]),
            ("a", "F32", vec![4], vec![2; 16]),
            ("i", "I64", vec![1], vec![3; 8]),
        ]);
        assert!(looks_like(&Bytes(&img[..])));
        let spans = parse(&Bytes(&img[..])).unwrap();
        assert_eq!(
            spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["b", "a", "i"]
        );
        assert_eq!(spans[0].float_width, Some(2));
        assert_eq!(spans[1].float_width, Some(4));
        assert_eq!(spans[2].float_width, None);
        assert_eq!(spans[2].end, img.len() as u64);
        assert_eq!(
            &img[spans[1].start as usize..spans[1].end as usize],
            &[2; 16]
        );
    }

    #[test]
    fn narrows_f32_tensors_to_bf16() {
        let f: Vec<u8> = [1.0f32, -2.5, 1.2345, f32::NAN, 1e-40, 65504.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let img = image(&[
            ("w", "F32", vec![2, 3], f.clone()),
            ("i", "I64", vec![1], vec![9; 8]),
        ]);
        let mut out = Vec::new();
        let done = to_bf16(&Bytes(&img), &mut out).unwrap().unwrap();
        assert_eq!(done.tensors, 1);
        assert_eq!(done.original_blake3, crate::codec::Hash32::of(&img));
        let spans = parse(&Bytes(&out)).unwrap();
        let w = spans.iter().find(|s| s.name == "w").unwrap();
        assert_eq!((w.dtype.as_str(), w.end - w.start), ("BF16", 12));
        let got: Vec<f32> = out[w.start as usize..w.end as usize]
            .chunks_exact(2)
            .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
            .collect();
        assert_eq!(got[0], 1.0);
        assert_eq!(got[1], -2.5);
        assert!((got[2] - 1.2345).abs() < 0.02);
        assert!(got[3].is_nan());
        assert_eq!(got[5], 65536.0, "65504 rounds to the nearest bf16");
        let i = spans.iter().find(|s| s.name == "i").unwrap();
        assert_eq!(&out[i.start as usize..i.end as usize], &[9; 8]);
        // Nothing to narrow: no output.
        let ints = image(&[("i", "I64", vec![1], vec![9; 8])]);
        assert!(to_bf16(&Bytes(&ints), &mut Vec::new()).unwrap().is_none());
        // Round to nearest even at the halfway point.
        assert_eq!(f32_to_bf16(0x3f80_8000), 0x3f80);
        assert_eq!(f32_to_bf16(0x3f81_8000), 0x3f82);
    }

    #[test]
    fn refuses_hostile_headers() {
        let good = image(&[("a", "F32", vec![4], vec![2; 16])]);
        let mut huge_len = good.clone();
        huge_len[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&Bytes(&huge_len[..])).is_err());
        assert!(
            parse(&Bytes(&good[..good.len() - 1])).is_err(),
            "data past EOF"
        );
        assert!(parse(&Bytes(&good[..20])).is_err());
        assert!(parse(&Bytes(&good[..4])).is_err());
        let overlap = image(&[
            ("a", "F32", vec![4], vec![2; 16]),
            ("b", "F32", vec![4], vec![2; 16]),
        ]);
        let text = String::from_utf8_lossy(&overlap)
            .replace("[16,32]", "[8,24]")
            .into_bytes();
        assert!(parse(&Bytes(&text[..])).is_err(), "overlap");
        let text = String::from_utf8_lossy(&good)
            .replace("[4]", "[5]")
            .into_bytes();
        assert!(parse(&Bytes(&text[..])).is_err(), "shape mismatch");
        let text = String::from_utf8_lossy(&good)
            .replace("[4]", "[4294967296,4294967296,4294967296]")
            .into_bytes();
        assert!(parse(&Bytes(&text[..])).is_err(), "shape overflow");
        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let mut deep = (nested.len() as u64).to_le_bytes().to_vec();
        deep.extend_from_slice(nested.as_bytes());
        assert!(parse(&Bytes(&deep[..])).is_err(), "deep nesting");
    }
}
