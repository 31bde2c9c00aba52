//! The kernel adapter: fuser's `Filesystem` over the mount core. Each callback turns the
//! kernel's request into a call of [`Core`] and its plain answer into fuser's reply; errnos come
//! from `FsError::errno` alone. Nothing here decides anything.

use super::core::{Backing, Core, OpenMode, OpenReply, Opened};
use super::{FsError, Xattr};
use fuser::{
    BackingId, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::time::Duration;

/// An inode's content never changes (a new version of a file is a new inode) and a change of
/// names is invalidated in the kernel when it happens: names and attributes may be cached long.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// The mount as the kernel sees it.
pub struct ShardFs(pub Core);

impl OpenReply for ReplyOpen {
    fn backing(&self, copy: &std::fs::File) -> std::io::Result<Backing> {
        self.open_backing(copy).map(Backing::new)
    }

    fn opened(self, answer: Result<Opened, FsError>) {
        match answer {
            Ok(Opened {
                fh,
                mode: OpenMode::Passthrough(b),
            }) => match b.get::<BackingId>() {
                Some(id) => self.opened_passthrough(FileHandle(fh), FopenFlags::empty(), id),
                None => self.error(FsError::Io.errno()),
            },
            // KEEP_CACHE: the second read of a file comes from the page cache. Never
            // DIRECT_IO: a shared mmap of a direct-io file fails, which breaks safetensors.
            Ok(Opened { fh, .. }) => self.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => self.error(e.errno()),
        }
    }
}

fn xattr_reply(reply: ReplyXattr) -> super::XattrReply {
    Box::new(move |answer| match answer {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Value(v)) => reply.data(&v),
        Err(e) => reply.error(e.errno()),
    })
}

/// Background requests (read-ahead READs) the kernel may have outstanding at once: enough for a
/// whole read-ahead window of 1 MiB READs on every reader thread's file, and queued by the kernel
/// beyond that (the reader pool answers them in turn).
const BACKGROUND: u16 = 64;

impl Filesystem for ShardFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // The kernel's read-ahead sends its READs in the background; once `congestion` of them
        // are outstanding it drops the pages it had set aside for the rest of its window (they
        // are asked for later, one fault at a time, after their chunk may have left the cache).
        let _ = config.set_max_background(BACKGROUND);
        let _ = config.set_congestion_threshold(BACKGROUND * 3 / 4);
        // Passthrough serves local copies; the kernel needs a stack depth for the backing files.
        if self.0.wants_passthrough() {
            let took = config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
                && config.set_max_stack_depth(1).is_ok();
            log::info!(
                "passthrough {}",
                if took {
                    "on: local copies are read by the kernel"
                } else {
                    "not offered by the kernel"
                }
            );
            self.0.passthrough_taken(took);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.0.lookup(parent.into(), name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.0.forget(ino.into(), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.getattr(ino.into()) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.0.open(ino.into(), flags.0, reply);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.0.read(
            ino.into(),
            fh.into(),
            (offset, size),
            flags.0,
            move |r| match r {
                Ok(bytes) => reply.data(bytes),
                Err(e) => reply.error(e.errno()),
            },
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.0.release(fh.into());
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.opendir(ino.into()) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.0.readdir(ino.into(), offset, |e| {
            reply.add(INodeNo(e.ino), e.next, e.kind, e.name)
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.0.statfs();
        reply.statfs(s.blocks, 0, 0, s.files, 0, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.0.access(ino.into(), mask.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.0
            .getxattr(ino.into(), name, req.uid(), size, xattr_reply(reply));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }
}

impl super::PageStore for fuser::Notifier {
    fn store(&self, ino: u64, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        fuser::Notifier::store(self, INodeNo(ino), offset, bytes)
    }

    fn invalidate(&self, ino: u64) -> std::io::Result<()> {
        self.inval_inode(INodeNo(ino), 0, 0)
    }
}
