//! The PyTorch zip checkpoint layout (`torch.save` since 1.6): a zip archive whose stored
//! (uncompressed) records `<archive>/data/<key>` hold the tensor storages, 64-byte aligned, and
//! whose `data.pkl` says which storage has which dtype. The zip central directory (zip64
//! included) gives each record's data offset; a small walk over the pickle's opcodes, executing
//! nothing, maps storage keys to dtypes. Legacy (non-zip) checkpoints are not recognised.

use super::{LayoutError, ReadAt, TensorSpan, dtype_float_width};
use std::collections::HashMap;

fn bad(why: impl Into<String>) -> LayoutError {
    LayoutError::Invalid(format!("torch zip: {}", why.into()))
}

/// More zip entries than this is refused.
const MAX_ENTRIES: u64 = 1 << 20;
/// A `data.pkl` larger than this is not walked (dtypes are then unknown).
const MAX_PICKLE: u64 = 64 << 20;

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}
fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn read(src: &dyn ReadAt, offset: u64, len: u64) -> Result<Vec<u8>, LayoutError> {
    if offset.checked_add(len).is_none_or(|e| e > src.len()) {
        return Err(bad("a record points past the end of the file"));
    }
    let mut buf = vec![0u8; len as usize];
    src.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Whether the file starts like a zip archive.
pub fn looks_like(src: &dyn ReadAt) -> bool {
    let mut m = [0u8; 4];
    src.len() >= 22 && src.read_exact_at(&mut m, 0).is_ok() && m == [b'P', b'K', 3, 4]
}

/// One stored zip member: name, data offset and length.
struct Member {
    name: String,
    data_start: u64,
    len: u64,
}

/// Reads the central directory.
fn members(src: &dyn ReadAt) -> Result<Vec<Member>, LayoutError> {
    let size = src.len();
    let (count, cd_offset, cd_size) = central_directory(src)?;
    if count > MAX_ENTRIES || cd_size > size {
        return Err(bad(format!("{count} entries")));
    }
    let cd = read(src, cd_offset, cd_size)?;
    let mut out = Vec::with_capacity(count as usize);
    let mut at = 0usize;
    for _ in 0..count {
        let (entry, next) = cd_entry(&cd, at)?;
        at = next;
        if entry.method != 0 || entry.csize != entry.usize_ {
            continue; // compressed members hold no tensor data we can cut on
        }
        let lh = read(src, entry.local, 30)?;
        if lh[..4] != [b'P', b'K', 3, 4] {
            return Err(bad(format!("{}: bad local header", entry.name)));
        }
        let data_start = entry.local + 30 + le16(&lh, 26) + le16(&lh, 28);
        if data_start.checked_add(entry.csize).is_none_or(|e| e > size) {
            return Err(bad(format!(
                "{}: data past the end of the file",
                entry.name
            )));
        }
        out.push(Member {
            name: entry.name,
            data_start,
            len: entry.csize,
        });
    }
    Ok(out)
}

/// The central directory's entry count, offset and size, from the end record (zip64 where
/// the end record says so).
fn central_directory(src: &dyn ReadAt) -> Result<(u64, u64, u64), LayoutError> {
    let size = src.len();
    let tail_len = size.min(65_557);
    let tail = read(src, size - tail_len, tail_len)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [b'P', b'K', 5, 6])
        .ok_or_else(|| bad("no end of central directory"))?;
    let eocd_abs = size - tail_len + eocd as u64;
    let mut count = le16(&tail, eocd + 10);
    let mut cd_size = le32(&tail, eocd + 12);
    let mut cd_offset = le32(&tail, eocd + 16);
    if count == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        // zip64: the locator sits just before the EOCD and points at the zip64 EOCD record.
        let loc = read(
            src,
            eocd_abs
                .checked_sub(20)
                .ok_or_else(|| bad("no zip64 locator"))?,
            20,
        )?;
        if loc[..4] != [b'P', b'K', 6, 7] {
            return Err(bad("no zip64 locator"));
        }
        let rec = read(src, le64(&loc, 8), 56)?;
        if rec[..4] != [b'P', b'K', 6, 6] {
            return Err(bad("bad zip64 end record"));
        }
        count = le64(&rec, 32);
        cd_size = le64(&rec, 40);
        cd_offset = le64(&rec, 48);
    }
    Ok((count, cd_offset, cd_size))
}

