//! Mounts at boot: `mount -t fuse` through mount.fuse3, an fstab line through `mount -T`, the
//! binary run as `mount.fuse.shardfs`, a `fuse.shardfs` fstab line as /proc/mounts and a second
//! `mount -a` see it, bad options as one-line errors, the systemd unit checked
//! by `systemd-analyze verify`, and readiness told to a fake `NOTIFY_SOCKET` only once the mount
//! is live. Real mounts, bytes compared.

mod common;

use common::*;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn sh(cmd: &str, args: &[&str], state: &Path) -> Output {
    Command::new(cmd)
        .args(args)
        .env("SHARDFS_STATE_DIR", state)
        .envs(test_env())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// Waits until nothing is mounted at `dir` and the mount's state is gone (the daemon exits
/// after the kernel's unmount), for at most 30 s.
fn wait_unmounted(dir: &Path, state: &Path) {
    let start = Instant::now();
    loop {
        let s = run_in(state, &["status", "--json"]);
        let none = serde_json::from_slice::<serde_json::Value>(&s.stdout)
            .is_ok_and(|v| v.as_array().is_some_and(|a| a.is_empty()));
        if !is_mounted(dir) && none {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "still mounted");
        std::thread::yield_now();
    }
}

/// A store of two members holding model "m" (3 MiB, two replicas), an empty mountpoint that is
/// unmounted when the test ends, and a state folder.
struct Boot {
    _unmount: UnmountOnDrop,
    store: String,
    data: Vec<u8>,
    mnt: PathBuf,
    state: PathBuf,
    dir: tempfile::TempDir,
}

fn boot() -> Boot {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 2));
    let data = Rng::new(21).bytes(3 << 20);
    pack_bytes(d, &store, "m", &data, &["--replicas", "2"]);
    let (mnt, state) = (d.join("mnt"), d.join("state"));
    fs::create_dir_all(&mnt).unwrap();
    Boot {
        _unmount: UnmountOnDrop(mnt.clone()),
        store,
        data,
        mnt,
        state,
        dir,
    }
}

#[test]
fn mount_t_fuse_and_fstab_lines_mount_and_unmount() {
    let b = boot();
    let d = b.dir.path();
    let (store, data) = (b.store.clone(), b.data.clone());
    let (mnt, state) = (b.mnt.clone(), b.state.clone());
    let spec = format!("{}#{store}", bin());
    let m = mnt.to_str().unwrap();

    // mount -t fuse: mount.fuse3 runs the binary with the options.
    let out = sh(
        "mount",
        &[
            "-t",
            "fuse",
            &spec,
            m,
            "-o",
            "ro,cache_size=4MiB,refresh=1s,name=m",
        ],
        &state,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(mnt.join("m.bin")).unwrap() == data);
    let s = json_of(&run_in(&state, &["status", m, "--json"]));
    assert_eq!(s["options"]["cache_size"], 4 << 20, "{s}");
    assert_eq!(s["options"]["refresh_ms"], 1000, "{s}");
    assert!(sh("umount", &[m], &state).status.success());
    wait_unmounted(&mnt, &state);

    // An fstab line, mounted by its mountpoint.
    let fstab = d.join("fstab");
    fs::write(
        &fstab,
        format!("# models\n{spec} {m} fuse ro,_netdev,nofail,cache_size=8MiB,pin 0 0\n"),
    )
    .unwrap();
    let out = sh("mount", &["-T", fstab.to_str().unwrap(), m], &state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(mnt.join("m").join("m.bin")).unwrap() == data);
    let s = json_of(&run_in(&state, &["status", m, "--json"]));
    assert_eq!(s["options"]["pin"], true, "{s}");
    assert!(sh("umount", &[m], &state).status.success());
    wait_unmounted(&mnt, &state);
}

