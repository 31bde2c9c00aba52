//! The mount core without a kernel: a store on in-memory twins, the core's answers compared
//! with the packed bytes. Tree lookups and listings, reads across chunk boundaries, a live
//! version swap (an old handle keeps its bytes, a new open gets the new ones), the open-mode
//! choice with a local tier, and errors mapped to their errno.

mod common;

use common::*;
use crossbeam_channel::{Receiver, Sender, bounded};
use shardfs::fs::{Backing, Core, FsError, FsOptions, Layout, OpenMode, OpenReply, Opened, Xattr};
use shardfs::member::MemberSpec;
use shardfs::member::faulty::{Fault, Faulty, Op};
use shardfs::member::mem::MemMember;
use shardfs::store::Store;
use shardfs::store::catalog::Change;
use shardfs::store::writer::{PackOptions, pack};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

const ROOT: u64 = 1;
const ANSWER: Duration = Duration::from_secs(30);
const CHUNK: u64 = 256 << 10;

struct Fixture {
    dir: tempfile::TempDir,
    specs: Vec<MemberSpec>,
    faults: Vec<Arc<Faulty>>,
    a: Vec<u8>,
    b: Vec<u8>,
}

/// Model `m` (`a.bin`, 1 MiB and a bit over 4 chunks; `sub/b.bin`, 5000 bytes) packed onto two
/// in-memory members behind fault wrappers.
fn fixture(tag: &str) -> Fixture {
    // SAFETY: set before the test starts any thread (one process per test under nextest).
    unsafe { std::env::set_var("XDG_CONFIG_HOME", config_dir()) };
    let dir = tempfile::tempdir().unwrap();
    let (mut specs, mut faults) = (Vec::new(), Vec::new());
    for i in 0..2 {
        let mem = Arc::new(MemMember::new(&format!("mem-{tag}-{i}")));
        let faulty = Arc::new(Faulty::new(mem));
        specs.push(MemberSpec::Url(shardfs::member::twins::register(
            &format!("{tag}-{i}"),
            faulty.clone(),
        )));
        faults.push(faulty);
    }
    let mut rng = Rng::new(7);
    let (a, b) = (rng.bytes((4 * CHUNK + 1000) as usize), rng.bytes(5000));
    let f = Fixture {
        dir,
        specs,
        faults,
        a,
        b,
    };
    f.pack(&f.a);
    f
}

impl Fixture {
    /// Packs model `m` again with `a` as `a.bin` (the same `sub/b.bin`).
    fn pack(&self, a: &[u8]) {
        let src = self.dir.path().join("m");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.bin"), a).unwrap();
        let b = src.join("sub/b.bin");
        if !b.exists() {
            // Written once: its mtime, and so its node, stays the same across re-packs.
            std::fs::write(b, &self.b).unwrap();
        }
        let opts = PackOptions {
            name: Some("m".into()),
            replicas: 2,
            chunk_size: CHUNK,
            init: true,
            ..PackOptions::default()
        };
        pack(&src, &self.specs, &opts).unwrap();
    }

    fn store(&self) -> Arc<Store> {
        Arc::new(Store::open(&self.specs).unwrap())
    }

    fn core(&self, tier: Option<Arc<shardfs::tier::Tier>>) -> Core {
        let store = self.store();
        let manifests = vec![store.manifest("m").unwrap()];
        let opts = FsOptions {
            cache_size: 4 * CHUNK,
            prefetch: 2,
            threads: 2,
            kernel_read_ahead: 128 << 10,
            tier,
        };
        Core::new(store, manifests, Layout::FolderPerModel, &opts).unwrap()
    }
}

/// An open's answer as a test sees it: the handle and the mode, or the error. Registering a
/// backing file succeeds when `backing` says so.
struct Reply {
    to: Sender<Result<(u64, &'static str), FsError>>,
    backing: bool,
}

impl OpenReply for Reply {
    fn backing(&self, _copy: &std::fs::File) -> std::io::Result<Backing> {
        if self.backing {
            Ok(Backing::new(7u32))
        } else {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        }
    }

