//! Keeping the copies true, built on the store: `repair` re-creates missing and corrupt
//! replicas and brings every member's manifests up to date; `members` adds, reweights, replaces
//! and removes members; `rebalance` moves replicas to where the placement puts them now; `gc`
//! retires models (`rm`) and deletes unreferenced chunk files; `keys` gives a store a key and
//! rotates it; `usage` is `df`, what each member holds and what gc could return.

/// `--min-age` of gc, rm and rebalance: files younger than this may belong to a pack still
/// writing (on members without a lock), so they are kept.
pub const DEFAULT_MIN_AGE: &str = "1h";

pub mod gc;
pub mod keys;
pub mod members;
pub mod rebalance;
pub mod repair;
pub mod usage;
