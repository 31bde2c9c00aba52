//! The tree a mount shows, and how it follows the store: one node per directory and file of the
//! models, exact sizes, the files' mtimes and read-only modes. Inode numbers are never reused. A
//! new manifest of a model keeps the inode of every file whose content did not change (its
//! replica lists are taken from the new manifest) and gives a new inode to what changed; the old
//! node is unlinked from its directory but lives while the kernel holds it (its lookup count),
//! so a file opened or mmapped before the update keeps reading the version it opened. Each change
//! returns the kernel entries to invalidate.

use super::sent::SentBytes;
use crate::codec::Hash32;
use crate::store::manifest::{FileEntry, Manifest};
use fuser::{FileAttr, FileType, INodeNo};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) const ROOT: u64 = 1;

pub(super) enum NodeKind {
    Dir {
        children: BTreeMap<String, u64>,
    },
    File {
        entry: Arc<FileEntry>,
        sent: Arc<SentBytes>,
        /// The model and manifest version the entry comes from.
        model: Arc<str>,
        version: u64,
    },
}

pub(super) struct Node {
    pub parent: u64,
    pub name: String,
    pub attr: FileAttr,
    pub kind: NodeKind,
    /// Lookups the kernel has not forgotten yet.
    lookups: AtomicU64,
    /// Whether a directory names it (an unlinked node lives only while the kernel holds it).
    linked: bool,
}

impl Node {
    /// Counts a lookup the kernel will later forget.
    pub fn looked_up(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
    }
}

/// Something the kernel may have cached that a change made stale.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stale {
    /// The name `.1` in directory `.0` now names another node, or none.
    Entry(u64, String),
    /// The listing of a directory changed.
    Listing(u64),
}

/// A model as the tree shows it.
pub(super) struct ModelView {
    pub version: u64,
    pub adopted: SystemTime,
    /// Its files' paths and inodes.
    files: BTreeMap<String, u64>,
}

/// What the root of a mount shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A folder per model (a mount of the whole store).
    FolderPerModel,
    /// One model's files at the root (a mount of one model).
    OneModel,
}

impl Layout {
    /// A mount of model `name` shows its files at the root; a mount of the store, a folder each.
    pub fn of_mount(name: Option<&str>) -> Layout {
        match name {
            Some(_) => Layout::OneModel,
            None => Layout::FolderPerModel,
        }
    }
}

pub(super) struct Tree {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    layout: Layout,
    pub models: BTreeMap<String, ModelView>,
}

impl Tree {
    /// A tree of `manifests`, laid out as `layout` says.
    pub fn new(manifests: &[Manifest], layout: Layout) -> Tree {
        let now = SystemTime::now();
        let root = Node {
            parent: ROOT,
            name: String::new(),
            attr: attr(ROOT, FileType::Directory, 0, now, 0o555),
            kind: NodeKind::Dir {
                children: BTreeMap::new(),
            },
            lookups: AtomicU64::new(0),
            linked: true,
        };
        let mut tree = Tree {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            layout,
            models: BTreeMap::new(),
        };
        for m in manifests {
            tree.apply(m, &mut Vec::new());
        }
        tree
    }

    pub fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The inodes of the files whose bytes hash to `hash`.
    pub fn files_of(&self, hash: &Hash32) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(
                |(_, n)| matches!(&n.kind, NodeKind::File { entry, .. } if entry.blake3 == *hash),
            )
            .map(|(&ino, _)| ino)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The size of every file the tree shows.
    pub fn logical_bytes(&self) -> u64 {
        self.files_shown().map(|(_, f)| f.size).sum()
    }

    fn files_shown(&self) -> impl Iterator<Item = (&ModelView, &FileEntry)> {
        self.models.values().flat_map(move |v| {
            v.files
                .values()
                .filter_map(move |ino| match &self.nodes.get(ino)?.kind {
                    NodeKind::File { entry, .. } => Some((v, &**entry)),
                    NodeKind::Dir { .. } => None,
                })
        })
    }

