//! The local decompressed tier: copies made from verified chunks, opens served by FUSE
//! passthrough (the daemon sees no reads) or, without the privilege, by the daemon from the copy;
//! an inode never open both ways; a copy damaged on disk never served; the size bound; a daemon
//! killed mid-copy. Real mounts, bytes compared.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Setup {
    _dir: tempfile::TempDir,
    d: PathBuf,
    store: String,
    tier: PathBuf,
}

/// A store holding model "m" with `files` (name, bytes), 1 MiB chunks.
fn setup(files: &[(&str, &[u8])]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let store = store_arg(&members(&d, 2));
    let src = d.join("m");
    fs::create_dir_all(&src).unwrap();
    for (name, bytes) in files {
        fs::write(src.join(name), bytes).unwrap();
    }
    pack(&src, &store, &["--replicas", "2", "--chunk-size", "1MiB"]);
    let tier = d.join("tier");
    Setup {
        _dir: dir,
        d,
        store,
        tier,
    }
}

impl Setup {
    fn mount(&self, extra: &[&str]) -> Mounted {
        let tier = self.tier.to_str().unwrap();
        let mut args = vec!["--name", "m", "--cache-size", "2MiB", "--local-cache", tier];
        args.extend_from_slice(extra);
        Mounted::new(
            &self.store,
            &self.d.join("mnt"),
            &self.d.join("state"),
            &args,
        )
    }
}

/// Polls `status` until `done` holds of it, for at most 30 s.
fn wait_status(
    m: &Mounted,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = m.status();
        if done(&s) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what}: {s}");
        std::thread::yield_now();
    }
}

fn copies(s: &serde_json::Value) -> u64 {
    s["tier"]["copies"].as_u64().unwrap()
}

fn settled(s: &serde_json::Value) -> bool {
    s["tier"]["filling"] == 0
}

/// Waits until the one copy is made and every handle of the reads before is known closed (else
/// the next open may not be a passthrough one).
fn copied_and_closed(m: &Mounted) {
    wait_status(m, "the copy and the closes", |st| {
        copies(st) == 1 && settled(st) && modes(st).is_empty()
    });
}

