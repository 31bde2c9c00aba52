//! How far long work has got: pack, repair and warm tell a `Progress` as they go, and the
//! caller decides what to do with it (the command line draws a bar on a terminal; a test may
//! count). The library itself draws nothing.

use std::fmt;
use std::sync::Arc;

/// Told about work measured in bytes. Called from many threads at once.
pub trait Progress: Send + Sync {
    /// Work of `total` bytes starts; `what` says what it is (`packing m`, `repairing`).
    fn start(&self, what: &str, total: u64);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
    /// The work is over (done or failed).
    fn finish(&self);
}

/// A `Progress` that tells no one.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Where an operation's progress goes, as its options carry it: nowhere by default.
#[derive(Clone)]
pub struct Reporter(pub Arc<dyn Progress>);

impl Default for Reporter {
    fn default() -> Reporter {
        Reporter(Arc::new(Silent))
    }
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reporter")
    }
}

impl std::ops::Deref for Reporter {
    type Target = dyn Progress;
    fn deref(&self) -> &(dyn Progress + 'static) {
        &*self.0
    }
}
