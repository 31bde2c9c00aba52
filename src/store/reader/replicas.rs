//! Which replica of a chunk is read, and what happens when it fails: the listed replicas in
//! liveness order (members that are down last, none while all are down), hedged: the first is
//! asked, and whenever the one asked is slower than its usual the next one is asked too, until
//! one answers with bytes that check out. Then every member the manifest does not list, one
//! after another (a replica that repair or a member change put elsewhere), and, after a look
//! for members replaced since this view opened, the listed ones again. Whole chunks and the
//! frames of a small read go this way (`read_replicas`); windows of a chunk too large to hold,
//! which are written into the caller's buffer, go the same way one replica at a time, not
//! hedged (`each_replica`). The hedged reads run on one shared, bounded pool of fetcher
//! threads; every member call ends within its deadline, so none is held for longer.

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

    /// `read` of `chunk`'s replicas until one gives what `accept` takes (see the top of this
    /// file for the order). `Ok` names the member that served it; `on_failure` hears of every
    /// replica that did not.
    pub(super) fn read_replicas<T: Send + 'static, R>(
        &self,
        chunk: &ChunkRef,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
        read: ReplicaRead<T>,
        accept: &mut dyn FnMut(T) -> Result<R, ReplicaError>,
    ) -> Result<(R, String), ChunkUnreadable> {
        let mut details = Vec::new();
        if let Some(found) = self.read_listed(chunk, on_failure, &read, accept, &mut details) {
            return Ok(found);
        }
        let unlisted = self.read_unlisted(chunk, on_failure, details, |m| {
            read(m, self.liveness.record(m.id()).map(|r| &**r)).and_then(&mut *accept)
        });
        let Err(unreadable) = unlisted else {
            return unlisted;
        };
        self.look_for_replaced_members();
        self.read_listed(chunk, on_failure, &read, accept, &mut Vec::new())
            .ok_or(unreadable)
    }

    /// `read_replicas` of the replicas the manifest lists: one read on this thread when there
    /// is one (nothing can hedge it), hedged when there are more. What failed goes to
    /// `details`.
    fn read_listed<T: Send + 'static, R>(
        &self,
        chunk: &ChunkRef,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
        read: &ReplicaRead<T>,
        accept: &mut dyn FnMut(T) -> Result<R, ReplicaError>,
        details: &mut Vec<String>,
    ) -> Option<(R, String)> {
        let mut fail = |id: &str, e: ReplicaError| {
            on_failure(id, &e);
            details.push(self.failure_note(id, &e));
        };
        let order = self.replica_order(chunk, &mut fail);
        match order.as_slice() {
            [] => None,
            [(id, m)] => {
                let record = self.liveness.record(id).map(|r| &**r);
                match read(m, record).and_then(&mut *accept) {
                    Ok(got) => Some((got, id.to_string())),
                    Err(e) => {
                        fail(id, e);
                        None
                    }
                }
            }
            _ => match self.hedged((&order, chunk), read.clone(), accept, &mut fail) {
                Ok((id, got)) => Some((got, id.to_string())),
                Err(0) => None,
                Err(late) => {
                    details.push(format!("{late} replicas did not answer in time"));
                    None
                }
            },
        }
    }

    /// `read` of one replica of `chunk` after another, until one gives its bytes, in the order
    /// `read_replicas` asks (the listed ones as `replica_order` has them, every other member, a
    /// look for replaced members and the listed ones again), but not hedged: for reads that
    /// write into the caller's buffer. `Ok` names the member that served it; `on_failure` hears
    /// of every replica that did not.
    pub(super) fn each_replica<T>(
        &self,
        chunk: &ChunkRef,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
        mut read: impl FnMut(&Member) -> Result<T, ReplicaError>,
    ) -> Result<(T, String), ChunkUnreadable> {
        let mut details = Vec::new();
        if let Some(found) = self.each_listed(chunk, on_failure, &mut read, &mut details) {
            return Ok(found);
        }
        let unlisted = self.read_unlisted(chunk, on_failure, details, &mut read);
        let Err(unreadable) = unlisted else {
            return unlisted;
        };
        self.look_for_replaced_members();
        self.each_listed(chunk, on_failure, &mut read, &mut Vec::new())
            .ok_or(unreadable)
    }

    /// `each_replica` of the replicas the manifest lists. What failed goes to `details`.
    fn each_listed<T>(
        &self,
        chunk: &ChunkRef,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
        read: &mut impl FnMut(&Member) -> Result<T, ReplicaError>,
        details: &mut Vec<String>,
    ) -> Option<(T, String)> {
        let mut fail = |id: &str, e: ReplicaError| {
            on_failure(id, &e);
            details.push(self.failure_note(id, &e));
        };
        for (id, m) in self.replica_order(chunk, &mut fail) {
            match read(m) {
                Ok(got) => return Some((got, id.to_string())),
                Err(e) => fail(id, e),
            }
        }
        None
    }

    /// A member replaced since this view last looked at the member list holds its replicas at
    /// its new place: looks, before the listed replicas are asked again. Asked again even when
    /// this look opened nothing: another read may have opened the new place while this one was
    /// asking the old.
    fn look_for_replaced_members(&self) {
        for location in self.follow_replaced_members(&self.member_options()) {
            log::info!("member at {location} is read from now on (it was replaced)");
        }
    }

    /// `read` of every member that `chunk`'s manifest does not list, one after another, until
    /// one gives it (a member without it is passed over); else the chunk is unreadable, for
    /// `details` and what these said.
    fn read_unlisted<T>(
        &self,
        chunk: &ChunkRef,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
        mut details: Vec<String>,
        mut read: impl FnMut(&Member) -> Result<T, ReplicaError>,
    ) -> Result<(T, String), ChunkUnreadable> {
        for m in self.unlisted_members(chunk) {
            match read(m) {
                Ok(got) => {
                    log::info!(
                        "chunk {}: found on member {}, which its manifest does not list",
                        chunk.hash,
                        m.id()
                    );
                    return Ok((got, m.id().to_string()));
                }
                Err(ReplicaError::Missing) => {}
                Err(e) => {
                    on_failure(m.id(), &e);
                    details.push(format!("unlisted member {}: {e}", m.location()));
                }
            }
        }
        Err(ChunkUnreadable {
            hash: chunk.hash,
            len: chunk.len,
            details: details.join("; "),
        })
    }

    /// Every member that opened and that `chunk`'s manifest does not list, those that are down
    /// last.
    fn unlisted_members(&self, chunk: &ChunkRef) -> Vec<&Member> {
        let mut unlisted: Vec<&Member> = self
            .members
            .iter()
            .chain(self.joined_members())
            .filter(|m| !chunk.members.iter().any(|id| id == m.id()))
            .collect();
        unlisted.sort_by_key(|m| self.liveness.is_down(m.id()));
        unlisted
    }

    /// How a replica on member `id` failed, for an error's details.
    fn failure_note(&self, id: &str, e: &ReplicaError) -> String {
        match self.member(id) {
            Some(m) => format!("{}: {e}", m.location()),
            None => format!("member {id}: {e}"),
        }
    }

    /// The replicas on members that opened, in the order to try them. Members that are down
    /// are tried only when none is up, and not at all while every one of them is down: a
    /// reader gets EIO at once instead of a deadline per read, until `DOWN_FOR` has passed and
    /// the next read probes the member again.
    fn replica_order<'c>(
        &self,
        chunk: &'c ChunkRef,
        fail: &mut dyn FnMut(&str, ReplicaError),
    ) -> Vec<(&'c str, &Member)> {
        let mut order: Vec<(&'c str, &Member)> = Vec::new();
        for id in self.liveness.order(&chunk.members) {
            match self.member(id) {
                Some(m) => order.push((id, m)),
                None => fail(id, ReplicaError::MemberUnavailable(id.to_string())),
            }
        }
        if !order.is_empty() && order.iter().all(|(id, _)| self.liveness.is_down(id)) {
            for (id, _) in &order {
                fail(
                    id,
                    ReplicaError::Io("member is down (not answering lately)".into()),
                );
            }
            order.clear();
        }
        order
    }
}
