//! `pack`: turns a file or a folder into a model in the store. Sources are scanned and opened
//! first (so bad input fails before the store is touched); then each file is read sequentially
//! by one thread (which also computes the whole-file hash) while a thread pool hashes,
//! compresses and writes its chunks (`chunk.rs`). Chunk files are written before the manifest,
//! so a reader never sees a manifest whose chunks are not on disk.

mod chunk;

use super::base;
use super::manifest::{ChunkRef, FileEntry, Manifest, MemberRef, check_model_name};
pub use super::sources::Narrowing;
use super::sources::{Source, cannot_read, narrow_sources, scan, source_err};
use super::{Store, StoreError};
use crate::chunking::{self, Cut, FileAt, Partition};
use crate::codec::{self, CodecChoice, Hash32};
use crate::placement::{self, Placement};
use rayon::prelude::*;
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use chunk::Ctx;
pub use chunk::INLINE_MAX;

#[derive(Debug, Clone)]
pub struct PackOptions {
    pub name: Option<String>,
    pub replicas: usize,
    pub chunk_size: u64,
    pub codec: CodecChoice,
    pub level: i32,
    pub placement: Placement,
    pub partition: Partition,
    /// Store safetensors tensors narrowed (`pack --lossy`); never the default.
    pub lossy: Option<Narrowing>,
    /// Store float tensor chunks as deltas against a model of the store (`pack --base`).
    pub base: Option<super::base::BaseChoice>,
    /// Let member directories that are not yet part of the store join it.
    pub init: bool,
    /// Follow links in a packed folder to files outside it (`pack --follow-links`).
    pub follow_links: bool,
    /// Told how far the pack got.
    pub progress: crate::progress::Reporter,
    /// Deadlines and retries of member calls.
    pub member: crate::member::Options,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            name: None,
            replicas: 1,
            chunk_size: chunking::DEFAULT_CHUNK_SIZE,
            codec: CodecChoice::Auto,
            level: 3,
            placement: Placement::Hash,
            partition: Partition::Tensor,
            lossy: None,
            base: None,
            init: false,
            follow_links: false,
            progress: Default::default(),
            member: crate::member::Options::default(),
        }
    }
}

/// What a pack did, for its summary line.
#[derive(Debug, Clone)]
pub struct PackSummary {
    pub name: String,
    pub version: u64,
    pub files: usize,
    pub bytes_in: u64,
    pub bytes_stored: u64,
    pub chunks: usize,
    pub new_chunks: usize,
    /// Chunks stored as deltas, and the model they were taken against.
    pub deltas: usize,
    pub base: Option<String>,
    pub seconds: f64,
}

