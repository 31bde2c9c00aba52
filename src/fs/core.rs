//! The mount core: every request the mount answers (lookup, getattr, open, read, readdir,
//! release, statfs, access, the root's control attributes), as plain values and an
//! [`FsError`], with no kernel in sight. The kernel adapter (`fuse.rs`) only translates, and
//! the core's tests run without a mount. The read path itself is in `read.rs`.

use super::control::{self, RefreshRequest, XattrReply};
use super::handles::{self, Handles};
use super::passthrough::Opens;
use super::stats::{Counters, LiveCounters};
use super::tree::{Layout, NodeKind, ROOT, Tree};
use super::{FsError, FsOptions, Live};
use crate::cache::ChunkCache;
use crate::readahead;
use crate::store::Store;
use crate::store::manifest::Manifest;
use crate::store::reader::MemberTrouble;
use crate::workers::Workers;
use crossbeam_channel::Sender;
use fuser::{FileAttr, FileType};
use parking_lot::RwLock;
use std::any::Any;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Threads answering reads that must wait for a chunk.
const READERS: usize = 16;

/// What a read needs on whichever thread answers it: the store, the chunk cache, the counters.
pub(super) struct Shared {
    pub store: Arc<Store>,
    pub cache: ChunkCache,
    pub counts: LiveCounters,
    pub trouble: MemberTrouble,
    pub handles: Handles,
    pub tier: Option<Arc<crate::tier::Tier>>,
    /// Where evicted chunks the kernel has part of go (its page cache).
    pub handover: Arc<super::handover::Handover>,
}

/// The mount's answers to the kernel's requests.
pub struct Core {
    pub(super) shared: Arc<Shared>,
    pub(super) tree: Arc<RwLock<Tree>>,
    pub(super) readers: Workers,
    pub(super) prefetchers: Workers,
    pub(super) readahead: readahead::Policy,
    next_fh: AtomicU64,
    /// Where a read of `REFRESH_XATTR` is handed (to the thread that follows the store).
    refresh_requests: Option<Sender<RefreshRequest>>,
    /// Where each open is served from (the local tier, by passthrough or not, or chunks).
    opens: Arc<Opens>,
    /// With a tier: empties the page cache of files passthrough serves from now on.
    page_drop: Option<Arc<super::passthrough::PageDrop>>,
}

/// A backing file the kernel registered for a passthrough open (the adapter's `BackingId`;
/// anything in tests). Dropping the last clone unregisters it.
#[derive(Clone)]
pub struct Backing(Arc<dyn Any + Send + Sync>);

impl Backing {
    pub fn new<T: Any + Send + Sync>(id: T) -> Backing {
        Backing(Arc::new(id))
    }

    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

/// Where an open file's bytes come from.
#[derive(Clone)]
pub enum OpenMode {
    /// The store's chunks, through the chunk cache.
    Chunks,
    /// The file's local copy in the tier, read by the daemon.
    LocalCopy,
    /// The file's local copy, read by the kernel itself (FUSE passthrough).
    Passthrough(Backing),
}

/// An open that succeeded.
pub struct Opened {
    pub fh: u64,
    pub mode: OpenMode,
}

/// Where an open's answer goes. The answer may come from a worker thread (opening a local copy
/// is a disk call).
pub trait OpenReply: Send + 'static {
    /// Registers `copy` with the kernel as the backing file of passthrough opens.
    fn backing(&self, copy: &std::fs::File) -> std::io::Result<Backing>;
    fn opened(self, answer: Result<Opened, FsError>);
}

/// One entry of a directory listing.
pub struct DirEntry<'a> {
    pub ino: u64,
    /// The offset a listing continued after this entry starts from.
    pub next: u64,
    pub kind: FileType,
    pub name: &'a str,
}

/// What `statfs` reports: the bytes the files take (in 4 KiB blocks) and the nodes.
#[derive(Debug, PartialEq, Eq)]
pub struct Statfs {
    pub blocks: u64,
    pub files: u64,
}

