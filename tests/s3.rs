//! Object-storage members against a real S3 server (SeaweedFS): pack to a mix of a directory
//! and a bucket and to buckets only, export, verify, mount and read with the real loaders,
//! faults of the server (stopped, stalled), bad credentials and missing buckets, a pack killed
//! midway.

mod common;

use common::weed::server;
use common::*;
use shardfs::member::IfPresent;
use std::fs;
use std::path::Path;

#[test]
fn pack_to_a_directory_and_a_bucket_exports_exact_and_verifies() {
    let (dir, _weed) = server();
    let d = dir.path();
    let local = d.join("local");
    let store = format!("{},s3://models/prod", local.display());
    let data = Rng::new(1).floats(3 << 20);
    let src = d.join("m.bin");
    fs::write(&src, &data).unwrap();
    pack(
        &src,
        &store,
        &["--replicas", "2", "--chunk-size", "256KiB", "--init"],
    );
    assert_eq!(export(&store, "m", None), data);
    let out = ok(&["verify", "--store", &store, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["replicas_checked"].as_u64().unwrap() >= 24);
}

/// Runs `cmd` with a time limit far above any deadline of the mount: a hang shows up as exit
/// status 124 instead of a test that never ends.
fn bounded(cmd: &[&str]) -> std::process::Output {
    std::process::Command::new("timeout")
        .arg("60")
        .args(cmd)
        .envs(test_env())
        .output()
        .unwrap()
}

/// Writes `files` as `src/0.bin`, `src/1.bin`, ... under `d`, packs them as model `m` with
/// `pack_args`, and mounts that model with `mount_args`.
fn pack_and_mount(
    d: &Path,
    store: &str,
    files: &[Vec<u8>],
    pack_args: &[&str],
    mount_args: &[&str],
) -> Mounted {
    fs::create_dir_all(d.join("src")).unwrap();
    for (i, f) in files.iter().enumerate() {
        fs::write(d.join(format!("src/{i}.bin")), f).unwrap();
    }
    let mut args = vec!["--init", "--name", "m"];
    args.extend_from_slice(pack_args);
    pack(&d.join("src"), store, &args);
    let mut args = vec!["--name", "m"];
    args.extend_from_slice(mount_args);
    Mounted::new(store, &d.join("mnt"), &d.join("state"), &args)
}

/// Replicas on the directory and the bucket, chunks small enough to count.
const BOTH: &[&str] = &["--replicas", "2", "--chunk-size", "1MiB"];

#[test]
fn a_corrupt_object_is_found_and_named() {
    let (dir, _weed) = server();
    let store = "s3://scrub";
    let data = Rng::new(2).floats(1 << 20);
    let src = dir.path().join("m.bin");
    fs::write(&src, &data).unwrap();
    pack(&src, store, &["--chunk-size", "256KiB", "--init"]);
    assert_eq!(common::sync::verify(store)["ok"], true);
    // Overwrite one chunk object with other bytes, through the member interface.
    let opts = shardfs::member::Options::default();
    let m = shardfs::member::open(std::path::Path::new(store), &opts).unwrap();
    let victim = m.list_chunks().unwrap()[0].hash;
    let mut image = m.get_chunk(&victim, 1 << 30).unwrap().to_vec();
    let last = image.len() - 1;
    image[last] ^= 0x55;
    m.put_chunk(&victim, &image, IfPresent::Replace).unwrap();
    let report = common::sync::verify(store);
    assert_eq!(report["ok"], false);
    let problem = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "corrupt")
        .unwrap_or_else(|| panic!("no corrupt replica reported: {report}"));
    assert_eq!(problem["chunk"], victim.to_hex());
    assert_eq!(problem["member_path"], store);
    // The read path never hands the bad bytes out.
    let out = run(&["export", "--store", store, "--name", "m", "-o", "-"]);
    assert!(!out.status.success());
    assert!(out.stdout.len() < data.len());
}

