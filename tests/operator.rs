//! What a new user or an operator meets first: export to devices and FIFOs, a closed stdout,
//! store lists with spaces, mountpoints that are not empty or sit inside a mount, stores with
//! members missing (mount refusal, `--allow-degraded`, health in `ls` and `status`, one verify
//! line and one log warning per missing member), the counters and their documentation, what
//! mount and unmount print, and the help texts.

mod common;
use common::*;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const CS: usize = 64 * 1024;

/// A store of `n` members under a fresh directory, with one model `m` packed into it.
struct Fixture {
    dir: tempfile::TempDir,
    members: Vec<PathBuf>,
    store: String,
    data: Vec<u8>,
}

impl Fixture {
    fn new(n: usize, replicas: usize, chunks: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let members = members(dir.path(), n);
        let store = store_arg(&members);
        let data = Rng::new(1000 + chunks as u64).bytes(chunks * CS);
        pack_bytes(
            dir.path(),
            &store,
            "m",
            &data,
            &["--chunk-size", "64KiB", "--replicas", &replicas.to_string()],
        );
        Fixture {
            dir,
            members,
            store,
            data,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    /// `shardfs ARGS` with this fixture's state directory.
    fn run(&self, args: &[&str]) -> Output {
        run_in(&self.state(), args)
    }

    /// Runs a mount that must be refused and returns its stderr. One that succeeds is unmounted
    /// before the test fails, so that no mount outlives the test.
    fn mount_refused(&self, store: &str, dir: &Path) -> String {
        let out = self.run(&["mount", "--store", store, dir.to_str().unwrap()]);
        if out.status.success() {
            self.run(&["unmount", dir.to_str().unwrap()]);
            panic!("mounted {} although it should be refused", dir.display());
        }
        text(&out.stderr)
    }

    /// The `--store` argument for some of the members, by position.
    fn some(&self, which: &[usize]) -> String {
        let paths: Vec<PathBuf> = which.iter().map(|&i| self.members[i].clone()).collect();
        store_arg(&paths)
    }
}

/// Replicas the manifest of `m` places on member `id`.
fn replicas_on(member: &Path, id: &str) -> usize {
    let manifest = manifest_json(member, "m");
    manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["chunks"].as_array().unwrap())
        .filter(|c| c["members"].as_array().unwrap().iter().any(|m| m == id))
        .count()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn export_writes_devices_and_fifos_in_place() {
    let fx = Fixture::new(2, 2, 5);
    let args = |out: &Path| {
        ["export", "--store", &fx.store, "--name", "m", "-o"]
            .map(String::from)
            .into_iter()
            .chain([out.to_str().unwrap().to_string()])
            .collect::<Vec<String>>()
    };
    let export_to = |out: &Path| ok(&args(out).iter().map(String::as_str).collect::<Vec<_>>());

    // A character device (the null device, made here) stays that device.
    let dev = fx.path("null");
    let made = Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod needs root");
    let mode_before = fs::symlink_metadata(&dev).unwrap().mode();
    export_to(&dev);
    let meta = fs::symlink_metadata(&dev).unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "export replaced the device"
    );
    assert_eq!(meta.rdev(), libc::makedev(1, 3));
    assert_eq!(meta.mode(), mode_before, "export changed the device's mode");
    assert!(
        !tree(fx.dir.path())
            .iter()
            .any(|p| p.contains("shardfs-export")),
        "a temporary file was left behind: {:?}",
        tree(fx.dir.path())
    );

    // A FIFO with a reader on the other end gets the bytes and stays a FIFO.
    let fifo = fx.path("pipe");
    mkfifo(&fifo);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader_path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(fs::read(&reader_path).unwrap());
    });
    export_to(&fifo);
    assert!(
        fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "export replaced the FIFO"
    );
    // A deadline for a failure, not a synchronisation: the reader ends when the writer closes.
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the FIFO's reader got no end of file");
    assert!(got == fx.data, "the FIFO's reader got other bytes");

    // A directory is refused for a model of one file; a regular file is replaced whole.
    let dir = fx.path("out-dir");
    fs::create_dir(&dir).unwrap();
    fails(
        &args(&dir).iter().map(String::as_str).collect::<Vec<_>>(),
        "is a directory",
    );
    let file = fx.path("out.bin");
    fs::write(&file, b"old contents").unwrap();
    export_to(&file);
    assert!(fs::read(&file).unwrap() == fx.data);
}

