//! The tier's writer thread: everything it does on the tier's disk, in order. At start it
//! checks the copies a previous mount left; then it writes each chunk offered into its copy's
//! `.part` file (`copy_file.rs`), completes a copy once every byte is in (synced, hashed whole,
//! renamed), and when no chunk has come for a while loads the chunks it missed again. Its disk
//! I/O is in the idle class. A writer that panics turns the tier off.

use super::copy_file::{CopyFile, Stage};
use super::state::Copy;
use super::{Offered, Tier, hash_file};
use crate::cache::Chunk;
use crate::codec::Hash32;
use crate::store::manifest::FileEntry;
use std::fs::{self, File};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The writer loads missed chunks again once no chunk has been offered for this long.
const IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// Where the writer takes the chunks offered.
pub(super) type Queue = crossbeam_channel::Receiver<Offered>;

/// The writer's next step.
enum Job {
    Write(Arc<FileEntry>, usize, Chunk),
    Reload,
}

impl Tier {
    /// Starts the writer thread: it checks the copies `found`, then writes the chunks offered.
    /// A writer that fails turns the tier off; chunks still offered are then dropped.
    pub(super) fn start_writer(
        self: Arc<Self>,
        found: Vec<Hash32>,
        queued: Queue,
    ) -> Result<(), String> {
        let tier = self;
        std::thread::Builder::new()
            .name("tier-write".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| {
                    yield_disk();
                    for hash in found {
                        tier.check_found(hash);
                    }
                    let mut stage = Stage::default();
                    let mut last_offered = std::time::Instant::now();
                    while let Some(next) = tier.next_job(&queued, last_offered) {
                        #[cfg(any(test, feature = "twins"))]
                        drop(tier.writer_gate.lock());
                        match next {
                            Job::Write(entry, index, chunk) => {
                                tier.write(&entry, index, &chunk, &mut stage);
                                last_offered = std::time::Instant::now();
                            }
                            Job::Reload => tier.reload_missed(&mut stage),
                        }
                    }
                });
                if std::panic::catch_unwind(run).is_err() {
                    log::error!(
                        "the local tier's writer failed (see above): the tier is off until the next mount; reads go on from the store"
                    );
                    tier.off.store(true, Ordering::SeqCst);
                    // Chunks still offered are taken and dropped, so no reader waits.
                    for _ in queued {}
                }
            })
            .map_err(|e| format!("cannot start the local tier's writer: {e}"))?;
        Ok(())
    }

    /// Hashes a copy found at start; a damaged one is deleted.
    fn check_found(&self, hash: Hash32) {
        let good = hash_file(&self.path(&hash)).is_ok_and(|h| h == hash);
        let mut st = self.state.lock();
        if good {
            if let Some(c) = st.copies.get_mut(&hash) {
                c.checked = true;
            }
            drop(st);
            self.tell_ready(hash);
        } else {
            st.copies.remove(&hash);
            drop(st);
            log::warn!("local copy {} is damaged: deleted", hash.to_hex());
            self.damaged.fetch_add(1, Ordering::Relaxed);
            let _ = fs::remove_file(self.path(&hash));
        }
    }

    /// What the writer does next: write the next chunk offered, or, once none has come for
    /// `IDLE` since `last_offered`, load a missed chunk again; `None` when no offer can come.
    fn next_job(&self, queued: &Queue, last_offered: std::time::Instant) -> Option<Job> {
        use crossbeam_channel::{RecvTimeoutError, TryRecvError};
        let job = |(entry, index, chunk)| Job::Write(entry, index, chunk);
        loop {
            if !self.state.lock().has_missed() {
                return queued.recv().ok().map(job);
            }
            let wait = IDLE.saturating_sub(last_offered.elapsed());
            if wait.is_zero() {
                return match queued.try_recv() {
                    Ok(item) => Some(job(item)),
                    Err(TryRecvError::Empty) => Some(Job::Reload),
                    Err(TryRecvError::Disconnected) => None,
                };
            }
            match queued.recv_timeout(wait) {
                Ok(item) => return Some(job(item)),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Loads one chunk the writer missed (the first of a copy still being built that does not
    /// have its bytes) and writes it.
    fn reload_missed(&self, stage: &mut Stage) {
        let Some(reload) = self.reload.get() else {
            self.state.lock().forget_missed();
            return;
        };
        let Some((entry, index)) = self.state.lock().next_missed() else {
            return;
        };
        match reload(&entry, index) {
            Some(chunk) => {
                self.reloaded.fetch_add(1, Ordering::Relaxed);
                self.write(&entry, index, &chunk, stage)
            }
            None => log::debug!(
                "local tier: chunk {index} of '{}' could not be loaded again: its copy completes when it is read",
                entry.path
            ),
        }
    }

    /// Makes the `.part` file of a reserved copy (on the writer thread).
    fn create_part(&self, file: &FileEntry) -> io::Result<Arc<CopyFile>> {
        // A new private file: whatever is at its name (a killed fill, or a link someone planted
        // in a shared folder) is removed as an entry first, never written through.
        let f = CopyFile::create(&self.part_path(&file.blake3))?;
        preallocate(f.file(), file.size)?;
        Ok(Arc::new(f))
    }

    /// The writer: puts a chunk in place; the last byte in completes the copy.
    fn write(&self, file: &FileEntry, index: usize, chunk: &Chunk, stage: &mut Stage) {
        #[cfg(test)]
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("injected writer failure");
        }
        let evicted = std::mem::take(&mut self.state.lock().evicted);
        for v in evicted {
            let _ = fs::remove_file(self.path(&v));
        }
        let hash = file.blake3;
        let Some(c) = file.chunks.get(index) else {
            return;
        };
        let (start, end) = (c.offset, c.offset + c.len);
        let opened = {
            let mut st = self.state.lock();
            match st.filling.get_mut(&hash) {
                None => return,
                Some(f) => {
                    f.dequeued((start, end));
                    if f.covers(start, end) {
                        return;
                    }
                    f.file.clone()
                }
            }
        };
        let f = match opened {
            Some(f) => f,
            None => match self.create_part(file) {
                Ok(f) => {
                    match self.state.lock().filling.get_mut(&hash) {
                        Some(fill) => fill.file = Some(f.clone()),
                        None => return,
                    }
                    f
                }
                Err(e) => {
                    log::warn!("local tier: cannot start a copy of '{}': {e}", file.path);
                    self.abandon(&hash);
                    return;
                }
            },
        };
        let Some(bytes) = chunk.get(..c.len as usize) else {
            return;
        };
        if let Err(e) = f.write_at(bytes, start, stage) {
            log::warn!("local tier: cannot write a copy of '{}': {e}", file.path);
            self.abandon(&hash);
            return;
        }
        let done = {
            let mut st = self.state.lock();
            let Some(fill) = st.filling.get_mut(&hash) else {
                return;
            };
            fill.add(start, end);
            fill.complete()
        };
        if done {
            self.complete(file, f.file());
        }
    }

    /// Syncs a copy whose bytes are all in, checks its hash and renames it into place.
    fn complete(&self, file: &FileEntry, f: &File) {
        let hash = file.blake3;
        let part = self.part_path(&hash);
        // Stamped with the time it completed, to the nanosecond: the next mount keeps the newest
        // copies that fit its limit, and the time the last write left is the kernel's coarse
        // clock (a tick of some milliseconds, so two copies made one after the other could tie).
        let good =
            f.set_modified(std::time::SystemTime::now()).is_ok() && f.sync_all().is_ok() && {
                forget_pages(f);
                hash_file(&part).is_ok_and(|h| h == hash)
            };
        if !good || fs::rename(&part, self.path(&hash)).is_err() {
            log::warn!("local copy of '{}' did not check out: dropped", file.path);
            self.damaged.fetch_add(1, Ordering::Relaxed);
            self.abandon(&hash);
            return;
        }
        let mut st = self.state.lock();
        st.filling.remove(&hash);
        st.copies.insert(
            hash,
            Copy {
                size: file.size,
                held: 0,
                opened: 0,
                checked: true,
            },
        );
        drop(st);
        log::debug!("local copy of '{}' complete", file.path);
        self.tell_ready(hash);
    }

    fn abandon(&self, hash: &Hash32) {
        {
            let mut st = self.state.lock();
            st.filling.remove(hash);
            st.refused.insert(*hash, std::time::Instant::now());
        }
        let _ = fs::remove_file(self.part_path(hash));
    }
}

/// Gives a copy its whole size at once, in one allocation where the filesystem can (chunks
/// arrive out of order; a sparse file would be laid out in pieces), else as a sparse file.
fn preallocate(f: &File, size: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on an open file descriptor.
    if size > 0 && unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, size as libc::off_t) } == 0 {
        return Ok(());
    }
    f.set_len(size)
}

/// Puts the calling thread's disk I/O in the idle class: reads of the store's members on the
/// same disk go first (schedulers without priorities ignore it).
fn yield_disk() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    // SAFETY: ioprio_set on the calling thread (who 0), no memory passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            IOPRIO_CLASS_IDLE << 13,
        )
    };
    if r != 0 {
        log::debug!(
            "local tier: the writer keeps its disk priority ({})",
            io::Error::last_os_error()
        );
    }
}

/// Lets go of a synced copy's page cache before it is hashed: what is cached of it is the
/// chunks' edges (direct I/O wrote the rest), single pages that would keep the hash's read-ahead
/// from caching the copy in large folios, which a passthrough read of it then gets (measured:
/// a warm re-read of a 1 GiB copy at 7-9 GB/s with the edges left cached, the plain file 17).
fn forget_pages(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: an advice on an open file descriptor; it changes no byte of the file.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}
