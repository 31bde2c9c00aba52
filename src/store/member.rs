//! One member directory of a store: its `shardfs-store.json` (store id, member id, index,
//! weight, format version) and the layout beneath it (`chunks/`, `manifests/`, `tmp/`, `lock`).

use crate::codec::Hash32;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const MEMBER_FILE: &str = "shardfs-store.json";
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
}

fn default_weight() -> f64 {
    1.0
}

/// An opened member: where it is and what it says of itself.
#[derive(Debug, Clone)]
pub struct Member {
    pub path: PathBuf,
    pub info: MemberInfo,
}

impl Member {
    pub fn id(&self) -> &str {
        &self.info.member_id
    }

    pub fn chunk_path(&self, hash: &Hash32) -> PathBuf {
        chunk_path(&self.path, hash)
    }

    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.path.join("manifests").join(format!("{name}.json"))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.path.join("tmp")
    }
}

/// `<member>/chunks/<first two hex digits>/<hex>`.
pub fn chunk_path(member: &Path, hash: &Hash32) -> PathBuf {
    let hex = hash.to_hex();
    member.join("chunks").join(&hex[..2]).join(hex)
}

/// A fresh random id (128 bits, hex), from the kernel's random source.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
