//! Helpers shared by the integration tests: running the real `shardfs` binary, making test
//! data, and looking at a store's files on disk. Mounts and their daemons are in `mount.rs`;
//! stores for the sync commands in `sync.rs`, a web member in `web.rs`, SeaweedFS in `weed.rs`.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shardfs")
}

/// Where the tests' shardfs runs keep the keys they make and the keys they pin: a folder
/// under cargo's scratch space for tests, never the home of whoever runs the suite.
pub fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config")
}

/// Where the default local tiers of the tests' mounts go (`XDG_CACHE_HOME`): cargo's scratch
/// space too, one folder per mountpoint.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cache")
}

/// The environment every shardfs run of the tests gets: the config and cache folders above
/// (`Command::envs`).
pub fn test_env() -> [(&'static str, PathBuf); 2] {
    [
        ("XDG_CONFIG_HOME", config_dir()),
        ("XDG_CACHE_HOME", cache_dir()),
    ]
}

/// A command that runs `shardfs` with the tests' config and cache folders.
pub fn command() -> Command {
    command_at(Path::new(bin()))
}

/// A command that runs the shardfs binary at `bin` (a copy under another name, say) with the
/// tests' config folder.
pub fn command_at(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.envs(test_env());
    cmd
}

/// Runs `shardfs` with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    command().args(args).output().expect("shardfs runs")
}

/// Runs `shardfs` and fails the test unless it exits 0.
pub fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "shardfs {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Runs `shardfs`, expects a failure with a one-line error mentioning `needle`, no panic.
pub fn fails(args: &[&str], needle: &str) -> Output {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "shardfs {args:?} succeeded, expected an error with '{needle}'"
    );
    assert!(
        !stderr.contains("panicked"),
        "shardfs {args:?} panicked: {stderr}"
    );
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(
        error_lines.len(),
        1,
        "expected one error line, got: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "shardfs {args:?}: error does not mention '{needle}': {stderr}"
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A field of /proc/PID/status, as a number (`Threads`, `VmHWM` in KiB).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A deterministic xorshift generator, so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// bf16 values of a roughly normal(0, 0.02) distribution, like model weights.
    pub fn floats(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 2);
        while out.len() < n {
            let r = self.next();
            // Sum of four uniforms approximates a normal.
            let s: f32 = (0..4)
                .map(|i| ((r >> (i * 16)) & 0xffff) as f32 / 65535.0)
                .sum::<f32>()
                - 2.0;
            let v = s * 0.035;
            out.extend_from_slice(&v.to_bits().to_le_bytes()[2..]);
        }
        out.truncate(n);
        out
    }
}

/// The `--store` argument for these member directories.
pub fn store_arg(members: &[PathBuf]) -> String {
    members
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// `n` member paths (not created) under `dir`.
pub fn members(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.join(format!("disk{i}"))).collect()
}

