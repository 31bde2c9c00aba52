//! The `shardfs` command line: parses arguments (their shape is `cli/args.rs`), calls the
//! library, prints results. Every failure ends as one line on stderr and a non-zero exit.

mod cli;

use clap::Parser;
use cli::Failure;
use cli::args::{Cli, CodecArg, Command, LossyArg};
pub(crate) use cli::parse::MemberParser;
use shardfs::codec::CodecChoice;
use shardfs::daemon;
use shardfs::shown::shown;
use shardfs::store::Store;
use shardfs::store::writer::{PackOptions, pack};
use shardfs::units::{format_bytes, format_rate, ratio};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// The cores this process may run on (2 when the system does not say).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match cli::mount_helper::invocation(&argv) {
        Ok(cli::mount_helper::Invocation::Command) => match Cli::try_parse_from(argv) {
            Ok(cli) => cli,
            Err(e) if !e.use_stderr() => e.exit(), // --help, --version
            Err(e) => {
                // An argument error is one line with the prefix every error has (clap's usage
                // and hint follow it).
                let text = e.to_string();
                let mut lines = text.lines();
                let mut first = lines
                    .next()
                    .unwrap_or("bad arguments")
                    .trim_start_matches("error: ")
                    .trim()
                    .to_string();
                // "... were not provided:" is followed by what was not: one line all the same.
                if first.ends_with(':')
                    && let Some(what) = lines.next()
                {
                    first = format!("{first} {}", what.trim());
                }
                eprintln!("shardfs: error: {first}");
                for l in lines.filter(|l| !l.trim().is_empty()) {
                    eprintln!("{l}");
                }
                return ExitCode::from(2);
            }
        },
        // mount(8) shows a helper's stderr as is: one line, not clap's usage.
        Ok(cli::mount_helper::Invocation::Mount(args)) => match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(e) => {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("bad mount options");
                eprintln!("shardfs: {}", first.trim_start_matches("error: ").trim());
                return ExitCode::from(2);
            }
        },
        Ok(cli::mount_helper::Invocation::Fake) => return ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("shardfs: error: {}", shown(&msg));
            return ExitCode::from(2);
        }
    };
    let daemon = matches!(
        cli.command,
        Command::Mount {
            foreground: true,
            ..
        }
    );
    // The daemon's log is read later, so its lines carry the time; a command's warnings are
    // read as they appear.
    env_logger::Builder::from_env(
        env_logger::Env::new().filter_or("SHARDFS_LOG", "warn,fuser=error"),
    )
    .format(move |buf, record| {
        let level = record.level().as_str().to_lowercase();
        if daemon {
            let now = buf.timestamp_millis();
            writeln!(
                buf,
                "{now} shardfs: {level}: {}",
                shown(&record.args().to_string())
            )
        } else {
            writeln!(
                buf,
                "shardfs: {level}: {}",
                shown(&record.args().to_string())
            )
        }
    })
    .init();
    if !daemon {
        // A closed stdout (`shardfs ls | head -1`) ends a command quietly by SIGPIPE, as it ends
        // coreutils, instead of a panic in `println!` (Rust ignores SIGPIPE by default). The
        // daemon keeps ignoring it: it has no stdout worth dying for.
        // SAFETY: sets a signal disposition before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Problems) => ExitCode::from(1),
        Err(Failure::Refused(msg)) => {
            eprintln!("shardfs: error: {}", shown(&msg));
            ExitCode::from(1)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("shardfs: error: {}", shown(&msg));
            ExitCode::from(2)
        }
    }
}

