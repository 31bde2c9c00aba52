//! The output of the commands that report: `ls`, `status`, `verify`, `df`.

use super::{Failure, print_json};
use shardfs::daemon;
use shardfs::daemon::DaemonState;
use shardfs::member::MemberSpec;
use shardfs::store::health::{Health, ModelHealth};
use shardfs::store::manifest::Manifest;
use shardfs::store::{Store, verify};
use shardfs::units::{count, format_bytes, format_duration, ratio};
use std::path::Path;

pub fn verify(
    store: Vec<MemberSpec>,
    name: Option<String>,
    json: bool,
    members: &shardfs::member::Options,
) -> Result<(), Failure> {
    let store = Store::open_with(&store, members)?;
    let report = verify::verify(&store, name.as_deref())?;
    if json {
        print_json(&report)?;
    } else {
        // A member that did not open gets one line, not one per replica it holds.
        let gone = |p: &&verify::Problem| {
            p.member_id.as_ref().is_some_and(|id| {
                report
                    .unavailable_members
                    .iter()
                    .any(|u| &u.member_id == id)
            })
        };
        for u in &report.unavailable_members {
            shardfs::say!("{}", u.describe());
        }
        // Under-replicated chunks get one line per model.
        let mut under: std::collections::BTreeMap<&str, usize> = Default::default();
        for p in report.problems.iter().filter(|p| !gone(p)) {
            if p.kind == verify::ProblemKind::UnderReplicated {
                *under.entry(p.model.as_deref().unwrap_or("?")).or_default() += 1;
            } else {
                shardfs::say!("{}", p.describe());
            }
        }
        for (model, n) in under {
            shardfs::say!(
                "under-replicated: model {model}: {n} chunks have fewer good replicas than packed (shardfs repair re-creates them)"
            );
        }
        for l in &report.lossy {
            shardfs::say!(
                "NOTE: model {}, file {} is lossy ({}): it differs by design from the packed file (blake3 {})",
                l.model,
                l.file,
                l.kind,
                l.original_blake3
            );
        }
        shardfs::say!(
            "{}: {}, {}, {}, {} checked ({}), {}",
            if report.ok { "OK" } else { "FAILED" },
            count(report.models as u64, "model"),
            count(report.files as u64, "file"),
            count(report.chunks as u64, "chunk"),
            count(report.replicas_checked as u64, "replica"),
            format_bytes(report.bytes_checked),
            count(report.problems.len() as u64, "problem")
        );
    }
    if report.ok {
        Ok(())
    } else {
        Err(Failure::Problems)
    }
}

/// `shardfs status`: every live mount (or the one at `mountpoint`), what it serves and how.
pub fn status(mountpoint: Option<&Path>, json: bool) -> Result<(), Failure> {
    let mounts = daemon::status(mountpoint)?;
    if json {
        let value = match (mountpoint, mounts.first()) {
            (Some(_), Some(one)) => serde_json::to_value(one),
            _ => serde_json::to_value(&mounts),
        }
        .map_err(|e| Failure::Error(e.to_string()))?;
        print_json(&value)?;
        if mounts.iter().any(|m| m.state == DaemonState::Unresponsive) {
            return Err(Failure::Problems);
        }
        return Ok(());
    }
    if mounts.is_empty() {
        shardfs::say!("no shardfs mounts");
    }
    let unresponsive = mounts
        .iter()
        .filter(|m| m.state == DaemonState::Unresponsive)
        .count();
    for m in &mounts {
        let model = m.mount.model.as_deref().unwrap_or("(all models)");
        shardfs::say!(
            "{} [{}] pid {} model {} store {}",
            m.mount.mountpoint,
            m.state,
            m.mount.pid,
            model,
            m.mount.store.join(",")
        );
        if m.state == DaemonState::Unresponsive {
            shardfs::say!(
                "  the daemon (pid {}) is running but did not answer within 5 s: hung, or stopped (SIGSTOP)?",
                m.mount.pid
            );
        }
        if let Some(c) = &m.counters {
            print_counters(c);
            print_versions(m);
        } else if m.state == DaemonState::Stale {
            shardfs::say!("  its daemon is gone; the entry was cleaned up");
        }
    }
    if unresponsive > 0 {
        return Err(Failure::Problems);
    }
    Ok(())
}

