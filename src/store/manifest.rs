//! The manifest of one model: its files (path, size, mode, mtime, BLAKE3) and, for every file,
//! its chunks in order with their codec, stored length and the members holding replicas.
//!
//! On disk a manifest is `{"checksum": "<blake3 of the manifest text>", "manifest": {...}}`, so a
//! damaged copy is detected even where it still parses. Loading checks every invariant a reader
//! relies on (chunks tile each file exactly, paths stay inside the model), so a hostile or
//! damaged manifest can never make a reader return wrong bytes.

use crate::chunking::{MAX_CHUNK_SIZE, TensorTag};
use crate::codec::delta::DeltaOp;
use crate::codec::{Codec, Hash32};
use crate::placement::Placement;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashSet;

mod format;
use format::format_needed;
pub use format::{MANIFEST_FORMAT, NEWER, format_for, is_newer};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    /// Grows by one on every re-pack of the name; readers take the highest valid copy.
    pub version: u64,
    pub created_unix: u64,
    pub chunk_size: u64,
    pub codec: String,
    pub level: i32,
    pub placement: Placement,
    pub replicas: usize,
    pub files: Vec<FileEntry>,
    /// The store's members when the model was packed, so that a report can name a member that
    /// is gone by its index too. Empty in manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberRef>,
    /// The model the deltas of this one were taken against (`pack --base`), as `name@version`,
    /// for people: the chunks themselves name what they need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The exact bytes this manifest was read from, signature included (see `Sealed`).
    #[serde(skip)]
    pub sealed: Sealed,
}

/// The bytes a manifest copy was read from, so that a manifest passed on unchanged (repair,
/// a new member) is written exactly as its signer wrote it. Not part of what the manifest says:
/// never serialized, and equal to any other.
#[derive(Clone, Default)]
pub struct Sealed(pub Option<std::sync::Arc<[u8]>>);

impl PartialEq for Sealed {
    fn eq(&self, _: &Sealed) -> bool {
        true
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({:?} bytes)", self.0.as_ref().map(|b| b.len()))
    }
}

/// A member as a manifest remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRef {
    pub id: String,
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path inside the model, `/`-separated.
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
    pub blake3: Hash32,
    pub chunks: Vec<ChunkRef>,
    /// Set when the stored bytes differ from the packed file by design (`pack --lossy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lossy: Option<Lossy>,
}

#[cfg(test)]
impl FileEntry {
    /// A file `f` of `size` bytes held by `chunks`, as the unit tests build one.
    pub fn for_test(size: u64, chunks: Vec<ChunkRef>) -> FileEntry {
        FileEntry {
            path: "f".into(),
            size,
            mode: 0o444,
            mtime_secs: 0,
            mtime_nanos: 0,
            blake3: Hash32::of(b""),
            chunks,
            lossy: None,
        }
    }

    /// A file of raw chunks of `lens` bytes, one after the other, each named by the hash of its
    /// offset (not of its bytes).
    pub fn of_chunks_for_test(lens: &[u64]) -> FileEntry {
        let mut offset = 0;
        let chunks = lens
            .iter()
            .map(|&len| {
                let c = ChunkRef {
                    offset,
                    len,
                    hash: Hash32::of(&offset.to_le_bytes()),
                    codec: crate::codec::Codec::None,
                    stored_len: len,
                    members: Vec::new(),
                    tensors: Vec::new(),
                    delta: None,
                    inline: None,
                };
                offset += len;
                c
            })
            .collect();
        FileEntry::for_test(offset, chunks)
    }
}

/// Where one file's chunks sit among all the chunks of its model (see `Manifest::chunk_places`).
#[derive(Debug, Clone, Copy)]
pub struct ChunkPlaces {
    /// The position of the file's first chunk.
    first: u64,
    /// The model's chunk count.
    total: u64,
}

impl ChunkPlaces {
    /// The position of chunk `c`, the `i`-th of its file.
    pub fn of<'a>(&self, i: usize, c: &'a ChunkRef) -> crate::placement::ChunkPos<'a> {
        crate::placement::ChunkPos {
            hash: &c.hash,
            index: self.first + i as u64,
            total: self.total,
        }
    }
}