    /// What the mount reads now: each model version some live node comes from, and their
    /// chunks (for the mount's lease).
    pub fn in_use(&self) -> (BTreeSet<(String, u64)>, Vec<Hash32>) {
        let mut versions = BTreeSet::new();
        let mut chunks = Vec::new();
        for node in self.nodes.values() {
            if let NodeKind::File {
                entry,
                model,
                version,
                ..
            } = &node.kind
            {
                versions.insert((model.to_string(), *version));
                chunks.extend(
                    entry
                        .chunks
                        .iter()
                        .flat_map(|c| c.needs())
                        .map(|c| *c.object()),
                );
            }
        }
        chunks.sort_by_key(|h| h.0);
        chunks.dedup();
        (versions, chunks)
    }

    /// Shows manifest `m` as the current version of its model: a file whose content is
    /// unchanged keeps its node (and takes the new replica lists); others get new nodes; files
    /// the new version lacks go away.
    pub fn apply(&mut self, m: &Manifest, stale: &mut Vec<Stale>) {
        let now = SystemTime::now();
        let base = match self.layout {
            Layout::OneModel => ROOT,
            Layout::FolderPerModel => self.dir(ROOT, &m.name, now, stale),
        };
        let mut old = self
            .models
            .remove(&m.name)
            .map(|v| v.files)
            .unwrap_or_default();
        let model: Arc<str> = Arc::from(m.name.as_str());
        let mut files = BTreeMap::new();
        for f in &m.files {
            if let Some(ino) = old.remove(&f.path) {
                if let Some(NodeKind::File { entry, version, .. }) =
                    self.nodes.get_mut(&ino).map(|n| &mut n.kind)
                    && same_content(entry, f)
                {
                    *entry = Arc::new(f.clone());
                    *version = m.version;
                    files.insert(f.path.clone(), ino);
                    continue;
                }
                // The new node takes its name (its directory stays).
                self.unlink(ino, stale);
            }
            let parts: Vec<&str> = f.path.split('/').collect();
            let mut parent = base;
            for dir in &parts[..parts.len() - 1] {
                parent = self.dir(parent, dir, now, stale);
            }
            let ino = self.next_ino;
            self.next_ino += 1;
            let name = parts[parts.len() - 1].to_string();
            let mtime = to_time(f.mtime_secs, f.mtime_nanos);
            self.nodes.insert(
                ino,
                Node {
                    parent,
                    name: name.clone(),
                    attr: attr(ino, FileType::RegularFile, f.size, mtime, file_perm(f.mode)),
                    kind: NodeKind::File {
                        entry: Arc::new(f.clone()),
                        sent: Arc::new(SentBytes::new(f.chunks.len())),
                        model: model.clone(),
                        version: m.version,
                    },
                    lookups: AtomicU64::new(0),
                    linked: true,
                },
            );
            self.link(parent, name, ino, stale);
            files.insert(f.path.clone(), ino);
        }
        for ino in old.into_values() {
            self.unlink_path(ino, stale);
        }
        self.models.insert(
            m.name.clone(),
            ModelView {
                version: m.version,
                adopted: now,
                files,
            },
        );
    }

    /// Takes a model out of the tree (its open files keep working).
    pub fn remove(&mut self, name: &str, stale: &mut Vec<Stale>) {
        let Some(view) = self.models.remove(name) else {
            return;
        };
        for ino in view.files.into_values() {
            self.unlink_path(ino, stale);
        }
    }

