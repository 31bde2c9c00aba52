//! Decoding a chunk in pieces, for a chunk too large to hold whole (a chunk larger than the
//! whole cache, which a member may hold whatever the manifest says): the stored payload is read
//! by ranges, decoded a piece at a time and handed on in order, in working memory bounded by
//! [`STREAM_MEMORY`] whatever the chunk's size or codec. The caller hashes every piece and keeps
//! the part it needs; nothing is returned before the whole chunk has matched its hash.
//!
//! A grouped payload (floats, quantization blocks) is decoded with one reader per byte group,
//! all moving forward together. A chunk that cannot be decoded within the bound (a zstd frame
//! asking for a window over [`WINDOW_LOG_MAX`], too many compressed groups) is refused.

use super::frames::Table;
use super::group;
use super::{ChunkHeader, Codec, CodecError};
use std::io::{self, BufReader, Read};

/// The most working memory a streamed decode takes, besides the bytes its caller keeps.
pub const STREAM_MEMORY: u64 = 16 << 20;

/// The largest zstd window a streamed whole-chunk payload may ask for (8 MiB: what level 19
/// uses on large chunks; levels 20-22 on chunks over 8 MiB ask for more).
pub const WINDOW_LOG_MAX: u32 = 23;

/// Byte groups are always written with a 128 KiB window (`Tuning::Group`).
const GROUP_WINDOW_LOG_MAX: u32 = 17;

/// What one zstd reader holds besides its window: two blocks and its tables.
const ZSTD_STATE: u64 = 384 << 10;

/// Bytes handed on per step.
const PIECE: usize = 1 << 20;

/// Reads `len` bytes of the stored payload at `offset` (counted from the payload's start).
pub type Fetch<'a> = dyn Fn(u64, usize) -> io::Result<Vec<u8>> + 'a;

/// Hears the decoded chunk, in order, a piece at a time.
pub type Sink<'a> = dyn FnMut(&[u8]) -> Result<(), CodecError> + 'a;

/// Decodes the payload of a chunk whose header is `header`, reading it through `fetch`, and
/// hands its bytes to `sink` in order: exactly `header.raw_len` of them, or an error. A chunk
/// stored in frames gives back its frame table, for the caller to check against the hash.
pub fn decode(
    header: ChunkHeader,
    fetch: &Fetch<'_>,
    sink: &mut Sink<'_>,
) -> Result<Option<Table>, CodecError> {
    let raw_len = usize::try_from(header.raw_len).map_err(|_| CodecError::BadHeader)?;
    let mut counted = Counted {
        left: raw_len,
        sink,
    };
    if header.frame_log != 0 {
        return framed(header, fetch, &mut counted).map(Some);
    }
    match header.codec {
        Codec::None => {
            if header.payload_len != header.raw_len {
                return Err(CodecError::WrongLength {
                    expected: header.raw_len,
                    found: header.payload_len,
                });
            }
            let mut reader = Ranged::new(fetch, 0, header.payload_len, PIECE);
            pump(&mut reader, &mut counted)?;
        }
        Codec::Zstd => {
            let ranged = Ranged::new(fetch, 0, header.payload_len, PIECE);
            let mut reader = zstd_reader(ranged, PIECE, WINDOW_LOG_MAX)?;
            pump(&mut reader, &mut counted)?;
        }
        Codec::Float16 | Codec::Float32 | Codec::Blocks => {
            grouped(header, fetch, &mut counted)?;
        }
        // An fp8 payload is decoded whole: its chunks are at most a few times the bound.
        Codec::Fp8 if header.raw_len + header.payload_len <= 4 * STREAM_MEMORY => {
            let payload = fetch(0, header.payload_len as usize)
                .map_err(|e| CodecError::Read(e.to_string()))?;
            let mut out = vec![0u8; raw_len];
            super::fp8::decode(&payload, &mut out, &mut super::zstd_decompress)?;
            counted.give(&out)?;
        }
        Codec::Fp8 => {
            return Err(CodecError::Decompress(
                "an fp8 chunk this large is not decoded in pieces".into(),
            ));
        }
    }
    if counted.left != 0 {
        return Err(CodecError::WrongLength {
            expected: header.raw_len,
            found: header.raw_len - counted.left as u64,
        });
    }
    Ok(None)
}

