//! Member lifecycle: `member list`, `add`, `set-weight`, `replace` (a lost disk's place taken by
//! a new, empty one, which `repair` then fills) and `remove` (drain every replica it holds onto
//! the other members, then retire it). Every change is recorded in the member list kept on
//! every member (`store::member_list`).

use super::repair::{self, RepairOptions, RepairReport};
use crate::member::MemberSpec;
use crate::member::{self, MemberError, MemberIo, Setup};
use crate::store::member::{MemberInfo, STORE_FORMAT};
use crate::store::member_list::MemberEntry;
use crate::store::{Store, StoreError, member_err};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// One row of `member list`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberRow {
    pub id: String,
    pub location: String,
    pub index: u32,
    pub weight: f64,
    /// Replicas the current manifests place on it, and their stored bytes.
    pub chunks: u64,
    pub bytes: u64,
    pub health: MemberHealth,
}

/// Where a listed member stands (in `--json` by its lowercase name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberHealth {
    /// Opened.
    Up,
    /// Listed, but not among the members given, or not readable.
    Unavailable,
    /// Drained and retired by `member remove`.
    Retired,
}

impl std::fmt::Display for MemberHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberHealth::Up => "up",
            MemberHealth::Unavailable => "unavailable",
            MemberHealth::Retired => "retired",
        })
    }
}

/// Every member the store knows: the member list, and the members that opened.
pub fn list(store: &Store) -> Result<Vec<MemberRow>, StoreError> {
    let list = match store.update_member_list(|_| {}) {
        Ok(list) => list,
        // A host without the store's key lists what the members hold.
        Err(e) if store.trust.is_signed() && store.trust.signer().is_err() => {
            log::info!("the member list was not brought up to date: {e}");
            store.member_list().0
        }
        Err(e) => return Err(e),
    };
    let mut held: HashMap<&str, (u64, u64)> = HashMap::new();
    let manifests = store.manifests()?;
    for m in &manifests {
        for c in m.needed() {
            for id in &c.members {
                let e = held.entry(id.as_str()).or_default();
                e.0 += 1;
                e.1 += c.stored_len;
            }
        }
    }
    Ok(list
        .members
        .iter()
        .map(|l| {
            let (chunks, bytes) = held.get(l.id.as_str()).copied().unwrap_or_default();
            let health = if l.retired {
                MemberHealth::Retired
            } else if store.member(&l.id).is_some() {
                MemberHealth::Up
            } else {
                MemberHealth::Unavailable
            };
            MemberRow {
                id: l.id.clone(),
                location: l.location.clone(),
                index: l.index,
                weight: l.weight,
                chunks,
                bytes,
                health,
            }
        })
        .collect())
}

/// Opens the place a new member goes: it must not be a member of a store yet.
fn open_empty(new: &MemberSpec, opts: &member::Options) -> Result<Arc<dyn MemberIo>, StoreError> {
    let io = new.open(opts).map_err(member_err(&new.to_string()))?;
    match io.read_info() {
        Ok(None) | Err(MemberError::Absent(_)) => Ok(io),
        Ok(Some(_)) => Err(StoreError::Invalid(format!(
            "{} is already a member of a store; give an empty directory or prefix",
            new
        ))),
        Err(e) => Err(member_err(io.location())(e)),
    }
}

fn member_bytes(info: &MemberInfo) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(info).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn check_weight(weight: f64) -> Result<(), StoreError> {
    if weight > 0.0 && weight.is_finite() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "weight {weight} is not a positive number"
        )))
    }
}

/// Adds `new` (an empty or missing directory, or a bucket prefix) to the store with `weight`.
pub fn add(
    specs: &[MemberSpec],
    new: &MemberSpec,
    weight: f64,
    opts: &member::Options,
) -> Result<MemberRow, StoreError> {
    check_weight(weight)?;
    let existing = Store::open_with(specs, opts)?;
    let io = open_empty(new, opts)?;
    let (list, _) = existing.member_list();
    let index = list
        .members
        .iter()
        .map(|m| m.index + 1)
        .chain(existing.members.iter().map(|m| m.info.index + 1))
        .max()
        .unwrap_or(0);
    let info = MemberInfo {
        format_version: STORE_FORMAT,
        store_id: existing.store_id.clone(),
        member_id: crate::store::member::new_id()
            .map_err(|e| StoreError::Invalid(e.to_string()))?,
        index,
        weight,
        keys: existing.trust.records(),
    };
    io.init(&member_bytes(&info)?, Setup::Create)
        .map_err(member_err(io.location()))?;
    let mut all = specs.to_vec();
    all.push(new.clone());
    let store = Store::open_with(&all, opts)?;
    // Every member keeps a copy of every manifest.
    for name in existing.model_names()? {
        let manifest = existing.manifest(&name)?;
        let bytes = store.manifest_bytes(&manifest)?;
        if let Some(m) = store.member(&info.member_id) {
            store.put_manifest(m, &name, &bytes, None)?;
        }
    }
    store.update_member_list(|_| {})?;
    list_row(&store, &info.member_id)
}

