//! What is checked before mounting: the mountpoint (exists, is an empty directory, is not
//! already a mount nor inside a shardfs mount), FUSE itself, the store and the models to serve,
//! and whether the members that opened hold a replica of every chunk of those models.

use super::control::mount_path;
use super::procfs::{is_shardfs, mount_holding, mounted_fstype};
use super::{DaemonError, MountRequest, err};
use crate::store::Store;
use crate::store::health::{Health, ModelHealth};
use crate::store::manifest::Manifest;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What the checks found: everything a mount needs.
pub(super) struct Checked {
    pub canonical: PathBuf,
    pub store: Store,
    pub manifests: Vec<Manifest>,
    /// Each model's health among the members that opened.
    pub health: Vec<ModelHealth>,
}

/// Checks everything that can be checked before mounting.
pub(super) fn preflight(req: &MountRequest) -> Result<Checked, DaemonError> {
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
    if let Some(outer) = mount_holding(&canonical).filter(|m| is_shardfs(&m.kind)) {
        return Err(err(format!(
            "{} is inside the shardfs mount {}; mount on a directory outside it",
            canonical.display(),
            outer.mount_point.display()
        )));
    }
    let first = fs::read_dir(&canonical)
        .map_err(|e| err(format!("mountpoint {}: {e}", canonical.display())))?
        .next();
    if let Some(entry) = first {
        let name = entry.map(|e| e.file_name().to_string_lossy().into_owned());
        return Err(err(format!(
            "mountpoint {} is not empty (it holds '{}'); a mount would hide its files: use an empty directory",
            canonical.display(),
            name.unwrap_or_default()
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
    let store = Store::open_with(&req.store, &req.options.members())?;
    let manifests = match &req.name {
        Some(n) => vec![store.manifest(n)?],
        None => store.manifests()?,
    };
    if manifests.is_empty() {
        return Err(err("the store holds no models to mount"));
    }
    let health = check_health(req, &store, &manifests)?;
    Ok(Checked {
        canonical,
        store,
        manifests,
        health,
    })
}

/// Each model's health; an error when some chunk has no replica on a member that opened, unless
/// the mount was asked to go ahead anyway. A model that is not `ok` gets a warning.
fn check_health(
    req: &MountRequest,
    store: &Store,
    manifests: &[Manifest],
) -> Result<Vec<ModelHealth>, DaemonError> {
    let health: Vec<ModelHealth> = manifests
        .iter()
        .map(|m| ModelHealth::of(store, m))
        .collect();
    let unreadable: Vec<&ModelHealth> = health
        .iter()
        .filter(|h| h.health == Health::Unreadable)
        .collect();
    if !unreadable.is_empty() && !req.allow_degraded {
        let mut missing: Vec<String> = unreadable
            .iter()
            .flat_map(|h| h.missing_members.iter().map(|m| m.describe()))
            .collect();
        missing.sort();
        missing.dedup();
        let given: Vec<String> = store
            .unavailable
            .iter()
            .map(|(p, why)| format!("{p} ({why})"))
            .collect();
        let given = if given.is_empty() {
            String::new()
        } else {
            format!("; given but unavailable: {}", given.join(", "))
        };
        return Err(err(format!(
            "{} ({}) of {} have no replica on the members that opened: missing {}{given}; give every member, or pass --allow-degraded to mount anyway (those bytes then read as EIO)",
            crate::units::count(
                unreadable.iter().map(|h| h.unreachable_chunks as u64).sum(),
                "chunk"
            ),
            crate::units::count(
                unreadable.iter().map(|h| h.unreadable_files as u64).sum(),
                "file"
            ),
            unreadable
                .iter()
                .map(|h| format!("model '{}'", h.model))
                .collect::<Vec<_>>()
                .join(", "),
            missing.join(", ")
        )));
    }
    for h in health.iter().filter(|h| h.health != Health::Ok) {
        log::warn!("model '{}' is {}", h.model, h.describe());
    }
    Ok(health)
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}