/// Packs one file: a reader thread streams its chunks in order (and hashes the whole file)
/// while the pool processes them.
fn pack_file(
    ctx: &Ctx<'_>,
    src: &Source,
    (cuts, bases): (&[Cut], &[Option<ChunkRef>]),
    first_index: u64,
) -> Result<FileEntry, StoreError> {
    // A file narrowed to FP8 values gets the fp8 codec for its float tensors.
    let fp8_cuts: Vec<Cut>;
    let cuts = if src
        .narrowed
        .as_ref()
        .is_some_and(|(_, l)| l.kind == Narrowing::Fp8.name())
    {
        fp8_cuts = cuts.iter().cloned().map(fp8_content).collect();
        &fp8_cuts[..]
    } else {
        cuts
    };
    let threads = rayon::current_num_threads().max(1);
    let (tx, rx) = sync_channel::<(u64, &Cut, Vec<u8>)>(threads * 2);
    let (file_hash, chunks) = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<Hash32, StoreError> {
            let read_err = cannot_read(&src.abs);
            let mut f = src.open()?;
            let mut hasher = blake3::Hasher::new();
            for (i, cut) in cuts.iter().enumerate() {
                let mut buf = vec![0u8; cut.len as usize];
                f.read_exact(&mut buf).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        source_err(format!("{} shrank while being packed", src.abs.display()))
                    } else {
                        read_err(e)
                    }
                })?;
                hasher.update(&buf);
                if tx.send((first_index + i as u64, cut, buf)).is_err() {
                    break; // the workers stopped on an error of their own
                }
            }
            src.check_unchanged(&f)?;
            Ok(Hash32(*hasher.finalize().as_bytes()))
        });
        let chunks: Result<Vec<(u64, ChunkRef)>, StoreError> = rx
            .into_iter()
            .par_bridge()
            .map(|(index, cut, data)| {
                let base = bases
                    .get((index - first_index) as usize)
                    .and_then(Option::as_ref);
                ctx.store_chunk(index, cut, &data, base).map(|c| (index, c))
            })
            .collect();
        let hash = reader
            .join()
            .unwrap_or_else(|_| Err(source_err("reader thread panicked".into())));
        (hash, chunks)
    });
    let file_hash = file_hash?;
    let mut chunks = chunks?;
    if chunks.len() != cuts.len() {
        return Err(source_err(format!(
            "{}: read stopped early",
            src.abs.display()
        )));
    }
    chunks.sort_by_key(|(i, _)| *i);
    Ok(FileEntry {
        path: src.rel.clone(),
        size: src.size,
        mode: src.mode,
        mtime_secs: src.mtime_secs,
        mtime_nanos: src.mtime_nanos,
        blake3: file_hash,
        chunks: chunks.into_iter().map(|(_, c)| c).collect(),
        lossy: src.narrowed.as_ref().map(|(_, l)| l.clone()),
    })
}

/// `cut` for a file narrowed to FP8 values: floats of one dtype are FP8 content.
fn fp8_content(mut cut: Cut) -> Cut {
    let mut formats = cut
        .tensors
        .iter()
        .map(|t| codec::fp8::Format::of_dtype(&t.dtype));
    if let (codec::Content::Floats(_), Some(Some(first))) = (cut.content, formats.next())
        && formats.all(|f| f == Some(first))
    {
        cut.content = codec::Content::Fp8(first);
    }
    cut
}

