//! Member changes, `rebalance`, `rm` and `gc`, with a mount serving readers or reading an old
//! generation, and each of them killed at ten moments. Real files, real mounts, bytes compared.

mod common;

use common::sync::*;
use common::*;
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

/// `gc --min-age 1ms --json`: collects at once what is unreferenced.
fn gc(store: &str) -> serde_json::Value {
    json(&ok(&["gc", "--store", store, "--min-age", "1ms", "--json"]))
}

/// The row of `member list --json` for the member at `location`.
fn member_row(store: &str, location: &std::path::Path) -> serde_json::Value {
    let rows = json(&ok(&["member", "list", "--store", store, "--json"]));
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["location"] == location.to_str().unwrap())
        .unwrap_or_else(|| panic!("{} not in {rows}", location.display()))
        .clone()
}

#[test]
fn members_are_added_reweighted_and_removed_with_replicas_intact() {
    let fx = Fixture::new(7, 2);
    let (mount, readers) = fx.mount_with_readers();
    let rows = json(&ok(&["member", "list", "--store", &fx.store, "--json"]));
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["health"] == "up" && r["chunks"].as_u64().unwrap() > 0)
    );
    // Add a fourth, give it twice the weight.
    let d3 = fx.path("disk3");
    let new = d3.to_str().unwrap();
    ok(&["member", "add", "--store", &fx.store, new, "--weight", "2"]);
    let four = format!("{},{}", fx.store, d3.display());
    ok(&["member", "set-weight", "--store", &four, new, "3"]);
    let added = member_row(&four, &d3);
    assert_eq!(
        (added["index"].as_u64(), added["weight"].as_f64()),
        (Some(3), Some(3.0)),
        "{added}"
    );
    fails(
        &[
            "member",
            "set-weight",
            "--store",
            &four,
            d3.to_str().unwrap(),
            "0",
        ],
        "positive",
    );
    // Remove the first member: its replicas are drained onto the others.
    let gone = fx.members[0].clone();
    ok(&["member", "remove", "--store", &four, gone.to_str().unwrap()]);
    let rest = store_arg(&[fx.members[1].clone(), fx.members[2].clone(), d3.clone()]);
    assert_eq!(verify(&rest)["ok"], true);
    fully_replicated(
        &[fx.members[1].clone(), fx.members[2].clone(), d3.clone()],
        "m",
        2,
    );
    for (i, f) in fx.files.iter().enumerate() {
        assert!(export(&rest, "m", Some(&format!("{i}.bin"))) == **f);
    }
    // Given again, the retired member is left out; it is listed as retired.
    let v = verify(&four);
    assert_eq!(v["ok"], true, "{v}");
    let retired = member_row(&rest, &gone);
    assert_eq!(retired["health"], "retired", "{retired}");
    // Down to two members with replicas 2, a further removal is refused.
    ok(&["member", "remove", "--store", &rest, d3.to_str().unwrap()]);
    let two = store_arg(&[fx.members[1].clone(), fx.members[2].clone()]);
    fails(
        &[
            "member",
            "remove",
            "--store",
            &two,
            fx.members[1].to_str().unwrap(),
        ],
        "cannot remove",
    );
    assert_eq!(verify(&two)["ok"], true);
    readers.finish();
    assert_eq!(mount.status()["errors"], 0);
}