impl Core {
    /// Builds the tree (see `tree::build`) and starts the worker pools.
    pub fn new(
        store: Arc<Store>,
        manifests: Vec<Manifest>,
        layout: Layout,
        opts: &FsOptions,
    ) -> std::io::Result<Core> {
        let tree = Tree::new(&manifests, layout);
        let threads = opts.threads.max(1);
        let remote = store.has_remote_members();
        let loaders = readahead::loaders(threads, remote);
        let cache = ChunkCache::new(opts.cache_size);
        let handover = Arc::new(super::handover::Handover::new());
        let evicted = handover.clone();
        cache.on_evict(Box::new(move |key, chunk, cached| {
            evicted.evicted(key, chunk, cached)
        }));
        Core {
            shared: Arc::new(Shared {
                store,
                cache,
                counts: LiveCounters::default(),
                trouble: MemberTrouble::default(),
                handles: Handles::default(),
                tier: opts.tier.clone(),
                handover,
            }),
            tree: Arc::new(RwLock::new(tree)),
            // Readers mostly wait for a chunk being loaded; enough of them that a read whose chunk
            // is ready never queues behind reads still waiting (measured: 1-10 ms queueing with
            // one per core under a mmap loader).
            readers: Workers::new("read", READERS.max(threads))?,
            prefetchers: Workers::new("prefetch", loaders)?,
            readahead: readahead::Policy {
                max_window: opts.prefetch,
                cache_budget: opts.cache_size,
                kernel_ahead: opts.kernel_read_ahead,
                tensor_reach: remote,
            },
            next_fh: AtomicU64::new(1),
            refresh_requests: None,
            opens: Arc::default(),
            page_drop: None,
        }
        .watching_copies()
    }

    /// With a tier, has each copy that becomes servable empty its files' page cache.
    fn watching_copies(mut self) -> std::io::Result<Core> {
        let Some(tier) = self.shared.tier.clone() else {
            return Ok(self);
        };
        let drop = Arc::new(super::passthrough::PageDrop::new(
            self.opens.clone(),
            self.shared.handover.clone(),
            &tier,
        )?);
        let (tree, to) = (Arc::downgrade(&self.tree), drop.clone());
        tier.on_ready(Box::new(move |hash| {
            let Some(tree) = tree.upgrade() else { return };
            let inodes = tree.read().files_of(&hash);
            for ino in inodes {
                to.file(ino);
            }
        }));
        let shared = Arc::downgrade(&self.shared);
        tier.on_missed(Box::new(move |file, index| {
            shared.upgrade()?.reload_for_tier(file, index)
        }));
        self.page_drop = Some(drop);
        Ok(self)
    }

    /// Reads of `REFRESH_XATTR` go to `to`, which answers each once it has refreshed (without
    /// it, they fail with ENOTSUP: a pinned mount).
    pub fn on_refresh(&mut self, to: Sender<RefreshRequest>) {
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

    /// Whether the mount has local copies that passthrough could serve.
    pub fn wants_passthrough(&self) -> bool {
        self.shared.tier.is_some()
    }

    /// Whether the kernel took passthrough (at init).
    pub fn passthrough_taken(&self, taken: bool) {
        self.opens.enabled.store(taken, Ordering::Relaxed);
    }

    /// The attributes of `name` in directory `parent`; the kernel now holds one more lookup of
    /// it (see `forget`).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, FsError> {
        let tree = self.tree.read();
        let found = match tree.node(parent).map(|n| &n.kind) {
            Some(NodeKind::Dir { children }) => name.to_str().and_then(|n| children.get(n)),
            Some(NodeKind::File { .. }) => return Err(FsError::NotDir),
            None => return Err(FsError::NotFound),
        };
        let node = found
            .and_then(|&ino| tree.node(ino))
            .ok_or(FsError::NotFound)?;
        node.looked_up();
        Ok(node.attr)
    }

    /// The kernel forgot `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if self.tree.read().forget(ino, n) {
            self.tree.write().drop_if_unheld(ino);
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<FileAttr, FsError> {
        let tree = self.tree.read();
        tree.node(ino).map(|n| n.attr).ok_or(FsError::NotFound)
    }