/// Packs `src` (a file or a folder) into the store at `paths`.
pub fn pack(
    src: &Path,
    paths: &[crate::member::MemberSpec],
    opts: &PackOptions,
) -> Result<PackSummary, StoreError> {
    let started = Instant::now();
    chunking::check_pack_chunk_size(opts.chunk_size)?;
    placement::check(opts.replicas, paths.len())?;
    let (default_name, sources) = scan(src, opts.follow_links)?;
    let name = opts.name.clone().unwrap_or(default_name);
    check_model_name(&name).map_err(StoreError::Invalid)?;
    if sources.is_empty() {
        return Err(source_err(format!(
            "{} holds no files to pack",
            src.display()
        )));
    }

    let store = open_for_pack(src, paths, opts)?;
    let _lock = store.lock()?;
    placement::check(opts.replicas, store.members.len())?;
    check_members_given(&store, &name)?;
    // The copies this pack replaces: its manifest is published only over these, so a pack of
    // the same model that published meanwhile is not silently undone.
    let copies = store.manifest_copies(&name);
    let mut sources = sources;
    if let Some(narrowing) = opts.lossy {
        narrow_sources(&mut sources, narrowing)?;
    }
    let plans = plan_sources(&sources, opts)?;
    let (base, bases) = pair_with_base(&store, opts, &plans)?;
    let total_chunks: u64 = plans.iter().map(|p| p.len() as u64).sum();
    let bytes_in: u64 = sources.iter().map(|s| s.size).sum();

    let progress = opts.progress.clone();
    progress.start(&format!("packing {name}"), bytes_in);
    let slots = store.placement_slots(opts.replicas, None);
    let ctx = Ctx {
        store: &store,
        slots,
        opts,
        total_chunks,
        written: Mutex::new(HashSet::new()),
        progress,
    };
    let files = pack_files(&ctx, &sources, &plans, &bases);
    ctx.progress.finish();
    let files = files?;
    // Every chunk (data, names, directories) reaches the disk before the manifest naming them.
    store.flush_all()?;

    let previous = copies
        .iter()
        .filter_map(|c| c.manifest.as_ref().and_then(|m| m.as_ref().ok()))
        .max_by_key(|m| m.version);
    let newest = previous.map_or(0, |m| m.version);
    let version = super::next_counter(newest, &format!("the version of model '{name}'"))?;
    let mut manifest = new_manifest(&store, &name, version, opts, files);
    let deltas = manifest.delta_count();
    manifest.base = base.filter(|_| deltas > 0);
    store.publish_manifest(&manifest, &copies)?;
    // The narrowed copies (temporary files) go with `sources`.
    let new_chunks = ctx.written.lock().unwrap_or_else(|p| p.into_inner()).len();
    if let Some(p) = previous {
        warn_replaced(p, &manifest, new_chunks);
    }
    Ok(PackSummary {
        name,
        version,
        files: manifest.files.len(),
        bytes_in,
        bytes_stored: manifest.stored_size(),
        chunks: manifest.chunk_count(),
        new_chunks,
        deltas,
        base: manifest.base,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The store a pack of `src` writes to, once `src` is known to lie outside it and, for a signed
/// store, the key is at hand: both found before any chunk is written.
fn open_for_pack(
    src: &Path,
    paths: &[crate::member::MemberSpec],
    opts: &PackOptions,
) -> Result<Store, StoreError> {
    check_outside_store(src, paths)?;
    let store = Store::open_for_pack(paths, opts.init, &opts.member)?;
    if store.trust.is_signed() {
        store.trust.signer().map_err(StoreError::Invalid)?;
    }
    Ok(store)
}

/// The base `opts` asks for, paired with `plans`; with no base, no cut has a base chunk.
fn pair_with_base(
    store: &Store,
    opts: &PackOptions,
    plans: &[Vec<Cut>],
) -> Result<(Option<String>, base::Bases), StoreError> {
    let paired = match &opts.base {
        Some(choice) => base::find(store, choice, plans)?,
        None => None,
    };
    Ok(match paired {
        Some(p) => (Some(p.label), p.bases),
        None => (None, plans.iter().map(|p| vec![None; p.len()]).collect()),
    })
}

/// Packs every source file along its cuts, chunk indices running on from file to file.
fn pack_files(
    ctx: &Ctx,
    sources: &[Source],
    plans: &[Vec<Cut>],
    bases: &[Vec<Option<ChunkRef>>],
) -> Result<Vec<FileEntry>, StoreError> {
    let mut files = Vec::with_capacity(sources.len());
    let mut index = 0u64;
    for ((src, cuts), bases) in sources.iter().zip(plans).zip(bases) {
        files.push(pack_file(ctx, src, (cuts, bases), index)?);
        index += cuts.len() as u64;
    }
    Ok(files)
}

/// A store never packs itself: a source inside a member (or a member inside the source) would
/// read the store's own files while it writes them.
fn check_outside_store(src: &Path, paths: &[crate::member::MemberSpec]) -> Result<(), StoreError> {
    let canonical_src = std::fs::canonicalize(src).map_err(cannot_read(src))?;
    for p in paths {
        if let Some(Ok(member)) = p.dir().map(std::fs::canonicalize)
            && (canonical_src.starts_with(&member) || member.starts_with(&canonical_src))
        {
            return Err(source_err(format!(
                "{} and the store member {} lie one inside the other; pack a file or folder outside the store",
                src.display(),
                p
            )));
        }
    }
    Ok(())
}

/// A retired member given to a pack is refused; members of the store not given are not
/// reached by this pack, said in one line.
fn check_members_given(store: &Store, name: &str) -> Result<(), StoreError> {
    let list = store.update_member_list(|_| {})?;
    if let Some(m) = store
        .members
        .iter()
        .find(|m| list.get(m.id()).is_some_and(|l| l.retired))
    {
        return Err(StoreError::Invalid(format!(
            "{} was retired from the store (member remove); leave it out of --store",
            m.location()
        )));
    }
    let left_out: Vec<String> = list
        .members
        .iter()
        .filter(|l| !l.retired && store.member(&l.id).is_none())
        .map(|l| {
            if l.location.is_empty() {
                format!("member {}", l.id)
            } else {
                l.location.clone()
            }
        })
        .collect();
    if !left_out.is_empty() {
        log::warn!(
            "'{name}' is packed to {} of the {} members of the store; left out: {} (`shardfs repair` with every member brings them up to date)",
            store.members.len(),
            store.members.len() + left_out.len(),
            left_out.join(", ")
        );
    }
    Ok(())
}

/// Where each source file is cut into chunks.
fn plan_sources(sources: &[Source], opts: &PackOptions) -> Result<Vec<Vec<Cut>>, StoreError> {
    sources
        .iter()
        .map(|s| {
            let src = FileAt {
                file: s.open()?,
                len: s.size,
            };
            chunking::plan(&src, opts.partition, opts.chunk_size, &s.rel).map_err(StoreError::from)
        })
        .collect()
}

/// The manifest of version `version` of model `name`, made of `files`.
fn new_manifest(
    store: &Store,
    name: &str,
    version: u64,
    opts: &PackOptions,
    files: Vec<FileEntry>,
) -> Manifest {
    Manifest {
        format_version: crate::store::manifest::format_for(&files),
        name: name.to_string(),
        version,
        created_unix: crate::clock::now_unix_secs(),
        chunk_size: opts.chunk_size,
        codec: match opts.codec {
            CodecChoice::Auto => "auto",
            CodecChoice::Zstd => "zstd",
            CodecChoice::None => "none",
        }
        .to_string(),
        level: opts.level,
        placement: opts.placement,
        replicas: opts.replicas,
        files,
        base: None,
        members: store
            .members
            .iter()
            .map(|m| MemberRef {
                id: m.id().to_string(),
                index: m.info.index,
            })
            .collect(),
        sealed: Default::default(),
    }
}

/// Says what a pack over version `p` did that its user may not expect.
fn warn_replaced(p: &Manifest, manifest: &Manifest, new_chunks: usize) {
    // Another model of the same name is replaced: said when its files were other files (a
    // `model.gguf` packed over a `model.safetensors` of the same stem).
    let paths = |m: &Manifest| m.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
    if paths(p) != paths(manifest) {
        let shown = |v: Vec<String>| {
            let n = v.len();
            let mut s = v.into_iter().take(3).collect::<Vec<_>>().join(", ");
            if n > 3 {
                s.push_str(&format!(" and {} more", n - 3));
            }
            s
        };
        log::warn!(
            "model '{}' held other files ({}); version {} replaces them with {}",
            manifest.name,
            shown(paths(p)),
            manifest.version,
            shown(paths(manifest))
        );
    }
    // Chunks already stored are kept as they were stored: a re-pack asking for another codec
    // or level changes only the chunks it writes. Said, rather than left to be found out.
    let reused = manifest.chunk_count().saturating_sub(new_chunks);
    if reused > 0 && (p.codec != manifest.codec || p.level != manifest.level) {
        log::warn!(
            "{reused} of the {} chunks of '{}' were stored already and are kept as they were (version {} asked for codec {} level {}); only the {new_chunks} new chunks use codec {} level {} (`ls --json` shows what is stored)",
            manifest.chunk_count(),
            manifest.name,
            p.version,
            p.codec,
            p.level,
            manifest.codec,
            manifest.level
        );
    }
}
