//! A member written by someone less trusted than the host: links, FIFOs, giant and junk files
//! planted in every place of a member. Every command must finish (under a `timeout`), touch
//! nothing outside the store, never panic, and serve the right bytes or none.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The places of a member an attacker may replace.
const DIRS: [&str; 5] = ["tmp", "damaged", "chunks", "manifests", "leases"];
const FILES: [&str; 3] = ["lock", "members.json", "shardfs-store.json"];

/// Runs shardfs under `timeout`: fails the test if it hangs or panics.
fn bounded(state: &Path, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .args(["-s", "KILL", "60", bin()])
        .args(args)
        .env("SHARDFS_STATE_DIR", state)
        .envs(test_env())
        .output()
        .expect("timeout runs");
    assert!(
        out.status.signal() != Some(9) && out.status.code() != Some(137),
        "shardfs {args:?} hung"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "shardfs {args:?} panicked: {stderr}"
    );
    out
}

/// Entries by relative path: mode, and bytes or link target.
type Snapshot = BTreeMap<String, (u32, Vec<u8>)>;

/// Every entry under `dir` (links not followed): kind, mode and bytes or link target.
fn snapshot(dir: &Path) -> Snapshot {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let body = if meta.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.insert(rel, (meta.mode(), body));
            if meta.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Writes `mf` as the copy of model `name` on `member`, with a correct checksum (as a forger
/// with write access to the member would).
/// Writes a manifest copy as a holder of the store's key would (signed): what these tests
/// plant is well-formed and signed, so that only the case under test is hostile.
fn write_manifest(member: &Path, name: &str, mf: &serde_json::Value) {
    let body = serde_json::to_string(mf).unwrap();
    let checksum = blake3::hash(body.as_bytes()).to_hex().to_string();
    let envelope = format!("{{\"checksum\":\"{checksum}\",\"manifest\":{body}}}\n");
    write_signed(
        member,
        &format!("manifests/{name}.json"),
        envelope.as_bytes(),
    );
}

/// A store of three members with two models (replicas 2), a second store, and a sentinel
/// folder, all under one temporary directory.
struct Scene {
    _dir: tempfile::TempDir,
    root: PathBuf,
    members: Vec<PathBuf>,
    store: String,
    data: Vec<u8>,
    other: PathBuf,
    sentinel: PathBuf,
    state: PathBuf,
}

impl Scene {
    fn new(seed: u64) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let members = members(&root, 3);
        let store = store_arg(&members);
        let mut rng = Rng::new(seed);
        let data = rng.bytes(2 << 20);
        let flags = ["--replicas", "2", "--chunk-size", "256K"];
        pack_bytes(&root, &store, "m", &data, &flags);
        pack_bytes(&root, &store, "extra", &rng.bytes(300 << 10), &flags);
        let other = root.join("other");
        pack_bytes(
            &root,
            other.to_str().unwrap(),
            "theirs",
            &rng.bytes(1 << 20),
            &[],
        );
        let sentinel = root.join("sentinel");
        fs::create_dir_all(sentinel.join("sub")).unwrap();
        fs::write(sentinel.join("victim"), b"must survive").unwrap();
        fs::write(sentinel.join("victim.json"), b"{}").unwrap();
        fs::write(sentinel.join("sub/deeper"), b"also").unwrap();
        // Old enough for gc's and the damaged folder's age checks.
        for f in ["victim", "victim.json", "sub/deeper"] {
            let f = fs::File::options()
                .write(true)
                .open(sentinel.join(f))
                .unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
                .unwrap();
        }
        let state = root.join("state");
        Scene {
            _dir: dir,
            root,
            members,
            store,
            data,
            other,
            sentinel,
            state,
        }
    }

    fn outside(&self) -> (Snapshot, Snapshot) {
        (snapshot(&self.sentinel), snapshot(&self.other))
    }

    /// Every command, each under a timeout; the mount is read whole and compared.
    fn run_every_command(&self) {
        let s = self.store.as_str();
        let st = &self.state;
        bounded(st, &["ls", "--store", s]);
        bounded(st, &["verify", "--store", s]);
        bounded(st, &["member", "list", "--store", s]);
        let mnt = self.root.join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let out = bounded(st, &["mount", "--store", s, mnt.to_str().unwrap()]);
        if out.status.success() {
            // Right bytes or an error, never wrong ones.
            if let Ok(got) = fs::read(mnt.join("m/m.bin")) {
                assert!(got == self.data, "the mount served wrong bytes");
            }
            bounded(st, &["unmount", mnt.to_str().unwrap()]);
        }
        bounded(st, &["gc", "--store", s, "--min-age", "1ms"]);
        bounded(st, &["repair", "--store", s]);
        bounded(st, &["rebalance", "--store", s]);
        let src = self.root.join("m.bin");
        bounded(
            st,
            &[
                "pack",
                src.to_str().unwrap(),
                "--store",
                s,
                "--replicas",
                "2",
            ],
        );
        bounded(st, &["rm", "--store", s, "--name", "extra"]);
        bounded(st, &["gc", "--store", s, "--min-age", "1ms"]);
        let last = self.members[2].to_str().unwrap();
        bounded(st, &["member", "remove", "--store", s, last]);
        let out = bounded(st, &["export", "--store", s, "--name", "m", "-o", "-"]);
        if out.status.success() {
            assert!(out.stdout == self.data, "export wrote wrong bytes");
        }
    }
}

#[test]
fn links_planted_in_a_member_are_never_followed_out_of_it() {
    for place in DIRS.iter().chain(FILES.iter()) {
        let scene = Scene::new(7);
        let at = scene.members[2].join(place);
        if at.is_dir() {
            fs::remove_dir_all(&at).unwrap();
        } else if at.exists() {
            fs::remove_file(&at).unwrap();
        }
        // `chunks` and `manifests` point at the other store's, other folders at the sentinel
        // (full of old files), a file at the sentinel's victim.
        let target = if ["chunks", "manifests"].contains(place) {
            scene.other.join(place)
        } else if DIRS.contains(place) {
            scene.sentinel.clone()
        } else if place.ends_with(".json") {
            scene.sentinel.join("victim.json")
        } else {
            scene.sentinel.join("victim")
        };
        symlink(&target, &at).unwrap();
        let before = scene.outside();
        scene.run_every_command();
        assert!(
            scene.outside() == before,
            "{place} as a link: something outside the store changed"
        );
        // The other store is whole.
        let out = run(&["verify", "--store", scene.other.to_str().unwrap()]);
        assert!(out.status.success(), "{place}: the other store was harmed");
    }
}

#[test]
fn fifos_planted_in_a_member_hang_nothing() {
    for place in FILES.iter().map(|f| f.to_string()).chain([
        "manifests/m.json".to_string(),
        "leases/x.json".to_string(),
        "chunk".to_string(),
    ]) {
        let scene = Scene::new(9);
        let at = if place == "chunk" {
            chunk_files(&scene.members[1])[0].clone()
        } else {
            scene.members[1].join(&place)
        };
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        let _ = fs::remove_file(&at);
        mkfifo(&at);
        scene.run_every_command();
        // Whatever was damaged was set aside or left: nothing blocked.
        let md = fs::symlink_metadata(&at);
        assert!(md.is_ok() || place != "lock", "{place}");
    }
}

/// The largest resident set of any child this test waited for, in KiB.
fn children_peak_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    ru.ru_maxrss
}