/// How a lossy file differs from the file that was packed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lossy {
    /// `bf16`: fp32 tensors stored as bf16 (round to nearest even), header rewritten to match.
    pub kind: String,
    pub original_size: u64,
    pub original_blake3: Hash32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub offset: u64,
    pub len: u64,
    pub hash: Hash32,
    pub codec: Codec,
    pub stored_len: u64,
    /// Member ids holding a replica, primary first.
    pub members: Vec<String>,
    /// The tensors (or parts of tensors) this chunk holds, when the file's layout is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<TensorTag>,
    /// Set when the chunk is stored as a delta against a chunk of another model (`pack
    /// --base`): `codec`, `stored_len` and `members` then describe the stored delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    /// The chunk's bytes, for a chunk too small for a chunk file of its own to pay (see
    /// `writer::INLINE_MAX`): kept in the manifest, on no member, with no replica list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<Inline>,
}

/// A chunk's bytes kept in the manifest, written as hex.
#[derive(Debug, Clone, PartialEq)]
pub struct Inline(pub Vec<u8>);

impl Serialize for Inline {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Inline {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Inline, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map(Inline).map_err(serde::de::Error::custom)
    }
}

/// A chunk stored as a delta against a base chunk: its bytes made from the base's by `op`
/// (the XOR, or element-wise differences). Reading it checks the delta's replicas with the
/// base applied against the chunk's `hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// BLAKE3 of the delta's bytes: the name its replicas are stored under.
    pub object: Hash32,
    /// The base chunk, stored whole (a delta is never taken against a delta).
    pub base: Box<ChunkRef>,
    /// How the delta's bytes were made (the XOR when the manifest says nothing).
    #[serde(default, skip_serializing_if = "DeltaOp::is_xor")]
    pub op: DeltaOp,
}

impl ChunkRef {
    /// How this chunk is made from its delta and base (the XOR for a chunk that is no delta).
    pub fn delta_op(&self) -> DeltaOp {
        self.delta.as_ref().map_or_else(DeltaOp::default, |d| d.op)
    }

    /// The name this chunk's replicas are stored under: its hash, or its delta's.
    pub fn object(&self) -> &Hash32 {
        self.delta.as_ref().map_or(&self.hash, |d| &d.object)
    }

    /// The stored chunks reading this one needs: itself (unless its bytes are inline), and its
    /// delta's base when it has one. Every command that keeps, copies or checks a model's
    /// chunks goes over these.
    pub fn needs(&self) -> impl Iterator<Item = &ChunkRef> {
        let own = self.inline.is_none().then_some(self);
        own.into_iter().chain(self.delta.as_ref().map(|d| &*d.base))
    }

    /// The `k`-th of `needs`, to change (its replica list).
    pub fn need_mut(&mut self, k: usize) -> Option<&mut ChunkRef> {
        match k {
            0 => Some(self),
            1 => self.delta.as_mut().map(|d| &mut *d.base),
            _ => None,
        }
    }
}

/// The manifest text inside a copy's envelope, once its checksum matches.
fn envelope(bytes: &[u8]) -> Result<&str, String> {
    let env: EnvelopeIn<'_> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
    if Hash32::of(env.manifest.get().as_bytes()).to_hex() != env.checksum {
        return Err("checksum mismatch".to_string());
    }
    Ok(env.manifest.get())
}

#[derive(Deserialize)]
struct Head {
    format_version: u32,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    checksum: String,
    #[serde(borrow)]
    manifest: &'a RawValue,
}

/// Which of two valid copies of a model's manifest is current: the higher version, then the
/// later pack, then the higher hash of its bytes, so that every reader picks the same one. The
/// one ordering every reader of copies uses (the store, repair, rebalance, a live mount).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    version: u64,
    created_unix: u64,
    hash: String,
}

impl Precedence {
    /// The version of the copy it belongs to.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// The current one of valid copies of a model's manifest (see `Precedence`).
pub fn current<'a>(copies: impl IntoIterator<Item = &'a Manifest>) -> Option<&'a Manifest> {
    // Each copy's precedence computed once: it hashes the serialized manifest.
    copies
        .into_iter()
        .map(|m| (m.precedence(), m))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, m)| m)
}

impl Manifest {
    /// Where this copy stands among the copies of its model.
    pub fn precedence(&self) -> Precedence {
        let bytes = self.to_bytes().unwrap_or_default();
        Precedence {
            version: self.version,
            created_unix: self.created_unix,
            hash: Hash32::of(&bytes).to_hex(),
        }
    }

