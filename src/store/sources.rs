//! What `pack` reads: the regular files of a source file or folder, with their modes and
//! times, links followed only where they stay inside the folder (or its Hugging Face cache
//! repository), and the narrowed copies a lossy pack stores instead.

use super::manifest::Lossy;
use super::{StoreError, io_err};
use crate::chunking::{self, FileAt};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A regular file to pack.
#[derive(Debug)]
pub(super) struct Source {
    pub(super) abs: PathBuf,
    pub(super) rel: String,
    pub(super) size: u64,
    pub(super) mode: u32,
    pub(super) mtime_secs: i64,
    pub(super) mtime_nanos: u32,
    /// For `--lossy`: the narrowed copy packed instead of `abs`, and how it differs.
    pub(super) narrowed: Option<(tempfile::TempPath, Lossy)>,
    /// The file as it was when the pack began: a file that changes while it is read is refused.
    stamp: Stamp,
}

/// What tells a file is still the one the pack began with: its size, modification and change
/// times, and inode. Any write (in place, an append, a rename over it) changes one of them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: (u64, u64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: (meta.dev(), meta.ino()),
        }
    }
}

impl Source {
    /// The file whose bytes are stored: the narrowed copy for a lossy pack.
    pub(super) fn data_path(&self) -> &Path {
        self.narrowed.as_ref().map_or(&self.abs, |(p, _)| p)
    }

    /// Fails when the file changed since the pack began (`read` is the handle its bytes were
    /// read from): a torn mix of two versions is never published.
    pub(super) fn check_unchanged(&self, read: &File) -> Result<(), StoreError> {
        let now = fs::metadata(&self.abs).map_err(cannot_read(&self.abs))?;
        let same_file =
            self.narrowed.is_some() || read.metadata().is_ok_and(|m| Stamp::of(&m) == self.stamp);
        if Stamp::of(&now) == self.stamp && same_file {
            return Ok(());
        }
        Err(source_err(format!(
            "{} changed while it was packed (its size, times or inode are not those it had when the pack began); nothing of it was published: pack again once it is complete",
            self.abs.display()
        )))
    }

    /// Opens the file whose bytes are stored.
    pub(super) fn open(&self) -> Result<File, StoreError> {
        File::open(self.data_path()).map_err(cannot_read(&self.abs))
    }
}

/// The error for a source file that cannot be read, naming the file as the user gave it.
pub(super) fn cannot_read(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |e| source_err(format!("cannot read {}: {e}", path.display()))
}

/// How `pack --lossy` narrows safetensors tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Narrowing {
    /// fp32 tensors stored as bf16 (rounded to nearest even), the header rewritten to match.
    Bf16,
    /// bf16, fp16 and fp32 tensors rounded to FP8 E4M3 values with a power-of-two scale per
    /// 128 values (`codec::fp8`), in their own dtype and layout, stored as the FP8 codes.
    Fp8,
}

impl Narrowing {
    pub fn name(self) -> &'static str {
        match self {
            Narrowing::Bf16 => "bf16",
            Narrowing::Fp8 => "fp8",
        }
    }
}

/// For `--lossy`: writes a narrowed copy of each safetensors file with tensors to narrow into
/// the temporary directory (`TMPDIR`, a private file created anew, deleted when the pack ends)
/// and points the source at it. Other files are packed as they are.
pub(super) fn narrow_sources(sources: &mut [Source], how: Narrowing) -> Result<(), StoreError> {
    for s in sources.iter_mut() {
        let src = FileAt {
            file: s.open()?,
            len: s.size,
        };
        if !chunking::safetensors::looks_like(&src) {
            continue;
        }
        let tmp_dir = std::env::temp_dir();
        let (out, path) = tempfile::Builder::new()
            .prefix(".shardfs-lossy-")
            .tempfile_in(&tmp_dir)
            .map_err(io_err(&tmp_dir))?
            .into_parts();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
        let done = match how {
            Narrowing::Bf16 => chunking::safetensors::to_bf16(&src, &mut out),
            Narrowing::Fp8 => chunking::safetensors::to_fp8(&src, &mut out),
        };
        let flushed = std::io::Write::flush(&mut out);
        match (done, flushed) {
            (Ok(Some(n)), Ok(())) => {
                let size = fs::metadata(&path).map_err(io_err(&path))?.len();
                log::info!("{}: {} tensors stored as {}", s.rel, n.tensors, how.name());
                s.size = size;
                let lossy = Lossy {
                    kind: how.name().into(),
                    original_size: n.original_size,
                    original_blake3: n.original_blake3,
                };
                s.narrowed = Some((path, lossy));
            }
            (Ok(None), _) => drop(path),
            (Err(e), _) => {
                drop(path);
                log::warn!("{}: {e}; packing it unchanged", s.rel);
            }
            (_, Err(e)) => return Err(io_err(&path)(e)),
        }
    }
    if sources.iter().all(|s| s.narrowed.is_none()) {
        let what = match how {
            Narrowing::Bf16 => "fp32 tensors",
            Narrowing::Fp8 => "bf16, fp16 and fp32 tensors",
        };
        log::warn!(
            "--lossy {} changed nothing: it narrows {what} of safetensors files, and none was found",
            how.name()
        );
    }
    Ok(())
}

