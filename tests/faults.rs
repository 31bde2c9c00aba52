//! Damage and bad input: lost members, flipped bytes, corrupt metadata, wrong arguments, and a
//! pack killed at random moments. Reads must stay exact or fail loudly; nothing may panic.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const CS: usize = 64 * 1024;

fn setup(
    n_members: usize,
    replicas: &str,
    data: &[u8],
) -> (tempfile::TempDir, Vec<PathBuf>, String) {
    let dir = tempfile::tempdir().unwrap();
    let paths = members(dir.path(), n_members);
    let store = store_arg(&paths);
    pack_bytes(
        dir.path(),
        &store,
        "model",
        data,
        &["--chunk-size", "64KiB", "--replicas", replicas],
    );
    (dir, paths, store)
}

#[test]
fn deleted_member_with_replicas_two() {
    let data = Rng::new(10).floats(30 * CS);
    let (_dir, paths, store) = setup(3, "2", &data);
    let lost_chunks = chunk_files(&paths[1]).len();
    assert!(lost_chunks > 0);
    fs::remove_dir_all(&paths[1]).unwrap();
    let out = ok(&["export", "--store", &store, "--name", "model", "-o", "-"]);
    assert!(
        out.stdout == data,
        "export after losing a member must still be exact"
    );
    let report = common::sync::verify(&store);
    assert_eq!(report["ok"], false, "{report}");
    let problems = report["problems"].as_array().unwrap();
    let missing: Vec<_> = problems.iter().filter(|p| p["kind"] == "missing").collect();
    assert_eq!(
        missing.len(),
        lost_chunks,
        "every replica on the lost member is reported: {problems:?}"
    );
    assert!(problems.iter().any(|p| p["kind"] == "member-unavailable"));
    assert!(!problems.iter().any(|p| p["kind"] == "unrecoverable"));
}

#[test]
fn corrupted_chunk_is_reported_exactly_and_export_stays_exact() {
    let data = Rng::new(11).floats(30 * CS);
    let (_dir, paths, store) = setup(3, "2", &data);
    // Damage a chunk whose first (preferred) replica is on member 2, so export meets it.
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(paths[2].join("shardfs-store.json")).unwrap()).unwrap();
    let manifest = manifest_json(&paths[0], "model");
    let primary = manifest["files"][0]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["members"][0] == info["member_id"])
        .expect("member 2 is the primary of some chunk");
    let victim = paths[2]
        .join("chunks")
        .join(&primary["hash"].as_str().unwrap()[..2])
        .join(primary["hash"].as_str().unwrap());
    let mut bytes = fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&victim, &bytes).unwrap();
    let out = ok(&["export", "--store", &store, "--name", "model", "-o", "-"]);
    assert!(out.stdout == data);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed"),
        "the bad replica is reported on stderr"
    );
    let report = common::sync::verify(&store);
    assert_eq!(report["ok"], false, "{report}");
    let problems = report["problems"].as_array().unwrap();
    // The corrupt replica, and its chunk left with one good replica of two.
    assert_eq!(problems.len(), 2, "{problems:?}");
    let p = &problems[0];
    assert_eq!(p["kind"], "corrupt");
    assert_eq!(problems[1]["kind"], "under-replicated");
    assert_eq!(problems[1]["chunk"], p["chunk"]);
    assert_eq!(
        p["chunk"].as_str().unwrap(),
        victim.file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(
        p["member_path"].as_str().unwrap(),
        paths[2].to_str().unwrap()
    );
    assert_eq!(p["len"].as_u64().unwrap() as usize, CS);
    // Plain output names the same chunk and exits 1.
    let text = run(&["verify", "--store", &store]);
    assert_eq!(text.status.code(), Some(1));
    assert!(stdout(&text).contains(victim.file_name().unwrap().to_str().unwrap()));
}

#[test]
fn a_chunk_with_no_good_replica_stops_export_without_wrong_bytes() {
    let data = Rng::new(12).bytes(8 * CS);
    let (dir, paths, store) = setup(1, "1", &data);
    let victim = chunk_files(&paths[0]).into_iter().nth(3).unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    fs::write(&victim, &bytes).unwrap();
    let out_path = dir.path().join("out.bin");
    fails(
        &[
            "export",
            "--store",
            &store,
            "--name",
            "model",
            "-o",
            out_path.to_str().unwrap(),
        ],
        victim.file_name().unwrap().to_str().unwrap(),
    );
    assert!(!out_path.exists(), "a failed export leaves no output file");
    assert_eq!(
        fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("export"))
            .count(),
        0
    );
    let report = common::sync::verify(&store);
    assert_eq!(report["ok"], false, "{report}");
    let kinds = strings(&report["problems"], "kind");
    assert_eq!(kinds, vec!["corrupt", "unrecoverable"]);
}

/// Three members not made yet, and a source file of three chunks.
fn bad_input_store() -> (tempfile::TempDir, Vec<PathBuf>, String, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let paths = members(dir.path(), 3);
    let store = store_arg(&paths);
    let src = dir.path().join("m.bin");
    fs::write(&src, Rng::new(13).bytes(3 * CS)).unwrap();
    (dir, paths, store, src)
}

