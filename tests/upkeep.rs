//! Keeping a store tidy, as an operator meets it: what gc keeps and why, `df` and the estimate
//! of what gc would return, and the members' pack lock held by another command (`--wait`).

mod common;

use common::*;
use std::fs;
use std::process::Stdio;

#[test]
fn gc_counts_the_damaged_files_it_keeps_for_being_young() {
    let Packed {
        dir: _dir,
        paths,
        store,
        ..
    } = packed(2, 109, 300_000, &["--replicas", "2"]);
    // A replica gone bad; repair sets it aside under damaged/ and writes a good one.
    let chunk = chunk_files(&paths[0]).remove(0);
    fs::write(&chunk, b"not what was stored").unwrap();
    ok(&["repair", "--store", &store]);
    let gc = |age: &str| -> serde_json::Value {
        serde_json::from_slice(&ok(&["gc", "--store", &store, "--min-age", age, "--json"]).stdout)
            .unwrap()
    };
    let young = gc("1h");
    assert_eq!(young["stale_files_deleted"], 0, "{young}");
    assert!(young["kept_young"].as_u64().unwrap() >= 1, "{young}");
    let all = gc("0");
    assert!(all["stale_files_deleted"].as_u64().unwrap() >= 1, "{all}");
    assert_eq!(export(&store, "m", None).len(), 300_000);
}

#[test]
fn a_held_pack_lock_fails_at_once_or_is_waited_for_with_wait() {
    use std::io::{BufRead, BufReader};
    let Packed {
        dir: _dir,
        paths,
        store,
        ..
    } = packed(2, 3, 300_000, &["--replicas", "2"]);
    // Another command's lock on the second member, as a pack holds it.
    let held = fs::File::open(paths[1].join("lock")).unwrap();
    held.lock().unwrap();
    let err = fails(&["gc", "--store", &store], "--wait waits for it");
    assert!(err.status.code() != Some(0));
    fails(
        &["rm", "--name", "m", "--store", &store, "--wait=200ms"],
        "waited 200ms; --wait=DURATION waits longer",
    );
    // The refused rm removed nothing.
    assert!(paths.iter().all(|p| p.join("manifests/m.json").is_file()));
    // With --wait the command says it waits, and goes on once the lock is let go.
    let mut gc = command()
        .args(["gc", "--store", &store, "--wait=90s", "--min-age", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(gc.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.contains("waiting for") && line.contains("(up to 90s)"),
        "{line}"
    );
    drop(held);
    let status = gc.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
}

#[test]
fn df_counts_what_each_member_holds_and_what_gc_would_return() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = members(d, 2);
    let store = store_arg(&paths);
    let opts = ["--replicas", "2", "--chunk-size", "256KiB"];
    pack_bytes(d, &store, "keep", &Rng::new(5).bytes(1 << 20), &opts);
    pack_bytes(d, &store, "gone", &Rng::new(6).bytes(600_000), &opts);
    ok(&["rm", "--name", "gone", "--store", &store]);
    let df = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["df", "--store", &store, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_slice(&ok(&args).stdout).unwrap()
    };
    let usage = df(&["--min-age", "0"]);
    for (m, path) in usage["members"].as_array().unwrap().iter().zip(&paths) {
        let files = chunk_files(path);
        let bytes: u64 = files.iter().map(|f| fs::metadata(f).unwrap().len()).sum();
        assert_eq!(m["chunk_files"], files.len() as u64, "{m}");
        assert_eq!(m["chunk_bytes"], bytes, "{m}");
        assert_eq!(m["manifests"], 1, "{m}");
        assert!(m["free_bytes"].as_u64().unwrap() > 0, "{m}");
    }
    // A dry run of gc lists each chunk file it would delete.
    let listed =
        String::from_utf8(ok(&["gc", "--store", &store, "--min-age", "0", "--dry-run"]).stdout)
            .unwrap();
    let lines = listed
        .lines()
        .filter(|l| l.starts_with("would delete "))
        .count() as u64;
    // The estimate is what gc then does.
    let estimate = &usage["gc"];
    assert_eq!(
        lines - 1,
        estimate["chunk_files_deleted"].as_u64().unwrap(),
        "{listed}"
    );
    assert!(
        estimate["chunk_files_deleted"].as_u64().unwrap() >= 2 * 3,
        "{estimate}"
    );
    let gc: serde_json::Value =
        serde_json::from_slice(&ok(&["gc", "--store", &store, "--min-age", "0", "--json"]).stdout)
            .unwrap();
    assert_eq!(gc["bytes_returned"], estimate["bytes_returned"], "{gc}");
    assert_eq!(gc["chunk_files_deleted"], estimate["chunk_files_deleted"]);
    assert_eq!(df(&["--min-age", "0"])["gc"]["bytes_returned"], 0);
    // With the default minimum age, young files are counted as kept, not returned.
    pack_bytes(d, &store, "gone", &Rng::new(7).bytes(600_000), &opts);
    ok(&["rm", "--name", "gone", "--store", &store]);
    let young = df(&[]);
    assert_eq!(young["gc"]["bytes_returned"], 0, "{young}");
    assert!(young["gc"]["kept_young"].as_u64().unwrap() >= 6, "{young}");
    // Part of the store: the holdings are shown, and why gc cannot be estimated.
    let part =
        String::from_utf8(ok(&["df", "--store", paths[0].to_str().unwrap()]).stdout).unwrap();
    assert!(
        part.contains("gc: cannot tell") && part.contains("was not given"),
        "{part}"
    );
}
