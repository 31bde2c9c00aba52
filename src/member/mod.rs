//! The I/O of one store member, the only code that touches a member's bytes: probe and
//! initialise it, get a chunk file's stored image (whole, a range or its header), put a chunk or
//! a manifest atomically, list and delete, flush, lock. A kind implements seven calls on named
//! objects and gets the rest from `MemberIo`'s provided calls. The kinds sit side by side: `dir`
//! (a local directory, a disk or a network mount) and `object` (one member over any
//! `object_store` client, built by `s3` for an `s3://BUCKET[/PREFIX]` and by `http` for a
//! read-only web server). `layout` names the keys all of them use.
//! Test twins (built for tests, and for integration tests with the `twins` feature): `mem`, a
//! member in memory, `faulty`, a wrapper that fails, stalls or corrupts any call (or its k-th),
//! and `twins`, which names them `twin://NAME` for stores opened by spec.
//! Nothing here checks a chunk's content: verification stays in the store, so no kind of member
//! can skip it. A call never waits longer than its deadline: `deadline` runs every call of
//! every kind on the member's own bounded pool of I/O threads and waits for it with the member's
//! timeout (plus, for a call that moves bytes, their size over the slowest rate allowed).

pub mod beneath;
pub mod deadline;
pub mod dir;
pub(crate) mod direct_io;
#[cfg(any(test, feature = "twins"))]
pub mod faulty;
#[cfg(test)]
mod forwarding;
#[cfg(feature = "http")]
pub mod http;
pub mod layout;
#[cfg(any(test, feature = "twins"))]
pub mod mem;
pub mod object;
pub mod s3;
mod s3_config;
mod s3_errors;
mod s3_url;
mod spec;
#[cfg(any(test, feature = "twins"))]
pub mod twins;

use crate::codec::{HEADER_LEN, Hash32};
pub use spec::{MemberSpec, recorded_location, unknown_scheme};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// A kind of member named by a URL: its schemes, the form the help shows, how a spec of it is
/// recorded in member lists, and how one opens.
pub(crate) struct UrlKind {
    pub(crate) schemes: &'static [&'static str],
    pub(crate) form: &'static str,
    pub(crate) spec: fn(&str) -> Result<String, MemberError>,
    pub(crate) open: fn(&str, &Options) -> OpenedMember,
}

/// A member opened, or why not.
pub(crate) type OpenedMember = Result<Arc<dyn MemberIo>, MemberError>;

/// Every kind of member this build knows by URL (`spec.rs` parses and records them); any other
/// spec is a directory. A new kind is a file beside `s3.rs`, its `mod` line and entry here, and
/// its cargo feature.
const URL_KINDS: &[UrlKind] = &[
    UrlKind {
        schemes: &["s3"],
        form: "s3://BUCKET[/PREFIX] (lowercase)",
        spec: s3::spec,
        open: |spec, opts| Ok(Arc::new(s3::open_spec(spec, opts)?)),
    },
    #[cfg(feature = "http")]
    UrlKind {
        schemes: &http::SCHEMES,
        form: "http(s)://HOST/PATH (read-only)",
        spec: http::spec,
        open: |spec, opts| Ok(Arc::new(http::open(spec, opts)?)),
    },
];

/// Why a member call did not do what was asked.
#[derive(Debug, Error)]
pub enum MemberError {
    /// The object (chunk, manifest, member file) is not there.
    #[error("not found")]
    Missing,
    /// A put that must not replace found something in place.
    #[error("already exists")]
    AlreadyExists,
    /// A conditional update found another version than the one it was based on.
    #[error("changed meanwhile by another writer")]
    Conflict,
    /// No answer within the member's deadline.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The member's place is not there: no directory, no bucket.
    #[error("{0}")]
    Absent(String),
    /// The spec names something that cannot be a member (a file, a bad URL).
    #[error("{0}")]
    Invalid(String),
    /// The member cannot be used at all: the bucket or directory is gone, credentials are
    /// refused, the endpoint is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// What the member holds cannot be right (an object too large for its chunk).
    #[error("{0}")]
    Corrupt(String),
    /// Any other failure of one request; another try may work.
    #[error("{0}")]
    Io(String),
}

