//! The state file of each live mount, and the `unmount` and `status` commands, including
//! clean-up after a daemon that died.

use super::procfs::{is_shardfs, mounted_fstype, mounts_under, process_start};
use super::{DaemonError, MountOptionsRecord, err};
use crate::fs::{Counters, REFRESH_XATTR, STATUS_XATTR, XATTR_MAX};
use crate::store::health::ModelHealth;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The state file of a live mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountState {
    /// The id its lease on the members carries (empty in state files that predate it).
    #[serde(default)]
    pub mount_id: String,
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
    /// Each model's health among the members that opened when the mount started.
    #[serde(default)]
    pub models: Vec<ModelHealth>,
}

/// Whether a mount's daemon is there and answering (in `--json` by its lowercase name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonState {
    Live,
    /// Running, but it did not answer within 5 s.
    Unresponsive,
    /// Gone: its mount and state were cleaned up.
    Stale,
}

impl std::fmt::Display for DaemonState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DaemonState::Live => "live",
            DaemonState::Unresponsive => "unresponsive",
            DaemonState::Stale => "stale",
        })
    }
}

/// One line of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct MountStatus {
    pub state: DaemonState,
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
    // An empty XDG_RUNTIME_DIR is unset, not the current directory.
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("shardfs"),
        None => PathBuf::from(format!("/tmp/shardfs-{uid}")),
    }
}

/// The state directory, made (mode 0700) where missing and checked: a directory (not a link)
/// owned by this user that no one else may write, so no one else can plant the log or state
/// files shardfs writes there.
pub fn ensure_state_dir() -> Result<PathBuf, DaemonError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = state_dir();
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| err(format!("{}: {e}", parent.display())))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(format!("{}: {e}", dir.display()))),
    }
    let meta = fs::symlink_metadata(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(err(format!(
            "state directory {} is not a private directory of this user (a link, another owner, or writable by others); remove it or set SHARDFS_STATE_DIR",
            dir.display()
        )));
    }
    Ok(dir)
}

pub(super) fn state_paths(mountpoint: &Path) -> (PathBuf, PathBuf) {
    let key = blake3::hash(mountpoint.as_os_str().as_bytes()).to_hex();
    let dir = state_dir();
    (
        dir.join(format!("{}.json", &key[..16])),
        dir.join(format!("{}.log", &key[..16])),
    )
}

/// The path a mountpoint is known by: canonical when it can be resolved, else absolute (a stale
/// mount cannot be resolved).
pub(super) fn mount_path(p: &Path) -> PathBuf {
    fs::canonicalize(p)
        .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
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

pub(super) fn write_state(path: &Path, state: &MountState) -> Result<(), DaemonError> {
    let dir = ensure_state_dir()?;
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
            let why = match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => "does not exist",
                _ => "is not a shardfs mount",
            };
            return Err(DaemonError::NotMounted(format!("{} {why}", path.display())));
        }
        None => {}
        Some(t) if is_shardfs(t) => {
            let lazy = !alive;
            kernel_unmount(&path, lazy).map_err(|e| {
                // fusermount3 reports busy in words only: a mount inside is named either way.
                if let Some(inner) = mounts_under(&path).first() {
                    err(format!(
                        "{} is busy: {} is mounted inside it; unmount that first",
                        path.display(),
                        inner.display()
                    ))
                } else if e.raw_os_error() == Some(libc::EBUSY) {
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
    if let Some(s) = state.as_ref().filter(|_| !alive) {
        drop_dead_lease(s);
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

/// A daemon that died (`kill -9`) left its lease on the members: it is removed, so that gc and
/// member changes stop counting a live mount that is not there.
fn drop_dead_lease(state: &MountState) {
    if state.mount_id.is_empty() {
        return;
    }
    let specs: Result<Vec<_>, _> = state
        .store
        .iter()
        .map(crate::member::MemberSpec::parse)
        .collect();
    match specs.and_then(|specs| {
        crate::store::Store::open_with(&specs, &state.options.members())
            .map_err(|e| crate::member::MemberError::Invalid(e.to_string()))
    }) {
        Ok(store) => store.drop_lease(&state.mount_id),
        Err(e) => log::warn!(
            "the dead mount's lease was not removed ({e}); it is ignored once 10 minutes old"
        ),
    }
}

/// Live counters of a mount, read from the root's status attribute (with a time limit, so a hung
/// daemon cannot hang `status`).
fn live_counters(mountpoint: &str) -> Option<Counters> {
    read_counters(mountpoint, STATUS_XATTR, Duration::from_secs(5)).ok()
}

/// `shardfs refresh`: makes a live mount look for new versions now; returns its counters once
/// it has.
pub fn refresh(mountpoint: &Path) -> Result<MountStatus, DaemonError> {
    let path = mount_path(mountpoint);
    let (state_path, _) = state_paths(&path);
    let Some(mount) = read_state(&state_path).filter(daemon_alive) else {
        return Err(DaemonError::NotMounted(format!(
            "no live shardfs mount at {}",
            path.display()
        )));
    };
    if mount.options.pin {
        return Err(err(format!(
            "{} is pinned (mounted with --pin): it serves the versions it was mounted with",
            path.display()
        )));
    }
    let counters = read_counters(&mount.mountpoint, REFRESH_XATTR, Duration::from_secs(120))
        .map_err(|e| {
            err(format!(
                "{}: the refresh did not finish: {e}",
                path.display()
            ))
        })?;
    Ok(MountStatus {
        state: DaemonState::Live,
        mount,
        counters: Some(counters),
    })
}

/// Reads counters from attribute `attr` of a mount's root, waiting at most `timeout`.
fn read_counters(
    mountpoint: &str,
    attr: &'static str,
    timeout: Duration,
) -> Result<Counters, String> {
    let path = CString::new(mountpoint).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let name = CString::new(attr).unwrap_or_default();
        let mut buf = vec![0u8; XATTR_MAX];
        // SAFETY: valid path, name and buffer of the given size.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let value = if n > 0 {
            Ok(buf[..n as usize].to_vec())
        } else {
            Err(io::Error::last_os_error().to_string())
        };
        let _ = tx.send(value);
    });
    let bytes = rx
        .recv_timeout(timeout)
        .map_err(|_| format!("no answer in {} s", timeout.as_secs()))??;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
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
            // A daemon that is there but does not answer (hung, or every thread stuck) is
            // not called live.
            let counters = live_counters(&mount.mountpoint);
            let state = if counters.is_some() {
                DaemonState::Live
            } else {
                DaemonState::Unresponsive
            };
            out.push(MountStatus {
                state,
                mount,
                counters,
            });
        } else {
            let mp = PathBuf::from(&mount.mountpoint);
            if mounted_fstype(&mp).is_some_and(|t| is_shardfs(&t)) {
                let _ = kernel_unmount(&mp, true);
            }
            drop_dead_lease(&mount);
            let _ = fs::remove_file(&p);
            out.push(MountStatus {
                state: DaemonState::Stale,
                mount,
                counters: None,
            });
        }
    }
    Ok(out)
}
