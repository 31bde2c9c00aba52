//! Real FUSE mounts: byte equality (whole files and 10k random preads), attributes, read-only
//! behaviour, concurrency with mmap, replica failover and EIO, the memory bound. A mount's
//! lifecycle (mount/unmount loops, kill -9, signals, bad arguments) is in `lifecycle.rs`.

mod common;
use common::*;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CS: u64 = 64 * 1024;

fn random_preads(mounted: &Path, original: &[u8], rng: &mut Rng, n: usize) {
    let f = fs::File::open(mounted).unwrap();
    let size = original.len() as u64;
    for i in 0..n {
        // Offsets near chunk boundaries a third of the time, anywhere (also past EOF) otherwise.
        let offset = if i % 3 == 0 && size > 0 {
            let boundary = rng.below(size / CS + 1) * CS;
            boundary.saturating_sub(rng.below(300))
        } else {
            rng.below(size + 1000)
        };
        let len = 1 + rng.below(if i % 10 == 0 { 3 * CS } else { 9000 }) as usize;
        let mut buf = vec![0u8; len];
        let got = f.read_at(&mut buf, offset).unwrap();
        let start = (offset as usize).min(original.len());
        let expect = &original[start..(start + len).min(original.len())];
        assert_eq!(got, expect.len(), "pread length at {offset}+{len}");
        assert!(
            &buf[..got] == expect,
            "pread bytes differ at {offset}+{len}"
        );
    }
}

