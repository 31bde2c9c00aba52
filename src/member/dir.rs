//! A member that is a directory: a local disk, or an NFS/CephFS mount. Every file is written
//! under `tmp/` and renamed into place, so a reader never sees half a file. Manifests are
//! fsynced before the rename; chunk files are made durable by one `syncfs` of the member
//! (`flush`) before the manifest that names them is written, which costs one flush instead of
//! one per chunk. Chunk files are read with direct I/O unless the page cache already holds them:
//! a chunk is read once and kept decompressed, so a copy in the page cache would only cost a
//! memory copy (measured at a sixth of the daemon's CPU time on a cold read) and crowd out the
//! decompressed bytes.

use super::beneath::{self, Beneath, Kind, damaged};
use super::direct_io::{DIRECT_ALIGN, PAYLOADS, in_page_cache, read_direct, write_new};
use super::layout::now_nanos;
use super::layout::{self, CHUNKS, DAMAGED, LOCK, MANIFESTS, MEMBER_FILE, TMP};
use super::{
    ChunkEntry, ChunkHead, Expect, IfPresent, Image, Listed, Lock, MemberError, MemberIo,
    ObjectInfo, Setup, Stale, Stored, Sweep,
};
use crate::buffer::{ChunkBuf, SPARE};
use crate::codec::{HEADER_LEN, Hash32};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A directory member.
#[derive(Debug)]
pub struct DirMember {
    root: Beneath,
    location: String,
}

impl DirMember {
    pub fn new(root: &Path) -> DirMember {
        DirMember {
            root: Beneath::new(root),
            location: root.display().to_string(),
        }
    }

