//! How each opened member has been answering reads: requests, failures, timeouts, hedges,
//! bytes fetched and recent latencies; from them its state (`up`, `slow`, `down`), the delay
//! after which a read of it is hedged to the next replica, and the order replicas are tried in.
//! A member that times out, or fails twice in a row for reasons of its own (not a missing or
//! corrupt replica), is down for a short back-off that doubles each time it is marked down
//! again without answering in between (`BACKOFF_FIRST` up to `DOWN_FOR`): reads try it last
//! (and not at all while every replica's member is down), and the first read after that time
//! probes it again, so a member that recovers serves again within a second or so.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a member that stopped answering is passed over, at most.
pub const DOWN_FOR: Duration = Duration::from_secs(10);
/// How long it is passed over the first time (doubling with each marking that follows).
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Failures of its own in a row that mark a member down.
const DOWN_AFTER: u32 = 2;
/// Latencies kept per member for the percentiles.
const SAMPLES: usize = 256;
/// A read is hedged after this many times the member's recent 90th percentile latency...
const HEDGE_FACTOR: u32 = 3;
/// ...but never sooner than this (a local disk answers in milliseconds; hedging it to a
/// second replica at the first hiccup would only double the reads)...
const HEDGE_MIN: Duration = Duration::from_millis(50);
/// ...and after this while the member has too few samples to tell.
const HEDGE_UNKNOWN: Duration = Duration::from_millis(500);
/// A member whose recent 90th percentile is above this is `slow`.
const SLOW: Duration = Duration::from_secs(1);

/// A latency histogram for `/metrics` (buckets from 50 us, doubling, to about 6.5 s).
#[derive(Debug, Clone)]
pub struct Latency(pub prometheus_client::metrics::histogram::Histogram);

impl Default for Latency {
    fn default() -> Latency {
        Latency(prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(50e-6, 2.0, 18),
        ))
    }
}

impl Latency {
    pub fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

/// One member's record.
#[derive(Debug, Default)]
pub struct Record {
    /// How the log names the member: its location, with its id.
    name: String,
    requests: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    hedges: AtomicU64,
    bytes: AtomicU64,
    /// Replicas it did not have, or had damaged (the member itself answered).
    bad_replicas: AtomicU64,
    in_a_row: AtomicU32,
    /// Times it was marked down with no answer in between (sets the back-off).
    downs: AtomicU32,
    down_until: Mutex<Option<Instant>>,
    latencies_us: Mutex<VecDeque<u64>>,
    /// Every answer's latency, for `/metrics`.
    pub latency: Latency,
}

/// What happened to one request.
pub enum Outcome {
    /// Answered with `bytes` (whether or not they verified: the member answered).
    Answered { bytes: u64 },
    /// Nothing there, or corrupt: the member itself is well.
    NotThere,
    /// Timed out.
    TimedOut,
    /// Failed for a reason of the member's own (refused, I/O error).
    Failed,
}

impl Record {
    /// Records a request that took `took`.
    pub fn record(&self, took: Duration, outcome: Outcome) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::Answered { .. } | Outcome::NotThere) {
            self.latency.observe(took);
        }
        let timed_out = matches!(outcome, Outcome::TimedOut);
        let failed = match outcome {
            Outcome::Answered { bytes } => {
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
                false
            }
            Outcome::NotThere => {
                self.bad_replicas.fetch_add(1, Ordering::Relaxed);
                false
            }
            Outcome::TimedOut => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                true
            }
            Outcome::Failed => true,
        };
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
            let n = self.in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= DOWN_AFTER || timed_out {
                let mut down = self.down_until.lock();
                if down.is_none_or(|t| t <= Instant::now()) {
                    let times = self.downs.fetch_add(1, Ordering::Relaxed).min(16);
                    let backoff = (BACKOFF_FIRST * 2u32.pow(times)).min(DOWN_FOR);
                    log::warn!(
                        "member {} marked down for {backoff:?} after {n} failed requests in a row: reads go to other replicas first",
                        self.name
                    );
                    *down = Some(Instant::now() + backoff);
                }
            }
            return;
        }
        self.in_a_row.store(0, Ordering::Relaxed);
        self.downs.store(0, Ordering::Relaxed);
        *self.down_until.lock() = None;
        let mut l = self.latencies_us.lock();
        if l.len() == SAMPLES {
            l.pop_front();
        }
        l.push_back(took.as_micros() as u64);
    }

    pub fn hedged(&self) {
        self.hedges.fetch_add(1, Ordering::Relaxed);
    }

    pub fn is_down(&self) -> bool {
        self.down_until.lock().is_some_and(|t| t > Instant::now())
    }

    /// The `p`th percentile (0-100) of recent latencies, when there are enough samples.
    fn percentile(&self, p: usize) -> Option<Duration> {
        let l = self.latencies_us.lock();
        if l.len() < 8 {
            return None;
        }
        let mut v: Vec<u64> = l.iter().copied().collect();
        v.sort_unstable();
        let i = (v.len() * p / 100).min(v.len() - 1);
        Some(Duration::from_micros(v[i]))
    }

    /// How long to wait for this member before asking the next replica too.
    pub fn hedge_delay(&self, limit: Duration) -> Duration {
        let d = match self.percentile(90) {
            Some(p90) => (p90 * HEDGE_FACTOR).max(HEDGE_MIN),
            None => HEDGE_UNKNOWN,
        };
        d.min(limit)
    }

    fn state(&self) -> MemberState {
        if self.is_down() {
            MemberState::Down
        } else if self.in_a_row.load(Ordering::Relaxed) > 0
            || self.percentile(90).is_some_and(|p| p > SLOW)
        {
            MemberState::Slow
        } else {
            MemberState::Up
        }
    }
}

