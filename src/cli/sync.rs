//! The data-sync commands' output: `repair`, `member ...`, `rebalance`, `rm`, `gc`.

use super::{Failure, print_json};
use crate::MemberParser;
use shardfs::store::Store;
use shardfs::units::{format_bytes, format_rate};
use std::io::IsTerminal;
use std::path::PathBuf;

type Opts = shardfs::member::Options;

pub fn repair(
    store: Vec<PathBuf>,
    name: Option<String>,
    dry_run: bool,
    json: bool,
    members: &Opts,
) -> Result<(), Failure> {
    let store = Store::open_with(&store, members)?;
    let opts = shardfs::sync::repair::RepairOptions {
        name,
        dry_run,
        progress: !json && std::io::stderr().is_terminal(),
        exclude: None,
    };
    let r = shardfs::sync::repair::repair(&store, &opts)?;
    if json {
        print_json(&r)?;
    } else {
        for u in &r.unrepaired {
            shardfs::say!(
                "UNREPAIRED: model {}, file {} bytes {}..{}: chunk {}: {} of {} replicas good: {}",
                u.model,
                u.file,
                u.offset,
                u.offset + u.len,
                u.chunk,
                u.good,
                u.replicas,
                u.reason
            );
        }
        let verb = if r.dry_run {
            "would re-create"
        } else {
            "re-created"
        };
        shardfs::say!(
            "{}: {} models, {} chunks; {verb} {} replicas ({} corrupt replaced), {} copied, {} manifest copies {}, {:.1}s, {}",
            if r.ok { "OK" } else { "INCOMPLETE" },
            r.models,
            r.chunks,
            r.replicas_recreated,
            r.corrupt_replaced,
            format_bytes(r.bytes_copied),
            r.manifests_synced,
            if r.dry_run { "to sync" } else { "synced" },
            r.seconds,
            format_rate(r.bytes_copied, r.seconds)
        );
    }
    if r.ok { Ok(()) } else { Err(Failure::Problems) }
}

pub fn rebalance(
    store: Vec<PathBuf>,
    dry_run: bool,
    json: bool,
    members: &Opts,
) -> Result<(), Failure> {
    let store = Store::open_with(&store, members)?;
    let r = shardfs::sync::rebalance::rebalance(&store, dry_run)?;
    if json {
        return print_json(&r);
    }
    shardfs::say!(
        "{} {} of {} replicas ({} chunks), {} copied; {} old copies deleted, {} kept for live mounts; {:.1}s",
        if r.dry_run { "would move" } else { "moved" },
        r.replicas_moved,
        r.replicas,
        r.chunks,
        format_bytes(r.bytes_copied),
        r.old_copies_deleted,
        r.old_copies_kept,
        r.seconds
    );
    Ok(())
}

pub fn rm(store: Vec<PathBuf>, name: String, members: &Opts) -> Result<(), Failure> {
    let store = Store::open_with(&store, members)?;
    let n = shardfs::sync::gc::rm(&store, &name)?;
    shardfs::say!(
        "removed model {name} from {n} members; shardfs gc frees the chunks no other model uses"
    );
    Ok(())
}

pub fn gc(
    store: Vec<PathBuf>,
    dry_run: bool,
    min_age: std::time::Duration,
    json: bool,
    members: &Opts,
) -> Result<(), Failure> {
    let store = Store::open_with(&store, members)?;
    let r = shardfs::sync::gc::gc(&store, dry_run, min_age)?;
    if json {
        return print_json(&r);
    }
    shardfs::say!(
        "{} {} chunk files and {} damaged files set aside, {} returned; kept {} younger than --min-age and {} named by {} live mounts' leases; {:.1}s",
        if r.dry_run { "would delete" } else { "deleted" },
        r.chunk_files_deleted,
        r.stale_files_deleted,
        format_bytes(r.bytes_returned),
        r.kept_young,
        r.kept_for_leases,
        r.live_leases,
        r.seconds
    );
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum MemberCommand {
    /// List every member the store knows: id, location, index, weight, replicas and bytes held, health
    List {
        /// Members of the store (directories, s3://BUCKET[/PREFIX]), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Add an empty (or missing) directory or bucket prefix as a new member
    Add {
        /// Members of the store (directories, s3://BUCKET[/PREFIX]), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// The new member's place (created if missing; a bucket is created)
        new: PathBuf,
        /// Relative capacity, for hash placement
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
    },
    /// Set a member's relative capacity (hash placement of new chunks, repair)
    SetWeight {
        /// Members of the store, comma-separated, in any order (the member to change among them)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// The member: its id or its location
        member: String,
        /// The new weight (a positive number)
        weight: f64,
    },
    /// Let a new, empty place take a lost member's place (same id and index); repair then fills it
    Replace {
        /// The members that still work, comma-separated, in any order (not the lost one)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// The lost member: its id or its location (see member list)
        old: String,
        /// The new, empty directory or bucket prefix
        new: PathBuf,
    },
    /// Drain a member (its replicas are made on the others first), then retire it from the store
    Remove {
        /// Members of the store, comma-separated, in any order (the member to remove may be among them)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<PathBuf>,
        /// The member: its id or its location
        old: String,
    },
}

pub fn member_command(cmd: MemberCommand, opts: &Opts) -> Result<(), Failure> {
    use shardfs::sync::members;
    let row_line = |r: &members::MemberRow| {
        format!(
            "{} {} index {} weight {} {} replicas {} {}",
            r.id,
            if r.location.is_empty() {
                "(location unknown)"
            } else {
                &r.location
            },
            r.index,
            r.weight,
            r.chunks,
            format_bytes(r.bytes),
            r.health
        )
    };
    match cmd {
        MemberCommand::List { store, json } => {
            let store = Store::open_with(&store, opts)?;
            let rows = members::list(&store)?;
            if json {
                return print_json(&rows);
            }
            shardfs::say!(
                "{:32} {:40} {:>5} {:>7} {:>8} {:>11}  HEALTH",
                "ID",
                "LOCATION",
                "INDEX",
                "WEIGHT",
                "CHUNKS",
                "BYTES"
            );
            for r in rows {
                shardfs::say!(
                    "{:32} {:40} {:>5} {:>7} {:>8} {:>11}  {}",
                    r.id,
                    r.location,
                    r.index,
                    r.weight,
                    r.chunks,
                    format_bytes(r.bytes),
                    r.health
                );
            }
            Ok(())
        }
        MemberCommand::Add { store, new, weight } => {
            let r = members::add(&store, &new, weight, opts)?;
            shardfs::say!("added member {}", row_line(&r));
            Ok(())
        }
        MemberCommand::SetWeight {
            store,
            member,
            weight,
        } => {
            let store = Store::open_with(&store, opts)?;
            let r = members::set_weight(&store, &member, weight)?;
            shardfs::say!("member {}", row_line(&r));
            Ok(())
        }
        MemberCommand::Replace { store, old, new } => {
            let store = Store::open_with(&store, opts)?;
            let r = members::replace(&store, &old, &new, opts)?;
            shardfs::say!(
                "{} takes the place of the lost member {} (index {}); run shardfs repair to fill it",
                new.display(),
                r.id,
                r.index
            );
            Ok(())
        }
        MemberCommand::Remove { store, old } => {
            let store = Store::open_with(&store, opts)?;
            let r = members::remove(&store, &old, std::io::stderr().is_terminal())?;
            shardfs::say!(
                "removed member {old}: {} replicas made on other members ({}), {} manifest copies rewritten; it is retired",
                r.replicas_recreated,
                format_bytes(r.bytes_copied),
                r.manifests_synced
            );
            Ok(())
        }
    }
}
