//! The FUSE filesystem (crate `fuser`): a read-only tree of the models' files with stable inode
//! numbers, exact sizes and long TTLs. `read` runs on a worker pool and replies from there: it
//! maps the byte range to chunks, takes them from the chunk cache (loading through the store's
//! replica failover on a miss) and hands the kernel a slice of the cached chunk. Sequential
//! readers get the next chunks loaded ahead on a second pool; a chunk whose every byte has gone to
//! the kernel's page cache leaves the chunk cache. Nothing here knows chunk files. `tree` builds
//! the nodes, `sent` tracks which bytes the kernel holds, `stats` keeps the counters, `control`
//! answers the root's control attributes.

mod control;
mod handles;
mod live;
mod passthrough;
mod sent;
mod stats;
mod tree;

use crate::buffer::ChunkBuf;
use crate::cache::{Chunk, ChunkCache, Served};
use crate::store::Store;
use crate::store::manifest::{FileEntry, Manifest};
use crate::store::reader::MemberTrouble;
use crate::workers::Workers;
use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
pub use handles::{Now, OpenShown};
pub use live::{Live, reply_counters};
use parking_lot::RwLock;
use sent::SentBytes;
pub use stats::{Counters, ModelShown, Stats};
use std::ffi::OsStr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tree::{NodeKind, ROOT, Tree};

/// An inode's content never changes (a new version of a file is a new inode) and a change of
/// names is invalidated in the kernel when it happens: names and attributes may be cached long.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// Threads answering reads that must wait for a chunk.
const READERS: usize = 16;
/// Further read-ahead loads in flight when a member is remote: they wait on the network, not
/// on a core. 8 x 4 MiB chunks cover 10 Gbit/s at 25 ms.
const REMOTE_IN_FLIGHT: usize = 8;

pub use control::{REFRESH_WAITING, REFRESH_XATTR, STATUS_XATTR, XATTR_MAX};

#[derive(Debug, Clone)]
pub struct FsOptions {
    pub cache_size: u64,
    /// Chunks kept loading ahead of a sequential reader.
    pub prefetch: usize,
    /// Decompression workers: read-ahead runs on twice as many (some wait on the disk).
    pub threads: usize,
    /// The local decompressed tier, if the mount has one.
    pub tier: Option<Arc<crate::tier::Tier>>,
}

/// What a read needs on whichever thread answers it: the store, the chunk cache, the counters.
struct Shared {
    store: Arc<Store>,
    cache: ChunkCache,
    stats: Stats,
    trouble: MemberTrouble,
    handles: handles::Handles,
    tier: Option<Arc<crate::tier::Tier>>,
}

/// What a read's answer records besides its bytes.
struct Asked {
    started: std::time::Instant,
    handle: Option<Arc<handles::OpenFile>>,
    /// The file's sent bytes, unless the reader bypasses the page cache.
    sent: Option<Arc<SentBytes>>,
}

pub struct ShardFs {
    shared: Arc<Shared>,
    tree: Arc<RwLock<Tree>>,
    readers: Workers,
    prefetchers: Workers,
    prefetch: usize,
    next_fh: AtomicU64,
    /// Where a read of `REFRESH_XATTR` is handed (to the thread that follows the store).
    refresh_requests: Option<crossbeam_channel::Sender<(ReplyXattr, u32)>>,
    /// Where each open is served from (the local tier, by passthrough or not, or chunks).
    opens: Arc<passthrough::Opens>,
}

impl ShardFs {
    /// Builds the tree (see `tree::build`) and starts the worker pools.
    pub fn new(
        store: Arc<Store>,
        manifests: Vec<Manifest>,
        single: bool,
        opts: &FsOptions,
    ) -> std::io::Result<ShardFs> {
        let tree = Tree::new(&manifests, single);
        let threads = opts.threads.max(1);
        let remote_extra = if store.has_remote_members() {
            REMOTE_IN_FLIGHT
        } else {
            0
        };
        Ok(ShardFs {
            shared: Arc::new(Shared {
                store,
                cache: ChunkCache::new(opts.cache_size),
                stats: Stats::default(),
                trouble: MemberTrouble::default(),
                handles: handles::Handles::default(),
                tier: opts.tier.clone(),
            }),
            tree: Arc::new(RwLock::new(tree)),
            // Readers mostly wait for a chunk being loaded; enough of them that a read whose chunk
            // is ready never queues behind reads still waiting (measured: 1-10 ms queueing with
            // one per core under a mmap loader).
            readers: Workers::new("read", READERS.max(threads))?,
            // Twice as many loaders as cores: while some wait for a chunk file to come off the
            // disk, the others keep the cores decompressing. A remote member's answer takes a
            // round trip or more: more chunks in flight cover its bandwidth x latency (the
            // window stays within the cache budget, see `read`).
            prefetchers: Workers::new("prefetch", 2 * threads + remote_extra)?,
            prefetch: opts.prefetch,
            next_fh: AtomicU64::new(1),
            refresh_requests: None,
            opens: Arc::default(),
        })
    }