/// One central directory entry, as far as this reader needs it.
struct CdEntry {
    name: String,
    method: u64,
    csize: u64,
    usize_: u64,
    local: u64,
}

/// The entry at `at` of the central directory `cd`, and where the next one starts.
fn cd_entry(cd: &[u8], at: usize) -> Result<(CdEntry, usize), LayoutError> {
    let h = cd
        .get(at..at + 46)
        .ok_or_else(|| bad("central directory cut short"))?;
    if h[..4] != [b'P', b'K', 1, 2] {
        return Err(bad("bad central directory entry"));
    }
    let method = le16(h, 10);
    let (mut csize, mut usize_, mut local) = (le32(h, 20), le32(h, 24), le32(h, 42));
    let (name_len, extra_len, comment_len) = (
        le16(h, 28) as usize,
        le16(h, 30) as usize,
        le16(h, 32) as usize,
    );
    let name_bytes = cd
        .get(at + 46..at + 46 + name_len)
        .ok_or_else(|| bad("central directory cut short"))?;
    let name = String::from_utf8_lossy(name_bytes).into_owned();
    let extra = cd
        .get(at + 46 + name_len..at + 46 + name_len + extra_len)
        .ok_or_else(|| bad("central directory cut short"))?;
    // zip64 extra field: the values that were 0xffffffff, in order.
    let mut e = 0;
    while e + 4 <= extra.len() {
        let (id, len) = (le16(extra, e), le16(extra, e + 2) as usize);
        let body = extra
            .get(e + 4..e + 4 + len)
            .ok_or_else(|| bad("bad extra field"))?;
        if id == 1 {
            let mut f = 0;
            for v in [&mut usize_, &mut csize, &mut local] {
                if *v == 0xffff_ffff && f + 8 <= body.len() {
                    *v = le64(body, f);
                    f += 8;
                }
            }
        }
        e += 4 + len;
    }
    let next = at + 46 + name_len + extra_len + comment_len;
    Ok((
        CdEntry {
            name,
            method,
            csize,
            usize_,
            local,
        },
        next,
    ))
}

/// Symbolic values of the pickle walk: only what the storage tuples need.
#[derive(Clone, Debug)]
enum Val {
    Str(String),
    Global(String),
    Mark,
    Tuple(Vec<Val>),
    Other,
}

/// Storage key -> dtype name, from the persistent ids in `data.pkl`
/// (`('storage', torch.<Dtype>Storage, key, location, numel)`). Returns what it found before any
/// opcode it does not know.
fn storage_dtypes(pkl: &[u8]) -> HashMap<String, String> {
    let mut walk = Walk {
        pkl,
        at: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        found: HashMap::new(),
    };
    while let Some(&op) = pkl.get(walk.at) {
        walk.at += 1;
        if walk.step(op).is_none() || walk.stack.len() > 1 << 20 {
            break;
        }
    }
    walk.found
}

/// A walk over a pickle's opcodes with symbolic values: `None` from a step ends it.
struct Walk<'a> {
    pkl: &'a [u8],
    at: usize,
    stack: Vec<Val>,
    memo: HashMap<u64, Val>,
    /// Storage key -> dtype name, as the persistent ids are met.
    found: HashMap<String, String>,
}