#[test]
fn loaders_read_models_from_mixed_and_bucket_only_stores() {
    let (dir, _weed) = server();
    let d = dir.path();
    let models = d.join("sample-model");
    gen_models(&models, 6);
    let local = d.join("local");
    // Packed with the bucket last, mounted with it first: members go in any order.
    let packed = format!("{},s3://mixed", local.display());
    let mounted = format!("s3://mixed,{}", local.display());
    pack(
        &models,
        &packed,
        &["--replicas", "2", "--chunk-size", "1MiB", "--init"],
    );
    let m = Mounted::new(
        &mounted,
        &d.join("mnt"),
        &d.join("state"),
        &["--name", "sample-model"],
    );
    let out = python_script(
        "check_loaders.py",
        &[models.to_str().unwrap(), m.dir.to_str().unwrap()],
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        6,
        "{out}"
    );
    let s = m.status();
    assert_eq!(s["errors"], 0);
    let members = s["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{s}");
    let s3 = members
        .iter()
        .find(|m| m["location"] == "s3://mixed")
        .unwrap();
    assert!(s3["requests"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s3["state"], "up");
    drop(m);

    let only = "s3://only/models/v1";
    pack(&models, only, &["--chunk-size", "1MiB", "--init"]);
    assert_eq!(common::sync::verify(only)["ok"], true);
    let m = Mounted::new(only, &d.join("mnt"), &d.join("state"), &[]);
    python_script(
        "check_loaders.py",
        &[
            models.to_str().unwrap(),
            m.dir.join("sample-model").to_str().unwrap(),
        ],
    );
    assert_eq!(m.status()["errors"], 0);
    let ls = ok(&["ls", "--store", only, "--json"]);
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(ls["models"][0]["health"], "ok");
}

#[test]
fn a_stopped_or_stalled_server_fails_over_to_the_local_replica() {
    let (dir, weed) = server();
    let d = dir.path();
    let store = format!("{},s3://failover", d.join("local").display());
    let mut rng = Rng::new(3);
    let files = [rng.floats(12 << 20), rng.floats(12 << 20)];
    let (a, b) = (&files[0], &files[1]);
    let mount_args = ["--cache-size", "8MiB", "--member-timeout", "2s"];
    let m = pack_and_mount(d, &store, &files, BOTH, &mount_args);
    // Stalled: the server takes connections and answers nothing.
    weed.signal("-STOP");
    let out = bounded(&["cat", m.dir.join("0.bin").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "read with the server stalled: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == *a, "0.bin differs with the server stalled");
    let s = m.status();
    let s3 = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["location"] == "s3://failover")
        .unwrap()
        .clone();
    assert!(
        s3["hedges"].as_u64().unwrap() + s3["timeouts"].as_u64().unwrap() > 0,
        "the stalled member was never hedged or timed out: {s}"
    );
    // Stopped: connections are refused.
    weed.signal("-CONT");
    drop(weed);
    let out = bounded(&["cat", m.dir.join("1.bin").to_str().unwrap()]);
    assert!(out.status.success());
    assert!(out.stdout == *b, "1.bin differs with the server gone");
    // Either a read tried the server and failed over, or the member was still marked down
    // from the stall (its back-off not yet over) and reads went to the local replica first.
    let s = m.status();
    let s3_down = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["location"] == "s3://failover" && m["state"] == "down");
    assert!(
        s["replica_failovers"].as_u64().unwrap() > 0 || s3_down,
        "{s}"
    );
    assert_eq!(s["errors"], 0, "{s}");
}

#[test]
fn a_stalled_bucket_only_store_gives_eio_in_time_and_the_mount_answers() {
    let (dir, weed) = server();
    let d = dir.path();
    let store = "s3://stall";
    let mut rng = Rng::new(4);
    let files = [rng.floats(2 << 20), rng.floats(2 << 20)];
    let a = &files[0];
    let m = pack_and_mount(
        d,
        store,
        &files,
        &["--chunk-size", "512KiB"],
        &["--member-timeout", "1s"],
    );
    let a_path = m.dir.join("0.bin");
    assert!(fs::read(&a_path).unwrap() == *a);
    weed.signal("-STOP");
    let out = bounded(&["cat", m.dir.join("1.bin").to_str().unwrap()]);
    assert_ne!(
        out.status.code(),
        Some(124),
        "the read hung with the server stalled"
    );
    assert!(
        !out.status.success(),
        "1.bin read with no reachable replica"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
    // The mount keeps answering: listings, status, and what it already holds.
    let ls = bounded(&["ls", "-l", m.dir.to_str().unwrap()]);
    assert!(ls.status.success() && String::from_utf8_lossy(&ls.stdout).contains("1.bin"));
    let s = m.status();
    assert!(s["errors"].as_u64().unwrap() > 0, "{s}");
    // Down, or past its first short back-off and "slow" (failing lately): never "up".
    let state = s["members"][0]["state"].as_str().unwrap();
    assert!(state == "down" || state == "slow", "{s}");
    assert!(s["members"][0]["failures"].as_u64().unwrap() > 0, "{s}");
    // The log names the member by where it is.
    let log = fs::read_to_string(s["log"].as_str().unwrap()).unwrap();
    assert!(
        log.contains(&format!("member {store} (id ")) && log.contains("marked down"),
        "{log}"
    );
    // What it already read is exact if it is still held (other tests drop the page cache, so
    // it may not be), and EIO otherwise: never a hang, never other bytes.
    let out = bounded(&["cat", a_path.to_str().unwrap()]);
    assert_ne!(
        out.status.code(),
        Some(124),
        "a read hung with the server stalled"
    );
    assert!(!out.status.success() || out.stdout == *a, "0.bin differs");
    weed.signal("-CONT");
}

#[test]
fn bad_credentials_and_missing_buckets_are_one_line_errors() {
    let (dir, _weed) = server();
    let src = dir.path().join("m.bin");
    fs::write(&src, Rng::new(5).bytes(100_000)).unwrap();
    let s = src.to_str().unwrap();
    // No bucket, no --init: nothing is created.
    fails(&["pack", s, "--store", "s3://nobucket"], "s3://nobucket");
    fails(&["ls", "--store", "s3://nobucket"], "does not exist");
    fails(&["pack", s, "--store", "s3://nobucket"], "--init");
    ok(&["pack", s, "--store", "s3://creds", "--init"]);
    // SAFETY: this test starts no threads of its own.
    unsafe { std::env::set_var("AWS_SECRET_ACCESS_KEY", "wrong") };
    fails(&["ls", "--store", "s3://creds"], "s3://creds");
    fails(
        &["pack", s, "--store", "s3://creds"],
        "SignatureDoesNotMatch",
    );
    fails(&["pack", s, "--store", "s3://Bad_Name"], "bucket name");
}

#[test]
fn sigkill_during_a_pack_to_a_bucket_keeps_the_old_version() {
    use shardfs::codec::{ChunkHeader, HEADER_LEN};
    let (dir, _weed) = server();
    let store = "s3://killed";
    let mut rng = Rng::new(6);
    let v1 = rng.floats(8 << 20);
    let src = dir.path().join("model.bin");
    fs::write(&src, &v1).unwrap();
    let pack_args = [
        "pack",
        src.to_str().unwrap(),
        "--store",
        store,
        "--chunk-size",
        "256KiB",
    ];
    let mut first = pack_args.to_vec();
    first.push("--init");
    ok(&first);
    let m = shardfs::member::open(std::path::Path::new(store), &Default::default()).unwrap();
    let v1_chunks = m.list_chunks().unwrap().len();
    let v2 = rng.floats(8 << 20);
    fs::write(&src, &v2).unwrap();
    let mut killed_midway = 0;
    for attempt in 0..4 {
        let target = v1_chunks + 2 + attempt * 8;
        killed_midway += usize::from(common::sync::kill_when(&pack_args, &|| {
            m.list_chunks().unwrap().len() >= target
        }));
        let now = common::sync::one_version_or_the_other(store, "model", (&v1, &v2), attempt);
        // No object is half there: every chunk object holds a whole image.
        for e in m.list_chunks().unwrap() {
            let head = m.chunk_head(&e.hash).unwrap().unwrap();
            let header = ChunkHeader::parse(&head.header).unwrap();
            assert_eq!(head.size, HEADER_LEN as u64 + header.payload_len);
        }
        if now == v2 {
            break;
        }
    }
    assert!(killed_midway >= 1, "no kill landed during a pack");
    ok(&pack_args);
    assert_eq!(export(store, "model", None), v2);
}

#[test]
fn link_faults_fail_over_to_the_local_replica() {
    use common::weed::Shaper;
    let (dir, weed) = server();
    let proxy = Shaper::start(weed.port, &["--rate", "1gbit", "--latency", "1ms"]);
    // SAFETY: this test has started no threads of its own yet.
    unsafe { std::env::set_var("AWS_ENDPOINT_URL", proxy.endpoint()) };
    let d = dir.path();
    let store = format!("s3://linkfaults,{}", d.join("local").display());
    let mut rng = Rng::new(8);
    let files: Vec<Vec<u8>> = (0..4).map(|_| rng.floats(6 << 20)).collect();
    let mount_args = ["--cache-size", "4MiB", "--member-timeout", "2s"];
    let m = pack_and_mount(d, &store, &files, BOTH, &mount_args);
    // One file per fault mode; each must read exact.
    for (i, mode) in ["reset", "refuse", "slow", "stall"].iter().enumerate() {
        proxy.set(mode);
        let out = bounded(&["cat", m.dir.join(format!("{i}.bin")).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == files[i],
            "{i}.bin differs with the link in mode {mode}"
        );
        proxy.set("normal");
    }
    let s = m.status();
    assert_eq!(s["errors"], 0, "{s}");
    let s3 = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["location"] == "s3://linkfaults")
        .unwrap()
        .clone();
    assert!(s3["failures"].as_u64().unwrap() > 0, "{s}");
}

/// `~/.aws` under `home` with a default profile for the server at `one` and profile `two`
/// for the server at `two`, each with that server's keys.
fn write_two_profiles(home: &Path, one: &str, two: &str) {
    fs::create_dir_all(home.join(".aws")).unwrap();
    fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_access_key_id = key-one\naws_secret_access_key = secret-one\n\n\
         [two]\naws_access_key_id = key-two\naws_secret_access_key = secret-two\n",
    )
    .unwrap();
    fs::write(
        home.join(".aws/config"),
        format!(
            "[default]\nregion = us-east-1\nendpoint_url = {}\n\n\
             [profile two]\nregion = us-east-1\nendpoint_url = {}\n",
            one, two
        ),
    )
    .unwrap();
}

#[test]
fn profiles_and_per_member_endpoints_need_no_aws_variables() {
    use common::weed::{Weed, wait_usable_at};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two providers, each taking only its own keys.
    let one = Weed::start_with_keys(&d.join("one"), "key-one", "secret-one");
    let two = Weed::start_with_keys(&d.join("two"), "key-two", "secret-two");
    let home = d.join("home");
    write_two_profiles(&home, &one.endpoint(), &two.endpoint());
    // SAFETY: this test has started no threads of its own yet.
    unsafe {
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                std::env::remove_var(k);
            }
        }
        std::env::set_var("HOME", &home);
    }
    wait_usable_at("s3://readiness?allow_http=true");
    wait_usable_at("s3://readiness?profile=two&allow_http=true");

    // One member through the default profile, the other through profile `two`.
    let store = "s3://models/a?allow_http=true,s3://models/b?profile=two&allow_http=true";
    let data = Rng::new(9).floats(2 << 20);
    let src = d.join("m.bin");
    fs::write(&src, &data).unwrap();
    pack(
        &src,
        store,
        &["--replicas", "2", "--chunk-size", "256KiB", "--init"],
    );
    assert_eq!(export(store, "m", None), data);
    let report: serde_json::Value =
        serde_json::from_slice(&ok(&["verify", "--store", store, "--json"]).stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    // Each provider holds a whole copy.
    let opts = shardfs::member::Options::default();
    for spec in store.split(',') {
        let m = shardfs::member::open(Path::new(spec), &opts).unwrap();
        assert_eq!(m.list_chunks().unwrap().len(), 8, "{spec}");
    }
    // The member list keeps each member's own settings, for the next host.
    let listed = String::from_utf8(ok(&["member", "list", "--store", store]).stdout).unwrap();
    assert!(
        listed.contains("s3://models/b?profile=two&allow_http=true"),
        "{listed}"
    );
    // An endpoint in the spec, with the profile's keys.
    let direct = format!(
        "s3://models/b?profile=two&endpoint={}&allow_http=true",
        two.endpoint()
    );
    assert_eq!(export(&direct, "m", None), data);

    // What is missing is named in one line.
    fails(
        &[
            "ls",
            "--store",
            "s3://models/a?profile=gone&allow_http=true",
        ],
        "profile 'gone' is not in",
    );
    fails(
        &["ls", "--store", "s3://models/a"],
        "needs AWS_ALLOW_HTTP=true",
    );
    fs::remove_file(home.join(".aws/credentials")).unwrap();
    fails(
        &["ls", "--store", "s3://models/a?allow_http=true"],
        "no credentials found",
    );
    let stopped = format!(
        "s3://models/a?endpoint=http://127.0.0.1:{}&allow_http=true&credentials=none",
        common::free_port()
    );
    fails(&["ls", "--store", &stopped], "cannot connect to 127.0.0.1:");
}
