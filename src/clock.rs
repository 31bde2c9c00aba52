//! Wall-clock time as shardfs records it: seconds (or nanoseconds) since the Unix epoch. A
//! clock set before 1970 reads as 0 rather than failing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whole seconds from the epoch to `t`.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Nanoseconds from the epoch to `t`.
pub fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Whole seconds since the epoch, now.
pub fn now_unix_secs() -> u64 {
    unix_secs(SystemTime::now())
}

/// Nanoseconds since the epoch, now.
pub fn now_unix_nanos() -> u128 {
    unix_nanos(SystemTime::now())
}

/// The time `secs` seconds and `nanos` nanoseconds from the epoch (before it for negative
/// `secs`), or `None` where no `SystemTime` can hold it. Times read from a manifest or a
/// member's file system are input: they are never added unchecked.
pub fn from_unix(secs: i64, nanos: u32) -> Option<SystemTime> {
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    whole?.checked_add(Duration::from_nanos(u64::from(nanos.min(999_999_999))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_recorded_times_are_held_or_none_never_a_panic() {
        assert_eq!(from_unix(0, 5), Some(UNIX_EPOCH + Duration::from_nanos(5)));
        assert_eq!(
            from_unix(-10, 0),
            UNIX_EPOCH.checked_sub(Duration::from_secs(10))
        );
        // Nanoseconds past a second are clamped, not carried into an overflowing second.
        let last = from_unix(i64::MAX, u32::MAX).unwrap();
        assert_eq!(unix_nanos(last) % 1_000_000_000, 999_999_999);
        assert_eq!(unix_secs(from_unix(i64::MIN, 0).unwrap()), 0);
        assert_eq!(
            unix_secs(from_unix(1_700_000_000, 7).unwrap()),
            1_700_000_000
        );
    }
}