    fn opened(self, answer: Result<Opened, FsError>) {
        let answer = answer.map(|o| {
            let mode = match o.mode {
                OpenMode::Chunks => "chunks",
                OpenMode::LocalCopy => "local copy",
                OpenMode::Passthrough(b) => {
                    assert_eq!(b.get::<u32>(), Some(&7));
                    "passthrough"
                }
            };
            (o.fh, mode)
        });
        self.to.send(answer).unwrap();
    }
}

fn open_as(
    core: &Core,
    ino: u64,
    flags: i32,
    backing: bool,
) -> Result<(u64, &'static str), FsError> {
    let (to, from) = bounded(1);
    core.open(ino, flags, Reply { to, backing });
    from.recv_timeout(ANSWER).unwrap()
}

fn open(core: &Core, ino: u64) -> u64 {
    open_as(core, ino, libc::O_RDONLY, false).unwrap().0
}

fn read(core: &Core, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
    let (to, from) = bounded(1);
    core.read(ino, fh, (offset, size), 0, move |r| {
        to.send(r.map(<[u8]>::to_vec)).unwrap()
    });
    from.recv_timeout(ANSWER).unwrap()
}

fn read_all(core: &Core, ino: u64, fh: u64, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let got = read(core, ino, fh, out.len() as u64, 100_000).unwrap();
        assert!(!got.is_empty(), "a read short of the end came back empty");
        out.extend(got);
    }
    out
}

/// A handle on file `ino` served from its local copy, opened once the copy is checked.
fn open_once_copied(core: &Core, ino: u64) -> u64 {
    let mut copy = None;
    wait_for(ANSWER, "the local copy", || {
        let (fh, mode) = open_as(core, ino, libc::O_RDONLY, false).unwrap();
        if mode == "local copy" {
            copy = Some(fh);
            return true;
        }
        core.release(fh);
        false
    });
    copy.unwrap()
}

fn lookup(core: &Core, parent: u64, name: &str) -> Result<fuser::FileAttr, FsError> {
    core.lookup(parent, OsStr::new(name))
}

fn names(core: &Core, dir: u64, offset: u64) -> Vec<String> {
    let mut out = Vec::new();
    core.readdir(dir, offset, |e| {
        out.push(e.name.to_string());
        false
    })
    .unwrap();
    out
}

#[test]
fn the_tree_answers_lookups_listings_and_refuses_what_a_read_only_mount_cannot_do() {
    let f = fixture("tree");
    let core = f.core(None);
    let m = lookup(&core, ROOT, "m").unwrap();
    assert_eq!(m.kind, fuser::FileType::Directory);
    let m = u64::from(m.ino);
    let a = lookup(&core, m, "a.bin").unwrap();
    assert_eq!(a.size, f.a.len() as u64);
    assert_eq!(a.kind, fuser::FileType::RegularFile);
    let sub = u64::from(lookup(&core, m, "sub").unwrap().ino);
    assert_eq!(lookup(&core, sub, "b.bin").unwrap().size, 5000);
    assert_eq!(core.getattr(u64::from(a.ino)).unwrap().size, a.size);

    assert_eq!(names(&core, m, 0), [".", "..", "a.bin", "sub"]);
    // A listing continues where the last one stopped.
    assert_eq!(names(&core, m, 3), ["sub"]);
    let a = u64::from(a.ino);
    assert_eq!(core.readdir(a, 0, |_| false), Err(FsError::NotDir));

    assert_eq!(lookup(&core, m, "missing").unwrap_err(), FsError::NotFound);
    assert_eq!(lookup(&core, a, "x").unwrap_err(), FsError::NotDir);
    assert_eq!(core.getattr(999_999).unwrap_err(), FsError::NotFound);
    assert_eq!(
        open_as(&core, m, libc::O_RDONLY, false).unwrap_err(),
        FsError::IsDir
    );
    assert_eq!(
        open_as(&core, a, libc::O_RDWR, false).unwrap_err(),
        FsError::ReadOnly
    );
    assert_eq!(
        open_as(&core, a, libc::O_RDONLY | libc::O_TRUNC, false).unwrap_err(),
        FsError::ReadOnly
    );
    assert_eq!(core.access(a, libc::W_OK), Err(FsError::ReadOnly));
    assert_eq!(core.access(a, libc::R_OK), Ok(()));
    let s = core.statfs();
    assert_eq!(s.blocks, (f.a.len() as u64 + 5000).div_ceil(4096));
    // Root, m, sub, and the two files.
    assert_eq!(s.files, 5);
}