impl MemberError {
    /// A failure that says the member is unwell (not merely lacking one object).
    pub fn is_member_fault(&self) -> bool {
        matches!(
            self,
            MemberError::TimedOut(_) | MemberError::Unavailable(_) | MemberError::Io(_)
        )
    }
}

impl From<std::io::Error> for MemberError {
    fn from(e: std::io::Error) -> MemberError {
        match e.kind() {
            std::io::ErrorKind::NotFound => MemberError::Missing,
            std::io::ErrorKind::AlreadyExists => MemberError::AlreadyExists,
            std::io::ErrorKind::TimedOut => MemberError::TimedOut(Duration::ZERO),
            _ => MemberError::Io(e.to_string()),
        }
    }
}

/// The stored image of a chunk file (header and payload), as a member returned it.
pub enum Image {
    /// Read into a buffer of its own, at `at..at + len`.
    Buf {
        buf: crate::buffer::ChunkBuf,
        at: usize,
        len: usize,
    },
    /// The body of a response.
    Bytes(bytes::Bytes),
}

impl Deref for Image {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Image::Buf { buf, at, len } => &buf[*at..*at + *len],
            Image::Bytes(b) => b,
        }
    }
}

/// The start of a chunk file, to tell whether a whole one is in place.
#[derive(Debug, Clone, Copy)]
pub struct ChunkHead {
    pub header: [u8; HEADER_LEN],
    /// Size of the whole stored file.
    pub size: u64,
}

/// A chunk file as a listing shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    pub hash: Hash32,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// A manifest as stored, with the token a conditional update names.
#[derive(Debug, Clone)]
pub struct Stored {
    pub bytes: Vec<u8>,
    /// The member's version of the object (an ETag, or a hash of a file's bytes).
    pub tag: String,
}

/// An entry as a listing shows it: its name (a model's, for a manifest), a stamp (an ETag, or
/// a file's inode, size and mtime) that differs after every rewrite, its size and when it was
/// last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub stamp: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// A named object's size and when it was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// What a manifest put may replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No copy may be there yet.
    Absent,
    /// The copy must still be the one read with this tag.
    Tag(String),
}

/// A member lock held for the length of a pack; released on drop.
pub trait Lock: Send {
    /// Temporary files of killed writes removed when the lock was taken.
    fn temp_files_removed(&self) -> u64 {
        0
    }
}

/// The lock of a member that has none (an object store): holding it excludes nobody.
pub struct NoLock;
impl Lock for NoLock {}

/// What `put_chunk` does where a chunk file is there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfPresent {
    /// Leaves it and answers `AlreadyExists` (a pack: an existing file is someone's copy).
    Refuse,
    /// Replaces it (repair: the file there is damaged; it is set aside first).
    Replace,
}

/// Whether `init` may make the member's outer place (an object store's bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// The bucket must be there already (writing a member file into a known member).
    Existing,
    /// The bucket is made where it is missing (a new member).
    Create,
}

/// What `sweep_damaged` does with the damaged files it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Counts them and leaves them (a dry run).
    Count,
    /// Deletes them.
    Delete,
}

/// What `sweep_damaged` found among the damaged files set aside.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stale {
    /// Deleted (or, in a dry run, to be deleted), and their bytes.
    pub deleted: u64,
    pub bytes: u64,
    /// Kept: younger than the minimum age.
    pub kept_young: u64,
}

/// One member's I/O. Synchronous and shareable: the store calls it from many threads.
///
/// A kind of member implements a handful of calls on named objects: read one whole (with a
/// cap) or a range of it, tell its size, write one (create or replace, or a conditional update
/// of a small one), list a folder, delete. Everything else is provided on top of those: the
/// member file, chunk files (whole, ranged, head, put that sets a damaged one aside, list,
/// delete, the sweep of damaged ones), manifests and store-level files, flush and lock. A kind
/// overrides a provided call where it has a better way (a directory reads chunks with direct
/// I/O and links a damaged one aside; a bucket lists every chunk in one listing). A wrapper
/// (deadlines, faults) forwards every call, provided ones too, so the kind's own ways stay in
/// use behind it.
pub trait MemberIo: Send + Sync + fmt::Debug {
    /// How the member was named (a path, or `s3://bucket/prefix`), for messages.
    fn location(&self) -> &str;
    /// A member across a network (latency in milliseconds, not microseconds): reads hedge to
    /// it later and keep more chunks in flight.
    fn remote(&self) -> bool;

