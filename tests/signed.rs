//! Signed stores: one member cannot change what the store serves. A forged manifest (valid
//! checksum, higher version, chunks of the forger's own) on one member is never served, never
//! spread by repair and never lets gc delete the real chunks; a forged member list or a store
//! file naming another key is ignored and named by verify; a re-signed store (key rotation) still
//! reaches live mounts; an unsigned store reads as before, with a warning.

mod common;

use common::*;
use shardfs::trust::keys::{KeyRecord, Kind, StoreKey};
use std::fs;
use std::path::{Path, PathBuf};

/// Three members, replicas 2, model `m` (2 MiB in 512 KiB chunks), signed as every new store.
struct Scene {
    _dir: tempfile::TempDir,
    root: PathBuf,
    members: Vec<PathBuf>,
    store: String,
    real: Vec<u8>,
}

impl Scene {
    fn new(seed: u64, extra: &[&str]) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let members = members(&root, 3);
        let store = store_arg(&members);
        let real = Rng::new(seed).bytes(2 << 20);
        let flags = [&["--chunk-size", "512KiB", "--replicas", "2"][..], extra].concat();
        pack_bytes(&root, &store, "m", &real, &flags);
        Scene {
            _dir: dir,
            root,
            members,
            store,
            real,
        }
    }

    fn store_id(&self) -> String {
        store_file(&self.members[0])["store_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Every chunk file on every member (name only), sorted.
    fn chunk_names(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .members
            .iter()
            .flat_map(|m| chunk_files(m))
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        all.sort();
        all
    }
}

fn store_file(member: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(member.join("shardfs-store.json")).unwrap()).unwrap()
}

/// The envelope a manifest body is stored in (a valid checksum).
fn envelope(mf: &serde_json::Value) -> Vec<u8> {
    let body = serde_json::to_string(mf).unwrap();
    let checksum = blake3::hash(body.as_bytes()).to_hex().to_string();
    format!("{{\"checksum\":\"{checksum}\",\"manifest\":{body}}}\n").into_bytes()
}

/// A forger with write access to `member`: packs `bytes` into a store of its own, copies that
/// store's chunk files into `member`, and returns a manifest of model `name` naming them, with
/// a version far above the real one and a valid checksum.
fn forge(scene: &Scene, member: &Path, name: &str, bytes: &[u8]) -> serde_json::Value {
    let own = scene.root.join("forger");
    let own_store = own.display().to_string();
    pack_bytes(
        &scene.root,
        &own_store,
        name,
        bytes,
        &["--chunk-size", "512KiB", "--unsigned"],
    );
    for f in chunk_files(&own) {
        let rel = f.strip_prefix(&own).unwrap();
        let to = member.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&f, to).unwrap();
    }
    let real = manifest_json(member, name);
    let member_id = store_file(member)["member_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut mf = manifest_json(&own, name);
    mf["version"] = serde_json::json!(real["version"].as_u64().unwrap() + 1000);
    for f in mf["files"].as_array_mut().unwrap() {
        for c in f["chunks"].as_array_mut().unwrap() {
            c["members"] = serde_json::json!([member_id]);
        }
    }
    mf
}

fn problems(store: &str) -> String {
    common::sync::verify(store)["problems"].to_string()
}

