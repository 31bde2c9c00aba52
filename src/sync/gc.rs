//! `rm` retires a model (its manifest on every member); `gc` deletes the chunk files that no
//! manifest copy and no live mount's lease references, reporting the space returned. Both take
//! the members' pack lock, so they never run beside a pack on a directory member; on an object
//! store (no lock) a chunk file younger than `--min-age` is kept, since a pack elsewhere may be
//! writing it for a manifest not yet published. Every member given must be readable: a manifest
//! only an absent member holds could otherwise lose its chunks, and a removed model would come
//! back with the member.

use crate::codec::Hash32;
use crate::member::Sweep;
use crate::store::{Run, Store, StoreError, member_err};
use serde::Serialize;
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

fn all_given(store: &Store, what: &str) -> Result<(), StoreError> {
    if let Some((location, reason)) = store.unavailable.iter().find(|(_, r)| r.is_missed()) {
        return Err(StoreError::Invalid(format!(
            "{what} needs every member readable: {location} is not ({reason})"
        )));
    }
    let (list, _) = store.member_list();
    if let Some(l) = list
        .members
        .iter()
        .find(|l| !l.retired && store.member(&l.id).is_none())
    {
        return Err(StoreError::Invalid(format!(
            "{what} needs every member of the store: member {} ({}) was not given",
            l.id, l.location
        )));
    }
    Ok(())
}

/// Removes model `name` from every member.
pub fn rm(store: &Store, name: &str) -> Result<usize, StoreError> {
    all_given(store, "rm")?;
    store.full_view("rm")?;
    store.manifest(name)?;
    let _lock = store.lock()?;
    for m in &store.members {
        m.io.delete_manifest(name)
            .map_err(member_err(m.location()))?;
    }
    Ok(store.members.len())
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Chunk files deleted (or that would be), and their bytes.
    pub chunk_files_deleted: u64,
    /// Damaged chunk files set aside by a repair, older than the minimum age, deleted. Their
    /// bytes count in `bytes_returned`.
    pub stale_files_deleted: u64,
    /// Temporary files of killed writes, removed when the lock was taken (a dry run takes no
    /// lock and removes none).
    pub temp_files_deleted: u64,
    pub bytes_returned: u64,
    /// Unreferenced chunk files and damaged files set aside, kept because they are younger
    /// than the minimum age.
    pub kept_young: u64,
    /// Chunks kept only because a live mount's lease names them.
    pub kept_for_leases: u64,
    pub live_leases: usize,
    pub seconds: f64,
    /// In a dry run, the chunk files that would be deleted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_delete: Vec<WouldDelete>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WouldDelete {
    pub member: String,
    pub chunk: String,
    pub bytes: u64,
}

/// Deletes unreferenced chunk files on every member.
pub fn gc(store: &Store, run: Run, min_age: Duration) -> Result<GcReport, StoreError> {
    let dry_run = run.is_dry();
    let started = Instant::now();
    all_given(store, "gc")?;
    // Taking the lock also clears a directory member's temporary files of killed writes: no
    // pack can be writing them while it is held.
    let lock = store.lock_for(run)?;
    // Every copy of every manifest on every member, stale ones too; nothing is deleted unless
    // all of them could be read.
    let referenced: HashSet<Hash32> = store.full_view("gc")?.referenced();
    let leases = store.live_leases("gc")?;
    let mut stale = crate::member::Stale::default();
    for m in &store.members {
        let s =
            m.io.sweep_damaged(min_age, if dry_run { Sweep::Count } else { Sweep::Delete })
                .map_err(member_err(m.location()))?;
        stale.deleted += s.deleted;
        stale.bytes += s.bytes;
        stale.kept_young += s.kept_young;
    }

    let leased: HashSet<Hash32> = leases
        .iter()
        .flat_map(|l| l.chunks.iter().copied())
        .collect();
    let mut report = GcReport {
        dry_run,
        stale_files_deleted: stale.deleted,
        bytes_returned: stale.bytes,
        kept_young: stale.kept_young,
        temp_files_deleted: lock.as_ref().map_or(0, |l| l.temp_files_removed()),
        live_leases: leases.len(),
        ..GcReport::default()
    };
    let now = SystemTime::now();
    for m in &store.members {
        for entry in m.io.list_chunks().map_err(member_err(m.location()))? {
            if referenced.contains(&entry.hash) {
                continue;
            }
            if leased.contains(&entry.hash) {
                report.kept_for_leases += 1;
                continue;
            }
            let age = now.duration_since(entry.modified).unwrap_or(Duration::ZERO);
            if age < min_age {
                report.kept_young += 1;
                continue;
            }
            if dry_run {
                report.would_delete.push(WouldDelete {
                    member: m.location().to_string(),
                    chunk: entry.hash.to_hex(),
                    bytes: entry.size,
                });
            } else {
                m.io.delete_chunk(&entry.hash)
                    .map_err(member_err(m.location()))?;
            }
            report.chunk_files_deleted += 1;
            report.bytes_returned += entry.size;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
