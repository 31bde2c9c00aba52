//! The data-sync commands' output: `repair`, `member ...`, `rebalance`, `rm`, `gc`.

use super::{Failure, print_json};
use crate::MemberParser;
use shardfs::member::MemberSpec;
use shardfs::store::{Run, Store};
use shardfs::units::{count, format_bytes, format_rate};

type Opts = shardfs::member::Options;

pub fn repair(
    store: Vec<MemberSpec>,
    name: Option<String>,
    dry_run: bool,
    json: bool,
    members: &Opts,
) -> Result<(), Failure> {
    let store = Store::open_with(&store, members)?;
    let opts = shardfs::sync::repair::RepairOptions {
        name,
        dry_run,
        progress: super::progress::bar(!json),
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
            "{}: {}, {}; {verb} {} ({} corrupt replaced), {} copied, {} {}, {:.1}s, {}",
            if r.ok { "OK" } else { "INCOMPLETE" },
            count(r.models as u64, "model"),
            count(r.chunks as u64, "chunk"),
            count(r.replicas_recreated as u64, "replica"),
            r.corrupt_replaced,
            format_bytes(r.bytes_copied),
            count(r.manifests_synced as u64, "manifest copy"),
            if r.dry_run { "to sync" } else { "synced" },
            r.seconds,
            format_rate(r.bytes_copied, r.seconds)
        );
    }
    if r.ok { Ok(()) } else { Err(Failure::Problems) }
}

pub fn rebalance(
    store: Vec<MemberSpec>,
    dry_run: bool,
    min_age: std::time::Duration,
    json: bool,
    members: &Opts,
) -> Result<(), Failure> {
    let store = Store::open_with(&store, members)?;
    let r = shardfs::sync::rebalance::rebalance(&store, Run::dry_if(dry_run), min_age)?;
    if json {
        return print_json(&r);
    }
    let mut kept = Vec::new();
    if r.old_copies_kept_for_mounts > 0 {
        kept.push(format!(
            "{} kept for live mounts",
            r.old_copies_kept_for_mounts
        ));
    }
    if r.old_copies_kept_young > 0 {
        kept.push(format!(
            "{} kept for being younger than --min-age {} on members without a lock (a pack elsewhere may be writing them; a later rebalance or --min-age 0 deletes them)",
            r.old_copies_kept_young,
            shardfs::units::format_duration(std::time::Duration::from_secs(r.min_age_secs))
        ));
    }
    shardfs::say!(
        "{} {} of {} replicas ({}), {} copied; {} deleted{}; {:.1}s",
        if r.dry_run { "would move" } else { "moved" },
        r.replicas_moved,
        r.replicas,
        count(r.chunks, "chunk"),
        format_bytes(r.bytes_copied),
        count(r.old_copies_deleted, "old copy"),
        kept.iter().map(|k| format!(", {k}")).collect::<String>(),
        r.seconds
    );
    Ok(())
}

pub fn rm(store: Vec<MemberSpec>, name: String, members: &Opts) -> Result<(), Failure> {
    let store = Store::open_with(&store, members)?;
    let n = shardfs::sync::gc::rm(&store, &name)?;
    shardfs::say!(
        "removed model {name} from {n} members; shardfs gc frees the chunks no other model uses"
    );
    Ok(())
}

pub fn gc(
    store: Vec<MemberSpec>,
    dry_run: bool,
    min_age: std::time::Duration,
    json: bool,
    members: &Opts,
) -> Result<(), Failure> {
    let store = Store::open_with(&store, members)?;
    let r = shardfs::sync::gc::gc(&store, Run::dry_if(dry_run), min_age)?;
    if json {
        return print_json(&r);
    }
    for w in &r.would_delete {
        shardfs::say!(
            "would delete {} chunk {} ({})",
            w.member,
            w.chunk,
            format_bytes(w.bytes)
        );
    }
    let mut line = format!(
        "{} {} and {} set aside, {} returned",
        if r.dry_run { "would delete" } else { "deleted" },
        count(r.chunk_files_deleted, "chunk file"),
        count(r.stale_files_deleted, "damaged file"),
        format_bytes(r.bytes_returned),
    );
    if r.temp_files_deleted > 0 {
        line += &format!(
            "; removed {} of killed writes",
            count(r.temp_files_deleted, "temporary file")
        );
    }
    line += &format!(
        "; kept {} younger than --min-age {} and {} named by the leases of {}; {:.1}s",
        count(r.kept_young, "file"),
        shardfs::units::format_duration(min_age),
        count(r.kept_for_leases, "chunk"),
        count(r.live_leases as u64, "live mount"),
        r.seconds
    );
    shardfs::say!("{line}");
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum MemberCommand {
    /// List every member the store knows: id, location, index, weight, replicas and bytes held, health
    List {
        /// Members of the store (directories, s3://BUCKET[/PREFIX], http(s)://HOST/PATH read-only), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Add an empty (or missing) directory or bucket prefix as a new member
    Add {
        /// Members of the store (directories, s3://BUCKET[/PREFIX], http(s)://HOST/PATH read-only), comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
        /// The new member's place (created if missing; a bucket is created)
        #[arg(value_parser = MemberParser)]
        new: MemberSpec,
        /// Relative capacity, for hash placement
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
    },
    /// Set a member's relative capacity (hash placement of new chunks, repair)
    SetWeight {
        /// Members of the store, comma-separated, in any order (the member to change among them)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
        /// The member: its id or its location
        member: String,
        /// The new weight (a positive number)
        weight: f64,
    },
    /// Let a new, empty place take a lost member's place (same id and index); repair then fills it
    Replace {
        /// The members that still work, comma-separated, in any order (not the lost one)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
        /// The lost member: its id or its location (see member list)
        old: String,
        /// The new, empty directory or bucket prefix
        #[arg(value_parser = MemberParser)]
        new: MemberSpec,
    },
    /// Drain a member (its replicas are made on the others first), then retire it from the store
    Remove {
        /// Members of the store, comma-separated, in any order (the member to remove may be among them)
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
        /// The member: its id or its location
        old: String,
    },
}

/// `shardfs member ...`: list, add, set-weight, replace, remove.
pub fn member_command(cmd: MemberCommand, opts: &Opts) -> Result<(), Failure> {
    use shardfs::sync::members;
    match cmd {
        MemberCommand::List { store, json } => member_list(&store, json, opts),
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
            let (list, _) = store.member_list();
            let was = list
                .members
                .iter()
                .find(|l| l.id == old || l.location == old)
                .map_or_else(|| old.clone(), |l| l.location.clone());
            let r = members::replace(&store, &old, &new, opts)?;
            shardfs::say!(
                "{} takes the place of the lost member at {was} (index {}, id {}); run shardfs repair to fill it",
                new,
                r.index,
                r.id
            );
            Ok(())
        }
        MemberCommand::Remove { store, old } => {
            let store = Store::open_with(&store, opts)?;
            let r = members::remove(&store, &old, super::progress::bar(true))?;
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

/// `member list`: every member of the store, its share and its health.
fn member_list(store: &[MemberSpec], json: bool, opts: &Opts) -> Result<(), Failure> {
    use shardfs::sync::members;
    let store = Store::open_with(store, opts)?;
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

/// A member in one line, as `member add` and `member set-weight` say it.
fn row_line(r: &shardfs::sync::members::MemberRow) -> String {
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
}
