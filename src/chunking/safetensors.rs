//! The safetensors layout: an 8-byte little-endian header length, a JSON header naming every
//! tensor's dtype, shape and `data_offsets` within the data section, then the data. Only the
//! header is read, and nothing in it is trusted: lengths past the end of the file, offsets out of
//! range or overlapping, and shapes that disagree with their byte ranges are all refused.

use super::{LayoutError, ReadAt, TensorSpan, dtype_float_width};
use serde_json::Value;

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

/// Reads the tensor table. Offsets in the result are absolute file offsets.
pub fn parse(src: &dyn ReadAt) -> Result<Vec<TensorSpan>, LayoutError> {
    let bad = |why: String| LayoutError::Invalid(format!("safetensors: {why}"));
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
    let mut header = vec![0u8; header_len as usize];
    src.read_exact_at(&mut header, 8)?;
    let json: Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let table = json
        .as_object()
        .ok_or_else(|| bad("header is not an object".into()))?;
    let data_start = 8 + header_len;
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
    spans.sort_by_key(|s| (s.start, s.end));
    for w in spans.windows(2) {
        if w[1].start < w[0].end {
            return Err(bad(format!(
                "tensors {} and {} overlap",
                w[0].name, w[1].name
            )));
        }
    }
    Ok(spans)
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
