//! Fixed pools of threads for the mount's reads and read-ahead. Jobs run in the order they were
//! queued; idle threads sleep on the queue. (A work-stealing pool spins before it sleeps: under
//! a stream of short jobs that spinning took a tenth of the daemon's CPU time.)

use crossbeam_channel::{Sender, TrySendError, bounded, unbounded};
use std::io;

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct Workers {
    queue: Sender<Job>,
}

impl Workers {
    /// Starts `n` threads named `name-0`, `name-1`, ...; they end when the pool is dropped and
    /// the queue has drained.
    pub fn new(name: &str, n: usize) -> io::Result<Workers> {
        Workers::with_queue(name, n, None)
    }

    /// As `new`, with at most `waiting` jobs queued (`None`: no bound; for pools whose callers
    /// are bounded themselves).
    pub fn with_queue(name: &str, n: usize, waiting: Option<usize>) -> io::Result<Workers> {
        let (queue, jobs) = match waiting {
            Some(w) => bounded::<Job>(w),
            None => unbounded::<Job>(),
        };
        for i in 0..n.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    for job in jobs {
                        // A job that panics must not take its thread with it: the pool would
                        // shrink for good. (The reply it held is dropped, which answers EIO.)
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            log::error!("a worker job panicked; the thread goes on");
                        }
                    }
                })?;
        }
        Ok(Workers { queue })
    }

    /// Queues `job` unless the queue is full; `false` when it was not queued.
    pub fn try_spawn(&self, job: impl FnOnce() + Send + 'static) -> bool {
        match self.queue.try_send(Box::new(job)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Queues `job` for the next free thread.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        // The threads only stop once `self` is dropped, so the queue is open here.
        let _ = self.queue.send(Box::new(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn jobs_run_in_parallel_on_the_pool() {
        let workers = Workers::new("test", 3).unwrap();
        // Three jobs that each wait for the other two: they finish only if all three run at once.
        let barrier = Arc::new(Barrier::new(4));
        for _ in 0..3 {
            let b = barrier.clone();
            workers.spawn(move || {
                b.wait();
            });
        }
        barrier.wait();
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..100 {
            let tx = tx.clone();
            workers.spawn(move || tx.send(i).unwrap());
        }
        drop(tx);
        let mut got: Vec<i32> = rx.iter().collect();
        got.sort();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_panicking_job_does_not_shrink_the_pool() {
        let workers = Workers::new("test", 1).unwrap();
        workers.spawn(|| panic!("job fails"));
        let (tx, rx) = crossbeam_channel::unbounded();
        workers.spawn(move || tx.send(7).unwrap());
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(60)), Ok(7));
    }
}
