//! The `shardfs` command line: parses arguments, calls the library, prints results. Every
//! failure ends as one line on stderr and a non-zero exit.

mod cli;

use clap::{Parser, Subcommand, ValueEnum};
use cli::Failure;
pub(crate) use cli::parse::MemberParser;
use cli::parse::{LockWait, parse_cache_size, parse_chunk_size, parse_rate, parse_size_any};
use shardfs::chunking::Partition;
use shardfs::codec::CodecChoice;
use shardfs::daemon;
use shardfs::placement::Placement;
use shardfs::shown::shown;
use shardfs::store::Store;
use shardfs::store::writer::{PackOptions, pack};
use shardfs::units::{format_bytes, format_rate, ratio};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "shardfs",
    version,
    about = "Store big model files as compressed, checksummed, replicated chunks over several members (directories, S3 buckets), and read them back byte-exact",
    after_help = "A store is a comma-separated list of members, given in any order: directories (disks, network mounts) and\ns3://BUCKET[/PREFIX] prefixes on any S3-compatible server. An S3 member's credentials, region and endpoint come\nfrom its own options (s3://BUCKET/PREFIX?profile=NAME&endpoint=URL&region=R&allow_http=true, credentials=instance\nfor the machine's role, credentials=none for a public bucket), else the AWS_* environment (AWS_ACCESS_KEY_ID,\nAWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP), else AWS_PROFILE (or default) of\n~/.aws/credentials and ~/.aws/config.\nSet SHARDFS_LOG=debug for more detail on stderr."
)]
struct Cli {
    /// Longest wait for one request to a member (connect, first byte, whole chunk), retries included;
    /// a member that misses it counts as failed and the next replica is read
    #[arg(long, global = true, default_value = "5s", value_parser = shardfs::units::parse_duration)]
    member_timeout: std::time::Duration,
    /// Slowest transfer a member may make, per second: a call moving N bytes may take the
    /// timeout plus N over this rate (a 64 MiB chunk at 8MiB: 8 s more)
    #[arg(long, global = true, default_value = "8MiB", value_parser = parse_rate)]
    member_min_rate: u64,
    /// Trust this key for the store (64 hex digits, or its fingerprint `sfk:...` from `key show`)
    /// instead of the one this host pinned on first use; pinned from then on
    #[arg(long, global = true, env = "SHARDFS_TRUST")]
    trust: Option<String>,
    /// The store's signing key file, for commands that sign [default:
    /// ~/.config/shardfs/keys/STORE.key]
    #[arg(long, global = true, env = "SHARDFS_KEY")]
    key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum CodecArg {
    /// the float codec for bf16/fp16/fp32 tensors, the block codec for quantized GGUF tensors,
    /// zstd elsewhere; raw when a chunk would not shrink by 2%
    Auto,
    Zstd,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum LossyArg {
    /// fp32 safetensors tensors stored as bf16 (round to nearest even), header rewritten
    Bf16,
}

#[derive(Subcommand)]
enum Command {
    /// Pack a model file or a model folder into the store (replacing a model of the same name)
    Pack {
        /// The file or folder to pack (folders are walked recursively). A link inside a folder is
        /// followed only to a file inside that folder, or, for a Hugging Face cache snapshot
        /// (`.../snapshots/REV`), to its repository's `blobs/`; any other link is refused
        src: PathBuf,
        /// Members of the store, comma-separated: directories (created if missing) or s3://BUCKET[/PREFIX] (a bucket is created only with --init)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// Model name [default: the file's stem or the folder's name]
        #[arg(long)]
        name: Option<String>,
        /// Copies of every chunk, on distinct members
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Chunk size, e.g. 512KiB, 4MiB, 16M (at most 1GiB)
        #[arg(long, default_value = "4MiB", value_parser = parse_chunk_size)]
        chunk_size: u64,
        /// Chunk codec
        #[arg(long, value_enum, default_value_t = CodecArg::Auto)]
        codec: CodecArg,
        /// zstd compression level (1-22)
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
        /// How chunk replicas are spread over members
        #[arg(long, value_enum, default_value_t = Placement::Hash)]
        placement: Placement,
        /// Where files are cut: on tensor boundaries (safetensors, GGUF and PyTorch zip checkpoints;
        /// other files fall back to fixed) or every chunk-size bytes
        #[arg(long, value_enum, default_value_t = Partition::Tensor)]
        partition: Partition,
        /// Opt in to lossy storage: the model then reads back as a different (smaller) file
        #[arg(long, value_enum)]
        lossy: Option<LossyArg>,
        /// Let listed directories and buckets that are not yet members join the store (and create a missing bucket)
        #[arg(long)]
        init: bool,
        /// Follow links inside the folder to files anywhere (by default a link out of the folder
        /// is refused: a downloaded model could link `tokenizer.json` to `/etc/shadow`)
        #[arg(long)]
        follow_links: bool,
        /// Make a new store without a signing key (anyone who can write one member can then
        /// change what it serves)
        #[arg(long)]
        unsigned: bool,
        #[command(flatten)]
        wait: LockWait,
    },
    /// List the models of a store
    Ls {
        /// Members of the store (directories, s3://BUCKET[/PREFIX]), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Write a model's exact original bytes out of the store
    Export {
        /// Members of the store (directories, s3://BUCKET[/PREFIX]), comma-separated, in any order (a lost one may be left out)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// The model to export
        #[arg(long)]
        name: String,
        /// One file of the model (its path inside the model)
        #[arg(long)]
        file: Option<String>,
        /// Output file, '-' for stdout, or a directory for a model of several files (files keep
        /// their recorded modification time, and a replaced file's mode is never widened)
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Make missing folders above the output (as mkdir -p)
        #[arg(long)]
        parents: bool,
    },
    /// Mount a store read-only through FUSE; returns once the mount is live
    #[command(
        after_help = "Without --name the mount root holds one folder per model; with --name it holds that model's files.\nThe daemon logs next to its state file (see `shardfs status`)."
    )]
    Mount {
        /// Members of the store (directories, s3://BUCKET[/PREFIX]), comma-separated, in any order (a lost one may be left out)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// An existing empty directory
        mountpoint: PathBuf,
        /// Show only this model's files at the mount root
        #[arg(long)]
        name: Option<String>,
        /// Memory for decompressed chunks, e.g. 512MiB, 2G (chunks being loaded count too)
        #[arg(long, default_value = "1GiB", value_parser = parse_cache_size)]
        cache_size: u64,
        /// Chunks loaded ahead of a sequential reader [default: eight times the threads]
        #[arg(long)]
        prefetch: Option<usize>,
        /// Cores to decompress on: read-ahead uses twice as many threads [default: the number of cores]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
        threads: Option<u32>,
        /// Kernel read-ahead window for the mount (root only; up to 1MiB goes in one request).
        /// mmap loaders fault in a window this wide: 8MiB lets them finish chunks in order
        #[arg(long, default_value = "8MiB", value_parser = parse_size_any)]
        read_ahead: u64,
        /// Stay in the foreground (logs to stderr) instead of detaching
        #[arg(long)]
        foreground: bool,
        /// Let other users read the mount (needs user_allow_other in /etc/fuse.conf for non-root)
        #[arg(long)]
        allow_other: bool,
        /// Mount even when some chunks have no replica on the members given (their bytes read as EIO)
        #[arg(long)]
        allow_degraded: bool,
        /// Print nothing once mounted
        #[arg(long, short)]
        quiet: bool,
        /// How often to look for new, re-packed and removed models: new opens get the newest
        /// version, files already open keep reading theirs (`shardfs refresh` looks at once)
        #[arg(long, default_value = "3s", value_parser = shardfs::units::parse_duration)]
        refresh: std::time::Duration,
        /// Serve the models as they are at mount time: never look for new versions
        #[arg(long)]
        pin: bool,
        /// Serve the counters in the Prometheus text format on http://ADDR/metrics, ADDR being
        /// IP:PORT or HOST:PORT (127.0.0.1:9464, localhost:9464; 0.0.0.0:9464 for every interface)
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// A local directory for whole decompressed copies of the files read: later opens of a
        /// file whose copy is complete (and checked) are served from it, by FUSE passthrough
        /// where the kernel and privileges allow
        #[arg(long, value_name = "DIR")]
        local_cache: Option<PathBuf>,
        /// The most the local copies may take
        #[arg(long, default_value = "16GiB", value_parser = parse_size_any)]
        local_cache_size: u64,
    },
    /// Read a mounted file or model with parallel readers so it sits in the page cache before a loader starts
    Warm {
        /// A file or folder under a shardfs mount (or any path)
        path: PathBuf,
        /// Parallel readers [default: twice the number of cores]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
        readers: Option<u32>,
        /// Fill the mount's local tier (--local-cache) instead of the page cache: the reads
        /// bypass the page cache so that every chunk reaches the daemon, which copies it;
        /// returns once the copies are complete (or says, after 2 minutes, how many are not)
        #[arg(long)]
        local: bool,
    },
    /// Unmount a shardfs mount and wait for its daemon to exit (also cleans up a dead daemon's mount)
    Unmount {
        /// The directory the store is mounted on
        mountpoint: PathBuf,
    },
    /// Link this binary as mount(8)'s helper for type fuse.shardfs, so that `mount -t
    /// fuse.shardfs STORE MOUNTPOINT -o OPTIONS` and /etc/fstab lines work (options: the mount
    /// flags with '_' for '-', e.g. cache_size=4GiB,name=llama,pin). A binary built under a
    /// cargo target directory is first copied to BIN_DIR/shardfs, and the link points there
    InstallHelper {
        /// Where mount(8) looks for helpers
        #[arg(long, default_value = "/sbin")]
        dir: PathBuf,
        /// Where a build from a cargo target directory is installed (the path of the README's
        /// fstab lines and of the units under contrib/)
        #[arg(long, default_value = "/usr/local/bin")]
        bin_dir: PathBuf,
    },
    /// Make a live mount look for new, re-packed and removed models now (it also does every
    /// --refresh interval); returns once it has, printing the version of each model it serves
    Refresh {
        /// The directory the store is mounted on
        mountpoint: PathBuf,
        /// Machine-readable output (the mount's status)
        #[arg(long)]
        json: bool,
    },
    /// Show live mounts with their counters and each model's health (stale entries are shown and cleaned)
    Status {
        /// One mount to show [default: every mount this machine's state directory knows]
        mountpoint: Option<PathBuf>,
        /// Machine-readable output (an object for one mountpoint, an array otherwise)
        #[arg(long)]
        json: bool,
    },
    /// Bring every model back to its replica count: re-create missing and corrupt replicas from
    /// good ones, and bring every member's manifests up to date; exit 1 listing what could not be repaired
    #[command(
        after_help = "Replicas go to the members the placement ranks first among those given; a corrupt file is replaced\nonly once a good copy is written. Safe to kill and run again. Takes the members' pack lock."
    )]
    Repair {
        /// Members of the store (directories, s3://BUCKET[/PREFIX]), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// Only this model
        #[arg(long)]
        name: Option<String>,
        /// Report what would be done without writing anything
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable report
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        wait: LockWait,
    },
    /// Move replicas to where the placement puts them now (after member add, remove or set-weight)
    #[command(
        after_help = "Copies and verifies first, publishes the new manifests, then deletes the old copies (kept while a live\nmount's lease names an older generation; run again later). Takes the members' pack lock."
    )]
    Rebalance {
        /// Members of the store, comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// Report what would move without moving anything
        #[arg(long)]
        dry_run: bool,
        /// On members without a lock (object stores), old copies younger than this are kept:
        /// a pack elsewhere may be writing them
        #[arg(long, default_value = "1h", value_parser = shardfs::units::parse_age)]
        min_age: std::time::Duration,
        /// Machine-readable report
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        wait: LockWait,
    },
    /// Remove a model from the store (its manifest on every member); gc then frees its chunks
    Rm {
        /// Members of the store, comma-separated, in any order (every member: a removed model
        /// would come back with one left out)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// The model to remove
        #[arg(long)]
        name: String,
        #[command(flatten)]
        wait: LockWait,
    },
    /// Delete chunk files no manifest and no live mount references, and report the space returned
    #[command(
        after_help = "Chunks shared with other models stay; so do chunks a live mount's lease names, and chunk files younger\nthan --min-age (a pack on another host may be writing them). Takes the members' pack lock."
    )]
    Gc {
        /// Members of the store, comma-separated, in any order (every member must be given)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// Report what would be deleted without deleting
        #[arg(long)]
        dry_run: bool,
        /// Keep unreferenced chunk files younger than this (0: no minimum; e.g. 30m, 1h, 7d)
        #[arg(long, default_value = "1h", value_parser = shardfs::units::parse_age)]
        min_age: std::time::Duration,
        /// Machine-readable report
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        wait: LockWait,
    },
    /// Change the store's members: list, add, set-weight, replace (a lost disk), remove (drain)
    #[command(
        subcommand,
        after_help = "The member list (id, index, weight, where each member lives) is kept on every member.\nA disk died: shardfs member replace --store REST OLD NEW, then shardfs repair --store REST,NEW."
    )]
    Member(cli::sync::MemberCommand),
    /// The store's signing key: give an unsigned store one, show it, rotate it
    #[command(subcommand)]
    Key(cli::keys::KeyCommand),
    /// Show what each member holds (chunk files, bytes, manifests), the space free on it, and
    /// what gc could return now
    Df {
        /// Members of the store (directories, s3://BUCKET[/PREFIX]), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// The minimum age gc's estimate keeps unreferenced files for, as `gc --min-age`
        #[arg(long, default_value = "1h", value_parser = shardfs::units::parse_age)]
        min_age: std::time::Duration,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Check every replica of every chunk and every whole-file hash; exit 1 on any problem
    Verify {
        /// Members of the store (directories, s3://BUCKET[/PREFIX]), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// Only this model
        #[arg(long)]
        name: Option<String>,
        /// Machine-readable report
        #[arg(long)]
        json: bool,
    },
}

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
                progress: std::io::stderr().is_terminal(),
                member: members,
            };
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
                store: store
                    .iter()
                    .map(|s| shardfs::member::absolute_spec(s))
                    .collect(),
                mountpoint,
                name,
                options: daemon::MountOptionsRecord {
                    cache_size,
                    prefetch: prefetch.unwrap_or(8 * threads),
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
