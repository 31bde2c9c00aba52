//! The counters of a mount: live atomics on the read path, and the point-in-time copy that
//! `status` reads through the root's status attribute.

use serde::Serialize;
use std::sync::atomic::AtomicU64;

/// Counters of a mount, reported by `status`.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// How long reads took, from the request to the answer.
    pub read_latency: crate::store::liveness::Latency,
    pub bytes_served: AtomicU64,
    pub reads: AtomicU64,
    /// Chunks read from a member, verified and decompressed (by whichever reader asked).
    pub chunks_decompressed: AtomicU64,
    /// Of `chunks_decompressed`, those that read-ahead loaded.
    pub chunks_prefetched: AtomicU64,
    /// Small reads answered from the frames that hold them, without loading their chunk.
    pub frame_reads: AtomicU64,
    pub replica_failovers: AtomicU64,
    pub errors: AtomicU64,
    /// Looks for new versions done, and when the last one ended (unix seconds).
    pub refreshes: AtomicU64,
    pub refreshed_unix: AtomicU64,
}

/// A model as the mount shows it now.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct ModelReport {
    pub name: String,
    /// The manifest version (generation) served to new opens.
    pub version: u64,
    /// When the mount started serving that version (unix seconds).
    pub adopted_unix: u64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Counters {
    pub bytes_served: u64,
    pub reads: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes_used: u64,
    pub cache_capacity: u64,
    pub chunks_decompressed: u64,
    pub chunks_prefetched: u64,
    /// Small reads answered from the frames that hold them alone.
    #[serde(default)]
    pub frame_reads: u64,
    pub replica_failovers: u64,
    pub errors: u64,
    /// Partly read chunks stored whole into the page cache as they left the chunk cache, and
    /// those let go instead (the handover's queue was full, or the kernel did not take them).
    #[serde(default)]
    pub page_cache_handovers: u64,
    #[serde(default)]
    pub page_cache_handovers_missed: u64,
    /// How each member has been answering.
    #[serde(default)]
    pub members: Vec<crate::store::liveness::MemberStats>,
    /// The version of each model new opens get.
    #[serde(default)]
    pub versions: Vec<ModelReport>,
    /// Looks for new versions done (none with `--pin`), and when the last one ended.
    #[serde(default)]
    pub refreshes: u64,
    #[serde(default)]
    pub refreshed_unix: u64,
    /// The local decompressed tier, when the mount has one.
    #[serde(default)]
    pub tier: Option<crate::tier::TierReport>,
    /// What the mount is doing now.
    #[serde(default, flatten)]
    pub now: super::handles::Activity,
}
