//! `repair`: brings every model back to its replica count and every member's manifest up to
//! date. For each chunk of a model's newest manifest, every listed replica is read and verified;
//! where fewer than the model's replicas verify, the missing ones are re-created from a good one
//! onto the members the placement ranks first among those that opened (a member already holding
//! a good copy, from an earlier repair that was killed, is counted without copying). A corrupt
//! replica is replaced in one atomic put: its bytes are gone only once the good copy is in place.
//! Copies are made durable before a manifest names them; a new manifest (generation + 1, the
//! new replica lists) then goes to every member over the copy read at the start, and members with
//! a missing, damaged or older copy get it too. Killed at any moment, a rerun finds what was done
//! and finishes the rest.

use crate::member::IfPresent;
use crate::placement::{self, ChunkPos, Slot};
use crate::store::manifest::{ChunkRef, Manifest, MemberRef};
use crate::store::reader::{ReplicaError, verified_image};
use crate::store::{Run, Store, StoreError, current_copy, member_err, next_counter, stale_copies};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct RepairOptions {
    /// Only this model.
    pub name: Option<String>,
    /// Report what would be done; write nothing.
    pub dry_run: bool,
    /// Told how far the repair got.
    pub progress: crate::progress::Reporter,
    /// A member being drained (`member remove`): its replicas may be copied from, but count for
    /// nothing and no replica goes to it.
    pub exclude: Option<String>,
}

/// A chunk that could not be brought back to its replica count.
#[derive(Debug, Clone, Serialize)]
pub struct Unrepaired {
    pub model: String,
    pub file: String,
    /// The file's bytes `[offset, offset + len)` the chunk holds.
    pub offset: u64,
    pub len: u64,
    pub chunk: String,
    /// Good replicas left, and the count the model was packed with.
    pub good: usize,
    pub replicas: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Every chunk of every model is at full replication (after the repair, or already).
    pub ok: bool,
    pub dry_run: bool,
    pub models: usize,
    pub chunks: usize,
    /// Replicas copied to a member (or that would be, with `--dry-run`).
    pub replicas_recreated: u64,
    /// Of those, corrupt files replaced in place.
    pub corrupt_replaced: u64,
    /// Stored bytes copied.
    pub bytes_copied: u64,
    /// Member copies of manifests written (missing, damaged, older, or naming moved replicas).
    pub manifests_synced: u64,
    pub unrepaired: Vec<Unrepaired>,
    pub seconds: f64,
}

/// What one chunk needed.
#[derive(Default)]
struct ChunkFix {
    /// The replica list to record, when it changed.
    members: Option<Vec<String>>,
    recreated: u64,
    replaced: u64,
    bytes: u64,
    unrepaired: Option<(usize, String)>,
}

