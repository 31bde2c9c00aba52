//! Mounts in tests: a live mount with its own state directory (`Mounted`, unmounted when
//! dropped), running `shardfs` in that directory, detaching a mount a test made another way,
//! whether a place is mounted or a daemon alive, and dropping one file's page cache; a store of
//! directory members to mount (`MountFixture`).

use super::{bin, command_at, members, store_arg};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A live mount for a test, with its own state directory; unmounted when dropped.
pub struct Mounted {
    pub dir: PathBuf,
    pub state_dir: PathBuf,
}

/// Runs `shardfs` with the state directory of a test.
pub fn run_in(state_dir: &Path, args: &[&str]) -> Output {
    run_bin_in(Path::new(bin()), state_dir, args)
}

/// Runs the shardfs binary at `bin` (a copy under another name, say) with the state directory
/// of a test.
pub fn run_bin_in(bin: &Path, state_dir: &Path, args: &[&str]) -> Output {
    command_at(bin)
        .env("SHARDFS_STATE_DIR", state_dir)
        .args(args)
        .output()
        .expect("shardfs runs")
}

impl Mounted {
    /// Mounts `store` at `dir` (created) with extra `args`; fails the test if it does not mount.
    pub fn new(store: &str, dir: &Path, state_dir: &Path, args: &[&str]) -> Mounted {
        fs::create_dir_all(dir).unwrap();
        let mut all = vec!["mount", "--store", store, dir.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run_in(state_dir, &all);
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted {
            dir: dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
        }
    }

    pub fn status(&self) -> serde_json::Value {
        self.json("status")
    }

    /// `shardfs refresh --json`: the mount has looked for new versions when it returns.
    pub fn refresh(&self) -> serde_json::Value {
        self.json("refresh")
    }

    /// `shardfs COMMAND MOUNTPOINT --json`, which must succeed, as JSON.
    fn json(&self, command: &str) -> serde_json::Value {
        let out = run_in(
            &self.state_dir,
            &[command, self.dir.to_str().unwrap(), "--json"],
        );
        assert!(
            out.status.success(),
            "{command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The version the mount serves of `model` to new opens.
    pub fn version(&self, model: &str) -> Option<u64> {
        let s = self.status();
        s["versions"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == model)?["version"]
            .as_u64()
    }

    pub fn pid(&self) -> u32 {
        self.status()["pid"].as_u64().unwrap() as u32
    }

    pub fn unmount(&self) -> Output {
        run_in(&self.state_dir, &["unmount", self.dir.to_str().unwrap()])
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// For a mount a test makes without `Mounted` (through mount(8), a helper, or a command run in
/// another directory): when dropped, a mount still at the place is detached, so a failing
/// assertion leaves nothing mounted behind. (Its daemon exits once the kernel unmounts it.)
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Whether anything is mounted at `dir` (from /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(dir.to_str().unwrap()))
}

pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

/// Drops the kernel's cached pages of `file` so the next reads reach the daemon. Only this
/// file's: dropping every cache (`/proc/sys/vm/drop_caches`) would also drop the pages of tests
/// running beside this one, and make their daemons load chunks again.
pub fn drop_page_cache(file: &Path) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(file).unwrap();
    // SAFETY: fadvise on an open fd.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "fadvise DONTNEED on {}", file.display());
}

/// A store of `n` directory members in a temporary folder, mounted at its `mnt` with its own
/// state directory.
pub struct MountFixture {
    pub dir: tempfile::TempDir,
    pub members: Vec<PathBuf>,
    pub store: String,
}

impl MountFixture {
    pub fn new(n: usize) -> MountFixture {
        let dir = tempfile::tempdir().unwrap();
        let members = members(dir.path(), n);
        let store = store_arg(&members);
        MountFixture {
            dir,
            members,
            store,
        }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn state(&self) -> PathBuf {
        self.path("state")
    }
    pub fn mount(&self, args: &[&str]) -> Mounted {
        Mounted::new(&self.store, &self.path("mnt"), &self.state(), args)
    }
}
