//! Running a mount: detaching the daemon (it re-executes itself in the foreground, in a new
//! session, and reports "mounted" or the failure back through a pipe), serving the mount,
//! signals (SIGTERM/SIGINT/SIGHUP unmount cleanly) and the read-ahead window. `checks` holds what
//! is checked before mounting, `control` the state files and the `unmount` and `status`
//! commands, `procfs` what is read from `/proc`.

mod checks;
mod control;
mod follow;
mod http;
mod metrics;
mod procfs;

pub use control::{DaemonState, MountState, MountStatus, refresh, state_dir, status, unmount};
pub use procfs::{mounted_fstype, shardfs_mount_of};

use crate::fs::{Core, FsOptions, ShardFs};
use crate::store::StoreError;
use crate::store::health::Health;
use crate::units::format_bytes;
use checks::preflight;
use control::{state_paths, write_state};
use procfs::{mountinfo, process_start};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
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
    /// The member deadline (`--member-timeout`), in milliseconds.
    #[serde(default = "default_member_timeout_ms")]
    pub member_timeout_ms: u64,
    /// The slowest member transfer allowed (`--member-min-rate`), in bytes per second.
    #[serde(default = "default_member_min_rate")]
    pub member_min_rate: u64,
    /// How often the mount looks for new versions (`--refresh`), in milliseconds.
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// Serve the models as they were at mount time (`--pin`).
    #[serde(default)]
    pub pin: bool,
    /// Where `/metrics` is served (`--metrics`), if anywhere.
    #[serde(default)]
    pub metrics: Option<String>,
    /// The local decompressed tier (`--local-cache`), and its size bound.
    #[serde(default)]
    pub local_cache: Option<String>,
    #[serde(default)]
    pub local_cache_size: u64,
    /// No `--local-cache` and no `--no-local-cache`: the daemon opens the default tier for its
    /// mountpoint ([`crate::tier::place`]), and goes on without one if it cannot.
    #[serde(default)]
    pub local_cache_default: bool,
}

fn default_refresh_ms() -> u64 {
    DEFAULT_REFRESH_MS
}

fn default_member_min_rate() -> u64 {
    crate::member::DEFAULT_MIN_RATE
}

fn default_member_timeout_ms() -> u64 {
    crate::member::DEFAULT_TIMEOUT.as_millis() as u64
}

impl MountOptionsRecord {
    pub fn refresh(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.refresh_ms.max(100))
    }

    /// How often the mount looks at the store: every `refresh` for new versions, or, when
    /// pinned, only for the store's member list.
    pub fn follow_every(&self) -> std::time::Duration {
        if self.pin {
            FOLLOW_EVERY
        } else {
            self.refresh()
        }
    }

    /// Member options the mount opens its store with.
    pub fn members(&self) -> crate::member::Options {
        crate::member::Options {
            timeout: std::time::Duration::from_millis(self.member_timeout_ms.max(1)),
            min_rate: self.member_min_rate.max(1),
            ..crate::member::Options::default()
        }
    }
}

/// What `mount` was asked to do.
#[derive(Debug, Clone)]
pub struct MountRequest {
    pub store: Vec<crate::member::MemberSpec>,
    pub mountpoint: PathBuf,
    pub name: Option<String>,
    pub options: MountOptionsRecord,
    pub foreground: bool,
    /// Mount even when some chunk has no replica on a member that opened.
    pub allow_degraded: bool,
    /// Print nothing on success.
    pub quiet: bool,
}

/// `shardfs mount`: mounts and returns once the mount is live (or runs it, with `foreground`).
/// Unless `quiet`, prints one line once the mount is live: what is mounted where.
pub fn mount(req: &MountRequest) -> Result<(), DaemonError> {
    if req.foreground {
        // Before any thread starts (opening the store starts some: a thread pool, an S3
        // member's runtime), so that signals reach only the thread that waits for them.
        crate::signals::block_exit_signals();
    }
    let checked = preflight(req)?;
    let ready_fd = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    if req.foreground {
        // SAFETY: the fd was handed to this process by its parent for this purpose alone.
        let ready = ready_fd.map(|fd| unsafe { fs::File::from(OwnedFd::from_raw_fd(fd)) });
        return serve(req, checked, ready);
    }
    spawn_daemon(req, &checked.canonical)?;
    if !req.quiet {
        crate::say!("{}", mounted_line(req, &checked));
    }
    Ok(())
}

