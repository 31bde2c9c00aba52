//! The tree a mount shows: one node per directory and file of the models, with stable inode
//! numbers (the node's position plus one), exact sizes, the files' mtimes and read-only modes.

use super::sent::SentBytes;
use crate::store::manifest::{FileEntry, Manifest};
use fuser::{FileAttr, FileType, INodeNo};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) enum NodeKind {
    Dir {
        children: BTreeMap<String, u64>,
    },
    File {
        entry: Arc<FileEntry>,
        sent: Arc<SentBytes>,
    },
}

pub(super) struct Node {
    pub parent: u64,
    pub attr: FileAttr,
    pub kind: NodeKind,
}

/// Builds the tree: with `single`, the root holds that model's files; otherwise one folder per
/// model. Returns the nodes (the root first) and the files' total size.
pub(super) fn build(manifests: &[Manifest], single: bool) -> (Vec<Node>, u64) {
    let now = SystemTime::now();
    let mut nodes = vec![Node {
        parent: 1,
        attr: attr(1, FileType::Directory, 0, now),
        kind: NodeKind::Dir {
            children: BTreeMap::new(),
        },
    }];
    let mut logical_bytes = 0;
    for m in manifests {
        let base = if single {
            1
        } else {
            add_dir(&mut nodes, 1, &m.name, now)
        };
        for f in &m.files {
            logical_bytes += f.size;
            let mut parent = base;
            let parts: Vec<&str> = f.path.split('/').collect();
            for dir in &parts[..parts.len() - 1] {
                parent = add_dir(&mut nodes, parent, dir, now);
            }
            let ino = nodes.len() as u64 + 1;
            let mtime = to_time(f.mtime_secs, f.mtime_nanos);
            nodes.push(Node {
                parent,
                attr: attr(ino, FileType::RegularFile, f.size, mtime),
                kind: NodeKind::File {
                    entry: Arc::new(f.clone()),
                    sent: Arc::new(SentBytes::new(f.chunks.len())),
                },
            });
            if let NodeKind::Dir { children } = &mut nodes[parent as usize - 1].kind {
                children.insert(parts[parts.len() - 1].to_string(), ino);
            }
        }
    }
    (nodes, logical_bytes)
}

fn to_time(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH
    }
}

fn attr(ino: u64, kind: FileType, size: u64, mtime: SystemTime) -> FileAttr {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind,
        perm: if kind == FileType::Directory {
            0o555
        } else {
            0o444
        },
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid,
        gid,
        rdev: 0,
        flags: 0,
        blksize: 128 * 1024,
    }
}

fn add_dir(nodes: &mut Vec<Node>, parent: u64, name: &str, now: SystemTime) -> u64 {
    if let NodeKind::Dir { children } = &nodes[parent as usize - 1].kind
        && let Some(&ino) = children.get(name)
    {
        return ino;
    }
    let ino = nodes.len() as u64 + 1;
    nodes.push(Node {
        parent,
        attr: attr(ino, FileType::Directory, 0, now),
        kind: NodeKind::Dir {
            children: BTreeMap::new(),
        },
    });
    if let NodeKind::Dir { children } = &mut nodes[parent as usize - 1].kind {
        children.insert(name.to_string(), ino);
    }
    ino
}
