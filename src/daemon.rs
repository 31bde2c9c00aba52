//! Running a mount: the checks before mounting, detaching the daemon (it re-executes itself in
//! the foreground, in a new session, and reports "mounted" or the failure back through a pipe),
//! signals (SIGTERM/SIGINT/SIGHUP unmount cleanly), the state file of each live mount, and the
//! `unmount` and `status` commands, including clean-up after a daemon that died.

use crate::fs::{Counters, FsOptions, STATUS_XATTR, ShardFs};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The environment variable that tells a re-executed daemon which fd reports readiness.
const READY_FD_ENV: &str = "SHARDFS_READY_FD";

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Mount(String),
    #[error("{0}")]
    NotMounted(String),
}

fn err(msg: impl Into<String>) -> DaemonError {
    DaemonError::Mount(msg.into())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountOptionsRecord {
    pub cache_size: u64,
    pub prefetch: usize,
    pub threads: usize,
    pub allow_other: bool,
    /// The kernel's read-ahead window for the mount, in KiB (set when running as root).
    pub read_ahead_kb: u64,
}

/// What `mount` was asked to do.
#[derive(Debug, Clone)]
pub struct MountRequest {
    pub store: Vec<PathBuf>,
    pub mountpoint: PathBuf,
    pub name: Option<String>,
    pub options: MountOptionsRecord,
    pub foreground: bool,
}

/// The state file of a live mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountState {
    pub pid: u32,
    /// When the daemon started (clock ticks since boot, field 22 of `/proc/PID/stat`): tells it
    /// from a later process that got the same pid. 0 in state files that predate it.
    #[serde(default)]
    pub pid_start: u64,
    pub mountpoint: String,
    pub store: Vec<String>,
    pub model: Option<String>,
    pub options: MountOptionsRecord,
    pub started_unix: u64,
    pub log: String,
}

/// One line of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct MountStatus {
    /// `live`, or `stale` for a mount whose daemon is gone (its state is then cleaned).
    pub state: String,
    #[serde(flatten)]
    pub mount: MountState,
    #[serde(flatten)]
    pub counters: Option<Counters>,
}

/// Where state files live: `$SHARDFS_STATE_DIR`, else `/run/shardfs` for root, else
/// `$XDG_RUNTIME_DIR/shardfs`, else `/tmp/shardfs-<uid>`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHARDFS_STATE_DIR") {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/shardfs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("shardfs"),
        None => PathBuf::from(format!("/tmp/shardfs-{uid}")),
    }
}

fn state_paths(mountpoint: &Path) -> (PathBuf, PathBuf) {
    let key = blake3::hash(mountpoint.as_os_str().as_bytes()).to_hex();
    let dir = state_dir();
    (
        dir.join(format!("{}.json", &key[..16])),
        dir.join(format!("{}.log", &key[..16])),
    )
}

/// The path a mountpoint is known by: canonical when it can be resolved, else absolute (a stale
/// mount cannot be resolved).
fn mount_path(p: &Path) -> PathBuf {
    fs::canonicalize(p)
        .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// What /proc/self/mountinfo says of the topmost mount exactly at `path`:
/// (`major:minor`, `fstype source`). A shardfs mount is `fuse shardfs` or `fuse.shardfs shardfs`.
fn mountinfo(path: &Path) -> Option<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_bytes();
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        (fields.len() > dash + 1 && fields.len() > 4 && unescape(fields[4]) == want).then(|| {
            let kind = format!(
                "{} {}",
                fields[dash + 1],
                fields.get(dash + 2).unwrap_or(&"")
            );
            (fields[2].to_string(), kind)
        })
    })
}