#[test]
fn a_forged_manifest_on_one_member_is_never_served_spread_or_counted() {
    let scene = Scene::new(71, &[]);
    let s = scene.store.as_str();
    let real_chunks = scene.chunk_names();
    let live = Mounted::new(s, &scene.root.join("live"), &scene.root.join("st1"), &[]);
    let forged_bytes = Rng::new(72).bytes(2 << 20);
    let mf = forge(&scene, &scene.members[2], "m", &forged_bytes);
    let at = scene.members[2].join("manifests/m.json");
    // Unsigned, and signed by the forger's own key: neither is the store's.
    let forger = StoreKey::generate().unwrap();
    for (how, bytes) in [
        ("unsigned", envelope(&mf)),
        (
            "signed by another key",
            forger.sign(Kind::Manifest, &scene.store_id(), &envelope(&mf)),
        ),
    ] {
        fs::write(&at, &bytes).unwrap();
        // A fresh mount serves the real bytes.
        let fresh = Mounted::new(s, &scene.root.join("fresh"), &scene.root.join("st2"), &[]);
        assert!(
            fs::read(fresh.dir.join("m/m.bin")).unwrap() == scene.real,
            "{how}"
        );
        assert!(fresh.unmount().status.success());
        // The live mount looked again and still serves the real version.
        live.refresh();
        assert!(
            fs::read(live.dir.join("m/m.bin")).unwrap() == scene.real,
            "{how}"
        );
        assert_eq!(live.version("m"), Some(1), "{how}");
        // verify names the copy, with its member.
        let p = problems(s);
        assert!(p.contains("not signed by the store's key"), "{how}: {p}");
        assert!(
            p.contains(&scene.members[2].display().to_string()),
            "{how}: {p}"
        );
        assert_eq!(export(s, "m", None), scene.real, "{how}");
    }
    // gc before repair deletes nothing it is unsure of; repair puts the signed copy back (it
    // never copies the forgery elsewhere); gc afterwards keeps every real chunk.
    let out = fails(&["gc", "--store", s, "--min-age", "1ms"], "deleted nothing");
    assert_eq!(out.status.code(), Some(1));
    ok(&["repair", "--store", s]);
    let signed = fs::read(scene.members[0].join("manifests/m.json")).unwrap();
    for m in &scene.members {
        assert_eq!(fs::read(m.join("manifests/m.json")).unwrap(), signed);
    }
    ok(&["gc", "--store", s, "--min-age", "1ms"]);
    let after = scene.chunk_names();
    for c in &real_chunks {
        assert!(after.contains(c), "gc deleted real chunk {c}");
    }
    assert_eq!(export(s, "m", None), scene.real);
    assert!(!problems(s).contains("not signed"));
}

#[test]
fn a_forged_member_list_or_fake_member_entry_is_ignored_and_named() {
    let scene = Scene::new(73, &[]);
    let s = scene.store.as_str();
    let at = scene.members[2].join("members.json");
    let bytes = fs::read(&at).unwrap();
    let (body, _) = shardfs::trust::keys::split(&bytes).unwrap();
    let real: serde_json::Value = serde_json::from_slice(body).unwrap();
    // Every other member retired, and a fake member at /etc, at a much higher generation.
    let mut list = real.clone();
    list["generation"] = serde_json::json!(real["generation"].as_u64().unwrap() + 100);
    for m in list["members"].as_array_mut().unwrap().iter_mut().take(2) {
        m["retired"] = serde_json::json!(true);
    }
    list["members"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": "feedfacefeedfacefeedfacefeedface", "index": 9, "weight": 1.0, "location": "/etc"
        }));
    fs::write(&at, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
    let listed = stdout(&ok(&["ls", "--store", s]));
    assert!(listed.contains(" ok"), "{listed}");
    let mnt = Mounted::new(s, &scene.root.join("mnt"), &scene.root.join("st"), &[]);
    assert!(fs::read(mnt.dir.join("m/m.bin")).unwrap() == scene.real);
    let p = problems(s);
    assert!(
        p.contains("members.json") && p.contains("not signed by the store's key"),
        "{p}"
    );
    // Neither the retirements nor the fake member reach another member; repair replaces the
    // forged copy with the signed list.
    ok(&["member", "list", "--store", s]);
    ok(&["repair", "--store", s]);
    for m in &scene.members {
        let text = String::from_utf8(fs::read(m.join("members.json")).unwrap()).unwrap();
        assert!(!text.contains("/etc"), "{}: {text}", m.display());
        assert!(!text.contains("\"retired\": true"), "{text}");
    }
    assert!(!problems(s).contains("members.json"));
}