impl<'a> Walk<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.pkl.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn line(&mut self) -> Option<String> {
        let rest = self.pkl.get(self.at..)?;
        let end = rest.iter().position(|&b| b == b'\n')?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Some(s)
    }

    /// Pushes the `n` bytes that follow as a string.
    fn text(&mut self, n: usize) -> Option<()> {
        let s = String::from_utf8_lossy(self.take(n)?).into_owned();
        self.stack.push(Val::Str(s));
        Some(())
    }

    /// Skips `n` bytes of a value this walk does not need, and pushes it as `Other`.
    fn other(&mut self, n: usize) -> Option<()> {
        self.take(n)?;
        self.stack.push(Val::Other);
        Some(())
    }

    fn step(&mut self, op: u8) -> Option<()> {
        match op {
            0x80 => drop(self.take(1)?), // PROTO
            0x95 => drop(self.take(8)?), // FRAME
            b'c' => {
                let m = self.line()?;
                let n = self.line()?;
                self.stack.push(Val::Global(format!("{m}.{n}")));
            }
            0x93 => {
                // STACK_GLOBAL
                let n = self.stack.pop()?;
                let m = self.stack.pop()?;
                match (m, n) {
                    (Val::Str(m), Val::Str(n)) => self.stack.push(Val::Global(format!("{m}.{n}"))),
                    _ => self.stack.push(Val::Other),
                }
            }
            0x8c | b'U' => {
                // SHORT_BINUNICODE, SHORT_BINSTRING
                let n = self.byte()? as usize;
                self.text(n)?;
            }
            b'X' => {
                let n = le32(self.take(4)?, 0) as usize; // BINUNICODE
                self.text(n)?;
            }
            b'J' => self.other(4)?,
            b'K' => self.other(1)?,
            b'M' => self.other(2)?,
            b'G' => self.other(8)?,
            0x8a => {
                let n = self.byte()? as usize; // LONG1
                self.other(n)?;
            }
            b'N' | 0x88 | 0x89 | b'}' | b']' => self.stack.push(Val::Other), // None True False {} []
            _ => return self.structure(op),
        }
        Some(())
    }

    /// The opcodes that build, remember and fold values.
    fn structure(&mut self, op: u8) -> Option<()> {
        let stack = &mut self.stack;
        match op {
            b')' => stack.push(Val::Tuple(vec![])),
            b'(' => stack.push(Val::Mark),
            b't' => {
                let at = stack.iter().rposition(|v| matches!(v, Val::Mark))?;
                let items = stack.split_off(at + 1);
                stack.pop();
                stack.push(Val::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize; // TUPLE1..3
                let items = stack.split_off(stack.len().checked_sub(n)?);
                stack.push(Val::Tuple(items));
            }
            b'q' | b'r' | 0x94 => {
                // BINPUT, LONG_BINPUT, MEMOIZE
                let k = match op {
                    b'q' => u64::from(self.byte()?),
                    b'r' => le32(self.take(4)?, 0),
                    _ => self.memo.len() as u64,
                };
                self.memo.insert(k, self.stack.last()?.clone());
            }
            b'h' | b'j' => {
                // BINGET, LONG_BINGET
                let k = match op {
                    b'h' => u64::from(self.byte()?),
                    _ => le32(self.take(4)?, 0),
                };
                let v = self.memo.get(&k)?.clone();
                self.stack.push(v);
            }
            b'Q' => {
                // BINPERSID: ('storage', torch.XStorage, key, location, numel)
                if let Val::Tuple(items) = stack.pop()?
                    && let [Val::Str(tag), Val::Global(kind), Val::Str(key), ..] = items.as_slice()
                    && tag == "storage"
                {
                    self.found.insert(key.clone(), storage_dtype(kind));
                }
                self.stack.push(Val::Other);
            }
            b'R' | 0x81 => {
                // REDUCE, NEWOBJ: callable and args become one value
                stack.pop()?;
                stack.pop()?;
                stack.push(Val::Other);
            }
            b'u' | b'e' => {
                // SETITEMS, APPENDS: fold into the object below the mark
                let at = stack.iter().rposition(|v| matches!(v, Val::Mark))?;
                stack.truncate(at);
            }
            b's' => {
                // SETITEM
                stack.pop()?;
                stack.pop()?;
            }
            b'b' | b'a' => drop(stack.pop()?), // BUILD, APPEND
            _ => return None,                  // STOP, or an opcode this walk does not know
        }
        Some(())
    }
}

