//! The edges an operator meets: a source file changing while it is packed, an export
//! interrupted by Ctrl-C or into missing folders, a chunk size too small to be sane, a pack to
//! part of the member list, leases of refused mounts, mount flags a new user gets wrong.
//! (gc, df and the pack lock are in `upkeep.rs`.)

mod common;

use common::*;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_file_that_changes_while_it_is_packed_is_never_published_torn() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = members(d, 2);
    let store = store_arg(&paths);
    let src = d.join("big.bin");
    let original = Rng::new(91).bytes(256 << 20);
    fs::write(&src, &original).unwrap();
    let mut pack = command()
        .args(["pack", src.to_str().unwrap(), "--store", &store])
        .args(["--name", "big", "--chunk-size", "1MiB", "--codec", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // As soon as the pack holds the store's lock (it has looked at the file and is about to
    // read it), the file is changed in the middle and grows at the end (a download still being
    // written, an editor saving over it).
    let started = Instant::now();
    while !paths[0].join("lock").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "pack took no lock"
        );
        if pack.try_wait().unwrap().is_some() {
            let out = pack.wait_with_output().unwrap();
            panic!("pack ended before it was seen: {out:?}");
        }
        std::thread::yield_now();
    }
    let mut f = fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.seek(SeekFrom::Start(200 << 20)).unwrap();
    f.write_all(&[0xAB; 4096]).unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(&[0xCD; 1 << 20]).unwrap();
    drop(f);
    let out = pack.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // Only possible if every byte was read before the change: then it is the original.
        assert!(
            export(&store, "big", None) == original,
            "a torn file was published"
        );
    } else {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("changed while it was packed"), "{err}");
        let listed = stdout(&ok(&["ls", "--store", &store]));
        assert!(!listed.contains("big"), "{listed}");
    }
}

#[test]
fn an_export_interrupted_by_ctrl_c_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 2));
    let data = Rng::new(93).bytes(128 << 20);
    pack_bytes(d, &store, "big", &data, &["--chunk-size", "1MiB"]);
    let out_dir = d.join("out");
    fs::create_dir(&out_dir).unwrap();
    let output = out_dir.join("big.bin");
    let export = command()
        .args(["export", "--store", &store, "--name", "big", "-o"])
        .arg(&output)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The temporary appears beside the output; SIGINT is sent as soon as it is there.
    let started = Instant::now();
    while fs::read_dir(&out_dir).unwrap().next().is_none() {
        assert!(started.elapsed() < Duration::from_secs(120), "no temporary");
        std::thread::yield_now();
    }
    let pid = export.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = export.wait_with_output().unwrap();
    let left: Vec<_> = fs::read_dir(&out_dir).unwrap().collect();
    if out.status.success() {
        // Finished before the signal came: then it is whole.
        assert!(fs::read(&output).unwrap() == data);
    } else {
        assert_eq!(out.status.code(), Some(130), "{out:?}");
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    }
}

#[test]
fn a_chunk_size_below_64kib_is_refused_and_a_pack_to_part_of_the_store_says_so() {
    // `_dir` keeps the members' folder until the test ends.
    let Packed {
        dir: _dir,
        paths,
        store,
        src,
        ..
    } = packed(3, 95, 1 << 20, &["--replicas", "2"]);
    let s = src.to_str().unwrap();
    fails(
        &["pack", s, "--store", &store, "--chunk-size", "1"],
        "below 64KiB",
    );
    // Two of the three members: one line names the one left out, and repair.
    let two = store_arg(&paths[..2]);
    let out = ok(&["pack", s, "--store", &two, "--name", "n"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("left out")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains(&paths[2].display().to_string()) && lines[0].contains("repair"),
        "{err}"
    );
    // With every member given, nothing is said.
    let out = ok(&["pack", s, "--store", &store, "--name", "n"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("left out"));
}

#[test]
fn unknown_member_kinds_and_bad_arguments_are_one_prefixed_line() {
    let dir = tempfile::tempdir().unwrap();
    for spec in ["S3://newbucket/prod", "gs://bucket/models", "s3:/models"] {
        let out = fails(&["ls", "--store", spec], "not a kind of member");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("shardfs: error: "), "{err}");
        assert!(!dir.path().join(spec.split(':').next().unwrap()).exists());
    }
    let out = fails(&["ls"], "--store");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("shardfs: error: the following"));
    // Ages take 0 and days.
    let d = dir.path();
    let store = store_arg(&members(d, 1));
    pack_bytes(d, &store, "m", &Rng::new(97).bytes(100_000), &[]);
    ok(&["gc", "--store", &store, "--min-age", "0", "--dry-run"]);
    ok(&["gc", "--store", &store, "--min-age", "7d", "--dry-run"]);
}

