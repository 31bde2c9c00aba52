//! The store on disk: a set of self-describing member directories holding content-addressed
//! chunk files and one manifest per model (kept on every member). This module opens a store from
//! its member paths (in any order), checks they belong together, and finds manifests; `writer`
//! packs, `reader` reads chunks back with replica failover and exports, `verify` scrubs,
//! `health` tells which models the opened members can serve whole.
//! Nothing here knows about FUSE.

pub mod fsio;
pub mod health;
pub mod manifest;
pub mod member;
pub mod reader;
pub mod verify;
pub mod writer;

use crate::placement::PlacementError;
use manifest::Manifest;
use member::{MEMBER_FILE, Member, MemberInfo, STORE_FORMAT};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("no store members given")]
    NoMembers,
    #[error("member path {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: corrupt {MEMBER_FILE}: {reason}", path.display())]
    CorruptMember { path: PathBuf, reason: String },
    #[error("{}: store format {found} is not supported (this build reads format {STORE_FORMAT})", path.display())]
    UnsupportedFormat { path: PathBuf, found: u32 },
    #[error("the member list mixes two stores: {} belongs to store {}, {} to store {}", a.display(), a_store, b.display(), b_store)]
    MixedStores {
        a: PathBuf,
        a_store: String,
        b: PathBuf,
        b_store: String,
    },
    #[error("{} and {} are the same member", a.display(), b.display())]
    DuplicateMember { a: PathBuf, b: PathBuf },
    #[error("{} is not a member of store {store}; pass --init to add it as a new member", path.display())]
    NotAMember { path: PathBuf, store: String },
    #[error("no member of the store could be opened: {0}")]
    NoneAvailable(String),
    #[error("store member {} is busy: another pack holds its lock", .0.display())]
    Busy(PathBuf),
    #[error("no model named '{0}' in the store")]
    UnknownModel(String),
    #[error("the manifest of model '{name}' is unreadable on every member ({reason})")]
    CorruptManifest { name: String, reason: String },
    #[error("model '{model}' has no file '{path}'")]
    UnknownFile { model: String, path: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Chunking(#[from] crate::chunking::ChunkingError),
    #[error(transparent)]
    Unreadable(#[from] reader::ChunkUnreadable),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An opened store: the members that could be read, sorted by index, and those that could not.
#[derive(Debug)]
pub struct Store {
    pub store_id: String,
    pub members: Vec<Member>,
    /// Member paths given but unreadable (directory gone, not initialised), with the reason.
    pub unavailable: Vec<(PathBuf, String)>,
    by_id: HashMap<String, usize>,
}

/// What a member path holds.
enum Probe {
    Member(MemberInfo),
    /// The directory exists (or not) but holds no `shardfs-store.json`.
    Empty {
        exists: bool,
    },
}

fn probe(path: &Path) -> Result<Probe, StoreError> {
    match fs::metadata(path) {
        Ok(m) if !m.is_dir() => return Err(StoreError::NotADirectory(path.to_path_buf())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Empty { exists: false }),
        Err(e) => return Err(io_err(path)(e)),
    }
    let file = path.join(MEMBER_FILE);
    let bytes = match fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Empty { exists: true }),
        Err(e) => return Err(io_err(&file)(e)),
    };
    let info: MemberInfo =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptMember {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if info.format_version != STORE_FORMAT {
        return Err(StoreError::UnsupportedFormat {
            path: path.to_path_buf(),
            found: info.format_version,
        });
    }
    if info.store_id.is_empty()
        || info.member_id.is_empty()
        || !(info.weight > 0.0 && info.weight.is_finite())
    {
        return Err(StoreError::CorruptMember {
            path: path.to_path_buf(),
            reason: "empty id or bad weight".into(),
        });
    }
    Ok(Probe::Member(info))
}

impl Store {
    /// Opens a store for reading. Member paths that are gone or hold no member file are listed
    /// in `unavailable` (a lost disk must not stop reads); anything else wrong is an error.
    pub fn open(paths: &[PathBuf]) -> Result<Store, StoreError> {
        if paths.is_empty() {
            return Err(StoreError::NoMembers);
        }
        let mut members = Vec::new();
        let mut unavailable = Vec::new();
        for path in paths {
            match probe(path)? {
                Probe::Member(info) => members.push(Member {
                    path: path.clone(),
                    info,
                }),
                Probe::Empty { exists } => {
                    let reason = if exists {
                        "not a store member"
                    } else {
                        "directory missing"
                    };
                    unavailable.push((path.clone(), reason.to_string()));
                }
            }
        }
        if members.is_empty() {
            let why = unavailable
                .iter()
                .map(|(p, r)| format!("{}: {r}", p.display()))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(StoreError::NoneAvailable(why));
        }
        for (path, reason) in &unavailable {
            log::warn!("store member {} is unavailable ({reason})", path.display());
        }
        Store::assemble(members, unavailable)
    }

    fn assemble(
        mut members: Vec<Member>,
        unavailable: Vec<(PathBuf, String)>,
    ) -> Result<Store, StoreError> {
        let first = &members[0];
        for m in &members[1..] {
            if m.info.store_id != first.info.store_id {
                return Err(StoreError::MixedStores {
                    a: first.path.clone(),
                    a_store: first.info.store_id.clone(),
                    b: m.path.clone(),
                    b_store: m.info.store_id.clone(),
                });
            }
        }
        members.sort_by(|a, b| {
            a.info
                .index
                .cmp(&b.info.index)
                .then(a.info.member_id.cmp(&b.info.member_id))
        });
        let mut by_id = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            if let Some(prev) = by_id.insert(m.info.member_id.clone(), i) {
                return Err(StoreError::DuplicateMember {
                    a: members[prev].path.clone(),
                    b: m.path.clone(),
                });
            }
        }
        Ok(Store {
            store_id: members[0].info.store_id.clone(),
            members,
            unavailable,
            by_id,
        })
    }

    /// Opens (creating where needed) a store for packing: every path must end up a member.
    /// Missing directories are created. A directory without a member file joins the store only
    /// with `init`, or while the store holds no model yet (a first pack that was interrupted).
    pub fn open_for_pack(paths: &[PathBuf], init: bool) -> Result<Store, StoreError> {
        if paths.is_empty() {
            return Err(StoreError::NoMembers);
        }
        let mut members = Vec::new();
        let mut empty = Vec::new();
        for path in paths {
            match probe(path)? {
                Probe::Member(info) => members.push(Member {
                    path: path.clone(),
                    info,
                }),
                Probe::Empty { .. } => empty.push(path.clone()),
            }
        }
        let store_id = match members.first() {
            Some(m) => m.info.store_id.clone(),
            None => member::new_id().map_err(io_err(Path::new("/dev/urandom")))?,
        };
        if let (Some(path), false, false) = (empty.first(), members.is_empty(), init) {
            let partial = Store::assemble(members.clone(), vec![])?;
            if !partial.model_names()?.is_empty() {
                return Err(StoreError::NotAMember {
                    path: path.clone(),
                    store: store_id,
                });
            }
        }
        let first_index = members.iter().map(|m| m.info.index + 1).max().unwrap_or(0);
        for (index, path) in (first_index..).zip(empty) {
            let info = MemberInfo {
                format_version: STORE_FORMAT,
                store_id: store_id.clone(),
                member_id: member::new_id().map_err(io_err(Path::new("/dev/urandom")))?,
                index,
                weight: 1.0,
            };
            init_member(&path, &info)?;
            members.push(Member { path, info });
        }
        Store::assemble(members, vec![])
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.by_id.get(id).map(|&i| &self.members[i])
    }

    /// Names of every model with a manifest on at least one member, sorted.
    pub fn model_names(&self) -> Result<Vec<String>, StoreError> {
        let mut names = BTreeSet::new();
        for m in &self.members {
            let dir = m.path.join("manifests");
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err(&dir))?;
                let file_name = entry.file_name();
                let name = file_name.to_str().and_then(|n| n.strip_suffix(".json"));
                if let Some(name) = name.filter(|n| manifest::check_model_name(n).is_ok()) {
                    names.insert(name.to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Every member's copy of a model's manifest: `None` where the member has none, `Err` with a
    /// reason where its copy is damaged.
    pub fn manifest_copies(&self, name: &str) -> Vec<(&Member, Option<Result<Manifest, String>>)> {
        self.members
            .iter()
            .map(|m| {
                let copy = match fs::read(m.manifest_path(name)) {
                    Ok(bytes) => Some(Manifest::from_bytes(&bytes).and_then(|mf| {
                        if mf.name == name {
                            Ok(mf)
                        } else {
                            Err(format!("names model '{}'", mf.name))
                        }
                    })),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => Some(Err(e.to_string())),
                };
                (m, copy)
            })
            .collect()
    }

    /// The current manifest of a model: the valid copy with the highest version. Damaged copies
    /// are logged and skipped.
    pub fn manifest(&self, name: &str) -> Result<Manifest, StoreError> {
        manifest::check_model_name(name).map_err(|_| StoreError::UnknownModel(name.to_string()))?;
        let mut best: Option<Manifest> = None;
        let mut damaged = Vec::new();
        for (member, copy) in self.manifest_copies(name) {
            match copy {
                Some(Ok(m)) if best.as_ref().is_none_or(|b| m.version > b.version) => {
                    best = Some(m);
                }
                Some(Ok(_)) => {}
                Some(Err(reason)) => {
                    log::warn!(
                        "manifest of '{name}' on {} is damaged: {reason}",
                        member.path.display()
                    );
                    damaged.push(reason);
                }
                None => {}
            }
        }
        match best {
            Some(m) => Ok(m),
            None if damaged.is_empty() => Err(StoreError::UnknownModel(name.to_string())),
            None => Err(StoreError::CorruptManifest {
                name: name.to_string(),
                reason: damaged.join("; "),
            }),
        }
    }

    /// Every model's current manifest, by name.
    pub fn manifests(&self) -> Result<Vec<Manifest>, StoreError> {
        self.model_names()?
            .iter()
            .map(|n| self.manifest(n))
            .collect()
    }
}

/// Creates a member's directories and writes its member file.
fn init_member(path: &Path, info: &MemberInfo) -> Result<(), StoreError> {
    for sub in ["chunks", "manifests", "tmp"] {
        let dir = path.join(sub);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    }
    let bytes = serde_json::to_vec_pretty(info).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let dest = path.join(MEMBER_FILE);
    fsio::write_atomic(&path.join("tmp"), &dest, &bytes, fsio::Durable::Now)
        .map_err(io_err(&dest))?;
    fsio::sync_dir(path).map_err(io_err(path))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsio::sync_dir(parent).map_err(io_err(parent))?;
    }
    Ok(())
}

/// Exclusive locks on every member for the length of a pack.
pub struct PackLock {
    _files: Vec<File>,
}

impl Store {
    /// Takes every member's lock without waiting, then clears leftovers of killed packs.
    pub fn lock_for_pack(&self) -> Result<PackLock, StoreError> {
        let mut files = Vec::new();
        for m in &self.members {
            let path = m.path.join("lock");
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            match f.try_lock() {
                Ok(()) => files.push(f),
                Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Busy(m.path.clone())),
                Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
            }
        }
        for m in &self.members {
            let tmp = m.tmp_dir();
            fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
            let n = fsio::clean_tmp(&tmp).map_err(io_err(&tmp))?;
            if n > 0 {
                log::info!(
                    "removed {n} leftover temporary files from {}",
                    tmp.display()
                );
            }
        }
        Ok(PackLock { _files: files })
    }
}