#[test]
fn a_member_naming_another_key_is_left_out_and_trusting_that_key_is_refused() {
    let scene = Scene::new(75, &[]);
    let s = scene.store.as_str();
    let forger = StoreKey::generate().unwrap();
    let at = scene.members[2].join("shardfs-store.json");
    let mut info = store_file(&scene.members[2]);
    info["keys"] = serde_json::to_value(vec![KeyRecord::first(&forger.public())]).unwrap();
    fs::write(&at, serde_json::to_vec_pretty(&info).unwrap()).unwrap();
    // The member is left out with one line; the model reads from the other two.
    let out = ok(&["ls", "--store", s]);
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("left out")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("names another key"), "{err}");
    let mnt = Mounted::new(s, &scene.root.join("mnt"), &scene.root.join("st"), &[]);
    assert!(fs::read(mnt.dir.join("m/m.bin")).unwrap() == scene.real);
    assert!(problems(s).contains("names another key"));
    // Trusting the forger's key instead of the pinned one: refused with one line.
    fs::create_dir_all(scene.root.join("mnt2")).unwrap();
    let fp = forger.public().fingerprint();
    let out = fails(
        &[
            "mount",
            "--store",
            s,
            scene.root.join("mnt2").to_str().unwrap(),
            "--trust",
            &fp,
        ],
        "only 1 of the 3 members",
    );
    assert_eq!(out.status.code(), Some(2));
    // And the pin is unchanged: the store still reads with the real key.
    assert_eq!(export(s, "m", None), scene.real);
}

#[test]
fn a_live_mount_follows_a_key_rotation_and_a_repack_signed_by_the_new_key() {
    let scene = Scene::new(77, &[]);
    let s = scene.store.as_str();
    let live = Mounted::new(s, &scene.root.join("live"), &scene.root.join("st"), &[]);
    let before = fs::read(scene.members[0].join("shardfs-store.json")).unwrap();
    ok(&["key", "rotate", "--store", s]);
    let info = store_file(&scene.members[0]);
    assert_eq!(info["keys"].as_array().unwrap().len(), 2, "{info}");
    // Every manifest copy and member list is signed again, by the new key.
    let new_key = info["keys"][1]["public"].as_str().unwrap().to_string();
    for m in &scene.members {
        for file in [m.join("manifests/m.json"), m.join("members.json")] {
            let text = fs::read_to_string(&file).unwrap();
            let last = text.lines().last().unwrap();
            assert!(
                last.starts_with(&format!("--shardfs-signature ed25519 {new_key} ")),
                "{}: {last}",
                file.display()
            );
        }
    }
    assert_ne!(
        before,
        fs::read(scene.members[0].join("shardfs-store.json")).unwrap()
    );
    let next = Rng::new(78).bytes(2 << 20);
    pack_bytes(
        &scene.root,
        s,
        "m",
        &next,
        &["--chunk-size", "512KiB", "--replicas", "2"],
    );
    live.refresh();
    assert_eq!(live.version("m"), Some(2));
    assert!(fs::read(live.dir.join("m/m.bin")).unwrap() == next);
    // Every copy is now signed by the new key, and reads as the store's.
    assert_eq!(export(s, "m", None), next);
    assert!(!problems(s).contains("not signed"));
}