#[test]
fn status_of_a_daemon_that_does_not_answer_says_so_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 1));
    pack_bytes(d, &store, "m", &Rng::new(99).bytes(100_000), &[]);
    let m = Mounted::new(&store, &d.join("mnt"), &d.join("state"), &[]);
    let pid = m.pid().to_string();
    let signal = |s: &str| {
        assert!(
            Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let out = run_in(&m.state_dir, &["status", m.dir.to_str().unwrap()]);
    let json = run_in(&m.state_dir, &["status", m.dir.to_str().unwrap(), "--json"]);
    signal("-CONT");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text.contains("[unresponsive]") && text.contains("did not answer"),
        "{text}"
    );
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["state"], "unresponsive");
    // Answering again, it is live.
    assert_eq!(m.status()["state"], "live");
}

#[test]
fn a_repack_with_another_codec_says_chunks_were_kept_as_stored_and_ls_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 1));
    let data = Rng::new(101).floats(2 << 20);
    let src = pack_bytes(d, &store, "m", &data, &["--codec", "none"]);
    let out = pack(&src, &store, &["--codec", "zstd", "--level", "9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kept as they were"), "{err}");
    let listing: serde_json::Value =
        serde_json::from_slice(&ok(&["ls", "--store", &store, "--json"]).stdout).unwrap();
    let m = &listing["models"][0];
    assert_eq!(m["codec"], "zstd", "{m}");
    let stored = m["stored_codecs"].as_object().unwrap();
    assert_eq!(stored.keys().collect::<Vec<_>>(), vec!["none"], "{m}");
}

