//! Live updates under a mount: a re-pack reaches new opens within the refresh interval while
//! files opened (and mmapped) before keep reading their version; models added and removed come
//! and go; a damaged manifest copy changes nothing. Real mounts, bytes compared.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

fn ino(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

fn read_all_at(f: &fs::File) -> Vec<u8> {
    let mut buf = vec![0u8; f.metadata().unwrap().len() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// Runs `check` with the manifest copy at `copy` replaced by garbage, then by half of itself;
/// puts the good copy back.
fn with_damaged_copies(copy: &Path, check: impl Fn()) {
    let good = fs::read(copy).unwrap();
    for bad in [b"{not a manifest".to_vec(), good[..good.len() / 2].to_vec()] {
        fs::write(copy, &bad).unwrap();
        check();
    }
    fs::write(copy, &good).unwrap();
}

/// `shardfs gc --min-age 1ms --json EXTRA...`'s report.
fn gc_json(store: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["gc", "--store", store, "--min-age", "1ms", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_slice(&ok(&args).stdout).unwrap()
}

#[test]
fn a_repack_reaches_new_opens_while_open_files_and_mmaps_keep_their_version() {
    let dir = tempfile::tempdir().unwrap();
    let (d, src) = (dir.path(), dir.path().join("src"));
    let paths = members(d, 2);
    let store = store_arg(&paths);
    fs::create_dir_all(&src).unwrap();
    let [w1, w2, u] = [(1, 3 << 20), (2, 3 << 20), (3, 2 << 20)].map(|(s, n)| Rng::new(s).bytes(n));
    fs::write(src.join("w.bin"), &w1).unwrap();
    fs::write(src.join("u.bin"), &u).unwrap();
    let flags = ["--name", "m", "--replicas", "2", "--chunk-size", "256KiB"];
    pack(&src, &store, &flags);
    // A cache smaller than the files: the old version's chunks come from the store again.
    let mount = Mounted::new(
        &store,
        &d.join("mnt"),
        &d.join("state"),
        &["--refresh", "500ms", "--cache-size", "1MiB"],
    );
    let (w, ub) = (mount.dir.join("m/w.bin"), mount.dir.join("m/u.bin"));
    let (w_ino, u_ino) = (ino(&w), ino(&ub));
    let old = fs::File::open(&w).unwrap();
    let map = Map::new(&old);
    assert!(map.bytes() == w1);
    assert_eq!(mount.version("m"), Some(1));

    // Re-pack: w.bin changes, u.bin does not.
    fs::write(src.join("w.bin"), &w2).unwrap();
    pack(&src, &store, &flags);
    wait_for(Duration::from_secs(30), "the new version", || {
        ino(&w) != w_ino
    });
    assert!(fs::read(&w).unwrap() == w2, "a new open reads new bytes");
    assert_eq!(ino(&ub), u_ino, "an unchanged file keeps its inode");
    assert!(fs::read(&ub).unwrap() == u);
    assert_eq!(mount.version("m"), Some(2));
    // The old handle and the mmap, their pages dropped, still read the old version.
    map.drop_pages(&old);
    assert!(
        read_all_at(&old) == w1,
        "the old handle reads the old bytes"
    );
    map.drop_pages(&old);
    assert!(map.bytes() == w1, "the mmap reads the old bytes");
    // gc keeps the old version's chunks while it is open: the lease names it.
    let g = gc_json(&store, &[]);
    assert!(g["kept_for_leases"].as_u64().unwrap() > 0, "{g}");
    assert_eq!(g["chunk_files_deleted"], 0, "{g}");
    map.drop_pages(&old);
    assert!(read_all_at(&old) == w1);

    // A damaged copy on one member (garbage, then a half-written one) changes nothing.
    with_damaged_copies(&paths[0].join("manifests/m.json"), || {
        mount.refresh();
        assert_eq!(mount.version("m"), Some(2));
        assert!(fs::read(&w).unwrap() == w2);
        assert_eq!(ino(&ub), u_ino);
        // gc deletes nothing while a copy cannot be read.
        let gc = ["gc", "--store", &store, "--min-age", "1ms"];
        fails(&gc, "deleted nothing");
    });
    drop(map);
    drop(old);
    // Closed, the old version leaves the lease (once the kernel forgets its inode), and gc may
    // take its chunks.
    let gc_may_take_old = || {
        mount.refresh();
        let g = gc_json(&store, &["--dry-run"]);
        g["kept_for_leases"] == 0 && g["chunk_files_deleted"].as_u64().unwrap() > 0
    };
    wait_for(
        Duration::from_secs(30),
        "the old lease gone",
        gc_may_take_old,
    );
    let s = mount.status();
    assert_eq!(s["errors"], 0, "{s}");
    assert!(mount.unmount().status.success());
}

#[test]
fn a_model_added_appears_and_a_removed_one_keeps_reading_through_open_handles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 2));
    pack_bytes(
        d,
        &store,
        "m",
        &Rng::new(5).bytes(1 << 20),
        &["--name", "m"],
    );
    let mount = Mounted::new(
        &store,
        &d.join("mnt"),
        &d.join("state"),
        &["--refresh", "500ms"],
    );
    // A model added appears; removed, it goes from listings while an open handle keeps working.
    let n = Rng::new(4).bytes(1 << 20);
    pack_bytes(d, &store, "n", &n, &["--name", "n"]);
    mount.refresh();
    let nb = mount.dir.join("n/n.bin");
    assert!(fs::read(&nb).unwrap() == n);
    let held = fs::File::open(&nb).unwrap();
    ok(&["rm", "--store", &store, "--name", "n"]);
    mount.refresh();
    let names: Vec<String> = fs::read_dir(&mount.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["m".to_string()]);
    assert!(!nb.exists());
    assert!(
        read_all_at(&held) == n,
        "a removed model's open file still reads"
    );
    drop(held);
    assert!(mount.unmount().status.success());
}

#[test]
fn a_pinned_mount_keeps_its_versions_and_refuses_a_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = members(d, 2);
    let store = store_arg(&paths);
    let (a, b) = (Rng::new(5).bytes(1 << 20), Rng::new(6).bytes(1 << 20));
    pack_bytes(d, &store, "m", &a, &["--name", "m"]);
    let mount = Mounted::new(
        &store,
        &d.join("mnt"),
        &d.join("state"),
        &["--pin", "--name", "m"],
    );
    pack_bytes(d, &store, "m", &b, &["--name", "m"]);
    let out = run_in(&d.join("state"), &["refresh", mount.dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pinned") && err.lines().count() == 1, "{err}");
    assert!(fs::read(mount.dir.join("m.bin")).unwrap() == a);
    assert_eq!(mount.version("m"), Some(1), "{}", mount.status());
    assert_eq!(mount.status()["refreshes"], 0);
}