#[test]
fn rm_and_gc_keep_shared_chunks_and_return_space() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = members(d, 3);
    let store = store_arg(&paths);
    let mut rng = Rng::new(10);
    let (shared, own, other) = (
        rng.floats(1 << 20),
        rng.floats(1 << 20),
        rng.floats(1 << 20),
    );
    for (name, files) in [
        ("a", vec![("s.bin", &shared), ("o.bin", &own)]),
        ("b", vec![("s.bin", &shared)]),
        ("c", vec![("x.bin", &other)]),
    ] {
        let src = d.join(name);
        fs::create_dir_all(&src).unwrap();
        for (f, bytes) in files {
            fs::write(src.join(f), bytes).unwrap();
        }
        pack(&src, &store, &["--replicas", "2", "--chunk-size", "64KiB"]);
    }
    fails(
        &["rm", "--store", &store, "--name", "nope"],
        "no model named 'nope'",
    );
    fails(
        &["rm", "--store", &store_arg(&paths[..2]), "--name", "a"],
        "every member",
    );
    ok(&["rm", "--store", &store, "--name", "a"]);
    let ls = json(&ok(&["ls", "--store", &store, "--json"]));
    let names = strings(&ls["models"], "name");
    assert_eq!(names, vec!["b", "c"]);
    // Young chunk files are kept by default; a dry run deletes nothing.
    let young = json(&ok(&["gc", "--store", &store, "--json"]));
    assert_eq!(young["chunk_files_deleted"], 0);
    assert!(young["kept_young"].as_u64().unwrap() > 0, "{young}");
    let before = chunk_bytes(&paths);
    let dry = json(&ok(&[
        "gc",
        "--store",
        &store,
        "--dry-run",
        "--min-age",
        "1ms",
        "--json",
    ]));
    assert!(dry["chunk_files_deleted"].as_u64().unwrap() > 0);
    assert_eq!(chunk_bytes(&paths), before);
    let r = gc(&store);
    assert_eq!(r["chunk_files_deleted"], dry["chunk_files_deleted"]);
    let after = chunk_bytes(&paths);
    assert_eq!(before - after, r["bytes_returned"].as_u64().unwrap(), "{r}");
    // o.bin's 16 chunks x 2 replicas went; nothing b or c uses did.
    assert_eq!(r["chunk_files_deleted"], 32, "{r}");
    assert_eq!(verify(&store)["ok"], true);
    assert!(export(&store, "b", Some("s.bin")) == shared);
    assert!(export(&store, "c", Some("x.bin")) == other);
    let again = gc(&store);
    assert_eq!(again["chunk_files_deleted"], 0);
}