#[test]
fn files_read_back_exactly() {
    let fx = MountFixture::new(3);
    let mut rng = Rng::new(100);
    let models: Vec<(String, Vec<u8>)> = vec![
        ("floats".into(), rng.floats(40 * CS as usize + 12345)),
        ("random".into(), rng.bytes(17 * CS as usize - 1)),
        ("tiny".into(), rng.bytes(1)),
        ("empty".into(), vec![]),
    ];
    for (name, data) in &models {
        pack_bytes(
            fx.dir.path(),
            &fx.store,
            name,
            data,
            &["--chunk-size", "64KiB", "--replicas", "2"],
        );
    }
    // A folder model too.
    let folder = fx.path("src/folder-model");
    fs::create_dir_all(folder.join("sub/deeper")).unwrap();
    let nested = rng.floats(5 * CS as usize + 7);
    fs::write(folder.join("sub/deeper/w.bin"), &nested).unwrap();
    fs::write(folder.join("config.json"), b"{\"a\": 1}").unwrap();
    pack(&folder, &fx.store, &["--chunk-size", "64KiB"]);

    let m = fx.mount(&[]);
    let mut names: Vec<String> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["empty", "floats", "folder-model", "random", "tiny"]);
    for (name, data) in &models {
        let p = m.dir.join(name).join(format!("{name}.bin"));
        assert_eq!(fs::metadata(&p).unwrap().len(), data.len() as u64);
        assert!(fs::read(&p).unwrap() == *data, "{name} differs");
        random_preads(&p, data, &mut rng, 2500);
    }
    assert!(fs::read(m.dir.join("folder-model/sub/deeper/w.bin")).unwrap() == nested);
    assert_eq!(
        fs::read(m.dir.join("folder-model/config.json")).unwrap(),
        b"{\"a\": 1}"
    );
    drop_page_cache(&m.dir.join("floats/floats.bin"));
    random_preads(
        &m.dir.join("floats/floats.bin"),
        &models[0].1,
        &mut rng,
        2500,
    );
    let s = m.status();
    assert!(
        s["bytes_served"].as_u64().unwrap() > 0 && s["reads"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert_eq!(s["errors"], 0);
    assert_eq!(m.unmount().status.code(), Some(0));

    // With --name the root shows that model's files.
    let m = fx.mount(&["--name", "folder-model"]);
    assert_eq!(tree(&m.dir), ["config.json", "sub/deeper/w.bin"]);
    let m2 = Mounted::new(
        &fx.store,
        &fx.path("mnt2"),
        &fx.state(),
        &["--name", "floats"],
    );
    assert!(fs::read(m2.dir.join("floats.bin")).unwrap() == models[0].1);
}

#[test]
fn attributes_and_read_only() {
    let fx = MountFixture::new(1);
    let data = Rng::new(101).bytes(3 * CS as usize + 5);
    let src = pack_bytes(
        fx.dir.path(),
        &fx.store,
        "m",
        &data,
        &["--chunk-size", "64KiB"],
    );
    let m = fx.mount(&["--name", "m"]);
    let p = m.dir.join("m.bin");
    let meta = fs::metadata(&p).unwrap();
    assert_eq!(meta.len(), data.len() as u64);
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert_eq!(
        fs::metadata(&m.dir).unwrap().permissions().mode() & 0o777,
        0o555
    );
    let orig = fs::metadata(&src).unwrap();
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (orig.mtime(), orig.mtime_nsec())
    );
    let ino = meta.ino();
    drop_page_cache(&p);
    assert_eq!(
        fs::metadata(&p).unwrap().ino(),
        ino,
        "inode numbers are stable"
    );
    for opts in [
        fs::OpenOptions::new().write(true).clone(),
        fs::OpenOptions::new().read(true).write(true).clone(),
    ] {
        let e = opts.open(&p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    }
    assert_eq!(
        fs::write(m.dir.join("new"), b"x")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    assert!(fs::remove_file(&p).is_err());
    let out = Command::new("stat")
        .args(["-f", "-c", "%b %S", m.dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "statfs fails");
    assert!(fs::read_dir(m.dir.join("m.bin")).is_err());
    assert_eq!(
        fs::metadata(m.dir.join("nope")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}

/// A thread that maps `target` and checks random ranges of it, then all of it, against `data`.
fn check_mapped(target: &Path, data: &[u8], seed: u64) -> std::thread::JoinHandle<()> {
    let (target, data) = (target.to_path_buf(), data.to_vec());
    std::thread::spawn(move || {
        let f = fs::File::open(&target).unwrap();
        let len = data.len();
        let map = Map::new(&f);
        let mapped = map.bytes();
        let mut rng = Rng::new(200 + seed);
        for _ in 0..3000 {
            let off = rng.below(len as u64) as usize;
            let end = (off + 5000).min(len);
            assert!(
                mapped[off..end] == data[off..end],
                "mmap bytes differ at {off}"
            );
        }
        assert!(mapped == &data[..], "whole mapping differs");
    })
}

#[test]
fn concurrent_readers_and_mmap() {
    let fx = MountFixture::new(2);
    let data = Rng::new(102).floats(24 << 20);
    let src = pack_bytes(
        fx.dir.path(),
        &fx.store,
        "m",
        &data,
        &["--chunk-size", "256KiB", "--replicas", "2"],
    );
    let m = fx.mount(&["--name", "m", "--cache-size", "8MiB"]);
    let target = m.dir.join("m.bin");
    let script = r#"
import os, random, sys
mnt, orig, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = random.Random(seed)
a, b = os.open(mnt, os.O_RDONLY), os.open(orig, os.O_RDONLY)
size = os.fstat(b).st_size
for _ in range(1500):
    off, n = r.randrange(size), r.randrange(1, 300000)
    if os.pread(a, n, off) != os.pread(b, n, off):
        sys.exit(f"mismatch at {off}+{n}")
"#;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut children: Vec<_> = (0..8)
        .map(|i| {
            Command::new("python3")
                .args([
                    "-c",
                    script,
                    target.to_str().unwrap(),
                    src.to_str().unwrap(),
                    &i.to_string(),
                ])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Two threads fault the file in through a shared mapping at the same time.
    let mappers: Vec<_> = (0..2).map(|t| check_mapped(&target, &data, t)).collect();
    for c in &mut children {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                let mut err = String::new();
                c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                assert!(status.success(), "reader failed: {err}");
                break;
            }
            if Instant::now() > deadline {
                for c in &mut children {
                    let _ = c.kill();
                }
                panic!("concurrent readers did not finish in time (deadlock?)");
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }
    for t in mappers {
        t.join().expect("mmap reader failed");
    }
    assert_eq!(m.status()["errors"], 0);
}

#[test]
fn lost_member_fails_over_and_bad_chunk_gives_eio() {
    let fx = MountFixture::new(3);
    let data = Rng::new(103).floats(60 * CS as usize);
    pack_bytes(
        fx.dir.path(),
        &fx.store,
        "m",
        &data,
        &["--chunk-size", "64KiB", "--replicas", "2"],
    );
    // No local tier: the second read must come from the members, not a copy of the first.
    let m = fx.mount(&["--name", "m", "--cache-size", "1MiB", "--no-local-cache"]);
    let p = m.dir.join("m.bin");
    assert!(fs::read(&p).unwrap() == data);
    // Lose a member's chunks while mounted.
    fs::remove_dir_all(fx.members[1].join("chunks")).unwrap();
    drop_page_cache(&p);
    assert!(
        fs::read(&p).unwrap() == data,
        "reads must stay exact after losing a member"
    );
    let s = m.status();
    assert!(
        s["replica_failovers"].as_u64().unwrap() > 0,
        "failovers not counted: {s}"
    );
    assert_eq!(s["errors"], 0);
    drop(m);

    // A chunk with no good replica: that range fails with EIO, the rest still reads.
    let fx = MountFixture::new(1);
    pack_bytes(
        fx.dir.path(),
        &fx.store,
        "m",
        &data,
        &["--chunk-size", "64KiB"],
    );
    let manifest = manifest_json(&fx.members[0], "m");
    let victim = &manifest["files"][0]["chunks"][10];
    let hash = victim["hash"].as_str().unwrap();
    let chunk_file = fx.members[0].join("chunks").join(&hash[..2]).join(hash);
    let mut bytes = fs::read(&chunk_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&chunk_file, &bytes).unwrap();
    let m = fx.mount(&["--name", "m"]);
    let f = fs::File::open(m.dir.join("m.bin")).unwrap();
    let mut buf = vec![0u8; 4096];
    let bad = victim["offset"].as_u64().unwrap() + 100;
    assert_eq!(
        f.read_at(&mut buf, bad).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    for good in [0, bad + 2 * CS, data.len() as u64 - 4096] {
        assert_eq!(f.read_at(&mut buf, good).unwrap(), 4096);
        assert!(buf[..] == data[good as usize..good as usize + 4096]);
    }
    assert!(m.status()["errors"].as_u64().unwrap() >= 1);
}

#[test]
fn memory_stays_within_the_cache_budget() {
    let fx = MountFixture::new(1);
    let data = Rng::new(104).floats(256 << 20);
    pack_bytes(fx.dir.path(), &fx.store, "m", &data, &[]);
    // No local tier: once its copy were made the random reads would go by passthrough, and
    // this is about what the chunk path holds.
    let m = fx.mount(&["--name", "m", "--cache-size", "32MiB", "--no-local-cache"]);
    let p = m.dir.join("m.bin");
    assert!(fs::read(&p).unwrap() == data);
    drop_page_cache(&p);
    random_preads(&p, &data, &mut Rng::new(5), 400);
    // The bound is on what the daemon allocates, not on the pages of its program file the
    // kernel maps in (shared, dropped under pressure): 8 MiB of a release build, 22 of this
    // test's debug build, which alone put the total near the bound. The peak less the
    // program's pages at the end is the daemon's own memory when the total peaked (less any
    // program pages first touched after that: a few, once every code path has run).
    let (hwm, program) = (
        proc_status(m.pid(), "VmHWM"),
        proc_status(m.pid(), "RssFile"),
    );
    let own = hwm - program;
    eprintln!(
        "daemon peak RSS: {hwm} KiB with a 32 MiB cache, {program} KiB of it the program's file"
    );
    assert!(
        own < (32 + 64) * 1024,
        "daemon peak RSS {hwm} KiB less the program's {program} KiB is over the 32 MiB cache + 64 MiB"
    );
    let s = m.status();
    assert!(s["cache_bytes_used"].as_u64().unwrap() <= 32 << 20, "{s}");
}

#[test]
fn files_that_only_look_like_a_format_round_trip() {
    // A .safetensors whose header lies (offsets past the end), and a "GGUF" that is not one.
    let fx = MountFixture::new(2);
    let mut rng = Rng::new(106);
    let mut fake_st = (40u64).to_le_bytes().to_vec();
    fake_st.extend_from_slice(
        br#"{"w":{"dtype":"F32","shape":[9999999],"data_offsets":[0,39999996]}}"#,
    );
    fake_st.extend_from_slice(&rng.floats(300_000));
    let mut fake_gguf = b"GGUF".to_vec();
    fake_gguf.extend_from_slice(&rng.bytes(200_000));
    let folder = fx.path("src/liars");
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join("model.safetensors"), &fake_st).unwrap();
    fs::write(folder.join("model.gguf"), &fake_gguf).unwrap();
    pack(
        &folder,
        &fx.store,
        &["--chunk-size", "64KiB", "--replicas", "2"],
    );
    assert!(export(&fx.store, "liars", Some("model.safetensors")) == fake_st);
    assert!(export(&fx.store, "liars", Some("model.gguf")) == fake_gguf);
    let m = fx.mount(&["--name", "liars"]);
    assert!(fs::read(m.dir.join("model.safetensors")).unwrap() == fake_st);
    assert!(fs::read(m.dir.join("model.gguf")).unwrap() == fake_gguf);
}
