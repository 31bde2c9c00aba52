//! Which manifest copies the members hold, and which one is current: every member's copy of a
//! model, the current manifest (the valid copy of highest precedence), the models a store
//! holds, the complete view a decision to delete rests on (`full_view`, failing closed), and
//! publishing a manifest over the copies read (`publish_manifest`, used by pack, repair and
//! rebalance).

use super::{Store, StoreError, manifest, member::Member};
use crate::member as io;
use manifest::Manifest;
use std::collections::BTreeSet;

/// One member's copy of a model's manifest.
#[derive(Debug)]
pub struct ManifestCopy<'a> {
    pub member: &'a Member,
    /// What a conditional update of this copy names; `None` when there is no copy.
    pub tag: Option<String>,
    /// `None` where the member has no copy, `Err` with a reason where its copy is damaged or
    /// could not be read.
    pub manifest: Option<Result<Manifest, String>>,
}

impl Store {
    /// Names of every model with a manifest on at least one member, sorted. A member that
    /// cannot list is logged and skipped.
    pub fn model_names(&self) -> Result<Vec<String>, StoreError> {
        let mut names = BTreeSet::new();
        for m in &self.members {
            match m.io.list_manifests() {
                Ok(list) => names.extend(
                    list.into_iter()
                        .map(|l| l.name)
                        .filter(|n| manifest::check_model_name(n).is_ok()),
                ),
                Err(e) => log::warn!("member {}: cannot list manifests: {e}", m.location()),
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Every member's copy of a model's manifest.
    pub fn manifest_copies(&self, name: &str) -> Vec<ManifestCopy<'_>> {
        self.members
            .iter()
            .map(|m| match m.io.get_manifest(name) {
                Ok(Some(stored)) => {
                    let parsed = self.parse_manifest(name, &stored.bytes);
                    ManifestCopy {
                        member: m,
                        tag: Some(stored.tag),
                        manifest: Some(parsed),
                    }
                }
                Ok(None) => ManifestCopy {
                    member: m,
                    tag: None,
                    manifest: None,
                },
                Err(e) => ManifestCopy {
                    member: m,
                    tag: None,
                    manifest: Some(Err(e.to_string())),
                },
            })
            .collect()
    }

    /// The current manifest of a model: the valid copy with the highest version. Damaged copies
    /// are logged and skipped.
    pub fn manifest(&self, name: &str) -> Result<Manifest, StoreError> {
        manifest::check_model_name(name).map_err(|_| StoreError::UnknownModel(name.to_string()))?;
        let copies = self.manifest_copies(name);
        let mut damaged = Vec::new();
        for copy in &copies {
            if let Some(Err(reason)) = &copy.manifest {
                log::warn!(
                    "manifest of '{name}' on {} is damaged: {reason}",
                    copy.member.location()
                );
                damaged.push(reason.clone());
            }
        }
        match current_copy(&copies) {
            Some(m) => Ok(m),
            None if damaged.is_empty() => Err(StoreError::UnknownModel(name.to_string())),
            None => Err(StoreError::CorruptManifest {
                name: name.to_string(),
                reason: damaged.join("; "),
            }),
        }
    }

    /// What a decision to delete rests on (gc, rm, rebalance, member remove): every copy of
    /// every manifest on every member opened, stale ones too. Fails closed, naming the member
    /// and the cause, when a member cannot list its manifests or a copy cannot be read or parsed:
    /// a chunk such a copy names would otherwise look unreferenced. A copy written by a newer
    /// shardfs is not an error: its chunks are in `newer_chunks`.
    pub fn full_view(&self, what: &str) -> Result<FullView, StoreError> {
        let incomplete =
            |location: &str, reason: String| StoreError::incomplete(what, location, reason);
        let mut view = FullView::default();
        for m in &self.members {
            let listed =
                m.io.list_manifests()
                    .map_err(|e| incomplete(m.location(), format!("cannot list manifests: {e}")))?;
            for l in listed {
                if manifest::check_model_name(&l.name).is_err() {
                    continue;
                }
                let copy = |why: String| {
                    incomplete(
                        m.location(),
                        format!("{}: {why}", io::layout::manifest_key(&l.name)),
                    )
                };
                let stored = match m.io.get_manifest(&l.name) {
                    Ok(Some(s)) => s,
                    Ok(None) => continue,
                    Err(e) => return Err(copy(format!("cannot be read: {e}"))),
                };
                match self.parse_manifest(&l.name, &stored.bytes) {
                    Ok(mf) => view.manifests.push(mf),
                    Err(reason) if manifest::is_newer(&reason) => {
                        let chunks = self
                            .manifest_body(&stored.bytes)
                            .and_then(Manifest::newer_chunks)
                            .map_err(|e| copy(format!("{reason}; {e}")))?;
                        log::info!(
                            "{}: the copy of '{}' is {reason}; its chunks are kept",
                            m.location(),
                            l.name
                        );
                        view.newer_chunks.extend(chunks);
                    }
                    Err(reason) => return Err(copy(format!("damaged ({reason})"))),
                }
            }
        }
        Ok(view)
    }

    /// Every model's current manifest, by name. A model with no valid copy harms only itself:
    /// it is logged and left out (see `manifests_and_unreadable`).
    pub fn manifests(&self) -> Result<Vec<Manifest>, StoreError> {
        let (good, bad) = self.manifests_and_unreadable()?;
        for (name, reason) in bad {
            log::warn!("model {name:?} is left out: {reason}");
        }
        Ok(good)
    }

    /// Every model's current manifest, and the models with no valid copy (with why).
    pub fn manifests_and_unreadable(&self) -> Result<(Vec<Manifest>, Vec<Unreadable>), StoreError> {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for n in self.model_names()? {
            match self.manifest(&n) {
                Ok(m) => good.push(m),
                Err(e @ (StoreError::CorruptManifest { .. } | StoreError::UnknownModel(_))) => {
                    bad.push((n, e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        Ok((good, bad))
    }
}

/// A model with no valid copy, and why.
pub type Unreadable = (String, String);

/// Every manifest copy in a store, for a decision to delete (see `Store::full_view`).
#[derive(Debug, Default)]
pub struct FullView {
    /// Every valid copy on every member (stale ones too).
    pub manifests: Vec<Manifest>,
    /// Chunks named by copies a newer shardfs wrote.
    pub newer_chunks: std::collections::HashSet<crate::codec::Hash32>,
}

impl FullView {
    /// Every chunk a copy names.
    pub fn referenced(&self) -> std::collections::HashSet<crate::codec::Hash32> {
        let mut out = self.newer_chunks.clone();
        for m in &self.manifests {
            out.extend(m.needed().map(|c| *c.object()));
        }
        out
    }
}

/// The current manifest among `copies` read of one model (see `manifest::Precedence`).
pub fn current_copy(copies: &[ManifestCopy<'_>]) -> Option<Manifest> {
    super::manifest::current(
        copies
            .iter()
            .filter_map(|c| c.manifest.as_ref().and_then(|m| m.as_ref().ok())),
    )
    .cloned()
}

/// The copies among `copies` that do not hold exactly `bytes` (missing, damaged, older, or
/// signed otherwise): those a publish of `bytes` writes.
pub fn stale_copies<'c, 'm>(
    bytes: &'c [u8],
    copies: &'c [ManifestCopy<'m>],
) -> impl Iterator<Item = &'c ManifestCopy<'m>> {
    copies.iter().filter(
        move |c| !matches!(&c.manifest, Some(Ok(m)) if m.sealed.0.as_deref() == Some(bytes)),
    )
}

impl Store {
    /// Publishes `manifest` to every member whose copy (one of `copies`, read before) is not
    /// already it, each in one atomic step over the copy read; returns how many copies were
    /// written. A manifest a reader would refuse is never published.
    pub fn publish_manifest(
        &self,
        manifest: &Manifest,
        copies: &[ManifestCopy<'_>],
    ) -> Result<u64, StoreError> {
        manifest.validate().map_err(|reason| {
            StoreError::Invalid(format!(
                "model '{}' was not published: its manifest would be refused by readers ({reason})",
                manifest.name
            ))
        })?;
        let bytes = self.manifest_bytes(manifest)?;
        let mut written = 0;
        for copy in stale_copies(&bytes, copies) {
            self.put_manifest(copy.member, &manifest.name, &bytes, copy.tag.as_deref())?;
            written += 1;
        }
        Ok(written)
    }
}
