//! What is checked before mounting: the mountpoint (exists, is a directory, is not already a
//! mount), FUSE itself, and the store and the models to serve.

use super::control::mount_path;
use super::procfs::mounted_fstype;
use super::{DaemonError, MountRequest, err};
use crate::store::Store;
use crate::store::manifest::Manifest;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Checks everything that can be checked before mounting; returns the canonical mountpoint,
/// the store and the manifests to serve.
pub(super) fn preflight(
    req: &MountRequest,
) -> Result<(PathBuf, Store, Vec<Manifest>), DaemonError> {
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
