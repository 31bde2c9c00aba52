//! Leases: what each live mount reads, so that nothing it needs is deleted under it. A mount
//! writes `leases/<mount-id>.json` on every member when it starts and every `LEASE_REFRESH`
//! while it lives (the models and generations it serves, and the chunks they name), and deletes
//! it when it ends. A lease not refreshed for `LEASE_TTL` belongs to a dead mount and is ignored.
//! `gc` keeps every chunk a live lease names.

use super::manifest::Manifest;
use super::{Store, member_err};
use crate::codec::Hash32;
use crate::member::{Expect, MemberError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub const LEASES: &str = "leases";
/// How often a live mount rewrites its lease.
pub const LEASE_REFRESH: Duration = Duration::from_secs(60);
/// A lease older than this is a dead mount's.
pub const LEASE_TTL: Duration = Duration::from_secs(600);
/// How far ahead of this host's clock another host's clock may run.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeasedModel {
    pub name: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub mount_id: String,
    pub host: String,
    pub pid: u32,
    pub mountpoint: String,
    pub refreshed_unix: u64,
    pub models: Vec<LeasedModel>,
    pub chunks: Vec<Hash32>,
}

use crate::clock::now_unix_secs as now_unix;

impl Lease {
    /// A lease for a mount serving `manifests`.
    pub fn new(mount_id: &str, mountpoint: &str, manifests: &[Manifest]) -> Lease {
        let mut chunks: Vec<Hash32> = manifests
            .iter()
            .flat_map(|m| m.needed().map(|c| *c.object()))
            .collect();
        chunks.sort_by_key(|h| h.0);
        chunks.dedup();
        Lease {
            mount_id: mount_id.to_string(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            pid: std::process::id(),
            mountpoint: mountpoint.to_string(),
            refreshed_unix: now_unix(),
            models: manifests
                .iter()
                .map(|m| LeasedModel {
                    name: m.name.clone(),
                    version: m.version,
                })
                .collect(),
            chunks,
        }
    }

    /// Names what the mount reads now: the model versions its files come from (an old version
    /// stays while a file of it is open) and their chunks.
    pub fn set_in_use(&mut self, versions: &BTreeSet<(String, u64)>, chunks: Vec<Hash32>) {
        self.models = versions
            .iter()
            .map(|(name, version)| LeasedModel {
                name: name.clone(),
                version: *version,
            })
            .collect();
        self.chunks = chunks;
    }

    /// Refreshed within `LEASE_TTL`. A lease dated more than `CLOCK_SKEW` ahead of this
    /// host's clock is not believed: it counts as expired (a planted lease dated far in the
    /// future would otherwise keep its chunks forever).
    pub fn alive(&self) -> bool {
        let now = now_unix();
        if self.refreshed_unix > now.saturating_add(CLOCK_SKEW.as_secs()) {
            return false;
        }
        now.saturating_sub(self.refreshed_unix) < LEASE_TTL.as_secs()
    }

    fn key(id: &str) -> String {
        format!("{LEASES}/{id}.json")
    }
}

impl Store {
    /// Writes (or refreshes) `lease` on every member; a member that cannot take it is logged.
    pub fn write_lease(&self, lease: &mut Lease) {
        lease.refreshed_unix = now_unix();
        let Ok(bytes) = serde_json::to_vec(lease) else {
            return;
        };
        let key = Lease::key(&lease.mount_id);
        for m in &self.members {
            let expect = match m.io.get_meta(&key) {
                Ok(Some(s)) => Expect::Tag(s.tag),
                _ => Expect::Absent,
            };
            if let Err(e) =
                m.io.put_meta(&key, &bytes, &expect)
                    .map_err(member_err(m.location()))
            {
                log::warn!("cannot write this mount's lease: {e}");
            }
        }
    }

    /// Deletes a mount's lease from every member.
    pub fn drop_lease(&self, mount_id: &str) {
        for m in &self.members {
            if let Err(e) = m.io.delete_meta(&Lease::key(mount_id)) {
                log::warn!("{}: cannot delete this mount's lease: {e}", m.location());
            }
        }
    }

    /// Every live lease found on any member (the newest copy of each), for `what` (a delete):
    /// a member whose leases cannot be listed or read fails it closed. A damaged lease file is
    /// skipped with a warning: every mount writes its lease on every member.
    pub fn live_leases(&self, what: &str) -> Result<Vec<Lease>, super::StoreError> {
        let incomplete =
            |location: &str, reason: String| super::StoreError::incomplete(what, location, reason);
        let mut by_id: BTreeMap<String, Lease> = BTreeMap::new();
        for m in &self.members {
            let names =
                m.io.list_meta(LEASES)
                    .map_err(|e| incomplete(m.location(), format!("cannot list leases: {e}")))?;
            for name in names {
                let stored = match m.io.get_meta(&name) {
                    Ok(Some(stored)) => stored,
                    Ok(None) => continue,
                    Err(MemberError::Corrupt(why)) => {
                        log::warn!("{}: lease {name} is damaged ({why}); skipped", m.location());
                        continue;
                    }
                    Err(e) => {
                        return Err(incomplete(m.location(), format!("{name}: {e}")));
                    }
                };
                let Ok(lease) = serde_json::from_slice::<Lease>(&stored.bytes) else {
                    log::warn!("{}: lease {name} is not a lease; skipped", m.location());
                    continue;
                };
                let newer = by_id
                    .get(&lease.mount_id)
                    .is_none_or(|l| l.refreshed_unix < lease.refreshed_unix);
                if newer {
                    by_id.insert(lease.mount_id.clone(), lease);
                }
            }
        }
        Ok(by_id.into_values().filter(Lease::alive).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(refreshed_unix: u64) -> Lease {
        Lease {
            refreshed_unix,
            ..Lease::new("m", "/mnt", &[])
        }
    }

    #[test]
    fn a_lease_lives_its_ttl_and_one_dated_in_the_future_is_not_believed() {
        let now = now_unix();
        assert!(at(now).alive());
        assert!(at(now - LEASE_TTL.as_secs() + 5).alive());
        assert!(!at(now - LEASE_TTL.as_secs() - 1).alive());
        // A little clock skew is allowed; beyond it, and at the largest time there is, expired.
        assert!(at(now + CLOCK_SKEW.as_secs() / 2).alive());
        assert!(!at(now + CLOCK_SKEW.as_secs() + 5).alive());
        assert!(!at(u64::MAX).alive());
    }
}