/// A live mount's counters: what it served, its cache, what it does now, its open files and
/// its local tier.
fn print_counters(c: &shardfs::fs::Counters) {
    shardfs::say!(
        "  served {} in {}; cache {} / {}, {} of {} used; {} decompressed ({} prefetched), {} from frames alone; {} handed to the page cache ({} let go); {}; {}",
        format_bytes(c.bytes_served),
        count(c.reads, "read"),
        count(c.cache_hits, "hit"),
        count(c.cache_misses, "miss"),
        format_bytes(c.cache_bytes_used),
        format_bytes(c.cache_capacity),
        count(c.chunks_decompressed, "chunk"),
        c.chunks_prefetched,
        count(c.frame_reads, "small read"),
        count(c.page_cache_handovers, "partly read chunk"),
        c.page_cache_handovers_missed,
        count(c.replica_failovers, "replica failover"),
        count(c.errors, "error")
    );
    let n = &c.now;
    shardfs::say!(
        "  now: {} open, {}/s over the last 5 s, {} waiting for chunks, {} in flight",
        count(n.open_files.len() as u64, "file"),
        format_bytes(n.recent_bytes_per_second as u64),
        count(n.reads_waiting, "read"),
        count(n.readahead_in_flight, "read-ahead load")
    );
    const SHOWN: usize = 10;
    for f in n.open_files.iter().take(SHOWN) {
        shardfs::say!(
            "  open {} ({}): {} reads, {} in {:.1} s",
            f.path,
            f.mode,
            f.reads,
            format_bytes(f.bytes_served),
            f.open_seconds
        );
    }
    if n.open_files.len() > SHOWN {
        shardfs::say!("  ... and {} more open files", n.open_files.len() - SHOWN);
    }
    if let Some(t) = &c.tier {
        shardfs::say!(
            "  local tier {}: {} of {} used, {} ({} being made), {} served from copies, {} evicted, {} damaged and deleted",
            t.dir,
            format_bytes(t.used),
            format_bytes(t.limit),
            count(t.copies, "copy"),
            t.filling,
            count(t.hits, "open"),
            t.evicted,
            t.damaged
        );
    }
    print_members(&c.members);
}

/// Each member's requests, failures and latency as a live mount saw them.
fn print_members(members: &[shardfs::store::liveness::MemberStats]) {
    for m in members {
        let p = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        shardfs::say!(
            "  member {}: {}, {} requests, {} failures ({} timeouts), {} replicas missing or damaged, {} hedged, {} fetched, latency p50/p90/p99 {}/{}/{} ms",
            m.location,
            m.state.name(),
            m.requests,
            m.failures,
            m.timeouts,
            m.bad_replicas,
            m.hedges,
            format_bytes(m.bytes_fetched),
            p(m.latency_ms_p50),
            p(m.latency_ms_p90),
            p(m.latency_ms_p99)
        );
    }
}

/// Each model a live mount serves: its version, since when, and its health when the mount
/// started; then when the mount last looked for new versions.
fn print_versions(m: &daemon::MountStatus) {
    let Some(c) = &m.counters else { return };
    let now = shardfs::clock::now_unix_secs();
    let ago = |t: u64| format!("{} s ago", now.saturating_sub(t));
    for v in &c.versions {
        let health = m
            .mount
            .models
            .iter()
            .find(|h| h.model == v.name)
            .map_or_else(String::new, |h| format!("; at mount time {}", h.describe()));
        shardfs::say!(
            "  model {}: version {}, served to new opens since {}{health}",
            v.name,
            v.version,
            ago(v.adopted_unix)
        );
    }
    if m.mount.options.pin {
        shardfs::say!("  pinned: serves the versions it was mounted with");
    } else if c.refreshes == 0 {
        shardfs::say!(
            "  looks for new versions every {} ms; not yet",
            m.mount.options.refresh_ms
        );
    } else {
        shardfs::say!(
            "  looks for new versions every {} ms; last {}",
            m.mount.options.refresh_ms,
            ago(c.refreshed_unix)
        );
    }
}