/// A chunk stored in frames: its table, then one frame at a time; the table.
fn framed(
    header: ChunkHeader,
    fetch: &Fetch<'_>,
    sink: &mut Counted<'_, '_>,
) -> Result<Table, CodecError> {
    use super::frames::{ENTRY_LEN, count};
    let too_large = |what: &str| {
        CodecError::Decompress(format!(
            "{what} too large to decode in pieces within memory"
        ))
    };
    let table_len = count(header.raw_len, header.frame_log) * ENTRY_LEN;
    let frame = 1usize << header.frame_log;
    if table_len as u64 > STREAM_MEMORY / 4 || frame as u64 > STREAM_MEMORY / 4 {
        return Err(too_large("a frame table or frame"));
    }
    let table = Table::parse(&header, &fetch(0, table_len).map_err(read_err)?)?;
    let mut out = vec![0u8; frame];
    for i in 0..table.len() {
        // Each at most `max_frame_stored` (checked by `Table::parse`).
        let stored = table.stored(&(i..i + 1));
        let len = (stored.end - stored.start) as usize;
        let at = table.output(i);
        let out = &mut out[..(at.end - at.start) as usize];
        let bytes = fetch(stored.start, len).map_err(read_err)?;
        table.decode_frame(header.codec, i, &bytes, out)?;
        sink.give(out)?;
    }
    Ok(table)
}

/// A sink that refuses more than the chunk's length.
struct Counted<'s, 'a> {
    left: usize,
    sink: &'s mut Sink<'a>,
}

impl Counted<'_, '_> {
    fn give(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        if bytes.len() > self.left {
            return Err(CodecError::Decompress(
                "the payload decodes to more than the chunk's length".into(),
            ));
        }
        self.left -= bytes.len();
        (self.sink)(bytes)
    }
}

fn read_err(e: io::Error) -> CodecError {
    match e.kind() {
        io::ErrorKind::Other => CodecError::Read(e.to_string()),
        _ => CodecError::Decompress(e.to_string()),
    }
}

/// Hands everything `reader` gives to `sink`.
fn pump(reader: &mut dyn Read, sink: &mut Counted<'_, '_>) -> Result<(), CodecError> {
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = read_full(reader, &mut buf).map_err(read_err)?;
        if n == 0 {
            return Ok(());
        }
        sink.give(&buf[..n])?;
    }
}

/// Fills `buf` unless the reader ends first; the bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match reader.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

fn zstd_reader<'a>(
    ranged: Ranged<'a>,
    buffer: usize,
    window_log_max: u32,
) -> Result<zstd::stream::read::Decoder<'static, BufReader<Ranged<'a>>>, CodecError> {
    let mut d = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(buffer, ranged))
        .map_err(|e| CodecError::Decompress(e.to_string()))?;
    d.window_log_max(window_log_max)
        .map_err(|e| CodecError::Decompress(e.to_string()))?;
    Ok(d)
}

/// One byte group's decoded bytes, read forward.
enum GroupReader<'a> {
    Raw(Ranged<'a>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Ranged<'a>>>),
    /// A sparse group, decoded whole (it is small: one byte per element).
    Whole(io::Cursor<Vec<u8>>),
}

impl Read for GroupReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            GroupReader::Raw(r) => r.read(buf),
            GroupReader::Zstd(r) => r.read(buf),
            GroupReader::Whole(r) => r.read(buf),
        }
    }
}

