//! A member that stops answering, as a hung NFS server does: the member directory is a bindfs
//! mount whose daemon the test stops with SIGSTOP, so every call into it blocks in the kernel.
//! Reads of chunks with a replica elsewhere return exact bytes; a chunk only the hung member
//! holds gives EIO, never a wait; `ls` and `status` answer; the daemon's threads stay bounded and
//! the mount reads everything again once the member answers.

mod common;

use common::sync::read_direct;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `real` served at `at` by a bindfs daemon of our own, stopped and resumed by its pid.
struct Bindfs {
    child: Child,
    at: PathBuf,
}

impl Bindfs {
    fn start(real: &Path, at: &Path) -> Bindfs {
        fs::create_dir_all(real).unwrap();
        fs::create_dir_all(at).unwrap();
        let child = Command::new("bindfs")
            .args(["-f", "--no-allow-other"])
            .arg(real)
            .arg(at)
            .spawn()
            .expect("bindfs runs (scripts/setup installs it)");
        let started = Instant::now();
        while !is_mounted(at) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "bindfs did not mount"
            );
            std::thread::yield_now();
        }
        Bindfs {
            child,
            at: at.to_path_buf(),
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        let _ = self.child.wait();
    }
}

fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

/// Reads `path` whole on a thread of its own; `None` if it has not returned within `limit`.
fn read_within(path: &Path, limit: Duration) -> Option<std::io::Result<Vec<u8>>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(read_direct(&path));
    });
    rx.recv_timeout(limit).ok()
}

/// 16 readers read `path` again and again for `stall`, each time getting `want`: how many
/// reads they made, and the most threads daemon `pid` had meanwhile.
fn read_exact_for(path: &Path, want: &[u8], pid: u32, stall: Duration) -> (usize, usize) {
    let started = Instant::now();
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (path, want) = (path.to_path_buf(), want.to_vec());
            std::thread::spawn(move || {
                let (mut rounds, mut peak) = (0, 0);
                while rounds == 0 || started.elapsed() < stall {
                    assert_eq!(read_direct(&path).unwrap(), want);
                    peak = peak.max(threads(pid));
                    rounds += 1;
                }
                (rounds, peak)
            })
        })
        .collect();
    let (mut rounds, mut peak) = (0, 0);
    for r in readers {
        let (n, p) = r.join().unwrap();
        rounds += n;
        peak = peak.max(p);
    }
    (rounds, peak)
}

/// Reads `path` until it reads as `want`, failing the test if it is still unreadable after
/// `limit`.
fn wait_readable(path: &Path, want: &[u8], limit: Duration) {
    let started = Instant::now();
    loop {
        match read_direct(path) {
            Ok(got) => {
                assert_eq!(got, want);
                return;
            }
            Err(e) => assert!(
                started.elapsed() < limit,
                "still unreadable {limit:?} after the member came back: {e}"
            ),
        }
    }
}

#[test]
fn a_hung_member_costs_a_deadline_never_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hung = Bindfs::start(&d.join("real0"), &d.join("m0"));
    let m1 = d.join("m1");
    let store = format!("{},{}", hung.at.display(), m1.display());
    let mut rng = Rng::new(51);
    let both = rng.bytes(6 << 20);
    let solo = rng.bytes(6 << 20);
    let flags = ["--chunk-size", "512KiB"];
    pack_bytes(
        d,
        &store,
        "both",
        &both,
        &[&flags[..], &["--replicas", "2"]].concat(),
    );
    pack_bytes(
        d,
        &store,
        "solo",
        &solo,
        &[&flags[..], &["--replicas", "1"]].concat(),
    );
    let mnt = d.join("mnt");
    let state = d.join("state");
    let m = Mounted::new(
        &store,
        &mnt,
        &state,
        &["--member-timeout", "500ms", "--cache-size", "2MiB", "--pin"],
    );
    let pid = m.pid();
    let before = threads(pid);

    hung.signal("-STOP");
    let started = Instant::now();
    // 16 readers of the model with a replica of every chunk elsewhere, reading it again and
    // again through a minute of stall: exact bytes every time.
    let (rounds, mut peak) = read_exact_for(
        &mnt.join("both/both.bin"),
        &both,
        pid,
        Duration::from_secs(60),
    );
    let both_secs = started.elapsed().as_secs_f64();
    // The model with chunks only on the hung member: EIO, not a wait.
    let started = Instant::now();
    let got = read_within(&mnt.join("solo/solo.bin"), Duration::from_secs(120))
        .expect("a read of a chunk on the hung member did not return");
    let err = got.expect_err("bytes from a member that cannot answer");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let eio_secs = started.elapsed().as_secs_f64();
    peak = peak.max(threads(pid));
    // status and ls answer while the member hangs.
    assert_eq!(m.status()["pid"].as_u64(), Some(pid as u64));
    let out = Command::new("timeout")
        .args(["60", bin(), "ls", "--store", &store])
        .args(["--member-timeout", "500ms"])
        .envs(test_env())
        .output()
        .unwrap();
    assert!(stdout(&out).contains("both"), "{out:?}");
    // The stated bound: 8 I/O threads per member and the shared hedging pool of 16.
    let bound = before + 2 * 8 + 16;
    eprintln!(
        "hung member: 16 readers read a replicated model {rounds} times in {both_secs:.1} s, EIO of an unreplicated one in {eio_secs:.1} s, daemon threads {before} before, {peak} at most"
    );
    assert!(peak <= bound, "threads grew from {before} to {peak}");

    // The member answers again: everything reads, and the stuck threads are back.
    hung.signal("-CONT");
    wait_readable(&mnt.join("solo/solo.bin"), &solo, Duration::from_secs(60));
    assert!(threads(pid) <= bound);
    assert!(m.unmount().status.success());
}