    /// A small file and its tag, or `None`; a damaged entry (not a regular file, or larger
    /// than `cap`) is `Corrupt`.
    fn get_file(&self, key: &str, cap: u64) -> Result<Option<Stored>, MemberError> {
        match self.root.read_capped(key, cap) {
            Ok(Some(bytes)) => Ok(Some(Stored {
                tag: tag_of(&bytes),
                bytes,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(self.err(key)(e)),
        }
    }

    /// Replaces a small file durably when it still is what `expect` says. Writers of one
    /// directory are serialised by its lock, so checking then renaming is enough. A damaged
    /// entry counts as no copy: with `Expect::Absent` it is moved aside and replaced.
    fn put_checked(
        &self,
        key: &str,
        bytes: &[u8],
        cap: u64,
        expect: &Expect,
    ) -> Result<(), MemberError> {
        let current = match self.get_file(key, cap) {
            Err(MemberError::Corrupt(why)) if *expect == Expect::Absent => {
                log::warn!("{}: {key} is damaged ({why}); replacing it", self.location);
                self.root
                    .set_aside(key, &aside_key(key))
                    .map_err(self.err(key))?;
                None
            }
            other => other?,
        };
        let matches = match (expect, &current) {
            (Expect::Absent, None) => true,
            (Expect::Tag(t), Some(c)) => *t == c.tag,
            _ => false,
        };
        if !matches {
            return Err(MemberError::Conflict);
        }
        self.write_atomic(key, bytes, Durability::Synced)
            .map_err(self.err(key))?;
        let (dir, _) = key.rsplit_once('/').unwrap_or(("", key));
        self.root.sync_dir(dir).map_err(self.err(key))
    }

    /// Writes `data` to `key` atomically: a new file under `tmp/` (mode 0600, created only
    /// where nothing is), renamed into place. `Durability::Synced` fsyncs the file before the
    /// rename (the caller fsyncs the folder). Missing folders are made; anything else in their
    /// place is moved aside first.
    fn write_atomic(&self, key: &str, data: &[u8], durability: Durability) -> io::Result<()> {
        let stem = key.rsplit('/').next().unwrap_or("file");
        let name = tmp_name(stem);
        let tmp = format!("{TMP}/{name}");
        let result = (|| {
            let f = self.made_dirs(TMP, || self.root.create_new(TMP, &name))?;
            write_new(&f, data)?;
            if durability == Durability::Synced {
                f.sync_all()?;
            }
            drop(f);
            let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
            self.made_dirs(dir, || self.root.rename(&tmp, key))
        })();
        if result.is_err() {
            let _ = self.root.unlink(&tmp);
        }
        result
    }

    /// Writes file `key` in one step (see `MemberIo::write`). A file replaced gets the second
    /// name `damaged_as()` first where one is given (a damaged chunk, kept for whoever looks
    /// into it); anything but a file in its place is moved aside whatever `present` says.
    fn write_file(
        &self,
        key: &str,
        bytes: &[u8],
        present: IfPresent,
        damaged_as: Option<&dyn Fn() -> String>,
    ) -> Result<(), MemberError> {
        let aside = || damaged_as.map_or_else(|| aside_key(key), |f| f());
        match self.root.kind(key) {
            Ok(None) => {}
            Ok(Some(Kind::File)) if present == IfPresent::Refuse => {
                return Err(MemberError::AlreadyExists);
            }
            Ok(Some(Kind::File)) if damaged_as.is_none() => {}
            Ok(Some(Kind::File)) => {
                // A second name for the damaged file, for whoever looks into it; the rename
                // below then replaces it in one step.
                let aside = aside();
                let linked = self
                    .root
                    .make_dirs(DAMAGED, &aside_key)
                    .and_then(|_| self.root.link(key, &aside));
                if let Err(e) = linked {
                    log::warn!("{}: cannot set the damaged {key} aside: {e}", self.location);
                }
            }
            // A link, FIFO or folder in a file's place is damaged whatever `present` says:
            // moved aside as it is, never followed, then replaced.
            Ok(Some(kind)) => {
                log::warn!(
                    "{}: {key} is {}; moved aside and replaced",
                    self.location,
                    kind.name()
                );
                self.root.set_aside(key, &aside()).map_err(self.err(key))?;
            }
            Err(e) if damaged(&e).is_some() => {
                // A folder on the way is not one: `write_atomic` moves it aside.
            }
            Err(e) => return Err(self.err(key)(e)),
        }
        self.write_atomic(key, bytes, Durability::Unsynced)
            .map_err(self.err(key))
    }

    /// Runs `op`; where it finds folder `dir` missing or not a directory, makes it (moving
    /// whatever is in the way aside) and runs it once more. Folders are made only when a write
    /// needs them, not before every write.
    fn made_dirs<T>(&self, dir: &str, op: impl Fn() -> io::Result<T>) -> io::Result<T> {
        match op() {
            Err(e)
                if !dir.is_empty()
                    && (e.kind() == io::ErrorKind::NotFound || damaged(&e).is_some()) =>
            {
                self.root.make_dirs(dir, &aside_key)?;
                op()
            }
            other => other,
        }
    }

    /// Errors name the file they are about; a damaged entry is `Corrupt`.
    fn err(&self, key: &str) -> impl Fn(io::Error) -> MemberError + '_ {
        let path = self.root.root().join(key);
        move |e| match e.kind() {
            io::ErrorKind::NotFound => MemberError::Missing,
            io::ErrorKind::AlreadyExists => MemberError::AlreadyExists,
            _ => match damaged(&e) {
                Some(why) => MemberError::Corrupt(format!("{}: {why}", path.display())),
                None => MemberError::Io(format!("{}: {e}", path.display())),
            },
        }
    }
}

/// Where a damaged entry at `key` is moved: `damaged/<key, folders joined by _>.<nanos>`.
fn aside_key(key: &str) -> String {
    format!("{DAMAGED}/{}.{}", key.replace('/', "_"), now_nanos())
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file name unique within this process and across processes.
pub fn tmp_name(stem: &str) -> String {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{stem}.{}.{n}.tmp", std::process::id())
}

/// Removes every leftover entry in `tmp/` (from a pack that was killed); returns how many.
/// Links and FIFOs there are removed as entries, never followed.
fn clean_tmp(root: &Beneath) -> io::Result<usize> {
    let mut removed = 0;
    for entry in root.list(TMP)? {
        let key = format!("{TMP}/{}", entry.name);
        match entry.kind {
            Kind::Dir => root.remove_tree(&key, TREE_DEPTH)?,
            _ => root.unlink(&key)?,
        }
        removed += 1;
    }
    Ok(removed)
}

/// How deep a planted folder tree under `tmp/` or `damaged/` is removed.
const TREE_DEPTH: usize = 8;

/// Whether a write is on disk before it is renamed into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// fsynced first: a crash leaves the old file or the new, whole.
    Synced,
    /// Left to the member's `flush` (one `syncfs` after many chunk files).
    Unsynced,
}

/// The pack lock: an exclusive `flock` on `<member>/lock` (held while the file is open), and
/// how many temporary files taking it removed.
struct DirLock(#[allow(dead_code)] File, u64);
impl Lock for DirLock {
    fn temp_files_removed(&self) -> u64 {
        self.1
    }
}

/// The tag of a manifest file: a hash of its bytes.
fn tag_of(bytes: &[u8]) -> String {
    Hash32::of(bytes).to_hex()
}

impl MemberIo for DirMember {
    fn location(&self) -> &str {
        &self.location
    }

    fn remote(&self) -> bool {
        false
    }

    fn read_info(&self) -> Result<Option<Vec<u8>>, MemberError> {
        match fs::metadata(self.root.root()) {
            Ok(m) if !m.is_dir() => {
                return Err(MemberError::Invalid(format!(
                    "member path {} is not a directory",
                    self.location
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(MemberError::Absent("directory missing".into()));
            }
            Err(e) => return Err(MemberError::Io(format!("{}: {e}", self.location))),
        }
        self.root
            .read_capped(MEMBER_FILE, layout::META_MAX)
            .map_err(self.err(MEMBER_FILE))
    }

    fn init(&self, info: &[u8], _setup: Setup) -> Result<(), MemberError> {
        let root = self.root.root();
        if !root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(beneath::DIR_MODE)
                .create(root)
                .map_err(self.err(""))?;
        }
        for sub in [CHUNKS, MANIFESTS, TMP] {
            self.root
                .make_dirs(sub, &aside_key)
                .map_err(self.err(sub))?;
        }
        self.write_atomic(MEMBER_FILE, info, Durability::Synced)
            .map_err(self.err(MEMBER_FILE))?;
        self.root.sync_dir("").map_err(self.err(""))?;
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(self.err(".."))?;
        }
        Ok(())
    }

    fn get_chunk(&self, hash: &Hash32, max_len: u64) -> Result<Image, MemberError> {
        let key = layout::chunk_key(hash);
        let opened = self.root.open_file(&key).map_err(self.err(&key))?;
        let file_len = opened.size;
        if file_len > max_len {
            return Err(MemberError::Corrupt(format!(
                "{file_len}-byte file, larger than any image of its chunk"
            )));
        }
        let file_len = file_len as usize;
        let mut buf =
            ChunkBuf::for_overwrite_from((&SPARE, &PAYLOADS), file_len + 2 * DIRECT_ALIGN)
                .map_err(|e| MemberError::Io(e.to_string()))?;
        let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let room = buf.len() - at - file_len;
        let image = &mut buf[at..at + file_len];
        // From the page cache when it holds the file (read by another tool, or written through
        // it: a small file, a filesystem without direct I/O); otherwise with direct I/O (where
        // the filesystem refuses it, through the page cache).
        let mut done = false;
        if !in_page_cache(&opened.file, file_len as u64) {
            match opened.reopen_direct() {
                Ok(direct) => {
                    done = read_direct(&direct, image, room).map_err(self.err(&key))?;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(self.err(&key)(e)),
            }
        }
        if !done {
            opened.file.read_exact_at(image, 0).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    MemberError::Corrupt("file shrank while being read".into())
                } else {
                    self.err(&key)(e)
                }
            })?;
        }
        Ok(Image::Buf {
            buf,
            at,
            len: file_len,
        })
    }

    fn chunk_head(&self, hash: &Hash32) -> Result<Option<ChunkHead>, MemberError> {
        let key = layout::chunk_key(hash);
        let mut opened = match self.root.open_file(&key) {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(&key)(e)),
        };
        let mut header = [0u8; HEADER_LEN];
        match opened.file.read_exact(&mut header) {
            Ok(()) => Ok(Some(ChunkHead {
                header,
                size: opened.size,
            })),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(self.err(&key)(e)),
        }
    }

    fn put_chunk(
        &self,
        hash: &Hash32,
        image: &[u8],
        present: IfPresent,
    ) -> Result<(), MemberError> {
        let damaged_as = || layout::damaged_key(hash);
        self.write_file(&layout::chunk_key(hash), image, present, Some(&damaged_as))
    }
    fn sweep_damaged(&self, older_than: Duration, sweep: Sweep) -> Result<Stale, MemberError> {
        let now = std::time::SystemTime::now();
        let mut stale = Stale::default();
        let entries = match self.root.list(DAMAGED) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stale::default()),
            Err(e) if damaged(&e).is_some() && sweep == Sweep::Delete => {
                // `damaged` itself is a link or a file: moved aside, never followed.
                let to = format!("{DAMAGED}.{}", now_nanos());
                self.root.rename(DAMAGED, &to).map_err(self.err(DAMAGED))?;
                log::warn!(
                    "{}: {DAMAGED} was not a directory; moved to {to}",
                    self.location
                );
                return Ok(Stale::default());
            }
            Err(e) => return Err(self.err(DAMAGED)(e)),
        };
        for entry in entries {
            if now.duration_since(entry.modified).unwrap_or_default() < older_than {
                stale.kept_young += 1;
                continue;
            }
            if sweep == Sweep::Delete {
                let key = format!("{DAMAGED}/{}", entry.name);
                let removed = match entry.kind {
                    Kind::Dir => self.root.remove_tree(&key, TREE_DEPTH),
                    _ => self.root.unlink(&key),
                };
                match removed {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.err(&key)(e)),
                }
            }
            stale.deleted += 1;
            if entry.kind == Kind::File {
                stale.bytes += entry.size;
            }
        }
        Ok(stale)
    }

    fn list_chunks(&self) -> Result<Vec<ChunkEntry>, MemberError> {
        let mut out = Vec::new();
        let top = match self.root.list(CHUNKS) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(self.err(CHUNKS)(e)),
        };
        for sub in top.iter().filter(|s| s.kind == Kind::Dir) {
            let dir = format!("{CHUNKS}/{}", sub.name);
            for f in self.root.list(&dir).map_err(self.err(&dir))? {
                // Only regular files are chunk files; anything else named like one is a
                // damaged replica, found when it is read.
                if f.kind != Kind::File {
                    continue;
                }
                if let Some(hash) = layout::chunk_name(&f.name) {
                    out.push(ChunkEntry {
                        hash,
                        size: f.size,
                        modified: f.modified,
                    });
                }
            }
        }
        Ok(out)
    }

    fn delete_chunk(&self, hash: &Hash32) -> Result<(), MemberError> {
        let key = layout::chunk_key(hash);
        self.root.unlink(&key).map_err(self.err(&key))
    }

    fn get(&self, key: &str, cap: u64) -> Result<Option<Stored>, MemberError> {
        self.get_file(key, cap)
    }

    fn read_at(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, MemberError> {
        let opened = self.root.open_file(key).map_err(self.err(key))?;
        if offset.saturating_add(len as u64) > opened.size {
            return Err(MemberError::Corrupt(format!(
                "{}-byte file, shorter than the {len} bytes asked at {offset}",
                opened.size
            )));
        }
        let mut buf = vec![0u8; len];
        opened
            .file
            .read_exact_at(&mut buf, offset)
            .map_err(self.err(key))?;
        Ok(buf)
    }
    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, MemberError> {
        match self.root.open_file(key) {
            Ok(o) => Ok(Some(ObjectInfo {
                size: o.size,
                modified: o.modified,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(key)(e)),
        }
    }
    fn write(&self, key: &str, bytes: &[u8], present: IfPresent) -> Result<(), MemberError> {
        self.write_file(key, bytes, present, None)
    }
    fn put(&self, key: &str, bytes: &[u8], cap: u64, expect: &Expect) -> Result<(), MemberError> {
        self.put_checked(key, bytes, cap, expect)
    }

    fn list(&self, dir: &str) -> Result<Vec<Listed>, MemberError> {
        let entries = match self.root.list(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err(dir)(e)),
        };
        // A file is replaced by a rename (a new inode); an edit in place moves the mtime.
        Ok(entries
            .into_iter()
            .map(|entry| {
                let nanos = crate::clock::unix_nanos(entry.modified);
                Listed {
                    stamp: format!("{}-{}-{nanos}", entry.ino, entry.size),
                    name: entry.name,
                    size: entry.size,
                    modified: entry.modified,
                }
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), MemberError> {
        match self.root.unlink(key) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.err(key)(e)),
            _ => {
                let (dir, _) = key.rsplit_once('/').unwrap_or(("", key));
                // The delete is done; a folder that cannot be synced only delays it on disk.
                if let Err(e) = self.root.sync_dir(dir) {
                    log::debug!("{}: cannot sync {dir}/: {e}", self.location);
                }
                Ok(())
            }
        }
    }

    fn flush(&self) -> Result<(), MemberError> {
        let dir = self.root.open_root().map_err(self.err(""))?;
        rustix::fs::syncfs(&dir).map_err(|e| self.err("")(e.into()))
    }

    fn exclusive_lock(&self) -> bool {
        true
    }

    fn free_space(&self) -> Result<Option<u64>, MemberError> {
        let dir = self.root.open_root().map_err(self.err(""))?;
        let st = rustix::fs::fstatvfs(&dir).map_err(|e| self.err("")(e.into()))?;
        // What an unprivileged writer may use (`f_bavail`), as df shows it.
        Ok(Some(st.f_bavail.saturating_mul(st.f_frsize)))
    }

    fn lock(&self) -> Result<Box<dyn Lock>, MemberError> {
        let f = self
            .root
            .open_or_create(LOCK, &aside_key(LOCK))
            .map_err(self.err(LOCK))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(MemberError::Unavailable(
                    "busy: another pack holds its lock".into(),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(self.err(LOCK)(e)),
        }
        self.root
            .make_dirs(TMP, &aside_key)
            .map_err(self.err(TMP))?;
        let n = clean_tmp(&self.root).map_err(self.err(TMP))?;
        if n > 0 {
            log::info!(
                "removed {n} leftover temporary files from {}/{TMP}",
                self.location
            );
        }
        Ok(Box::new(DirLock(f, n as u64)))
    }
}

#[cfg(test)]
mod tests;
