//! `repair` after a lost disk (emptied, or replaced by an empty one), flipped bytes and a member
//! that missed a re-pack, while a mount serves readers comparing every byte; a chunk with no
//! good replica left; `repair` killed at many moments. Real files, real mounts, bytes compared.

mod common;

use common::sync::*;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

/// `member replace` of the fixture's second member, `lost`, by `fresh`, run on the others
/// (`rest`); returns the store as it is now.
fn replace_second(fx: &Fixture, rest: &str, lost: &Path, fresh: &Path) -> String {
    let (lost, fresh) = (lost.to_str().unwrap(), fresh.to_str().unwrap());
    ok(&["member", "replace", "--store", rest, lost, fresh]);
    store_arg(&[fx.members[0].clone(), fresh.into(), fx.members[2].clone()])
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
    let kinds = strings(&before["problems"], "kind");
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
    let mut damaged = Vec::new();
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
            fs::write(&f, &b).unwrap();
            damaged.push(b);
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
    // The damaged files were set aside, bytes as they were; gc deletes them.
    let aside = |m: &PathBuf| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = fs::read_dir(m.join("damaged"))
            .map(|d| d.map(|e| fs::read(e.unwrap().path()).unwrap()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut set_aside: Vec<Vec<u8>> = fx.members.iter().flat_map(aside).collect();
    set_aside.sort();
    damaged.sort();
    assert!(set_aside == damaged, "{} set aside", set_aside.len());
    let out = ok(&["gc", "--store", &fx.store, "--min-age", "1ms", "--json"]);
    let g = json(&out);
    assert_eq!(g["stale_files_deleted"].as_u64().unwrap(), flipped, "{g}");
    assert_eq!(g["chunk_files_deleted"], 0, "{g}");
    assert!(fx.members.iter().all(|m| aside(m).is_empty()));
    assert_eq!(verify(&fx.store)["ok"], true);
}

#[test]
fn a_member_offline_during_a_repack_gets_the_new_manifest() {
    let fx = Fixture::new(3, 1);
    // Pinned: the readers expect the version they opened, however long this takes (a live
    // mount would pick up the re-pack at its next refresh).
    let (mount, readers) = fx.mount_with_readers_and(&["--pin"]);
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
        let target = 1 + attempt * 9;
        killed_midway += usize::from(kill_when(&["repair", "--store", &fx.store], &|| {
            chunk_files(lost).len() >= target
        }));
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
    let now = replace_second(&fx, &rest, &lost, &fresh);
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
fn a_live_mount_follows_the_member_list_to_a_replacement() {
    let fx = Fixture::new(15, 2);
    // A disk is lost; the mount starts without it.
    let lost = fx.members[1].clone();
    fs::remove_dir_all(&lost).unwrap();
    let rest = store_arg(&[fx.members[0].clone(), fx.members[2].clone()]);
    let mount = Mounted::new(
        &rest,
        &fx.path("mnt"),
        &fx.path("state"),
        &["--name", "m", "--cache-size", "4MiB", "--no-local-cache"],
    );
    let files = fx
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (mount.dir.join(format!("{i}.bin")), f.clone()))
        .collect();
    let readers = Readers::start(files);
    // Its place is taken and refilled while the mount serves.
    let fresh = fx.path("fresh-disk");
    let now = replace_second(&fx, &rest, &lost, &fresh);
    assert_eq!(repair(&now)["ok"], true);
    // The mount finds the new member in the member list.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s = mount.status();
        if s["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["location"] == fresh.to_str().unwrap())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mount never opened the new member: {s}"
        );
        std::thread::park_timeout(std::time::Duration::from_millis(100));
    }
    // A second disk loses its chunks: what it shared with the lost one now comes from the new one.
    for f in chunk_files(&fx.members[0]) {
        fs::remove_file(f).unwrap();
    }
    for (i, f) in fx.files.iter().enumerate() {
        assert!(
            read_direct(&mount.dir.join(format!("{i}.bin"))).unwrap() == **f,
            "{i}.bin"
        );
    }
    readers.finish();
    assert_eq!(mount.status()["errors"], 0);
}