pub(super) fn source_err(msg: String) -> StoreError {
    StoreError::Source(msg)
}

pub(super) fn stat_source(
    abs: PathBuf,
    rel: String,
    meta: &fs::Metadata,
) -> Result<Source, StoreError> {
    // Open now so an unreadable file fails the pack before the store is touched.
    File::open(&abs).map_err(cannot_read(&abs))?;
    Ok(Source {
        abs,
        rel,
        size: meta.len(),
        mode: meta.permissions().mode() & 0o7777,
        mtime_secs: meta.mtime(),
        mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        narrowed: None,
        stamp: Stamp::of(meta),
    })
}

/// Lists the regular files under `src`, sorted by relative path. A link to a regular file is
/// packed as that file under the link's name, but only where [`LinkRule`] allows it; links to
/// folders, broken links and special files are refused.
pub(super) fn scan(src: &Path, follow_links: bool) -> Result<(String, Vec<Source>), StoreError> {
    let meta =
        fs::metadata(src).map_err(|e| source_err(format!("cannot open {}: {e}", src.display())))?;
    let utf8 = |p: &Path| -> Result<String, StoreError> {
        p.file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| source_err(format!("{}: file name is not UTF-8", p.display())))
    };
    if meta.is_file() {
        let file_name = utf8(src)?;
        let stem = Path::new(&file_name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(&file_name)
            .to_string();
        return Ok((
            stem,
            vec![stat_source(src.to_path_buf(), file_name, &meta)?],
        ));
    }
    if !meta.is_dir() {
        return Err(source_err(format!(
            "{} is not a regular file or a folder",
            src.display()
        )));
    }
    let canonical =
        fs::canonicalize(src).map_err(|e| source_err(format!("{}: {e}", src.display())))?;
    let name = hugging_face_name(&canonical).map_or_else(|| utf8(&canonical), Ok)?;
    let links = LinkRule::of(canonical, follow_links);
    let mut out = Vec::new();
    let mut stack = vec![(src.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = fs::read_dir(&dir)
            .map_err(|e| source_err(format!("cannot list {}: {e}", dir.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| source_err(format!("cannot list {}: {e}", dir.display())))?;
            let mut path = entry.path();
            let rel = format!("{prefix}{}", utf8(&path)?);
            let mut meta = fs::symlink_metadata(&path)
                .map_err(|e| source_err(format!("{}: {e}", path.display())))?;
            if meta.file_type().is_symlink() {
                // The resolved target is read, not the link: a link changed after this scan
                // cannot redirect the pack.
                let target = fs::canonicalize(&path).map_err(|e| {
                    source_err(format!(
                        "{} is a symlink that cannot be followed: {e}",
                        path.display()
                    ))
                })?;
                links.allows(&path, &target)?;
                meta = fs::metadata(&target)
                    .map_err(|e| source_err(format!("{}: {e}", target.display())))?;
                if !meta.is_file() {
                    return Err(source_err(format!(
                        "{} is a symlink to something other than a regular file; shardfs follows links to files only",
                        path.display()
                    )));
                }
                path = target;
            }
            let ft = meta.file_type();
            if ft.is_dir() {
                stack.push((path, format!("{rel}/")));
            } else if ft.is_file() {
                out.push(stat_source(path, rel, &meta)?);
            } else {
                return Err(source_err(format!(
                    "{} is a special file (fifo, socket or device); shardfs packs regular files only",
                    path.display()
                )));
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((name, out))
}

/// The model's name for a Hugging Face cache snapshot (`models--ORG--NAME/snapshots/REV`):
/// `NAME`, rather than the revision hash the folder is called.
fn hugging_face_name(folder: &Path) -> Option<String> {
    let snapshots = folder.parent()?;
    if snapshots.file_name()? != "snapshots" {
        return None;
    }
    let repo = snapshots.parent()?.file_name()?.to_str()?;
    let name = repo.strip_prefix("models--")?.rsplit("--").next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Where a link in a packed folder may lead: inside the folder, or, when the folder is a
/// Hugging Face cache snapshot (`REPO/snapshots/REV`), into `REPO/blobs/` where the cache keeps
/// the files its snapshots link to. Anywhere with `--follow-links`.
struct LinkRule {
    folder: PathBuf,
    blobs: Option<PathBuf>,
    anywhere: bool,
}

impl LinkRule {
    fn of(folder: PathBuf, anywhere: bool) -> LinkRule {
        let blobs = folder
            .parent()
            .filter(|snapshots| snapshots.file_name() == Some("snapshots".as_ref()))
            .and_then(Path::parent)
            .map(|repo| repo.join("blobs"));
        LinkRule {
            folder,
            blobs,
            anywhere,
        }
    }

    /// `target` is the canonical path `link` resolves to.
    fn allows(&self, link: &Path, target: &Path) -> Result<(), StoreError> {
        let inside = |root: &Path| target.starts_with(root) && target != root;
        if self.anywhere || inside(&self.folder) || self.blobs.as_deref().is_some_and(inside) {
            return Ok(());
        }
        Err(source_err(format!(
            "{} links to {}, outside the folder being packed; pass --follow-links to pack it anyway",
            link.display(),
            target.display()
        )))
    }
}
