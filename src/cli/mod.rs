//! The command line apart from `main.rs`: its arguments (`args`) and value parsers (`parse`),
//! the reporting commands (`reports`: ls, status, verify, df), the data-sync commands (`sync`:
//! repair, member, rebalance, rm, gc), the key commands (`keys`), `pack`, `mount`, `warm`, the
//! mount helper, and how failures become exit codes.

pub mod args;
pub mod keys;
pub mod mount;
pub mod mount_helper;
pub mod pack;
pub mod parse;
pub mod progress;
pub mod reports;
pub mod sync;
pub mod warm;

use shardfs::store::StoreError;

/// The cores this process may run on (2 when the system does not say).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Prints `value` as indented JSON.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Error(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// Failures the command line reports: an error, or a check that found problems (exit 1).
pub enum Failure {
    Error(String),
    Problems,
    /// A delete refused because the store could not be seen whole: one line, exit 1.
    Refused(String),
}

impl From<shardfs::daemon::DaemonError> for Failure {
    fn from(e: shardfs::daemon::DaemonError) -> Failure {
        Failure::Error(e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::Incomplete { .. } => Failure::Refused(e.to_string()),
            e => Failure::Error(e.to_string()),
        }
    }
}