/// `shardfs refresh`: the mount looked for new versions; what it serves now.
pub fn refresh(mountpoint: &Path, json: bool) -> Result<(), Failure> {
    let m = daemon::refresh(mountpoint)?;
    if json {
        let value = serde_json::to_value(&m).map_err(|e| Failure::Error(e.to_string()))?;
        return print_json(&value);
    }
    let served: Vec<String> = m
        .counters
        .iter()
        .flat_map(|c| &c.versions)
        .map(|v| format!("'{}' version {}", v.name, v.version))
        .collect();
    let served = if served.is_empty() {
        "no models".to_string()
    } else {
        served.join(", ")
    };
    shardfs::say!("refreshed {}: serving {served}", m.mount.mountpoint);
    Ok(())
}

/// `shardfs ls`: the store's models, their sizes, ratios and health.
pub fn ls(
    paths: &[MemberSpec],
    members: &shardfs::member::Options,
    json: bool,
) -> Result<(), Failure> {
    let store = Store::open_with(paths, members)?;
    let (manifests, unreadable) = store.manifests_and_unreadable()?;
    let health: Vec<ModelHealth> = manifests
        .iter()
        .map(|m| ModelHealth::of(&store, m))
        .collect();
    if json {
        let rows: Vec<serde_json::Value> = manifests
            .iter()
            .zip(&health)
            .map(|(m, h)| model_json(m, h))
            .collect();
        let unreadable: Vec<serde_json::Value> = unreadable
            .iter()
            .map(|(name, reason)| serde_json::json!({"name": name, "reason": reason}))
            .collect();
        return print_json(
            &serde_json::json!({"store_id": store.store_id, "models": rows, "unreadable": unreadable}),
        );
    }
    print_models(&manifests, &health);
    for h in health.iter().filter(|h| h.health != Health::Ok) {
        shardfs::say!("model {}: {}", h.model, h.describe());
    }
    for (name, reason) in &unreadable {
        shardfs::say!("model {name}: unreadable: {reason}");
    }
    Ok(())
}

/// `shardfs df`: what each member holds, and what gc could return.
pub fn df(
    store: Vec<MemberSpec>,
    min_age: std::time::Duration,
    json: bool,
    members: &shardfs::member::Options,
) -> Result<(), Failure> {
    let given = store.clone();
    let store = Store::open_with(&store, members)?;
    let usage = shardfs::sync::usage::usage(&store, min_age)?;
    if json {
        return print_json(&usage);
    }
    let width = usage
        .members
        .iter()
        .map(|m| m.location.len())
        .max()
        .unwrap_or(0)
        .max(6);
    shardfs::say!(
        "{:width$}  {:>11}  {:>11}  {:>9}  {:>11}",
        "MEMBER",
        "CHUNK FILES",
        "STORED",
        "MANIFESTS",
        "FREE"
    );
    for m in &usage.members {
        shardfs::say!(
            "{:width$}  {:>11}  {:>11}  {:>9}  {:>11}",
            m.location,
            m.chunk_files,
            format_bytes(m.chunk_bytes),
            m.manifests,
            m.free_bytes.map_or("-".to_string(), format_bytes)
        );
    }
    for (location, reason) in &usage.unavailable {
        shardfs::say!("{location}: not read ({reason})");
    }
    shardfs::say!(
        "total: {}, {} on {}",
        count(
            usage.members.iter().map(|m| m.chunk_files).sum(),
            "chunk file"
        ),
        format_bytes(usage.members.iter().map(|m| m.chunk_bytes).sum()),
        count(usage.members.len() as u64, "member")
    );
    match (&usage.gc, &usage.gc_unknown) {
        (Some(gc), _) => shardfs::say!("{}", gc_line(gc, &given, min_age)),
        (None, Some(why)) => shardfs::say!("gc: cannot tell what it could return: {why}"),
        (None, None) => {}
    }
    Ok(())
}

