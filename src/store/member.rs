//! One member of a store as the store sees it: its I/O (a directory or an object-store prefix,
//! see `crate::member`) and what its `shardfs-store.json` says of it (store id, member id,
//! index, weight, format version).

use crate::member::MemberIo;
pub use crate::member::layout::MEMBER_FILE;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const STORE_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub format_version: u32,
    pub store_id: String,
    pub member_id: String,
    /// Order of the member in the store, used by `round-robin` and `range` placement.
    pub index: u32,
    /// Relative capacity, used by `hash` placement.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// The store's signing keys, oldest first, each endorsed by the one before (see
    /// `crate::trust`); empty in an unsigned store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<crate::trust::Record>,
}

#[cfg(test)]
impl MemberInfo {
    /// A member `id` at `index` of the test store `s`, weight 1.
    pub fn for_test(id: &str, index: u32) -> MemberInfo {
        MemberInfo {
            format_version: STORE_FORMAT,
            store_id: "s".into(),
            member_id: id.to_string(),
            index,
            weight: 1.0,
            keys: vec![],
        }
    }
}

fn default_weight() -> f64 {
    1.0
}

/// An opened member: its I/O and what it says of itself.
#[derive(Debug, Clone)]
pub struct Member {
    pub io: Arc<dyn MemberIo>,
    pub info: MemberInfo,
}

impl Member {
    pub fn id(&self) -> &str {
        &self.info.member_id
    }

    /// Where the member is (a path, or `s3://bucket/prefix`), for messages.
    pub fn location(&self) -> &str {
        self.io.location()
    }
}

/// A fresh random id (128 bits, hex), from the kernel's random source.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