#[test]
fn reads_across_chunk_boundaries_and_past_the_end_give_the_packed_bytes() {
    let f = fixture("read");
    let core = f.core(None);
    let m = u64::from(lookup(&core, ROOT, "m").unwrap().ino);
    let a = u64::from(lookup(&core, m, "a.bin").unwrap().ino);
    let fh = open(&core, a);
    let at = |off: u64, n: u32| read(&core, a, fh, off, n).unwrap();
    // Spanning one boundary, then three chunks at once, then the tail.
    assert!(at(CHUNK - 100, 300) == f.a[(CHUNK - 100) as usize..(CHUNK + 200) as usize]);
    assert!(
        at(CHUNK / 2, (3 * CHUNK) as u32)
            == f.a[(CHUNK / 2) as usize..(CHUNK / 2 + 3 * CHUNK) as usize]
    );
    assert!(at(4 * CHUNK + 900, 4096) == f.a[(4 * CHUNK + 900) as usize..]);
    assert!(at(f.a.len() as u64, 4096).is_empty());
    assert!(at(0, 0).is_empty());
    assert!(read_all(&core, a, fh, f.a.len() as u64) == f.a);
    core.release(fh);
    assert_eq!(read(&core, m, 0, 0, 10).unwrap_err(), FsError::IsDir);
    assert_eq!(
        read(&core, 999_999, 0, 0, 10).unwrap_err(),
        FsError::NotFound
    );
    let counters = core.counters();
    assert!(counters.bytes_served >= f.a.len() as u64);
    assert_eq!(counters.errors, 0);
}

#[test]
fn a_new_version_reaches_new_opens_while_an_open_handle_keeps_its_bytes() {
    let f = fixture("swap");
    let core = f.core(None);
    let m = u64::from(lookup(&core, ROOT, "m").unwrap().ino);
    let old = u64::from(lookup(&core, m, "a.bin").unwrap().ino);
    let b = u64::from(lookup(&core, m, "sub").unwrap().ino);
    let b_ino = u64::from(lookup(&core, b, "b.bin").unwrap().ino);
    let old_fh = open(&core, old);

    let mut new = f.a.clone();
    new[CHUNK as usize + 5] ^= 0xff;
    new.extend_from_slice(b"more");
    f.pack(&new);
    let current = f.store().manifest("m").unwrap();
    core.live().apply(&[Change::Current(current)], None);

    let now = lookup(&core, m, "a.bin").unwrap();
    assert_ne!(u64::from(now.ino), old, "changed content kept its inode");
    assert_eq!(now.size, new.len() as u64);
    let new_fh = open(&core, u64::from(now.ino));
    assert!(read_all(&core, u64::from(now.ino), new_fh, new.len() as u64) == new);
    // The handle opened before the swap reads the version it opened.
    assert!(read_all(&core, old, old_fh, f.a.len() as u64) == f.a);
    // An unchanged file keeps its inode.
    assert_eq!(u64::from(lookup(&core, b, "b.bin").unwrap().ino), b_ino);
    core.release(old_fh);
    core.release(new_fh);
    // Once the kernel forgets it, the old node is gone.
    core.forget(old, 1);
    assert_eq!(core.getattr(old).unwrap_err(), FsError::NotFound);
}

