//! Deadlines for every member call, whatever the kind. A directory on a hung NFS server blocks
//! in the kernel, where no timeout reaches; so each member gets a small pool of I/O threads, a
//! call is handed to it and waited for with its deadline, and a call that overruns keeps its
//! thread (it cannot be taken back) while the caller gets `TimedOut`. When every thread of the
//! pool is held by such a stuck call, the member is treated as unavailable: calls fail at once
//! until one of them returns. A member thus costs at most `THREADS` threads, whatever it does.

use super::{
    ChunkEntry, ChunkHead, Expect, IfPresent, Image, Listed, Lock, MemberError, MemberIo,
    ObjectInfo, Options, Setup, Stale, Stored, Sweep,
};
use crate::codec::Hash32;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

/// I/O threads per member, at most (started as calls need them).
pub const THREADS: usize = 8;
/// Calls waiting for a free thread, at most; more fail at once.
const WAITING: usize = 64;
/// Added to the inner member's own deadline (an S3 member has one), so that the inner one is
/// the one that speaks when both would.
const SLACK: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A call's state, shared by the caller and the thread running it.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// A member whose calls run on its own bounded pool, each with a deadline.
pub struct Deadlined {
    inner: Arc<dyn MemberIo>,
    opts: Options,
    queue: Sender<Job>,
    jobs: Receiver<Job>,
    /// Threads started, and of them those held by a call its caller gave up on.
    threads: Mutex<usize>,
    stuck: Arc<AtomicUsize>,
    idle: Arc<AtomicUsize>,
}

impl fmt::Debug for Deadlined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadlined")
            .field("inner", &self.inner)
            .field("stuck", &self.stuck.load(Ordering::Relaxed))
            .finish()
    }
}

impl Deadlined {
    pub fn new(inner: Arc<dyn MemberIo>, opts: &Options) -> Deadlined {
        let (queue, jobs) = crossbeam_channel::bounded(WAITING);
        Deadlined {
            inner,
            opts: *opts,
            queue,
            jobs,
            threads: Mutex::new(0),
            stuck: Arc::new(AtomicUsize::new(0)),
            idle: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Calls that overran their deadline and have not returned yet.
    pub fn stuck(&self) -> usize {
        self.stuck.load(Ordering::SeqCst)
    }

    /// Starts one more thread when none is idle and the pool may grow.
    fn grow(&self) -> Result<(), MemberError> {
        let mut threads = self.threads.lock();
        if self.idle.load(Ordering::SeqCst) > 0 || *threads >= THREADS {
            return Ok(());
        }
        let (jobs, idle) = (self.jobs.clone(), self.idle.clone());
        std::thread::Builder::new()
            .name("member-io".into())
            .spawn(move || {
                loop {
                    idle.fetch_add(1, Ordering::SeqCst);
                    let job = jobs.recv();
                    idle.fetch_sub(1, Ordering::SeqCst);
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })
            .map_err(|e| MemberError::Io(format!("cannot start a member I/O thread: {e}")))?;
        *threads += 1;
        Ok(())
    }

    /// Runs `f` on the member's pool and waits for it until `limit` (plus the slack).
    fn call<T: Send + 'static>(
        &self,
        limit: Duration,
        f: impl FnOnce(&dyn MemberIo) -> Result<T, MemberError> + Send + 'static,
    ) -> Result<T, MemberError> {
        if self.stuck() >= THREADS {
            return Err(MemberError::Unavailable(format!(
                "{}: all {THREADS} I/O threads are held by calls that have not returned (a hung disk or mount?)",
                self.inner.location()
            )));
        }
        self.grow()?;
        let (tx, rx) = crossbeam_channel::bounded::<Result<T, MemberError>>(1);
        let state = Arc::new(AtomicU8::new(RUNNING));
        let job = {
            let (inner, state, stuck) = (self.inner.clone(), state.clone(), self.stuck.clone());
            move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&*inner)))
                    .unwrap_or_else(|_| Err(MemberError::Io("member call panicked".into())));
                let _ = tx.send(result);
                if state
                    .compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    // Its caller gave up on it: the thread is free again.
                    stuck.fetch_sub(1, Ordering::SeqCst);
                }
            }
        };
        match self.queue.try_send(Box::new(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(MemberError::Io(format!(
                    "{}: {WAITING} calls already wait for its I/O threads",
                    self.inner.location()
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(MemberError::Io("member I/O pool is gone".into()));
            }
        }
        let limit = limit + SLACK;
        match rx.recv_timeout(limit) {
            Ok(result) => result,
            Err(_) => {
                if state
                    .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    self.stuck.fetch_add(1, Ordering::SeqCst);
                    Err(MemberError::TimedOut(limit))
                } else {
                    // It finished just now.
                    rx.try_recv().unwrap_or(Err(MemberError::TimedOut(limit)))
                }
            }
        }
    }

    fn short(&self) -> Duration {
        self.opts.timeout
    }

    /// Listings and cleanups walk a whole member.
    fn long(&self) -> Duration {
        self.opts.timeout * 20
    }
}

