//! A store's key over its life (see `crate::trust`): `key init` gives an unsigned store a key
//! and signs its current manifests and member list; `key rotate` publishes a new key endorsed
//! by the current one and signs everything again with it. Both need every member, hold the
//! pack lock, and can be run again after an interruption to finish.

use crate::member::Setup;
use crate::store::manifest::Manifest;
use crate::store::member::MemberInfo;
use crate::store::member_list::MemberList;
use crate::store::{Store, StoreError, member_err};
use crate::trust::keys::StoreKey;
use crate::trust::{self, Record, Trust};
use std::path::PathBuf;

/// What `key init` or `key rotate` did.
#[derive(Debug, serde::Serialize)]
pub struct KeyReport {
    pub store_id: String,
    /// The fingerprint of the store's key now.
    pub key: String,
    pub key_file: String,
    pub manifests_signed: usize,
}

fn invalid(msg: String) -> StoreError {
    StoreError::Invalid(msg)
}

/// Every member given must be open: a key a member never got would leave it out.
fn every_member(store: &Store, what: &str) -> Result<(), StoreError> {
    match store.unavailable.first() {
        Some((location, reason)) => Err(invalid(format!(
            "{what} needs every member of the store; {location} is not available ({reason})"
        ))),
        None => Ok(()),
    }
}

/// The newest copy of every model, read with the store's trust as opened.
fn current_manifests(store: &Store) -> Result<Vec<Manifest>, StoreError> {
    store
        .model_names()?
        .iter()
        .map(|n| store.manifest(n))
        .collect()
}

/// Writes `manifests`, signed with `store`'s key now, to every member whose copy differs,
/// then the member list, signed again too, and returns how many manifest copies were written.
fn sign_all(store: &Store, manifests: &[Manifest], list: &MemberList) -> Result<usize, StoreError> {
    let mut written = 0;
    for mf in manifests {
        let bytes = store.sign_manifest(mf)?;
        for copy in store.manifest_copies(&mf.name) {
            if matches!(&copy.manifest, Some(Ok(m)) if m.sealed.0.as_deref() == Some(&bytes[..])) {
                continue;
            }
            store.put_manifest(copy.member, &mf.name, &bytes, copy.tag.as_deref())?;
            written += 1;
        }
    }
    store.sign_member_list(|l| {
        l.members = list.members.clone();
        l.generation = list.generation;
    })?;
    Ok(written)
}

/// Writes every member's store file with `records` as the store's keys.
fn publish_keys(store: &Store, records: &[Record]) -> Result<(), StoreError> {
    for m in &store.members {
        let info = MemberInfo {
            keys: records.to_vec(),
            ..m.info.clone()
        };
        let bytes = serde_json::to_vec_pretty(&info).map_err(|e| invalid(e.to_string()))?;
        m.io.init(&bytes, Setup::Existing)
            .map_err(member_err(m.location()))?;
    }
    Ok(())
}

/// The key at `path`, made there when there is none.
fn key_at(path: &std::path::Path, store_id: &str) -> Result<StoreKey, StoreError> {
    if path.exists() {
        return StoreKey::load(path).map_err(invalid);
    }
    let key = StoreKey::generate().map_err(|e| invalid(format!("/dev/urandom: {e}")))?;
    key.save(path, store_id).map_err(invalid)?;
    Ok(key)
}

/// Gives an unsigned store a key (kept on this host, never on a member) and signs its current
/// manifests and member list with it. Manifests are signed first and the key is named in the
/// store files last, so an interrupted run leaves an unsigned store that reads as before.
pub fn init(mut store: Store) -> Result<KeyReport, StoreError> {
    every_member(&store, "key init")?;
    if let Some(k) = store.trust.current() {
        return Err(invalid(format!(
            "store {} is already signed (key {k}); `shardfs key rotate` replaces its key",
            store.store_id
        )));
    }
    let _lock = store.lock()?;
    let manifests = current_manifests(&store)?;
    let (list, _) = store.member_list();
    let path = trust::key_path(&store.store_id).map_err(invalid)?;
    let key = key_at(&path, &store.store_id)?;
    let public = key.public();
    let records = vec![Record::first(&public)];
    store.trust = Trust::with_key(&store.store_id, key, records.clone());
    let manifests_signed = sign_all(&store, &manifests, &list)?;
    publish_keys(&store, &records)?;
    if let Err(e) = trust::pin_key(&store.store_id, &public) {
        log::warn!("key {public} could not be pinned on this host: {e}");
    }
    Ok(KeyReport {
        store_id: store.store_id.clone(),
        key: public.fingerprint(),
        key_file: path.display().to_string(),
        manifests_signed,
    })
}

/// Replaces a signed store's key: a new key, endorsed by the current one, is named in every
/// store file first (hosts that trust the current key then accept it), then every manifest and
/// the member list are signed with it, and the key file is replaced (the old one is kept
/// beside it as `.previous`). Needs the current key; run again to finish an interrupted one.
pub fn rotate(mut store: Store) -> Result<KeyReport, StoreError> {
    every_member(&store, "key rotate")?;
    let Some(current) = store.trust.current() else {
        return Err(invalid(format!(
            "store {} is unsigned: `shardfs key init` gives it a key",
            store.store_id
        )));
    };
    let _lock = store.lock()?;
    let manifests = current_manifests(&store)?;
    let (list, _) = store.member_list();
    let path = trust::key_path(&store.store_id).map_err(invalid)?;
    let next_path = PathBuf::from(format!("{}.next", path.display()));
    let mut records = store.trust.records();
    // A rotation that stopped after publishing its key: that key is current, and signs.
    let (next, records) =
        if next_path.exists() && StoreKey::load(&next_path).map_err(invalid)?.public() == current {
            (StoreKey::load(&next_path).map_err(invalid)?, records)
        } else {
            let old = store.trust.signer().map_err(invalid)?;
            let next = key_at(&next_path, &store.store_id)?;
            records.push(old.endorse(&store.store_id, &next.public()));
            (next, records)
        };
    let public = next.public();
    publish_keys(&store, &records)?;
    store.trust = Trust::with_key(&store.store_id, next, records);
    let manifests_signed = sign_all(&store, &manifests, &list)?;
    let previous = PathBuf::from(format!("{}.previous", path.display()));
    std::fs::rename(&path, &previous)
        .and_then(|()| std::fs::rename(&next_path, &path))
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    Ok(KeyReport {
        store_id: store.store_id.clone(),
        key: public.fingerprint(),
        key_file: path.display().to_string(),
        manifests_signed,
    })
}
