//! Data sync on object-storage members against a real S3 server (SeaweedFS): concurrent packs
//! of one model, repair, rm and gc on a bucket member, and member add, rebalance, remove and
//! replace on a mix of directories and buckets.

mod common;

use common::weed::server;
use common::*;
use shardfs::member::{IfPresent, Sweep};
use std::fs;
use std::path::Path;

/// Two packs of one model at once: the one that publishes second was based on the version the
/// first replaced, so it fails with a clear error instead of silently undoing the first.
#[test]
fn a_pack_does_not_silently_undo_a_concurrent_pack_of_the_same_model() {
    use common::weed::Shaper;
    let (dir, weed) = server();
    let d = dir.path();
    let store = "s3://racing";
    let mut rng = Rng::new(9);
    let v1 = rng.floats(1 << 20);
    let src = d.join("model.bin");
    fs::write(&src, &v1).unwrap();
    pack(&src, store, &["--init"]);
    // The slow pack goes through a 100 Mbit/s link: its 16 MiB take over a second to upload.
    let slow_link = Shaper::start(weed.port, &["--rate", "100mbit"]);
    let slow_src = d.join("slow/model.bin");
    fs::create_dir_all(slow_src.parent().unwrap()).unwrap();
    let slow_data = rng.floats(16 << 20);
    fs::write(&slow_src, &slow_data).unwrap();
    let m = shardfs::member::open(std::path::Path::new(store), &Default::default()).unwrap();
    let before = m.list_chunks().unwrap().len();
    let slow = command()
        .args([
            "pack",
            slow_src.to_str().unwrap(),
            "--store",
            store,
            "--chunk-size",
            "1MiB",
        ])
        .env("AWS_ENDPOINT_URL", slow_link.endpoint())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the slow pack is uploading (it has read the manifest), a quick pack publishes.
    while m.list_chunks().unwrap().len() == before {
        std::thread::yield_now();
    }
    let v3 = rng.floats(1 << 20);
    fs::write(&src, &v3).unwrap();
    pack(&src, store, &[]);
    let out = slow.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the slow pack published over the quick one"
    );
    assert!(
        stderr.contains("changed on s3://racing while this pack ran"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        export(store, "model", None),
        v3,
        "the quick pack's version was lost"
    );
    // Packed again, the slow one now builds on the quick one's version.
    pack(
        &slow_src,
        store,
        &["--chunk-size", "1MiB", "--name", "model"],
    );
    assert_eq!(export(store, "model", None), slow_data);
}