impl MemberIo for Deadlined {
    fn location(&self) -> &str {
        self.inner.location()
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    fn read_info(&self) -> Result<Option<Vec<u8>>, MemberError> {
        self.call(self.short(), |m| m.read_info())
    }

    fn init(&self, info: &[u8], setup: Setup) -> Result<(), MemberError> {
        let info = info.to_vec();
        self.call(self.long(), move |m| m.init(&info, setup))
    }

    fn get_chunk(&self, hash: &Hash32, max_len: u64) -> Result<Image, MemberError> {
        let hash = *hash;
        self.call(self.opts.deadline(max_len), move |m| {
            m.get_chunk(&hash, max_len)
        })
    }

    fn read_chunk_at(
        &self,
        hash: &Hash32,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, MemberError> {
        let hash = *hash;
        self.call(self.opts.deadline(len as u64), move |m| {
            m.read_chunk_at(&hash, offset, len)
        })
    }

    fn chunk_head(&self, hash: &Hash32) -> Result<Option<ChunkHead>, MemberError> {
        let hash = *hash;
        self.call(self.short(), move |m| m.chunk_head(&hash))
    }

    fn put_chunk(
        &self,
        hash: &Hash32,
        image: &[u8],
        present: IfPresent,
    ) -> Result<(), MemberError> {
        let (hash, image) = (*hash, image.to_vec());
        // A write may wait for the disk twice (the data, then the rename).
        let limit = self.opts.deadline(image.len() as u64) + self.opts.timeout;
        self.call(limit, move |m| m.put_chunk(&hash, &image, present))
    }

    fn sweep_damaged(&self, older_than: Duration, sweep: Sweep) -> Result<Stale, MemberError> {
        self.call(self.long(), move |m| m.sweep_damaged(older_than, sweep))
    }

    fn list_chunks(&self) -> Result<Vec<ChunkEntry>, MemberError> {
        self.call(self.long(), |m| m.list_chunks())
    }

    fn delete_chunk(&self, hash: &Hash32) -> Result<(), MemberError> {
        let hash = *hash;
        self.call(self.short(), move |m| m.delete_chunk(&hash))
    }

    fn get(&self, key: &str, cap: u64) -> Result<Option<Stored>, MemberError> {
        let key = key.to_string();
        self.call(self.opts.deadline(cap), move |m| m.get(&key, cap))
    }

    fn put(&self, key: &str, bytes: &[u8], cap: u64, expect: &Expect) -> Result<(), MemberError> {
        let (key, bytes, expect) = (key.to_string(), bytes.to_vec(), expect.clone());
        // A write may wait for the disk twice (the data, then the folder).
        let limit = self.opts.deadline(bytes.len() as u64) + self.opts.timeout;
        self.call(limit, move |m| m.put(&key, &bytes, cap, &expect))
    }

    fn read_at(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, MemberError> {
        let key = key.to_string();
        self.call(self.opts.deadline(len as u64), move |m| {
            m.read_at(&key, offset, len)
        })
    }

    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, MemberError> {
        let key = key.to_string();
        self.call(self.short(), move |m| m.stat(&key))
    }

    fn write(&self, key: &str, bytes: &[u8], present: IfPresent) -> Result<(), MemberError> {
        let (key, bytes) = (key.to_string(), bytes.to_vec());
        // A write may wait for the disk twice (the data, then the rename).
        let limit = self.opts.deadline(bytes.len() as u64) + self.opts.timeout;
        self.call(limit, move |m| m.write(&key, &bytes, present))
    }

    fn list(&self, dir: &str) -> Result<Vec<Listed>, MemberError> {
        let dir = dir.to_string();
        self.call(self.long(), move |m| m.list(&dir))
    }

    fn delete(&self, key: &str) -> Result<(), MemberError> {
        let key = key.to_string();
        self.call(self.short(), move |m| m.delete(&key))
    }

    fn flush(&self) -> Result<(), MemberError> {
        // Makes everything a pack wrote durable: minutes of dirty data on a slow disk.
        self.call(self.opts.timeout * 60, |m| m.flush())
    }

    fn exclusive_lock(&self) -> bool {
        self.inner.exclusive_lock()
    }

    fn lock(&self) -> Result<Box<dyn Lock>, MemberError> {
        self.call(self.long(), |m| m.lock())
    }

    fn free_space(&self) -> Result<Option<u64>, MemberError> {
        self.call(self.short(), |m| m.free_space())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::dir::DirMember;

    /// A member whose chunk reads block until `release` is dropped (a hung NFS read).
    #[derive(Debug)]
    struct Hung {
        inner: DirMember,
        gate: Receiver<()>,
    }

    impl Hung {
        fn wait(&self) {
            let _ = self.gate.recv();
        }
    }

    macro_rules! forward {
        ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
            $(fn $name(&self, $($arg: $ty),*) -> $ret { self.inner.$name($($arg),*) })*
        };
    }

    impl MemberIo for Hung {
        fn location(&self) -> &str {
            "hung"
        }
        fn remote(&self) -> bool {
            false
        }
        fn get_chunk(&self, hash: &Hash32, max_len: u64) -> Result<Image, MemberError> {
            self.wait();
            self.inner.get_chunk(hash, max_len)
        }
        forward! {
            read_info() -> Result<Option<Vec<u8>>, MemberError>;
            init(info: &[u8], setup: Setup) -> Result<(), MemberError>;
            chunk_head(hash: &Hash32) -> Result<Option<ChunkHead>, MemberError>;
            read_chunk_at(hash: &Hash32, offset: u64, len: usize) -> Result<Vec<u8>, MemberError>;
            put_chunk(hash: &Hash32, image: &[u8], present: IfPresent) -> Result<(), MemberError>;
            sweep_damaged(older_than: Duration, sweep: Sweep) -> Result<Stale, MemberError>;
            list_chunks() -> Result<Vec<ChunkEntry>, MemberError>;
            delete_chunk(hash: &Hash32) -> Result<(), MemberError>;
            get(key: &str, cap: u64) -> Result<Option<Stored>, MemberError>;
            read_at(key: &str, offset: u64, len: usize) -> Result<Vec<u8>, MemberError>;
            stat(key: &str) -> Result<Option<ObjectInfo>, MemberError>;
            write(key: &str, bytes: &[u8], present: IfPresent) -> Result<(), MemberError>;
            put(key: &str, bytes: &[u8], cap: u64, expect: &Expect) -> Result<(), MemberError>;
            list(dir: &str) -> Result<Vec<Listed>, MemberError>;
            delete(key: &str) -> Result<(), MemberError>;
            flush() -> Result<(), MemberError>;
            exclusive_lock() -> bool;
            lock() -> Result<Box<dyn Lock>, MemberError>;
        }
    }

    #[test]
    fn hung_calls_time_out_hold_at_most_the_pool_and_free_it_when_they_return() {
        let dir = tempfile::tempdir().unwrap();
        let (release, gate) = crossbeam_channel::bounded::<()>(0);
        let hung = Arc::new(Hung {
            inner: DirMember::new(dir.path()),
            gate,
        });
        let opts = Options {
            timeout: Duration::from_millis(50),
            ..Options::default()
        };
        let m = Deadlined::new(hung, &opts);
        m.init(b"{}", Setup::Create).unwrap();
        let h = Hash32::of(b"x");
        // Each hung read ends in TimedOut and keeps its thread, up to the pool's size.
        for i in 1..=THREADS {
            assert!(matches!(m.get_chunk(&h, 16), Err(MemberError::TimedOut(_))));
            assert_eq!(m.stuck(), i);
        }
        // Then the member fails at once, without a thread more.
        assert!(matches!(
            m.get_chunk(&h, 16),
            Err(MemberError::Unavailable(_))
        ));
        assert_eq!(*m.threads.lock(), THREADS);
        // The disk answers again: the stuck calls return and free their threads.
        drop(release);
        while m.stuck() > 0 {
            std::thread::yield_now();
        }
        assert!(matches!(m.get_chunk(&h, 16), Err(MemberError::Missing)));
        assert!(m.read_info().unwrap().is_some());
        assert_eq!(*m.threads.lock(), THREADS);
    }
}
