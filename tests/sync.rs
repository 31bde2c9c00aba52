//! Keeping the copies true: `repair` after a lost disk, flipped bytes and a member that missed a
//! re-pack, while a mount serves readers that compare every byte; and `repair` killed at many
//! moments. Real files, real mounts, bytes compared.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn verify(store: &str) -> serde_json::Value {
    let out = run(&["verify", "--store", store, "--json"]);
    let r = json(&out);
    assert_eq!(out.status.code(), Some(if r["ok"] == true { 0 } else { 1 }));
    r
}

fn repair(store: &str) -> serde_json::Value {
    let out = run(&["repair", "--store", store, "--json"]);
    let r = json(&out);
    assert!(
        out.status.success(),
        "repair failed: {r}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    r
}

/// Every chunk of `model`'s manifest (read from `member`) is listed on `replicas` distinct
/// members, each holding the chunk file.
fn fully_replicated(members: &[PathBuf], model: &str, replicas: usize) {
    let m = manifest_json(&members[0], model);
    let ids: Vec<(String, &PathBuf)> = members
        .iter()
        .map(|p| {
            let info: serde_json::Value =
                serde_json::from_slice(&fs::read(p.join("shardfs-store.json")).unwrap()).unwrap();
            (info["member_id"].as_str().unwrap().to_string(), p)
        })
        .collect();
    for f in m["files"].as_array().unwrap() {
        for c in f["chunks"].as_array().unwrap() {
            let listed: Vec<&str> = c["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let mut distinct = listed.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), replicas, "chunk {}: {listed:?}", c["hash"]);
            for id in listed {
                let (_, dir) = ids.iter().find(|(i, _)| i == id).unwrap();
                let hex = c["hash"].as_str().unwrap();
                assert!(
                    dir.join("chunks").join(&hex[..2]).join(hex).exists(),
                    "chunk {hex} listed on {id} but not there"
                );
            }
        }
    }
}

/// A mount with 8 readers re-reading its files and comparing every byte, until stopped.
struct Readers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    bad: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    rounds: Arc<AtomicU64>,
}

impl Readers {
    fn start(files: Vec<(PathBuf, Arc<Vec<u8>>)>) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let (bad, errors, rounds) = (Arc::default(), Arc::default(), Arc::default());
        let threads = (0..8)
            .map(|i| {
                let (stop, bad, errors, rounds): (
                    Arc<AtomicBool>,
                    Arc<AtomicU64>,
                    Arc<AtomicU64>,
                    Arc<AtomicU64>,
                ) = (
                    stop.clone(),
                    Arc::clone(&bad),
                    Arc::clone(&errors),
                    Arc::clone(&rounds),
                );
                let files = files.clone();
                std::thread::spawn(move || {
                    let mut n = i;
                    while !stop.load(Ordering::SeqCst) {
                        let (path, want) = &files[n % files.len()];
                        n += 1;
                        // O_DIRECT: every read reaches the daemon, not the page cache.
                        let got = read_direct(path);
                        match got {
                            Ok(b) if b == **want => {}
                            Ok(_) => {
                                bad.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => {
                                errors.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        rounds.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Readers {
            stop,
            threads,
            bad,
            errors,
            rounds,
        }
    }

    /// Stops the readers once each has read a few more times; fails on any wrong byte or error.
    fn finish(self) {
        let target = self.rounds.load(Ordering::SeqCst) + 16;
        while self.rounds.load(Ordering::SeqCst) < target {
            std::thread::yield_now();
        }
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        assert_eq!(
            self.bad.load(Ordering::SeqCst),
            0,
            "readers got wrong bytes"
        );
        assert_eq!(self.errors.load(Ordering::SeqCst), 0, "readers got errors");
    }
}

fn read_direct(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Three members, replicas 2, a model `m` of two files; mounted with readers running.
struct Fixture {
    dir: tempfile::TempDir,
    members: Vec<PathBuf>,
    store: String,
    files: Vec<Arc<Vec<u8>>>,
}

impl Fixture {
    fn new(seed: u64, mib: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let members = members(dir.path(), 3);
        let store = store_arg(&members);
        let mut rng = Rng::new(seed);
        let files: Vec<Arc<Vec<u8>>> = (0..2).map(|_| Arc::new(rng.floats(mib << 20))).collect();
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        for (i, f) in files.iter().enumerate() {
            fs::write(src.join(format!("{i}.bin")), &**f).unwrap();
        }
        pack(
            &src,
            &store,
            &["--replicas", "2", "--chunk-size", "64KiB", "--name", "m"],
        );
        Fixture {
            dir,
            members,
            store,
            files,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn mount_with_readers(&self) -> (Mounted, Readers) {
        let m = Mounted::new(
            &self.store,
            &self.path("mnt"),
            &self.path("state"),
            &["--name", "m", "--cache-size", "4MiB"],
        );
        let files = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (m.dir.join(format!("{i}.bin")), f.clone()))
            .collect();
        (m, Readers::start(files))
    }

    fn exact(&self) {
        for (i, f) in self.files.iter().enumerate() {
            assert!(
                export(&self.store, "m", Some(&format!("{i}.bin"))) == **f,
                "{i}.bin differs"
            );
        }
    }
}

#[test]
fn a_lost_disk_is_refilled_while_a_mount_serves_readers() {
    let fx = Fixture::new(1, 3);
    let (mount, readers) = fx.mount_with_readers();
    let lost = &fx.members[1];
    let held = chunk_files(lost).len();
    assert!(held > 20);
    for f in chunk_files(lost) {
        fs::remove_file(f).unwrap();
    }
    let before = verify(&fx.store);
    assert_eq!(before["ok"], false);
    let kinds: Vec<&str> = before["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"missing") && kinds.contains(&"under-replicated"),
        "{kinds:?}"
    );
    // A dry run changes nothing.
    let dry = json(&run(&[
        "repair",
        "--store",
        &fx.store,
        "--dry-run",
        "--json",
    ]));
    assert_eq!(dry["replicas_recreated"].as_u64().unwrap() as usize, held);
    assert_eq!(chunk_files(lost).len(), 0);
    let r = repair(&fx.store);
    assert_eq!(r["ok"], true);
    assert_eq!(
        r["replicas_recreated"].as_u64().unwrap() as usize,
        held,
        "{r}"
    );
    assert!(r["bytes_copied"].as_u64().unwrap() > 0);
    assert_eq!(verify(&fx.store)["ok"], true);
    fully_replicated(&fx.members, "m", 2);
    fx.exact();
    // Nothing left to do.
    let again = repair(&fx.store);
    assert_eq!(again["replicas_recreated"], 0, "{again}");
    assert_eq!(again["manifests_synced"], 0, "{again}");
    readers.finish();
    assert_eq!(mount.status()["errors"], 0);
}

#[test]
fn flipped_bytes_on_two_members_are_replaced() {
    let fx = Fixture::new(2, 2);
    let (mount, readers) = fx.mount_with_readers();
    // Three chunk files on each of two members, never both replicas of one chunk.
    let mut flipped = 0;
    let mut names = std::collections::HashSet::new();
    for member in &fx.members[..2] {
        let victims: Vec<PathBuf> = chunk_files(member)
            .into_iter()
            .filter(|f| !names.contains(f.file_name().unwrap()))
            .step_by(5)
            .take(3)
            .collect();
        names.extend(victims.iter().map(|f| f.file_name().unwrap().to_owned()));
        for f in victims {
            let mut b = fs::read(&f).unwrap();
            let at = b.len() - 1;
            b[at] ^= 0xff;
            fs::write(&f, b).unwrap();
            flipped += 1;
        }
    }
    assert_eq!(verify(&fx.store)["ok"], false);
    let r = repair(&fx.store);
    assert_eq!(r["corrupt_replaced"].as_u64().unwrap(), flipped, "{r}");
    assert_eq!(verify(&fx.store)["ok"], true);
    fully_replicated(&fx.members, "m", 2);
    fx.exact();
    readers.finish();
    assert_eq!(mount.status()["errors"], 0);
}

#[test]
fn a_member_offline_during_a_repack_gets_the_new_manifest() {
    let fx = Fixture::new(3, 1);
    let (mount, readers) = fx.mount_with_readers();
    // The third member is offline while the model is packed again with other bytes.
    let v2 = Rng::new(33).floats(1 << 20);
    let src2 = fx.path("v2");
    fs::create_dir_all(&src2).unwrap();
    fs::write(src2.join("0.bin"), &v2).unwrap();
    let two = store_arg(&fx.members[..2]);
    pack(
        &src2,
        &two,
        &["--replicas", "2", "--chunk-size", "64KiB", "--name", "m"],
    );
    let stale = verify(&fx.store);
    assert!(
        stale["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "manifest"),
        "{stale}"
    );
    let r = repair(&fx.store);
    assert_eq!(r["manifests_synced"].as_u64().unwrap(), 1, "{r}");
    assert_eq!(verify(&fx.store)["ok"], true);
    // Every member order gives the new version; with the third member alone too.
    for order in [
        store_arg(&[
            fx.members[2].clone(),
            fx.members[0].clone(),
            fx.members[1].clone(),
        ]),
        store_arg(&[
            fx.members[1].clone(),
            fx.members[2].clone(),
            fx.members[0].clone(),
        ]),
    ] {
        assert!(export(&order, "m", Some("0.bin")) == v2);
        let ls = json(&ok(&["ls", "--store", &order, "--json"]));
        assert_eq!(
            ls["models"][0]["files"].as_array().unwrap().len(),
            1,
            "{ls}"
        );
    }
    let m3 = manifest_json(&fx.members[2], "m");
    assert_eq!(m3["version"], manifest_json(&fx.members[0], "m")["version"]);
    // The mount still serves the version it opened (live updates are not its business here).
    readers.finish();
    assert_eq!(mount.status()["errors"], 0);
}

#[test]
fn repair_killed_at_many_moments_finishes_on_a_rerun() {
    let fx = Fixture::new(4, 4);
    let lost = &fx.members[2];
    let mut killed_midway = 0;
    for attempt in 0..10usize {
        for f in chunk_files(lost) {
            fs::remove_file(f).unwrap();
        }
        let mut child = std::process::Command::new(bin())
            .args(["repair", "--store", &fx.store])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let target = 1 + attempt * 9;
        while chunk_files(lost).len() < target && child.try_wait().unwrap().is_none() {
            std::thread::yield_now();
        }
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        killed_midway += usize::from(!finished);
        // Nothing is lost: every byte still reads back.
        fx.exact();
        let stray: Vec<PathBuf> = chunk_files(lost)
            .into_iter()
            .filter(|f| f.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty(), "temporary files in chunks/: {stray:?}");
    }
    assert!(
        killed_midway >= 5,
        "only {killed_midway} kills landed during a repair"
    );
    let r = repair(&fx.store);
    assert_eq!(r["ok"], true);
    assert_eq!(verify(&fx.store)["ok"], true);
    fully_replicated(&fx.members, "m", 2);
    fx.exact();
}

#[test]
fn a_chunk_with_no_good_replica_is_named_with_its_bytes() {
    let fx = Fixture::new(5, 1);
    // Delete every replica of one chunk.
    let m = manifest_json(&fx.members[0], "m");
    let chunk = &m["files"][0]["chunks"][3];
    let hex = chunk["hash"].as_str().unwrap();
    for member in &fx.members {
        let _ = fs::remove_file(member.join("chunks").join(&hex[..2]).join(hex));
    }
    let out = run(&["repair", "--store", &fx.store]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let start = chunk["offset"].as_u64().unwrap();
    let end = start + chunk["len"].as_u64().unwrap();
    assert!(
        text.contains(&format!("file 0.bin bytes {start}..{end}")) && text.contains(hex),
        "{text}"
    );
    assert!(text.contains("no good replica left"), "{text}");
}

#[test]
fn a_lost_disk_replaced_by_an_empty_one_is_refilled() {
    let fx = Fixture::new(6, 2);
    let (mount, readers) = fx.mount_with_readers();
    // The disk dies: its directory is gone, an empty one is mounted in its place elsewhere.
    let lost = fx.members[1].clone();
    let before = json(&ok(&["member", "list", "--store", &fx.store, "--json"]));
    let lost_id = before
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["location"] == lost.to_str().unwrap())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_dir_all(&lost).unwrap();
    let fresh = fx.path("fresh-disk");
    fs::create_dir_all(&fresh).unwrap();
    let rest = store_arg(&[fx.members[0].clone(), fx.members[2].clone()]);
    // Still readable members cannot be replaced; a non-empty new place is refused.
    fails(
        &[
            "member",
            "replace",
            "--store",
            &fx.store,
            fx.members[0].to_str().unwrap(),
            fresh.to_str().unwrap(),
        ],
        "still readable",
    );
    fails(
        &[
            "member",
            "replace",
            "--store",
            &rest,
            lost.to_str().unwrap(),
            fx.members[2].to_str().unwrap(),
        ],
        "already a member",
    );
    ok(&[
        "member",
        "replace",
        "--store",
        &rest,
        lost.to_str().unwrap(),
        fresh.to_str().unwrap(),
    ]);
    let now = store_arg(&[fx.members[0].clone(), fresh.clone(), fx.members[2].clone()]);
    let listed = json(&ok(&["member", "list", "--store", &now, "--json"]));
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == lost_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["location"], fresh.to_str().unwrap(), "{listed}");
    assert_eq!(row["health"], "up");
    let r = repair(&now);
    assert!(r["replicas_recreated"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(verify(&now)["ok"], true);
    fully_replicated(
        &[fx.members[0].clone(), fresh.clone(), fx.members[2].clone()],
        "m",
        2,
    );
    for (i, f) in fx.files.iter().enumerate() {
        assert!(export(&now, "m", Some(&format!("{i}.bin"))) == **f);
    }
    readers.finish();
    assert_eq!(mount.status()["errors"], 0);
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
    ok(&[
        "member",
        "add",
        "--store",
        &fx.store,
        d3.to_str().unwrap(),
        "--weight",
        "2",
    ]);
    let four = format!("{},{}", fx.store, d3.display());
    ok(&[
        "member",
        "set-weight",
        "--store",
        &four,
        d3.to_str().unwrap(),
        "3",
    ]);
    let rows = json(&ok(&["member", "list", "--store", &four, "--json"]));
    let added = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["location"] == d3.to_str().unwrap())
        .unwrap()
        .clone();
    assert_eq!(
        (added["index"].as_u64(), added["weight"].as_f64()),
        (Some(3), Some(3.0)),
        "{rows}"
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
    {
        let v = verify(&four);
        assert_eq!(v["ok"], true, "{v}");
    }
    let rows = json(&ok(&["member", "list", "--store", &rest, "--json"]));
    let retired = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["location"] == gone.to_str().unwrap())
        .unwrap()
        .clone();
    assert_eq!(retired["health"], "retired", "{rows}");
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

fn chunk_bytes(members: &[PathBuf]) -> u64 {
    members
        .iter()
        .flat_map(|m| chunk_files(m))
        .map(|f| fs::metadata(f).unwrap().len())
        .sum()
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
    let names: Vec<&str> = ls["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
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
    let r = json(&ok(&[
        "gc",
        "--store",
        &store,
        "--min-age",
        "1ms",
        "--json",
    ]));
    assert_eq!(r["chunk_files_deleted"], dry["chunk_files_deleted"]);
    let after = chunk_bytes(&paths);
    assert_eq!(before - after, r["bytes_returned"].as_u64().unwrap(), "{r}");
    // o.bin's 16 chunks x 2 replicas went; nothing b or c uses did.
    assert_eq!(r["chunk_files_deleted"], 32, "{r}");
    assert_eq!(verify(&store)["ok"], true);
    assert!(export(&store, "b", Some("s.bin")) == shared);
    assert!(export(&store, "c", Some("x.bin")) == other);
    let again = json(&ok(&[
        "gc",
        "--store",
        &store,
        "--min-age",
        "1ms",
        "--json",
    ]));
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
    // A new version replaces the one the mount serves.
    let v2 = rng.floats(2 << 20);
    fs::write(&src, &v2).unwrap();
    pack(&src, &store, &["--replicas", "2", "--chunk-size", "64KiB"]);
    let r = json(&ok(&[
        "gc",
        "--store",
        &store,
        "--min-age",
        "1ms",
        "--json",
    ]));
    assert_eq!(r["live_leases"], 1, "{r}");
    assert_eq!(r["chunk_files_deleted"], 0, "{r}");
    assert!(r["kept_for_leases"].as_u64().unwrap() >= 64, "{r}");
    assert!(
        read_direct(&mount.dir.join("m.bin")).unwrap() == v1,
        "the mount lost its version"
    );
    assert!(mount.unmount().status.success());
    let r = json(&ok(&[
        "gc",
        "--store",
        &store,
        "--min-age",
        "1ms",
        "--json",
    ]));
    assert_eq!(r["live_leases"], 0, "{r}");
    assert_eq!(r["chunk_files_deleted"], 64, "{r}");
    assert!(export(&store, "m", None) == v2);
    // A gc beside a running pack is refused by the pack's lock, or finds nothing of it to take.
    let v3 = rng.floats(24 << 20);
    fs::write(&src, &v3).unwrap();
    let child = std::process::Command::new(bin())
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
    let r = json(&ok(&["rebalance", "--store", &four, "--json"]));
    assert_eq!(dry["replicas_moved"], r["replicas_moved"]);
    let share = r["replicas_moved"].as_f64().unwrap() / r["replicas"].as_f64().unwrap();
    // 1152 chunks x 2 replicas: a quarter moves, give or take 0.05 (about five standard
    // deviations).
    assert!(
        (0.20..=0.30).contains(&share),
        "moved {share:.3} of the replicas: {r}"
    );
    // The mount still reads its generation: the old copies stay until it is gone.
    assert!(r["old_copies_kept"].as_u64().unwrap() > 0, "{r}");
    readers.finish();
    assert_eq!(mount.status()["errors"], 0);
    assert!(mount.unmount().status.success());
    let r = json(&ok(&["rebalance", "--store", &four, "--json"]));
    assert_eq!(r["replicas_moved"], 0, "{r}");
    assert!(r["old_copies_deleted"].as_u64().unwrap() > 0, "{r}");
    // Exactly the listed copies are left: two per chunk.
    let files: usize = paths.iter().map(|p| chunk_files(p).len()).sum();
    assert_eq!(files, 2 * 1152);
    assert_eq!(verify(&four)["ok"], true);
    fully_replicated(&paths, "m", 2);
    assert!(export(&four, "m", None) == *data);
    // Bytes per member within 10% of their share (equal weights: a quarter each), counting
    // the copies the manifest lists.
    let m = manifest_json(&paths[0], "m");
    let ids: Vec<String> = paths
        .iter()
        .map(|p| {
            let info: serde_json::Value =
                serde_json::from_slice(&fs::read(p.join("shardfs-store.json")).unwrap()).unwrap();
            info["member_id"].as_str().unwrap().to_string()
        })
        .collect();
    let mut bytes = vec![0u64; 4];
    for c in m["files"][0]["chunks"].as_array().unwrap() {
        for id in c["members"].as_array().unwrap() {
            let i = ids.iter().position(|x| x == id.as_str().unwrap()).unwrap();
            bytes[i] += c["stored_len"].as_u64().unwrap();
        }
    }
    let total: u64 = bytes.iter().sum();
    for b in &bytes {
        let share = *b as f64 / total as f64;
        assert!(
            (0.225..=0.275).contains(&share),
            "bytes per member {bytes:?}"
        );
    }
}

/// Starts `shardfs ARGS`, waits until `progress()` has grown by `step` (or the command ended),
/// kills it with SIGKILL; true when the kill landed before the command finished.
fn kill_after(args: &[&str], progress: &dyn Fn() -> usize, step: usize) -> bool {
    let start = progress();
    let mut child = std::process::Command::new(bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while progress().abs_diff(start) < step && child.try_wait().unwrap().is_none() {
        std::thread::yield_now();
    }
    let finished = child.try_wait().unwrap().is_some();
    child.kill().ok();
    child.wait().unwrap();
    !finished
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
    let mut landed = 0;
    for _ in 0..10 {
        landed += usize::from(kill_after(
            &["rebalance", "--store", &four],
            &|| chunk_files(&new).len(),
            25,
        ));
        exact(&four);
        let v = verify(&four);
        assert_eq!(v["ok"], true, "{v}");
    }
    assert!(landed >= 8, "only {landed} kills landed during rebalance");
    ok(&["rebalance", "--store", &four]);
    assert_eq!(verify(&four)["ok"], true);
    fully_replicated(&paths, "m", 2);

    // Drain the first member, killed as it copies.
    let gone = paths[0].clone();
    let rest: Vec<PathBuf> = paths[1..].to_vec();
    let mut landed = 0;
    for _ in 0..10 {
        landed += usize::from(kill_after(
            &["member", "remove", "--store", &four, gone.to_str().unwrap()],
            &|| all_files(&rest),
            25,
        ));
        exact(&four);
        assert_eq!(verify(&four)["ok"], true);
    }
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
    let mut landed = 0;
    for _ in 0..10 {
        landed += usize::from(kill_after(
            &["gc", "--store", &three, "--min-age", "1ms"],
            &|| all_files(&rest),
            10,
        ));
        exact(&three);
        assert_eq!(verify(&three)["ok"], true);
    }
    assert!(landed >= 8, "only {landed} kills landed during gc");
    let r = json(&ok(&[
        "gc",
        "--store",
        &three,
        "--min-age",
        "1ms",
        "--json",
    ]));
    assert_eq!(verify(&three)["ok"], true);
    exact(&three);
    // Only m's listed copies are left (the drained member's old files excepted).
    assert_eq!(all_files(&rest), 2 * 576, "{r}");
}