    /// Opens file `ino` for reading (`flags` as open(2) takes them) and answers through `reply`:
    /// from its local copy when the tier has a checked one (by passthrough where the kernel
    /// took it), from chunks otherwise.
    pub fn open(&self, ino: u64, flags: i32, reply: impl OpenReply) {
        let (path, entry) = match self.tree.read().node(ino).map(|n| &n.kind) {
            Some(NodeKind::File { entry, model, .. }) => {
                (format!("{model}/{}", entry.path), entry.clone())
            }
            Some(NodeKind::Dir { .. }) => return reply.opened(Err(FsError::IsDir)),
            None => return reply.opened(Err(FsError::NotFound)),
        };
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return reply.opened(Err(FsError::ReadOnly));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let (shared, opens) = (self.shared.clone(), self.opens.clone());
        let open = move || {
            let direct = flags & libc::O_DIRECT != 0;
            let (source, mode) = opens.open(ino, &entry, direct, shared.tier.as_deref(), &|copy| {
                reply.backing(copy)
            });
            shared.handles.open(fh, path, ino, entry.blake3, source);
            reply.opened(Ok(Opened { fh, mode }));
        };
        if self.shared.tier.is_some() {
            // Opening a local copy is a disk call: never on the session's thread.
            self.readers.spawn(open);
        } else {
            open();
        }
    }

    /// Handle `fh` was closed.
    pub fn release(&self, fh: u64) {
        if let Some(h) = self.shared.handles.close(fh) {
            self.opens.close(h.ino, &h.source);
            if !matches!(h.source, handles::Source::Chunks)
                && let Some(tier) = &self.shared.tier
            {
                tier.release(&h.hash);
            }
            // The last open the page-cache way, of a file whose copy is there.
            if !matches!(h.source, handles::Source::Passthrough)
                && let (Some(drop), Some(tier)) = (&self.page_drop, &self.shared.tier)
                && tier.has_copy(&h.hash)
            {
                drop.file(h.ino);
            }
        }
    }

    pub fn opendir(&self, ino: u64) -> Result<(), FsError> {
        match self.tree.read().node(ino).map(|n| &n.kind) {
            Some(NodeKind::Dir { .. }) => Ok(()),
            Some(NodeKind::File { .. }) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    /// Lists directory `ino` from entry `offset` on (`.` and `..` first), handing each entry
    /// to `add` until it returns true (the caller's buffer is full).
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry<'_>) -> bool,
    ) -> Result<(), FsError> {
        let tree = self.tree.read();
        let node = tree.node(ino).ok_or(FsError::NotFound)?;
        let NodeKind::Dir { children } = &node.kind else {
            return Err(FsError::NotDir);
        };
        let dots = [
            (ino, FileType::Directory, "."),
            (node.parent, FileType::Directory, ".."),
        ];
        let entries = dots
            .into_iter()
            .chain(children.iter().filter_map(|(name, &child)| {
                Some((child, tree.node(child)?.attr.kind, name.as_str()))
            }));
        for (i, (ino, kind, name)) in entries.enumerate().skip(offset as usize) {
            let next = i as u64 + 1;
            if add(DirEntry {
                ino,
                next,
                kind,
                name,
            }) {
                break;
            }
        }
        Ok(())
    }

    pub fn statfs(&self) -> Statfs {
        let tree = self.tree.read();
        Statfs {
            blocks: tree.logical_bytes().div_ceil(4096),
            files: tree.len() as u64,
        }
    }

    /// Whether `ino` may be accessed as `mask` (access(2)'s): never for writing.
    pub fn access(&self, ino: u64, mask: i32) -> Result<(), FsError> {
        if self.tree.read().node(ino).is_none() {
            Err(FsError::NotFound)
        } else if mask & libc::W_OK != 0 {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Reads attribute `name` of `ino` for user `uid` into `size` bytes (0: the size it
    /// takes). Only the root has attributes: the control ones.
    pub fn getxattr(&self, ino: u64, name: &OsStr, uid: u32, size: u32, reply: XattrReply) {
        if ino != ROOT {
            return reply(Err(FsError::NoAttribute));
        }
        let asked = control::Asked { name, uid, size };
        control::answer(
            &asked,
            self.refresh_requests.as_ref(),
            || self.counters(),
            reply,
        );
    }
}
