//! Object-storage members against a real S3 server (SeaweedFS): pack to a mix of a directory
//! and a bucket and to buckets only, export, verify, mount and read with the real loaders,
//! faults of the server (stopped, stalled), bad credentials and missing buckets, a pack killed
//! midway.

mod common;

use common::weed::Weed;
use common::*;
use std::fs;

/// A test's server (with the AWS_* environment pointing at it) and its temporary directory.
fn server() -> (tempfile::TempDir, Weed) {
    let dir = tempfile::tempdir().unwrap();
    let weed = Weed::start(dir.path());
    weed.set_env();
    (dir, weed)
}

#[test]
fn pack_to_a_directory_and_a_bucket_exports_exact_and_verifies() {
    let (dir, _weed) = server();
    let d = dir.path();
    let local = d.join("local");
    let store = format!("{},s3://models/prod", local.display());
    let data = Rng::new(1).floats(3 << 20);
    let src = d.join("m.bin");
    fs::write(&src, &data).unwrap();
    pack(
        &src,
        &store,
        &["--replicas", "2", "--chunk-size", "256KiB", "--init"],
    );
    assert_eq!(export(&store, "m", None), data);
    let out = ok(&["verify", "--store", &store, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["replicas_checked"].as_u64().unwrap() >= 24);
}

/// The member contract, run against a directory and a bucket: the same calls give the same
/// answers on both kinds.
#[test]
fn both_member_kinds_keep_the_same_contract() {
    use shardfs::codec::Hash32;
    use shardfs::member::{self, Expect, MemberError, Options};
    let (dir, _weed) = server();
    let opts = Options::default();
    let dir_member = member::open(&dir.path().join("dirmember"), &opts).unwrap();
    let s3_member = member::open(std::path::Path::new("s3://contract/p"), &opts).unwrap();
    // No bucket yet: absent, and created only when asked.
    assert!(matches!(s3_member.read_info(), Err(MemberError::Absent(_))));
    assert!(s3_member.init(b"{}", false).is_err());
    for m in [dir_member, s3_member] {
        let what = m.location().to_string();
        m.init(b"{\"x\":1}", true).unwrap();
        assert_eq!(m.read_info().unwrap().unwrap(), b"{\"x\":1}", "{what}");
        let small = Hash32::of(b"small");
        assert!(m.chunk_head(&small).unwrap().is_none(), "{what}");
        let image: Vec<u8> = (0..100u8).collect();
        m.put_chunk(&small, &image, false).unwrap();
        assert!(
            matches!(
                m.put_chunk(&small, &image, false),
                Err(MemberError::AlreadyExists)
            ),
            "{what}: a second create must be refused"
        );
        let head = m.chunk_head(&small).unwrap().unwrap();
        assert_eq!((head.size, &head.header[..]), (100, &image[..24]), "{what}");
        assert_eq!(&*m.get_chunk(&small, 1000).unwrap(), &image[..], "{what}");
        assert!(
            matches!(m.get_chunk(&small, 50), Err(MemberError::Corrupt(_))),
            "{what}"
        );
        // A chunk large enough to go up in parts on S3.
        let big_hash = Hash32::of(b"big");
        let big = Rng::new(7).bytes(20 << 20);
        m.put_chunk(&big_hash, &big, false).unwrap();
        assert!(
            *m.get_chunk(&big_hash, 64 << 20).unwrap() == big[..],
            "{what}"
        );
        let mut listed = m.list_chunks().unwrap();
        listed.sort_by_key(|h| h.to_hex());
        let mut want = vec![small, big_hash];
        want.sort_by_key(|h| h.to_hex());
        assert_eq!(listed, want, "{what}");
        m.delete_chunk(&big_hash).unwrap();
        assert!(
            matches!(m.get_chunk(&big_hash, 64 << 20), Err(MemberError::Missing)),
            "{what}"
        );
        // Manifests: created once, then replaced only over the copy that was read.
        assert!(m.get_manifest("a").unwrap().is_none(), "{what}");
        m.put_manifest("a", b"one", &Expect::Absent).unwrap();
        assert!(
            matches!(
                m.put_manifest("a", b"x", &Expect::Absent),
                Err(MemberError::Conflict)
            ),
            "{what}: a create over an existing manifest must conflict"
        );
        let one = m.get_manifest("a").unwrap().unwrap();
        assert_eq!(one.bytes, b"one");
        m.put_manifest("a", b"two", &Expect::Tag(one.tag.clone()))
            .unwrap();
        assert!(
            matches!(
                m.put_manifest("a", b"three", &Expect::Tag(one.tag)),
                Err(MemberError::Conflict)
            ),
            "{what}: an update over a stale tag must conflict"
        );
        assert_eq!(
            m.get_manifest("a").unwrap().unwrap().bytes,
            b"two",
            "{what}"
        );
        assert_eq!(m.list_manifests().unwrap(), vec!["a".to_string()], "{what}");
        m.flush().unwrap();
    }
}
