//! The command line's shape: the global flags (`Cli`) and every command with its arguments and
//! help (`Command`), as clap reads them. What each command does is in `main.rs` and the other
//! `cli` modules.

use super::parse::{
    LockWait, MemberParser, parse_cache_size, parse_chunk_size, parse_rate, parse_size_any,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use shardfs::chunking::Partition;
use shardfs::member::MemberSpec;
use shardfs::placement::Placement;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "shardfs",
    version,
    about = "Store big model files as compressed, checksummed, replicated chunks over several members (directories, S3 buckets), and read them back byte-exact",
    after_help = "A store is a comma-separated list of members, given in any order: directories (disks, network mounts) and\ns3://BUCKET[/PREFIX] prefixes on any S3-compatible server, and read-only http(s)://HOST/PATH stores served by a
plain web server (mount, export and verify by model name). An S3 member's credentials, region and endpoint come\nfrom its own options (s3://BUCKET/PREFIX?profile=NAME&endpoint=URL&region=R&allow_http=true, credentials=instance\nfor the machine's role, credentials=none for a public bucket), else the AWS_* environment (AWS_ACCESS_KEY_ID,\nAWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP), else AWS_PROFILE (or default) of\n~/.aws/credentials and ~/.aws/config.\nSet SHARDFS_LOG=debug for more detail on stderr."
)]
pub struct Cli {
    /// Longest wait for one request to a member (connect, first byte, whole chunk), retries included;
    /// a member that misses it counts as failed and the next replica is read
    #[arg(long, global = true, default_value = "5s", value_parser = shardfs::units::parse_duration)]
    pub member_timeout: std::time::Duration,
    /// Slowest transfer a member may make, per second: a call moving N bytes may take the
    /// timeout plus N over this rate (a 64 MiB chunk at 8MiB: 8 s more)
    #[arg(long, global = true, default_value = "8MiB", value_parser = parse_rate)]
    pub member_min_rate: u64,
    /// Trust this key for the store (64 hex digits, or its fingerprint `sfk:...` from `key show`)
    /// instead of the one this host pinned on first use; pinned from then on
    #[arg(long, global = true, env = "SHARDFS_TRUST")]
    pub trust: Option<String>,
    /// The store's signing key file, for commands that sign [default:
    /// ~/.config/shardfs/keys/STORE.key]
    #[arg(long, global = true, env = "SHARDFS_KEY")]
    pub key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CodecArg {
    /// the float codec for bf16/fp16/fp32 tensors, the block codec for quantized GGUF tensors
    /// where it is 2% smaller than zstd, zstd elsewhere; raw when a chunk would not shrink by 2%
    Auto,
    Zstd,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LossyArg {
    /// fp32 safetensors tensors stored as bf16 (round to nearest even), header rewritten
    Bf16,
    /// bf16, fp16 and fp32 safetensors tensors rounded to FP8 E4M3 with a power-of-two scale
    /// per 128 values, read back in their own dtype (each value within 1/16 of itself or of
    /// its block's largest); stored as the FP8 codes
    Fp8,
}

#[derive(Subcommand)]
pub enum Command {
    /// Pack a model file or a model folder into the store (replacing a model of the same name)
    Pack(PackArgs),
    /// List the models of a store
    Ls {
        /// Members of the store (directories, s3://BUCKET[/PREFIX], http(s)://HOST/PATH read-only), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Write a model's exact original bytes out of the store
    Export {
        /// Members of the store (directories, s3://BUCKET[/PREFIX], http(s)://HOST/PATH read-only), comma-separated, in any order (a lost one may be left out)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
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
    Mount(MountArgs),
    /// Read a mounted file or model with parallel readers so it sits in the page cache before a loader starts
    Warm {
        /// A file or folder under a shardfs mount (or any path)
        path: PathBuf,
        /// Parallel readers [default: twice the number of cores]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
        readers: Option<u32>,
        /// Fill the mount's local tier instead of the page cache: the reads
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
        /// Members of the store (directories, s3://BUCKET[/PREFIX], http(s)://HOST/PATH read-only), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
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
        store: Vec<MemberSpec>,
        /// Report what would move without moving anything
        #[arg(long)]
        dry_run: bool,
        /// On members without a lock (object stores), old copies younger than this are kept:
        /// a pack elsewhere may be writing them
        #[arg(long, default_value = shardfs::sync::DEFAULT_MIN_AGE, value_parser = shardfs::units::parse_age)]
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
        store: Vec<MemberSpec>,
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
        store: Vec<MemberSpec>,
        /// Report what would be deleted without deleting
        #[arg(long)]
        dry_run: bool,
        /// Keep unreferenced chunk files younger than this (0: no minimum; e.g. 30m, 1h, 7d)
        #[arg(long, default_value = shardfs::sync::DEFAULT_MIN_AGE, value_parser = shardfs::units::parse_age)]
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
    Member(super::sync::MemberCommand),
    /// The store's signing key: give an unsigned store one, show it, rotate it
    #[command(subcommand)]
    Key(super::keys::KeyCommand),
    /// Show what each member holds (chunk files, bytes, manifests), the space free on it, and
    /// what gc could return now
    Df {
        /// Members of the store (directories, s3://BUCKET[/PREFIX], http(s)://HOST/PATH read-only), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
        /// The minimum age gc's estimate keeps unreferenced files for, as `gc --min-age`
        #[arg(long, default_value = shardfs::sync::DEFAULT_MIN_AGE, value_parser = shardfs::units::parse_age)]
        min_age: std::time::Duration,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Check every replica of every chunk and every whole-file hash; exit 1 on any problem
    Verify {
        /// Members of the store (directories, s3://BUCKET[/PREFIX], http(s)://HOST/PATH read-only), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
        /// Only this model
        #[arg(long)]
        name: Option<String>,
        /// Machine-readable report
        #[arg(long)]
        json: bool,
    },
}

/// The arguments of `pack`.
#[derive(Args)]
pub struct PackArgs {
    /// The file or folder to pack (folders are walked recursively). A link inside a folder is
    /// followed only to a file inside that folder, or, for a Hugging Face cache snapshot
    /// (`.../snapshots/REV`), to its repository's `blobs/`; any other link is refused
    pub src: PathBuf,
    /// Members of the store, comma-separated: directories (created if missing) or s3://BUCKET[/PREFIX] (a bucket is created only with --init)
    #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
    pub store: Vec<MemberSpec>,
    /// Model name [default: the file's stem or the folder's name]
    #[arg(long)]
    pub name: Option<String>,
    /// Copies of every chunk, on distinct members
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Chunk size, e.g. 512KiB, 4MiB, 16M (at most 1GiB)
    #[arg(long, default_value = "4MiB", value_parser = parse_chunk_size)]
    pub chunk_size: u64,
    /// Chunk codec
    #[arg(long, value_enum, default_value_t = CodecArg::Auto)]
    pub codec: CodecArg,
    /// zstd compression level (1-22)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// How chunk replicas are spread over members
    #[arg(long, value_enum, default_value_t = Placement::Hash)]
    pub placement: Placement,
    /// Where files are cut: on tensor boundaries (safetensors, GGUF and PyTorch zip checkpoints;
    /// other files fall back to fixed) or every chunk-size bytes
    #[arg(long, value_enum, default_value_t = Partition::Tensor)]
    pub partition: Partition,
    /// Opt in to lossy storage: the model then reads back as a different (smaller) file
    #[arg(long, value_enum)]
    pub lossy: Option<LossyArg>,
    /// Store each float tensor chunk that a model of the store also holds (same tensors, dtype
    /// and length) as its difference from that model's chunk, where that saves 2%: NAME, or `auto` for
    /// the model sharing the most such chunks. Lossless; the base's chunks are kept as long as
    /// a model needs them, even after `rm` of the base
    #[arg(long, value_name = "NAME|auto")]
    pub base: Option<String>,
    /// Let listed directories and buckets that are not yet members join the store (and create a missing bucket)
    #[arg(long)]
    pub init: bool,
    /// Follow links inside the folder to files anywhere (by default a link out of the folder
    /// is refused: a downloaded model could link `tokenizer.json` to `/etc/shadow`)
    #[arg(long)]
    pub follow_links: bool,
    /// Make a new store without a signing key (anyone who can write one member can then
    /// change what it serves)
    #[arg(long)]
    pub unsigned: bool,
    #[command(flatten)]
    pub wait: LockWait,
}

/// The arguments of `mount`.
#[derive(Args)]
pub struct MountArgs {
    /// Members of the store (directories, s3://BUCKET[/PREFIX], http(s)://HOST/PATH read-only), comma-separated, in any order (a lost one may be left out)
    #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
    pub store: Vec<MemberSpec>,
    /// An existing empty directory
    pub mountpoint: PathBuf,
    /// Show only this model's files at the mount root
    #[arg(long)]
    pub name: Option<String>,
    /// Memory for decompressed chunks, e.g. 512MiB, 2G (chunks being loaded count too)
    #[arg(long, default_value = "1GiB", value_parser = parse_cache_size)]
    pub cache_size: u64,
    /// Chunks loaded ahead of a sequential reader [default: eight times the threads]
    #[arg(long)]
    pub prefetch: Option<usize>,
    /// Cores to decompress on: read-ahead uses twice as many threads [default: the number of cores]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// Kernel read-ahead window for the mount (root only; up to 1MiB goes in one request).
    /// mmap loaders fault in a window this wide: 8MiB lets them finish chunks in order
    #[arg(long, default_value = "8MiB", value_parser = parse_size_any)]
    pub read_ahead: u64,
    /// Stay in the foreground (logs to stderr) instead of detaching
    #[arg(long)]
    pub foreground: bool,
    /// Let other users read the mount (needs user_allow_other in /etc/fuse.conf for non-root)
    #[arg(long)]
    pub allow_other: bool,
    /// Mount even when some chunks have no replica on the members given (their bytes read as EIO)
    #[arg(long)]
    pub allow_degraded: bool,
    /// Print nothing once mounted
    #[arg(long, short)]
    pub quiet: bool,
    /// How often to look for new, re-packed and removed models: new opens get the newest
    /// version, files already open keep reading theirs (`shardfs refresh` looks at once)
    #[arg(long, default_value = "3s", value_parser = shardfs::units::parse_duration)]
    pub refresh: std::time::Duration,
    /// Serve the models as they are at mount time: never look for new versions
    #[arg(long)]
    pub pin: bool,
    /// Serve the counters in the Prometheus text format on http://ADDR/metrics, ADDR being
    /// IP:PORT or HOST:PORT (127.0.0.1:9464, localhost:9464; 0.0.0.0:9464 for every interface)
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// A local directory for whole decompressed copies of the files read: later opens of a
    /// file whose copy is complete (and checked) are served from it, by FUSE passthrough
    /// where the kernel and privileges allow. Without it the mount has a tier of its own in
    /// $XDG_CACHE_HOME/shardfs/tier (/var/cache/shardfs/tier for root, else ~/.cache/...),
    /// one folder per mountpoint, at most half its disk's free space; where that cannot be
    /// made the mount goes on without one (logged)
    #[arg(long, value_name = "DIR")]
    pub local_cache: Option<PathBuf>,
    /// No local tier: every read is served from the store through the chunk cache
    #[arg(long, conflicts_with = "local_cache")]
    pub no_local_cache: bool,
    /// The most the local copies may take
    #[arg(long, default_value = "16GiB", value_parser = parse_size_any)]
    pub local_cache_size: u64,
}
