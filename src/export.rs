//! `shardfs export`: writes a model's exact bytes (one file, or every file into a directory) to
//! where the user asked. Stdout and an existing device, FIFO or socket are written in place; a
//! new path or a regular file is written under a temporary name beside it and renamed, so that
//! it appears whole or not at all; an export interrupted by a signal removes its temporary
//! (`remove_on_signal`). Files keep their recorded modification time (as `cp -a` does) and a
//! mode no wider than the recorded one, nor than that of the file they replace; missing parent
//! folders are made only when asked (`--parents`).

use crate::store::manifest::FileEntry;
use crate::store::reader::{MemberTrouble, ReplicaError};
use crate::store::{Store, StoreError};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use thiserror::Error;

/// The temporary output being written (a file, or a folder for a model of several files).
static PENDING: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Makes a temporary with `make` and notes it as pending in one step: the signal watcher takes
/// the same lock, so a signal that comes while the temporary is made still finds it (noted
/// after its creation, one that came in between left it behind).
fn make_pending<T: AsRef<Path>>(make: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let made = make()?;
    *p = Some(made.as_ref().to_path_buf());
    Ok(made)
}

/// Puts the pending temporary in place with `persist` and stops noting it, in one step: a signal
/// meanwhile finds either the temporary (and removes it) or nothing, never an output it would
/// say was not written.
fn persist_pending<T>(persist: impl FnOnce() -> T) -> T {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let done = persist();
    *p = None;
    done
}

/// Makes SIGINT (Ctrl-C), SIGTERM and SIGHUP end the process only after the temporary output of
/// a running export is removed, so an interrupted export leaves nothing behind. Call it before
/// any other thread starts: the signals are blocked in every thread, and one thread waits for
/// them.
pub fn remove_on_signal() {
    let set = crate::signals::block_exit_signals();
    // Without a watcher the signals keep their default action.
    crate::signals::on_exit_signal(set, |sig| {
        let path = PENDING.lock().ok().and_then(|mut p| p.take());
        if let Some(p) = path {
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
        eprintln!("shardfs: export interrupted; nothing was written");
        std::process::exit(128 + sig);
    });
}

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
/// With `parents`, missing folders above `output` are made (as `mkdir -p`).
pub fn export(
    store: &Store,
    name: &str,
    file: Option<&str>,
    output: &Path,
    parents: bool,
) -> Result<(), ExportError> {
    let manifest = store.manifest(name)?;
    let trouble = MemberTrouble::default();
    let on_failure = |member: &str, e: &ReplicaError| trouble.failed(member, e);
    let single = chosen_file(&manifest, file)?;
    if output == Path::new("-") {
        let Some(f) = single else {
            return Err(ExportError::Output(format!(
                "model '{name}' has {} files: pick one with --file, or export to a directory",
                manifest.files.len()
            )));
        };
        return export_stdout(store, f, &on_failure);
    }
    refuse_planted_link(output)?;
    let found = match fs::metadata(output) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(output_err(output)(e)),
    };
    let existing = found.as_ref().map(|m| m.file_type());
    match (single, existing) {
        (Some(_), Some(t)) if t.is_dir() => {
            return Err(ExportError::Output(format!(
                "{} is a directory; a model of one file exports to a file name",
                output.display()
            )));
        }
        // A device, FIFO or socket is written in place: renaming a file over it would replace
        // the device itself (`-o /dev/null` would leave a regular file there).
        (Some(f), Some(t)) if !t.is_file() => return write_in_place(store, f, output, &on_failure),
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
    // The file replaced keeps the bits it had: an export never makes it more open.
    let cap = found.map_or(0o777, |m| m.mode() & 0o777);
    let (dir, name) = split_output(output)?;
    // The temporary beside the output has an unpredictable name and is created anew (O_EXCL:
    // a link planted there is never written through); it goes when anything fails.
    let prefix = temp_prefix(name);
    let builder = temp_builder(&prefix);
    let umask = process_umask();
    ensure_dir(dir, parents, umask)?;
    match single {
        Some(f) => {
            let tmp = make_pending(|| builder.tempfile_in(dir)).map_err(output_err(dir))?;
            export_one(
                store,
                f,
                tmp,
                output,
                export_mode(f.mode, umask) & cap,
                &on_failure,
            )
        }
        None => export_folder(store, &manifest, builder, dir, output, umask, &on_failure),
    }
}

/// The one file an export writes: `file` when given, the model's only file, or `None` (the
/// whole model, as a folder).
fn chosen_file<'m>(
    manifest: &'m crate::store::manifest::Manifest,
    file: Option<&str>,
) -> Result<Option<&'m FileEntry>, StoreError> {
    Ok(match file {
        Some(p) => Some(manifest.file(p).ok_or_else(|| StoreError::UnknownFile {
            model: manifest.name.clone(),
            path: p.to_string(),
        })?),
        None if manifest.files.len() == 1 => manifest.files.first(),
        None => None,
    })
}

/// Writes file `f` into the device, FIFO or socket at `output`.
fn write_in_place(
    store: &Store,
    f: &FileEntry,
    output: &Path,
    on_failure: &OnFailure,
) -> Result<(), ExportError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(output)
        .map_err(output_err(output))?;
    stream(store, f, file, output, on_failure)?;
    Ok(())
}

/// Writes file `f` into the temporary `tmp`, then renames it to `output`.
fn export_one(
    store: &Store,
    f: &FileEntry,
    tmp: tempfile::NamedTempFile,
    output: &Path,
    mode: u32,
    on_failure: &OnFailure,
) -> Result<(), ExportError> {
    let file = tmp.as_file().try_clone().map_err(output_err(tmp.path()))?;
    let file = stream(store, f, file, tmp.path(), on_failure)?;
    finish_file(&file, f, mode, tmp.path())?;
    let persisted = persist_pending(|| tmp.persist(output));
    persisted.map_err(|e| output_err(output)(e.error))?;
    Ok(())
}

