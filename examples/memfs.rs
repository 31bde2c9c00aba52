//! The FUSE ceiling for `scripts/bench`: serves one file from memory the way shardfs serves its
//! files (read-only, two session threads, `FOPEN_KEEP_CACHE`, the same kernel read-ahead), with
//! no store, no hashing and no decompression. What it reaches is what any FUSE file system
//! reaches through the kernel's page cache on this machine.
//!
//! Usage: `memfs FILE MOUNTPOINT [READ_AHEAD_KIB]`. It loads FILE, mounts, prints `ready` and
//! serves in the foreground until the mountpoint is unmounted (`fusermount3 -u MOUNTPOINT`).

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

const TTL: Duration = Duration::from_secs(24 * 3600);
const ROOT: u64 = 1;
const FILE: u64 = 2;

struct MemFs {
    name: String,
    data: Vec<u8>,
}

impl MemFs {
    fn attr(&self, ino: u64) -> FileAttr {
        let dir = ino == ROOT;
        FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { self.data.len() as u64 },
            blocks: self.data.len().div_ceil(512) as u64,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o555 } else { 0o444 },
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 128 * 1024,
        }
    }
}

impl Filesystem for MemFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if u64::from(parent) == ROOT && name.to_str() == Some(self.name.as_str()) {
            reply.entry(&TTL, &self.attr(FILE), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match u64::from(ino) {
            ROOT | FILE => reply.attr(&TTL, &self.attr(ino.into())),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let start = (offset as usize).min(self.data.len());
        let end = start.saturating_add(size as usize).min(self.data.len());
        reply.data(&self.data[start..end]);
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, self.name.as_str()),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("memfs: error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, mountpoint, rest @ ..] = args.as_slice() else {
        return Err("usage: memfs FILE MOUNTPOINT [READ_AHEAD_KIB]".into());
    };
    let read_ahead_kb = match rest.first() {
        Some(kb) => kb.parse().map_err(|_| format!("not a size in KiB: {kb}"))?,
        None => 8192,
    };
    let path = Path::new(file);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{file}: no usable file name"))?
        .to_string();
    let data = std::fs::read(path).map_err(|e| format!("{file}: {e}"))?;
    let mountpoint = PathBuf::from(mountpoint)
        .canonicalize()
        .map_err(|e| format!("{mountpoint}: {e}"))?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("memfs".to_string()),
    ];
    config.n_threads = Some(2);
    config.clone_fd = true;
    let session = fuser::Session::new(MemFs { name, data }, &mountpoint, &config)
        .map_err(|e| format!("cannot mount {}: {e}", mountpoint.display()))?;
    shardfs::daemon::set_read_ahead(&mountpoint, read_ahead_kb);
    println!("ready");
    session.run().map_err(|e| format!("session ended: {e}"))
}
