//! What is read from `/proc`: the mount table (`/proc/self/mountinfo`) and when a process
//! started (`/proc/PID/stat`, which tells a daemon from a later process with the same pid).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
pub(super) struct MountEntry {
    /// `major:minor` of the mounted filesystem.
    pub dev: String,
    pub mount_point: PathBuf,
    /// `fstype source`: a shardfs mount is `fuse.shardfs STORE` (see [`is_shardfs`]).
    pub kind: String,
}

/// This process's mount table, in mount order (a later entry covers an earlier one at the same
/// place).
pub(super) fn mount_table() -> Vec<MountEntry> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            (fields.len() > dash + 1 && fields.len() > 4).then(|| MountEntry {
                dev: fields[2].to_string(),
                mount_point: PathBuf::from(OsStr::from_bytes(&unescape(fields[4]))),
                kind: format!(
                    "{} {}",
                    fields[dash + 1],
                    fields.get(dash + 2).unwrap_or(&"")
                ),
            })
        })
        .collect()
}

/// The topmost mount exactly at `path`.
pub(super) fn mountinfo(path: &Path) -> Option<MountEntry> {
    mount_table()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
}

/// The `fstype source` of what is mounted exactly at `path`.
pub fn mounted_fstype(path: &Path) -> Option<String> {
    mountinfo(path).map(|m| m.kind)
}

/// The mount that holds `path` (an absolute, canonical path): the topmost of the deepest mount
/// points at or above it.
pub(super) fn mount_holding(path: &Path) -> Option<MountEntry> {
    // `max_by_key` keeps the last of equals: the topmost.
    mount_table()
        .into_iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
}

/// The shardfs mount that holds `path` (made canonical here), if any.
pub fn shardfs_mount_of(path: &Path) -> Option<PathBuf> {
    let path = fs::canonicalize(path).ok()?;
    mount_holding(&path)
        .filter(|m| is_shardfs(&m.kind))
        .map(|m| m.mount_point)
}

/// Mount points strictly below `path`.
pub(super) fn mounts_under(path: &Path) -> Vec<PathBuf> {
    mount_table()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p != path && p.starts_with(path))
        .collect()
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

/// Whether a `fstype source` is a shardfs mount: type `fuse.shardfs` (whatever the source, which
/// names the store), or `fuse` with source `shardfs` as mounts made before the subtype was set.
pub(super) fn is_shardfs(kind: &str) -> bool {
    kind.starts_with("fuse.shardfs ") || kind == "fuse shardfs"
}

/// When process `pid` started (clock ticks since boot), if it runs (a zombie does not).
pub(super) fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after it follow the
    // last ')'. Field 3 is the state, field 22 the start time.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
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

    #[test]
    fn shardfs_mounts_are_told_by_their_type() {
        assert!(is_shardfs("fuse.shardfs /d0,s3://b/p"));
        assert!(is_shardfs("fuse shardfs"));
        assert!(!is_shardfs("fuse sshfs"));
        assert!(!is_shardfs("fuse.sshfs shardfs"));
        assert!(!is_shardfs("fuse.shardfsx /d0"));
    }
}