#[test]
fn the_installed_helper_mounts_as_mount_8_runs_it() {
    let b = boot();
    let d = b.dir.path();
    let (store, data) = (b.store.clone(), b.data.clone());
    let (mnt, state) = (b.mnt.clone(), b.state.clone());
    let m = mnt.to_str().unwrap();
    // The binary linked as mount(8)'s helper, run as mount(8) runs it.
    let sbin = d.join("sbin");
    fs::create_dir_all(&sbin).unwrap();
    let bin_dir = d.join("usr-local-bin");
    let install = |dir: &Path| {
        ok(&[
            "install-helper",
            "--dir",
            dir.to_str().unwrap(),
            "--bin-dir",
            bin_dir.to_str().unwrap(),
        ])
    };
    install(&sbin);
    install(&sbin);
    // A build under target/ is installed as a copy, and the helper links the copy.
    let helper = sbin.join("mount.fuse.shardfs");
    assert_eq!(fs::read_link(&helper).unwrap(), bin_dir.join("shardfs"));
    assert!(fs::read(bin_dir.join("shardfs")).unwrap() == fs::read(bin()).unwrap());
    let out = sh(
        helper.to_str().unwrap(),
        &[&store, m, "-o", "rw,name=m", "-t", "fuse.shardfs"],
        &state,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "a helper prints nothing");
    assert!(fs::read(mnt.join("m.bin")).unwrap() == data);
    assert!(run_in(&state, &["unmount", m]).status.success());
    wait_unmounted(&mnt, &state);
}

#[test]
fn bad_mount_options_and_foreign_helpers_are_refused() {
    let b = boot();
    let d = b.dir.path();
    let store = b.store.clone();
    let (mnt, state) = (b.mnt.clone(), b.state.clone());
    let spec = format!("{}#{store}", bin());
    let m = mnt.to_str().unwrap();
    // Bad options: one line naming the option, nothing mounted.
    for (opts, needle) in [
        ("ro,bogus=1", "unknown mount option 'bogus=1'"),
        ("ro,cache_size=lots", "invalid value 'lots'"),
        ("ro,name", "needs a value"),
    ] {
        let out = sh("mount", &["-t", "fuse", &spec, m, "-o", opts], &state);
        assert!(!out.status.success(), "{opts}");
        let err = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("shardfs")).collect();
        assert!(ours.len() == 1 && ours[0].contains(needle), "{opts}: {err}");
        assert!(!is_mounted(&mnt));
    }
    // A helper file that is not a link is left alone.
    let other = d.join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("mount.fuse.shardfs"), "#!/bin/sh\n").unwrap();
    fails(
        &["install-helper", "--dir", other.to_str().unwrap()],
        "is not a link",
    );
    // Nor is a link to something other than a shardfs binary.
    fs::remove_file(other.join("mount.fuse.shardfs")).unwrap();
    std::os::unix::fs::symlink("/bin/true", other.join("mount.fuse.shardfs")).unwrap();
    fails(
        &["install-helper", "--dir", other.to_str().unwrap()],
        "not a shardfs binary",
    );
    assert_eq!(
        fs::read_link(other.join("mount.fuse.shardfs")).unwrap(),
        Path::new("/bin/true")
    );
}

/// Puts a helper link at /sbin/mount.fuse.shardfs (where mount(8) looks, whatever PATH says)
/// for one test, and puts back what was there when dropped.
struct SbinHelper {
    before: Option<std::path::PathBuf>,
}

impl SbinHelper {
    const LINK: &str = "/sbin/mount.fuse.shardfs";

    fn install(bin_dir: &Path) -> SbinHelper {
        let before = fs::read_link(Self::LINK).ok();
        ok(&["install-helper", "--bin-dir", bin_dir.to_str().unwrap()]);
        SbinHelper { before }
    }
}

impl Drop for SbinHelper {
    fn drop(&mut self) {
        let _ = fs::remove_file(Self::LINK);
        if let Some(before) = &self.before {
            let _ = std::os::unix::fs::symlink(before, Self::LINK);
        }
    }
}