fn leases(member: &std::path::Path) -> Vec<String> {
    fs::read_dir(member.join("leases"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn refused_and_killed_mounts_leave_no_lease_behind() {
    let Packed {
        dir, paths, store, ..
    } = packed(2, 103, 100_000, &["--replicas", "2"]);
    let d = dir.path();
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    // A mount that should be refused but is not is detached when the test fails.
    let _unmount = UnmountOnDrop(mnt.clone());
    // A mount refused for a bad metrics address writes no lease.
    let out = run_in(
        &d.join("state"),
        &[
            "mount",
            "--store",
            &store,
            mnt.to_str().unwrap(),
            "--metrics",
            "300.1.1.1:1",
        ],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(paths.iter().all(|p| leases(p).is_empty()));
    // A daemon killed with SIGKILL: `unmount` cleans up, lease included.
    let m = Mounted::new(&store, &mnt, &d.join("state"), &[]);
    assert!(paths.iter().all(|p| leases(p).len() == 1));
    kill_and_wait(m.pid(), "-KILL");
    let out = m.unmount();
    assert!(out.status.success(), "{out:?}");
    for p in &paths {
        assert!(leases(p).is_empty(), "{}: {:?}", p.display(), leases(p));
    }
}

#[test]
fn pack_names_snapshots_after_their_repository_and_says_what_it_replaces_or_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = members(d, 1);
    let store = store_arg(&paths);
    // A Hugging Face cache snapshot is named after its repository, not its revision.
    let repo = d.join("hub/models--acme--tiny-bert");
    let snap = repo.join("snapshots/0123abcd");
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::write(repo.join("blobs/feed"), Rng::new(105).bytes(50_000)).unwrap();
    std::os::unix::fs::symlink("../../blobs/feed", snap.join("model.bin")).unwrap();
    let out = stdout(&pack(&snap, &store, &[]));
    assert!(out.contains("packed tiny-bert "), "{out}");
    // A model of the same name with other files: replaced, and said so.
    let st = d.join("same.safetensors");
    fs::write(&st, Rng::new(106).bytes(50_000)).unwrap();
    let out = pack(&st, &store, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("named .safetensors but its header is not one"),
        "{err}"
    );
    let gg = d.join("same.gguf");
    fs::write(&gg, Rng::new(107).bytes(50_000)).unwrap();
    let out = pack(&gg, &store, &["--lossy", "bf16"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("held other files (same.safetensors)"), "{err}");
    assert!(err.contains("--lossy bf16 changed nothing"), "{err}");
    // A store never packs one of its own members, nor a folder holding one.
    fails(
        &[
            "pack",
            paths[0].to_str().unwrap(),
            "--store",
            &store,
            "--name",
            "x",
        ],
        "one inside the other",
    );
    fails(
        &[
            "pack",
            d.to_str().unwrap(),
            "--store",
            &store,
            "--name",
            "x",
        ],
        "one inside the other",
    );
}

#[test]
fn export_keeps_mtimes_never_widens_a_mode_and_makes_parents_only_when_asked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 1));
    let src = d.join("model");
    fs::create_dir_all(&src).unwrap();
    let when = std::time::UNIX_EPOCH + Duration::new(1_577_934_245, 123_456_789);
    for (name, seed) in [("a.bin", 1), ("b.bin", 2)] {
        let path = src.join(name);
        fs::write(&path, Rng::new(seed).bytes(200_000)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
    pack(&src, &store, &[]);
    let export_to = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["export", "--store", &store, "--name", "model"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", out.to_str().unwrap()]);
        run(&args)
    };
    // One file, a new path: the recorded mtime, to the nanosecond.
    let one = d.join("one.bin");
    assert!(export_to(&one, &["--file", "a.bin"]).status.success());
    assert_eq!(fs::metadata(&one).unwrap().modified().unwrap(), when);
    assert_eq!(
        fs::read(&one).unwrap(),
        fs::read(src.join("a.bin")).unwrap()
    );
    // Over an existing file of mode 0600: replaced, and still 0600, not the recorded 0644.
    let private = d.join("private.bin");
    fs::write(&private, b"old").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(export_to(&private, &["--file", "a.bin"]).status.success());
    let meta = fs::metadata(&private).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 200_000);
    // Every file of the model: mtimes kept.
    let all = d.join("all");
    assert!(export_to(&all, &[]).status.success());
    for name in ["a.bin", "b.bin"] {
        assert_eq!(
            fs::metadata(all.join(name)).unwrap().modified().unwrap(),
            when
        );
    }
    // A missing folder above the output: one line naming it, no temporary named; --parents
    // makes it.
    for extra in [&["--file", "a.bin"][..], &[][..]] {
        let out = d.join("missing").join("deeper").join("x");
        let res = export_to(&out, extra);
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{extra:?}");
        assert!(
            err.contains("missing/deeper does not exist (--parents makes it)")
                && !err.contains("shardfs-export")
                && err.lines().count() == 1,
            "{err}"
        );
        assert!(!d.join("missing").exists());
        let mut with = extra.to_vec();
        with.push("--parents");
        assert!(export_to(&out, &with).status.success(), "{extra:?}");
        assert!(out.exists());
        fs::remove_dir_all(d.join("missing")).unwrap();
    }
}

#[test]
fn mount_flags_a_new_user_gets_wrong_are_one_line_and_relative_members_show_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 2));
    pack_bytes(d, &store, "m", &Rng::new(8).bytes(100_000), &[]);
    let (mnt, state) = (d.join("mnt"), d.join("state"));
    fs::create_dir_all(&mnt).unwrap();
    let mount_in_d = |extra: &[&str]| {
        command()
            .current_dir(d)
            .env("SHARDFS_STATE_DIR", &state)
            .args(["mount", "--store", "disk0,disk1", "mnt", "--name", "m"])
            .args(extra)
            .output()
            .unwrap()
    };
    fs::write(d.join("a-file"), b"").unwrap();
    let _unmount = UnmountOnDrop(mnt.clone());
    for (extra, needle) in [
        (&["--local-cache", "a-file"][..], "a-file: not a directory"),
        (
            &["--cache-size", "1000TiB"][..],
            "more than this machine's memory",
        ),
    ] {
        let out = mount_in_d(extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}");
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.starts_with("shardfs: error:") && first.contains(needle),
            "{err}"
        );
        assert!(!is_mounted(&mnt));
    }
    // Members given relative to the directory the command ran in: status names them absolute.
    assert!(mount_in_d(&[]).status.success());
    let s: serde_json::Value = serde_json::from_slice(
        &run_in(&state, &["status", mnt.to_str().unwrap(), "--json"]).stdout,
    )
    .unwrap();
    let locations = strings(&s["members"], "location");
    let expect: Vec<String> = members(d, 2)
        .iter()
        .map(|p| fs::canonicalize(p).unwrap().display().to_string())
        .collect();
    assert_eq!(locations, expect, "{s}");
    assert!(
        run_in(&state, &["unmount", mnt.to_str().unwrap()])
            .status
            .success()
    );
}

#[test]
fn a_member_left_out_is_named_by_where_it_lives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = members(d, 2);
    let store = store_arg(&paths);
    // Eight chunks on two members in turn, one replica each: both members hold some. (By hash
    // all eight land on the first member once in 256 packs, member ids being random, and a
    // mount that needs nothing of the second then works.)
    pack_bytes(
        d,
        &store,
        "m",
        &Rng::new(9).bytes(2 << 20),
        &["--chunk-size", "256KiB", "--placement", "round-robin"],
    );
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let _unmount = UnmountOnDrop(mnt.clone());
    let out = run_in(
        &d.join("state"),
        &[
            "mount",
            "--store",
            paths[0].to_str().unwrap(),
            mnt.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let missing = format!("the member at {} (index 1, id ", paths[1].display());
    assert!(err.contains(&missing) && err.lines().count() == 1, "{err}");
}
