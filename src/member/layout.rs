//! Where things live inside a member, the same for every kind: `shardfs-store.json`,
//! `manifests/<model>.json`, `chunks/<first two hex digits>/<blake3 hex>`, and
//! `damaged/<blake3 hex>.<time>` (a damaged chunk file moved aside when a good copy replaced it,
//! until `gc` deletes it). A directory member also has `tmp/` (files being written) and `lock`.

use crate::codec::Hash32;

pub const MEMBER_FILE: &str = "shardfs-store.json";
pub const MANIFESTS: &str = "manifests";
pub const CHUNKS: &str = "chunks";
pub const TMP: &str = "tmp";
pub const LOCK: &str = "lock";
pub const DAMAGED: &str = "damaged";

/// The most bytes read of a store-level file (member file, member list, lease, lock): each is a
/// few hundred bytes, so anything past this is damaged and not read.
pub const META_MAX: u64 = 1 << 20;
/// The most bytes read of a manifest copy: a model of a million chunks takes ~200 MiB.
pub const MANIFEST_MAX: u64 = 256 << 20;

/// Nanoseconds since the epoch, for names of entries set aside.
pub fn now_nanos() -> u128 {
    crate::clock::now_unix_nanos()
}

/// `damaged/<hex>.<nanoseconds since the epoch>`: where a damaged chunk file is set aside.
pub fn damaged_key(hash: &Hash32) -> String {
    format!("{DAMAGED}/{}.{}", hash.to_hex(), now_nanos())
}

/// `chunks/ab/<hex>`.
pub fn chunk_key(hash: &Hash32) -> String {
    let hex = hash.to_hex();
    format!("{CHUNKS}/{}/{hex}", &hex[..2])
}

/// `manifests/<name>.json`.
pub fn manifest_key(name: &str) -> String {
    format!("{MANIFESTS}/{name}.json")
}

/// The model a manifest file name is for, when it is one.
pub fn manifest_name(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(".json").filter(|n| !n.is_empty())
}

/// The hash a chunk file is named by, when its name is one.
pub fn chunk_name(file_name: &str) -> Option<Hash32> {
    file_name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let h = Hash32::of(b"x");
        let key = chunk_key(&h);
        assert!(key.starts_with(&format!("chunks/{}/", &h.to_hex()[..2])));
        assert_eq!(chunk_name(key.rsplit('/').next().unwrap()), Some(h));
        assert_eq!(chunk_name("zz"), None);
        assert_eq!(manifest_name("m.json"), Some("m"));
        assert_eq!(manifest_name(".json"), None);
        assert_eq!(manifest_key("m"), "manifests/m.json");
    }
}