/// Writes one file to stdout.
fn export_stdout(store: &Store, f: &FileEntry, on_failure: &OnFailure) -> Result<(), ExportError> {
    let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
    store.export_file(f, &mut out, on_failure)?;
    out.flush().map_err(output_err(Path::new("stdout")))
}

/// Makes temporaries named `PREFIX<random>.shardfs-export`.
fn temp_builder(prefix: &std::ffi::OsStr) -> tempfile::Builder<'_, 'static> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(".shardfs-export");
    builder
}

/// `.NAME.`: the start of the temporary's name beside output NAME.
fn temp_prefix(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    prefix
}

/// The folder `output` goes into and its file name.
fn split_output(output: &Path) -> Result<(&Path, &std::ffi::OsStr), ExportError> {
    match (output.parent(), output.file_name()) {
        (Some(d), Some(n)) => Ok((
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            },
            n,
        )),
        _ => Err(ExportError::Output(format!(
            "{} is not a file name",
            output.display()
        ))),
    }
}

/// Makes sure `dir` is a folder: made (with `parents`, as `mkdir -p`) where it is missing.
fn ensure_dir(dir: &Path, parents: bool, umask: u32) -> Result<(), ExportError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ExportError::Output(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && parents => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o777 & !umask)
            .create(dir)
            .map_err(output_err(dir))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ExportError::Output(format!(
                "{} does not exist (--parents makes it)",
                dir.display()
            )));
        }
        Err(e) => return Err(output_err(dir)(e)),
    }
    Ok(())
}

/// Writes every file of `manifest` into a new temporary folder in `dir`, then renames it to
/// `output` (gone when anything fails).
fn export_folder(
    store: &Store,
    manifest: &crate::store::manifest::Manifest,
    builder: tempfile::Builder,
    dir: &Path,
    output: &Path,
    umask: u32,
    on_failure: &OnFailure,
) -> Result<(), ExportError> {
    let tmp = make_pending(|| builder.tempdir_in(dir)).map_err(output_err(dir))?;
    for f in &manifest.files {
        let dest = tmp.path().join(&f.path);
        make_dirs(tmp.path(), &f.path, umask)?;
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&dest)
            .map_err(output_err(&dest))?;
        let file = stream(store, f, file, &dest, on_failure)?;
        finish_file(&file, f, export_mode(f.mode, umask), &dest)?;
    }
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777 & !umask))
        .map_err(output_err(tmp.path()))?;
    let kept = tmp.keep();
    let renamed = persist_pending(|| fs::rename(&kept, output));
    if let Err(e) = renamed {
        let _ = fs::remove_dir_all(&kept);
        return Err(output_err(output)(e));
    }
    Ok(())
}

/// A link at the output is followed (its target written) only when the kernel would follow it
/// too under `fs.protected_symlinks`: unless it lies in a sticky world-writable folder (`/tmp`)
/// and is owned by neither this user nor the folder's owner. Such a link is another user's
/// trap: writing through it would let them choose which of this user's files is replaced.
fn refuse_planted_link(output: &Path) -> Result<(), ExportError> {
    let Ok(link) = fs::symlink_metadata(output) else {
        return Ok(());
    };
    if !link.file_type().is_symlink() {
        return Ok(());
    }
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let folder = fs::metadata(dir).map_err(output_err(dir))?;
    let shared = folder.mode() & 0o1002 == 0o1002;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if shared && link.uid() != me && link.uid() != folder.uid() {
        return Err(ExportError::Output(format!(
            "{} is a link owned by another user (uid {}) in a shared folder; not followed: remove it or export elsewhere",
            output.display(),
            link.uid()
        )));
    }
    Ok(())
}

/// The permission bits an exported file gets: those the manifest records, without setuid,
/// setgid, sticky or group/world write (a member may hold a forged mode), under the umask.
pub fn export_mode(recorded: u32, umask: u32) -> u32 {
    recorded & 0o755 & !umask
}

/// This process's umask, read without changing it (`/proc/self/status`); 022 where unknown.
fn process_umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Makes the folders of `rel` (a checked model path) inside the fresh folder `root`, none of
/// them followed if something else made it a link meanwhile.
fn make_dirs(root: &Path, rel: &str, umask: u32) -> Result<(), ExportError> {
    let mut at = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(ExportError::Output(format!(
                    "{} is in the way (not a directory)",
                    at.display()
                )));
            }
            Err(_) => fs::DirBuilder::new()
                .mode(0o777 & !umask)
                .create(&at)
                .map_err(output_err(&at))?,
        }
    }
    Ok(())
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

/// Makes an exported file durable and gives it `mode` and the modification time `f` records.
fn finish_file(file: &File, f: &FileEntry, mode: u32, dest: &Path) -> Result<(), ExportError> {
    if let Some(mtime) = recorded_mtime(f) {
        file.set_times(fs::FileTimes::new().set_modified(mtime))
            .map_err(output_err(dest))?;
    }
    file.sync_all().map_err(output_err(dest))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(output_err(dest))
}

/// The modification time a manifest records, when it is one a file can have.
fn recorded_mtime(f: &FileEntry) -> Option<std::time::SystemTime> {
    crate::clock::from_unix(f.mtime_secs, f.mtime_nanos)
}

#[cfg(test)]
mod tests {
    #[test]
    fn modes_lose_special_and_write_bits() {
        assert_eq!(super::export_mode(0o106777, 0o022), 0o755);
        assert_eq!(super::export_mode(0o644, 0o077), 0o600);
        assert_eq!(super::export_mode(0o4755, 0), 0o755);
    }
}
