//! Helpers of the data-sync tests (`tests/repair.rs`, `tests/members.rs`): the commands' JSON
//! reports, a check that every chunk is fully replicated, a mount with 8 readers comparing every
//! byte, a three-member fixture, and a SIGKILL at a moment of progress.

use super::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

pub fn verify(store: &str) -> serde_json::Value {
    let out = run(&["verify", "--store", store, "--json"]);
    let r = json(&out);
    assert_eq!(
        out.status.code(),
        Some(if r["ok"] == true { 0 } else { 1 }),
        "{r}"
    );
    r
}

pub fn repair(store: &str) -> serde_json::Value {
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
pub fn fully_replicated(members: &[PathBuf], model: &str, replicas: usize) {
    let m = manifest_json(&members[0], model);
    let ids: Vec<(String, &PathBuf)> = members
        .iter()
        .map(|p| {
            let info: serde_json::Value =
                serde_json::from_slice(&fs::read(p.join("shardfs-store.json")).unwrap()).unwrap();
            (info["member_id"].as_str().unwrap().to_string(), p)
        })
        .collect();
    let chunks = m["files"].as_array().unwrap().iter().flat_map(|f| {
        f["chunks"].as_array().unwrap().iter().flat_map(|c| {
            // A delta is stored under its own name, and needs its base as much as itself.
            let base = c["delta"]
                .get("base")
                .map(|b| (b, b["hash"].as_str().unwrap()));
            let own = match c["delta"].get("object") {
                Some(object) => (c, object.as_str().unwrap()),
                None => (c, c["hash"].as_str().unwrap()),
            };
            std::iter::once(own).chain(base)
        })
    });
    for (c, hex) in chunks {
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
            assert!(
                dir.join("chunks").join(&hex[..2]).join(hex).exists(),
                "chunk {hex} listed on {id} but not there"
            );
        }
    }
}

/// A mount with 8 readers re-reading its files and comparing every byte, until stopped.
pub struct Readers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    bad: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    /// The first error a reader got, for the failure message.
    first_error: Arc<std::sync::Mutex<Option<String>>>,
    rounds: Arc<AtomicU64>,
}

impl Readers {
    pub fn start(files: Vec<(PathBuf, Arc<Vec<u8>>)>) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let (bad, errors, rounds) = (Arc::default(), Arc::default(), Arc::default());
        let first_error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
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
                let first_error = first_error.clone();
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
                            Err(e) => {
                                errors.fetch_add(1, Ordering::SeqCst);
                                let mut first = first_error.lock().unwrap();
                                first.get_or_insert_with(|| format!("{}: {e}", path.display()));
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
            first_error,
            rounds,
        }
    }

    /// Stops the readers once each has read a few more times; fails on any wrong byte or error.
    pub fn finish(mut self) {
        let target = self.rounds.load(Ordering::SeqCst) + 16;
        while self.rounds.load(Ordering::SeqCst) < target {
            std::thread::yield_now();
        }
        self.stop_all();
        assert_eq!(
            self.bad.load(Ordering::SeqCst),
            0,
            "readers got wrong bytes"
        );
        assert_eq!(
            self.errors.load(Ordering::SeqCst),
            0,
            "readers got errors, the first: {:?}",
            self.first_error.lock().unwrap()
        );
    }

    fn stop_all(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.threads) {
            t.join().unwrap();
        }
    }
}

/// A test that fails midway stops its readers too, so that its mount can be unmounted.
impl Drop for Readers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

/// Reads a whole file with `O_DIRECT`, into a buffer at a 4096-byte boundary in 1 MiB requests:
/// an open beside a passthrough one is passthrough too, and its direct reads then go to a local
/// disk's file, which asks that alignment (any buffer does through the daemon).
pub fn read_direct(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const REQUEST: usize = 1 << 20;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let mut space = vec![0u8; REQUEST + 4096];
    let at = space.as_ptr().align_offset(4096);
    let buf = &mut space[at..at + REQUEST];
    let mut out = Vec::new();
    loop {
        let n = f.read_at(buf, out.len() as u64)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Three members, replicas 2, a model `m` of two files; mounted with readers running.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub members: Vec<PathBuf>,
    pub store: String,
    pub files: Vec<Arc<Vec<u8>>>,
}

impl Fixture {
    pub fn new(seed: u64, mib: usize) -> Fixture {
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

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn mount_with_readers(&self) -> (Mounted, Readers) {
        self.mount_with_readers_and(&[])
    }

    /// `mount_with_readers` with more mount options (`--pin`, to keep the readers' version).
    pub fn mount_with_readers_and(&self, extra: &[&str]) -> (Mounted, Readers) {
        // No local tier: the readers are there to exercise the store's read path while its
        // members change, not to be served from copies of the files.
        let mut args = vec!["--name", "m", "--cache-size", "4MiB", "--no-local-cache"];
        args.extend_from_slice(extra);
        let m = Mounted::new(&self.store, &self.path("mnt"), &self.path("state"), &args);
        let files = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (m.dir.join(format!("{i}.bin")), f.clone()))
            .collect();
        (m, Readers::start(files))
    }

    pub fn exact(&self) {
        for (i, f) in self.files.iter().enumerate() {
            assert!(
                export(&self.store, "m", Some(&format!("{i}.bin"))) == **f,
                "{i}.bin differs"
            );
        }
    }
}

pub fn chunk_bytes(members: &[PathBuf]) -> u64 {
    members
        .iter()
        .flat_map(|m| chunk_files(m))
        .map(|f| fs::metadata(f).unwrap().len())
        .sum()
}

/// Starts `shardfs ARGS`, waits until `reached()` (or the command ended), kills it with
/// SIGKILL; true when the kill landed before the command finished.
pub fn kill_when(args: &[&str], reached: &dyn Fn() -> bool) -> bool {
    let mut child = command()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !reached() && child.try_wait().unwrap().is_none() {
        std::thread::yield_now();
    }
    let finished = child.try_wait().unwrap().is_some();
    child.kill().ok();
    child.wait().unwrap();
    !finished
}

/// After a pack of `v2` over `v1` was killed (kill number `attempt`): the store verifies, and
/// model `name` exports as one version or the other, whole. Returns what it exports.
pub fn one_version_or_the_other(
    store: &str,
    name: &str,
    (v1, v2): (&[u8], &[u8]),
    attempt: usize,
) -> Vec<u8> {
    let report = verify(store);
    assert_eq!(report["ok"], true, "after kill {attempt}: {report}");
    let now = super::export(store, name, None);
    assert!(
        now == v1 || now == v2,
        "after kill {attempt} the model is neither version"
    );
    now
}

/// `kill_when` `progress()` has moved by `step` from where it was at the start.
pub fn kill_after(args: &[&str], progress: &dyn Fn() -> usize, step: usize) -> bool {
    let start = progress();
    kill_when(args, &|| progress().abs_diff(start) >= step)
}
