//! The thread that follows the store while a mount lives. Every `--refresh` interval (and when
//! `shardfs refresh` asks, through the root's refresh attribute) it opens members the member list
//! added, looks for new, re-packed and removed models (unless the mount is pinned) and shows them
//! in the tree, and keeps the mount's lease naming the versions still in use: rewritten when
//! that set changes, and every `LEASE_REFRESH` so that it stays alive.

use crate::fs::{Live, RefreshRequest, counters_answer};
use crate::store::Store;
use crate::store::catalog::{Catalog, Change};
use crate::store::lease::{LEASE_REFRESH, Lease};
use crossbeam_channel::{Receiver, select};
use fuser::Notifier;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct Follow {
    pub store: Arc<Store>,
    pub live: Live,
    pub kernel: Notifier,
    /// `None` for a pinned mount.
    pub catalog: Option<Catalog>,
    pub lease: Lease,
    pub every: Duration,
    pub members: crate::member::Options,
}

impl Follow {
    /// Runs until `stop` is closed, then drops the lease.
    pub fn run(mut self, stop: Receiver<()>, requests: Receiver<RefreshRequest>) {
        let mut leased = Instant::now();
        let mut in_use = self.live.in_use().0;
        loop {
            let mut waiting = Vec::new();
            select! {
                recv(stop) -> _ => break,
                recv(requests) -> r => waiting.extend(r.ok()),
                default(self.every) => {}
            }
            // Requests that came meanwhile are answered by the same refresh.
            waiting.extend(requests.try_iter());
            self.step();
            let (versions, chunks) = self.live.in_use();
            if versions != in_use || leased.elapsed() >= LEASE_REFRESH {
                self.lease.set_in_use(&versions, chunks);
                self.store.write_lease(&mut self.lease);
                leased = Instant::now();
                in_use = versions;
            }
            let counters = self.live.counters();
            for (reply, size) in waiting {
                reply(counters_answer(&counters, size));
            }
        }
        self.store.drop_lease(&self.lease.mount_id);
    }

    /// One look at the store.
    fn step(&mut self) {
        for location in self.store.follow_member_list(&self.members) {
            log::warn!("now also reading member {location}, found in the member list");
        }
        let Some(catalog) = &mut self.catalog else {
            return;
        };
        let changes = catalog.refresh(&self.store);
        for c in &changes {
            match c {
                Change::Current(m) => log::info!(
                    "model '{}': serving version {} to new opens",
                    m.name,
                    m.version
                ),
                Change::Removed(name) => log::info!("model '{name}' was removed from the store"),
            }
        }
        if !changes.is_empty() {
            self.live.apply(&changes, Some(&self.kernel));
        }
        self.live.refreshed();
    }
}