/// Decodes a grouped payload: every group's reader moves forward by the same number of
/// elements per step, and the step's elements are joined and handed on.
fn grouped(
    header: ChunkHeader,
    fetch: &Fetch<'_>,
    sink: &mut Counted<'_, '_>,
) -> Result<(), CodecError> {
    let raw_len = sink.left;
    let rotate = header.codec != Codec::Blocks;
    let head_len = header.payload_len.min(2 + 9 * group::MAX_WIDTH as u64) as usize;
    let head = fetch(0, head_len).map_err(read_err)?;
    let table = group::read_table(&head, rotate, raw_len, header.payload_len)?;
    let width = table.width;
    let count = |mode| table.groups.iter().filter(|(m, _)| *m == mode).count() as u64;
    let zstd_groups = count(group::Mode::Zstd);
    // Sparse and entropy-coded groups are decoded whole.
    let whole_groups = count(group::Mode::Sparse) + count(group::Mode::Ans);
    // Each group reads its stored bytes this many at a time.
    let buffer = if width <= 4 {
        256 << 10
    } else {
        ((4 << 20) / width).max(16 << 10)
    };
    let step = (PIECE / width).max(1);
    let n = raw_len / width;
    let needs = width as u64 * buffer as u64
        + zstd_groups * ((1 << GROUP_WINDOW_LOG_MAX) + ZSTD_STATE)
        // Each group decoded whole while later groups decode, and one decoding: its stored
        // bytes (no more than the group) and a sparse group's list (under 0.6 of it).
        + (whole_groups + 2 * u64::from(whole_groups > 0)) * n as u64
        + 2 * (step * width) as u64;
    if needs > STREAM_MEMORY {
        return Err(CodecError::Decompress(format!(
            "{width} byte groups ({zstd_groups} compressed) need {} MiB to decode in pieces, over the {} MiB allowed",
            needs >> 20,
            STREAM_MEMORY >> 20
        )));
    }
    let mut at = table.len() as u64;
    let mut readers = Vec::with_capacity(width);
    for &(mode, len) in &table.groups {
        let ranged = Ranged::new(fetch, at, at + len as u64, buffer);
        readers.push(match mode {
            group::Mode::Raw => GroupReader::Raw(ranged),
            group::Mode::Zstd => {
                GroupReader::Zstd(zstd_reader(ranged, buffer, GROUP_WINDOW_LOG_MAX)?)
            }
            group::Mode::Sparse | group::Mode::Ans => {
                // Kept only where smaller than the group raw: a member's claim of more is
                // not fetched.
                if len > n {
                    return Err(CodecError::Decompress(
                        "grouped codec: a sparse or entropy-coded group larger than the group"
                            .into(),
                    ));
                }
                let stored = fetch(at, len).map_err(read_err)?;
                let mut whole = vec![0u8; n];
                group::unpack(mode, &stored, &mut whole, &mut super::zstd_decompress)?;
                GroupReader::Whole(io::Cursor::new(whole))
            }
        });
        at += len as u64;
    }
    let mut groups = vec![vec![0u8; step]; width];
    let mut out = vec![0u8; step * width];
    let mut done = 0;
    while done < n {
        let k = step.min(n - done);
        for (reader, g) in readers.iter_mut().zip(groups.iter_mut()) {
            if read_full(reader, &mut g[..k]).map_err(read_err)? != k {
                return Err(CodecError::Decompress(
                    "grouped codec: a group ends before its elements do".into(),
                ));
            }
        }
        let parts: Vec<&[u8]> = groups.iter().map(|g| &g[..k]).collect();
        group::join(&parts, rotate, &mut out[..k * width]);
        sink.give(&out[..k * width])?;
        done += k;
    }
    let tail = raw_len - n * width;
    if tail > 0 {
        sink.give(&fetch(at, tail).map_err(read_err)?)?;
    }
    Ok(())
}

