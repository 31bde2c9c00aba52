//! The mount: a read-only tree of the models' files with stable inode numbers, exact sizes and
//! long TTLs. The core (`core.rs`, with the read path in `read.rs`) answers every request as
//! plain values and an [`FsError`] (`error.rs`, the one errno map); `fuse.rs` is the thin
//! adapter to the kernel (crate `fuser`). Nothing here knows chunk files. `tree` builds the
//! nodes, `handles` keeps the open files, `passthrough` picks an open's source, `sent` tracks
//! which bytes the kernel holds, `stats` keeps the counters, `control` answers the root's
//! control attributes, `live` follows the store's changes.

mod control;
mod core;
mod error;
mod fuse;
mod handles;
mod handover;
mod live;
mod load;
mod passthrough;
mod pieces;
mod read;
mod sent;
mod stats;
mod tree;

pub use self::core::{Backing, Core, DirEntry, OpenMode, OpenReply, Opened, Statfs};
pub use control::{
    REFRESH_WAITING, REFRESH_XATTR, RefreshRequest, STATUS_XATTR, XATTR_MAX, Xattr, XattrReply,
    counters_answer,
};
pub use error::FsError;
pub use fuse::ShardFs;
pub use handles::{Activity, OpenReport};
pub use handover::PageStore;
pub use live::Live;
pub use stats::{Counters, LiveCounters, ModelReport};
use std::sync::Arc;
pub use tree::Layout;

#[derive(Debug, Clone)]
pub struct FsOptions {
    pub cache_size: u64,
    /// Chunks kept loading ahead of a sequential reader.
    pub prefetch: usize,
    /// Decompression workers: read-ahead runs on twice as many (some wait on the disk).
    pub threads: usize,
    /// Bytes the kernel reads ahead of a reader on this mount (`--read-ahead`).
    pub kernel_read_ahead: u64,
    /// The local decompressed tier, if the mount has one.
    pub tier: Option<Arc<crate::tier::Tier>>,
}