fn modes(s: &serde_json::Value) -> Vec<String> {
    s["open_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["mode"].as_str().unwrap().to_string())
        .collect()
}

fn read_all(f: &fs::File) -> Vec<u8> {
    let mut buf = vec![0u8; f.metadata().unwrap().len() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// The tier's files but its lock.
fn tier_files(tier: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(tier)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != ".lock")
        .collect();
    v.sort();
    v
}

fn hex(data: &[u8]) -> String {
    shardfs::codec::Hash32::of(data).to_hex()
}

#[test]
fn passthrough_opens_read_every_byte_and_the_daemon_sees_no_reads() {
    let data = Rng::new(41).floats(6 << 20);
    let s = setup(&[("w.bin", &data)]);
    let m = s.mount(&[]);
    let file = m.dir.join("w.bin");
    assert!(fs::read(&file).unwrap() == data);
    copied_and_closed(&m);
    assert_eq!(tier_files(&s.tier), vec![hex(&data)]);
    assert!(fs::read(s.tier.join(hex(&data))).unwrap() == data);
    drop_page_cache(&file);
    drop_page_cache(&s.tier.join(hex(&data)));
    // Dropping the page cache opened the file too; the kernel tells the daemon of that close
    // after close(2) returns, so the next open could find that handle still listed.
    wait_status(&m, "the fadvise handle's close", |st| modes(st).is_empty());

    let reads = m.status()["reads"].as_u64().unwrap();
    let f = fs::File::open(&file).unwrap();
    assert_eq!(modes(&m.status()), vec!["passthrough"]);
    assert!(read_all(&f) == data, "read by passthrough");
    let map = Map::new(&f);
    assert!(map.bytes() == data, "mmap by passthrough");
    drop(map);
    let st = m.status();
    assert_eq!(
        st["reads"].as_u64().unwrap(),
        reads,
        "the daemon saw reads: {st}"
    );
    assert!(st["tier"]["hits"].as_u64().unwrap() >= 1);
    drop(f);
    assert_eq!(m.status()["errors"], 0);
}

#[test]
fn a_normal_open_while_the_copy_completes_keeps_working_and_later_opens_use_passthrough() {
    let data = Rng::new(42).floats(5 << 20);
    let s = setup(&[("w.bin", &data)]);
    let m = s.mount(&[]);
    let file = m.dir.join("w.bin");
    let a = fs::File::open(&file).unwrap();
    assert_eq!(modes(&m.status()), vec!["chunks"]);
    assert!(read_all(&a) == data);
    wait_status(&m, "the copy", |st| copies(st) == 1 && settled(st));
    // A is a normal open: B may not be a passthrough one beside it; it reads the copy.
    let b = fs::File::open(&file).unwrap();
    let mut both = modes(&m.status());
    both.sort();
    assert_eq!(both, vec!["chunks", "local copy"]);
    drop_page_cache(&file);
    assert!(read_all(&b) == data);
    drop_page_cache(&file);
    assert!(read_all(&a) == data);
    drop((a, b));
    // The kernel tells the daemon of a close after close(2) returns: wait until it knows.
    wait_status(&m, "the closes", |st| modes(st).is_empty());
    let c = fs::File::open(&file).unwrap();
    assert_eq!(modes(&m.status()), vec!["passthrough"]);
    drop_page_cache(&file);
    assert!(read_all(&c) == data);
    drop(c);
    assert_eq!(m.status()["errors"], 0);
}

#[test]
fn a_direct_open_never_starts_passthrough_so_any_buffer_reads_and_beside_one_it_joins() {
    let data = Rng::new(44).floats(3 << 20);
    let s = setup(&[("w.bin", &data)]);
    let m = s.mount(&[]);
    let file = m.dir.join("w.bin");
    assert!(fs::read(&file).unwrap() == data);
    copied_and_closed(&m);
    let direct = || {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&file)
            .unwrap()
    };
    // The copy is complete and nothing else is open: a direct open is still read by the daemon
    // (by passthrough its reads would go to the copy's disk, and an unaligned buffer fail with
    // EINVAL there).
    let f = direct();
    assert_eq!(modes(&m.status()), vec!["local copy"]);
    let mut space = vec![0u8; data.len() + 1];
    f.read_exact_at(&mut space[1..], 0).unwrap();
    assert!(space[1..] == data, "an unaligned direct read");
    drop(f);
    wait_status(&m, "the direct open's close", |st| modes(st).is_empty());
    // A normal open goes by passthrough; a direct one beside it joins (a normal one would fail
    // in the kernel) and reads exact with an aligned buffer, as from a local file.
    let p = fs::File::open(&file).unwrap();
    let f = direct();
    assert_eq!(modes(&m.status()), vec!["passthrough", "passthrough"]);
    drop_page_cache(&file);
    assert!(common::sync::read_direct(&file).unwrap() == data);
    assert!(read_all(&p) == data);
    drop((f, p));
    assert_eq!(m.status()["errors"], 0);
}

#[test]
fn without_cap_sys_admin_in_the_initial_namespace_copies_are_read_by_the_daemon() {
    let data = Rng::new(43).floats(4 << 20);
    let s = setup(&[("w.bin", &data)]);
    let src = s.d.join("m").join("w.bin");
    // Everything inside a user namespace: root there, without CAP_SYS_ADMIN of the initial one,
    // which passthrough needs.
    let script = format!(
        r#"set -e
export SHARDFS_STATE_DIR={state}
B={bin}
$B mount --store {store} {mnt} --name m --cache-size 2MiB --local-cache {tier} -q
cmp {mnt}/w.bin {src}
i=0
# The copy made, and cmp's handle known closed.
ready() {{ s=$($B status {mnt} --json); echo "$s" | grep -q '"copies": 1' && echo "$s" | grep -q '"open_files": \[\]'; }}
until ready; do i=$((i+1)); [ $i -lt 3000 ] || exit 9; done
exec 5<{mnt}/w.bin
$B status {mnt} --json > {out}
cmp /dev/fd/5 {src}
exec 5<&-
$B unmount {mnt}
"#,
        state = s.d.join("state").display(),
        bin = bin(),
        store = s.store,
        mnt = s.d.join("mnt").display(),
        tier = s.tier.display(),
        src = src.display(),
        out = s.d.join("status.json").display(),
    );
    fs::create_dir_all(s.d.join("mnt")).unwrap();
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .envs(test_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(s.d.join("status.json")).unwrap()).unwrap();
    assert_eq!(modes(&st), vec!["local copy"], "{st}");
    assert_eq!(st["errors"], 0);
    let log = fs::read_to_string(st["log"].as_str().unwrap()).unwrap_or_default();
    assert!(log.contains("passthrough is not available"), "{log}");
}

#[test]
fn a_copy_damaged_on_disk_is_never_served() {
    let data = Rng::new(44).floats(4 << 20);
    let s = setup(&[("w.bin", &data)]);
    let m = s.mount(&[]);
    assert!(fs::read(m.dir.join("w.bin")).unwrap() == data);
    wait_status(&m, "the copy", |st| copies(st) == 1 && settled(st));
    assert!(m.unmount().status.success());
    // One byte flipped in the copy, its mtime put back: only a hash can tell.
    let copy = s.tier.join(hex(&data));
    let mtime = fs::metadata(&copy).unwrap().modified().unwrap();
    let f = fs::OpenOptions::new().write(true).open(&copy).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 12345).unwrap_or(());
    f.write_all_at(&[data[12345] ^ 0x40], 12345).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let m = s.mount(&[]);
    let file = m.dir.join("w.bin");
    // Whenever it is opened, before or after the check, the bytes are right.
    let early = fs::read(&file).unwrap();
    assert!(early == data);
    let st = wait_status(&m, "the damaged copy deleted", |st| {
        st["tier"]["damaged"] == 1
    });
    assert_eq!(st["errors"], 0);
    drop_page_cache(&file);
    assert!(fs::read(&file).unwrap() == data);
    // A good copy is made again.
    wait_status(&m, "a new copy", |st| copies(st) == 1 && settled(st));
    assert!(fs::read(&copy).unwrap() == data);
}

