//! Keeping the copies true, built on the store: `repair` re-creates missing and corrupt
//! replicas and brings every member's manifests up to date; `members` adds, reweights, replaces
//! and removes members; `gc` retires models (`rm`) and deletes unreferenced chunk files.

pub mod gc;
pub mod members;
pub mod repair;