#[test]
fn bad_pack_arguments_get_one_line_errors_and_make_no_member() {
    let (dir, paths, store, src) = bad_input_store();
    let d = dir.path();
    let s = src.to_str().unwrap();

    fails(
        &[
            "pack",
            d.join("nope.bin").to_str().unwrap(),
            "--store",
            &store,
        ],
        "nope.bin",
    );
    for (flag, value, needle) in [
        ("--chunk-size", "0", "below 64KiB"),
        ("--chunk-size", "1", "below 64KiB"),
        ("--chunk-size", "2GiB", "1 GiB"),
        ("--chunk-size", "lots", "invalid size"),
        ("--replicas", "4", "4 replicas need at least 4 members"),
        ("--name", "../evil", "invalid model name"),
    ] {
        fails(&["pack", s, "--store", &store, flag, value], needle);
    }
    let regular = d.join("plainfile");
    fs::write(&regular, b"x").unwrap();
    fails(
        &[
            "pack",
            s,
            "--store",
            &format!("{},{}", paths[0].display(), regular.display()),
        ],
        "not a directory",
    );
    assert!(!paths[0].exists(), "a refused pack must not create members");
}

#[test]
fn missing_models_and_special_files_get_one_line_errors() {
    let (dir, _, store, src) = bad_input_store();
    let d = dir.path();
    let s = src.to_str().unwrap();
    // An empty file is fine.
    let empty = d.join("empty.bin");
    fs::write(&empty, b"").unwrap();
    ok(&["pack", empty.to_str().unwrap(), "--store", &store]);
    assert_eq!(export(&store, "empty", None), Vec::<u8>::new());
    ok(&["pack", s, "--store", &store, "--replicas", "2"]);

    fails(
        &["export", "--store", &store, "--name", "missing", "-o", "-"],
        "no model named 'missing'",
    );
    fails(
        &["verify", "--store", &store, "--name", "missing"],
        "no model named 'missing'",
    );

    // Special files, links to folders and broken links inside a folder are refused.
    let folder = d.join("folder");
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("ok.bin"), b"fine").unwrap();
    fs::create_dir(folder.join("sub")).unwrap();
    std::os::unix::fs::symlink("sub", folder.join("dir-link")).unwrap();
    fails(
        &["pack", folder.to_str().unwrap(), "--store", &store],
        "symlink to something other than a regular file",
    );
    fs::remove_file(folder.join("dir-link")).unwrap();
    std::os::unix::fs::symlink("nowhere", folder.join("broken")).unwrap();
    fails(
        &["pack", folder.to_str().unwrap(), "--store", &store],
        "symlink that cannot be followed",
    );
    fs::remove_file(folder.join("broken")).unwrap();
    let fifo = folder.join("pipe");
    mkfifo(&fifo);
    fails(
        &["pack", folder.to_str().unwrap(), "--store", &store],
        "special file",
    );
    fails(
        &["pack", fifo.to_str().unwrap(), "--store", &store],
        "not a regular file",
    );
}

#[test]
fn mixed_stores_are_refused_a_new_member_needs_init_and_members_come_in_any_order() {
    let (dir, paths, store, src) = bad_input_store();
    let d = dir.path();
    let s = src.to_str().unwrap();
    ok(&["pack", s, "--store", &store, "--replicas", "2"]);
    // A store of other members mixed in.
    let other = members(&d.join("other"), 1);
    ok(&["pack", s, "--store", &store_arg(&other)]);
    let mixed = format!("{store},{}", other[0].display());
    fails(&["ls", "--store", &mixed], "mixes two stores");
    fails(&["pack", s, "--store", &mixed], "mixes two stores");

    // A new directory joins a store that holds models only with --init.
    let extra = d.join("disk-new");
    let grown = format!("{store},{}", extra.display());
    fails(&["pack", s, "--store", &grown], "--init");
    ok(&[
        "pack",
        s,
        "--store",
        &grown,
        "--init",
        "--name",
        "grown",
        "--replicas",
        "4",
    ]);
    assert_eq!(export(&grown, "grown", None), fs::read(&src).unwrap());

    // Members in any order.
    let shuffled = store_arg(&[
        extra.clone(),
        paths[2].clone(),
        paths[0].clone(),
        paths[1].clone(),
    ]);
    assert_eq!(export(&shuffled, "grown", None), fs::read(&src).unwrap());
}

#[test]
fn unreadable_source_is_refused_before_the_store_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("secret.bin");
    fs::write(&src, b"secret").unwrap();
    let store = store_arg(&members(dir.path(), 1));
    let out = if unsafe { libc::geteuid() } == 0 {
        // root reads anything: run as nobody, for whom a 0600 root file is unreadable.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o600)).unwrap();
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                bin(),
                "pack",
                src.to_str().unwrap(),
                "--store",
                &store,
            ])
            .output()
            .unwrap()
    } else {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&src, fs::Permissions::from_mode(0o000)).unwrap();
        run(&["pack", src.to_str().unwrap(), "--store", &store])
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot read") && stderr.contains("ermission denied"),
        "{stderr}"
    );
    assert!(!dir.path().join("disk0").exists());
}