#[test]
fn the_tier_stays_within_its_size() {
    let (a, b, big) = (
        Rng::new(45).floats(6 << 20),
        Rng::new(46).floats(6 << 20),
        Rng::new(47).floats(12 << 20),
    );
    let s = setup(&[("a.bin", &a), ("b.bin", &b), ("big.bin", &big)]);
    let m = s.mount(&["--local-cache-size", "10MiB"]);
    let on_disk = |tier: &Path| -> u64 {
        fs::read_dir(tier)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    assert!(fs::read(m.dir.join("a.bin")).unwrap() == a);
    wait_status(&m, "a's copy", |st| copies(st) == 1 && settled(st));
    assert!(on_disk(&s.tier) <= 10 << 20);
    // b takes a's place.
    assert!(fs::read(m.dir.join("b.bin")).unwrap() == b);
    let st = wait_status(&m, "b's copy", |st| {
        st["tier"]["evicted"] == 1 && settled(st)
    });
    assert_eq!(copies(&st), 1);
    assert_eq!(tier_files(&s.tier), vec![hex(&b)]);
    assert!(st["tier"]["used"].as_u64().unwrap() <= 10 << 20);
    // A file larger than the tier is not copied, and reads as ever.
    assert!(fs::read(m.dir.join("big.bin")).unwrap() == big);
    let st = m.status();
    assert!(on_disk(&s.tier) <= 10 << 20, "{st}");
    assert_eq!(tier_files(&s.tier), vec![hex(&b)]);
    // a again: read from its chunks, copied anew.
    drop_page_cache(&m.dir.join("a.bin"));
    assert!(fs::read(m.dir.join("a.bin")).unwrap() == a);
    wait_status(&m, "a's copy again", |st| {
        st["tier"]["evicted"] == 2 && copies(st) == 1 && settled(st)
    });
    assert!(on_disk(&s.tier) <= 10 << 20);
}

#[test]
fn a_daemon_killed_mid_copy_leaves_nothing_used_unchecked() {
    let data = Rng::new(48).floats(8 << 20);
    let s = setup(&[("w.bin", &data)]);
    let m = s.mount(&[]);
    // Direct reads: the kernel's read-ahead would otherwise ask for the rest of the file.
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(m.dir.join("w.bin"))
        .unwrap();
    let mut half = vec![0u8; 3 << 20];
    f.read_exact_at(&mut half, 0).unwrap();
    assert!(half == data[..3 << 20]);
    wait_status(&m, "a copy under way", |st| st["tier"]["filling"] == 1);
    drop(f);
    kill_and_wait(m.pid(), "-9");
    assert!(
        tier_files(&s.tier).iter().any(|n| n.ends_with(".part")),
        "{:?}",
        tier_files(&s.tier)
    );
    let _ = m.unmount();
    let m = s.mount(&[]);
    // The part is gone at start; nothing is served from the tier until a copy is checked.
    assert!(tier_files(&s.tier).is_empty(), "{:?}", tier_files(&s.tier));
    assert_eq!(copies(&m.status()), 0);
    assert!(fs::read(m.dir.join("w.bin")).unwrap() == data);
    wait_status(&m, "a new copy", |st| copies(st) == 1 && settled(st));
    assert!(fs::read(s.tier.join(hex(&data))).unwrap() == data);
}

#[test]
fn warm_local_returns_with_the_copies_complete_and_says_when_there_is_no_tier() {
    let a = Rng::new(61).bytes(3 << 20);
    let b = Rng::new(62).bytes(2 << 20);
    let s = setup(&[("a.bin", &a), ("b.bin", &b)]);
    let m = s.mount(&[]);
    let mnt = m.dir.to_str().unwrap().to_string();
    let state = s.d.join("state");
    let out = run_in(&state, &["warm", "--local", &mnt]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("local tier: 2 copies complete"), "{text}");
    // Complete when warm returns: nothing still being made, both copies there.
    let st = m.status();
    assert!(settled(&st) && copies(&st) == 2, "{st}");
    assert!(m.unmount().status.success());

    // A mount without a tier: --local says so and reads nothing.
    let plain = Mounted::new(
        &s.store,
        &s.d.join("mnt"),
        &state,
        &["--name", "m", "--no-local-cache"],
    );
    let one_error = |path: &str, needle: &str| {
        let out = run_in(&state, &["warm", "--local", path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.lines().count() == 1, "{err}");
        assert!(err.contains(needle), "{err}");
    };
    one_error(&mnt, "has no local tier");
    one_error(s.d.to_str().unwrap(), "is on no shardfs mount");
    assert!(plain.unmount().status.success());
}

#[test]
fn warm_goes_on_past_a_file_that_fails_and_names_it() {
    let a = Rng::new(63).bytes(3 << 20);
    let b = Rng::new(64).bytes(2 << 20);
    let s = setup(&[("a.bin", &a), ("b.bin", &b)]);
    // Every replica of one chunk of b.bin is gone: reading it is EIO.
    let manifest = manifest_json(&members(&s.d, 2)[0], "m");
    let file = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "b.bin")
        .unwrap();
    let hash = file["chunks"][1]["hash"].as_str().unwrap().to_string();
    for member in members(&s.d, 2) {
        for f in chunk_files(&member) {
            if f.file_name().unwrap().to_string_lossy() == hash {
                fs::remove_file(f).unwrap();
            }
        }
    }
    let m = Mounted::new(
        &s.store,
        &s.d.join("mnt"),
        &s.d.join("state"),
        &["--name", "m"],
    );
    let out = run(&["warm", m.dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("1 file, 3.00 MiB") && stdout.contains("1 file could not be read"),
        "{stdout}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert!(errors.len() == 1 && errors[0].contains("b.bin"), "{stderr}");
    assert!(m.unmount().status.success());
}

#[test]
fn a_remount_with_a_smaller_tier_trims_it_to_the_new_size() {
    let (a, b) = (Rng::new(48).floats(6 << 20), Rng::new(49).floats(6 << 20));
    let s = setup(&[("a.bin", &a), ("b.bin", &b)]);
    let state = s.d.join("state");
    let m = s.mount(&["--local-cache-size", "20MiB"]);
    let mnt = m.dir.to_str().unwrap().to_string();
    for f in ["a.bin", "b.bin"] {
        let path = format!("{mnt}/{f}");
        assert!(run_in(&state, &["warm", "--local", &path]).status.success());
    }
    assert_eq!(copies(&m.status()), 2);
    assert!(m.unmount().status.success());
    // The same tier under a limit that holds one copy: the older copy goes at mount.
    let m = s.mount(&["--local-cache-size", "8MiB"]);
    let st = m.status();
    assert!(st["tier"]["used"].as_u64().unwrap() <= 8 << 20, "{st}");
    assert_eq!(
        (copies(&st), st["tier"]["evicted"].as_u64()),
        (1, Some(1)),
        "{st}"
    );
    assert_eq!(tier_files(&s.tier), vec![hex(&b)]);
    assert!(fs::read(m.dir.join("a.bin")).unwrap() == a);
    assert!(fs::read(m.dir.join("b.bin")).unwrap() == b);
}

/// Mounts `s`'s model at `mnt` with no tier flag but `extra`, the default tiers going under
/// `cache` (`XDG_CACHE_HOME`); returns the mount, or the failed command's stderr.
fn mount_default(s: &Setup, mnt: &str, cache: &Path, extra: &[&str]) -> Result<Mounted, String> {
    let dir = s.d.join(mnt);
    fs::create_dir_all(&dir).unwrap();
    let state = s.d.join("state");
    let out = command()
        .env("SHARDFS_STATE_DIR", &state)
        .env("XDG_CACHE_HOME", cache)
        .args(["mount", "--store", &s.store, dir.to_str().unwrap()])
        .args(["--name", "m", "--cache-size", "2MiB"])
        .args(extra)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(Mounted {
        dir,
        state_dir: state,
    })
}

#[test]
fn a_default_mount_has_a_tier_of_its_own_that_no_other_mount_shares() {
    let data = Rng::new(48).floats(3 << 20);
    let s = setup(&[("w.bin", &data)]);
    let cache = s.d.join("cache");
    let m = mount_default(&s, "mnt", &cache, &[]).unwrap();
    let st = m.status();
    assert_eq!(st["options"]["local_cache_default"], true, "{st}");
    let canonical = fs::canonicalize(&m.dir).unwrap();
    let want = cache
        .join("shardfs/tier")
        .join(shardfs::tier::place::folder_name(&canonical));
    assert_eq!(st["tier"]["dir"], want.to_str().unwrap(), "{st}");
    // The first read makes the copy; the next open is served from it, exact.
    assert!(fs::read(m.dir.join("w.bin")).unwrap() == data);
    wait_status(&m, "the copy", |st| copies(st) == 1 && settled(st));
    assert!(fs::read(want.join(hex(&data))).unwrap() == data);
    // Once the copy can serve it and the first open is closed, the file's page cache through
    // the mount is emptied (not left to the next open to do).
    wait_status(&m, "the page cache emptied", |st| {
        st["tier"]["page_caches_dropped"] == 1
    });
    let f = fs::File::open(m.dir.join("w.bin")).unwrap();
    let st = m.status();
    assert_eq!(modes(&st), ["passthrough"], "{st}");
    assert!(read_all(&f) == data);
    drop(f);

    // Another mount asking for that folder is refused while this one holds it.
    let err = mount_default(
        &s,
        "other",
        &cache,
        &["--local-cache", want.to_str().unwrap()],
    )
    .err()
    .expect("a second mount on a held tier folder fails");
    assert!(err.contains("in use by another mount"), "{err}");
    // --no-local-cache: none.
    let none = mount_default(&s, "none", &cache, &["--no-local-cache"]).unwrap();
    let st = none.status();
    assert!(
        st["tier"].is_null() && st["options"]["local_cache_default"] == false,
        "{st}"
    );
    assert!(fs::read(none.dir.join("w.bin")).unwrap() == data);
    assert!(none.unmount().status.success());
    assert!(m.unmount().status.success());

    // A default tier that cannot be made (its cache folder is a file): mounted without one.
    let blocked = s.d.join("not-a-folder");
    fs::write(&blocked, b"x").unwrap();
    let m = mount_default(&s, "mnt", &blocked, &[]).unwrap();
    let st = m.status();
    assert!(st["tier"].is_null(), "{st}");
    assert!(fs::read(m.dir.join("w.bin")).unwrap() == data);
    let log = fs::read_to_string(st["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("no local tier"), "{log}");
    assert!(m.unmount().status.success());
}
