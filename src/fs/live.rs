//! The handle on a running mount that the rest of the daemon holds while the FUSE session owns
//! the filesystem: it shows the store's changes in the tree (and tells the kernel what became
//! stale), says what the mount reads now (for its lease) and takes a copy of the counters (for
//! `status`, the refresh answer and `/metrics`).

use super::core::Shared;
use super::stats::{Counters, ModelReport};
use super::tree::{Stale, Tree};
use crate::clock::unix_secs;
use crate::store::liveness::MemberStats;
use fuser::INodeNo;
use parking_lot::RwLock;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A handle on a running mount's tree and counters, for the thread that follows the store.
#[derive(Clone)]
pub struct Live {
    pub(super) shared: Arc<Shared>,
    pub(super) tree: Arc<RwLock<Tree>>,
}

impl Live {
    /// Chunks the cache evicts while the kernel has only part of them are stored into its page
    /// cache through `kernel` from now on (see `handover`).
    pub fn hand_over_to(&self, kernel: Arc<dyn super::handover::PageStore>) {
        self.shared.handover.to(kernel);
    }

    /// Shows the store's changes (new current manifests, models gone), then tells the kernel
    /// which names and listings it holds became stale. That is done after the tree's lock is
    /// let go: the kernel may wait on a request of this mount that waits on the tree.
    pub fn apply(
        &self,
        changes: &[crate::store::catalog::Change],
        kernel: Option<&fuser::Notifier>,
    ) {
        use crate::store::catalog::Change;
        let mut stale = Vec::new();
        {
            let mut tree = self.tree.write();
            for c in changes {
                match c {
                    Change::Current(m) => tree.apply(m, &mut stale),
                    Change::Removed(name) => tree.remove(name, &mut stale),
                }
            }
        }
        stale.sort();
        stale.dedup();
        let Some(kernel) = kernel else { return };
        for s in stale {
            // ENOENT: the kernel did not hold it. Nothing else is worse than a late update.
            let result = match &s {
                Stale::Entry(parent, name) => {
                    kernel.inval_entry(INodeNo(*parent), OsStr::new(name))
                }
                Stale::Listing(dir) => kernel.inval_inode(INodeNo(*dir), 0, 0),
            };
            if let Err(e) = result
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::debug!("cannot invalidate {s:?} in the kernel: {e}");
            }
        }
    }

    /// Records that a look for new versions ended now.
    pub fn refreshed(&self) {
        let stats = &self.shared.counts;
        stats.refreshes.fetch_add(1, Ordering::Relaxed);
        stats
            .refreshed_unix
            .store(crate::clock::now_unix_secs(), Ordering::Relaxed);
    }

    /// The model versions live nodes come from and their chunks (what the lease must name).
    pub fn in_use(
        &self,
    ) -> (
        std::collections::BTreeSet<(String, u64)>,
        Vec<crate::codec::Hash32>,
    ) {
        self.tree.read().in_use()
    }

    /// How long reads took (shared with the read path: it goes on counting).
    pub fn read_latency(&self) -> crate::store::liveness::Latency {
        self.shared.counts.read_latency.clone()
    }

    /// How long each opened member took to answer, by location.
    pub fn member_latencies(&self) -> Vec<(String, crate::store::liveness::Latency)> {
        let store = &self.shared.store;
        let mut v: Vec<(String, crate::store::liveness::Latency)> = store
            .liveness
            .records()
            .map(|(id, r)| {
                let location = store
                    .member(id)
                    .map_or_else(|| id.clone(), |m| m.location().to_string());
                (location, r.latency.clone())
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// A point-in-time copy of the counters.
    pub fn counters(&self) -> Counters {
        let (stats, cache) = (&self.shared.counts, &self.shared.cache);
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            bytes_served: l(&stats.bytes_served),
            reads: l(&stats.reads),
            cache_hits: l(&cache.hits),
            cache_misses: l(&cache.misses),
            cache_bytes_used: cache.used_bytes(),
            cache_capacity: cache.capacity(),
            chunks_decompressed: l(&stats.chunks_decompressed),
            chunks_prefetched: l(&stats.chunks_prefetched),
            frame_reads: l(&stats.frame_reads),
            replica_failovers: l(&stats.replica_failovers),
            errors: l(&stats.errors),
            page_cache_handovers: l(&self.shared.handover.handed),
            page_cache_handovers_missed: l(&self.shared.handover.missed),
            now: self.shared.handles.activity(),
            tier: self.shared.tier.as_ref().map(|t| t.report()),
            refreshes: l(&stats.refreshes),
            refreshed_unix: l(&stats.refreshed_unix),
            versions: {
                let tree = self.tree.read();
                tree.models
                    .iter()
                    .map(|(name, v)| ModelReport {
                        name: name.clone(),
                        version: v.version,
                        adopted_unix: unix_secs(v.adopted),
                    })
                    .collect()
            },
            members: {
                let store = &self.shared.store;
                let mut members = store.liveness.snapshot(|id| {
                    store
                        .member(id)
                        .map_or_else(String::new, |m| m.location().to_string())
                });
                // Members picked up from the member list after the mount started.
                members.extend(store.joined_members().map(|m| MemberStats {
                    id: m.id().to_string(),
                    location: m.location().to_string(),
                    state: crate::store::liveness::MemberState::Up,
                    ..MemberStats::default()
                }));
                members
            },
        }
    }
}