fn damage(path: &Path, how: &str) {
    let bytes = fs::read(path).unwrap();
    match how {
        "truncate" => fs::write(path, &bytes[..bytes.len() / 2]).unwrap(),
        "flip" => {
            let mut b = bytes.clone();
            let i = b.iter().position(|&c| c.is_ascii_digit()).unwrap();
            b[i] = if b[i] == b'9' { b'8' } else { b[i] + 1 };
            fs::write(path, b).unwrap()
        }
        _ => unreachable!(),
    }
}

#[test]
fn corrupt_metadata_is_reported() {
    let data = Rng::new(14).bytes(2 * CS);
    for how in ["truncate", "flip"] {
        // One member: the manifest's only copy is damaged.
        let (_dir, paths, store) = setup(1, "1", &data);
        damage(&paths[0].join("manifests/model.json"), how);
        fails(
            &["export", "--store", &store, "--name", "model", "-o", "-"],
            "manifest of model 'model' is unreadable",
        );
        // verify reports it as the model's problem (exit 1), not as an error of the store.
        let out = run(&["verify", "--store", &store]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stdout(&out).contains("unreadable"), "{}", stdout(&out));
        // Damaged member file.
        let (_dir, paths, store) = setup(2, "1", &data);
        fs::write(
            paths[1].join("shardfs-store.json"),
            b"{\"format_version\": 1, \"store",
        )
        .unwrap();
        fails(&["ls", "--store", &store], "corrupt shardfs-store.json");
        fails(
            &["pack", "/etc/hostname", "--store", &store],
            "corrupt shardfs-store.json",
        );
    }
    // With three members, one damaged manifest copy is survivable and reported by verify.
    let (_dir, paths, store) = setup(3, "2", &data);
    damage(&paths[0].join("manifests/model.json"), "flip");
    assert_eq!(export(&store, "model", None), data);
    let report = common::sync::verify(&store);
    assert_eq!(report["ok"], false, "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["kind"], "manifest");
}

/// Deletes the chunk files of member `p` that its copy of model `name`'s manifest does not name.
fn remove_unlisted_chunks(p: &Path, name: &str) {
    let manifest = fs::read_to_string(p.join(format!("manifests/{name}.json"))).unwrap();
    for f in chunk_files(p) {
        let file_name = f.file_name().unwrap().to_string_lossy().into_owned();
        if !manifest.contains(&file_name) {
            fs::remove_file(f).unwrap();
        }
    }
}

/// Kills `pack` with SIGKILL at many moments; after each the store verifies, the previous
/// version of the model is intact, and the next pack cleans the leftovers.
#[test]
fn sigkill_during_pack() {
    let dir = tempfile::tempdir().unwrap();
    let paths = members(dir.path(), 3);
    let store = store_arg(&paths);
    let mut rng = Rng::new(15);
    let v1 = rng.floats(40 << 20);
    let src = dir.path().join("model.bin");
    fs::write(&src, &v1).unwrap();
    let pack_args = [
        "pack",
        src.to_str().unwrap(),
        "--store",
        &store,
        "--replicas",
        "2",
        "--chunk-size",
        "1MiB",
    ];
    ok(&pack_args);
    let v2 = rng.floats(40 << 20);
    fs::write(&src, &v2).unwrap();
    let mut killed_midway = 0;
    for attempt in 0..12 {
        // Killed once the pack has written some number of new chunk files.
        let target = 81 + attempt * 7;
        killed_midway += usize::from(common::sync::kill_when(&pack_args, &|| {
            paths.iter().map(|p| chunk_files(p).len()).sum::<usize>() >= target
        }));
        let now = common::sync::one_version_or_the_other(&store, "model", (&v1, &v2), attempt);
        // Start over from v1 for the next attempt.
        if now == v2 {
            fs::write(&src, &v1).unwrap();
            ok(&pack_args);
            fs::write(&src, &v2).unwrap();
        }
        for p in &paths {
            let stray: Vec<PathBuf> = chunk_files(p)
                .into_iter()
                .filter(|f| f.to_string_lossy().ends_with(".tmp"))
                .collect();
            assert!(
                stray.is_empty(),
                "temporary files inside chunks/: {stray:?}"
            );
            // Remove v2's chunks so the next attempt writes them again.
            remove_unlisted_chunks(p, "model");
        }
    }
    assert!(
        killed_midway >= 6,
        "only {killed_midway} kills landed during the pack"
    );
    ok(&pack_args);
    for p in &paths {
        assert_eq!(
            fs::read_dir(p.join("tmp")).unwrap().count(),
            0,
            "leftovers in {}/tmp",
            p.display()
        );
    }
    assert!(export(&store, "model", None) == v2);
    ok(&["verify", "--store", &store]);
}
