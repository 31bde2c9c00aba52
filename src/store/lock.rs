//! The store's lock: every member's lock, taken before a command that writes chunks or
//! deletes them (pack, repair, rebalance, member changes, key changes, rm, gc), waited for up to
//! the store's `lock_wait` while another command holds it. A dry run takes none.

use super::{Store, StoreError, member_err};
use crate::member::{self as io, MemberError};

/// Whether a command that can change the store does so, or only reports what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    Apply,
    DryRun,
}

impl Run {
    /// `DryRun` when the `--dry-run` flag was given.
    pub fn dry_if(flag: bool) -> Run {
        if flag { Run::DryRun } else { Run::Apply }
    }

    pub fn is_dry(self) -> bool {
        self == Run::DryRun
    }
}

/// Locks on every member, held for the length of a command; let go on drop.
pub struct StoreLock {
    locks: Vec<Box<dyn io::Lock>>,
}

impl StoreLock {
    /// Temporary files of killed writes removed on every member when the locks were taken.
    pub fn temp_files_removed(&self) -> u64 {
        self.locks.iter().map(|l| l.temp_files_removed()).sum()
    }
}

impl Store {
    /// The store's lock, unless this is a dry run (which writes nothing, so needs none).
    pub fn lock_for(&self, run: Run) -> Result<Option<StoreLock>, StoreError> {
        match run {
            Run::DryRun => Ok(None),
            Run::Apply => self.lock().map(Some),
        }
    }

    /// Takes every member's lock, then clears leftovers of killed packs. While another command
    /// holds a member's lock, every lock taken is let go and the whole set tried again, for up
    /// to `lock_wait` (zero: the first busy member is an error).
    pub fn lock(&self) -> Result<StoreLock, StoreError> {
        let deadline = std::time::Instant::now() + self.lock_wait;
        let mut pause = std::time::Duration::from_millis(50);
        let mut said = false;
        loop {
            let busy = match self.try_lock_all()? {
                Ok(lock) => return Ok(lock),
                Err(busy) => busy,
            };
            let now = std::time::Instant::now();
            if now >= deadline {
                let hint = if self.lock_wait.is_zero() {
                    "--wait waits for it".to_string()
                } else {
                    format!(
                        "waited {}; --wait=DURATION waits longer",
                        crate::units::format_duration(self.lock_wait)
                    )
                };
                return Err(StoreError::Busy {
                    location: busy,
                    hint,
                });
            }
            if !said {
                eprintln!(
                    "shardfs: {}",
                    crate::shown::shown(&format!(
                        "waiting for {busy}'s pack lock, held by another command (up to {})",
                        crate::units::format_duration(self.lock_wait)
                    ))
                );
                said = true;
            }
            // Not a synchronisation with a known event: the other command's end cannot be
            // waited for across members, so the lock is polled, with a growing pause.
            std::thread::park_timeout(pause.min(deadline - now));
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
        }
    }

    /// Every member's lock, or the location of the first member whose lock is held.
    fn try_lock_all(&self) -> Result<Result<StoreLock, String>, StoreError> {
        let mut locks = Vec::new();
        for m in &self.members {
            match m.io.lock() {
                Ok(l) => locks.push(l),
                Err(MemberError::Unavailable(_)) => return Ok(Err(m.location().to_string())),
                Err(e) => return Err(member_err(m.location())(e)),
            }
        }
        Ok(Ok(StoreLock { locks }))
    }
}
