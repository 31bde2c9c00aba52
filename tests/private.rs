//! What other users of the host can reach: the modes of everything shardfs writes (member files
//! and folders, local-tier copies, the state folder and its log), an unprivileged user against
//! an `--allow-other` mount (recorded modes enforced, control attributes refused), and exports
//! into a world-writable sticky folder where another user planted links.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Every entry under `dir` (links not followed) whose permission bits differ from 0700 for a
/// folder or 0600 for a file, as `path mode`.
fn not_private(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let mode = meta.mode() & 0o7777;
            let want = if meta.is_dir() { 0o700 } else { 0o600 };
            if mode != want {
                out.push(format!("{} {mode:o}", e.path().display()));
            }
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Runs `program args` as user and group 65534 (nobody).
fn as_nobody(program: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
        .args(args)
        .output()
        .expect("setpriv runs")
}

/// Lets others walk down to `dir` (tempfile makes its folders 0700).
fn open_path_to(dir: &Path) {
    let mut p = dir.to_path_buf();
    loop {
        if p == Path::new("/") || p == Path::new("/tmp") {
            break;
        }
        let mode = fs::metadata(&p).unwrap().mode() & 0o7777;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode | 0o711)).unwrap();
        if !p.pop() {
            break;
        }
    }
}

#[test]
fn members_tier_and_state_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ms = members(d, 2);
    let store = store_arg(&ms);
    let data = Rng::new(41).bytes(3 << 20);
    pack_bytes(
        d,
        &store,
        "m",
        &data,
        &["--replicas", "2", "--chunk-size", "1MiB"],
    );
    for m in &ms {
        assert_eq!(fs::metadata(m).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(not_private(m), Vec::<String>::new());
    }
    let tier = d.join("tier");
    let state = d.join("state");
    let mnt = d.join("mnt");
    let m = Mounted::new(
        &store,
        &mnt,
        &state,
        &["--name", "m", "--local-cache", tier.to_str().unwrap()],
    );
    assert_eq!(fs::read(mnt.join("m.bin")).unwrap(), data);
    // Wait until the tier holds its copy, whole.
    let start = Instant::now();
    loop {
        let s = m.status();
        if s["tier"]["copies"].as_u64() == Some(1) && s["tier"]["filling"] == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no tier copy: {s}"
        );
        std::thread::yield_now();
    }
    assert_eq!(fs::metadata(&tier).unwrap().mode() & 0o7777, 0o700);
    assert!(fs::read_dir(&tier).unwrap().count() > 0);
    assert_eq!(not_private(&tier), Vec::<String>::new());
    assert_eq!(fs::metadata(&state).unwrap().mode() & 0o7777, 0o700);
    let logs: Vec<PathBuf> = fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert!(!logs.is_empty());
    for log in logs {
        assert_eq!(fs::metadata(&log).unwrap().mode() & 0o777, 0o600, "{log:?}");
    }
    assert!(m.unmount().status.success());
}

#[test]
fn another_user_gets_only_what_the_recorded_modes_allow() {
    if !is_root() {
        eprintln!("skipped: needs root to mount with --allow-other and to switch users");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 1));
    let src = d.join("model");
    fs::create_dir_all(&src).unwrap();
    let secret = Rng::new(43).bytes(200 << 10);
    let public = Rng::new(44).bytes(100 << 10);
    fs::write(src.join("secret.bin"), &secret).unwrap();
    fs::write(src.join("config.json"), &public).unwrap();
    fs::set_permissions(src.join("secret.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(src.join("config.json"), fs::Permissions::from_mode(0o664)).unwrap();
    pack(&src, &store, &["--name", "m"]);
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    open_path_to(&mnt);
    let m = Mounted::new(
        &store,
        &mnt,
        &d.join("state"),
        &["--name", "m", "--allow-other"],
    );
    let at = |f: &str| mnt.join(f).to_str().unwrap().to_string();
    // Root (the mounting user) reads both; write bits never show.
    assert_eq!(fs::read(mnt.join("secret.bin")).unwrap(), secret);
    assert_eq!(
        fs::metadata(mnt.join("config.json")).unwrap().mode() & 0o777,
        0o444
    );
    assert_eq!(
        fs::metadata(mnt.join("secret.bin")).unwrap().mode() & 0o777,
        0o400
    );
    // nobody reads the world-readable file and is refused the 0600 one.
    let out = as_nobody("cat", &[&at("config.json")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, public);
    let out = as_nobody("cat", &[&at("secret.bin")]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    // The control attributes answer root and the mounting user only.
    let root_dir = mnt.to_str().unwrap();
    for attr in ["user.shardfs.status", "user.shardfs.refresh"] {
        let out = as_nobody("getfattr", &["-n", attr, root_dir]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Permission denied"),
            "{attr}: {err}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("store"));
    }
    assert!(
        m.status()["pid"].as_u64().is_some(),
        "root still reads the status"
    );
    assert!(m.unmount().status.success());
}

/// Links to `victim` planted in `shared` by another user, at `out.bin` and at every name an
/// export's temporary of `out.bin` or `fresh.bin` would have taken with a predictable name.
fn plant_links_as_nobody(shared: &Path, victim: &Path) {
    let next_pid: u32 = fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut names = vec!["out.bin".to_string()];
    for out in ["out.bin", "fresh.bin"] {
        names.extend((next_pid..next_pid + 3000).map(|p| format!(".{out}.shardfs-export-{p}")));
    }
    let mut args = vec![
        "-e",
        "chdir shift or die; my $to = shift; symlink($to, $_) or die for @ARGV",
        shared.to_str().unwrap(),
        victim.to_str().unwrap(),
    ];
    args.extend(names.iter().map(String::as_str));
    let out = as_nobody("perl", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn export_into_a_shared_sticky_folder_never_writes_through_planted_links() {
    if !is_root() {
        eprintln!("skipped: needs root to plant another user's links");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 1));
    let data = Rng::new(45).bytes(300 << 10);
    let src = d.join("w.bin");
    fs::write(&src, &data).unwrap();
    // A mode no export should carry: setuid and world-writable.
    fs::set_permissions(&src, fs::Permissions::from_mode(0o4777)).unwrap();
    pack(&src, &store, &["--name", "w"]);
    let victim = d.join("victim");
    fs::write(&victim, b"root's file").unwrap();
    let shared = d.join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    open_path_to(&shared);
    // Another user plants links at the output name and at every name a predictable temporary
    // could take (a dot name with the next few thousand pids).
    plant_links_as_nobody(&shared, &victim);
    // Another user's link at the output is not followed: one line, nothing written.
    let planted = shared.join("out.bin");
    let out = fails(
        &[
            "export",
            "--store",
            &store,
            "--name",
            "w",
            "-o",
            planted.to_str().unwrap(),
        ],
        "owned by another user",
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    assert_eq!(fs::read(&victim).unwrap(), b"root's file");
    // A new name beside the planted temporaries is written whole, and nothing else is.
    let out_file = shared.join("fresh.bin");
    ok(&[
        "export",
        "--store",
        &store,
        "--name",
        "w",
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&victim).unwrap(), b"root's file");
    let meta = fs::symlink_metadata(&out_file).unwrap();
    assert!(meta.is_file());
    assert_eq!(fs::read(&out_file).unwrap(), data);
    let mode = meta.mode() & 0o7777;
    assert_eq!(
        mode & 0o7022,
        0,
        "export mode {mode:o} keeps setuid or write bits for others"
    );
    // No temporary was left behind: only the output and the planted links.
    let left: Vec<String> = fs::read_dir(&shared)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_type().unwrap().is_symlink())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["fresh.bin".to_string()]);
}