/// `mounted 2 models (5 files, 1.2 GiB) at /mnt/models from 3 members; cache 1.0 GiB`.
fn mounted_line(req: &MountRequest, checked: &checks::Checked) -> String {
    let ms = &checked.manifests;
    let files: usize = ms.iter().map(|m| m.files.len()).sum();
    let bytes: u64 = ms.iter().map(|m| m.logical_size()).sum();
    let what = match (&req.name, ms.len()) {
        (Some(n), _) => format!("model '{n}'"),
        (None, 1) => "1 model".to_string(),
        (None, n) => format!("{n} models"),
    };
    let not_ok: Vec<String> = checked
        .health
        .iter()
        .filter(|h| h.health != Health::Ok)
        .map(|h| format!("; model '{}' is {}", h.model, h.health.as_str()))
        .collect();
    format!(
        "mounted {what} ({}, {}) at {} from {}; cache {}{}",
        crate::units::count(files as u64, "file"),
        format_bytes(bytes),
        checked.canonical.display(),
        crate::units::count(checked.store.members.len() as u64, "member"),
        format_bytes(req.options.cache_size),
        not_ok.concat()
    )
}

/// How often a pinned mount re-reads the store's member list.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(3);
/// How often a mount looks for new versions unless told (`--refresh`).
pub const DEFAULT_REFRESH_MS: u64 = 3000;

/// Starts the daemon (this binary with `--foreground`), detached in its own session with its
/// output in the log file, and waits for it to report the mount live or failed.
/// The source /proc/mounts shows for a mount: the store as given, members joined by commas.
fn mount_source(store: &[crate::member::MemberSpec]) -> String {
    store
        .iter()
        .map(|spec| spec.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join(",")
}

/// The descriptor the daemon says "ok" or "error: ..." on, once the mount is live or failed.
const CHILD_FD: i32 = 3;

/// The command that starts the daemon: this binary's `mount --foreground` with `req`'s options,
/// its output into `log`.
fn daemon_command(
    req: &MountRequest,
    canonical: &Path,
    log: fs::File,
) -> Result<Command, DaemonError> {
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
        .arg("--member-timeout")
        .arg(format!("{}ms", req.options.member_timeout_ms))
        .arg("--member-min-rate")
        .arg(req.options.member_min_rate.to_string())
        .arg("--refresh")
        .arg(format!("{}ms", req.options.refresh_ms))
        .arg("--foreground")
        .env(READY_FD_ENV, CHILD_FD.to_string())
        // Readiness goes back through the pipe; systemd's main process is this command's.
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| err(e.to_string()))?)
        .stderr(log);
    if let Some(n) = &req.name {
        cmd.arg("--name").arg(n);
    }
    if req.options.allow_other {
        cmd.arg("--allow-other");
    }
    if req.allow_degraded {
        cmd.arg("--allow-degraded");
    }
    if req.options.pin {
        cmd.arg("--pin");
    }
    cmd.args(crate::trust::daemon_args());
    if let Some(addr) = &req.options.metrics {
        cmd.arg("--metrics").arg(addr);
    }
    if let Some(dir) = &req.options.local_cache {
        cmd.arg("--local-cache").arg(dir);
    } else if !req.options.local_cache_default {
        cmd.arg("--no-local-cache");
    }
    cmd.arg("--local-cache-size")
        .arg(req.options.local_cache_size.to_string());
    Ok(cmd)
}

fn spawn_daemon(req: &MountRequest, canonical: &Path) -> Result<(), DaemonError> {
    let (_, log_path) = state_paths(canonical);
    control::ensure_state_dir()?;
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&log_path)
    }
    .map_err(|e| err(format!("{}: {e}", log_path.display())))?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(err(format!("pipe: {}", io::Error::last_os_error())));
    }
    // SAFETY: both fds were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut cmd = daemon_command(req, canonical, log)?;
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

