//! Pack, repair and gc over test twins: in-memory members behind the fault wrapper, with a
//! fault aimed at one call half-way through. No disks, no servers: what is shown is what the
//! store does when a member fails at the worst moment.

mod common;

use common::*;
use shardfs::member::MemberIo;
use shardfs::member::MemberSpec;
use shardfs::member::faulty::{Fault, Faulty, Op};
use shardfs::member::mem::MemMember;
use shardfs::store::Store;
use shardfs::store::writer::{PackOptions, pack};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `n` in-memory members of one store-to-be, each behind a fault wrapper, named
/// `twin://TAG-i`.
struct Twins {
    specs: Vec<MemberSpec>,
    mems: Vec<Arc<MemMember>>,
    faults: Vec<Arc<Faulty>>,
}

fn twins(tag: &str, n: usize) -> Twins {
    // Keys this process makes go to the tests' config folder. SAFETY: set before the test
    // starts any thread (each test runs in a process of its own under nextest).
    unsafe { std::env::set_var("XDG_CONFIG_HOME", config_dir()) };
    let mut t = Twins {
        specs: Vec::new(),
        mems: Vec::new(),
        faults: Vec::new(),
    };
    for i in 0..n {
        let mem = Arc::new(MemMember::new(&format!("mem-{tag}-{i}")));
        let faulty = Arc::new(Faulty::new(mem.clone()));
        let spec = shardfs::member::twins::register(&format!("{tag}-{i}"), faulty.clone());
        t.specs.push(MemberSpec::Url(spec));
        t.mems.push(mem);
        t.faults.push(faulty);
    }
    t
}

fn pack_opts() -> PackOptions {
    PackOptions {
        name: Some("m".into()),
        replicas: 2,
        chunk_size: 256 << 10,
        init: true,
        member: shardfs::member::Options {
            timeout: Duration::from_secs(2),
            ..Default::default()
        },
        ..PackOptions::default()
    }
}

fn source(dir: &Path, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = Rng::new(seed).bytes(3 << 20);
    let src = dir.join("m.bin");
    std::fs::write(&src, &data).unwrap();
    (src, data)
}

/// The model's bytes as the store gives them.
fn exported(specs: &[MemberSpec], dir: &Path) -> Vec<u8> {
    let store = Store::open(specs).unwrap();
    let out = dir.join("out.bin");
    shardfs::export::export(&store, "m", None, &out, false).unwrap();
    std::fs::read(&out).unwrap()
}

fn verify_ok(specs: &[MemberSpec]) -> bool {
    let store = Store::open(specs).unwrap();
    shardfs::store::verify::verify(&store, None).unwrap().ok
}

#[test]
fn a_pack_whose_member_fails_half_way_publishes_nothing_and_a_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    let t = twins("pack", 3);
    let (src, data) = source(dir.path(), 1);
    // The third chunk written to member 1 fails, after others were written.
    t.faults[1].on_nth(Op::PutChunk, 3, Fault::Fail);
    let err = pack(&src, &t.specs, &pack_opts()).unwrap_err();
    assert!(err.to_string().contains("mem-pack-1"), "{err}");
    assert!(t.faults[1].calls(Op::PutChunk) >= 3);
    for m in &t.mems {
        assert!(
            m.get_manifest("m").unwrap().is_none(),
            "a manifest was published"
        );
    }
    // The fault was for that one call: a second pack finds what the first wrote and finishes.
    pack(&src, &t.specs, &pack_opts()).unwrap();
    assert!(exported(&t.specs, dir.path()) == data);
    assert!(verify_ok(&t.specs));
}

#[test]
fn a_repair_cut_short_by_a_failing_write_is_finished_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    // Two members, two replicas: a chunk member 0 lost can only go back to member 0.
    let t = twins("repair", 2);
    let (src, data) = source(dir.path(), 2);
    pack(&src, &t.specs, &pack_opts()).unwrap();
    assert_eq!(t.mems[0].chunk_hashes().len(), 12);
    // Member 0 loses every chunk; its second and third replacement writes fail.
    for h in t.mems[0].chunk_hashes() {
        t.mems[0].delete_chunk(&h).unwrap();
    }
    assert!(!verify_ok(&t.specs));
    let done = t.faults[0].calls(Op::PutChunk);
    t.faults[0].on_nth(Op::PutChunk, done + 2, Fault::Fail);
    t.faults[0].on_nth(Op::PutChunk, done + 3, Fault::Fail);
    let opts = shardfs::sync::repair::RepairOptions::default();
    let first = shardfs::sync::repair::repair(&Store::open(&t.specs).unwrap(), &opts);
    let healed = match first {
        Ok(report) => {
            assert!(!report.ok, "a repair whose writes failed says it is done");
            report.replicas_recreated
        }
        Err(_) => 0,
    };
    assert!(
        (t.mems[0].chunk_hashes().len() as u64) < 12,
        "every chunk came back though writes failed ({healed} recreated)"
    );
    // Readers never notice: the other replicas serve.
    assert!(exported(&t.specs, dir.path()) == data);
    let second = shardfs::sync::repair::repair(&Store::open(&t.specs).unwrap(), &opts).unwrap();
    assert!(second.ok, "{second:?}");
    assert!(verify_ok(&t.specs));
}

#[test]
fn gc_deletes_nothing_when_a_member_cannot_list_or_read_its_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let t = twins("gc", 3);
    let (src, data) = source(dir.path(), 3);
    pack(&src, &t.specs, &pack_opts()).unwrap();
    let other = dir.path().join("other.bin");
    std::fs::write(&other, Rng::new(4).bytes(1 << 20)).unwrap();
    let other_opts = PackOptions {
        name: Some("other".into()),
        ..pack_opts()
    };
    pack(&other, &t.specs, &other_opts).unwrap();
    // Only member 2 still holds a copy of model `other`'s manifest.
    for m in &t.mems[..2] {
        m.delete_manifest("other").unwrap();
    }
    for m in &t.mems {
        m.age(Duration::from_secs(7 * 86_400));
    }
    let held =
        |t: &Twins| -> Vec<usize> { t.mems.iter().map(|m| m.chunk_hashes().len()).collect() };
    let before = held(&t);
    let gc = |t: &Twins| {
        let store = Store::open(&t.specs).unwrap();
        shardfs::sync::gc::gc(&store, shardfs::store::Run::Apply, Duration::ZERO)
            .map(|r| r.chunk_files_deleted)
    };
    // Member 2 cannot list, then lists but its manifest reads come back short (damaged): gc
    // cannot know what that copy names, so it deletes nothing (or refuses).
    t.faults[2].on(Op::List, Fault::Fail);
    assert!(matches!(gc(&t), Ok(0) | Err(_)));
    t.faults[2].on(Op::List, Fault::None);
    t.faults[2].on(Op::Get, Fault::Short);
    assert!(matches!(gc(&t), Ok(0) | Err(_)));
    t.faults[2].on(Op::Get, Fault::None);
    assert_eq!(held(&t), before);
    // Member 2 well: its copy keeps `other`'s chunks. Without it, gc returns them.
    assert_eq!(gc(&t).unwrap(), 0);
    assert!(exported(&t.specs, dir.path()) == data);
    t.mems[2].delete_manifest("other").unwrap();
    assert!(gc(&t).unwrap() > 0);
    assert!(exported(&t.specs, dir.path()) == data);
    assert!(verify_ok(&t.specs));
}
