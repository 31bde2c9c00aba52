//! Which source an open is served from, with the local tier: a file whose checked copy is there
//! is handed to the kernel by FUSE passthrough (the kernel then reads the copy itself; the
//! daemon sees no reads), or, where passthrough is not to be had (kernel, privileges), read by
//! the daemon from the copy; a file without a copy is served from its chunks. An inode never has
//! a passthrough open and a normal one at once (the kernel would fail the second with EIO): it
//! switches to passthrough only when no normal open of it is live, and never for an `O_DIRECT`
//! open: the kernel opens a passthrough's backing file with the opener's flags, so direct reads
//! would then take the local disk's alignment rules (an unaligned buffer fails with EINVAL) where
//! through the mount any buffer does. Such an open joins passthrough only when the inode already
//! is in it (a normal open beside it would fail). One backing file is
//! registered per inode while its passthrough opens last. Once a file's copy can serve it by
//! passthrough and no open reads it the other way, `PageDrop` empties its page cache through
//! the mount, off the readers' path.

use super::core::{Backing, OpenMode};
use super::handles::Source;
use super::handover::Handover;
use crate::store::manifest::FileEntry;
use crate::tier::Tier;
use crate::workers::Workers;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// Files waiting for their page cache to be emptied; more are left to their next open.
const DROPS_WAITING: usize = 64;

#[derive(Default)]
struct InodeOpens {
    normal: u32,
    passthrough: u32,
    backing: Option<Backing>,
}

#[derive(Default)]
pub(super) struct Opens {
    by_inode: Mutex<HashMap<u64, InodeOpens>>,
    /// Whether the kernel took passthrough at init and it has not failed since.
    pub enabled: AtomicBool,
}

impl Opens {
    /// Decides the source of a new open of `ino` (`file`; `direct` for an `O_DIRECT` open),
    /// registering a backing file with `register` when it goes by passthrough.
    pub fn open(
        &self,
        ino: u64,
        file: &FileEntry,
        direct: bool,
        tier: Option<&Tier>,
        register: &dyn Fn(&std::fs::File) -> std::io::Result<Backing>,
    ) -> (Source, OpenMode) {
        let copy = tier.and_then(|t| t.open_copy(file));
        let mut by_inode = self.by_inode.lock();
        let o = by_inode.entry(ino).or_default();
        let Some(copy) = copy else {
            o.normal += 1;
            return (Source::Chunks, OpenMode::Chunks);
        };
        // An inode already open by passthrough stays so (a normal open beside it would fail in
        // the kernel), even if passthrough has failed for another inode since.
        if o.backing.is_none() && o.normal == 0 && !direct && self.enabled.load(Ordering::Relaxed) {
            match register(&copy) {
                Ok(id) => o.backing = Some(id),
                Err(e) => {
                    // EPERM without CAP_SYS_ADMIN: reads from the copy from now on.
                    log::warn!(
                        "passthrough is not available ({e}); local copies are read by the daemon"
                    );
                    self.enabled.store(false, Ordering::Relaxed);
                }
            }
        }
        if let Some(b) = &o.backing {
            o.passthrough += 1;
            return (Source::Passthrough, OpenMode::Passthrough(b.clone()));
        }
        o.normal += 1;
        (Source::Copy(copy), OpenMode::LocalCopy)
    }

    /// An open of `ino` served from `source` was closed.
    pub fn close(&self, ino: u64, source: &Source) {
        let mut by_inode = self.by_inode.lock();
        let Some(o) = by_inode.get_mut(&ino) else {
            return;
        };
        match source {
            Source::Passthrough => o.passthrough = o.passthrough.saturating_sub(1),
            _ => o.normal = o.normal.saturating_sub(1),
        }
        if o.passthrough == 0 {
            o.backing = None;
        }
        if o.passthrough == 0 && o.normal == 0 {
            by_inode.remove(&ino);
        }
    }

    /// Whether no open of `ino` reads it the page-cache way (from chunks or, by the daemon, from
    /// its copy).
    fn no_normal_open(&self, ino: u64) -> bool {
        self.by_inode.lock().get(&ino).is_none_or(|o| o.normal == 0)
    }
}

/// Empties the page cache through the mount of a file once its copy can serve it by passthrough
/// and no open reads it the other way. Otherwise the kernel does it inside the first passthrough
/// open() (it empties a file's page cache at each open not marked KEEP_CACHE, and rejects
/// KEEP_CACHE on a passthrough open): measured 0.11 s per GiB of the 4 KiB pages a cold read
/// left, which no passthrough read uses, so a 1 GiB warm re-read took 0.17 s instead of 0.06.
pub(super) struct PageDrop {
    pool: Workers,
    opens: Arc<Opens>,
    handover: Arc<Handover>,
    tier: Weak<Tier>,
}

impl PageDrop {
    pub fn new(
        opens: Arc<Opens>,
        handover: Arc<Handover>,
        tier: &Arc<Tier>,
    ) -> std::io::Result<Self> {
        Ok(PageDrop {
            pool: Workers::with_queue("page-drop", 1, Some(DROPS_WAITING))?,
            opens,
            handover,
            tier: Arc::downgrade(tier),
        })
    }

    /// `ino`'s copy can serve it: its page cache goes, unless an open reads it the other way
    /// or passthrough is not to be had (then the daemon serves the copy through that cache).
    pub fn file(self: &Arc<Self>, ino: u64) {
        if !self.opens.enabled.load(Ordering::Relaxed) || !self.opens.no_normal_open(ino) {
            return;
        }
        let me = self.clone();
        self.pool.try_spawn(move || {
            let Some(kernel) = me.handover.kernel() else {
                return;
            };
            if !me.opens.no_normal_open(ino) {
                return;
            }
            match kernel.invalidate(ino) {
                Ok(()) => {
                    if let Some(tier) = me.tier.upgrade() {
                        tier.page_caches_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => log::debug!("cannot empty the page cache of inode {ino}: {e}"),
            }
        });
    }
}