    /// The bytes written to `manifests/<name>.json`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let body = serde_json::to_string(self)?;
        let checksum = Hash32::of(body.as_bytes());
        Ok(format!("{{\"checksum\":\"{checksum}\",\"manifest\":{body}}}\n").into_bytes())
    }

    /// Parses and checks a manifest file; the error is a short reason. A copy this build cannot
    /// read because a newer shardfs wrote it (a higher format number, a codec it does not know)
    /// says so (see `is_newer`): it is not damaged, and its chunks are kept (`newer_chunks`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, String> {
        let body = envelope(bytes)?;
        let head: Head = serde_json::from_str(body).map_err(|e| format!("bad manifest: {e}"))?;
        if head.format_version > MANIFEST_FORMAT {
            return Err(format!(
                "{NEWER} (manifest format {}; this build reads {MANIFEST_FORMAT})",
                head.format_version
            ));
        }
        let m: Manifest = serde_json::from_str(body).map_err(|e| {
            if e.to_string().contains("unknown variant") {
                format!("{NEWER} ({e})")
            } else {
                format!("bad manifest: {e}")
            }
        })?;
        m.validate()?;
        Ok(m)
    }

    /// The chunks a copy written by a newer shardfs names, read as loosely as its checksum
    /// allows, so that `gc` keeps them.
    pub fn newer_chunks(bytes: &[u8]) -> Result<Vec<Hash32>, String> {
        #[derive(Deserialize)]
        struct Delta {
            object: Hash32,
            base: Box<Chunk>,
        }
        #[derive(Deserialize)]
        struct Chunk {
            hash: Hash32,
            #[serde(default)]
            delta: Option<Delta>,
        }
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            chunks: Vec<Chunk>,
        }
        #[derive(Deserialize)]
        struct Loose {
            #[serde(default)]
            files: Vec<File>,
        }
        let loose: Loose = serde_json::from_str(envelope(bytes)?)
            .map_err(|e| format!("its chunks cannot be read: {e}"))?;
        Ok(loose
            .files
            .into_iter()
            .flat_map(|f| f.chunks)
            .flat_map(|c| match c.delta {
                Some(d) => vec![d.object, d.base.hash],
                None => vec![c.hash],
            })
            .collect())
    }

    /// Checks what readers rely on.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MANIFEST_FORMAT).contains(&self.format_version) {
            return Err(format!(
                "manifest format {} is not supported (this build reads 1 to {MANIFEST_FORMAT})",
                self.format_version
            ));
        }
        if self.format_version < format_needed(&self.files) {
            return Err(format!(
                "manifest format {} cannot hold the deltas it lists (element-wise differences need format 2)",
                self.format_version
            ));
        }
        let mut paths = HashSet::new();
        for f in &self.files {
            check_rel_path(&f.path)?;
            if !paths.insert(f.path.as_str()) {
                return Err(format!("file '{}' listed twice", f.path));
            }
            let mut next = 0u64;
            for c in &f.chunks {
                if c.offset != next || c.len == 0 || c.len > MAX_CHUNK_SIZE {
                    return Err(format!(
                        "file '{}': chunks do not tile the file at offset {next}",
                        f.path
                    ));
                }
                if c.needs().any(|c| c.members.is_empty()) {
                    return Err(format!(
                        "file '{}': chunk at {} has no replica",
                        f.path, c.offset
                    ));
                }
                if c.inline.as_ref().is_some_and(|i| {
                    i.0.len() as u64 != c.len || c.delta.is_some() || !c.members.is_empty()
                }) {
                    return Err(format!(
                        "file '{}': chunk at {} holds inline bytes of another length, or a delta or replicas too",
                        f.path, c.offset
                    ));
                }
                if let Some(d) = &c.delta
                    && (d.base.len != c.len || d.base.delta.is_some() || d.base.inline.is_some())
                {
                    return Err(format!(
                        "file '{}': chunk at {} has a base of another length or a base that is a delta",
                        f.path, c.offset
                    ));
                }
                next = c.offset + c.len;
            }
            if next != f.size {
                return Err(format!(
                    "file '{}': chunks cover {next} of {} bytes",
                    f.path, f.size
                ));
            }
        }
        // A path may not be both a file and a directory of another file: in sorted order, the
        // first path at or after `p/` would start with it (n log n, whatever the depth).
        let mut sorted: Vec<&str> = paths.into_iter().collect();
        sorted.sort_unstable();
        for p in &sorted {
            let dir = format!("{p}/");
            let at = sorted.partition_point(|q| *q < dir.as_str());
            if sorted.get(at).is_some_and(|q| q.starts_with(&dir)) {
                return Err(format!("'{p}' is both a file and a directory"));
            }
        }
        Ok(())
    }

    pub fn logical_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Stored bytes of one copy of each distinct chunk (a delta's, not its base's: the base
    /// is another model's).
    pub fn stored_size(&self) -> u64 {
        let mut seen = HashSet::new();
        self.files
            .iter()
            .flat_map(|f| &f.chunks)
            .filter(|c| seen.insert(*c.object()))
            .map(|c| c.stored_len)
            .sum()
    }

    /// Every stored chunk the model's chunks need (see `ChunkRef::needs`), repeats included.
    pub fn needed(&self) -> impl Iterator<Item = &ChunkRef> {
        self.files
            .iter()
            .flat_map(|f| &f.chunks)
            .flat_map(|c| c.needs())
    }

    /// How many chunks are stored as deltas against a base.
    pub fn delta_count(&self) -> usize {
        self.files
            .iter()
            .flat_map(|f| &f.chunks)
            .filter(|c| c.delta.is_some())
            .count()
    }

    /// Logical and stored bytes per dtype of the chunks' tensors: `mixed` for chunks holding
    /// several dtypes, `untyped` for chunks of files whose layout is not known. Repeated chunks
    /// count once.
    pub fn by_dtype(&self) -> std::collections::BTreeMap<String, (u64, u64)> {
        let mut out = std::collections::BTreeMap::new();
        let mut seen = HashSet::new();
        for c in self.files.iter().flat_map(|f| &f.chunks) {
            if !seen.insert(c.hash) {
                continue;
            }
            let mut dtypes = c.tensors.iter().map(|t| t.dtype.as_str());
            let key = match dtypes.next() {
                None => "untyped",
                Some(first) if dtypes.all(|d| d == first) => first,
                Some(_) => "mixed",
            };
            let e = out.entry(key.to_string()).or_insert((0, 0));
            e.0 += c.len;
            e.1 += c.stored_len;
        }
        out
    }

    /// Whether any file is stored lossily.
    pub fn is_lossy(&self) -> bool {
        self.files.iter().any(|f| f.lossy.is_some())
    }

    pub fn chunk_count(&self) -> usize {
        self.files.iter().map(|f| f.chunks.len()).sum()
    }

    /// For each file, where its chunks sit among all the model's chunks (numbered across the
    /// files in order), as placement takes them: `places[f].of(i, chunk)` is the position of
    /// chunk `i` of file `f`.
    pub fn chunk_places(&self) -> Vec<ChunkPlaces> {
        let total = self.chunk_count() as u64;
        self.files
            .iter()
            .scan(0u64, |next, f| {
                let first = *next;
                *next += f.chunks.len() as u64;
                Some(ChunkPlaces { first, total })
            })
            .collect()
    }

    /// The index a member had when the model was packed, when the manifest recorded it.
    pub fn member_index(&self, id: &str) -> Option<u32> {
        self.members.iter().find(|m| m.id == id).map(|m| m.index)
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        let path = path.trim_start_matches('/');
        self.files.iter().find(|f| f.path == path)
    }
}

/// The longest file path a manifest may hold, and its deepest nesting (those of Linux).
pub const MAX_PATH_LEN: usize = 4096;
pub const MAX_NAME_LEN: usize = 255;

/// A model-relative path: non-empty `/`-separated components, none empty, `.` or `..`, of at
/// most `MAX_NAME_LEN` bytes each and `MAX_PATH_LEN` in all.
pub fn check_rel_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_LEN {
        return Err(format!(
            "file path of {} bytes in manifest (at most {MAX_PATH_LEN})",
            path.len()
        ));
    }
    if path.is_empty()
        || path.split('/').any(|c| {
            c.is_empty() || c == "." || c == ".." || c.contains('\0') || c.len() > MAX_NAME_LEN
        })
    {
        return Err(format!("unsafe file path {path:?} in manifest"));
    }
    Ok(())
}

/// Model names are file names: 1-128 of `A-Z a-z 0-9 . _ - +`, not starting with `.`.
pub fn check_model_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid model name '{name}': use 1-128 letters, digits, '.', '_', '-' or '+', not starting with '.' (set one with --name)"
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests;
