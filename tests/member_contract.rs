//! One contract every kind of member keeps, run against each: a directory, the in-memory twin
//! (bare, and behind the fault wrapper with no fault set, which must change nothing), and an
//! S3 bucket on a real server. What the store relies on: capped reads, conditional puts,
//! listings whose stamps move on a rewrite, deletes that tolerate a missing object, the object
//! calls the chunk calls are provided on (writes, sizes, ranged reads), chunk puts
//! that refuse to overwrite unless told and then set the damaged file aside, and a lock.

mod common;

use shardfs::codec::{HEADER_LEN, Hash32};
use shardfs::member::faulty::Faulty;
use shardfs::member::mem::MemMember;
use shardfs::member::{Expect, IfPresent, MemberError, MemberIo, Options, Setup, Sweep};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn contract(m: &dyn MemberIo) {
    let what = m.location().to_string();
    // A member that was never set up has no member file (or no place yet); init writes it.
    assert!(
        matches!(m.read_info(), Ok(None) | Err(MemberError::Absent(_))),
        "{what}"
    );
    m.init(b"{\"info\": 1}", Setup::Create).unwrap();
    assert_eq!(m.read_info().unwrap().unwrap(), b"{\"info\": 1}", "{what}");

    small_objects(m, &what);
    listings_and_deletes(m, &what);
    objects(m, &what);
    chunks(m, &what);
    m.flush().unwrap();
    if m.exclusive_lock() {
        let held = m.lock().unwrap();
        assert!(
            matches!(m.lock(), Err(MemberError::Unavailable(_))),
            "{what}: a second lock was taken while the first is held"
        );
        drop(held);
        drop(m.lock().unwrap());
    }
}

fn small_objects(m: &dyn MemberIo, what: &str) {
    assert!(m.get("leases/a.json", 1 << 10).unwrap().is_none(), "{what}");
    m.put("leases/a.json", b"one", 1 << 10, &Expect::Absent)
        .unwrap();
    let one = m.get("leases/a.json", 1 << 10).unwrap().unwrap();
    assert_eq!(one.bytes, b"one", "{what}");
    // A put that expects nothing there, or another version, conflicts and changes nothing.
    for expect in [Expect::Absent, Expect::Tag(format!("{}x", one.tag))] {
        assert!(
            matches!(
                m.put("leases/a.json", b"two", 1 << 10, &expect),
                Err(MemberError::Conflict)
            ),
            "{what}: {expect:?}"
        );
    }
    m.put(
        "leases/a.json",
        b"two",
        1 << 10,
        &Expect::Tag(one.tag.clone()),
    )
    .unwrap();
    let two = m.get("leases/a.json", 1 << 10).unwrap().unwrap();
    assert_eq!(two.bytes, b"two", "{what}");
    assert_ne!(
        two.tag, one.tag,
        "{what}: the tag did not move on a rewrite"
    );
    // Larger than the cap: damaged, not read; a put expecting nothing replaces it.
    let big = vec![7u8; 3000];
    m.put("big.json", &big, 1 << 20, &Expect::Absent).unwrap();
    assert!(
        matches!(m.get("big.json", 1000), Err(MemberError::Corrupt(_))),
        "{what}"
    );
    m.put("big.json", b"small", 1000, &Expect::Absent).unwrap();
    assert_eq!(m.get("big.json", 1000).unwrap().unwrap().bytes, b"small");
    // The provided calls on manifests are the same operations under their keys.
    m.put_manifest("model", b"{}", &Expect::Absent).unwrap();
    assert_eq!(m.get_manifest("model").unwrap().unwrap().bytes, b"{}");
    assert!(m.get("manifests/model.json", 1 << 20).unwrap().is_some());
}