/// Every chunk file of a member.
pub fn chunk_files(member: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(dirs) = fs::read_dir(member.join("chunks")) {
        for d in dirs.flatten() {
            if let Ok(files) = fs::read_dir(d.path()) {
                out.extend(files.flatten().map(|f| f.path()));
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir`, as sorted relative paths.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Exports one file of a model and returns its bytes.
pub fn export(store: &str, name: &str, file: Option<&str>) -> Vec<u8> {
    let mut args = vec!["export", "--store", store, "--name", name, "-o", "-"];
    if let Some(f) = file {
        args.extend(["--file", f]);
    }
    ok(&args).stdout
}

/// The manifest JSON of a model as stored on one member.
pub fn manifest_json(member: &Path, name: &str) -> serde_json::Value {
    let bytes = fs::read(member.join("manifests").join(format!("{name}.json"))).unwrap();
    // The envelope, without the signature line a signed store adds.
    let (body, _) = shardfs::trust::keys::split(&bytes).unwrap();
    let env: serde_json::Value = serde_json::from_slice(body).unwrap();
    env["manifest"].clone()
}

/// The string field `key` of each object in the JSON array `list`, in order (panics, failing the
/// test, where `list` is not an array or an entry has no such string).
pub fn strings<'a>(list: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    let entries = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    entries
        .iter()
        .map(|e| {
            e[key]
                .as_str()
                .unwrap_or_else(|| panic!("no string {key:?} in {e}"))
        })
        .collect()
}

/// A safetensors image of `tensors` (name, dtype, bytes), in that order.
pub fn safetensors_image(tensors: &[(&str, &str, Vec<u8>)]) -> Vec<u8> {
    let mut at = 0;
    let entries: Vec<String> = tensors
        .iter()
        .map(|(name, dtype, bytes)| {
            let width = match *dtype {
                "F32" => 4,
                "I64" => 8,
                _ => 2,
            };
            let e = format!(
                r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{at},{}]}}"#,
                bytes.len() / width,
                at + bytes.len()
            );
            at += bytes.len();
            e
        })
        .collect();
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for (_, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    out
}

/// Packs `data` as a one-file model `name` (file `name.bin`).
pub fn pack_bytes(dir: &Path, store: &str, name: &str, data: &[u8], extra: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.bin"));
    fs::write(&src, data).unwrap();
    pack(&src, store, extra);
    src
}

/// A fresh store of directory members with model "m" packed: `len` random bytes from `seed`,
/// packed with `extra`. `dir` holds the members (`m0`, `m1`, ...) and room for more; the
/// folder goes when `dir` is dropped, so a test that takes the fields apart binds it too.
pub struct Packed {
    pub dir: tempfile::TempDir,
    pub paths: Vec<PathBuf>,
    pub store: String,
    pub data: Vec<u8>,
    /// The source file packed.
    pub src: PathBuf,
}

/// Packs model "m" into a new store of `n` members (see `Packed`).
pub fn packed(n: usize, seed: u64, len: usize, extra: &[&str]) -> Packed {
    let dir = tempfile::tempdir().unwrap();
    let paths = members(dir.path(), n);
    let store = store_arg(&paths);
    let data = Rng::new(seed).bytes(len);
    let src = pack_bytes(dir.path(), &store, "m", &data, extra);
    Packed {
        dir,
        paths,
        store,
        data,
        src,
    }
}

/// `shardfs pack SRC --store STORE EXTRA...`, which must succeed; returns its output.
pub fn pack(src: &Path, store: &str, extra: &[&str]) -> Output {
    let mut args = vec!["pack", src.to_str().unwrap(), "--store", store];
    args.extend_from_slice(extra);
    ok(&args)
}

/// The python that has the model libraries, as set up by `scripts/setup` (`scripts/test` sets
/// SHARDFS_PYTHON).
pub fn python() -> PathBuf {
    match std::env::var_os("SHARDFS_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "SHARDFS_PYTHON is not set: run the suite with scripts/test, which creates the Python venv"
        ),
    }
}

/// Writes the sample models of `scripts/gen_models.py` (every format, about `mib` MiB each)
/// into `dir`.
pub fn gen_models(dir: &Path, mib: u32) {
    python_script(
        "gen_models.py",
        &[dir.to_str().unwrap(), "--mib", &mib.to_string()],
    );
}

/// Runs `scripts/SCRIPT ARGS...` with the python that has the model libraries; fails the test if
/// the script fails. Returns what it printed.
pub fn python_script(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let out = Command::new(python())
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Makes a named pipe at `path`.
pub fn mkfifo(path: &Path) {
    assert!(
        Command::new("mkfifo").arg(path).status().unwrap().success(),
        "mkfifo {}",
        path.display()
    );
}

/// Sends `signal` (e.g. "-9", "-TERM") to `pid` and waits until the process is gone.
pub fn kill_and_wait(pid: u32, signal: &str) {
    assert!(
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    while process_alive(pid) {
        std::thread::yield_now();
    }
}
/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A member's id and index, from its member file.
pub fn member_id(member: &Path) -> (String, u64) {
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(member.join("shardfs-store.json")).unwrap()).unwrap();
    (
        info["member_id"].as_str().unwrap().to_string(),
        info["index"].as_u64().unwrap(),
    )
}

mod mount;
pub mod sync;
pub mod web;
pub mod weed;

pub use mount::*;

/// A read-only shared map of a whole open file.
pub struct Map {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Map {
    pub fn new(f: &fs::File) -> Map {
        let len = f.metadata().unwrap().len() as usize;
        // SAFETY: a fresh read-only mapping of an open file.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(f),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        Map { ptr, len }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is live and `len` long.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
    }

    /// Drops the mapping's pages, so the next access faults them in from the mount again.
    #[allow(dead_code)]
    pub fn drop_pages(&self, f: &fs::File) {
        // SAFETY: advice on a live mapping and an open file.
        unsafe {
            assert_eq!(libc::madvise(self.ptr, self.len, libc::MADV_DONTNEED), 0);
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(f),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps what `new` mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The signing key of the store `member` belongs to, as this host keeps it (`pack` made it).
pub fn store_key(member: &Path) -> shardfs::trust::keys::StoreKey {
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(member.join("shardfs-store.json")).unwrap()).unwrap();
    let id = info["store_id"].as_str().unwrap();
    let path = config_dir()
        .join("shardfs")
        .join("keys")
        .join(format!("{id}.key"));
    shardfs::trust::keys::StoreKey::load(&path).unwrap()
}

/// Writes `body` at `rel` in `member`, signed with the store's own key, as a holder of the key
/// would (a test that plants content shardfs must take as the store's own).
pub fn write_signed(member: &Path, rel: &str, body: &[u8]) {
    use shardfs::trust::keys::Kind;
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(member.join("shardfs-store.json")).unwrap()).unwrap();
    let kind = if rel == "members.json" {
        Kind::MemberList
    } else {
        Kind::Manifest
    };
    let signed = store_key(member).sign(kind, info["store_id"].as_str().unwrap(), body);
    fs::write(member.join(rel), signed).unwrap();
}

/// Waits until `done` holds, for at most `limit` (a liveness bound, not a measurement).
pub fn wait_for(limit: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::yield_now();
    }
}