/// Runs the mount in this process until it is unmounted.
fn serve(
    req: &MountRequest,
    checked: checks::Checked,
    mut ready: Option<fs::File>,
) -> Result<(), DaemonError> {
    let line = mounted_line(req, &checked);
    let checks::Checked {
        canonical,
        store,
        manifests,
        health,
    } = checked;
    let sigset = crate::signals::block_exit_signals();
    let result = (|| -> Result<(), DaemonError> {
        let opts = fs_options(req, &canonical)?;
        // Bound before the mount (and before the lease, which a refused mount must not leave
        // behind): an address that is taken or bad fails it.
        let metrics_server = match &req.options.metrics {
            Some(addr) => Some(metrics::bind(addr).map_err(err)?),
            None => None,
        };
        // The lease names what this mount reads, so gc and member changes leave it in place.
        let store = Arc::new(store);
        let (mount_id, lease) = take_lease(&store, &canonical, &manifests)?;
        let catalog = (!req.options.pin)
            .then(|| crate::store::catalog::Catalog::new(&store, req.name.clone(), &manifests));
        let layout = crate::fs::Layout::of_mount(req.name.as_deref());
        let mut fs = Core::new(store.clone(), manifests, layout, &opts)
            .map_err(|e| err(format!("cannot start worker threads: {e}")))?;
        let (ask_refresh, refresh_asked) = crossbeam_channel::bounded(crate::fs::REFRESH_WAITING);
        if !req.options.pin {
            fs.on_refresh(ask_refresh);
        }
        let live = fs.live();
        let config = fuse_config(req);
        let mut session = match fuser::Session::new(ShardFs(fs), &canonical, &config) {
            Ok(s) => s,
            Err(e) => {
                store.drop_lease(&mount_id);
                return Err(err(format!("cannot mount {}: {e}", canonical.display())));
            }
        };
        let unmounter = session.unmount_callable();
        live.hand_over_to(Arc::new(session.notifier()));
        let _metrics = metrics_server
            .map(|s| metrics::start(s, live.clone()))
            .transpose()
            .map_err(err)?;
        // From now on the mount follows the store (see `follow`).
        let (stop_following, stopped) = crossbeam_channel::bounded::<()>(1);
        let follow = follow::Follow {
            store,
            live,
            kernel: session.notifier(),
            catalog,
            lease,
            every: req.options.follow_every(),
            members: req.options.members(),
        };
        let following = std::thread::spawn(move || follow.run(stopped, refresh_asked));
        set_read_ahead(&canonical, req.options.read_ahead_kb);
        let (state_path, log_path) = state_paths(&canonical);
        let state = mount_state(req, &canonical, &mount_id, &log_path, health);
        write_state(&state_path, &state)?;
        unmount_on_signal(sigset, unmounter);
        say_live(&line, ready.take(), req.quiet);
        let run = session.run();
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        drop(stop_following);
        let _ = following.join();
        let _ = fs::remove_file(&state_path);
        remove_if_empty(&log_path);
        log::info!("unmounted {}", canonical.display());
        run.map_err(|e| err(format!("session ended with an error: {e}")))
    })();
    if let (Err(e), Some(mut r)) = (&result, ready) {
        let _ = writeln!(r, "error: {e}");
    }
    result
}

/// The FUSE session's options for `req`.
fn fuse_config(req: &MountRequest) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        // /proc/mounts shows the store as the source and the type as fuse.shardfs, as
        // an fstab line names them, so `findmnt -t fuse.shardfs` finds the mount and a
        // second `mount -a` sees it is mounted. (fuser passes its Subtype option only to
        // fusermount; the kernel takes `subtype=` itself.)
        fuser::MountOption::FSName(mount_source(&req.store)),
        fuser::MountOption::CUSTOM("subtype=shardfs".to_string()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if req.options.allow_other {
        // Other users see the modes the manifests record, and the kernel checks them.
        config.acl = fuser::SessionACL::All;
        config
            .mount_options
            .push(fuser::MountOption::DefaultPermissions);
    }
    config.n_threads = Some(2);
    config.clone_fd = true;
    config
}

