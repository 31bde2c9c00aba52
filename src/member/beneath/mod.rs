//! File operations confined to a directory member: every open, create, rename, delete and
//! listing is resolved beneath the member's root without following a symbolic link anywhere on
//! the way (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; on kernels without it, a
//! walk of `O_NOFOLLOW` opens, one component at a time). A file is first opened as a path only
//! (`O_PATH`, which never blocks and never runs a device's open), checked to be a regular file,
//! and only then opened for I/O, so a FIFO, socket or device planted in a member is never read.
//! Whoever can write a member can put anything there; what this module guarantees is that
//! nothing outside the member is touched through it and nothing inside makes a call hang.
//!
//! The root itself is the operator's path, followed as given; keys beneath it are ours
//! (`chunks/ab/<hex>`, `manifests/<name>.json`), and a key with an empty, `.` or `..` component
//! is refused outright.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Mode of the directories shardfs creates in a member.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files shardfs creates in a member.
pub const FILE_MODE: u32 = 0o600;

/// What a store entry was found to be, when it is not what it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Device,
}

impl Kind {
    fn of(mode: u32) -> Kind {
        match FileType::from_raw_mode(mode as _) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            _ => Kind::Device,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO",
            Kind::Socket => "a socket",
            Kind::Device => "a device",
        }
    }
}

/// An entry that is there but is not what its place in the store needs (a link, a FIFO, a
/// directory where a file belongs, a file larger than its cap). Carried inside an
/// `io::Error` of kind `InvalidData`; see `damaged`.
#[derive(Debug)]
pub struct Damaged(pub String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

fn damaged_err(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Damaged(why))
}

/// Why an entry is damaged, when `e` says it is: a `Damaged` error, a link on the way
/// (`ELOOP`), a way out of the member (`EXDEV`), or a file where a folder belongs (`ENOTDIR`).
pub fn damaged(e: &io::Error) -> Option<String> {
    if let Some(d) = e.get_ref().and_then(|i| i.downcast_ref::<Damaged>()) {
        return Some(d.0.clone());
    }
    match e.raw_os_error() {
        Some(libc::ELOOP) => Some("a symbolic link is in its place (not followed)".into()),
        Some(libc::EXDEV) => Some("its path leads out of the member (not followed)".into()),
        Some(libc::ENOTDIR) => Some("a folder on its path is not a directory".into()),
        _ => None,
    }
}

/// A regular file opened beneath the root, with what `fstat` said of it.
#[derive(Debug)]
pub struct Opened {
    /// The file as a path (`O_PATH`), to open it again with other flags (`reopen`).
    path: OwnedFd,
    key: String,
    pub file: File,
    pub size: u64,
    pub ino: u64,
    pub modified: SystemTime,
}

impl Opened {
    /// The same file opened again for reading with `O_DIRECT` (no second lookup by name).
    pub fn reopen_direct(&self) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::DIRECT;
        reopen(&self.path, flags, &self.key)
    }
}

/// One entry of a listed folder.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    pub ino: u64,
    pub modified: SystemTime,
}

/// The root of a directory member.
#[derive(Debug, Clone)]
pub struct Beneath {
    root: PathBuf,
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// The components of a key, refused when one could leave the folder it names.
fn components(key: &str) -> io::Result<Vec<&str>> {
    let parts: Vec<&str> = key.split('/').collect();
    if key.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad key {key:?}"),
        ));
    }
    Ok(parts)
}

/// `key`'s folder and last component (`""` and the key for one at the root).
fn split(key: &str) -> (&str, &str) {
    match key.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", key),
    }
}

