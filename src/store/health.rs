//! A model's health against the members that opened: every chunk has all its replicas on
//! available members (`ok`), some have fewer than they were packed with (`degraded`), or some
//! have none at all (`unreadable`: their bytes read as EIO). Counted from the manifest's replica
//! lists without reading a chunk file; `verify` is what reads them.

use super::Store;
use super::manifest::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    Degraded,
    Unreadable,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded => "degraded",
            Health::Unreadable => "unreadable",
        }
    }
}

/// A member that holds replicas of a model but did not open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissingMember {
    pub id: String,
    /// Its index in the store, when the manifest recorded it.
    pub index: Option<u32>,
    /// Replicas of the model's chunks it holds.
    pub replicas: usize,
    /// Where the member list says it lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl MissingMember {
    /// `the member at <location> (index <i>, id <id>)`, as messages name it: the place an
    /// operator knows, and the id where that helps.
    pub fn describe(&self) -> String {
        let index = self
            .index
            .map(|i| format!("index {i}, "))
            .unwrap_or_default();
        match &self.location {
            Some(l) => format!("the member at {l} ({index}id {})", self.id),
            None => format!("member {} ({index}not in the member list)", self.id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHealth {
    pub model: String,
    pub health: Health,
    pub chunks: usize,
    /// Chunks readable from an available member but with fewer replicas there than they were
    /// packed with.
    pub degraded_chunks: usize,
    /// Chunks with no replica on an available member.
    pub unreachable_chunks: usize,
    pub files: usize,
    /// Files with at least one unreachable chunk.
    pub unreadable_files: usize,
    pub missing_members: Vec<MissingMember>,
}

impl ModelHealth {
    /// The health of `manifest`'s model among the members `store` opened.
    pub fn of(store: &Store, manifest: &Manifest) -> ModelHealth {
        let mut h = ModelHealth {
            model: manifest.name.clone(),
            health: Health::Ok,
            chunks: 0,
            degraded_chunks: 0,
            unreachable_chunks: 0,
            files: manifest.files.len(),
            unreadable_files: 0,
            missing_members: Vec::new(),
        };
        let mut missing: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &manifest.files {
            let mut file_readable = true;
            for c in &f.chunks {
                h.chunks += 1;
                // A delta is as available as the less available of itself and its base.
                let (mut unreachable, mut degraded) = (false, false);
                for c in c.needs() {
                    let mut available = 0;
                    for id in &c.members {
                        if store.member(id).is_some() {
                            available += 1;
                        } else {
                            *missing.entry(id).or_default() += 1;
                        }
                    }
                    unreachable |= available == 0;
                    degraded |= available < c.members.len();
                }
                if unreachable {
                    h.unreachable_chunks += 1;
                    file_readable = false;
                } else if degraded {
                    h.degraded_chunks += 1;
                }
            }
            if !file_readable {
                h.unreadable_files += 1;
            }
        }
        let list = if missing.is_empty() {
            None
        } else {
            Some(store.member_list().0)
        };
        let location_of = |id: &str| {
            list.as_ref()?
                .members
                .iter()
                .find(|l| l.id == id)
                .map(|l| l.location.clone())
        };
        h.missing_members = missing
            .into_iter()
            .map(|(id, replicas)| MissingMember {
                id: id.to_string(),
                index: manifest.member_index(id),
                replicas,
                location: location_of(id),
            })
            .collect();
        h.missing_members.sort_by_key(|m| m.index);
        h.health = if h.unreachable_chunks > 0 {
            Health::Unreadable
        } else if h.degraded_chunks > 0 {
            Health::Degraded
        } else {
            Health::Ok
        };
        h
    }

    /// `ok`, or the health with what makes it so, for people.
    pub fn describe(&self) -> String {
        match self.health {
            Health::Ok => "ok".to_string(),
            Health::Degraded => format!(
                "degraded: {} of {} chunks have fewer replicas than packed (missing {})",
                self.degraded_chunks,
                self.chunks,
                self.missing_list()
            ),
            Health::Unreadable => format!(
                "unreadable: {} of {} chunks ({} of {} files) have no replica on an available member (missing {})",
                self.unreachable_chunks,
                self.chunks,
                self.unreadable_files,
                self.files,
                self.missing_list()
            ),
        }
    }

    fn missing_list(&self) -> String {
        self.missing_members
            .iter()
            .map(MissingMember::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, Hash32};
    use crate::placement::Placement;
    use crate::store::manifest::{ChunkRef, FileEntry, MANIFEST_FORMAT};
    use crate::store::member::{Member, MemberInfo};

    /// A manifest of one file whose chunks of 10 bytes sit on the given members.
    fn one_file_manifest(replicas: &[&[&str]]) -> Manifest {
        let chunks: Vec<ChunkRef> = replicas
            .iter()
            .enumerate()
            .map(|(i, ids)| ChunkRef {
                offset: 10 * i as u64,
                len: 10,
                hash: Hash32::of(&[i as u8]),
                codec: Codec::None,
                stored_len: 10,
                members: ids.iter().map(|id| id.to_string()).collect(),
                tensors: vec![],
                delta: None,
                inline: None,
            })
            .collect();
        Manifest {
            format_version: MANIFEST_FORMAT,
            name: "m".into(),
            version: 1,
            created_unix: 0,
            chunk_size: 10,
            codec: "none".into(),
            level: 3,
            placement: Placement::Hash,
            replicas: 2,
            files: vec![FileEntry::for_test(10 * chunks.len() as u64, chunks)],
            members: vec![],
            base: None,
            sealed: Default::default(),
        }
    }

    fn store_of(ids: &[&str]) -> Store {
        let members = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Member {
                io: std::sync::Arc::new(crate::member::dir::DirMember::new(std::path::Path::new(
                    &format!("/nonexistent/{id}"),
                ))),
                info: MemberInfo::for_test(id, i as u32),
            })
            .collect();
        Store::assemble(members, vec![]).unwrap()
    }

    #[test]
    fn counts_follow_the_members_that_opened() {
        // Chunks on (a,b), (b,c), (c,a).
        let m = one_file_manifest(&[&["a", "b"], &["b", "c"], &["c", "a"]]);
        let all = ModelHealth::of(&store_of(&["a", "b", "c"]), &m);
        assert_eq!((all.health, all.degraded_chunks), (Health::Ok, 0));
        let two = ModelHealth::of(&store_of(&["a", "b"]), &m);
        assert_eq!(two.health, Health::Degraded);
        assert_eq!((two.degraded_chunks, two.unreachable_chunks), (2, 0));
        assert_eq!(two.missing_members.len(), 1);
        assert_eq!(two.missing_members[0].id, "c");
        assert_eq!(two.missing_members[0].replicas, 2);
        let one = ModelHealth::of(&store_of(&["a"]), &m);
        assert_eq!(one.health, Health::Unreadable);
        assert_eq!((one.degraded_chunks, one.unreachable_chunks), (2, 1));
        assert_eq!((one.unreadable_files, one.files), (1, 1));
        assert!(
            one.describe()
                .starts_with("unreadable: 1 of 3 chunks (1 of 1 files)")
        );
    }
}