/// One model as `ls --json` shows it.
fn model_json(m: &Manifest, h: &ModelHealth) -> serde_json::Value {
    serde_json::json!({
        "name": m.name,
        "version": m.version,
        "files": m.files.iter().map(|f| {
            let tensors: std::collections::BTreeSet<&str> = f.chunks.iter().flat_map(|c| c.tensors.iter().map(|t| t.name.as_str())).collect();
            serde_json::json!({"path": f.path, "size": f.size, "blake3": f.blake3, "lossy": f.lossy, "tensors": tensors.len(), "chunks": f.chunks.len()})
        }).collect::<Vec<_>>(),
        "lossy": m.is_lossy(),
        "base": m.base,
        "delta_chunks": m.delta_count(),
        "logical_bytes": m.logical_size(),
        "stored_bytes": m.stored_size(),
        "ratio": ratio(m.logical_size(), m.stored_size()),
        "replicas": m.replicas,
        "chunks": m.chunk_count(),
        "chunk_size": m.chunk_size,
        "health": h.health,
        "degraded_chunks": h.degraded_chunks,
        "unreachable_chunks": h.unreachable_chunks,
        "unreadable_files": h.unreadable_files,
        "missing_members": h.missing_members,
        "codec": m.codec,
        "stored_codecs": m.files.iter().flat_map(|f| &f.chunks).fold(
            std::collections::BTreeMap::<String, u64>::new(),
            |mut by, c| {
                *by.entry(serde_json::to_value(c.codec).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()).or_default() += 1;
                by
            },
        ),
        "placement": m.placement,
        "by_dtype": m.by_dtype().into_iter().map(|(dtype, (bytes, stored))| {
            (dtype, serde_json::json!({"bytes": bytes, "stored_bytes": stored, "ratio": ratio(bytes, stored)}))
        }).collect::<serde_json::Map<_, _>>(),
    })
}

/// The models as `ls` shows them: a table.
fn print_models(manifests: &[Manifest], health: &[ModelHealth]) {
    shardfs::say!(
        "{:<32} {:>6} {:>12} {:>12} {:>7} {:>8} {:>8}  HEALTH",
        "NAME",
        "FILES",
        "SIZE",
        "STORED",
        "RATIO",
        "REPLICAS",
        "CHUNKS"
    );
    for (m, h) in manifests.iter().zip(health) {
        shardfs::say!(
            "{:<32} {:>6} {:>12} {:>12} {:>7.3} {:>8} {:>8}  {}",
            match (m.is_lossy(), &m.base) {
                (true, _) => format!("{} (lossy)", m.name),
                (false, Some(base)) => format!("{} (delta of {base})", m.name),
                (false, None) => m.name.clone(),
            },
            m.files.len(),
            format_bytes(m.logical_size()),
            format_bytes(m.stored_size()),
            ratio(m.logical_size(), m.stored_size()),
            m.replicas,
            m.chunk_count(),
            h.health.as_str()
        );
    }
}

/// What gc could return now, as `df` says it, ending with the command that does it.
fn gc_line(
    gc: &shardfs::sync::gc::GcReport,
    given: &[MemberSpec],
    min_age: std::time::Duration,
) -> String {
    let store_arg = given
        .iter()
        .map(|p| p.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join(",");
    let mut line = format!(
        "gc could return {} now ({}",
        format_bytes(gc.bytes_returned),
        count(gc.chunk_files_deleted, "chunk file")
    );
    if gc.stale_files_deleted > 0 {
        line += &format!(
            ", {} set aside",
            count(gc.stale_files_deleted, "damaged file")
        );
    }
    line += ")";
    if gc.kept_young > 0 {
        line += &format!(
            "; {} younger than {} would be kept",
            count(gc.kept_young, "file"),
            format_duration(min_age)
        );
    }
    if gc.kept_for_leases > 0 {
        line += &format!(
            "; {} kept for {}",
            count(gc.kept_for_leases, "chunk"),
            count(gc.live_leases as u64, "live mount")
        );
    }
    if gc.bytes_returned > 0 {
        line += &format!(": shardfs gc --store {store_arg}");
    }
    line
}