/// What `status` reads about this mount.
fn mount_state(
    req: &MountRequest,
    canonical: &Path,
    mount_id: &str,
    log_path: &Path,
    health: Vec<crate::store::health::ModelHealth>,
) -> MountState {
    MountState {
        mount_id: mount_id.to_string(),
        pid: std::process::id(),
        pid_start: process_start(std::process::id()).unwrap_or(0),
        mountpoint: canonical.display().to_string(),
        store: req
            .store
            .iter()
            .map(|spec| spec.recorded().to_string())
            .collect(),
        model: req.name.clone(),
        options: req.options.clone(),
        started_unix: crate::clock::now_unix_secs(),
        log: log_path.display().to_string(),
        models: health,
    }
}

/// Unmounts once a signal of `sigset` arrives (watched on a thread of its own).
fn unmount_on_signal(sigset: libc::sigset_t, mut unmounter: fuser::SessionUnmounter) {
    let watching = crate::signals::on_exit_signal(sigset, move |sig| {
        log::info!("signal {sig}: unmounting");
        if let Err(e) = unmounter.unmount() {
            log::error!("unmount on signal failed: {e}");
        }
    });
    if !watching {
        log::warn!("cannot start the signal thread: a signal ends the daemon without unmounting");
    }
}

/// A new mount id and the lease it writes on the store, naming what the mount reads.
fn take_lease(
    store: &crate::store::Store,
    canonical: &Path,
    manifests: &[crate::store::manifest::Manifest],
) -> Result<(String, crate::store::lease::Lease), DaemonError> {
    let mount_id =
        crate::store::member::new_id().map_err(|e| err(format!("cannot make a mount id: {e}")))?;
    let mut lease =
        crate::store::lease::Lease::new(&mount_id, &canonical.display().to_string(), manifests);
    store.write_lease(&mut lease);
    Ok((mount_id, lease))
}

/// The mount core's options for `req`, opening its local tier: the one asked for (which must
/// open), else the default for `mountpoint` unless `--no-local-cache` (which need not).
fn fs_options(req: &MountRequest, mountpoint: &Path) -> Result<FsOptions, DaemonError> {
    let size = req.options.local_cache_size;
    let tier = match &req.options.local_cache {
        Some(dir) => Some(crate::tier::Tier::open(Path::new(dir), size).map_err(err)?),
        None if req.options.local_cache_default => {
            crate::tier::place::open_default(mountpoint, size)
        }
        None => None,
    };
    Ok(FsOptions {
        cache_size: req.options.cache_size,
        prefetch: req.options.prefetch,
        threads: req.options.threads,
        kernel_read_ahead: req.options.read_ahead_kb * 1024,
        tier,
    })
}

/// Says the mount is live: in the log, to systemd (`Type=notify`), and to the command that
/// started this daemon (`ready`) or else on stdout unless `quiet`.
fn say_live(line: &str, ready: Option<fs::File>, quiet: bool) {
    log::info!("{line} (pid {})", std::process::id());
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(line),
    ]);
    match ready {
        Some(mut r) => {
            let _ = r.write_all(b"ok\n");
        }
        None if !quiet => crate::say!("{line}"),
        None => {}
    }
}

/// A clean session that logged nothing leaves no empty log behind.
fn remove_if_empty(log_path: &Path) {
    if fs::metadata(log_path).is_ok_and(|m| m.len() == 0) {
        let _ = fs::remove_file(log_path);
    }
}

/// Tells systemd (when it started this process with `NOTIFY_SOCKET`) how the mount is doing.
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// Raises the kernel's read-ahead window of the mount's backing device, so sequential readers
/// send large reads (up to fs.fuse.max_pages_limit) and several at once. Only root may; others
/// keep the kernel default. The device comes from mountinfo: a stat of the mountpoint would ask
/// this very daemon, which does not answer yet.
pub fn set_read_ahead(mountpoint: &Path, kb: u64) {
    let Some(dev) = mountinfo(mountpoint).map(|m| m.dev) else {
        return;
    };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match fs::write(&knob, kb.to_string()) {
        Ok(()) => log::info!("read-ahead of {} set to {kb} KiB", mountpoint.display()),
        Err(e) => log::info!("cannot set {knob} ({e}); keeping the kernel's read-ahead"),
    }
}
