//! The data-sync sequence an operator goes through, with a live mount whose 8 readers compare
//! every byte throughout: a lost disk replaced and repaired, corrupt replicas repaired, a re-pack
//! while a member is offline and repaired, a member added and rebalanced, one member's chunks
//! deleted and repair killed at several moments and run again, a member removed, another model
//! removed and collected. The readers must get no error and no wrong byte.

mod common;

use common::sync::{Fixture, fully_replicated, kill_after};
use common::*;
use std::fs;

/// The daemon's own account of any failed read (logs in `state`), for the test's output.
fn show_daemon_errors(state: &std::path::Path) {
    for log in fs::read_dir(state).unwrap().flatten() {
        if log.path().extension().is_some_and(|e| e == "log") {
            let text = fs::read_to_string(log.path()).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("error")).take(5) {
                eprintln!("{line}");
            }
        }
    }
}

fn flip_last_byte(path: &std::path::Path) {
    let mut bytes = fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

#[test]
fn readers_see_no_error_through_the_whole_sync_sequence() {
    let fx = Fixture::new(71, 8);
    let d = fx.dir.path();
    let other = Rng::new(72).floats(1 << 20);
    pack_bytes(
        d,
        &fx.store,
        "other",
        &other,
        &["--replicas", "2", "--chunk-size", "64KiB"],
    );
    let (mount, readers) = fx.mount_with_readers();
    let loc = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let mut members = fx.members.clone();

    // A disk is lost: a new place takes its id, repair fills it.
    let lost = members[2].clone();
    fs::remove_dir_all(&lost).unwrap();
    let fresh = d.join("fresh");
    let rest = store_arg(&members[..2]);
    let (old, new) = (loc(&lost), loc(&fresh));
    ok(&["member", "replace", "--store", &rest, &old, &new]);
    members[2] = fresh;
    let store = store_arg(&members);
    ok(&["repair", "--store", &store]);
    fully_replicated(&members, "m", 2);

    // Corrupt replicas: repair replaces them.
    for c in chunk_files(&members[0]).iter().take(5) {
        flip_last_byte(c);
    }
    ok(&["repair", "--store", &store]);

    // A re-pack of the same bytes while a member is offline, then repair.
    let src = d.join("src");
    let offline = store_arg(&members[..2]);
    let flags = ["--replicas", "2", "--chunk-size", "64KiB", "--name", "m"];
    pack(&src, &offline, &flags);
    ok(&["repair", "--store", &store]);

    // A member joins and takes its share.
    let added = d.join("added");
    ok(&["member", "add", "--store", &store, &loc(&added)]);
    members.push(added);
    let store = store_arg(&members);
    ok(&["rebalance", "--store", &store]);

    // One member loses every chunk; repair is killed part way, at several points, then runs
    // to the end.
    fs::remove_dir_all(members[1].join("chunks")).unwrap();
    let held = |m: &std::path::Path| chunk_files(m).len();
    for step in [1, 5, 20] {
        kill_after(&["repair", "--store", &store], &|| held(&members[1]), step);
    }
    ok(&["repair", "--store", &store]);
    fully_replicated(&members, "m", 2);

    // A member is drained and retired; another model is removed and collected.
    ok(&["member", "remove", "--store", &store, &loc(&members[3])]);
    let kept = store_arg(&members[..3]);
    ok(&["rm", "--store", &kept, "--name", "other"]);
    ok(&["gc", "--store", &kept, "--min-age", "1ms"]);

    show_daemon_errors(&fx.path("state"));
    readers.finish();
    fx.exact();
    assert!(mount.unmount().status.success());
}