#[test]
fn giant_sparse_files_are_not_read() {
    let scene = Scene::new(11);
    for place in ["leases/giant.json", "members.json", "manifests/m.json"] {
        let at = scene.members[0].join(place);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        let f = fs::File::create(&at).unwrap();
        f.set_len(10 << 30).unwrap();
    }
    let s = scene.store.as_str();
    let st = &scene.state;
    let started = std::time::Instant::now();
    bounded(st, &["ls", "--store", s]);
    bounded(st, &["verify", "--store", s]);
    bounded(st, &["gc", "--store", s, "--min-age", "1ms"]);
    bounded(st, &["repair", "--store", s]);
    let peak = children_peak_kib();
    eprintln!(
        "giant files: ls, verify, gc, repair in {:.1} s, peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        peak / 1024
    );
    assert!(
        peak < 200 << 10,
        "a command read a giant file: peak RSS {peak} KiB"
    );
    // The model reads right from the other copies.
    assert_eq!(export(s, "m", None), scene.data);
}

#[test]
fn a_junk_manifest_harms_only_its_own_model() {
    let scene = Scene::new(13);
    let s = scene.store.as_str();
    fs::write(scene.members[1].join("manifests/junk.json"), b"{x").unwrap();
    let out = ok(&["ls", "--store", s]);
    let listed = stdout(&out);
    assert!(
        listed.contains("extra") && listed.lines().any(|l| l.starts_with("m ")),
        "{listed}"
    );
    assert!(
        listed.contains("junk") && listed.contains("unreadable"),
        "{listed}"
    );
    // verify names the junk copy and still checks the healthy models.
    let report = common::sync::verify(s);
    assert_eq!(report["models"], 2, "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert!(problems.iter().all(|p| p["model"] == "junk"), "{report}");
    // repair heals the rest and says the junk model cannot be repaired.
    let out = run(&["repair", "--store", s]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = scene.root.join("mnt");
    let m = Mounted::new(s, &mnt, &scene.state, &[]);
    assert_eq!(fs::read(mnt.join("m/m.bin")).unwrap(), scene.data);
    drop(m);
    // rm and gc delete nothing while a copy cannot be read: one line naming it, exit 1.
    let chunks_before: Vec<_> = scene.members.iter().map(|m| chunk_files(m)).collect();
    for args in [
        vec!["rm", "--store", s, "--name", "extra"],
        vec!["gc", "--store", s, "--min-age", "1ms"],
    ] {
        let out = fails(&args, "deleted nothing");
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("junk.json"));
    }
    let chunks_after: Vec<_> = scene.members.iter().map(|m| chunk_files(m)).collect();
    assert_eq!(chunks_before, chunks_after);
    fs::remove_file(scene.members[1].join("manifests/junk.json")).unwrap();
    ok(&["rm", "--store", s, "--name", "extra"]);
    ok(&["gc", "--store", s, "--min-age", "1ms"]);
    assert_eq!(export(s, "m", None), scene.data);
}

#[test]
fn gc_deletes_nothing_when_a_member_cannot_list() {
    let scene = Scene::new(17);
    let s = scene.store.as_str();
    ok(&["rm", "--store", s, "--name", "extra"]);
    let before: Vec<_> = scene.members.iter().map(|m| chunk_files(m)).collect();
    // A manifest folder that cannot be read, as a member whose listing fails.
    let manifests = scene.members[2].join("manifests");
    fs::rename(&manifests, scene.members[2].join("manifests.away")).unwrap();
    fs::write(&manifests, b"a file, not a folder").unwrap();
    let out = fails(&["gc", "--store", s, "--min-age", "1ms"], "deleted nothing");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        before,
        scene
            .members
            .iter()
            .map(|m| chunk_files(m))
            .collect::<Vec<_>>()
    );
    // A copy written by a newer shardfs keeps its chunks: it is not damaged.
    fs::remove_file(&manifests).unwrap();
    fs::rename(scene.members[2].join("manifests.away"), &manifests).unwrap();
    let copy = manifests.join("m.json");
    let mut mf = manifest_json(&scene.members[2], "m");
    mf["format_version"] = serde_json::json!(99);
    write_manifest(&scene.members[2], "m", &mf);
    for m in &scene.members[..2] {
        fs::copy(&copy, m.join("manifests/m.json")).unwrap();
    }
    let report = common::sync::verify(s);
    let text = report.to_string();
    assert!(text.contains("written by a newer shardfs"), "{report}");
    assert!(!text.contains("damaged"), "{report}");
    ok(&["gc", "--store", s, "--min-age", "1ms"]);
    // Every chunk the newer copy names is still on some member.
    let all: Vec<String> = scene
        .members
        .iter()
        .flat_map(|m| chunk_files(m))
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for f in mf["files"].as_array().unwrap() {
        for c in f["chunks"].as_array().unwrap() {
            assert!(all.contains(&c["hash"].as_str().unwrap().to_string()));
        }
    }
}

