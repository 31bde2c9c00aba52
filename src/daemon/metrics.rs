//! `--metrics ADDR`: the mount's counters in the Prometheus text format (version 0.0.4) on
//! `http://ADDR/metrics`. prometheus-client writes the format from a copy of the counters taken
//! at each scrape; the bounded server in `http.rs` answers the requests. The endpoint listens on
//! exactly the address given and nowhere else.

use super::http::{self, Answer};
use crate::fs::{Counters, Live};
use crate::store::liveness::{MemberState, MemberStats};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

/// Binds `addr` (`IP:PORT` or `HOST:PORT`, e.g. `localhost:9464`): done before the mount, so
/// that a bad or taken address fails it.
pub(super) fn bind(addr: &str) -> Result<TcpListener, String> {
    use std::net::ToSocketAddrs;
    let bad = || {
        format!(
            "--metrics {addr}: give IP:PORT or HOST:PORT, e.g. 127.0.0.1:9464 or localhost:9464 (0.0.0.0:9464 for every interface)"
        )
    };
    let at: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => addr
            .to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?,
    };
    TcpListener::bind(at).map_err(|e| format!("--metrics {addr}: cannot listen: {e}"))
}

/// Serves `live`'s counters on `listener` until the returned server is dropped.
pub(super) fn start(listener: TcpListener, live: Live) -> Result<http::Server, String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Mount(live)));
    let route = move |path: &str| {
        if path != "/metrics" {
            return http::plain(404, "shardfs serves /metrics\n");
        }
        let mut body = String::new();
        match prometheus_client::encoding::prometheus_text::encode(&mut body, &registry) {
            Ok(()) => Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body,
            },
            Err(_) => http::plain(500, "encoding failed\n"),
        }
    };
    http::Server::start(listener, Arc::new(route), http::Limits::default())
        .map_err(|e| format!("--metrics: cannot start its threads: {e}"))
}

/// The collector: every metric, from one copy of the counters.
struct Mount(Live);

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shardfs mount metrics")
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter with one series per member (labelled `member` with its location).
fn member_counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    members: &[MemberStats],
    value: fn(&MemberStats) -> u64,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for s in members {
        ConstCounter::new(value(s)).encode(m.encode_family(&[("member", s.location.as_str())])?)?;
    }
    Ok(())
}

/// Whether a mount-wide series only grows or goes up and down.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// A mount-wide series: name, help, kind and where the value comes from.
type MountSeries = (&'static str, &'static str, Kind, fn(&Counters) -> u64);

/// A series with one value per member: name, help and where the value comes from.
type MemberSeries = (&'static str, &'static str, fn(&MemberStats) -> u64);

/// The mount-wide series.
const MOUNT_SERIES: [MountSeries; 18] = [
    (
        "shardfs_bytes_served",
        "Bytes returned to readers",
        Kind::Counter,
        |c| c.bytes_served,
    ),
    (
        "shardfs_reads",
        "Read requests received",
        Kind::Counter,
        |c| c.reads,
    ),
    (
        "shardfs_cache_hits",
        "Chunk lookups served from memory",
        Kind::Counter,
        |c| c.cache_hits,
    ),
    (
        "shardfs_cache_misses",
        "Chunk lookups that had to load",
        Kind::Counter,
        |c| c.cache_misses,
    ),
    (
        "shardfs_cache_bytes",
        "Bytes of chunks held or being loaded",
        Kind::Gauge,
        |c| c.cache_bytes_used,
    ),
    (
        "shardfs_cache_capacity_bytes",
        "The --cache-size budget",
        Kind::Gauge,
        |c| c.cache_capacity,
    ),
    (
        "shardfs_chunks_decompressed",
        "Chunks read from a member, verified and decompressed",
        Kind::Counter,
        |c| c.chunks_decompressed,
    ),
    (
        "shardfs_chunks_prefetched",
        "Of the chunks decompressed, those read-ahead loaded",
        Kind::Counter,
        |c| c.chunks_prefetched,
    ),
    (
        "shardfs_frame_reads",
        "Small reads answered from the frames that hold them, without loading their chunk",
        Kind::Counter,
        |c| c.frame_reads,
    ),
    (
        "shardfs_replica_failovers",
        "Replica reads that failed, after which the next replica was tried",
        Kind::Counter,
        |c| c.replica_failovers,
    ),
    (
        "shardfs_page_cache_handovers",
        "Partly read chunks stored whole into the page cache as they left the chunk cache",
        Kind::Counter,
        |c| c.page_cache_handovers,
    ),
    (
        "shardfs_page_cache_handovers_missed",
        "Partly read chunks let go instead (handover queue full, or the kernel refused them)",
        Kind::Counter,
        |c| c.page_cache_handovers_missed,
    ),
    (
        "shardfs_read_errors",
        "Reads answered with EIO",
        Kind::Counter,
        |c| c.errors,
    ),
    (
        "shardfs_open_files",
        "File handles open",
        Kind::Gauge,
        |c| c.now.open_files.len() as u64,
    ),
    (
        "shardfs_reads_waiting",
        "Reads waiting for a chunk to load",
        Kind::Gauge,
        |c| c.now.reads_waiting,
    ),
    (
        "shardfs_readahead_in_flight",
        "Read-ahead chunk loads queued or running",
        Kind::Gauge,
        |c| c.now.readahead_in_flight,
    ),
    (
        "shardfs_refreshes",
        "Looks for new model versions done",
        Kind::Counter,
        |c| c.refreshes,
    ),
    (
        "shardfs_last_refresh_timestamp_seconds",
        "When the mount last looked for new versions",
        Kind::Gauge,
        |c| c.refreshed_unix,
    ),
];