fn listings_and_deletes(m: &dyn MemberIo, what: &str) {
    assert!(m.list("nothing-here").unwrap().is_empty(), "{what}");
    m.put_meta("leases/b.json", b"b", &Expect::Absent).unwrap();
    let mut keys = m.list_meta("leases").unwrap();
    keys.sort();
    assert_eq!(keys, ["leases/a.json", "leases/b.json"], "{what}");
    let listed = m.list_manifests().unwrap();
    assert_eq!(listed.len(), 1, "{what}: {listed:?}");
    assert_eq!(listed[0].name, "model");
    let tag = m.get_manifest("model").unwrap().unwrap().tag;
    m.put_manifest("model", b"{\"v\": 2}", &Expect::Tag(tag))
        .unwrap();
    let relisted = m.list_manifests().unwrap();
    assert_ne!(
        relisted[0].stamp, listed[0].stamp,
        "{what}: the stamp did not move on a rewrite"
    );
    m.delete_manifest("model").unwrap();
    assert!(m.get_manifest("model").unwrap().is_none(), "{what}");
    assert!(m.list_manifests().unwrap().is_empty(), "{what}");
    // Gone already is fine.
    m.delete_manifest("model").unwrap();
    m.delete_meta("leases/never.json").unwrap();
}

/// The object calls the rest is provided on: write (refused or replacing), stat, ranged reads,
/// listings with sizes.
fn objects(m: &dyn MemberIo, what: &str) {
    assert!(m.stat("blobs/a").unwrap().is_none(), "{what}");
    assert!(
        matches!(m.read_at("blobs/a", 0, 1), Err(MemberError::Missing)),
        "{what}"
    );
    m.write("blobs/a", b"0123456789", IfPresent::Refuse)
        .unwrap();
    assert!(
        matches!(
            m.write("blobs/a", b"x", IfPresent::Refuse),
            Err(MemberError::AlreadyExists)
        ),
        "{what}"
    );
    assert_eq!(m.stat("blobs/a").unwrap().unwrap().size, 10, "{what}");
    assert_eq!(m.read_at("blobs/a", 3, 4).unwrap(), b"3456", "{what}");
    assert!(
        matches!(m.read_at("blobs/a", 8, 4), Err(MemberError::Corrupt(_))),
        "{what}"
    );
    m.write("blobs/a", b"abc", IfPresent::Replace).unwrap();
    assert_eq!(m.read_at("blobs/a", 0, 3).unwrap(), b"abc", "{what}");
    let listed = m.list("blobs").unwrap();
    assert_eq!(listed.len(), 1, "{what}: {listed:?}");
    assert_eq!(
        (listed[0].name.as_str(), listed[0].size),
        ("a", 3),
        "{what}"
    );
    m.delete("blobs/a").unwrap();
    assert!(m.stat("blobs/a").unwrap().is_none(), "{what}");
}