#[test]
fn an_open_is_served_from_chunks_then_the_local_copy_then_by_passthrough() {
    let f = fixture("modes");
    let tier = shardfs::tier::Tier::open(&f.dir.path().join("tier"), 64 << 20).unwrap();
    let core = f.core(Some(tier));
    assert!(core.wants_passthrough());
    let m = u64::from(lookup(&core, ROOT, "m").unwrap().ino);
    let a = u64::from(lookup(&core, m, "a.bin").unwrap().ino);
    let (fh, mode) = open_as(&core, a, libc::O_RDONLY, false).unwrap();
    assert_eq!(mode, "chunks");
    assert!(read_all(&core, a, fh, f.a.len() as u64) == f.a);
    core.release(fh);
    // The chunks read went into the tier; once its copy is checked, opens use it.
    let fh = open_once_copied(&core, a);
    assert!(read_all(&core, a, fh, f.a.len() as u64) == f.a);
    // With passthrough taken, a new open goes by passthrough only once no normal open is live.
    core.passthrough_taken(true);
    let (l, mode) = open_as(&core, a, libc::O_RDONLY, true).unwrap();
    assert_eq!(mode, "local copy");
    core.release(fh);
    core.release(l);
    // Never a direct open (by passthrough its reads would take the copy's disk's alignment
    // rules): it reads the copy.
    let (d, mode) = open_as(&core, a, libc::O_RDONLY | libc::O_DIRECT, true).unwrap();
    assert_eq!(mode, "local copy");
    core.release(d);
    let (p1, mode) = open_as(&core, a, libc::O_RDONLY, true).unwrap();
    assert_eq!(mode, "passthrough");
    // While it is, every open of that inode is (the kernel refuses mixing them), direct or not.
    let (p2, mode) = open_as(&core, a, libc::O_RDONLY, false).unwrap();
    assert_eq!(mode, "passthrough");
    let (p3, mode) = open_as(&core, a, libc::O_RDONLY | libc::O_DIRECT, false).unwrap();
    assert_eq!(mode, "passthrough");
    assert_eq!(core.counters().now.open_files.len(), 3);
    for h in [p1, p2, p3] {
        core.release(h);
    }
    // A kernel that refuses the backing file turns passthrough off: the copy is read instead.
    assert_eq!(
        open_as(&core, a, libc::O_RDONLY, false).unwrap().1,
        "local copy"
    );
    assert_eq!(
        open_as(&core, a, libc::O_RDONLY, true).unwrap().1,
        "local copy"
    );
}

#[test]
fn chunks_with_no_good_replica_fail_with_eio_and_never_with_wrong_bytes() {
    let f = fixture("faults");
    let core = f.core(None);
    let m = u64::from(lookup(&core, ROOT, "m").unwrap().ino);
    let a = u64::from(lookup(&core, m, "a.bin").unwrap().ino);
    let fh = open(&core, a);
    // One member returns flipped bytes: the other's replica serves.
    f.faults[0].on(Op::GetChunk, Fault::Corrupt);
    assert!(read(&core, a, fh, 0, 4096).unwrap() == f.a[..4096]);
    // Both do: EIO, counted.
    f.faults[1].on(Op::GetChunk, Fault::Corrupt);
    let got = read(&core, a, fh, 2 * CHUNK, 4096);
    assert_eq!(got.unwrap_err(), FsError::Io);
    assert_eq!(FsError::Io.errno().code(), libc::EIO);
    // Both fail outright: EIO again.
    f.faults[0].on(Op::GetChunk, Fault::Fail);
    f.faults[1].on(Op::GetChunk, Fault::Fail);
    assert_eq!(read(&core, a, fh, 3 * CHUNK, 10).unwrap_err(), FsError::Io);
    let c = core.counters();
    assert_eq!(c.errors, 2);
    assert!(c.replica_failovers >= 3, "{c:?}");
}

