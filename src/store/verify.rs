//! `verify`: scrubs a store. Every replica of every chunk is read and checked (presence, header,
//! length, hash after decompression), every whole-file hash is recomputed, and every member's
//! manifest copies are checked. The report lists each problem with the member, the chunk and the
//! file bytes it affects.

use super::health::ModelHealth;
use super::manifest::{ChunkRef, FileEntry, Manifest};
use super::{Store, StoreError};
use crate::codec::Hash32;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// One replica's check: its member id and the verified bytes or why they are not usable.
type ReplicaResult = (String, Result<Vec<u8>, super::reader::ReplicaError>);

/// What kind of problem `verify` found (in `--json` as its kebab-case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// A replica is not on its member (or its member did not open).
    Missing,
    /// A replica's bytes are not the chunk's.
    Corrupt,
    /// A replica's member failed or timed out reading it.
    Unreadable,
    /// Fewer good replicas than the model was packed with, at least one.
    UnderReplicated,
    /// No good replica of a chunk is left.
    Unrecoverable,
    /// A file's whole-file hash does not match its manifest.
    FileHash,
    /// A manifest copy is damaged, unsigned or behind.
    Manifest,
    /// A member list copy is damaged or not signed by the store's key.
    MemberList,
    /// A member given could not be read.
    MemberUnavailable,
}

impl ProblemKind {
    /// The kind as `--json` names it.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Missing => "missing",
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::UnderReplicated => "under-replicated",
            ProblemKind::Unrecoverable => "unrecoverable",
            ProblemKind::FileHash => "file-hash",
            ProblemKind::Manifest => "manifest",
            ProblemKind::MemberList => "member-list",
            ProblemKind::MemberUnavailable => "member-unavailable",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub model: Option<String>,
    pub file: Option<String>,
    pub member_id: Option<String>,
    pub member_path: Option<String>,
    pub chunk: Option<String>,
    /// Affected bytes of `file`: `[offset, offset + len)`.
    pub offset: Option<u64>,
    pub len: Option<u64>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub models: usize,
    pub files: usize,
    pub chunks: usize,
    pub replicas_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
    /// Members that hold replicas but did not open, one entry each (their replicas are also in
    /// `problems`, as `missing` with no `member_path`).
    pub unavailable_members: Vec<UnavailableMember>,
    /// Files stored lossily by design (`pack --lossy`): not problems, but worth knowing.
    pub lossy: Vec<LossyFile>,
}

/// A member named by manifests that is not among the members that opened.
#[derive(Debug, Clone, Serialize)]
pub struct UnavailableMember {
    pub member_id: String,
    /// Its index in the store, when a manifest recorded it.
    pub index: Option<u32>,
    /// Replicas the manifests place on it, and of how many models.
    pub replicas: usize,
    pub models: usize,
}