fn mtime(st: &rustix::fs::Stat) -> SystemTime {
    let nanos = st.st_mtime_nsec.clamp(0, 999_999_999) as u32;
    crate::clock::from_unix(st.st_mtime.max(0), nanos).unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Beneath {
    pub fn new(root: &Path) -> Beneath {
        Beneath {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root, opened as a directory.
    pub fn open_root(&self) -> io::Result<OwnedFd> {
        Ok(rustix::fs::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Opens `key` beneath `dir` with `flags`, following no link.
    fn open_at(
        &self,
        dir: BorrowedFd<'_>,
        key: &str,
        flags: OFlags,
        mode: u32,
    ) -> io::Result<OwnedFd> {
        components(key)?;
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let mode = Mode::from_raw_mode(mode as _);
        match rustix::fs::openat2(dir, key, flags, mode, resolve_flags()) {
            Err(rustix::io::Errno::NOSYS) => walk_open(dir, key, flags, mode),
            other => Ok(other?),
        }
    }

    /// Opens folder `key` (the root for `""`) as a path, for the `*at` calls.
    fn dir_fd(&self, root: &OwnedFd, key: &str) -> io::Result<OwnedFd> {
        if key.is_empty() {
            return Ok(rustix::io::dup(root)?);
        }
        self.open_at(root.as_fd(), key, OFlags::PATH | OFlags::DIRECTORY, 0)
    }

    /// What is at `key`, without following it: `None` when nothing is.
    pub fn kind(&self, key: &str) -> io::Result<Option<Kind>> {
        let root = self.open_root()?;
        match self.open_at(root.as_fd(), key, OFlags::PATH, 0) {
            Ok(fd) => Ok(Some(Kind::of(rustix::fs::fstat(&fd)?.st_mode))),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Ok(Some(Kind::Symlink)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens regular file `key` for reading. Anything else in its place is a `Damaged` error;
    /// nothing there is ever opened for I/O but a regular file.
    pub fn open_file(&self, key: &str) -> io::Result<Opened> {
        let root = self.open_root()?;
        let path = self.open_at(root.as_fd(), key, OFlags::PATH, 0)?;
        let st = rustix::fs::fstat(&path)?;
        let kind = Kind::of(st.st_mode);
        if kind != Kind::File {
            return Err(damaged_err(format!("{} is in its place", kind.name())));
        }
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        let file = reopen(&path, flags, key)?;
        Ok(Opened {
            path,
            key: key.to_string(),
            file,
            size: st.st_size as u64,
            ino: st.st_ino,
            modified: mtime(&st),
        })
    }

    /// The whole of regular file `key` when it holds at most `cap` bytes; `None` when there is
    /// none; a `Damaged` error when it is larger (it is not read) or not a regular file.
    pub fn read_capped(&self, key: &str, cap: u64) -> io::Result<Option<Vec<u8>>> {
        let opened = match self.open_file(key) {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if opened.size > cap {
            return Err(too_large(opened.size, cap));
        }
        let mut bytes = Vec::with_capacity(opened.size as usize);
        // A file that grows while it is read is cut at the cap and refused.
        opened.file.take(cap + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > cap {
            return Err(too_large(bytes.len() as u64, cap));
        }
        Ok(Some(bytes))
    }

    /// Makes folder `key` and its parents (mode 0700). Something other than a directory in
    /// the way is moved aside to `aside(name)` first (see `set_aside`), so a planted link or
    /// file never stops the member from being written, and nothing is written through it.
    pub fn make_dirs(&self, key: &str, aside: &dyn Fn(&str) -> String) -> io::Result<()> {
        let root = self.open_root()?;
        let parts = components(key)?;
        for i in 1..=parts.len() {
            let sub = parts[..i].join("/");
            match self.open_at(root.as_fd(), &sub, OFlags::PATH | OFlags::DIRECTORY, 0) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if damaged(&e).is_some() => {
                    let to = aside(&sub);
                    log::warn!(
                        "{}: {sub} is not a directory ({}); moved aside to {to}",
                        self.root.display(),
                        damaged(&e).unwrap_or_default()
                    );
                    self.set_aside(&sub, &to)?;
                }
                Err(e) => return Err(e),
            }
            let (dir, name) = split(&sub);
            let parent = self.dir_fd(&root, dir)?;
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(DIR_MODE as _)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Moves whatever is at `from` (a file, a link, a folder: the entry itself, never what a
    /// link names) to `to`, making `to`'s folder where needed. A `damaged` folder that is itself
    /// not a directory goes to `damaged.<nanos>` at the root.
    pub fn set_aside(&self, from: &str, to: &str) -> io::Result<()> {
        let (to_dir, _) = split(to);
        if !to_dir.is_empty() {
            let fallback = |name: &str| format!("{name}.{}", super::layout::now_nanos());
            self.make_dirs(to_dir, &fallback)?;
        }
        self.rename(from, to)
    }

    /// Creates a new regular file `dir/name` (mode 0600); fails where anything is there already.
    pub fn create_new(&self, dir: &str, name: &str) -> io::Result<File> {
        let root = self.open_root()?;
        let parent = self.dir_fd(&root, dir)?;
        components(name)?;
        let fd = self.open_at(
            parent.as_fd(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            FILE_MODE,
        )?;
        Ok(File::from(fd))
    }

    /// Opens regular file `key` for reading and writing, creating it (mode 0600) when missing;
    /// anything else in its place is moved aside to `aside` first.
    pub fn open_or_create(&self, key: &str, aside: &str) -> io::Result<File> {
        match self.kind(key)? {
            Some(Kind::File) | None => {}
            Some(kind) => {
                log::warn!(
                    "{}: {key} is {} (not used); moved aside to {aside}",
                    self.root.display(),
                    kind.name()
                );
                self.set_aside(key, aside)?;
            }
        }
        let root = self.open_root()?;
        let (parent, name) = self.parent(&root, key)?;
        for _ in 0..3 {
            match self.open_at(parent.as_fd(), name, OFlags::PATH, 0) {
                Ok(path) => {
                    if Kind::of(rustix::fs::fstat(&path)?.st_mode) != Kind::File {
                        return Err(damaged_err(format!("{key} is not a regular file")));
                    }
                    return reopen(&path, OFlags::RDWR | OFlags::NONBLOCK | OFlags::NOCTTY, key);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            match self.open_at(
                parent.as_fd(),
                name,
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
                FILE_MODE,
            ) {
                Ok(fd) => return Ok(File::from(fd)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(damaged_err(format!("{key} keeps changing")))
    }

    /// The folder holding `key` (opened as a path, beneath the root) and `key`'s last
    /// component, for the `*at` calls.
    fn parent<'k>(&self, root: &OwnedFd, key: &'k str) -> io::Result<(OwnedFd, &'k str)> {
        components(key)?;
        let (dir, name) = split(key);
        Ok((self.dir_fd(root, dir)?, name))
    }

    /// Renames `from` to `to`, both beneath the root; the entry itself moves (a link is moved,
    /// not followed), and whatever non-directory was at `to` is replaced in one step.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let root = self.open_root()?;
        let ((from_dir, fname), (to_dir, tname)) =
            (self.parent(&root, from)?, self.parent(&root, to)?);
        Ok(rustix::fs::renameat(&from_dir, fname, &to_dir, tname)?)
    }

    /// Hard-links file `from` as `to` (the entry itself; a link is never followed).
    pub fn link(&self, from: &str, to: &str) -> io::Result<()> {
        let root = self.open_root()?;
        let ((from_dir, fname), (to_dir, tname)) =
            (self.parent(&root, from)?, self.parent(&root, to)?);
        Ok(rustix::fs::linkat(
            &from_dir,
            fname,
            &to_dir,
            tname,
            AtFlags::empty(),
        )?)
    }

    /// Deletes the entry `key` (a file, a link or a FIFO itself; never what a link names).
    /// A directory is refused (`EISDIR`); see `remove_tree`.
    pub fn unlink(&self, key: &str) -> io::Result<()> {
        let root = self.open_root()?;
        let (dir, name) = self.parent(&root, key)?;
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::empty())?)
    }

    /// Deletes folder `key` and everything in it, `depth` levels at most; links inside are
    /// deleted as links, never followed.
    pub fn remove_tree(&self, key: &str, depth: usize) -> io::Result<()> {
        for e in self.list(key)? {
            let sub = format!("{key}/{}", e.name);
            if e.kind == Kind::Dir {
                if depth == 0 {
                    return Err(damaged_err(format!("{sub} is nested too deep")));
                }
                self.remove_tree(&sub, depth - 1)?;
            } else {
                self.unlink(&sub)?;
            }
        }
        let root = self.open_root()?;
        let (dir, name) = self.parent(&root, key)?;
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR)?)
    }

    /// Every entry of folder `key` (the root for `""`), each as it is (links not followed);
    /// `NotFound` when there is no such folder, a `damaged` error when it is not a directory.
    pub fn list(&self, key: &str) -> io::Result<Vec<Entry>> {
        let root = self.open_root()?;
        let dir = if key.is_empty() {
            rustix::io::dup(&root)?
        } else {
            self.open_at(
                root.as_fd(),
                key,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK,
                0,
            )?
        };
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let st = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            out.push(Entry {
                name: name.to_string(),
                kind: Kind::of(st.st_mode),
                size: st.st_size as u64,
                ino: st.st_ino,
                modified: mtime(&st),
            });
        }
        Ok(out)
    }

    /// fsyncs folder `key` (the root for `""`), so renames into it survive a crash.
    pub fn sync_dir(&self, key: &str) -> io::Result<()> {
        let root = self.open_root()?;
        let dir = if key.is_empty() {
            root
        } else {
            self.open_at(
                root.as_fd(),
                key,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK,
                0,
            )?
        };
        Ok(rustix::fs::fsync(&dir)?)
    }
}

fn too_large(size: u64, cap: u64) -> io::Error {
    damaged_err(format!(
        "{size} bytes, more than the {cap} an entry of its kind may hold (not read)"
    ))
}

/// Opens the file an `O_PATH` descriptor names for I/O, through `/proc/self/fd` (the same
/// inode, no second lookup by name, so nothing can be swapped in between). Without `/proc`,
/// the name is opened again and checked to be the same inode.
fn reopen(path: &OwnedFd, flags: OFlags, key: &str) -> io::Result<File> {
    let proc = format!("/proc/self/fd/{}", path.as_raw_fd());
    let fd = match rustix::fs::open(proc.as_str(), flags | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{key}: /proc is not mounted"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let (a, b) = (rustix::fs::fstat(path)?, rustix::fs::fstat(&fd)?);
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) || Kind::of(b.st_mode) != Kind::File {
        return Err(damaged_err(format!("{key} changed while it was opened")));
    }
    Ok(File::from(fd))
}

/// `openat2`'s guarantee on kernels without it: each folder on the way is opened with
/// `O_NOFOLLOW | O_DIRECTORY` from the one before, starting at `dir`.
fn walk_open(dir: BorrowedFd<'_>, key: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let parts = components(key)?;
    let mut at = rustix::io::dup(dir)?;
    for part in &parts[..parts.len() - 1] {
        at = rustix::fs::openat(
            &at,
            *part,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    let last = parts[parts.len() - 1];
    match rustix::fs::openat(&at, last, flags | OFlags::NOFOLLOW, mode) {
        // With O_PATH, O_NOFOLLOW opens the link itself instead of failing: report it as one.
        Ok(fd) if flags.contains(OFlags::PATH) => {
            if Kind::of(rustix::fs::fstat(&fd)?.st_mode) == Kind::Symlink {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            Ok(fd)
        }
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests;