/// The `fstype source` of what is mounted exactly at `path`.
pub fn mounted_fstype(path: &Path) -> Option<String> {
    mountinfo(path).map(|(_, kind)| kind)
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn is_shardfs(fstype: &str) -> bool {
    fstype.starts_with("fuse") && fstype.ends_with(" shardfs")
}

/// When process `pid` started (clock ticks since boot), if it runs (a zombie does not).
fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after it follow the
    // last ')'. Field 3 is the state, field 22 the start time.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the daemon a state file names still runs (pids are reused: the start time must match).
fn daemon_alive(state: &MountState) -> bool {
    match process_start(state.pid) {
        None => false,
        Some(start) if state.pid_start != 0 => start == state.pid_start,
        // An older state file: the process must at least be a shardfs.
        Some(_) => fs::read(format!("/proc/{}/cmdline", state.pid))
            .is_ok_and(|c| c.windows(7).any(|w| w == b"shardfs")),
    }
}

/// Checks everything that can be checked before mounting; returns the canonical mountpoint,
/// the store and the manifests to serve.
fn preflight(
    req: &MountRequest,
) -> Result<(PathBuf, Store, Vec<crate::store::manifest::Manifest>), DaemonError> {
    let mp = &req.mountpoint;
    match fs::metadata(mp) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(err(format!(
                "{} is a stale mount (transport endpoint is not connected); run 'shardfs unmount {}' first",
                mp.display(),
                mp.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(err(format!("mountpoint {} does not exist", mp.display())));
        }
        Err(e) => return Err(err(format!("mountpoint {}: {e}", mp.display()))),
        Ok(m) if !m.is_dir() => {
            return Err(err(format!(
                "mountpoint {} is not a directory",
                mp.display()
            )));
        }
        Ok(_) => {}
    }
    let canonical = mount_path(mp);
    if let Some(fstype) = mounted_fstype(&canonical) {
        return Err(err(format!(
            "{} is already a mount point ({fstype}); unmount it first",
            canonical.display()
        )));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(err(
            "/dev/fuse is missing: load the fuse kernel module (modprobe fuse) or run where FUSE is available",
        ));
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 && find_in_path("fusermount3").is_none() {
        return Err(err("fusermount3 not found: install the fuse3 package"));
    }
    let store = Store::open(&req.store)?;
    let manifests = match &req.name {
        Some(n) => vec![store.manifest(n)?],
        None => store.manifests()?,
    };
    if manifests.is_empty() {
        return Err(err("the store holds no models to mount"));
    }
    Ok((canonical, store, manifests))
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// `shardfs mount`: mounts and returns once the mount is live (or runs it, with `foreground`).
pub fn mount(req: &MountRequest) -> Result<(), DaemonError> {
    let (canonical, store, manifests) = preflight(req)?;
    let ready_fd = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    if req.foreground {
        // SAFETY: the fd was handed to this process by its parent for this purpose alone.
        let ready = ready_fd.map(|fd| unsafe { fs::File::from(OwnedFd::from_raw_fd(fd)) });
        return serve(req, canonical, store, manifests, ready);
    }
    drop(store);
    spawn_daemon(req, &canonical)
}

/// Starts the daemon (this binary with `--foreground`), detached in its own session with its
/// output in the log file, and waits for it to report the mount live or failed.
fn spawn_daemon(req: &MountRequest, canonical: &Path) -> Result<(), DaemonError> {
    let (_, log_path) = state_paths(canonical);
    fs::create_dir_all(state_dir()).map_err(|e| err(format!("{}: {e}", state_dir().display())))?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| err(format!("{}: {e}", log_path.display())))?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(err(format!("pipe: {}", io::Error::last_os_error())));
    }
    // SAFETY: both fds were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    const CHILD_FD: i32 = 3;
    let exe =
        std::env::current_exe().map_err(|e| err(format!("cannot find the shardfs binary: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg("--store")
        .arg(
            req.store
                .iter()
                .map(|p| p.as_os_str().to_owned())
                .collect::<Vec<_>>()
                .join(std::ffi::OsStr::new(",")),
        )
        .arg(canonical)
        .arg("--cache-size")
        .arg(req.options.cache_size.to_string())
        .arg("--prefetch")
        .arg(req.options.prefetch.to_string())
        .arg("--threads")
        .arg(req.options.threads.to_string())
        .arg("--read-ahead")
        .arg(format!("{}KiB", req.options.read_ahead_kb))
        .arg("--foreground")
        .env(READY_FD_ENV, CHILD_FD.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| err(e.to_string()))?)
        .stderr(log);
    if let Some(n) = &req.name {
        cmd.arg("--name").arg(n);
    }
    if req.options.allow_other {
        cmd.arg("--allow-other");
    }
    let write_raw = write_end.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::dup2(write_raw, CHILD_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| err(format!("cannot start the daemon: {e}")))?;
    drop(write_end);
    let mut answer = String::new();
    let _ = fs::File::from(read_end).read_to_string(&mut answer);
    let answer = answer.trim();
    if answer == "ok" {
        return Ok(());
    }
    let _ = child.wait();
    if let Some(msg) = answer.strip_prefix("error: ") {
        Err(err(msg.to_string()))
    } else {
        Err(err(format!(
            "the daemon exited before the mount was live; see {}",
            log_path.display()
        )))
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and every thread started after, so that one
/// thread can wait for them with `sigwait`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Runs the mount in this process until it is unmounted.
fn serve(
    req: &MountRequest,
    canonical: PathBuf,
    store: Store,
    manifests: Vec<crate::store::manifest::Manifest>,
    mut ready: Option<fs::File>,
) -> Result<(), DaemonError> {
    let sigset = block_signals();
    // Large buffers (chunks) come from mmap and go back to the system when freed, so the resident
    // size follows the cache instead of the allocator's high-water mark.
    // SAFETY: mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    let result = (|| -> Result<(), DaemonError> {
        let opts = FsOptions {
            cache_size: req.options.cache_size,
            prefetch: req.options.prefetch,
            threads: req.options.threads,
        };
        let fs = ShardFs::new(Arc::new(store), manifests, req.name.is_some(), &opts)
            .map_err(|e| err(format!("cannot start worker threads: {e}")))?;
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::RO,
            fuser::MountOption::FSName("shardfs".to_string()),
            fuser::MountOption::Subtype("shardfs".to_string()),
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
        ];
        if req.options.allow_other {
            config.acl = fuser::SessionACL::All;
        }
        config.n_threads = Some(2);
        config.clone_fd = true;
        let mut session = fuser::Session::new(fs, &canonical, &config)
            .map_err(|e| err(format!("cannot mount {}: {e}", canonical.display())))?;
        let mut unmounter = session.unmount_callable();
        set_read_ahead(&canonical, req.options.read_ahead_kb);
        let (state_path, log_path) = state_paths(&canonical);
        let state = MountState {
            pid: std::process::id(),
            pid_start: process_start(std::process::id()).unwrap_or(0),
            mountpoint: canonical.display().to_string(),
            store: req
                .store
                .iter()
                .map(|p| mount_path(p).display().to_string())
                .collect(),
            model: req.name.clone(),
            options: req.options.clone(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            log: log_path.display().to_string(),
        };
        write_state(&state_path, &state)?;
        std::thread::spawn(move || {
            let mut sig = 0;
            // SAFETY: waits on the set blocked above.
            unsafe { libc::sigwait(&sigset, &mut sig) };
            log::info!("signal {sig}: unmounting");
            if let Err(e) = unmounter.unmount() {
                log::error!("unmount on signal failed: {e}");
            }
        });
        log::info!(
            "mounted {} (pid {})",
            canonical.display(),
            std::process::id()
        );
        if let Some(mut r) = ready.take() {
            let _ = r.write_all(b"ok\n");
        }
        let run = session.run();
        let _ = fs::remove_file(&state_path);
        // A clean session that logged nothing leaves no empty log behind.
        if fs::metadata(&log_path).is_ok_and(|m| m.len() == 0) {
            let _ = fs::remove_file(&log_path);
        }
        log::info!("unmounted {}", canonical.display());
        run.map_err(|e| err(format!("session ended with an error: {e}")))
    })();
    if let (Err(e), Some(mut r)) = (&result, ready) {
        let _ = writeln!(r, "error: {e}");
    }
    result
}

/// Raises the kernel's read-ahead window of the mount's backing device, so sequential readers
/// send large reads (up to fs.fuse.max_pages_limit) and several at once. Only root may; others
/// keep the kernel default. The device comes from mountinfo: a stat of the mountpoint would ask
/// this very daemon, which does not answer yet.
pub fn set_read_ahead(mountpoint: &Path, kb: u64) {
    let Some((dev, _)) = mountinfo(mountpoint) else {
        return;
    };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match fs::write(&knob, kb.to_string()) {
        Ok(()) => log::info!("read-ahead of {} set to {kb} KiB", mountpoint.display()),
        Err(e) => log::info!("cannot set {knob} ({e}); keeping the kernel's read-ahead"),
    }
}

fn write_state(path: &Path, state: &MountState) -> Result<(), DaemonError> {
    let dir = state_dir();
    fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| err(e.to_string()))?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    fs::write(&tmp, bytes)
        .and_then(|_| fs::rename(&tmp, path))
        .map_err(|e| err(format!("{}: {e}", path.display())))
}

fn read_state(path: &Path) -> Option<MountState> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Unmounts `path` with the kernel (root) or fusermount3; `lazy` detaches a busy or dead mount.
fn kernel_unmount(path: &Path, lazy: bool) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), if lazy { libc::MNT_DETACH } else { 0 }) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EPERM) {
        return Err(e);
    }
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u").arg("-q");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg(path).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Waits up to `timeout` for a process to exit.
fn wait_exit(state: &MountState, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, state.pid as libc::pid_t, 0) } as i32;
    if fd < 0 {
        return !daemon_alive(state);
    }
    // SAFETY: fd was just returned by pidfd_open.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    n == 1 || !daemon_alive(state)
}