impl UnavailableMember {
    /// One line for people.
    pub fn describe(&self) -> String {
        let index = self
            .index
            .map(|i| format!(" (index {i})"))
            .unwrap_or_default();
        format!(
            "MEMBER-UNAVAILABLE: member {}{index} holds {} of {}: its path was not given or is not readable",
            self.member_id,
            crate::units::count(self.replicas as u64, "replica"),
            crate::units::count(self.models as u64, "model")
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LossyFile {
    pub model: String,
    pub file: String,
    pub kind: String,
    pub original_size: u64,
    pub original_blake3: String,
}

impl Problem {
    /// A problem with one chunk of `file`, naming the bytes it holds.
    fn of_chunk(
        kind: ProblemKind,
        detail: String,
        model: &str,
        file: &FileEntry,
        chunk: &ChunkRef,
    ) -> Problem {
        Problem {
            model: Some(model.to_string()),
            file: Some(file.path.clone()),
            chunk: Some(chunk.object().to_hex()),
            offset: Some(chunk.offset),
            len: Some(chunk.len),
            ..Problem::new(kind, detail)
        }
    }

    fn new(kind: ProblemKind, detail: String) -> Problem {
        Problem {
            kind,
            model: None,
            file: None,
            member_id: None,
            member_path: None,
            chunk: None,
            offset: None,
            len: None,
            detail,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.kind.name().to_uppercase()];
        if let Some(m) = &self.model {
            parts.push(format!("model {m}"));
        }
        if let Some(f) = &self.file {
            parts.push(format!("file {f}"));
        }
        if let (Some(o), Some(l)) = (self.offset, self.len) {
            parts.push(format!("bytes {o}..{}", o + l));
        }
        if let Some(c) = &self.chunk {
            parts.push(format!("chunk {c}"));
        }
        match (&self.member_id, &self.member_path) {
            (Some(id), Some(p)) => parts.push(format!("member {id} ({p})")),
            (Some(id), None) => parts.push(format!("member {id} (not among the given members)")),
            (None, Some(p)) => parts.push(format!("member {p}")),
            (None, None) => {}
        }
        format!("{}: {}", parts.join(", "), self.detail)
    }
}

/// What checking one file's chunks found so far.
struct FileCheck<'a> {
    store: &'a Store,
    model: &'a str,
    replicas_wanted: usize,
    file: &'a FileEntry,
    problems: &'a mut Vec<Problem>,
    replicas: usize,
    bytes: u64,
}

impl FileCheck<'_> {
    fn problem(&mut self, kind: ProblemKind, detail: String, chunk: &ChunkRef) {
        let p = Problem::of_chunk(kind, detail, self.model, self.file, chunk);
        self.problems.push(p);
    }

    /// The bytes of one good replica of stored chunk `n`, after noting every replica that is
    /// not good and whether too few are.
    fn good_copy(&mut self, n: &ChunkRef, results: Vec<ReplicaResult>) -> Option<Vec<u8>> {
        let mut good: Option<Vec<u8>> = None;
        let mut good_count = 0;
        for (id, result) in results {
            self.replicas += 1;
            match result {
                Ok(data) => {
                    self.bytes += data.len() as u64;
                    good_count += 1;
                    good.get_or_insert(data);
                }
                Err(e) => self.problems.push(Problem {
                    member_path: self.store.member(&id).map(|m| m.location().to_string()),
                    member_id: Some(id),
                    ..Problem::of_chunk(e.kind(), e.to_string(), self.model, self.file, n)
                }),
            }
        }
        let wanted = self.replicas_wanted;
        if good.is_some() && good_count < wanted {
            self.problem(
                ProblemKind::UnderReplicated,
                format!("{good_count} of {wanted} replicas are good (shardfs repair re-creates the others)"),
                n,
            );
        }
        if good.is_none() {
            self.problem(
                ProblemKind::Unrecoverable,
                "no good replica of this chunk is left".into(),
                n,
            );
        }
        good
    }

    /// The chunk's bytes from its inline copy, or its good replicas (a delta's with its base's
    /// applied), once `needed` (the replicas of `chunk.needs()`) is checked.
    fn chunk_bytes(
        &mut self,
        chunk: &ChunkRef,
        needed: Vec<Vec<ReplicaResult>>,
    ) -> Option<Vec<u8>> {
        if let Some(inline) = &chunk.inline {
            let mut out = vec![0u8; inline.0.len()];
            if let Err(e) = crate::store::reader::inline_into(chunk, &inline.0, &mut out) {
                self.problem(ProblemKind::Corrupt, e.details, chunk);
                return None;
            }
            self.bytes += out.len() as u64;
            return Some(out);
        }
        let mut stored: Vec<Option<Vec<u8>>> = Vec::new();
        for (n, results) in chunk.needs().zip(needed) {
            stored.push(self.good_copy(n, results));
        }
        match stored.as_mut_slice() {
            [Some(data)] => Some(std::mem::take(data)),
            [Some(delta), Some(base)] => {
                chunk.delta_op().apply(delta, base);
                Some(std::mem::take(delta))
            }
            _ => None,
        }
    }
}

/// Checks one file: every replica of every chunk, then the whole-file hash from good replicas.
fn verify_file(
    store: &Store,
    model: &str,
    replicas_wanted: usize,
    file: &FileEntry,
    problems: &mut Vec<Problem>,
) -> (usize, u64) {
    let window = rayon::current_num_threads().max(1) * 2;
    let mut hasher = blake3::Hasher::new();
    let mut whole_ok = true;
    let mut check = FileCheck {
        store,
        model,
        replicas_wanted,
        file,
        problems,
        replicas: 0,
        bytes: 0,
    };
    for batch in file.chunks.chunks(window) {
        // Every replica of every stored chunk the batch needs: a delta's and its base's.
        let results: Vec<Vec<Vec<ReplicaResult>>> = batch
            .par_iter()
            .map(|c| {
                c.needs()
                    .map(|n| {
                        n.members
                            .iter()
                            .map(|id| (id.clone(), store.read_replica_of(id, n)))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        for (chunk, needed) in batch.iter().zip(results) {
            match check.chunk_bytes(chunk, needed) {
                Some(data) => {
                    hasher.update(&data);
                }
                None => whole_ok = false,
            }
        }
    }
    let (replicas, bytes) = (check.replicas, check.bytes);
    if whole_ok && Hash32(*hasher.finalize().as_bytes()) != file.blake3 {
        problems.push(Problem {
            model: Some(model.to_string()),
            file: Some(file.path.clone()),
            ..Problem::new(
                ProblemKind::FileHash,
                "whole-file BLAKE3 does not match the manifest".into(),
            )
        });
    }
    (replicas, bytes)
}

/// The members the manifests place replicas on that did not open, with what they hold: each
/// model's missing members (see `health`), summed over the models.
fn unavailable_members(store: &Store, manifests: &[Manifest]) -> Vec<UnavailableMember> {
    let mut by_id: BTreeMap<String, UnavailableMember> = BTreeMap::new();
    for m in manifests {
        for missing in ModelHealth::of(store, m).missing_members {
            let entry = by_id
                .entry(missing.id.clone())
                .or_insert_with(|| UnavailableMember {
                    member_id: missing.id,
                    index: None,
                    replicas: 0,
                    models: 0,
                });
            entry.index = entry.index.or(missing.index);
            entry.replicas += missing.replicas;
            entry.models += 1;
        }
    }
    let mut out: Vec<UnavailableMember> = by_id.into_values().collect();
    out.sort_by_key(|m| m.index);
    out
}

/// The members given that could not be opened (a retired one is left out, not a problem),
/// and those whose member list is in trouble.
fn member_problems(store: &Store) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (path, reason) in store.unavailable.iter().filter(|(_, r)| r.is_missed()) {
        problems.push(Problem {
            member_path: Some(path.clone()),
            ..Problem::new(ProblemKind::MemberUnavailable, reason.to_string())
        });
    }
    for (m, why) in store.member_list_troubles() {
        problems.push(Problem {
            member_id: Some(m.id().to_string()),
            member_path: Some(m.location().to_string()),
            ..Problem::new(ProblemKind::MemberList, why)
        });
    }
    problems
}

/// The copies of model `n` that are missing, damaged, from a newer shardfs, or older than
/// version `current`.
fn copy_problems(store: &Store, n: &str, current: u64, problems: &mut Vec<Problem>) {
    for copy in store.manifest_copies(n) {
        let member = copy.member;
        let trouble = match copy.manifest {
            None => Some("manifest copy missing".to_string()),
            Some(Err(reason)) if crate::store::manifest::is_newer(&reason) => {
                Some(format!("manifest copy {reason}: not read by this build"))
            }
            Some(Err(reason)) => Some(format!(
                "manifest copy {} damaged: {reason}",
                crate::member::layout::manifest_key(n)
            )),
            Some(Ok(m)) if m.version < current => Some(format!(
                "manifest copy is version {}, current is {current}",
                m.version
            )),
            Some(Ok(_)) => None,
        };
        if let Some(detail) = trouble {
            problems.push(Problem {
                model: Some(n.to_string()),
                member_id: Some(member.id().to_string()),
                member_path: Some(member.location().to_string()),
                ..Problem::new(ProblemKind::Manifest, detail)
            });
        }
    }
}

/// The files stored lossy, with what they were.
fn lossy_files(manifests: &[Manifest]) -> Vec<LossyFile> {
    manifests
        .iter()
        .flat_map(|m| m.files.iter().map(move |f| (m, f)))
        .filter_map(|(m, f)| {
            f.lossy.as_ref().map(|l| LossyFile {
                model: m.name.clone(),
                file: f.path.clone(),
                kind: l.kind.clone(),
                original_size: l.original_size,
                original_blake3: l.original_blake3.to_hex(),
            })
        })
        .collect()
}

/// Verifies one model (or every model) of the store.
pub fn verify(store: &Store, name: Option<&str>) -> Result<Report, StoreError> {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => store.model_names()?,
    };
    let mut problems = member_problems(store);
    let mut manifests: Vec<Manifest> = Vec::new();
    for n in &names {
        // A model with no valid copy is one problem; the others are verified all the same.
        let manifest = match store.manifest(n) {
            Ok(m) => Some(m),
            Err(e @ StoreError::CorruptManifest { .. }) => {
                problems.push(Problem {
                    model: Some(n.clone()),
                    ..Problem::new(ProblemKind::Manifest, e.to_string())
                });
                None
            }
            Err(e) => return Err(e),
        };
        let current = manifest.as_ref().map_or(0, |m| m.version);
        copy_problems(store, n, current, &mut problems);
        manifests.extend(manifest);
    }
    let (mut files, mut chunks, mut replicas, mut bytes) = (0, 0, 0, 0);
    for m in &manifests {
        for f in &m.files {
            let (r, b) = verify_file(store, &m.name, m.replicas, f, &mut problems);
            files += 1;
            chunks += f.chunks.len();
            replicas += r;
            bytes += b;
        }
    }
    let lossy = lossy_files(&manifests);
    let unavailable_members = unavailable_members(store, &manifests);
    Ok(Report {
        unavailable_members,
        lossy,
        ok: problems.is_empty(),
        models: manifests.len(),
        files,
        chunks,
        replicas_checked: replicas,
        bytes_checked: bytes,
        problems,
    })
}