    /// Reads of `REFRESH_XATTR` go to `to`, which answers each once it has refreshed (without
    /// it, they fail with ENOTSUP: a pinned mount).
    pub fn on_refresh(&mut self, to: crossbeam_channel::Sender<(ReplyXattr, u32)>) {
        self.refresh_requests = Some(to);
    }

    /// A handle for following the store while the session owns the filesystem.
    pub fn live(&self) -> Live {
        Live {
            shared: self.shared.clone(),
            tree: self.tree.clone(),
        }
    }

    /// A point-in-time copy of the counters (for `status`, through the status attribute).
    pub fn counters(&self) -> Counters {
        self.live().counters()
    }
}

impl Shared {
    /// Whether read-ahead should load chunk `index` of `file`: the kernel does not hold all of it
    /// (as far as `sent` knows), and it is neither cached nor being loaded.
    fn wanted_ahead(&self, file: &FileEntry, index: usize, sent: Option<&SentBytes>) -> bool {
        !sent.is_some_and(|s| s.complete(file, index))
            && !self.cache.contains_or_loading(&file.chunks[index].hash)
    }

    /// Loads chunk `index` of `file` through the cache; `ahead` when read-ahead asks.
    fn load(&self, file: &Arc<FileEntry>, index: usize, ahead: bool) -> Result<Chunk, String> {
        let (cache, stats) = (&self.cache, &self.stats);
        let c = &file.chunks[index];
        let load = || {
            let mut buf = ChunkBuf::for_overwrite(c.len as usize)
                .map_err(|e| format!("no memory for chunk {}: {e}", c.hash))?;
            let member = self
                .store
                .load_chunk_into(c, &mut buf, &|member, e| {
                    stats.replica_failovers.fetch_add(1, Ordering::Relaxed);
                    log::debug!("chunk {}: member {member} failed", c.hash);
                    self.trouble.failed(member, e);
                })
                .map_err(|e| e.to_string())?;
            self.trouble.served(&member);
            Ok(buf)
        };
        let limit = self.store.load_deadline(c);
        // Read-ahead takes only room the budget has now; a read waits for it.
        let (result, served) = if ahead {
            cache
                .get_ahead(c.hash, c.len, limit, load)
                .ok_or_else(|| "no room for read-ahead".to_string())?
        } else {
            cache.get(c.hash, c.len, limit, load)
        };
        if served == Served::Loaded && result.is_ok() {
            stats.chunks_decompressed.fetch_add(1, Ordering::Relaxed);
            if ahead {
                stats.chunks_prefetched.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let (Some(tier), Ok(chunk)) = (&self.tier, &result) {
            tier.offer(file, index, chunk, true);
        }
        result
    }

    /// Replies with bytes `range` of `file`, held by `chunks` (from chunk `first` on): a slice of
    /// the chunk itself when one chunk holds them all. Then records them in `sent`, for a reader
    /// whose bytes stay in the page cache.
    fn reply(
        &self,
        file: &FileEntry,
        range: Range<u64>,
        first: usize,
        chunks: &[Chunk],
        asked: Asked,
        reply: ReplyData,
    ) {
        let (offset, end) = (range.start, range.end);
        self.answered(&asked, Some(end - offset));
        let start_in = (offset - file.chunks[first].offset) as usize;
        if let [only] = chunks {
            reply.data(&only[start_in..start_in + (end - offset) as usize]);
        } else {
            REPLIES.with_len((end - offset) as usize, |buf| {
                let mut at = 0;
                for (i, c) in chunks.iter().enumerate() {
                    let chunk_start = file.chunks[first + i].offset;
                    let a = offset.saturating_sub(chunk_start) as usize;
                    let b = ((end - chunk_start) as usize).min(c.len());
                    buf[at..at + b - a].copy_from_slice(&c[a..b]);
                    at += b - a;
                }
                reply.data(buf);
            });
        }
        if let Some(sent) = &asked.sent {
            sent.record(&self.cache, file, offset, end, first);
        }
    }

    /// Counts a read answered with `n` bytes, or (`None`) with EIO, and how long it took.
    fn answered(&self, asked: &Asked, n: Option<u64>) {
        match n {
            Some(n) => {
                self.stats.bytes_served.fetch_add(n, Ordering::Relaxed);
                self.handles.served(n);
                if let Some(h) = &asked.handle {
                    h.served(n);
                }
            }
            None => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats.read_latency.observe(asked.started.elapsed());
    }

    /// Replies with bytes `range` of a file's local copy.
    fn reply_from_copy(
        &self,
        copy: &std::fs::File,
        range: Range<u64>,
        asked: Asked,
        reply: ReplyData,
    ) {
        use std::os::unix::fs::FileExt;
        let n = (range.end - range.start) as usize;
        REPLIES.with_len(n, |buf| match copy.read_exact_at(buf, range.start) {
            Ok(()) => {
                self.answered(&asked, Some(n as u64));
                reply.data(buf);
            }
            Err(e) => {
                log::error!(
                    "read of a local copy, bytes {}..{}: {e}",
                    range.start,
                    range.end
                );
                self.answered(&asked, None);
                reply.error(Errno::EIO);
            }
        });
    }
}

/// Replies that span chunks are assembled in buffers from this pool.
static REPLIES: crate::buffer::ScratchPool = crate::buffer::ScratchPool::new(8);

/// Index of the chunk holding byte `offset` (which is inside the file).
fn chunk_at(file: &FileEntry, offset: u64) -> usize {
    file.chunks.partition_point(|c| c.offset + c.len <= offset)
}

impl Filesystem for ShardFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // Passthrough serves local copies; the kernel needs a stack depth for the backing files.
        if self.shared.tier.is_some() {
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
            self.opens.enabled.store(took, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let tree = self.tree.read();
        let found = match tree.node(parent.into()).map(|n| &n.kind) {
            Some(NodeKind::Dir { children }) => name.to_str().and_then(|n| children.get(n)),
            Some(NodeKind::File { .. }) => return reply.error(Errno::ENOTDIR),
            None => return reply.error(Errno::ENOENT),
        };
        match found.and_then(|&ino| tree.node(ino)) {
            Some(node) => {
                node.looked_up();
                reply.entry(&TTL, &node.attr, Generation(0))
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if self.tree.read().forget(ino.into(), nlookup) {
            self.tree.write().drop_if_unheld(ino.into());
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.read().node(ino.into()) {
            Some(node) => reply.attr(&TTL, &node.attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (path, entry) = match self.tree.read().node(ino.into()).map(|n| &n.kind) {
            Some(NodeKind::File { entry, model, .. }) => {
                (format!("{model}/{}", entry.path), entry.clone())
            }
            Some(NodeKind::Dir { .. }) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let ino = u64::from(ino);
        let (shared, opens) = (self.shared.clone(), self.opens.clone());
        let open = move || {
            let (source, backing) = opens.open(ino, &entry, shared.tier.as_deref(), &reply);
            shared.handles.open(fh, path, ino, entry.blake3, source);
            if let Some(b) = backing {
                return opens.reply_passthrough(b, fh, reply);
            }
            // KEEP_CACHE: the second read of a file comes from the page cache. Never
            // DIRECT_IO: a shared mmap of a direct-io file fails, which breaks safetensors.
            reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
        };
        if self.shared.tier.is_some() {
            // Opening a local copy is a disk call: never on the session's thread.
            self.readers.spawn(open);
        } else {
            open();
        }
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
        let started = std::time::Instant::now();
        let (file, sent) = match self.tree.read().node(ino.into()).map(|n| &n.kind) {
            Some(NodeKind::File { entry, sent, .. }) => (entry.clone(), sent.clone()),
            Some(NodeKind::Dir { .. }) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        // What an O_DIRECT reader is sent does not stay in the page cache.
        let sent = (flags.0 & libc::O_DIRECT == 0).then_some(sent);
        let shared = &self.shared;
        shared.stats.reads.fetch_add(1, Ordering::Relaxed);
        if offset >= file.size || size == 0 {
            return reply.data(&[]);
        }
        let end = file.size.min(offset + u64::from(size));
        let handle = shared.handles.handle(fh.into());
        if handle
            .as_ref()
            .is_some_and(|h| matches!(h.source, handles::Source::Copy(_)))
        {
            // The copy is on disk: read on a worker, never on the session's thread.
            let shared = shared.clone();
            self.readers.spawn(move || {
                if let Some(h) = &handle
                    && let handles::Source::Copy(copy) = &h.source
                {
                    let asked = Asked {
                        started,
                        handle: handle.clone(),
                        sent: None,
                    };
                    shared.reply_from_copy(copy, offset..end, asked, reply);
                }
            });
            return;
        }
        let first = chunk_at(&file, offset);
        let last = chunk_at(&file, end - 1);

        // Ask for the chunks after this read while it is being served.
        let window = self
            .prefetch
            .min((shared.cache.capacity() / (2 * file.chunks[first].len.max(1))) as usize);
        if let Some(sent) = &sent {
            sent.on_read(&file, first, last, last + 1 + window);
        }
        if let Some(h) = &handle {
            let advice = h.readahead.lock().on_read(
                offset,
                end - offset,
                (first, last),
                file.chunks.len(),
                window,
            );
            log::debug!("read fh {} {offset}+{size}: {advice:?}", u64::from(fh));
            for index in advice.behind {
                shared.cache.demote(&file.chunks[index].hash);
            }
            for index in advice.ahead {
                if !shared.wanted_ahead(&file, index, sent.as_deref()) {
                    continue;
                }
                let (shared, file, sent) = (shared.clone(), file.clone(), sent.clone());
                shared.handles.ahead.fetch_add(1, Ordering::Relaxed);
                self.prefetchers.spawn(move || {
                    // Asked again when the job runs: meanwhile a reader may have loaded the
                    // chunk, sent all of it and let it go. Loading it again would decompress it
                    // twice and leave it in the cache, where nothing would ever release it.
                    if shared.wanted_ahead(&file, index, sent.as_deref()) {
                        let _ = shared.load(&file, index, true);
                    }
                    shared.handles.ahead.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }

        // Chunks already in memory are answered here: no hand-off, nothing to wait for.
        let cached: Option<Vec<Chunk>> = (first..=last)
            .map(|i| shared.cache.get_cached(&file.chunks[i].hash))
            .collect();
        let asked = Asked {
            started,
            handle,
            sent,
        };
        if let Some(chunks) = cached {
            if let Some(tier) = &shared.tier {
                for (i, c) in chunks.iter().enumerate() {
                    // This is the session's own thread: it must not wait on the disk.
                    tier.offer(&file, first + i, c, false);
                }
            }
            return shared.reply(&file, offset..end, first, &chunks, asked, reply);
        }
        // Otherwise a worker loads (or waits for) them and replies.
        let shared = shared.clone();
        shared.handles.waiting.fetch_add(1, Ordering::Relaxed);
        self.readers.spawn(move || {
            let mut chunks = Vec::with_capacity(last - first + 1);
            for index in first..=last {
                match shared.load(&file, index, false) {
                    Ok(c) => chunks.push(c),
                    Err(e) => {
                        log::error!("read of '{}' bytes {offset}..{end}: {e}", file.path);
                        shared.handles.waiting.fetch_sub(1, Ordering::Relaxed);
                        shared.answered(&asked, None);
                        return reply.error(Errno::EIO);
                    }
                }
            }
            shared.handles.waiting.fetch_sub(1, Ordering::Relaxed);
            shared.reply(&file, offset..end, first, &chunks, asked, reply);
        });
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
        if let Some(h) = self.shared.handles.close(fh.into()) {
            self.opens.close(h.ino, &h.source);
            if !matches!(h.source, handles::Source::Chunks)
                && let Some(tier) = &self.shared.tier
            {
                tier.release(&h.hash);
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.read().node(ino.into()).map(|n| &n.kind) {
            Some(NodeKind::Dir { .. }) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Some(NodeKind::File { .. }) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
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
        let tree = self.tree.read();
        let Some(node) = tree.node(ino.into()) else {
            return reply.error(Errno::ENOENT);
        };
        let NodeKind::Dir { children } = &node.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [
            (u64::from(ino), FileType::Directory, "."),
            (node.parent, FileType::Directory, ".."),
        ];
        let entries = dots
            .into_iter()
            .chain(children.iter().filter_map(|(name, &child)| {
                Some((child, tree.node(child)?.attr.kind, name.as_str()))
            }));
        for (i, (child, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let tree = self.tree.read();
        reply.statfs(
            tree.logical_bytes().div_ceil(4096),
            0,
            0,
            tree.len() as u64,
            0,
            4096,
            255,
            4096,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if self.tree.read().node(ino.into()).is_none() {
            reply.error(Errno::ENOENT);
        } else if mask.contains(fuser::AccessFlags::W_OK) {
            reply.error(Errno::EROFS);
        } else {
            reply.ok();
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if u64::from(ino) != ROOT {
            return reply.error(Errno::ENODATA);
        }
        let asked = control::Asked {
            name,
            uid: req.uid(),
            size,
        };
        control::answer(
            &asked,
            self.refresh_requests.as_ref(),
            || self.counters(),
            reply,
        );
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }
}