/// The data-sync commands on a mix of a directory and a bucket: lost objects re-created by
/// repair, a model retired and its objects collected by gc, the member list naming the bucket.
#[test]
fn repair_rm_and_gc_work_on_a_bucket_member() {
    let (dir, _weed) = server();
    let d = dir.path();
    let store = format!("{},s3://syncing", d.join("local").display());
    let mut rng = Rng::new(14);
    let (keep, drop) = (rng.floats(1 << 20), rng.floats(1 << 20));
    fs::write(d.join("keep.bin"), &keep).unwrap();
    fs::write(d.join("drop.bin"), &drop).unwrap();
    for f in ["keep.bin", "drop.bin"] {
        pack(
            &d.join(f),
            &store,
            &["--replicas", "2", "--chunk-size", "128KiB", "--init"],
        );
    }
    let m = shardfs::member::open(Path::new("s3://syncing"), &Default::default()).unwrap();
    let objects = m.list_chunks().unwrap();
    assert_eq!(objects.len(), 16);
    for e in &objects[..5] {
        m.delete_chunk(&e.hash).unwrap();
    }
    // Two more are damaged in place (what was there is set aside first).
    for e in &objects[5..7] {
        m.put_chunk(&e.hash, b"not a chunk", IfPresent::Replace)
            .unwrap();
    }
    let aside = || {
        m.sweep_damaged(std::time::Duration::ZERO, Sweep::Count)
            .unwrap()
            .deleted
    };
    assert_eq!(aside(), 2);
    assert_eq!(common::sync::verify(&store)["ok"], false);
    let out = ok(&["repair", "--store", &store, "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["replicas_recreated"], 7, "{r}");
    assert_eq!(r["corrupt_replaced"], 2, "{r}");
    assert_eq!(common::sync::verify(&store)["ok"], true);
    assert_eq!(m.list_chunks().unwrap().len(), 16);
    // The damaged objects were set aside too.
    assert_eq!(aside(), 4);
    let rows: serde_json::Value =
        serde_json::from_slice(&ok(&["member", "list", "--store", &store, "--json"]).stdout)
            .unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["location"] == "s3://syncing" && r["health"] == "up"),
        "{rows}"
    );
    ok(&["rm", "--store", &store, "--name", "drop"]);
    let out = ok(&["gc", "--store", &store, "--min-age", "1ms", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["chunk_files_deleted"], 16, "{r}");
    assert_eq!(r["stale_files_deleted"], 4, "{r}");
    assert_eq!(aside(), 0);
    assert_eq!(m.list_chunks().unwrap().len(), 8);
    assert_eq!(common::sync::verify(&store)["ok"], true);
    assert!(export(&store, "keep", None) == keep);
}

#[test]
fn member_add_rebalance_remove_and_replace_work_on_a_mix_of_directories_and_buckets() {
    let (dir, _weed) = server();
    let d = dir.path();
    let local = d.join("local");
    let store = format!("{},s3://mix/a", local.display());
    let data = std::sync::Arc::new(Rng::new(15).floats(4 << 20));
    let src = d.join("m.bin");
    fs::write(&src, &*data).unwrap();
    pack(
        &src,
        &store,
        &["--replicas", "2", "--chunk-size", "64KiB", "--init"],
    );
    let mount = Mounted::new(
        &store,
        &d.join("mnt"),
        &d.join("state"),
        &["--name", "m", "--cache-size", "1MiB", "--refresh", "500ms"],
    );
    let readers = common::sync::Readers::start(vec![(mount.dir.join("m.bin"), data.clone())]);
    let json = |out: std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // A bucket joins; rebalance moves about a third of the replicas onto it.
    ok(&["member", "add", "--store", &store, "s3://mix/b"]);
    let three = format!("{store},s3://mix/b");
    let r = json(ok(&["rebalance", "--store", &three, "--json"]));
    let moved = r["replicas_moved"].as_f64().unwrap() / r["replicas"].as_f64().unwrap();
    assert!((0.15..=0.5).contains(&moved), "{r}");
    mount.refresh();
    assert_eq!(common::sync::verify(&three)["ok"], true);

    // The first bucket leaves: its replicas are drained to the others first.
    ok(&["member", "remove", "--store", &three, "s3://mix/a"]);
    let two = format!("{},s3://mix/b", local.display());
    assert_eq!(common::sync::verify(&two)["ok"], true);
    mount.refresh();

    // The directory is lost and a bucket takes its place; repair fills it.
    fs::remove_dir_all(&local).unwrap();
    let buckets = "s3://mix/b,s3://mix/c";
    ok(&[
        "member",
        "replace",
        "--store",
        buckets,
        local.to_str().unwrap(),
        "s3://mix/c",
    ]);
    let r = json(ok(&["repair", "--store", buckets, "--json"]));
    assert!(r["replicas_recreated"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(common::sync::verify(buckets)["ok"], true);
    // Every chunk is on both buckets now.
    let m = shardfs::member::open(Path::new("s3://mix/c"), &Default::default()).unwrap();
    assert_eq!(m.list_chunks().unwrap().len(), 64);
    mount.refresh();
    readers.finish();
    assert!(export(buckets, "m", None) == *data);
    let s = mount.status();
    assert_eq!(s["errors"], 0, "{s}");
    assert!(mount.unmount().status.success());
}

/// A bucket member's manifest object too large to read (someone with write access to the
/// bucket put it there) is damaged: repair replaces exactly that object with the good copy.
#[test]
fn repair_replaces_an_oversized_manifest_object() {
    let (dir, _weed) = server();
    let d = dir.path();
    let local = d.join("m0");
    let store = format!("{},s3://heal", local.display());
    let data = Rng::new(21).floats(1 << 20);
    let src = d.join("m.bin");
    fs::write(&src, &data).unwrap();
    pack(&src, &store, &["--replicas", "2", "--init"]);
    // Planting 256 MiB is this test's own setup: a server busy with the suite may take more
    // than the default 5 s to acknowledge it.
    let opts = shardfs::member::Options {
        timeout: std::time::Duration::from_secs(60),
        ..Default::default()
    };
    let bucket = shardfs::member::open(Path::new("s3://heal"), &opts).unwrap();
    let junk = vec![b' '; (256 << 20) + 1];
    bucket
        .put_manifest("m", &junk, &shardfs::member::Expect::Tag(String::new()))
        .unwrap();
    drop(junk);
    let report = common::sync::verify(&store);
    assert_eq!(report["ok"], false, "{report}");
    let out = run(&["repair", "--store", &store]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let healed = bucket.get_manifest("m").unwrap().unwrap();
    assert!(healed.bytes.len() < 1 << 20);
    assert_eq!(
        healed.bytes,
        fs::read(local.join("manifests/m.json")).unwrap()
    );
    assert_eq!(common::sync::verify(&store)["ok"], true);
    assert_eq!(export(&store, "m", None), data);
}

/// On buckets (no lock) rebalance keeps old copies younger than --min-age and says that is why,
/// not live mounts, when none runs; --min-age 0 deletes them.
#[test]
fn rebalance_on_buckets_names_the_minimum_age_as_the_reason_it_keeps_old_copies() {
    let (dir, _weed) = server();
    let d = dir.path();
    let store = "s3://reb/a,s3://reb/b";
    let src = d.join("m.bin");
    fs::write(&src, Rng::new(16).floats(2 << 20)).unwrap();
    pack(&src, store, &["--chunk-size", "64KiB", "--init"]);
    ok(&["member", "add", "--store", store, "s3://reb/c"]);
    let three = format!("{store},s3://reb/c");
    let text = String::from_utf8(ok(&["rebalance", "--store", &three]).stdout).unwrap();
    assert!(
        text.contains("kept for being younger than --min-age 1h") && !text.contains("live mounts"),
        "{text}"
    );
    let r: serde_json::Value = serde_json::from_slice(
        &ok(&["rebalance", "--store", &three, "--min-age", "0", "--json"]).stdout,
    )
    .unwrap();
    assert!(r["old_copies_deleted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["old_copies_kept"], 0, "{r}");
    assert_eq!(common::sync::verify(&three)["ok"], true);
}