/// `shardfs unmount`: unmounts, waits for the daemon to exit, and cleans up after a daemon that
/// died (a stale "transport endpoint is not connected" mount).
pub fn unmount(mountpoint: &Path) -> Result<String, DaemonError> {
    let path = mount_path(mountpoint);
    let (state_path, _) = state_paths(&path);
    let state = read_state(&state_path);
    let fstype = mounted_fstype(&path);
    let alive = state.as_ref().is_some_and(daemon_alive);
    match fstype.as_deref() {
        None if state.is_none() => {
            return Err(DaemonError::NotMounted(format!(
                "{} is not a shardfs mount",
                path.display()
            )));
        }
        None => {}
        Some(t) if is_shardfs(t) => {
            let lazy = !alive;
            kernel_unmount(&path, lazy).map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    err(format!(
                        "{} is busy: a process still uses files under it",
                        path.display()
                    ))
                } else {
                    err(format!("cannot unmount {}: {e}", path.display()))
                }
            })?;
        }
        Some(other) => {
            return Err(DaemonError::NotMounted(format!(
                "{} is a {other} mount, not shardfs",
                path.display()
            )));
        }
    }
    if let Some(s) = state.as_ref().filter(|_| alive)
        && !wait_exit(s, Duration::from_secs(20))
    {
        return Err(err(format!(
            "the daemon (pid {}) did not exit after the unmount",
            s.pid
        )));
    }
    let _ = fs::remove_file(&state_path);
    Ok(if alive || state.is_none() {
        format!("unmounted {}", path.display())
    } else {
        format!(
            "cleaned up the stale mount at {} (its daemon had died)",
            path.display()
        )
    })
}