/// A chunk image: a header's worth of bytes and a payload.
fn image(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Ranged reads of the chunk `h` holding `bytes`: any range inside it exactly, one past its end an
/// error, a missing chunk `Missing`.
fn ranges(m: &dyn MemberIo, h: &Hash32, bytes: &[u8], what: &str) {
    let n = bytes.len();
    for (at, len) in [(0, HEADER_LEN), (n / 3, n / 3), (n - 1000, 1000), (0, n)] {
        let got = m.read_chunk_at(h, at as u64, len).unwrap();
        assert!(
            got[..] == bytes[at..at + len],
            "{what}: {len} bytes at {at}"
        );
    }
    assert!(m.read_chunk_at(h, (n - 10) as u64, 11).is_err(), "{what}");
    assert!(
        matches!(
            m.read_chunk_at(&Hash32::of(b"none"), 0, 10),
            Err(MemberError::Missing)
        ),
        "{what}"
    );
}

fn chunks(m: &dyn MemberIo, what: &str) {
    let h = Hash32::of(b"chunk");
    assert!(
        matches!(m.get_chunk(&h, 1 << 20), Err(MemberError::Missing)),
        "{what}"
    );
    assert!(m.chunk_head(&h).unwrap().is_none(), "{what}");
    let first = image(1, 5000);
    m.put_chunk(&h, &first, IfPresent::Refuse).unwrap();
    assert!(m.get_chunk(&h, 1 << 20).unwrap()[..] == first, "{what}");
    let head = m.chunk_head(&h).unwrap().unwrap();
    assert_eq!(&head.header[..], &first[..HEADER_LEN], "{what}");
    assert_eq!(head.size, 5000, "{what}");
    // Larger than any image of its chunk: damaged, not read.
    assert!(
        matches!(m.get_chunk(&h, 4999), Err(MemberError::Corrupt(_))),
        "{what}"
    );
    // A put never overwrites unless told; told, it sets the old image aside.
    assert!(
        matches!(
            m.put_chunk(&h, &image(2, 5000), IfPresent::Refuse),
            Err(MemberError::AlreadyExists)
        ),
        "{what}"
    );
    assert!(m.get_chunk(&h, 1 << 20).unwrap()[..] == first, "{what}");
    let second = image(2, 6000);
    m.put_chunk(&h, &second, IfPresent::Replace).unwrap();
    assert!(m.get_chunk(&h, 1 << 20).unwrap()[..] == second, "{what}");
    let listed = m.list_chunks().unwrap();
    assert_eq!(listed.len(), 1, "{what}: {listed:?}");
    assert_eq!((listed[0].hash, listed[0].size), (h, 6000), "{what}");
    // The set-aside image (and, for a kind that sets damaged small objects aside too, the
    // oversized one above): young, so kept; at age zero, counted by a dry run, then deleted.
    let young = m
        .sweep_damaged(Duration::from_secs(3600), Sweep::Delete)
        .unwrap();
    assert_eq!(young.deleted, 0, "{what}");
    assert!((1..=2).contains(&young.kept_young), "{what}: {young:?}");
    let dry = m.sweep_damaged(Duration::ZERO, Sweep::Count).unwrap();
    assert_eq!(dry.deleted, young.kept_young, "{what}");
    assert!(dry.bytes >= 5000, "{what}: {dry:?}");
    assert_eq!(
        m.sweep_damaged(Duration::ZERO, Sweep::Delete).unwrap(),
        dry,
        "{what}"
    );
    assert_eq!(
        m.sweep_damaged(Duration::ZERO, Sweep::Delete)
            .unwrap()
            .deleted,
        0
    );
    m.delete_chunk(&h).unwrap();
    assert!(
        matches!(m.get_chunk(&h, 1 << 20), Err(MemberError::Missing)),
        "{what}"
    );
    assert!(m.list_chunks().unwrap().is_empty(), "{what}");
    // A chunk large enough to go up in parts on S3.
    let big_hash = Hash32::of(b"big");
    let big = common::Rng::new(7).bytes(20 << 20);
    m.put_chunk(&big_hash, &big, IfPresent::Refuse).unwrap();
    assert!(
        m.get_chunk(&big_hash, 64 << 20).unwrap()[..] == big[..],
        "{what}"
    );
    assert_eq!(m.chunk_head(&big_hash).unwrap().unwrap().size, 20 << 20);
    ranges(m, &big_hash, &big, what);
    m.delete_chunk(&big_hash).unwrap();
}

fn opened(spec: &Path) -> Arc<dyn MemberIo> {
    shardfs::member::open(spec, &Options::default()).unwrap()
}

#[test]
fn a_directory_member_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&*opened(&dir.path().join("member")));
}

#[test]
fn the_in_memory_twin_keeps_the_contract_bare_and_behind_the_fault_wrapper() {
    contract(&MemMember::new("mem-a"));
    contract(&Faulty::new(Arc::new(MemMember::new("mem-b"))));
    // And opened by its spec, behind the deadline every opened member has.
    let spec = shardfs::member::twins::register("contract", Arc::new(MemMember::new("mem-c")));
    contract(&*opened(Path::new(&spec)));
}

#[test]
fn an_s3_member_keeps_the_contract() {
    let (_dir, _weed) = common::weed::server();
    let m = opened(Path::new("s3://contract/prefix"));
    // No bucket yet: absent, and created only when asked.
    assert!(matches!(m.read_info(), Err(MemberError::Absent(_))));
    assert!(m.init(b"{}", Setup::Existing).is_err());
    contract(&*m);
}