#[test]
fn a_version_at_its_maximum_is_refused_never_wrapped() {
    let scene = Scene::new(19);
    let s = scene.store.as_str();
    let mut mf = manifest_json(&scene.members[0], "m");
    mf["version"] = serde_json::json!(u64::MAX);
    for m in &scene.members {
        if m.join("manifests/m.json").exists() {
            write_manifest(m, "m", &mf);
        }
    }
    let before = snapshot(&scene.members[0].join("manifests"));
    // A new pack of the name would need version 2^64: refused.
    let src = scene.root.join("m.bin");
    fails(
        &[
            "pack",
            src.to_str().unwrap(),
            "--store",
            s,
            "--replicas",
            "2",
        ],
        "the largest there is",
    );
    // So would a change of the member list whose generation is at its maximum.
    for m in &scene.members {
        let at = m.join("members.json");
        let bytes = fs::read(&at).unwrap();
        let (body, _) = shardfs::trust::keys::split(&bytes).unwrap();
        let mut list: serde_json::Value = serde_json::from_slice(body).unwrap();
        list["generation"] = serde_json::json!(u64::MAX);
        write_signed(m, "members.json", &serde_json::to_vec(&list).unwrap());
    }
    let lists = |scene: &Scene| -> Vec<Vec<u8>> {
        scene
            .members
            .iter()
            .map(|m| fs::read(m.join("members.json")).unwrap())
            .collect()
    };
    let lists_before = lists(&scene);
    let first = scene.members[0].to_str().unwrap();
    fails(
        &["member", "set-weight", "--store", s, first, "3"],
        "the largest there is",
    );
    assert_eq!(lists_before, lists(&scene));
    assert_eq!(before, snapshot(&scene.members[0].join("manifests")));
    for m in &scene.members {
        if m.join("manifests/m.json").exists() {
            assert_eq!(
                manifest_json(m, "m")["version"],
                serde_json::json!(u64::MAX)
            );
        }
    }
    assert_eq!(export(s, "m", None), scene.data);
}

