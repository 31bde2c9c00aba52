//! `shardfs export`: writes a model's exact bytes (one file, or every file into a directory) to
//! where the user asked. Stdout and an existing device, FIFO or socket are written in place; a
//! new path or a regular file is written under a temporary name beside it and renamed, so that
//! it appears whole or not at all.

use crate::store::manifest::FileEntry;
use crate::store::reader::{MemberTrouble, ReplicaError};
use crate::store::{Store, StoreError};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Output(String),
}

fn output_err(path: &Path) -> impl Fn(io::Error) -> ExportError + '_ {
    move |e| ExportError::Output(format!("{}: {e}", path.display()))
}

/// Hears of every replica that failed during an export.
type OnFailure<'a> = dyn Fn(&str, &ReplicaError) + Sync + 'a;

/// Exports model `name` of `store` (or its file `file`) to `output`; `-` is stdout.
pub fn export(
    store: &Store,
    name: &str,
    file: Option<&str>,
    output: &Path,
) -> Result<(), ExportError> {
    let manifest = store.manifest(name)?;
    let trouble = MemberTrouble::default();
    let on_failure = |member: &str, e: &ReplicaError| trouble.failed(member, e);
    let single = match file {
        Some(p) => Some(manifest.file(p).ok_or_else(|| StoreError::UnknownFile {
            model: name.to_string(),
            path: p.to_string(),
        })?),
        None if manifest.files.len() == 1 => manifest.files.first(),
        None => None,
    };
    if output == Path::new("-") {
        let Some(f) = single else {
            return Err(ExportError::Output(format!(
                "model '{name}' has {} files: pick one with --file, or export to a directory",
                manifest.files.len()
            )));
        };
        let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
        store.export_file(f, &mut out, &on_failure)?;
        return out.flush().map_err(output_err(Path::new("stdout")));
    }
    let existing = match fs::metadata(output) {
        Ok(m) => Some(m.file_type()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(output_err(output)(e)),
    };
    match (single, existing) {
        (Some(_), Some(t)) if t.is_dir() => {
            return Err(ExportError::Output(format!(
                "{} is a directory; a model of one file exports to a file name",
                output.display()
            )));
        }
        // A device, FIFO or socket is written in place: renaming a file over it would replace
        // the device itself (`-o /dev/null` would leave a regular file there).
        (Some(f), Some(t)) if !t.is_file() => {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(output)
                .map_err(output_err(output))?;
            stream(store, f, file, output, &on_failure)?;
            return Ok(());
        }
        (None, Some(_)) => {
            return Err(ExportError::Output(format!(
                "{} exists; a model of several files exports to a new directory",
                output.display()
            )));
        }
        _ => {}
    }
    // A regular file or a new path. A link to a file is followed, so that the link stays and its
    // target is replaced.
    let output = &match existing {
        Some(_) => fs::canonicalize(output).map_err(output_err(output))?,
        None => output.to_path_buf(),
    };
    let tmp = sibling_tmp(output)?;
    let result = (|| -> Result<(), ExportError> {
        match single {
            Some(f) => to_new_file(store, f, &tmp, &on_failure)?,
            None => {
                for f in &manifest.files {
                    let dest = tmp.join(&f.path);
                    if let Some(parent) = dest.parent() {
                        fs::create_dir_all(parent).map_err(output_err(parent))?;
                    }
                    to_new_file(store, f, &dest, &on_failure)?;
                }
            }
        }
        fs::rename(&tmp, output).map_err(output_err(output))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp).or_else(|_| fs::remove_dir_all(&tmp));
    }
    result
}

/// `.<name>.shardfs-export-<pid>` beside `output`.
fn sibling_tmp(output: &Path) -> Result<PathBuf, ExportError> {
    let name = output
        .file_name()
        .ok_or_else(|| ExportError::Output(format!("{} is not a file name", output.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".shardfs-export-{}", std::process::id()));
    Ok(output.with_file_name(tmp_name))
}

/// Streams one file's bytes into `out` (opened on `dest`) and returns it flushed.
fn stream(
    store: &Store,
    f: &FileEntry,
    out: File,
    dest: &Path,
    on_failure: &OnFailure<'_>,
) -> Result<File, ExportError> {
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    store.export_file(f, &mut out, on_failure)?;
    out.into_inner()
        .map_err(|e| output_err(dest)(e.into_error()))
}

/// Writes one file's bytes to the new file `dest`, durably, with the file's mode.
fn to_new_file(
    store: &Store,
    f: &FileEntry,
    dest: &Path,
    on_failure: &OnFailure<'_>,
) -> Result<(), ExportError> {
    let file = File::create(dest).map_err(output_err(dest))?;
    let file = stream(store, f, file, dest, on_failure)?;
    file.sync_all().map_err(output_err(dest))?;
    let _ = file.set_permissions(fs::Permissions::from_mode(f.mode & 0o7777));
    Ok(())
}