/// The contract's read half, for a read-only kind: `m` serves what `writer` (a member of
/// another kind over the same bytes) wrote, and refuses every write.
fn read_half(m: &dyn MemberIo, writer: &dyn MemberIo) {
    let what = m.location().to_string();
    writer.init(b"{\"info\": 2}", Setup::Create).unwrap();
    writer
        .put("leases/a.json", b"lease", 1 << 10, &Expect::Absent)
        .unwrap();
    let (h, small) = (Hash32::of(b"small"), image(3, 5000));
    let (big_hash, big) = (Hash32::of(b"big"), common::Rng::new(8).bytes(20 << 20));
    writer.put_chunk(&h, &small, IfPresent::Refuse).unwrap();
    writer
        .put_chunk(&big_hash, &big, IfPresent::Refuse)
        .unwrap();

    assert_eq!(m.read_info().unwrap().unwrap(), b"{\"info\": 2}", "{what}");
    assert_eq!(
        m.get("leases/a.json", 1 << 10).unwrap().unwrap().bytes,
        b"lease"
    );
    assert!(m.get("leases/b.json", 1 << 10).unwrap().is_none(), "{what}");
    // Capped: a larger object is an error, never read whole.
    assert!(m.get("leases/a.json", 3).is_err(), "{what}");
    assert!(m.get_chunk(&h, 1 << 20).unwrap()[..] == small, "{what}");
    assert!(
        m.get_chunk(&big_hash, 64 << 20).unwrap()[..] == big[..],
        "{what}"
    );
    assert!(
        matches!(m.get_chunk(&h, 4999), Err(MemberError::Corrupt(_))),
        "{what}"
    );
    assert!(
        matches!(
            m.get_chunk(&Hash32::of(b"none"), 1 << 20),
            Err(MemberError::Missing)
        ),
        "{what}"
    );
    // The header by a ranged read.
    let head = m.chunk_head(&big_hash).unwrap().unwrap();
    assert_eq!(&head.header[..], &big[..HEADER_LEN], "{what}");
    assert_eq!(head.size, 20 << 20, "{what}");
    assert!(m.chunk_head(&Hash32::of(b"none")).unwrap().is_none());
    ranges(m, &big_hash, &big, &what);

    // Every write is refused, and nothing changed.
    assert!(m.init(b"{}", Setup::Create).is_err(), "{what}");
    assert!(
        m.put("leases/a.json", b"x", 1 << 10, &Expect::Tag(String::new()))
            .is_err()
    );
    assert!(
        m.put_chunk(&Hash32::of(b"new"), &small, IfPresent::Refuse)
            .is_err(),
        "{what}"
    );
    assert!(m.delete_chunk(&h).is_err(), "{what}");
    assert!(m.delete("leases/a.json").is_err(), "{what}");
    assert_eq!(m.read_info().unwrap().unwrap(), b"{\"info\": 2}", "{what}");
    assert!(
        writer.get_chunk(&h, 1 << 20).unwrap()[..] == small,
        "{what}"
    );
}

#[test]
fn a_web_member_keeps_the_read_half_of_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let writer = opened(&dir.path().join("member"));
    let web = common::web::serve(dir.path());
    let m = opened(Path::new(&web.url("member/")));
    // Recorded without the trailing slash.
    assert_eq!(m.location(), web.url("member"));
    read_half(&*m, &*writer);
}

#[test]
fn a_store_served_by_a_static_web_server_mounts_exports_and_verifies_by_model_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = common::Rng::new(11).bytes(3 << 20);
    let folder = d.join("st/m0");
    common::pack_bytes(
        d,
        folder.to_str().unwrap(),
        "m",
        &data,
        &["--init", "--chunk-size", "1MiB"],
    );
    let web = common::web::serve(d);
    let store = web.url("st/m0");
    assert!(common::export(&store, "m", None) == data);
    common::ok(&["verify", "--store", &store, "--name", "m"]);
    let m = common::Mounted::new(&store, &d.join("mnt"), &d.join("state"), &["--name", "m"]);
    assert!(std::fs::read(d.join("mnt/m.bin")).unwrap() == data);
    // Writes go nowhere: a pack into it is refused.
    common::fails(
        &[
            "pack",
            folder.join("../../m.bin").to_str().unwrap(),
            "--store",
            &store,
        ],
        "read-only",
    );
    drop(m);
}
