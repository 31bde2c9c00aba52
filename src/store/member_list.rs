//! The store's member list, `members.json`, kept on every member: each member's id, index,
//! weight, where it lives (the path or URL it was given when it joined or was replaced) and
//! whether it was retired. It carries a generation: the newest copy among the members that
//! opened is the list; every change writes generation + 1 to every member that opened, each
//! copy in one atomic step over the copy read.

use super::{Store, StoreError, member_err};
use crate::member::{Expect, Stored};
use serde::{Deserialize, Serialize};

pub const MEMBER_LIST: &str = "members.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberList {
    pub generation: u64,
    pub members: Vec<MemberEntry>,
}

/// One member as the member list records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub id: String,
    pub index: u32,
    pub weight: f64,
    /// Where the member lives: an absolute path, or an `s3://` URL.
    pub location: String,
    /// Drained and retired by `member remove`: no longer part of the store.
    #[serde(default)]
    pub retired: bool,
}

impl MemberList {
    pub fn get(&self, id: &str) -> Option<&MemberEntry> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The entry a user names: by member id, or by location (as given or made absolute).
    pub fn find(&self, who: &str) -> Option<&MemberEntry> {
        let absolute = crate::member::recorded_location(who);
        self.members
            .iter()
            .find(|m| m.id == who || m.location == who || m.location == absolute)
    }
}

impl Store {
    /// The newest member list among the members that opened, and each member's copy as read
    /// (`None`: it has none). A copy not signed by the store's key is damaged: it never counts.
    pub fn member_list(&self) -> (MemberList, Vec<Option<Stored>>) {
        let (best, copies, _) = self.member_list_read();
        (best, copies)
    }

    /// The members whose copy of the member list is damaged or not signed by the store's key,
    /// with why (for `verify`).
    pub fn member_list_troubles(&self) -> Vec<(&super::Member, String)> {
        let mut out = Vec::new();
        for m in &self.members {
            let why = match m.io.get_meta(MEMBER_LIST) {
                Ok(Some(stored)) => self
                    .member_list_body(&stored.bytes)
                    .and_then(|b| {
                        serde_json::from_slice::<MemberList>(b).map_err(|e| e.to_string())
                    })
                    .err(),
                Ok(None) => None,
                Err(e) => Some(format!("cannot be read: {e}")),
            };
            if let Some(why) = why {
                out.push((m, format!("{MEMBER_LIST}: {why}")));
            }
        }
        out
    }

    /// As `member_list`, with the bytes of the copy the list came from.
    fn member_list_read(&self) -> (MemberList, Vec<Option<Stored>>, Option<Vec<u8>>) {
        let mut best = MemberList::default();
        let mut best_bytes = None;
        let mut copies = Vec::new();
        for m in &self.members {
            match m.io.get_meta(MEMBER_LIST) {
                Ok(Some(stored)) => {
                    let parsed = self.member_list_body(&stored.bytes).and_then(|body| {
                        serde_json::from_slice::<MemberList>(body).map_err(|e| e.to_string())
                    });
                    match parsed {
                        Ok(list) if list.generation > best.generation => {
                            best = list;
                            best_bytes = Some(stored.bytes.to_vec());
                        }
                        Ok(_) => {}
                        Err(e) => log::warn!("{}: damaged {MEMBER_LIST}: {e}", m.location()),
                    }
                    copies.push(Some(stored));
                }
                Ok(None) => copies.push(None),
                Err(e) => {
                    log::warn!("{}: cannot read {MEMBER_LIST}: {e}", m.location());
                    copies.push(None);
                }
            }
        }
        (best, copies, best_bytes)
    }

    /// Records the members that opened (where they live, index, weight) in the member list,
    /// applies `change`, and writes the list to every member that opened when it differs from a
    /// member's copy. An unchanged list is passed on as it was signed (no key needed).
    pub fn update_member_list(
        &self,
        change: impl FnOnce(&mut MemberList),
    ) -> Result<MemberList, StoreError> {
        self.write_member_list(change, false)
    }

    /// As `update_member_list`, but the list is signed with the store's key now even when it
    /// is unchanged (`key init` and `key rotate`).
    pub fn sign_member_list(
        &self,
        change: impl FnOnce(&mut MemberList),
    ) -> Result<MemberList, StoreError> {
        self.write_member_list(change, true)
    }

    fn write_member_list(
        &self,
        change: impl FnOnce(&mut MemberList),
        sign_again: bool,
    ) -> Result<MemberList, StoreError> {
        let (old, copies, old_bytes) = self.member_list_read();
        let mut list = old.clone();
        for m in &self.members {
            let location = crate::member::recorded_location(m.location());
            let entry = MemberEntry {
                id: m.id().to_string(),
                index: m.info.index,
                weight: m.info.weight,
                location,
                retired: false,
            };
            match list.members.iter_mut().find(|l| l.id == entry.id) {
                Some(l) if !l.retired => *l = entry,
                Some(_) => {}
                None => list.members.push(entry),
            }
        }
        change(&mut list);
        list.members.sort_by_key(|m| m.index);
        let changed = {
            let mut a = list.clone();
            a.generation = old.generation;
            a != old
        };
        if changed {
            list.generation = super::next_counter(
                old.generation.max(list.generation),
                "the member list's generation",
            )?;
        }
        let bytes = match old_bytes {
            Some(b) if !changed && !sign_again => b,
            _ => {
                let mut body = serde_json::to_vec_pretty(&list)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                body.push(b'\n');
                self.seal_member_list(body)?
            }
        };
        for (m, copy) in self.members.iter().zip(copies) {
            let expect = match copy {
                Some(c) if c.bytes == bytes => continue,
                Some(c) => Expect::Tag(c.tag),
                None => Expect::Absent,
            };
            m.io.put_meta(MEMBER_LIST, &bytes, &expect)
                .map_err(member_err(m.location()))?;
        }
        Ok(list)
    }
}