#[test]
fn gc_keeps_what_a_live_mount_reads_and_never_races_a_pack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = members(d, 2);
    let store = store_arg(&paths);
    let mut rng = Rng::new(11);
    let v1 = rng.floats(2 << 20);
    let src = d.join("m.bin");
    fs::write(&src, &v1).unwrap();
    pack(&src, &store, &["--replicas", "2", "--chunk-size", "64KiB"]);
    let mount = Mounted::new(
        &store,
        &d.join("mnt"),
        &d.join("state"),
        &["--name", "m", "--cache-size", "1MiB"],
    );
    // A reader holds the file open while a new version replaces it: that reader keeps reading
    // its version (whether or not the mount has looked for new ones by then), so gc keeps it.
    let mut held = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(mount.dir.join("m.bin"))
        .unwrap();
    let v2 = rng.floats(2 << 20);
    fs::write(&src, &v2).unwrap();
    pack(&src, &store, &["--replicas", "2", "--chunk-size", "64KiB"]);
    let r = gc(&store);
    assert_eq!(r["live_leases"], 1, "{r}");
    assert_eq!(r["chunk_files_deleted"], 0, "{r}");
    assert!(r["kept_for_leases"].as_u64().unwrap() >= 64, "{r}");
    let mut got = Vec::new();
    held.read_to_end(&mut got).unwrap();
    assert!(got == v1, "the reader lost its version");
    drop(held);
    assert!(mount.unmount().status.success());
    let r = gc(&store);
    assert_eq!(r["live_leases"], 0, "{r}");
    assert_eq!(r["chunk_files_deleted"], 64, "{r}");
    assert!(export(&store, "m", None) == v2);
    // A gc beside a running pack is refused by the pack's lock, or finds nothing of it to take.
    let v3 = rng.floats(24 << 20);
    fs::write(&src, &v3).unwrap();
    let child = command()
        .args([
            "pack",
            src.to_str().unwrap(),
            "--store",
            &store,
            "--replicas",
            "2",
            "--chunk-size",
            "64KiB",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while chunk_files(&paths[0]).len() < 200 {
        std::thread::yield_now();
    }
    let out = run(&["gc", "--store", &store, "--min-age", "1ms"]);
    assert!(
        out.status.success() || String::from_utf8_lossy(&out.stderr).contains("busy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packed = child.wait_with_output().unwrap();
    assert!(
        packed.status.success(),
        "{}",
        String::from_utf8_lossy(&packed.stderr)
    );
    assert_eq!(verify(&store)["ok"], true);
    assert!(export(&store, "m", None) == v3);
}

#[test]
fn adding_a_member_and_rebalancing_moves_a_quarter_and_balances_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut paths = members(d, 3);
    let store = store_arg(&paths);
    let data = Arc::new(Rng::new(12).floats(72 << 20));
    let src = d.join("m.bin");
    fs::write(&src, &*data).unwrap();
    pack(&src, &store, &["--replicas", "2", "--chunk-size", "64KiB"]);
    let mount = Mounted::new(
        &store,
        &d.join("mnt"),
        &d.join("state"),
        &["--name", "m", "--cache-size", "4MiB"],
    );
    let readers = Readers::start(vec![(mount.dir.join("m.bin"), data.clone())]);
    let new = d.join("disk3");
    ok(&["member", "add", "--store", &store, new.to_str().unwrap()]);
    paths.push(new);
    let four = store_arg(&paths);
    let dry = json(&ok(&["rebalance", "--store", &four, "--dry-run", "--json"]));
    let served_before = mount.version("m").unwrap();
    let r = json(&ok(&["rebalance", "--store", &four, "--json"]));
    assert_eq!(dry["replicas_moved"], r["replicas_moved"]);
    let share = r["replicas_moved"].as_f64().unwrap() / r["replicas"].as_f64().unwrap();
    // 1152 chunks x 2 replicas: a quarter moves, give or take 0.05 (about five standard
    // deviations).
    assert!(
        (0.20..=0.30).contains(&share),
        "moved {share:.3} of the replicas: {r}"
    );
    // The mount still reads its generation: the old copies stay until it moves on.
    assert!(r["old_copies_kept"].as_u64().unwrap() > 0, "{r}");
    // The mount takes the new manifest (same content: same inode) and its lease names it; the
    // next rebalance then deletes the old copies while the readers go on.
    let file = mount.dir.join("m.bin");
    let ino = |f: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(f).unwrap());
    let inode = ino(&file);
    // (The mount's own periodic refresh may take it first: the version is compared with what
    // the rebalance published, not with what the mount served a moment ago.)
    let published = manifest_json(&paths[0], "m")["version"].as_u64().unwrap();
    assert!(published > served_before);
    mount.refresh();
    assert_eq!(mount.version("m"), Some(published));
    assert_eq!(ino(&file), inode);
    let r = json(&ok(&["rebalance", "--store", &four, "--json"]));
    assert_eq!(r["replicas_moved"], 0, "{r}");
    assert!(r["old_copies_deleted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["old_copies_kept"], 0, "{r}");
    // Every byte still reads from where the replicas are now.
    drop_page_cache(&file);
    assert!(fs::read(&file).unwrap() == *data);
    readers.finish();
    assert_eq!(mount.status()["errors"], 0);
    assert!(mount.unmount().status.success());
    // Exactly the listed copies are left: two per chunk.
    let files: usize = paths.iter().map(|p| chunk_files(p).len()).sum();
    assert_eq!(files, 2 * 1152);
    assert_eq!(verify(&four)["ok"], true);
    fully_replicated(&paths, "m", 2);
    assert!(export(&four, "m", None) == *data);
    // Bytes per member within 10% of their share (equal weights: a quarter each), counting
    // the copies the manifest lists.
    assert_shares(&paths, &[0.25; 4]);
    // Twice the weight for the new member: it ends with two fifths of the bytes.
    let new = paths[3].to_str().unwrap();
    ok(&["member", "set-weight", "--store", &four, new, "2"]);
    let r = json(&ok(&["rebalance", "--store", &four, "--json"]));
    assert!(r["replicas_moved"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(verify(&four)["ok"], true);
    fully_replicated(&paths, "m", 2);
    assert_shares(&paths, &[0.2, 0.2, 0.2, 0.4]);
    assert!(export(&four, "m", None) == *data);
}

/// Each member's share of the stored bytes of model "m"'s listed copies is `want`, within four
/// standard deviations of where hashing would put that share of the copies (member ids are
/// random, so the spread is: about 10% of a fifth with a few thousand copies).
fn assert_shares(paths: &[PathBuf], want: &[f64]) {
    let m = manifest_json(&paths[0], "m");
    let ids: Vec<String> = paths.iter().map(|p| member_id(p).0).collect();
    let mut bytes = vec![0u64; paths.len()];
    let mut copies = 0u64;
    for c in m["files"][0]["chunks"].as_array().unwrap() {
        for id in c["members"].as_array().unwrap() {
            let i = ids.iter().position(|x| x == id.as_str().unwrap()).unwrap();
            bytes[i] += c["stored_len"].as_u64().unwrap();
            copies += 1;
        }
    }
    let total: u64 = bytes.iter().sum();
    for (b, w) in bytes.iter().zip(want) {
        let share = *b as f64 / total as f64;
        let spread = 4.0 * (w * (1.0 - w) / copies as f64).sqrt();
        assert!(
            (share - w).abs() <= spread,
            "bytes per member {bytes:?}, shares wanted {want:?} (within {spread:.3})"
        );
    }
}

/// Kills `shardfs ARGS` ten times, each once `progress()` has moved by `step`, running
/// `after` after each kill; how many kills landed before the command finished.
fn kill_ten_times(
    args: &[&str],
    progress: &dyn Fn() -> usize,
    step: usize,
    after: &dyn Fn(),
) -> usize {
    (0..10)
        .map(|_| {
            let landed = kill_after(args, progress, step);
            after();
            usize::from(landed)
        })
        .sum()
}

#[test]
fn rebalance_member_remove_and_gc_killed_at_ten_moments_each_finish_on_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut paths = members(d, 3);
    let store = store_arg(&paths);
    let mut rng = Rng::new(13);
    // x is large: gc deletes thousands of files a second, so its kills need many to land among.
    let (m, x) = (rng.floats(36 << 20), rng.floats(48 << 20));
    for (name, data) in [("m", &m), ("x", &x)] {
        let src = d.join(format!("{name}.bin"));
        fs::write(&src, data).unwrap();
        pack(&src, &store, &["--replicas", "2", "--chunk-size", "64KiB"]);
    }
    let all_files = |paths: &[PathBuf]| paths.iter().map(|p| chunk_files(p).len()).sum::<usize>();
    let exact = |store: &str| {
        assert!(export(store, "m", None) == m, "m differs");
    };

    // Rebalance onto a fourth member, killed as it copies.
    let new = d.join("disk3");
    ok(&["member", "add", "--store", &store, new.to_str().unwrap()]);
    paths.push(new.clone());
    let four = store_arg(&paths);
    let after = |store: &str| {
        exact(store);
        let v = verify(store);
        assert_eq!(v["ok"], true, "{v}");
    };
    let landed = kill_ten_times(
        &["rebalance", "--store", &four],
        &|| chunk_files(&new).len(),
        25,
        &|| after(&four),
    );
    assert!(landed >= 8, "only {landed} kills landed during rebalance");
    ok(&["rebalance", "--store", &four]);
    assert_eq!(verify(&four)["ok"], true);
    fully_replicated(&paths, "m", 2);

    // Drain the first member, killed as it copies.
    let gone = paths[0].clone();
    let rest: Vec<PathBuf> = paths[1..].to_vec();
    let landed = kill_ten_times(
        &["member", "remove", "--store", &four, gone.to_str().unwrap()],
        &|| all_files(&rest),
        25,
        &|| after(&four),
    );
    assert!(
        landed >= 8,
        "only {landed} kills landed during member remove"
    );
    ok(&["member", "remove", "--store", &four, gone.to_str().unwrap()]);
    let three = store_arg(&rest);
    assert_eq!(verify(&three)["ok"], true);
    fully_replicated(&rest, "m", 2);
    exact(&three);

    // Retire x and collect its chunks, killed as it deletes.
    ok(&["rm", "--store", &three, "--name", "x"]);
    let landed = kill_ten_times(
        &["gc", "--store", &three, "--min-age", "1ms"],
        &|| all_files(&rest),
        10,
        &|| after(&three),
    );
    assert!(landed >= 8, "only {landed} kills landed during gc");
    let r = gc(&three);
    assert_eq!(verify(&three)["ok"], true);
    exact(&three);
    // Only m's listed copies are left (the drained member's old files excepted).
    assert_eq!(all_files(&rest), 2 * 576, "{r}");
}