/// The series with one value per member (labelled `member` with its location).
const MEMBER_SERIES: [MemberSeries; 6] = [
    (
        "shardfs_member_requests",
        "Chunk requests sent to the member",
        |m| m.requests,
    ),
    (
        "shardfs_member_failures",
        "Chunk requests that failed or timed out",
        |m| m.failures,
    ),
    (
        "shardfs_member_timeouts",
        "Chunk requests that timed out",
        |m| m.timeouts,
    ),
    (
        "shardfs_member_bad_replicas",
        "Replicas asked of the member that were missing or damaged",
        |m| m.bad_replicas,
    ),
    (
        "shardfs_member_hedges",
        "Reads also asked of the next replica because the member was slow",
        |m| m.hedges,
    ),
    (
        "shardfs_member_fetched_bytes",
        "Stored bytes fetched from the member",
        |m| m.bytes_fetched,
    ),
];

impl prometheus_client::collector::Collector for Mount {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let c = self.0.counters();
        let e = &mut enc;
        for (name, help, kind, value) in MOUNT_SERIES {
            match kind {
                Kind::Counter => counter(e, name, help, value(&c))?,
                Kind::Gauge => gauge(e, name, help, value(&c) as i64)?,
            }
        }
        self.0.read_latency().0.encode(e.encode_descriptor(
            "shardfs_read_duration_seconds",
            "Time from a read request to its answer",
            None,
            MetricType::Histogram,
        )?)?;
        let mut m = e.encode_descriptor(
            "shardfs_model_version",
            "The manifest version of each model that new opens get",
            None,
            MetricType::Gauge,
        )?;
        for v in &c.versions {
            ConstGauge::new(v.version as i64)
                .encode(m.encode_family(&[("model", v.name.as_str())])?)?;
        }
        for (name, help, value) in MEMBER_SERIES {
            member_counter(e, name, help, &c.members, value)?;
        }
        self.member_states_and_latency(e, &c.members)
    }
}

impl Mount {
    /// Each member's state (1 for the one it is in) and its request latency histogram.
    fn member_states_and_latency(
        &self,
        e: &mut DescriptorEncoder,
        members: &[MemberStats],
    ) -> fmt::Result {
        let mut m = e.encode_descriptor(
            "shardfs_member_state",
            "1 for the state the member is in (up, slow: failing or slow lately, down: passed over for now)",
            None,
            MetricType::Gauge,
        )?;
        for s in members {
            for state in MemberState::ALL {
                ConstGauge::new(i64::from(s.state == state)).encode(m.encode_family(&[
                    ("member", s.location.as_str()),
                    ("state", state.name()),
                ])?)?;
            }
        }
        let mut m = e.encode_descriptor(
            "shardfs_member_request_duration_seconds",
            "Time the member took to answer a chunk request",
            None,
            MetricType::Histogram,
        )?;
        for (member, latency) in self.0.member_latencies() {
            latency
                .0
                .encode(m.encode_family(&[("member", member.as_str())])?)?;
        }
        Ok(())
    }
}
