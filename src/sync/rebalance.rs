//! `rebalance`: moves replicas to where the placement puts them now (after a member was added,
//! removed or reweighted). For each chunk the members the placement picks get a verified copy
//! first; then every member receives the new manifest (generation + 1, the new replica lists);
//! only then are copies the manifests no longer list where they are deleted, and not while a
//! live mount's lease names an older generation of the model (a later run deletes them).
//! Killed at any moment, a rerun finds the copies already made and finishes.

use crate::codec::Hash32;
use crate::member::IfPresent;
use crate::placement;
use crate::store::manifest::{ChunkRef, Manifest};
use crate::store::reader::verified_image;
use crate::store::{Run, Store, StoreError, current_copy, member_err, next_counter};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RebalanceReport {
    pub dry_run: bool,
    pub chunks: u64,
    /// Replicas (chunk, member) in place before, and how many of them moved.
    pub replicas: u64,
    pub replicas_moved: u64,
    pub bytes_copied: u64,
    pub old_copies_deleted: u64,
    /// Old copies kept: the sum of the two reasons below.
    pub old_copies_kept: u64,
    /// Kept because a live mount still reads an older generation.
    pub old_copies_kept_for_mounts: u64,
    /// Kept because they are younger than `min_age` on a member without an exclusive lock
    /// (an object store), where a pack elsewhere may be writing them.
    pub old_copies_kept_young: u64,
    pub min_age_secs: u64,
    pub seconds: f64,
}

/// Where one stored chunk goes: the members the placement picks for it.
struct Move {
    want: Vec<String>,
    copied: u64,
}

/// Copies stored chunk `c` (at `pos`) to the members the placement picks that lack a good copy.
fn move_chunk(
    store: &Store,
    manifest: &Manifest,
    (pos, slots): (placement::ChunkPos<'_>, &[placement::Slot<'_>]),
    c: &ChunkRef,
    path: &str,
    dry_run: bool,
) -> Result<Move, StoreError> {
    let replicas = manifest.replicas.min(store.members.len()).max(1);
    let want: Vec<String> = placement::place(manifest.placement, pos, slots, replicas)?
        .into_iter()
        .map(|i| slots[i].id.to_string())
        .collect();
    let missing: Vec<&String> = want.iter().filter(|w| !c.members.contains(w)).collect();
    if missing.is_empty() {
        return Ok(Move { want, copied: 0 });
    }
    // A verified image from a current replica.
    let mut scratch = vec![0u8; c.len as usize];
    let image = c
        .members
        .iter()
        .filter_map(|id| store.member(id))
        .find_map(|m| {
            verified_image(m, c, &mut scratch)
                .ok()
                .map(|img| img.to_vec())
        })
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "chunk {} of '{path}' has no good replica to move (run shardfs repair first)",
                c.object()
            ))
        })?;
    let mut copied = 0;
    for id in missing {
        let Some(m) = store.member(id) else { continue };
        let there = verified_image(m, c, &mut scratch).is_ok();
        if !there && !dry_run {
            m.io.put_chunk(c.object(), &image, IfPresent::Replace)
                .map_err(member_err(m.location()))?;
        }
        if !there {
            copied += image.len() as u64;
        }
    }
    Ok(Move { want, copied })
}

/// Moves one model's replicas (copies to the members the placement picks; the lists updated),
/// a delta's base chunk with the delta.
fn rebalance_model(
    store: &Store,
    manifest: &mut Manifest,
    dry_run: bool,
    report: &mut RebalanceReport,
) -> Result<(), StoreError> {
    let replicas = manifest.replicas.min(store.members.len()).max(1);
    let slots = &store.placement_slots(replicas, None)[..];
    let places = manifest.chunk_places();
    let mut all_moves = Vec::new();
    for (file, places) in manifest.files.iter().zip(places) {
        let moves: Vec<Result<Vec<Move>, StoreError>> = file
            .chunks
            .par_iter()
            .enumerate()
            .map(|(i, c)| {
                let pos = places.of(i, c);
                c.needs()
                    .map(|n| {
                        let pos = placement::ChunkPos {
                            hash: &n.hash,
                            ..pos
                        };
                        move_chunk(store, manifest, (pos, slots), n, &file.path, dry_run)
                    })
                    .collect()
            })
            .collect();
        all_moves.push(moves);
    }
    for (file, moves) in manifest.files.iter_mut().zip(all_moves) {
        for (c, result) in file.chunks.iter_mut().zip(moves) {
            for (k, Move { want, copied }) in result?.into_iter().enumerate() {
                let Some(n) = c.need_mut(k) else { continue };
                report.chunks += 1;
                report.replicas += n.members.len() as u64;
                report.bytes_copied += copied;
                report.replicas_moved +=
                    n.members.iter().filter(|m| !want.contains(m)).count() as u64;
                n.members = want;
            }
        }
    }
    Ok(())
}