#[test]
fn names_with_control_characters_are_escaped_when_printed() {
    let dir = tempfile::tempdir().unwrap();
    let members = members(dir.path(), 2);
    let s = store_arg(&members);
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let name = "w\u{1b}[2J\u{1b}[31mred\nOK: 0 problems";
    fs::write(src.join(name), Rng::new(3).bytes(100 << 10)).unwrap();
    ok(&["pack", src.to_str().unwrap(), "--store", &s, "--name", "m"]);
    // Damaged replicas make verify name the file.
    for c in members.iter().flat_map(|m| chunk_files(m)) {
        let mut bytes = fs::read(&c).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&c, bytes).unwrap();
    }
    let out = run(&["verify", "--store", &s]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("w\\u{1b}[2J"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("OK")), "{text}");
    // The JSON report keeps the exact name (JSON escapes it).
    let report = common::sync::verify(&s);
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["file"] == name),
        "{report}"
    );
}

#[test]
fn pack_follows_links_only_inside_the_folder_or_its_hugging_face_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_arg(&members(dir.path(), 2));
    let secret = dir.path().join("secret");
    fs::write(&secret, b"root's secret").unwrap();
    // A Hugging Face cache repository: snapshot files link to ../../blobs/HASH.
    let repo = dir.path().join("hub/models--org--tiny");
    let snap = repo.join("snapshots/0123abcd");
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(repo.join("blobs")).unwrap();
    let weights = Rng::new(5).floats(50_000);
    fs::write(repo.join("blobs/feedbeef"), &weights).unwrap();
    symlink("../../blobs/feedbeef", snap.join("model.safetensors")).unwrap();
    fs::write(snap.join("config.json"), b"{}").unwrap();
    let pack_it = |extra: &[&str]| {
        let mut args = vec![
            "pack",
            snap.to_str().unwrap(),
            "--store",
            &s,
            "--name",
            "tiny",
        ];
        args.extend(extra);
        run(&args)
    };
    assert!(pack_it(&[]).status.success());
    assert_eq!(export(&s, "tiny", Some("model.safetensors")), weights);
    // A link out of the snapshot and its repository is refused, naming the link.
    symlink(&secret, snap.join("tokenizer.json")).unwrap();
    let before = manifest_json(&members(dir.path(), 2)[0], "tiny");
    let out = pack_it(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tokenizer.json")
            && err.contains("--follow-links")
            && err.lines().count() == 1,
        "{err}"
    );
    // Nothing was published.
    assert_eq!(before, manifest_json(&members(dir.path(), 2)[0], "tiny"));
    // A link to a folder that walks out (../..) is refused the same way.
    fs::remove_file(snap.join("tokenizer.json")).unwrap();
    symlink("../../../../secret", snap.join("up.txt")).unwrap();
    assert!(String::from_utf8_lossy(&pack_it(&[]).stderr).contains("outside the folder"));
    // With --follow-links the operator takes the link as it is.
    assert!(pack_it(&["--follow-links"]).status.success());
    assert_eq!(export(&s, "tiny", Some("up.txt")), b"root's secret");
}