fn list_row(store: &Store, id: &str) -> Result<MemberRow, StoreError> {
    list(store)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| StoreError::Invalid(format!("member {id} is not in the member list")))
}

/// The member list entry `who` names (an id or a location), or a clear error.
fn named(store: &Store, who: &str) -> Result<MemberEntry, StoreError> {
    let (list, _) = store.member_list();
    if let Some(l) = list.find(who) {
        return Ok(l.clone());
    }
    // A member the list does not know yet (a store from before the list) may still be named
    // by its id in the manifests, or be one that opened.
    if let Some(m) = store
        .members
        .iter()
        .find(|m| m.id() == who || m.location() == who)
    {
        return Ok(MemberEntry {
            id: m.id().to_string(),
            index: m.info.index,
            weight: m.info.weight,
            location: m.location().to_string(),
            retired: false,
        });
    }
    for mf in store.manifests()? {
        if let Some(r) = mf.members.iter().find(|r| r.id == who) {
            return Ok(MemberEntry {
                id: r.id.clone(),
                index: r.index,
                weight: 1.0,
                location: String::new(),
                retired: false,
            });
        }
    }
    Err(StoreError::Invalid(format!(
        "no member '{who}' in the store (name it by id or by its location; see shardfs member list)"
    )))
}

/// Sets a member's weight (used by `hash` placement for new chunks and by repair).
pub fn set_weight(store: &Store, who: &str, weight: f64) -> Result<MemberRow, StoreError> {
    check_weight(weight)?;
    let entry = named(store, who)?;
    let m = store.member(&entry.id).ok_or_else(|| {
        StoreError::Invalid(format!(
            "member {} is not among the members given: its member file must be rewritten",
            entry.id
        ))
    })?;
    let info = MemberInfo {
        weight,
        ..m.info.clone()
    };
    m.io.init(&member_bytes(&info)?, Setup::Existing)
        .map_err(member_err(m.location()))?;
    let store = Store::open_with(&store.member_specs(), &store.member_options())?;
    store.update_member_list(|_| {})?;
    list_row(&store, &entry.id)
}

/// `new` (empty) takes the place of `old`, a member that is lost: it gets `old`'s id, index and
/// weight, so the manifests' replicas of `old` now name it, and `repair` fills it.
pub fn replace(
    store: &Store,
    old: &str,
    new: &MemberSpec,
    opts: &member::Options,
) -> Result<MemberRow, StoreError> {
    let entry = named(store, old)?;
    if entry.retired {
        return Err(StoreError::Invalid(format!(
            "member {} was retired; add a new member instead",
            entry.id
        )));
    }
    if let Some(m) = store.member(&entry.id) {
        return Err(StoreError::Invalid(format!(
            "member {} ({}) is still readable: leave it out of --store to replace it, or drain it with member remove",
            entry.id,
            m.location()
        )));
    }
    let io = open_empty(new, opts)?;
    let info = MemberInfo {
        format_version: STORE_FORMAT,
        store_id: store.store_id.clone(),
        member_id: entry.id.clone(),
        index: entry.index,
        weight: entry.weight,
        keys: store.trust.records(),
    };
    io.init(&member_bytes(&info)?, Setup::Create)
        .map_err(member_err(io.location()))?;
    let mut specs = store.member_specs();
    specs.push(new.clone());
    let store = Store::open_with(&specs, opts)?;
    store.update_member_list(|_| {})?;
    list_row(&store, &entry.id)
}

/// Drains `old`: every replica it holds is made on the other members first (copied from it
/// where it still answers, else from another replica), the manifests are rewritten without it,
/// then it is retired in the member list. Refused when the other members cannot hold every
/// model's replica count.
pub fn remove(
    store: &Store,
    old: &str,
    progress: crate::progress::Reporter,
) -> Result<RepairReport, StoreError> {
    let entry = named(store, old)?;
    store.full_view("member remove")?;
    let others = store.members.iter().filter(|m| m.id() != entry.id).count();
    let needed = store
        .manifests()?
        .iter()
        .map(|m| m.replicas)
        .max()
        .unwrap_or(1);
    if others < needed {
        return Err(StoreError::Invalid(format!(
            "cannot remove member {}: the {others} other members given cannot hold {needed} replicas of every chunk (add a member first)",
            entry.id
        )));
    }
    let report = repair::repair(
        store,
        &RepairOptions {
            progress,
            exclude: Some(entry.id.clone()),
            ..RepairOptions::default()
        },
    )?;
    if !report.ok {
        return Err(StoreError::Invalid(format!(
            "member {} was not removed: {} chunks could not be placed elsewhere (see shardfs repair)",
            entry.id,
            report.unrepaired.len()
        )));
    }
    store.update_member_list(|l| {
        if let Some(e) = l.members.iter_mut().find(|e| e.id == entry.id) {
            e.retired = true;
        } else {
            l.members.push(MemberEntry {
                retired: true,
                ..entry.clone()
            });
        }
    })?;
    Ok(report)
}