    /// The small object at `key` (`manifests/m.json`, `members.json`, `leases/x.json`) and its
    /// tag, or `None`; anything there that is not a plain object of at most `cap` bytes is
    /// `Corrupt`, and is not read.
    fn get(&self, key: &str, cap: u64) -> Result<Option<Stored>, MemberError>;
    /// Bytes `offset..offset + len` of the object at `key`, exactly; `Missing` where there is
    /// none (or it is not a plain object), `Corrupt` where it ends sooner.
    fn read_at(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, MemberError>;
    /// The size and age of the plain object at `key`, or `None` where there is none.
    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, MemberError>;
    /// Replaces the small object at `key` in one step (readers see the old or the new), when
    /// what is there is what `expect` says; `Conflict` otherwise. A damaged object in the way
    /// (see `get`) counts as absent and is replaced. Durable when it returns. `key` may hold
    /// one folder.
    fn put(&self, key: &str, bytes: &[u8], cap: u64, expect: &Expect) -> Result<(), MemberError>;
    /// Writes the object at `key` in one atomic step (readers see it whole or not at all);
    /// where one is there, `IfPresent::Refuse` answers `AlreadyExists` and `Replace` replaces
    /// it. Durable after `flush`.
    fn write(&self, key: &str, bytes: &[u8], present: IfPresent) -> Result<(), MemberError>;
    /// The entries directly in folder `dir` (none where it is missing), each with a stamp that
    /// changes whenever the entry is rewritten. Entries that are not plain objects are listed
    /// too: reading one tells it is damaged.
    fn list(&self, dir: &str) -> Result<Vec<Listed>, MemberError>;
    /// Deletes the object at `key` durably (gone already is fine).
    fn delete(&self, key: &str) -> Result<(), MemberError>;

    /// The member file, or `None` where there is none (an empty directory or prefix).
    /// `Unavailable` where the member itself is not there (no directory, no bucket). Every
    /// read of a member's files is capped (`layout::META_MAX`, `layout::MANIFEST_MAX`): a
    /// larger one is `Corrupt`, not read.
    fn read_info(&self) -> Result<Option<Vec<u8>>, MemberError> {
        Ok(self
            .get(layout::MEMBER_FILE, layout::META_MAX)?
            .map(|s| s.bytes))
    }
    /// Makes the member's places (directories, the bucket with `Setup::Create`) and writes its
    /// member file.
    fn init(&self, info: &[u8], _setup: Setup) -> Result<(), MemberError> {
        self.write(layout::MEMBER_FILE, info, IfPresent::Replace)
    }

    /// A chunk file's whole stored image; `Corrupt` when it is larger than `max_len`.
    fn get_chunk(&self, hash: &Hash32, max_len: u64) -> Result<Image, MemberError> {
        let key = layout::chunk_key(hash);
        let info = self.stat(&key)?.ok_or(MemberError::Missing)?;
        if info.size > max_len {
            return Err(MemberError::Corrupt(format!(
                "{}-byte object, larger than any image of its chunk",
                info.size
            )));
        }
        let bytes = self.read_at(&key, 0, info.size as usize)?;
        Ok(Image::Bytes(bytes.into()))
    }
    /// Bytes `offset..offset + len` of a chunk file, exactly (a chunk too large to hold whole is
    /// read in pieces); `Missing` where there is no file, `Corrupt` where it ends sooner.
    fn read_chunk_at(
        &self,
        hash: &Hash32,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, MemberError> {
        self.read_at(&layout::chunk_key(hash), offset, len)
    }
    /// A chunk file's header and size, or `None` where it is missing or shorter than a header.
    fn chunk_head(&self, hash: &Hash32) -> Result<Option<ChunkHead>, MemberError> {
        let key = layout::chunk_key(hash);
        let Some(info) = self.stat(&key)? else {
            return Ok(None);
        };
        if info.size < HEADER_LEN as u64 {
            return Ok(None);
        }
        let bytes = match self.read_at(&key, 0, HEADER_LEN) {
            Ok(b) => b,
            Err(MemberError::Missing | MemberError::Corrupt(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let header = <[u8; HEADER_LEN]>::try_from(bytes.as_slice())
            .map_err(|_| MemberError::Io("short read of a chunk header".into()))?;
        Ok(Some(ChunkHead {
            header,
            size: info.size,
        }))
    }
    /// Writes a chunk file as one atomic step; `IfPresent::Replace` replaces a damaged one (first
    /// set aside under `damaged/`; the damaged file is never gone before the good one is in
    /// place), otherwise an existing file is `AlreadyExists`. Durable after `flush`.
    fn put_chunk(
        &self,
        hash: &Hash32,
        image: &[u8],
        present: IfPresent,
    ) -> Result<(), MemberError> {
        let key = layout::chunk_key(hash);
        if present == IfPresent::Replace {
            let aside = self.stat(&key).and_then(|info| match info {
                Some(info) => {
                    let old = self.read_at(&key, 0, info.size as usize)?;
                    self.write(&layout::damaged_key(hash), &old, IfPresent::Refuse)
                }
                None => Ok(()),
            });
            if let Err(e) = aside {
                log::warn!(
                    "{}: cannot set the damaged {key} aside: {e}",
                    self.location()
                );
            }
        }
        self.write(&key, image, present)
    }
    /// Every chunk file: hash, size, when it was last written (names that are not a hash are
    /// skipped).
    fn list_chunks(&self) -> Result<Vec<ChunkEntry>, MemberError> {
        let mut out = Vec::new();
        for shard in 0..=255u8 {
            for e in self.list(&format!("{}/{shard:02x}", layout::CHUNKS))? {
                if let Some(hash) = layout::chunk_name(&e.name) {
                    out.push(ChunkEntry {
                        hash,
                        size: e.size,
                        modified: e.modified,
                    });
                }
            }
        }
        Ok(out)
    }
    /// Deletes a chunk file; `Missing` where there is none.
    fn delete_chunk(&self, hash: &Hash32) -> Result<(), MemberError> {
        let key = layout::chunk_key(hash);
        self.stat(&key)?.ok_or(MemberError::Missing)?;
        self.delete(&key)
    }
    /// Damaged chunk files set aside (`damaged/`) older than `older_than`. Deletes them with
    /// `Sweep::Delete`; returns their count and bytes, and how many younger ones were kept.
    /// (Temporary files of killed writes go when the member's lock is taken: only then is no
    /// pack writing them.)
    fn sweep_damaged(&self, older_than: Duration, sweep: Sweep) -> Result<Stale, MemberError> {
        let now = std::time::SystemTime::now();
        let mut stale = Stale::default();
        for e in self.list(layout::DAMAGED)? {
            if now.duration_since(e.modified).unwrap_or_default() < older_than {
                stale.kept_young += 1;
                continue;
            }
            if sweep == Sweep::Delete {
                self.delete(&format!("{}/{}", layout::DAMAGED, e.name))?;
            }
            stale.deleted += 1;
            stale.bytes += e.size;
        }
        Ok(stale)
    }
    /// Makes every chunk put so far durable (an object store's writes are when they return).
    fn flush(&self) -> Result<(), MemberError> {
        Ok(())
    }
    /// Whether `lock` excludes every other writer (a directory's flock does; an object store
    /// has none, so a pack elsewhere may be writing while a lock is "held").
    fn exclusive_lock(&self) -> bool {
        false
    }
    /// Takes the member's pack lock without waiting (`Unavailable` naming the holder where it
    /// is taken) and clears what killed packs left behind. A kind without locks holds none.
    fn lock(&self) -> Result<Box<dyn Lock>, MemberError> {
        Ok(Box::new(NoLock))
    }

    /// Bytes free for new chunk files, where the member can tell (a file system can; an object
    /// store has no such figure).
    fn free_space(&self) -> Result<Option<u64>, MemberError> {
        Ok(None)
    }
    /// A model's manifest, or `None`.
    fn get_manifest(&self, name: &str) -> Result<Option<Stored>, MemberError> {
        self.get(&layout::manifest_key(name), layout::MANIFEST_MAX)
    }
    /// Replaces a model's manifest (see `put`).
    fn put_manifest(&self, name: &str, bytes: &[u8], expect: &Expect) -> Result<(), MemberError> {
        self.put(
            &layout::manifest_key(name),
            bytes,
            layout::MANIFEST_MAX,
            expect,
        )
    }
    /// The manifests held (`<name>.json` without the suffix), each with its stamp, so a live
    /// mount re-reads only copies that changed.
    fn list_manifests(&self) -> Result<Vec<Listed>, MemberError> {
        Ok(self
            .list(layout::MANIFESTS)?
            .into_iter()
            .filter_map(|e| {
                Some(Listed {
                    name: layout::manifest_name(&e.name)?.to_string(),
                    ..e
                })
            })
            .collect())
    }
    /// Deletes a model's manifest (gone already is fine).
    fn delete_manifest(&self, name: &str) -> Result<(), MemberError> {
        self.delete(&layout::manifest_key(name))
    }
    /// A store-level file (`members.json`, `leases/<id>.json`), or `None`.
    fn get_meta(&self, name: &str) -> Result<Option<Stored>, MemberError> {
        self.get(name, layout::META_MAX)
    }
    /// Replaces a store-level file (see `put`).
    fn put_meta(&self, name: &str, bytes: &[u8], expect: &Expect) -> Result<(), MemberError> {
        self.put(name, bytes, layout::META_MAX, expect)
    }
    /// The keys of the store-level files in folder `dir` (`leases/<id>.json`).
    fn list_meta(&self, dir: &str) -> Result<Vec<String>, MemberError> {
        Ok(self
            .list(dir)?
            .into_iter()
            .map(|e| format!("{dir}/{}", e.name))
            .collect())
    }
    /// Deletes a store-level file (gone already is fine).
    fn delete_meta(&self, name: &str) -> Result<(), MemberError> {
        self.delete(name)
    }
}

/// How member calls behave: deadline and retries.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The longest one call may take, retries included, before the bytes it moves.
    pub timeout: Duration,
    /// The slowest transfer allowed, in bytes per second: a call moving `n` bytes may take
    /// `timeout + n / min_rate`.
    pub min_rate: u64,
    /// Further tries of a request that failed in a way another try may mend.
    pub retries: usize,
    /// How long taking the members' pack lock waits while another command holds it (`--wait`);
    /// zero: a held lock is an error at once.
    pub lock_wait: Duration,
}

/// Members answer within a few seconds or count as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The slowest transfer a member may make before it counts as failed: 8 MiB/s.
pub const DEFAULT_MIN_RATE: u64 = 8 << 20;

impl Default for Options {
    fn default() -> Options {
        Options {
            timeout: DEFAULT_TIMEOUT,
            min_rate: DEFAULT_MIN_RATE,
            retries: 2,
            lock_wait: Duration::ZERO,
        }
    }
}

impl Options {
    /// The deadline of a call that moves `bytes`.
    pub fn deadline(&self, bytes: u64) -> Duration {
        self.timeout + Duration::from_secs_f64(bytes as f64 / self.min_rate.max(1) as f64)
    }
}

/// Opens the member a `--store` entry or a member list's location names (see `MemberSpec`).
pub fn open(
    spec: impl AsRef<std::ffi::OsStr>,
    opts: &Options,
) -> Result<std::sync::Arc<dyn MemberIo>, MemberError> {
    MemberSpec::parse(spec)?.open(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_grow_with_the_bytes_a_call_moves() {
        let opts = Options {
            timeout: Duration::from_secs(1),
            min_rate: 8 << 20,
            ..Options::default()
        };
        assert_eq!(opts.deadline(0), Duration::from_secs(1));
        // A 64 MiB chunk at the 8 MiB/s floor: 8 s on top of the base deadline.
        assert_eq!(opts.deadline(64 << 20), Duration::from_secs(9));
        // A rate of 0 is taken as 1 byte per second, never a division by zero.
        let zero = Options {
            min_rate: 0,
            ..opts
        };
        assert_eq!(zero.deadline(3), Duration::from_secs(4));
    }
}
