//! A real mount's lifecycle: mount and unmount in a loop, a daemon killed with -9 and cleaned up
//! by unmount and status, a renamed binary and SIGTERM, bad mount arguments.

mod common;
use common::*;
use std::fs;

#[test]
fn mount_and_unmount_twenty_times_leave_nothing_behind() {
    let fx = MountFixture::new(1);
    let data = Rng::new(105).bytes(100_000);
    pack_bytes(fx.dir.path(), &fx.store, "m", &data, &[]);
    let mnt = fx.path("mnt");
    for i in 0..20 {
        let m = fx.mount(&["--name", "m"]);
        let pid = m.pid();
        assert!(fs::read(m.dir.join("m.bin")).unwrap() == data, "round {i}");
        let out = m.unmount();
        assert!(
            out.status.success(),
            "unmount {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!is_mounted(&mnt), "still mounted after unmount {i}");
        assert!(
            !process_alive(pid),
            "daemon {pid} still running after unmount {i}"
        );
        std::mem::forget(m);
    }
    let listing = run_in(&fx.state(), &["status", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&listing.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[test]
fn a_killed_daemon_is_cleaned_up_by_unmount_and_by_status() {
    let fx = MountFixture::new(1);
    pack_bytes(
        fx.dir.path(),
        &fx.store,
        "m",
        &Rng::new(105).bytes(100_000),
        &[],
    );
    let mnt = fx.path("mnt");
    // kill -9, then unmount cleans up the stale mount.
    let m = fx.mount(&["--name", "m"]);
    let pid = m.pid();
    kill_and_wait(pid, "-9");
    // A dead daemon's mount answers "not connected" (or "aborted" for a request caught in the kill).
    let dead = fs::metadata(m.dir.join("m.bin"))
        .unwrap_err()
        .raw_os_error();
    assert!(
        dead == Some(libc::ENOTCONN) || dead == Some(libc::ECONNABORTED),
        "{dead:?}"
    );
    let out = m.unmount();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mnt));
    std::mem::forget(m);

    // status shows a dead daemon's mount as stale once, and cleans it up.
    let m = fx.mount(&["--name", "m"]);
    kill_and_wait(m.pid(), "-9");
    let listing = run_in(&fx.state(), &["status", "--json"]);
    let entries: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entries[0]["state"], "stale");
    assert!(!is_mounted(&mnt), "status left the dead mount behind");
    let again = run_in(&fx.state(), &["status", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap(),
        serde_json::json!([])
    );
    std::mem::forget(m);
}

#[test]
fn a_renamed_binary_mounts_live_and_sigterm_unmounts_cleanly() {
    let fx = MountFixture::new(1);
    let data = Rng::new(105).bytes(100_000);
    pack_bytes(fx.dir.path(), &fx.store, "m", &data, &[]);
    let mnt = fx.path("mnt");
    // A binary under another name (a versioned install) runs a live mount that status reports
    // as live, not as a dead daemon to clean up, and that unmounts normally.
    fs::create_dir_all(&mnt).unwrap();
    let renamed = fx.path("sfs-1.2");
    fs::copy(bin(), &renamed).unwrap();
    let with_renamed = |args: &[&str]| run_bin_in(&renamed, &fx.state(), args);
    let store = fx.store.clone();
    let out = with_renamed(&[
        "mount",
        "--store",
        &store,
        mnt.to_str().unwrap(),
        "--name",
        "m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = with_renamed(&["status", "--json"]);
    let entries: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(entries[0]["state"], "live", "{entries}");
    assert!(entries[0]["pid_start"].as_u64().unwrap() > 0, "{entries}");
    assert!(fs::read(mnt.join("m.bin")).unwrap() == data);
    let out = with_renamed(&["unmount", mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mnt));

    // SIGTERM to the daemon unmounts cleanly and removes its state.
    let m = fx.mount(&["--name", "m"]);
    let pid = m.pid();
    kill_and_wait(pid, "-TERM");
    assert!(!is_mounted(&mnt), "SIGTERM left the mount behind");
    let out = run_in(&fx.state(), &["status", mnt.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "state file left behind after SIGTERM"
    );
    std::mem::forget(m);
}

#[test]
fn bad_mount_arguments() {
    let fx = MountFixture::new(1);
    pack_bytes(fx.dir.path(), &fx.store, "m", b"hello", &[]);
    let state = fx.state();
    let check = |args: &[&str], needle: &str| {
        let out = run_in(&state, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: '{err}' lacks '{needle}'");
        assert_eq!(
            err.lines().filter(|l| l.contains("error")).count(),
            1,
            "{err}"
        );
    };
    let missing = fx.path("no-such-dir");
    check(
        &["mount", "--store", &fx.store, missing.to_str().unwrap()],
        "does not exist",
    );
    let file = fx.path("a-file");
    fs::write(&file, b"x").unwrap();
    check(
        &["mount", "--store", &fx.store, file.to_str().unwrap()],
        "not a directory",
    );
    let mnt = fx.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    // A mount that should be refused but is not is detached when the test fails.
    let _unmount = UnmountOnDrop(mnt.clone());
    check(
        &[
            "mount",
            "--store",
            fx.path("nothing-here").to_str().unwrap(),
            mnt.to_str().unwrap(),
        ],
        "no member of the store",
    );
    check(
        &[
            "mount",
            "--store",
            &fx.store,
            mnt.to_str().unwrap(),
            "--name",
            "nope",
        ],
        "no model named 'nope'",
    );
    check(
        &[
            "mount",
            "--store",
            &fx.store,
            mnt.to_str().unwrap(),
            "--cache-size",
            "12",
        ],
        "at least 1MiB",
    );
    let m = fx.mount(&[]);
    check(
        &["mount", "--store", &fx.store, mnt.to_str().unwrap()],
        "already a mount point",
    );
    check(
        &["unmount", fx.path("a-file").to_str().unwrap()],
        "not a shardfs mount",
    );
    drop(m);
    assert!(!is_mounted(&mnt));
}