/// Repairs one chunk: checks its listed replicas, re-creates missing ones.
fn repair_chunk(
    store: &Store,
    manifest: &Manifest,
    chunk: &ChunkRef,
    pos: ChunkPos<'_>,
    slots: &[Slot<'_>],
    opts: &RepairOptions,
) -> Result<ChunkFix, StoreError> {
    let dry_run = opts.dry_run;
    let excluded = |id: &str| opts.exclude.as_deref() == Some(id);
    let want = manifest.replicas.max(1);
    let mut good: Vec<String> = Vec::new();
    let mut image: Option<Vec<u8>> = None;
    let mut scratch = vec![0u8; chunk.len as usize];
    for id in &chunk.members {
        let Some(m) = store.member(id) else { continue };
        if good.contains(id) {
            continue;
        }
        if let Ok(img) = verified_image(m, chunk, &mut scratch) {
            if !excluded(id) {
                good.push(id.clone());
            }
            if image.is_none() {
                image = Some(img.to_vec());
            }
        }
    }
    let mut fix = ChunkFix::default();
    let listed_ok = good.len() == chunk.members.len() && good.len() >= want;
    if listed_ok {
        return Ok(fix);
    }
    let Some(image) = image else {
        fix.unrepaired = Some((0, "no good replica left".into()));
        return Ok(fix);
    };
    // Every opened member, in the order the placement ranks them for this chunk.
    let ranked = placement::place(manifest.placement, pos, slots, slots.len())?;
    let mut members = good.clone();
    for i in ranked {
        if members.len() >= want {
            break;
        }
        let id = slots[i].id;
        if members.iter().any(|m| m == id) {
            continue;
        }
        let Some(m) = store.member(id) else { continue };
        // A good copy may be there already (an earlier repair was killed after copying).
        let existing = verified_image(m, chunk, &mut scratch);
        if existing.is_err() {
            let present = match existing {
                Err(ReplicaError::Missing) => IfPresent::Refuse,
                _ => IfPresent::Replace,
            };
            if !dry_run {
                m.io.put_chunk(chunk.object(), &image, present)
                    .map_err(member_err(m.location()))?;
            }
            fix.recreated += 1;
            fix.replaced += u64::from(present == IfPresent::Replace);
            fix.bytes += image.len() as u64;
        }
        members.push(id.to_string());
    }
    if members.len() < want {
        fix.unrepaired = Some((
            members.len(),
            format!(
                "only {} of the {want} replicas can be placed: too few members opened",
                members.len()
            ),
        ));
    }
    if members != chunk.members {
        fix.members = Some(members);
    }
    Ok(fix)
}

/// Repairs one model; adds to `report`.
fn repair_model(
    store: &Store,
    name: &str,
    opts: &RepairOptions,
    progress: &dyn crate::progress::Progress,
    report: &mut RepairReport,
) -> Result<(), StoreError> {
    let copies = store.manifest_copies(name);
    let Some(mut manifest) = current_copy(&copies) else {
        return Err(no_valid_copy(name, &copies));
    };
    let slots = store.placement_slots(manifest.replicas, opts.exclude.as_deref());
    let total = manifest.chunk_count() as u64;
    let recreated = AtomicU64::new(0);
    let mut fixes = Vec::new();
    for (file, places) in manifest.files.iter().zip(manifest.chunk_places()) {
        // A delta's base chunk is repaired with it: the delta cannot be read without it.
        let results: Vec<Result<Vec<ChunkFix>, StoreError>> = file
            .chunks
            .par_iter()
            .enumerate()
            .map(|(i, c)| {
                let pos = places.of(i, c);
                let fixes = c
                    .needs()
                    .map(|n| {
                        let pos = ChunkPos {
                            hash: &n.hash,
                            ..pos
                        };
                        repair_chunk(store, &manifest, n, pos, &slots, opts)
                    })
                    .collect::<Result<Vec<ChunkFix>, StoreError>>();
                progress.advance(c.len);
                if let Ok(f) = &fixes {
                    let n: u64 = f.iter().map(|f| f.recreated).sum();
                    recreated.fetch_add(n, Ordering::Relaxed);
                }
                fixes
            })
            .collect();
        fixes.push(results.into_iter().collect::<Result<Vec<_>, _>>()?);
    }
    report.chunks += total as usize;
    let changed = apply_fixes(&mut manifest, fixes, report);
    // The copies must be durable before a manifest names them.
    if !opts.dry_run && report.replicas_recreated > 0 {
        store.flush_all()?;
    }
    if changed {
        manifest.version = next_counter(
            manifest.version,
            &format!("the version of model '{}'", manifest.name),
        )?;
        for m in &store.members {
            if !manifest.members.iter().any(|r| r.id == m.id()) {
                manifest.members.push(MemberRef {
                    id: m.id().to_string(),
                    index: m.info.index,
                });
            }
        }
    }
    report.manifests_synced += sync_manifest(store, &manifest, &copies, opts.dry_run)?;
    Ok(())
}

/// The error for model `name` when none of its `copies` can be read.
fn no_valid_copy(name: &str, copies: &[crate::store::ManifestCopy<'_>]) -> StoreError {
    let reasons: Vec<String> = copies
        .iter()
        .filter_map(|c| match &c.manifest {
            Some(Err(r)) => Some(format!("{}: {r}", c.member.location())),
            _ => None,
        })
        .collect();
    StoreError::CorruptManifest {
        name: name.to_string(),
        reason: format!("no valid copy on any member ({})", reasons.join("; ")),
    }
}

/// Counts each chunk's fix in `report` and records the replicas it moved in `manifest`;
/// `true` when any chunk's replicas changed.
fn apply_fixes(
    manifest: &mut Manifest,
    fixes: Vec<Vec<Vec<ChunkFix>>>,
    report: &mut RepairReport,
) -> bool {
    let mut changed = false;
    let (model, replicas) = (manifest.name.clone(), manifest.replicas);
    for (file, file_fixes) in manifest.files.iter_mut().zip(fixes) {
        for (c, chunk_fixes) in file.chunks.iter_mut().zip(file_fixes) {
            // The file's bytes the chunk holds: a delta's base is named by the delta's place.
            let (offset, len) = (c.offset, c.len);
            for (k, fix) in chunk_fixes.into_iter().enumerate() {
                let Some(chunk) = c.need_mut(k) else { continue };
                report.replicas_recreated += fix.recreated;
                report.corrupt_replaced += fix.replaced;
                report.bytes_copied += fix.bytes;
                if let Some((good, reason)) = fix.unrepaired {
                    let reason = match k {
                        0 => reason,
                        _ => format!("the base chunk this delta is read with: {reason}"),
                    };
                    report.unrepaired.push(Unrepaired {
                        model: model.clone(),
                        file: file.path.clone(),
                        offset,
                        len,
                        chunk: chunk.object().to_hex(),
                        good,
                        replicas,
                        reason,
                    });
                }
                if let Some(members) = fix.members {
                    chunk.members = members;
                    changed = true;
                }
            }
        }
    }
    changed
}

/// Publishes `manifest` over the member copies that differ from it (`copies`, as read);
/// returns how many were (or, in a dry run, would be) written.
fn sync_manifest(
    store: &Store,
    manifest: &Manifest,
    copies: &[crate::store::ManifestCopy<'_>],
    dry_run: bool,
) -> Result<u64, StoreError> {
    let bytes = store.manifest_bytes(manifest)?;
    let mut stale = 0;
    for copy in stale_copies(&bytes, copies) {
        stale += 1;
        if let Some(Err(reason)) = &copy.manifest {
            // A damaged or forged copy is never passed on: it is replaced by the current one.
            log::warn!(
                "{}: the manifest copy of '{}' is not valid ({reason}); {} by the current copy",
                copy.member.location(),
                manifest.name,
                if dry_run {
                    "would be replaced"
                } else {
                    "replaced"
                }
            );
        }
    }
    Ok(if dry_run {
        stale
    } else {
        store.publish_manifest(manifest, copies)?
    })
}

/// Repairs every model (or `opts.name`) of the store.
pub fn repair(store: &Store, opts: &RepairOptions) -> Result<RepairReport, StoreError> {
    let started = Instant::now();
    let _lock = store.lock_for(Run::dry_if(opts.dry_run))?;
    let names = match &opts.name {
        Some(n) => {
            store.manifest(n)?;
            vec![n.clone()]
        }
        None => store.model_names()?,
    };
    let bytes: u64 = names
        .iter()
        .filter_map(|n| store.manifest(n).ok())
        .map(|m| m.logical_size())
        .sum();
    let progress = &*opts.progress;
    progress.start("repairing", bytes);
    let mut report = RepairReport {
        dry_run: opts.dry_run,
        models: names.len(),
        ..RepairReport::default()
    };
    for name in &names {
        // A model with no valid copy anywhere cannot be repaired; the others still are.
        match repair_model(store, name, opts, progress, &mut report) {
            Err(StoreError::CorruptManifest { name, reason }) => {
                log::warn!("model '{name}' not repaired: {reason}");
                report.unrepaired.push(Unrepaired {
                    model: name,
                    file: String::new(),
                    offset: 0,
                    len: 0,
                    chunk: String::new(),
                    good: 0,
                    replicas: 0,
                    reason: format!("manifest: {reason}"),
                });
            }
            other => other?,
        }
    }
    if !opts.dry_run {
        // Member-list copies that are missing, damaged or not signed by the store's key get the
        // current list (passed on as signed: a host without the key can do this too).
        match store.update_member_list(|_| {}) {
            Ok(_) => {}
            Err(e) if store.trust.signer().is_err() => {
                log::warn!("the member list was not brought up to date: {e}")
            }
            Err(e) => return Err(e),
        }
    }
    progress.finish();
    report.ok = report.unrepaired.is_empty();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
