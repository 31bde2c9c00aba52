//! Which format a manifest is written in and which this build reads: the format number says
//! what a reader must understand, so that a build too old for a copy calls it newer (and keeps
//! its chunks) instead of misreading it or taking it for damage.

use super::FileEntry;
use crate::codec::Codec;

/// The newest manifest format this build reads and writes. 2: a delta may be element-wise
/// differences (`Delta::op`), which builds that read format 1 only would take for an XOR. 3: a
/// byte-grouped chunk (float16, float32, blocks) may hold entropy-coded groups (`codec::ans`),
/// which builds that read format 2 only cannot decode: told the model is from a newer shardfs,
/// they keep its chunks, where they would take such a chunk for a damaged one. A manifest is
/// written in the oldest format that holds what it lists (`format_for`).
pub const MANIFEST_FORMAT: u32 = 3;

/// The oldest format that can say what `files` list: 2 where a delta is made of differences.
pub(super) fn format_needed(files: &[FileEntry]) -> u32 {
    let differences = files
        .iter()
        .flat_map(|f| &f.chunks)
        .any(|c| c.delta.as_ref().is_some_and(|d| !d.op.is_xor()));
    if differences { 2 } else { 1 }
}

/// The format a manifest of `files` is written in: 3 where a stored chunk (or a delta's base)
/// is byte-grouped, as this build may have entropy-coded its groups (whether it did is not
/// recorded per chunk: a chunk packed before is shared as it is); else the oldest that holds
/// them.
pub fn format_for(files: &[FileEntry]) -> u32 {
    let grouped = files
        .iter()
        .flat_map(|f| &f.chunks)
        .flat_map(|c| c.needs())
        .any(|c| matches!(c.codec, Codec::Float16 | Codec::Float32 | Codec::Blocks));
    if grouped { 3 } else { format_needed(files) }
}

/// How the reason for a copy this build cannot read begins when a newer shardfs wrote it.
pub const NEWER: &str = "written by a newer shardfs";

/// Whether a reason `from_bytes` gave says a newer shardfs wrote the copy.
pub fn is_newer(reason: &str) -> bool {
    reason.starts_with(NEWER)
}
