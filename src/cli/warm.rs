//! `shardfs warm`: the command around `shardfs::warm` — which mount a path is on, whether it
//! has a local tier for `--local` to fill, waiting for the tier's copies, and the report.

use super::Failure;
use shardfs::units::{count, format_bytes};
use shardfs::warm::Fill;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long `warm --local` waits for the tier to finish the copies its reads started.
const COPIES_WAIT: Duration = Duration::from_secs(120);

pub fn warm(path: &Path, readers: usize, fill: Fill, progress: bool) -> Result<(), Failure> {
    let mount = shardfs::daemon::shardfs_mount_of(path);
    if fill == Fill::LocalTier {
        let Some(mount) = &mount else {
            return Err(Failure::Error(format!(
                "{}: --local fills a shardfs mount's local tier, and this path is on no shardfs mount",
                path.display()
            )));
        };
        if tier_of(mount).is_none() {
            return Err(Failure::Error(format!(
                "the mount at {} has no local tier (mounted with --no-local-cache, or its default tier could not be had: see its log): --local has nothing to fill",
                mount.display()
            )));
        }
    }
    let bar = super::progress::bar(progress);
    let s = shardfs::warm::warm(path, readers, &*bar, fill).map_err(Failure::Error)?;
    shardfs::say!(
        "warmed {}: {}, {} in {:.2}s, {:.2} GB/s{}",
        path.display(),
        count((s.files - s.failed.len()) as u64, "file"),
        format_bytes(s.bytes),
        s.seconds,
        s.bytes as f64 / s.seconds.max(1e-9) / 1e9,
        if s.failed.is_empty() {
            String::new()
        } else {
            format!(
                "; {} could not be read",
                count(s.failed.len() as u64, "file")
            )
        }
    );
    if fill == Fill::LocalTier
        && let Some(mount) = &mount
    {
        wait_for_copies(mount);
    }
    for (file, why) in &s.failed {
        eprintln!(
            "shardfs: error: {}",
            shardfs::shown::shown(&format!("{}: {why}", file.display()))
        );
    }
    if s.failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Problems)
    }
}

fn tier_of(mount: &Path) -> Option<shardfs::tier::TierReport> {
    let status = shardfs::daemon::status(Some(mount)).ok()?;
    status.into_iter().next()?.counters?.tier
}

/// Waits (up to [`COPIES_WAIT`]) until the tier has no copy being made, and says how it ended.
fn wait_for_copies(mount: &Path) {
    let deadline = Instant::now() + COPIES_WAIT;
    let mut pause = Duration::from_millis(20);
    loop {
        let Some(tier) = tier_of(mount) else {
            shardfs::say!("the local tier's state could not be read");
            return;
        };
        if tier.filling == 0 {
            shardfs::say!(
                "local tier: {} complete, {} of {} used",
                count(tier.copies, "copy"),
                format_bytes(tier.used),
                format_bytes(tier.limit)
            );
            return;
        }
        if Instant::now() >= deadline {
            shardfs::say!(
                "local tier: {} still being made after {} s (the mount goes on making them)",
                count(tier.filling, "copy"),
                COPIES_WAIT.as_secs()
            );
            return;
        }
        // The tier's writer has no event to wait on from another process: its status is
        // polled, with a growing pause.
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