    /// The kernel forgot `n` lookups of `ino`. Returns whether the node is unlinked and no longer
    /// held, so that `drop_if_unheld` (under the write lock) lets it go.
    pub fn forget(&self, ino: u64, n: u64) -> bool {
        let Some(node) = self.nodes.get(&ino) else {
            return false;
        };
        let before = node
            .lookups
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(n))
            })
            .unwrap_or(0);
        before <= n && !node.linked
    }

    /// The directory `name` in `parent`, made when missing (a file of that name is replaced).
    fn dir(&mut self, parent: u64, name: &str, now: SystemTime, stale: &mut Vec<Stale>) -> u64 {
        if let Some(ino) = self.child(parent, name) {
            if matches!(self.nodes[&ino].kind, NodeKind::Dir { .. }) {
                return ino;
            }
            self.unlink(ino, stale);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_string(),
                attr: attr(ino, FileType::Directory, 0, now, 0o555),
                kind: NodeKind::Dir {
                    children: BTreeMap::new(),
                },
                lookups: AtomicU64::new(0),
                linked: true,
            },
        );
        self.link(parent, name.to_string(), ino, stale);
        ino
    }

    fn child(&self, parent: u64, name: &str) -> Option<u64> {
        match &self.nodes.get(&parent)?.kind {
            NodeKind::Dir { children } => children.get(name).copied(),
            NodeKind::File { .. } => None,
        }
    }

    fn link(&mut self, parent: u64, name: String, ino: u64, stale: &mut Vec<Stale>) {
        let replaced = match self.nodes.get_mut(&parent).map(|n| &mut n.kind) {
            Some(NodeKind::Dir { children }) => children.insert(name.clone(), ino),
            _ => None,
        };
        if let Some(old) = replaced {
            self.drop_if_unheld(old);
        }
        stale.push(Stale::Entry(parent, name));
        stale.push(Stale::Listing(parent));
    }

    /// Unlinks `ino` from its directory, then the directories this leaves empty.
    fn unlink_path(&mut self, ino: u64, stale: &mut Vec<Stale>) {
        let mut at = ino;
        loop {
            let parent = self.nodes.get(&at).map_or(ROOT, |n| n.parent);
            self.unlink(at, stale);
            let empty = matches!(
                self.nodes.get(&parent).map(|n| &n.kind),
                Some(NodeKind::Dir { children }) if children.is_empty()
            );
            if parent == ROOT || !empty {
                return;
            }
            at = parent;
        }
    }

    /// Takes `ino` out of its directory; it goes at once unless the kernel holds it.
    fn unlink(&mut self, ino: u64, stale: &mut Vec<Stale>) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        if !node.linked {
            return;
        }
        node.linked = false;
        let (parent, name) = (node.parent, node.name.clone());
        if let Some(NodeKind::Dir { children }) = self.nodes.get_mut(&parent).map(|n| &mut n.kind)
            && children.get(&name) == Some(&ino)
        {
            children.remove(&name);
            stale.push(Stale::Entry(parent, name));
            stale.push(Stale::Listing(parent));
        }
        self.drop_if_unheld(ino);
    }

    /// Lets an unlinked node go once the kernel holds it no more.
    pub fn drop_if_unheld(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.linked = false;
            if node.lookups.load(Ordering::Relaxed) == 0 && ino != ROOT {
                self.nodes.remove(&ino);
            }
        }
    }
}

/// Whether a file's bytes and attributes are the same in two manifests (replicas may differ).
fn same_content(a: &FileEntry, b: &FileEntry) -> bool {
    a.size == b.size
        && a.blake3 == b.blake3
        && a.mode == b.mode
        && (a.mtime_secs, a.mtime_nanos) == (b.mtime_secs, b.mtime_nanos)
        && a.chunks.len() == b.chunks.len()
        && a.chunks
            .iter()
            .zip(&b.chunks)
            .all(|(x, y)| (x.offset, x.len, x.hash) == (y.offset, y.len, y.hash))
}

/// A recorded time as the mount shows it: before 1970, or out of any clock's range, is 1970.
fn to_time(secs: i64, nanos: u32) -> SystemTime {
    crate::clock::from_unix(secs.max(0), nanos).unwrap_or(UNIX_EPOCH)
}

/// The permission bits a file shows: those its manifest records, read-only (no write, setuid,
/// setgid or sticky bits). With `--allow-other` the kernel enforces them (`default_permissions`).
pub fn file_perm(recorded: u32) -> u16 {
    (recorded & 0o555) as u16
}

fn attr(ino: u64, kind: FileType, size: u64, mtime: SystemTime, perm: u16) -> FileAttr {
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
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid,
        gid,
        rdev: 0,
        flags: 0,
        blksize: 128 * 1024,
    }
}