#[test]
fn an_unsigned_store_reads_with_a_warning_until_key_init_signs_it() {
    let scene = Scene::new(79, &["--unsigned"]);
    let s = scene.store.as_str();
    let out = ok(&["ls", "--store", s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().filter(|l| l.contains("is unsigned")).count(),
        1,
        "{err}"
    );
    let mnt = Mounted::new(s, &scene.root.join("mnt"), &scene.root.join("st"), &[]);
    assert!(fs::read(mnt.dir.join("m/m.bin")).unwrap() == scene.real);
    assert!(mnt.unmount().status.success());
    // key init signs what is there; from then on an unsigned copy is refused.
    let out = stdout(&ok(&["key", "init", "--store", s]));
    assert!(out.contains("signed with key sfk:"), "{out}");
    let out = ok(&["ls", "--store", s]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("unsigned"));
    let mf = manifest_json(&scene.members[1], "m");
    let mut newer = mf.clone();
    newer["version"] = serde_json::json!(mf["version"].as_u64().unwrap() + 5);
    for m in &scene.members {
        if m.join("manifests/m.json").exists() {
            fs::write(m.join("manifests/m.json"), envelope(&newer)).unwrap();
            break;
        }
    }
    assert!(problems(s).contains("not signed by the store's key"));
    assert_eq!(export(s, "m", None), scene.real);
    // A second key init is refused: the store has a key.
    fails(&["key", "init", "--store", s], "already signed");
}

/// Runs shardfs as another host would: its own configuration folder (keys, pinned keys).
fn as_host(config: &Path, args: &[&str]) -> std::process::Output {
    command()
        .env("XDG_CONFIG_HOME", config)
        .args(args)
        .output()
        .expect("shardfs runs")
}

fn pinned_on(config: &Path, store_id: &str) -> String {
    fs::read_to_string(config.join("shardfs/trusted").join(store_id))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn another_host_pins_on_first_use_packs_only_with_the_key_and_re_trusts_a_replaced_key() {
    let scene = Scene::new(81, &[]);
    let s = scene.store.as_str();
    let id = scene.store_id();
    let real_key = store_key(&scene.members[0]).public();
    let host = scene.root.join("host-b");
    // First use: the key the members name is pinned.
    let out = as_host(&host, &["ls", "--store", s]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(pinned_on(&host, &id), real_key.hex());
    // Without the key file it cannot pack (one line saying so); given it, it can.
    let src = scene.root.join("next.bin");
    let next = Rng::new(82).bytes(1 << 20);
    fs::write(&src, &next).unwrap();
    let pack = |extra: &[&str]| {
        let mut args = vec!["pack", src.to_str().unwrap(), "--store", s, "--name", "m"];
        args.extend_from_slice(&["--replicas", "2"]);
        args.extend_from_slice(extra);
        as_host(&host, &args)
    };
    let before = scene.chunk_names();
    let out = pack(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--key"), "{err}");
    assert_eq!(export(s, "m", None), scene.real, "nothing was published");
    assert_eq!(scene.chunk_names(), before, "nothing was written");
    let key_file = config_dir().join("shardfs").join(format!("keys/{id}.key"));
    let out = pack(&["--key", key_file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(export(s, "m", None), next);

    // The key is lost: the documented re-key on the packing host (the keys entry out of every
    // store file, this host's pin removed, key init), then --trust NEW once on the other host.
    for m in &scene.members {
        let mut info = store_file(m);
        info.as_object_mut().unwrap().remove("keys");
        fs::write(
            m.join("shardfs-store.json"),
            serde_json::to_vec_pretty(&info).unwrap(),
        )
        .unwrap();
    }
    let pin = config_dir().join("shardfs").join(format!("trusted/{id}"));
    fs::remove_file(&pin).unwrap();
    fs::rename(&key_file, scene.root.join("lost.key")).unwrap();
    ok(&["key", "init", "--store", s]);
    let new_key = store_key(&scene.members[0]).public();
    assert_ne!(new_key, real_key);
    // The other host still trusts the old key: it refuses, with one line naming --trust.
    let out = as_host(&host, &["ls", "--store", s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--trust"), "{err}");
    let out = as_host(
        &host,
        &["ls", "--store", s, "--trust", &new_key.fingerprint()],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(pinned_on(&host, &id), new_key.hex());
    let out = as_host(&host, &["export", "--store", s, "--name", "m", "-o", "-"]);
    assert!(out.stdout == next);
}