fn xattr(core: &Core, ino: u64, name: &str, uid: u32, size: u32) -> Result<Xattr, FsError> {
    let (to, from) = bounded(1);
    core.getxattr(
        ino,
        OsStr::new(name),
        uid,
        size,
        Box::new(move |r| to.send(r).unwrap()),
    );
    from.recv_timeout(ANSWER).unwrap()
}

#[test]
fn control_attributes_answer_root_only_and_refresh_requests_are_bounded() {
    let f = fixture("xattr");
    let mut core = f.core(None);
    let status = shardfs::fs::STATUS_XATTR;
    let refresh = shardfs::fs::REFRESH_XATTR;
    let Ok(Xattr::Size(n)) = xattr(&core, ROOT, status, 0, 0) else {
        panic!("a size probe of the status got no size");
    };
    let Ok(Xattr::Value(v)) = xattr(&core, ROOT, status, 0, n + 64) else {
        panic!("the status had no value");
    };
    let counters: serde_json::Value = serde_json::from_slice(&v).unwrap();
    assert_eq!(counters["versions"][0]["name"], "m");
    assert_eq!(xattr(&core, ROOT, status, 0, 1), Err(FsError::TooSmall));
    assert_eq!(xattr(&core, ROOT, status, 54_321, 0), Err(FsError::Denied));
    assert_eq!(
        xattr(&core, ROOT, "user.other", 0, 100),
        Err(FsError::NoAttribute)
    );
    assert_eq!(xattr(&core, 2, status, 0, 100), Err(FsError::NoAttribute));
    // A pinned mount does not refresh.
    assert_eq!(
        xattr(&core, ROOT, refresh, 0, 100),
        Err(FsError::NotSupported)
    );

    let (to, requests): (_, Receiver<shardfs::fs::RefreshRequest>) = bounded(1);
    core.on_refresh(to);
    let (answered, first) = bounded(1);
    core.getxattr(
        ROOT,
        OsStr::new(refresh),
        0,
        100_000,
        Box::new(move |r| answered.send(r).unwrap()),
    );
    // One waits; the next finds the queue full.
    assert_eq!(xattr(&core, ROOT, refresh, 0, 100), Err(FsError::Busy));
    let (reply, size) = requests.recv_timeout(ANSWER).unwrap();
    reply(shardfs::fs::counters_answer(&core.counters(), size));
    assert!(matches!(
        first.recv_timeout(ANSWER).unwrap(),
        Ok(Xattr::Value(_))
    ));
}

#[test]
fn a_copy_whose_writer_fell_behind_the_read_completes_from_the_store() {
    let f = fixture("behind");
    let tier = shardfs::tier::Tier::open(&f.dir.path().join("tier"), 64 << 20).unwrap();
    let core = f.core(Some(tier.clone()));
    let m = u64::from(lookup(&core, ROOT, "m").unwrap().ino);
    let a = u64::from(lookup(&core, m, "a.bin").unwrap().ino);
    let (fh, _) = open_as(&core, a, libc::O_RDONLY, false).unwrap();
    // The reader never waits for the tier's disk: with its writer held, the whole file reads.
    let held = tier.hold_writer();
    assert!(read_all(&core, a, fh, f.a.len() as u64) == f.a);
    core.release(fh);
    drop(held);
    // The writer catches up on its own, through the mount's loads (nothing reads the file).
    let fh = open_once_copied(&core, a);
    assert!(read_all(&core, a, fh, f.a.len() as u64) == f.a);
    let report = tier.report();
    // Of its 5 chunks the held writer took one and queued two at most.
    assert!(report.reloaded >= 2, "{report:?}");
    assert_eq!(report.damaged, 0);
}