/// How a member has been answering lately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    #[default]
    Up,
    /// Failing or slow lately.
    Slow,
    /// Passed over for now.
    Down,
}

impl MemberState {
    pub const ALL: [MemberState; 3] = [MemberState::Up, MemberState::Slow, MemberState::Down];

    /// The state as `status` and `/metrics` name it.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Slow => "slow",
            MemberState::Down => "down",
        }
    }
}

/// A member's record as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct MemberStats {
    pub id: String,
    pub location: String,
    pub state: MemberState,
    pub requests: u64,
    pub failures: u64,
    /// Replicas asked of it that were missing or damaged (the member itself answered).
    pub bad_replicas: u64,
    pub timeouts: u64,
    /// Reads of this member that were also asked of the next replica because it was slow.
    pub hedges: u64,
    pub bytes_fetched: u64,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p90: Option<f64>,
    pub latency_ms_p99: Option<f64>,
}

/// Every opened member's record, by id.
#[derive(Debug, Default)]
pub struct Liveness {
    records: HashMap<String, Arc<Record>>,
}

impl Liveness {
    /// A record for each member given as `(id, location)`.
    pub fn new<'a>(members: impl Iterator<Item = (&'a str, &'a str)>) -> Liveness {
        Liveness {
            records: members
                .map(|(id, location)| {
                    let record = Record {
                        name: format!("{location} (id {id})"),
                        ..Record::default()
                    };
                    (id.to_string(), Arc::new(record))
                })
                .collect(),
        }
    }

    pub fn record(&self, id: &str) -> Option<&Arc<Record>> {
        self.records.get(id)
    }

    /// Every member's id and record.
    pub fn records(&self) -> impl Iterator<Item = (&String, &Arc<Record>)> {
        self.records.iter()
    }

    /// Whether the member `id` is down now.
    pub fn is_down(&self, id: &str) -> bool {
        self.records.get(id).is_some_and(|r| r.is_down())
    }

    /// `ids` in the order to try them: members that are not down first, in the given order.
    pub fn order<'a>(&self, ids: &'a [String]) -> Vec<&'a str> {
        let (mut up, down): (Vec<&str>, Vec<&str>) = ids
            .iter()
            .map(String::as_str)
            .partition(|id| !self.records.get(*id).is_some_and(|r| r.is_down()));
        up.extend(down);
        up
    }

    /// The recent median answer of the member a read of a replica on `ids` asks first, when
    /// it has answered often enough to tell.
    pub fn median(&self, ids: &[String]) -> Option<Duration> {
        let first = *self.order(ids).first()?;
        self.records.get(first)?.percentile(50)
    }

    /// Every member's record, for `status`; `location` names a member by id.
    pub fn snapshot(&self, location: impl Fn(&str) -> String) -> Vec<MemberStats> {
        // Milliseconds to the microsecond: more digits say nothing.
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e6).round() / 1000.0);
        let mut out: Vec<MemberStats> = self
            .records
            .iter()
            .map(|(id, r)| MemberStats {
                id: id.clone(),
                location: location(id),
                state: r.state(),
                requests: r.requests.load(Ordering::Relaxed),
                failures: r.failures.load(Ordering::Relaxed),
                bad_replicas: r.bad_replicas.load(Ordering::Relaxed),
                timeouts: r.timeouts.load(Ordering::Relaxed),
                hedges: r.hedges.load(Ordering::Relaxed),
                bytes_fetched: r.bytes.load(Ordering::Relaxed),
                latency_ms_p50: ms(r.percentile(50)),
                latency_ms_p90: ms(r.percentile(90)),
                latency_ms_p99: ms(r.percentile(99)),
            })
            .collect();
        out.sort_by(|a, b| a.location.cmp(&b.location));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_mark_down_and_an_answer_brings_back() {
        let l = Liveness::new([("a", "/a"), ("b", "/b")].into_iter());
        let ids = vec!["a".to_string(), "b".to_string()];
        assert_eq!(l.order(&ids), vec!["a", "b"]);
        let a = l.record("a").unwrap();
        a.record(Duration::from_millis(1), Outcome::NotThere);
        a.record(Duration::from_millis(1), Outcome::Failed);
        assert!(!a.is_down(), "one failure is not enough");
        a.record(Duration::from_millis(1), Outcome::Failed);
        assert!(a.is_down());
        assert_eq!(l.order(&ids), vec!["b", "a"]);
        a.record(Duration::from_millis(1), Outcome::Answered { bytes: 10 });
        assert!(!a.is_down());
        // A timeout alone marks down.
        let b = l.record("b").unwrap();
        b.record(Duration::from_secs(5), Outcome::TimedOut);
        assert!(b.is_down());
        let snap = l.snapshot(|id| format!("/{id}"));
        assert_eq!(snap[1].state, MemberState::Down);
        assert_eq!((snap[0].requests, snap[0].failures), (4, 2));
        assert_eq!(snap[0].bad_replicas, 1);
        assert_eq!(snap[0].bytes_fetched, 10);
    }

    #[test]
    fn the_back_off_grows_while_a_member_stays_down_and_resets_when_it_answers() {
        let r = Record::default();
        let until = |r: &Record| r.down_until.lock().map(|t| t - Instant::now());
        r.record(Duration::from_secs(1), Outcome::TimedOut);
        let first = until(&r).unwrap();
        assert!(first <= BACKOFF_FIRST, "{first:?}");
        // Probed once the back-off is over and failing again: passed over twice as long.
        *r.down_until.lock() = Some(Instant::now());
        r.record(Duration::from_secs(1), Outcome::TimedOut);
        let second = until(&r).unwrap();
        assert!(
            second > BACKOFF_FIRST && second <= BACKOFF_FIRST * 2,
            "{second:?}"
        );
        for _ in 0..10 {
            *r.down_until.lock() = Some(Instant::now());
            r.record(Duration::from_secs(1), Outcome::TimedOut);
        }
        assert!(until(&r).unwrap() <= DOWN_FOR);
        // An answer: back to the first back-off.
        r.record(Duration::from_millis(1), Outcome::Answered { bytes: 1 });
        r.record(Duration::from_secs(1), Outcome::TimedOut);
        assert!(until(&r).unwrap() <= BACKOFF_FIRST);
    }

    #[test]
    fn hedge_delay_follows_latencies() {
        let r = Record::default();
        let limit = Duration::from_secs(5);
        assert_eq!(r.hedge_delay(limit), HEDGE_UNKNOWN);
        for _ in 0..20 {
            r.record(Duration::from_millis(40), Outcome::Answered { bytes: 1 });
        }
        assert_eq!(r.hedge_delay(limit), Duration::from_millis(120));
        assert_eq!(
            r.hedge_delay(Duration::from_millis(60)),
            Duration::from_millis(60)
        );
        for _ in 0..220 {
            r.record(Duration::from_micros(100), Outcome::Answered { bytes: 1 });
        }
        assert_eq!(r.hedge_delay(limit), HEDGE_MIN);
    }
}
