//! Keeping the copies true, built on the store: `repair` re-creates missing and corrupt
//! replicas and brings every member's manifests up to date; `members` adds, reweights, replaces
//! and removes members.

pub mod members;
pub mod repair;