/// Live counters of a mount, read from the root's status attribute (with a time limit, so a hung
/// daemon cannot hang `status`).
fn live_counters(mountpoint: &str) -> Option<Counters> {
    let path = CString::new(mountpoint).ok()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let name = CString::new(STATUS_XATTR).unwrap_or_default();
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: valid path, name and buffer of the given size.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let value = (n > 0).then(|| buf[..n as usize].to_vec());
        let _ = tx.send(value);
    });
    let bytes = rx.recv_timeout(Duration::from_secs(5)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// `shardfs status`: every mount this machine's state directory knows (or one), live or stale.
/// Stale entries are cleaned as they are reported.
pub fn status(mountpoint: Option<&Path>) -> Result<Vec<MountStatus>, DaemonError> {
    let paths: Vec<PathBuf> = match mountpoint {
        Some(mp) => {
            let (p, _) = state_paths(&mount_path(mp));
            if !p.exists() {
                return Err(DaemonError::NotMounted(format!(
                    "no shardfs mount at {}",
                    mount_path(mp).display()
                )));
            }
            vec![p]
        }
        None => match fs::read_dir(state_dir()) {
            Ok(entries) => {
                let mut v: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect();
                v.sort();
                v
            }
            Err(_) => vec![],
        },
    };
    let mut out = Vec::new();
    for p in paths {
        let Some(mount) = read_state(&p) else {
            continue;
        };
        if daemon_alive(&mount) {
            let counters = live_counters(&mount.mountpoint);
            out.push(MountStatus {
                state: "live".into(),
                mount,
                counters,
            });
        } else {
            let mp = PathBuf::from(&mount.mountpoint);
            if mounted_fstype(&mp).is_some_and(|t| is_shardfs(&t)) {
                let _ = kernel_unmount(&mp, true);
            }
            let _ = fs::remove_file(&p);
            out.push(MountStatus {
                state: "stale".into(),
                mount,
                counters: None,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/mnt/with\040space"), b"/mnt/with space");
        assert_eq!(unescape("/plain"), b"/plain");
        assert_eq!(unescape(r"/trailing\04"), br"/trailing\04");
        assert!(mounted_fstype(Path::new("/")).is_some());
        assert_eq!(mounted_fstype(Path::new("/surely/not/a/mount")), None);
    }
}