#[test]
fn a_fuse_shardfs_fstab_line_shows_in_proc_mounts_and_mount_a_twice_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 2));
    let data = Rng::new(22).bytes(1 << 20);
    pack_bytes(d, &store, "m", &data, &["--replicas", "2"]);
    let (mnt, state) = (d.join("mnt"), d.join("state"));
    fs::create_dir_all(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let _unmount = UnmountOnDrop(mnt.clone());
    let _helper = SbinHelper::install(&d.join("bin"));
    let fstab = d.join("fstab");
    fs::write(
        &fstab,
        format!("{store} {m} fuse.shardfs ro,nofail,name=m,cache_size=8MiB 0 0\n"),
    )
    .unwrap();
    let mount_all = || sh("mount", &["-a", "-T", fstab.to_str().unwrap()], &state);
    let out = mount_all();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(mnt.join("m.bin")).unwrap() == data);
    // The kernel's table names the store and the type, as the fstab line does.
    let line = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(m))
        .map(str::to_string)
        .unwrap();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        (fields[0], fields[2]),
        (store.as_str(), "fuse.shardfs"),
        "{line}"
    );
    let found = sh(
        "findmnt",
        &["-n", "-t", "fuse.shardfs", "-o", "TARGET"],
        &state,
    );
    assert!(
        String::from_utf8_lossy(&found.stdout)
            .lines()
            .any(|l| l.trim() == m),
        "{found:?}"
    );
    // mount -a again: mount(8) sees the line is mounted and does nothing.
    let again = mount_all();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let mounted = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(m))
        .count();
    assert_eq!(mounted, 1);
    assert!(sh("umount", &[m], &state).status.success());
    wait_unmounted(&mnt, &state);
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_scrub_timer_and_its_service_verify() {
    let dir = tempfile::tempdir().unwrap();
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let mut paths = Vec::new();
    for name in ["shardfs-scrub.service", "shardfs-scrub.timer"] {
        let unit = fs::read_to_string(contrib.join(name))
            .unwrap()
            .replace("/usr/local/bin/shardfs", bin());
        let path = dir.path().join(name);
        fs::write(&path, unit).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze (scripts/setup installs systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

#[test]
fn the_systemd_unit_verifies_and_readiness_comes_once_the_mount_is_live() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The shipped unit, pointing at this build (verify checks that the binary exists).
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/shardfs-models.service"),
    )
    .unwrap()
    .replace("/usr/local/bin/shardfs", bin());
    let path = d.join("shardfs-models.service");
    fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .expect("systemd-analyze (scripts/setup installs systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");

    // The daemon as the unit runs it, with a notify socket standing in for systemd's.
    let store = store_arg(&members(d, 2));
    let data = Rng::new(22).bytes(2 << 20);
    pack_bytes(d, &store, "m", &data, &[]);
    let (mnt, state) = (d.join("mnt"), d.join("state"));
    fs::create_dir_all(&mnt).unwrap();
    let sock_path = d.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut child = command()
        .args([
            "mount",
            "--foreground",
            "--store",
            &store,
            mnt.to_str().unwrap(),
        ])
        .env("SHARDFS_STATE_DIR", &state)
        .env("NOTIFY_SOCKET", &sock_path)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("READY=1 within 60 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    // Ready means live: the mount is there and serves.
    assert!(is_mounted(&mnt), "READY=1 came before the mount");
    assert!(msg.contains("STATUS=mounted"), "{msg}");
    assert!(fs::read(mnt.join("m").join("m.bin")).unwrap() == data);
    // systemctl stop: SIGTERM, a clean unmount, STOPPING=1, exit 0.
    kill_and_wait_child(&mut child);
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "STOPPING=1")
    );
    assert!(!is_mounted(&mnt));
}

fn kill_and_wait_child(child: &mut std::process::Child) {
    // SAFETY: signals a child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "the daemon exited with {status}");
}