/// Runs `shardfs ARGS` with a stdout whose reading end is already closed.
fn run_with_closed_stdout(state: &Path, args: &[&str]) -> Output {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two new fds into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both fds were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    command()
        .env("SHARDFS_STATE_DIR", state)
        .args(args)
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let fx = Fixture::new(3, 2, 20);
    // A store with a member left out, so that verify has problems to print.
    let partial = format!("{},{}", fx.some(&[0, 1]), fx.path("d4").display());
    for args in [
        vec!["ls", "--store", &fx.store],
        vec!["ls", "--store", &fx.store, "--json"],
        vec!["verify", "--store", &partial],
        vec!["verify", "--store", &partial, "--json"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["export", "--store", &fx.store, "--name", "m", "-o", "-"],
    ] {
        let out = run_with_closed_stdout(&fx.state(), &args);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        let quiet = out.status.signal() == Some(libc::SIGPIPE)
            || matches!(out.status.code(), Some(0) | Some(1));
        assert!(quiet, "{args:?} ended with {:?}: {stderr}", out.status);
    }
}

#[test]
fn store_lists_are_trimmed_and_empty_members_refused() {
    let fx = Fixture::new(3, 2, 4);
    let spaced = fx
        .members
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let out = ok(&["ls", "--store", &format!(" {spaced} "), "--json"]);
    assert!(
        !text(&out.stderr).contains("unavailable"),
        "a member with a space around it was taken as another path: {}",
        text(&out.stderr)
    );
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing["models"][0]["health"], "ok", "{listing}");
    // A member path need not be UTF-8.
    use std::os::unix::ffi::OsStrExt;
    let odd = fx
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"disk-\xff"));
    let src = fx.path("m.bin");
    let packed = command()
        .arg("pack")
        .arg(&src)
        .arg("--store")
        .arg(&odd)
        .output()
        .unwrap();
    assert!(packed.status.success(), "{}", text(&packed.stderr));
    let listed = command()
        .args(["ls", "--json", "--store"])
        .arg(&odd)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let doubled = format!("{},,{}", fx.some(&[0]), fx.some(&[1]));
    fails(&["ls", "--store", &doubled], "empty member");
    let trailing = format!("{},", fx.store);
    fails(&["verify", "--store", &trailing], "empty member");
}

#[test]
fn mountpoints_must_be_empty_and_outside_a_mount() {
    let fx = Fixture::new(1, 1, 3);
    let state = fx.state();

    // A directory that holds files is refused, and its files stay visible.
    let full = fx.path("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep.txt"), b"mine").unwrap();
    let err = fx.mount_refused(&fx.store, &full);
    assert!(err.contains("not empty"), "{err}");
    assert!(!is_mounted(&full));
    assert_eq!(fs::read(full.join("keep.txt")).unwrap(), b"mine");

    // What mount prints once live: one line naming what is mounted where.
    let mnt = fx.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = fx.run(&["mount", "--store", &fx.store, mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = Mounted {
        dir: mnt.clone(),
        state_dir: state.clone(),
    };
    let printed = text(&out.stdout);
    assert_eq!(printed.lines().count(), 1, "{printed}");
    let canonical = fs::canonicalize(&mnt).unwrap();
    for needle in [
        "mounted 1 model",
        "(1 file, ",
        canonical.to_str().unwrap(),
        "cache",
    ] {
        assert!(printed.contains(needle), "'{printed}' lacks '{needle}'");
    }

    // A directory inside the mount (the model's folder) is refused.
    let inner = mnt.join("m");
    let err = fx.mount_refused(&fx.store, &inner);
    assert!(
        err.contains("inside the shardfs mount") && err.lines().count() == 1,
        "{err}"
    );

    // Something else mounted inside it keeps it busy, and unmount says so.
    let tmpfs = Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&inner)
        .status()
        .unwrap();
    assert!(tmpfs.success(), "mounting a tmpfs needs root");
    let out = m.unmount();
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "unmounted a mount with another inside"
    );
    assert!(
        err.contains("busy") && err.contains(fs::canonicalize(&inner).unwrap().to_str().unwrap()),
        "{err}"
    );
    assert!(
        Command::new("umount")
            .arg(&inner)
            .status()
            .unwrap()
            .success()
    );
    let out = m.unmount();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("unmounted"));
    std::mem::forget(m);
}