/// `torch.BFloat16Storage` -> `bfloat16`; the untyped storages of newer torch name the dtype too.
fn storage_dtype(global: &str) -> String {
    let name = global.rsplit('.').next().unwrap_or(global);
    match name {
        "FloatStorage" => "float32",
        "HalfStorage" => "float16",
        "BFloat16Storage" => "bfloat16",
        "DoubleStorage" => "float64",
        "LongStorage" => "int64",
        "IntStorage" => "int32",
        "ShortStorage" => "int16",
        "CharStorage" => "int8",
        "ByteStorage" => "uint8",
        "BoolStorage" => "bool",
        other => other,
    }
    .to_string()
}

/// Reads the storage records. Offsets in the result are absolute file offsets.
pub fn parse(src: &dyn ReadAt) -> Result<Vec<TensorSpan>, LayoutError> {
    let members = members(src)?;
    let pkl = members
        .iter()
        .find(|m| m.name.ends_with("/data.pkl") || m.name == "data.pkl");
    let dtypes = match pkl {
        Some(p) if p.len <= MAX_PICKLE => storage_dtypes(&read(src, p.data_start, p.len)?),
        _ => HashMap::new(),
    };
    let spans: Vec<TensorSpan> = members
        .iter()
        .filter_map(|m| {
            let (dir, key) = m.name.rsplit_once('/')?;
            if !dir.ends_with("data") || key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let dtype = dtypes
                .get(key)
                .cloned()
                .unwrap_or_else(|| "unknown".to_string());
            Some(TensorSpan {
                name: format!("storage/{key}"),
                float_width: dtype_float_width(&dtype),
                block: None,
                dtype,
                start: m.data_start,
                end: m.data_start + m.len,
            })
        })
        .collect();
    if spans.is_empty() {
        return Err(bad("no stored tensor records"));
    }
    super::sorted_disjoint(spans, "torch zip")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunking::Bytes;

    /// `torch.save({'w': bf16 [64, 4], 'b': f32 [16], 'h': f16 [8], 'i': int64 [4]})`.
    const TINY: &[u8] = include_bytes!("../../tests/fixtures/tiny.pth");

    #[test]
    fn reads_a_torch_save_checkpoint() {
        assert!(looks_like(&Bytes(TINY)));
        let spans = parse(&Bytes(TINY)).unwrap();
        let mut dtypes: Vec<(&str, u64)> = spans
            .iter()
            .map(|s| (s.dtype.as_str(), s.end - s.start))
            .collect();
        dtypes.sort();
        assert_eq!(
            dtypes,
            [
                ("bfloat16", 512),
                ("float16", 16),
                ("float32", 64),
                ("int64", 32)
            ]
        );
        for s in &spans {
            assert_eq!(s.start % 64, 0, "torch aligns storages to 64 bytes");
        }
        assert_eq!(spans.iter().filter(|s| s.float_width.is_some()).count(), 3);
    }

    #[test]
    fn refuses_damaged_archives() {
        for cut in [10, 100, TINY.len() / 2, TINY.len() - 1] {
            assert!(parse(&Bytes(&TINY[..cut])).is_err(), "cut at {cut}");
        }
        // A damaged pickle only loses dtypes.
        let mut pkl_broken = TINY.to_vec();
        if let Some(at) = pkl_broken.windows(7).position(|w| w == b"storage") {
            pkl_broken[at] = b'X';
        }
        let spans = parse(&Bytes(&pkl_broken)).unwrap();
        assert!(spans.iter().any(|s| s.dtype == "unknown"));
    }
}
