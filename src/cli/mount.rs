//! `shardfs mount`: the command's arguments become the daemon's `MountRequest`; the daemon's
//! allocator is tuned here.

use super::Failure;
use super::args::MountArgs;
use shardfs::daemon;
use shardfs::member::Options;

pub fn run(args: MountArgs, members: Options) -> Result<(), Failure> {
    if args.foreground {
        return_chunk_buffers();
    }
    let threads = args.threads.map_or_else(super::cores, |t| t as usize);
    let local_cache_default = args.local_cache.is_none() && !args.no_local_cache;
    let req = daemon::MountRequest {
        // Absolute, so the daemon, `status` and /proc/mounts name the same members whatever
        // the directory the command ran in.
        store: args.store.iter().map(|s| s.recorded()).collect(),
        mountpoint: args.mountpoint,
        name: args.name,
        options: daemon::MountOptionsRecord {
            cache_size: args.cache_size,
            prefetch: args
                .prefetch
                .unwrap_or_else(|| shardfs::readahead::default_window(threads)),
            threads,
            allow_other: args.allow_other,
            read_ahead_kb: args.read_ahead.div_ceil(1024),
            member_timeout_ms: members.timeout.as_millis() as u64,
            member_min_rate: members.min_rate,
            refresh_ms: args.refresh.as_millis() as u64,
            pin: args.pin,
            metrics: args.metrics,
            local_cache: args
                .local_cache
                .map(|d| std::path::absolute(&d).unwrap_or(d).display().to_string()),
            local_cache_size: args.local_cache_size,
            local_cache_default,
        },
        foreground: args.foreground,
        allow_degraded: args.allow_degraded,
        quiet: args.quiet,
    };
    daemon::mount(&req)?;
    Ok(())
}

/// Tunes the daemon's allocator (a foreground mount is the daemon): large buffers (chunks)
/// come from mmap and go back to the system when freed, so the resident size follows the cache
/// instead of the allocator's high-water mark. A process-wide choice, so the binary makes it.
fn return_chunk_buffers() {
    // SAFETY: mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