#[test]
fn quiet_mounts_print_nothing_and_unmount_of_a_missing_path_says_so() {
    let fx = Fixture::new(1, 1, 3);
    let state = fx.state();
    let mnt = fx.path("mnt");
    fs::create_dir(&mnt).unwrap();
    // --quiet prints nothing; unmount of a path that does not exist says so.
    let out = fx.run(&["mount", "--store", &fx.store, mnt.to_str().unwrap(), "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let m = Mounted {
        dir: mnt.clone(),
        state_dir: state.clone(),
    };
    drop(m);
    assert!(!is_mounted(&mnt));
    let nowhere = fx.path("no-such-dir");
    let out = fx.run(&["unmount", nowhere.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
}

/// Reads all of `path`: its bytes, or the errno of the first read that failed.
fn read_all(path: &Path) -> Result<Vec<u8>, i32> {
    fs::read(path).map_err(|e| e.raw_os_error().unwrap_or(0))
}

#[test]
fn too_few_members_refuse_to_mount_in_one_line_and_ls_says_so() {
    let fx = Fixture::new(3, 2, 60);
    let (id1, index1) = member_id(&fx.members[1]);
    let (id2, index2) = member_id(&fx.members[2]);
    let mnt = fx.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let only_first = fx.some(&[0]);

    // One member of three, replicas 2: some chunks have no replica left; refused in one line.
    let err = fx.mount_refused(&only_first, &mnt);
    let error_lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(error_lines.len(), 1, "{err}");
    for needle in [
        id1.as_str(),
        id2.as_str(),
        &format!("index {index1}"),
        &format!("index {index2}"),
        "chunks (1 file)",
        "--allow-degraded",
    ] {
        assert!(error_lines[0].contains(needle), "'{err}' lacks '{needle}'");
    }

    // ls shows the same.
    let out = ok(&["ls", "--store", &only_first, "--json"]);
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let model = &listing["models"][0];
    assert_eq!(model["health"], "unreadable", "{listing}");
    assert!(model["unreachable_chunks"].as_u64().unwrap() > 0);
    assert_eq!(model["unreadable_files"], 1);
    let out = ok(&["ls", "--store", &only_first]);
    assert!(
        text(&out.stdout).contains("unreadable"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn allow_degraded_mounts_with_too_few_members_and_unreachable_ranges_read_eio() {
    let fx = Fixture::new(3, 2, 60);
    let mnt = fx.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let only_first = fx.some(&[0]);
    // --allow-degraded mounts anyway: the unreachable ranges read EIO, the others exactly.
    let out = fx.run(&[
        "mount",
        "--store",
        &only_first,
        mnt.to_str().unwrap(),
        "--allow-degraded",
        "--name",
        "m",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = Mounted {
        dir: mnt.clone(),
        state_dir: fx.state(),
    };
    assert_eq!(read_all(&mnt.join("m.bin")), Err(libc::EIO));
    let manifest = manifest_json(&fx.members[0], "m");
    let (id0, _) = member_id(&fx.members[0]);
    let f = fs::File::open(mnt.join("m.bin")).unwrap();
    for c in manifest["files"][0]["chunks"].as_array().unwrap() {
        let (offset, len) = (c["offset"].as_u64().unwrap(), c["len"].as_u64().unwrap());
        let mut buf = vec![0u8; len as usize];
        let on_first = c["members"].as_array().unwrap().iter().any(|m| m == &id0);
        match f.read_exact_at(&mut buf, offset) {
            Ok(()) => {
                assert!(
                    on_first,
                    "read a chunk that has no replica on the member given"
                );
                assert!(buf[..] == fx.data[offset as usize..(offset + len) as usize]);
            }
            Err(e) => {
                assert!(!on_first, "chunk at {offset} failed: {e}");
                assert_eq!(e.raw_os_error(), Some(libc::EIO));
            }
        }
    }
    let s = m.status();
    assert_eq!(s["models"][0]["health"], "unreadable", "{s}");
    assert!(s["errors"].as_u64().unwrap() > 0);
    assert!(
        s["chunks_prefetched"].as_u64().unwrap() <= s["chunks_decompressed"].as_u64().unwrap(),
        "prefetched counts more than it decompressed: {s}"
    );
    drop(f);
    let out = m.unmount();
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::mem::forget(m);
}

#[test]
fn two_members_of_three_mount_degraded_with_one_warning() {
    let fx = Fixture::new(3, 2, 60);
    let (id2, _) = member_id(&fx.members[2]);
    // Two members of three: every chunk readable, some below their replica count: a warning.
    let mnt = fx.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let two = fx.some(&[0, 1]);
    let out = fx.run(&["mount", "--store", &two, mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = Mounted {
        dir: mnt.clone(),
        state_dir: fx.state(),
    };
    let warning = text(&out.stderr);
    assert!(
        warning.contains("degraded") && warning.contains(&id2),
        "{warning}"
    );
    assert!(text(&out.stdout).contains("degraded"));
    assert!(fs::read(mnt.join("m").join("m.bin")).unwrap() == fx.data);
    let s = m.status();
    let health = &s["models"][0];
    assert_eq!(health["health"], "degraded", "{s}");
    assert_eq!(
        health["degraded_chunks"].as_u64().unwrap() as usize,
        replicas_on(&fx.members[0], &id2)
    );
    assert_eq!(health["unreachable_chunks"], 0);
    let human = text(&fx.run(&["status", mnt.to_str().unwrap()]).stdout);
    assert!(human.contains("at mount time degraded"), "{human}");
    assert!(s["replica_failovers"].as_u64().unwrap() > 0, "{s}");

    // The daemon's log: one warning for the missing member, however many chunks it held, and
    // every line with a time.
    let log = fs::read_to_string(s["log"].as_str().unwrap()).unwrap();
    let member_failures = log
        .lines()
        .filter(|l| l.contains(&id2) && l.contains("not among the members that opened"))
        .count();
    assert_eq!(member_failures, 1, "{log}");
    for line in log.lines() {
        let stamp = line.split(' ').next().unwrap_or("");
        assert!(
            stamp.len() >= 19 && stamp.as_bytes()[4] == b'-' && stamp.as_bytes()[10] == b'T',
            "log line without a time: {line}"
        );
    }
    drop(m);
}

#[test]
fn verify_prints_one_line_per_missing_member() {
    let fx = Fixture::new(3, 2, 60);
    let (id2, index2) = member_id(&fx.members[2]);
    let held = replicas_on(&fx.members[0], &id2);
    assert!(held > 10, "the test wants a member holding many replicas");
    let mistyped = format!("{},{}", fx.some(&[0, 1]), fx.path("disk-typo").display());
    let out = run(&["verify", "--store", &mistyped]);
    assert_eq!(out.status.code(), Some(1));
    let printed = text(&out.stdout);
    let about_member: Vec<&str> = printed.lines().filter(|l| l.contains(&id2)).collect();
    assert_eq!(about_member.len(), 1, "{printed}");
    for needle in [
        format!("index {index2}"),
        format!("{held} replicas of 1 model:"),
        "not given or is not readable".to_string(),
    ] {
        assert!(
            about_member[0].contains(&needle),
            "'{}' lacks '{needle}'",
            about_member[0]
        );
    }
    assert!(printed.lines().count() <= 4, "{printed}");

    // --json keeps every replica in the list.
    let out = run(&["verify", "--store", &mistyped, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["member_id"] == id2.as_str() && p["kind"] == "missing")
        .count();
    assert_eq!(listed, held, "{report}");
    let gone = &report["unavailable_members"][0];
    assert_eq!(gone["member_id"], id2.as_str());
    assert_eq!(gone["index"], index2);
    assert_eq!(gone["replicas"].as_u64().unwrap() as usize, held);
}

#[test]
fn every_status_field_is_documented() {
    let fx = Fixture::new(1, 1, 2);
    let mnt = fx.path("mnt");
    let m = Mounted::new(&fx.store, &mnt, &fx.state(), &[]);
    let s = m.status();
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = readme
        .split("### `status --json`")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .expect("README has a status --json section");
    for key in s.as_object().unwrap().keys() {
        assert!(
            table.contains(&format!("`{key}`")),
            "status --json field '{key}' is not in the README's table"
        );
    }
    let options_row = table
        .lines()
        .find(|l| l.starts_with("| `options`"))
        .expect("an options row");
    for key in s["options"].as_object().unwrap().keys() {
        assert!(
            options_row.contains(&format!("`{key}`")),
            "options.{key} is not in the README's options row"
        );
    }
    for key in s["models"][0].as_object().unwrap().keys() {
        assert!(
            table.contains(&format!("`{key}`")),
            "models[].{key} is not in the README's table"
        );
    }
    for key in s["members"][0].as_object().unwrap().keys() {
        assert!(
            table.contains(&format!("`{key}`")),
            "members[].{key} is not in the README's table"
        );
    }
}