/// Moves chunk replicas to the members the placement chooses now, publishes the manifests
/// that changed, then deletes the copies left where no manifest lists them.
pub fn rebalance(
    store: &Store,
    run: Run,
    min_age: std::time::Duration,
) -> Result<RebalanceReport, StoreError> {
    let dry_run = run.is_dry();
    let started = Instant::now();
    let _lock = store.lock_for(run)?;
    let mut report = RebalanceReport {
        dry_run,
        min_age_secs: min_age.as_secs(),
        ..RebalanceReport::default()
    };
    // Nothing moves unless every copy of every manifest could be read; chunks that copies
    // written by a newer shardfs name are left where they are.
    let view = store.full_view("rebalance")?;
    let leases = store.live_leases("rebalance")?;
    let placed = move_models(store, &leases, dry_run, &mut report)?;
    delete_old_copies(
        store,
        &placed,
        &view.newer_chunks,
        min_age,
        dry_run,
        &mut report,
    )?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Where each chunk is listed once every model has moved, and the chunks of models a live
/// mount reads at an older version (their old copies stay).
#[derive(Default)]
struct Placed {
    listed: HashMap<Hash32, HashSet<String>>,
    protected: HashSet<Hash32>,
}

/// Moves every model's chunks to where the placement wants them; publishes each manifest
/// that changed.
fn move_models(
    store: &Store,
    leases: &[crate::store::lease::Lease],
    dry_run: bool,
    report: &mut RebalanceReport,
) -> Result<Placed, StoreError> {
    // Where each chunk is listed now, and the chunks of models a live mount reads at an older
    // generation (their old copies stay).
    let mut placed = Placed::default();
    for name in store.model_names()? {
        let copies = store.manifest_copies(&name);
        // The newest copy, from the copies just read (not a second read of every member).
        let mut manifest = current_copy(&copies).ok_or_else(|| StoreError::CorruptManifest {
            name: name.clone(),
            reason: "no valid copy on any member".into(),
        })?;
        let before = manifest.clone();
        rebalance_model(store, &mut manifest, dry_run, report)?;
        if manifest.files != before.files {
            manifest.version =
                next_counter(manifest.version, &format!("the version of model '{name}'"))?;
            if !dry_run {
                store.flush_all()?;
                store.publish_manifest(&manifest, &copies)?;
            }
        }
        let leased_older = leases.iter().any(|l| {
            l.models
                .iter()
                .any(|m| m.name == name && m.version < manifest.version)
        });
        for c in manifest.needed() {
            if leased_older {
                placed.protected.insert(*c.object());
            }
            placed
                .listed
                .entry(*c.object())
                .or_default()
                .extend(c.members.iter().cloned());
        }
    }
    Ok(placed)
}

/// Deletes the copies no manifest lists where they are (`placed`), unless a live mount may
/// read them or a newer shardfs's manifest names them (`newer_chunks`).
fn delete_old_copies(
    store: &Store,
    placed: &Placed,
    newer_chunks: &HashSet<Hash32>,
    min_age: std::time::Duration,
    dry_run: bool,
    report: &mut RebalanceReport,
) -> Result<(), StoreError> {
    // Copies no manifest lists where they are: moved away now or earlier (a rerun after a live
    // mount ended, or a kill), or left by repair and member changes. On a member another writer
    // may be using (no exclusive lock), only copies older than `min_age` go.
    let now = std::time::SystemTime::now();
    for m in &store.members {
        for entry in m.io.list_chunks().map_err(member_err(m.location()))? {
            let Some(where_) = placed.listed.get(&entry.hash) else {
                continue; // unreferenced: gc's business
            };
            if where_.contains(m.id()) {
                continue;
            }
            if placed.protected.contains(&entry.hash) || newer_chunks.contains(&entry.hash) {
                report.old_copies_kept += 1;
                report.old_copies_kept_for_mounts += 1;
                continue;
            }
            let age = now.duration_since(entry.modified).unwrap_or_default();
            if !m.io.exclusive_lock() && age < min_age {
                report.old_copies_kept += 1;
                report.old_copies_kept_young += 1;
                continue;
            }
            if !dry_run {
                match m.io.delete_chunk(&entry.hash) {
                    Ok(()) | Err(crate::member::MemberError::Missing) => {}
                    Err(e) => return Err(member_err(m.location())(e)),
                }
            }
            report.old_copies_deleted += 1;
        }
    }
    Ok(())
}
