//! Where the store meets its key (see `crate::trust`): how the copies read from members are
//! checked (a manifest or member list not signed by the store's key is a damaged copy: never
//! served, never copied, never counted), and how the copies written are sealed (signed; a copy
//! passed on unchanged is written exactly as read, so hosts without the key can pass it on).

use super::manifest::{Manifest, Sealed};
use super::{Store, StoreError};
use crate::trust::keys::Kind;

impl Store {
    /// Decides which key this store's copies must be signed by (`trust::decide`: the key this
    /// host trusts, never one member's say). A member whose store file names another key is
    /// left out with one line, as an unavailable member is.
    pub(super) fn with_trust(self) -> Result<Store, StoreError> {
        let keys: Vec<(&str, &[crate::trust::Record])> = self
            .members
            .iter()
            .map(|m| (m.location(), &m.info.keys[..]))
            .collect();
        let decision = crate::trust::decide(&self.store_id, &keys).map_err(StoreError::Invalid)?;
        decision.trust.warn_if_unsigned();
        if decision.left_out.is_empty() {
            let mut store = self;
            store.trust = decision.trust;
            return Ok(store);
        }
        let Store {
            members,
            mut unavailable,
            ..
        } = self;
        let mut kept = Vec::new();
        for (i, m) in members.into_iter().enumerate() {
            match decision.left_out.iter().find(|(at, _)| *at == i) {
                Some((_, reason)) => {
                    log::warn!("store member {} is left out: {reason}", m.location());
                    unavailable.push((
                        m.location().to_string(),
                        super::LeftOut::Unavailable(reason.clone()),
                    ));
                }
                None => kept.push(m),
            }
        }
        if kept.is_empty() {
            return Err(StoreError::NoneAvailable(
                "every member given was left out (see the lines above)".into(),
            ));
        }
        let mut store = Store::assemble(kept, unavailable)?;
        store.trust = decision.trust;
        Ok(store)
    }

    /// Reads every member's store file again and takes in a key endorsed since the store
    /// opened (`key rotate`). Returns whether one was learnt.
    pub(crate) fn learn_keys(&self) -> bool {
        let mut learnt = false;
        for m in self.members.iter().chain(self.joined_members()) {
            let Ok(Some(bytes)) = m.io.read_info() else {
                continue;
            };
            let Ok(info) = serde_json::from_slice::<super::MemberInfo>(&bytes) else {
                continue;
            };
            if info.store_id == self.store_id && self.trust.learn(&info.keys) {
                log::info!(
                    "{}: the store's key is now {:?}",
                    m.location(),
                    self.trust.current()
                );
                learnt = true;
            }
        }
        learnt
    }

    /// Whether a member found after the store opened may join it: its store file names no
    /// key, or a chain from the key this store trusts (which is learnt when it is longer).
    pub(super) fn trusts_member_keys(&self, location: &str, keys: &[crate::trust::Record]) -> bool {
        if keys.is_empty() || !self.trust.is_signed() {
            return true;
        }
        let ok = self.trust.admits(keys);
        if !ok {
            log::warn!(
                "{location}: its store file names keys this store does not trust; it is not read"
            );
        }
        ok
    }

    /// A copy of model `name`'s manifest read from a member, or why it is not valid.
    pub(crate) fn parse_manifest(&self, name: &str, bytes: &[u8]) -> Result<Manifest, String> {
        let body = self.trust.check(Kind::Manifest, bytes)?;
        let mut mf = Manifest::from_bytes(body)?;
        if mf.name != name {
            return Err(format!("names model '{}'", mf.name));
        }
        mf.sealed = Sealed(Some(bytes.into()));
        Ok(mf)
    }

    /// The body of a manifest copy, once its signature is the store key's (for reading what a
    /// newer shardfs wrote).
    pub(crate) fn manifest_body<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], String> {
        self.trust.check(Kind::Manifest, bytes)
    }

    /// The bytes to write for `manifest`: those it was read from when it is unchanged (its
    /// signature with them), else newly serialized and signed with the store's key.
    pub fn manifest_bytes(&self, manifest: &Manifest) -> Result<Vec<u8>, StoreError> {
        let body = manifest
            .to_bytes()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        if let Some(read) = &manifest.sealed.0
            && self.trust.check(Kind::Manifest, read).ok() == Some(&body[..])
        {
            return Ok(read.to_vec());
        }
        self.sign_manifest(manifest)
    }

    /// The bytes of `manifest` newly serialized and signed with the store's key, whatever it
    /// was read from (`key init` and `key rotate`).
    pub fn sign_manifest(&self, manifest: &Manifest) -> Result<Vec<u8>, StoreError> {
        let body = manifest
            .to_bytes()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.trust
            .seal(Kind::Manifest, body)
            .map_err(|e| unsigned(&format!("the manifest of '{}'", manifest.name), e))
    }

    /// The bytes to write for a member list body.
    pub(crate) fn seal_member_list(&self, body: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        self.trust
            .seal(Kind::MemberList, body)
            .map_err(|e| unsigned("the member list", e))
    }

    /// The body of a member list copy, once its signature is the store key's.
    pub(crate) fn member_list_body<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], String> {
        self.trust.check(Kind::MemberList, bytes)
    }
}

fn unsigned(what: &str, why: String) -> StoreError {
    StoreError::Invalid(format!("{what} was not written: {why}"))
}