/// Tunes the process's allocator for a pack. Every chunk takes buffers of its size (the source
/// bytes, the encoded image, zstd's output). By default the allocator maps buffers that large
/// afresh and gives freed ones back at once, so each chunk's buffers are new pages to fault in
/// and zero: measured at a quarter of pack's CPU time. Kept in the allocator's heap instead,
/// they serve the next chunks. A process-wide choice, so the binary makes it, not the library.
fn keep_chunk_buffers() {
    // SAFETY: mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    shardfs::trust::configure(shardfs::trust::Config {
        dir: shardfs::trust::default_dir(),
        key: cli.key.clone(),
        trust: cli.trust.clone(),
        sign_new: !matches!(cli.command, Command::Pack { unsigned: true, .. }),
    });
    let members = shardfs::member::Options {
        timeout: cli.member_timeout,
        min_rate: cli.member_min_rate,
        lock_wait: match &cli.command {
            Command::Pack { wait, .. }
            | Command::Repair { wait, .. }
            | Command::Rebalance { wait, .. }
            | Command::Rm { wait, .. }
            | Command::Gc { wait, .. } => wait.get(),
            _ => std::time::Duration::ZERO,
        },
        ..shardfs::member::Options::default()
    };
    match cli.command {
        Command::Pack {
            src,
            store,
            name,
            replicas,
            chunk_size,
            codec,
            level,
            placement,
            partition,
            lossy,
            init,
            follow_links,
            unsigned: _,
            wait: _,
        } => {
            let opts = PackOptions {
                name,
                replicas,
                chunk_size,
                codec: match codec {
                    CodecArg::Auto => CodecChoice::Auto,
                    CodecArg::Zstd => CodecChoice::Zstd,
                    CodecArg::None => CodecChoice::None,
                },
                level,
                placement,
                partition,
                lossy_bf16: matches!(lossy, Some(LossyArg::Bf16)),
                init,
                follow_links,
                progress: cli::progress::bar(true),
                member: members,
            };
            keep_chunk_buffers();
            let s = pack(&src, &store, &opts)?;
            shardfs::say!(
                "packed {} (version {}): {}, {} in, {} stored, ratio {:.3}, {} ({} new), {:.1}s, {}",
                s.name,
                s.version,
                shardfs::units::count(s.files as u64, "file"),
                format_bytes(s.bytes_in),
                format_bytes(s.bytes_stored),
                ratio(s.bytes_in, s.bytes_stored),
                shardfs::units::count(s.chunks as u64, "chunk"),
                s.new_chunks,
                s.seconds,
                format_rate(s.bytes_in, s.seconds)
            );
            Ok(())
        }
        Command::Ls { store, json } => cli::reports::ls(&store, &members, json),
        Command::Mount {
            store,
            mountpoint,
            name,
            cache_size,
            prefetch,
            threads,
            read_ahead,
            foreground,
            allow_other,
            allow_degraded,
            quiet,
            refresh,
            pin,
            metrics,
            local_cache,
            local_cache_size,
        } => {
            let threads = threads.map_or_else(cores, |t| t as usize);
            let req = daemon::MountRequest {
                // Absolute, so the daemon, `status` and /proc/mounts name the same members
                // whatever the directory the command ran in.
                store: store.iter().map(|s| s.recorded()).collect(),
                mountpoint,
                name,
                options: daemon::MountOptionsRecord {
                    cache_size,
                    prefetch: prefetch
                        .unwrap_or_else(|| shardfs::readahead::default_window(threads)),
                    threads,
                    allow_other,
                    read_ahead_kb: read_ahead.div_ceil(1024),
                    member_timeout_ms: members.timeout.as_millis() as u64,
                    member_min_rate: members.min_rate,
                    refresh_ms: refresh.as_millis() as u64,
                    pin,
                    metrics,
                    local_cache: local_cache
                        .map(|d| std::path::absolute(&d).unwrap_or(d).display().to_string()),
                    local_cache_size,
                },
                foreground,
                allow_degraded,
                quiet,
            };
            daemon::mount(&req)?;
            Ok(())
        }
        Command::Warm {
            path,
            readers,
            local,
        } => {
            let readers = readers.map_or_else(|| 2 * cores(), |r| r as usize);
            cli::warm::warm(&path, readers, local, std::io::stderr().is_terminal())
        }
        Command::Unmount { mountpoint } => {
            shardfs::say!("{}", daemon::unmount(&mountpoint)?);
            Ok(())
        }
        Command::Status { mountpoint, json } => cli::reports::status(mountpoint.as_deref(), json),
        Command::Refresh { mountpoint, json } => cli::reports::refresh(&mountpoint, json),
        Command::InstallHelper { dir, bin_dir } => {
            shardfs::say!(
                "{}",
                cli::mount_helper::install(&dir, &bin_dir).map_err(Failure::Error)?
            );
            Ok(())
        }
        Command::Export {
            store,
            name,
            file,
            output,
            parents,
        } => {
            shardfs::export::remove_on_signal();
            let store = Store::open_with(&store, &members)?;
            shardfs::export::export(&store, &name, file.as_deref(), &output, parents)
                .map_err(|e| Failure::Error(e.to_string()))
        }
        Command::Repair {
            store,
            name,
            dry_run,
            json,
            wait: _,
        } => cli::sync::repair(store, name, dry_run, json, &members),
        Command::Member(cmd) => cli::sync::member_command(cmd, &members),
        Command::Rebalance {
            store,
            dry_run,
            min_age,
            json,
            wait: _,
        } => cli::sync::rebalance(store, dry_run, min_age, json, &members),
        Command::Rm { store, name, .. } => cli::sync::rm(store, name, &members),
        Command::Gc {
            store,
            dry_run,
            min_age,
            json,
            wait: _,
        } => cli::sync::gc(store, dry_run, min_age, json, &members),
        Command::Df {
            store,
            min_age,
            json,
        } => cli::reports::df(store, min_age, json, &members),
        Command::Verify { store, name, json } => cli::reports::verify(store, name, json, &members),
        Command::Key(cmd) => cli::keys::key_command(cmd, &members),
    }
}