/// Bytes `at..end` of the payload, fetched `piece` bytes at a time as they are read.
struct Ranged<'a> {
    fetch: &'a Fetch<'a>,
    at: u64,
    end: u64,
    piece: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> Ranged<'a> {
    fn new(fetch: &'a Fetch<'a>, at: u64, end: u64, piece: usize) -> Ranged<'a> {
        Ranged {
            fetch,
            at,
            end,
            piece,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for Ranged<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.at >= self.end {
                return Ok(0);
            }
            let n = (self.end - self.at).min(self.piece as u64) as usize;
            self.buf = (self.fetch)(self.at, n)?;
            if self.buf.len() != n {
                return Err(io::Error::other(format!(
                    "{} bytes read of the {n} asked",
                    self.buf.len()
                )));
            }
            self.at += n as u64;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, CodecChoice, Content, HEADER_LEN};
    use std::cell::Cell;

    /// Decodes `image` in pieces, counting the ranged reads; the bytes, or the error.
    fn streamed(image: &[u8]) -> (Result<Vec<u8>, CodecError>, usize) {
        let header = ChunkHeader::parse(image).unwrap();
        let payload = &image[HEADER_LEN..];
        let reads = Cell::new(0);
        let fetch = |at: u64, len: usize| -> io::Result<Vec<u8>> {
            reads.set(reads.get() + 1);
            let at = at as usize;
            payload
                .get(at..at + len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::other("past the end"))
        };
        let mut out = Vec::new();
        let got = decode(header, &fetch, &mut |piece| {
            out.extend_from_slice(piece);
            Ok(())
        });
        (got.map(|_| out), reads.get())
    }

    fn weights(n: usize) -> Vec<u8> {
        let mut x: u32 = 7;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 2 == 1 { 0x3c } else { (x >> 9) as u8 }
            })
            .collect()
    }

    #[test]
    fn every_codec_decodes_in_pieces_to_the_same_bytes() {
        let raw = weights((3 << 20) + 5);
        let cases = [
            (CodecChoice::None, Content::Bytes, Codec::None),
            (CodecChoice::Zstd, Content::Bytes, Codec::Zstd),
            (CodecChoice::Auto, Content::Floats(2), Codec::Float16),
            (CodecChoice::Auto, Content::Floats(4), Codec::Float32),
            (CodecChoice::Auto, Content::Blocks(34), Codec::Blocks),
        ];
        for (choice, content, codec) in cases {
            let (got_codec, image) = codec::encode(&raw, choice, 3, content).unwrap();
            assert_eq!(got_codec, codec);
            let (got, reads) = streamed(&image);
            assert!(got.unwrap() == raw, "{codec:?}");
            assert!(reads > 1, "{codec:?}: read in one piece");
        }
    }

    #[test]
    fn an_entropy_coded_group_decodes_in_pieces() {
        // One frame's worth or less: stored in one piece, grouped, its exponents entropy-coded.
        let raw = group::tests::bf16(50_000);
        let (codec, image) = codec::encode(&raw, CodecChoice::Auto, 3, Content::Floats(2)).unwrap();
        assert_eq!(codec, Codec::Float16);
        let head = &image[HEADER_LEN..];
        let table = group::read_table(head, true, raw.len(), head.len() as u64).unwrap();
        assert_eq!(table.groups[1].0, group::Mode::Ans);
        let (got, _) = streamed(&image);
        assert!(got.unwrap() == raw);
    }

    #[test]
    fn a_sparse_group_decodes_in_pieces() {
        // One frame's worth or less: stored in one piece, grouped, its exponents sparse.
        let raw = group::tests::bf16_delta(50_000);
        let (codec, image) = codec::encode(&raw, CodecChoice::Auto, 3, Content::Floats(2)).unwrap();
        assert_eq!(codec, Codec::Float16);
        let head = &image[HEADER_LEN..];
        let table = group::read_table(head, true, raw.len(), head.len() as u64).unwrap();
        assert_eq!(table.groups[1].0, group::Mode::Sparse);
        let (got, _) = streamed(&image);
        assert!(got.unwrap() == raw);
        // A member's copy whose sparse group claims more bytes than the group has: refused, not
        // fetched.
        let n = raw.len() / 2;
        let mut lying = image.clone();
        let entry = HEADER_LEN + 2 + 9;
        let len = u64::from_le_bytes(lying[entry + 1..entry + 9].try_into().unwrap());
        lying[entry + 1..entry + 9].copy_from_slice(&(len + n as u64 + 1).to_le_bytes());
        lying.extend(std::iter::repeat_n(0u8, n + 1));
        let mut header = ChunkHeader::parse(&lying).unwrap();
        header.payload_len += n as u64 + 1;
        lying[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        let (got, _) = streamed(&lying);
        assert!(
            got.unwrap_err()
                .to_string()
                .contains("larger than the group")
        );
    }

    #[test]
    fn damage_and_lies_are_errors_not_bytes() {
        let raw = weights(1 << 20);
        let (_, image) = codec::encode(&raw, CodecChoice::Auto, 3, Content::Floats(2)).unwrap();
        // A header claiming more bytes than the payload holds.
        let mut longer = image.clone();
        let mut header = ChunkHeader::parse(&image).unwrap();
        header.raw_len += 2;
        longer[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        assert!(streamed(&longer).0.is_err());
        // A payload cut short.
        let mut cut = image.clone();
        cut.truncate(image.len() - 100);
        assert!(streamed(&cut).0.is_err());
        // A zstd payload that decodes to more than the header says.
        let (_, z) = codec::encode(&raw, CodecChoice::Zstd, 3, Content::Bytes).unwrap();
        let mut fewer = z.clone();
        let mut header = ChunkHeader::parse(&z).unwrap();
        header.raw_len -= 1;
        fewer[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        assert!(streamed(&fewer).0.is_err());
    }

    #[test]
    fn a_window_too_large_to_stream_is_refused() {
        let raw = weights(20 << 20);
        let big = zstd::bulk::Compressor::new(22)
            .and_then(|mut c| {
                c.set_parameter(zstd::zstd_safe::CParameter::WindowLog(24))?;
                c.compress(&raw)
            })
            .unwrap();
        let mut image = ChunkHeader {
            codec: Codec::Zstd,
            raw_len: raw.len() as u64,
            payload_len: big.len() as u64,
            frame_log: 0,
        }
        .to_bytes()
        .to_vec();
        image.extend_from_slice(&big);
        let err = streamed(&image).0.unwrap_err().to_string();
        assert!(err.contains("memory"), "{err}");
    }
}
