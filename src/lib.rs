//! shardfs: big model files stored as compressed, checksummed, replicated chunks over several
//! members (directories, S3 buckets), read back byte-exact. The binary (`main.rs`) is a thin command line over this
//! library; the integration tests drive both.

pub mod buffer;
pub mod cache;
pub mod chunking;
pub mod clock;
pub mod codec;
pub mod daemon;
pub mod export;
pub mod fs;
pub mod home;
pub mod member;
pub mod placement;
pub mod progress;
pub mod readahead;
pub mod shown;
pub mod signals;
pub mod store;
pub mod sync;
pub mod tier;
pub mod trust;
pub mod units;
pub mod warm;
pub mod workers;
