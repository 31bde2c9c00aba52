//! Hedged reads of a chunk's replicas: the first listed replica is asked, and whenever the one
//! asked is slower than its usual the next one is asked too, until one answers with bytes that
//! check out. The reads run on one shared, bounded pool of fetcher threads; every member call
//! ends within its deadline, so none is held for longer. Whole-chunk reads and the frames of a
//! small read go this way (`hedged`, `read_replicas`); a replica no listed member gave is then
//! asked of every other member, one after another.

use super::{ChunkUnreadable, ReplicaError};
use crate::store::Store;
use crate::store::liveness::Record;
use crate::store::manifest::ChunkRef;
use crate::store::member::Member;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Threads that ask replicas in parallel (hedged reads), and replica reads waiting for one.
const FETCHERS: usize = 16;
const FETCHES_WAITING: usize = 256;

/// The shared pool of hedged replica reads (`None` if its threads could not start).
fn fetchers() -> Option<&'static crate::workers::Workers> {
    static POOL: std::sync::OnceLock<Option<crate::workers::Workers>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        crate::workers::Workers::with_queue("fetch", FETCHERS, Some(FETCHES_WAITING))
            .map_err(|e| log::warn!("cannot start the replica read threads: {e}"))
            .ok()
    })
    .as_ref()
}

/// A read of one replica (on a fetcher thread), which records in the member's record how it
/// went.
pub(super) type ReplicaRead<T> =
    Arc<dyn Fn(&Member, Option<&Record>) -> Result<T, ReplicaError> + Send + Sync>;

/// One replica's answer: its place in the order and what it gave.
type Answered<T> = (usize, Result<T, ReplicaError>);

impl Store {
    /// Asks member `m` (replica `i`, id `id`) with `read` on the fetcher pool; the answer, or a
    /// refusal when the pool is full, goes to `tx`.
    fn start_read<T: Send + 'static>(
        &self,
        (i, id, m): (usize, &str, &Member),
        read: &ReplicaRead<T>,
        tx: &crossbeam_channel::Sender<Answered<T>>,
    ) {
        let (sender, m, read, record) = (
            tx.clone(),
            m.clone(),
            read.clone(),
            self.liveness.record(id).cloned(),
        );
        let job = move || {
            let _ = sender.send((i, read(&m, record.as_deref())));
        };
        let queued = fetchers().is_some_and(|pool| pool.try_spawn(job));
        if !queued {
            let busy = ReplicaError::Io("too many replica reads waiting".into());
            let _ = tx.send((i, Err(busy)));
        }
    }

    /// Reads `chunk` with `read` from the first replica of `order`, asking the next one too
    /// whenever the one asked is slower than its usual (a hedge), until one answers with what
    /// `accept` takes. `Err` counts the replicas that had not answered by the deadline.
    pub(super) fn hedged<'c, T: Send + 'static, R>(
        &self,
        (order, chunk): (&[(&'c str, &Member)], &ChunkRef),
        read: ReplicaRead<T>,
        accept: &mut dyn FnMut(T) -> Result<R, ReplicaError>,
        fail: &mut dyn FnMut(&str, ReplicaError),
    ) -> Result<(&'c str, R), usize> {
        let (tx, rx) = crossbeam_channel::unbounded::<Answered<T>>();
        let launch = |i: usize| {
            let (id, m) = order[i];
            self.start_read((i, id, m), &read, &tx);
        };
        let give_up = Instant::now()
            + self.replica_deadline(chunk) * order.len() as u32
            + Duration::from_secs(1);
        let (mut next, mut in_flight) = (1, 1);
        launch(0);
        while in_flight > 0 {
            let now = Instant::now();
            if now >= give_up {
                break;
            }
            let wait = if next < order.len() {
                let (id, _) = order[next - 1];
                self.liveness
                    .record(id)
                    .map_or(Duration::from_millis(500), |r| {
                        r.hedge_delay(self.timeout / 2)
                    })
            } else {
                give_up - now
            };
            match rx.recv_timeout(wait.min(give_up - now)) {
                Ok((i, got)) => {
                    in_flight -= 1;
                    let (id, _) = order[i];
                    match got.and_then(&mut *accept) {
                        Ok(r) => return Ok((id, r)),
                        Err(e) => fail(id, e),
                    }
                    if in_flight == 0 && next < order.len() {
                        launch(next);
                        (next, in_flight) = (next + 1, 1);
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if next < order.len() => {
                    let (slow, _) = order[next - 1];
                    if let Some(r) = self.liveness.record(slow) {
                        r.hedged();
                    }
                    log::debug!(
                        "chunk {}: member {slow} is slow, asking the next replica too",
                        chunk.hash
                    );
                    launch(next);
                    (next, in_flight) = (next + 1, in_flight + 1);
                }
                Err(_) => break,
            }
        }
        Err(in_flight)
    }

    /// `read` of `chunk`'s replicas until one gives what it asks: the listed ones hedged, in
    /// liveness order, then every other member one after another (a replica repair or a member
    /// change put elsewhere). `Ok` names the member that served it; `on_failure` hears of every
    /// replica that did not.
    pub(super) fn read_replicas<T: Send + 'static>(
        &self,
        chunk: &ChunkRef,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
        read: ReplicaRead<T>,
    ) -> Result<(T, String), ChunkUnreadable> {
        let mut details = Vec::new();
        let mut fail = |id: &str, e: ReplicaError| {
            on_failure(id, &e);
            details.push(self.failure_note(id, &e));
        };
        let order = self.replica_order(chunk, &mut fail);
        let mut found = None;
        match order.as_slice() {
            [] => {}
            // One replica: read on this thread, as nothing can hedge it.
            [(id, m)] => match read(m, self.liveness.record(id).map(|r| &**r)) {
                Ok(got) => found = Some((got, id.to_string())),
                Err(e) => fail(id, e),
            },
            _ => match self.hedged((&order, chunk), read.clone(), &mut Ok, &mut fail) {
                Ok((id, got)) => found = Some((got, id.to_string())),
                Err(0) => {}
                Err(late) => details.push(format!("{late} replicas did not answer in time")),
            },
        }
        if let Some(found) = found {
            return Ok(found);
        }
        self.read_unlisted(chunk, on_failure, details, |m| {
            read(m, self.liveness.record(m.id()).map(|r| &**r))
        })
    }
}
