//! Fine-tunes packed against their base (`pack --base`): the exact bytes back through export
//! and a mount, fewer bytes stored, the base's chunks kept after `rm` of the base and `gc`,
//! `repair` after a lost disk and `rebalance` onto a new one moving the deltas and the base
//! chunks they need.

mod common;

use common::sync::*;
use common::*;
use std::fs;
use std::path::Path;

/// bf16 weights `w` after a small update: a third of the values move by one or two units in
/// the last place, as a short fine-tune moves them.
fn updated(w: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = w.to_vec();
    for v in out.chunks_exact_mut(2) {
        let step = match rng.below(6) {
            0 => 1i16,
            1 => -1,
            2 => 2,
            _ => 0,
        };
        let bits = u16::from_le_bytes([v[0], v[1]]).wrapping_add_signed(step);
        v.copy_from_slice(&bits.to_le_bytes());
    }
    out
}

/// A base model and a fine-tune of it in `dir`: four 1 MiB bf16 tensors (the last one not in
/// the fine-tune's base under its name), and a small I64 tensor.
fn base_and_fine_tune(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut rng = Rng::new(7);
    let weights: Vec<Vec<u8>> = (0..4).map(|_| rng.floats(1 << 20)).collect();
    let ids: Vec<u8> = (0..512u64).flat_map(|i| i.to_le_bytes()).collect();
    let base = safetensors_image(&[
        ("a.weight", "BF16", weights[0].clone()),
        ("b.weight", "BF16", weights[1].clone()),
        ("c.weight", "BF16", weights[2].clone()),
        ("d.weight", "BF16", weights[3].clone()),
        ("ids", "I64", ids.clone()),
    ]);
    let tuned = safetensors_image(&[
        ("a.weight", "BF16", updated(&weights[0], &mut rng)),
        ("b.weight", "BF16", updated(&weights[1], &mut rng)),
        ("c.weight", "BF16", weights[2].clone()),
        ("head.weight", "BF16", rng.floats(1 << 20)),
        ("ids", "I64", ids),
    ]);
    let (b, t) = (dir.join("base"), dir.join("tuned"));
    for (d, bytes) in [(&b, base), (&t, tuned)] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("model.safetensors"), bytes).unwrap();
    }
    (b, t)
}

fn model<'a>(ls: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    ls["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no model {name} in {ls}"))
}

const CHUNK: &[&str] = &["--chunk-size", "256KiB"];

#[test]
fn a_fine_tune_packed_against_its_base_reads_exact_and_stores_a_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let paths = members(dir.path(), 2);
    let store = store_arg(&paths);
    let (base, tuned) = base_and_fine_tune(dir.path());
    pack(&base, &store, CHUNK);
    let out = stdout(&pack(
        &tuned,
        &store,
        &[CHUNK, &["--base", "base"]].concat(),
    ));
    // a and b (4 chunks each) are deltas; c equals the base's and is shared whole; head has
    // no partner; the header and ids chunk is not a float tensor.
    assert!(out.contains("8 as deltas against base@1"), "{out}");
    pack(&tuned, &store, &[CHUNK, &["--name", "whole"]].concat());
    let ls = json(&ok(&["ls", "--store", &store, "--json"]));
    let (delta, whole) = (model(&ls, "tuned"), model(&ls, "whole"));
    assert_eq!(
        (delta["delta_chunks"].as_u64(), delta["base"].as_str()),
        (Some(8), Some("base@1"))
    );
    assert_eq!(whole["delta_chunks"], 0);
    // The deltas of the two updated tensors cost a fraction of what the tensors cost whole
    // (bf16 weights stored whole take about two thirds of their bytes).
    let stored = |name: &str, deltas: bool| {
        let m = manifest_json(&paths[0], name);
        let chunks = m["files"][0]["chunks"].as_array().unwrap().clone();
        let (a_and_b, _): (Vec<_>, Vec<_>) = chunks.into_iter().partition(|c| {
            let t = c["tensors"][0]["name"].as_str().unwrap_or("");
            t == "a.weight" || t == "b.weight"
        });
        assert!(a_and_b.iter().all(|c| c["delta"].is_object() == deltas));
        // bf16 tensors: each delta is the elements' differences, which need manifest format 2,
        // and byte-grouped, which is written as format 3 (its groups may be entropy-coded).
        if deltas {
            assert!(a_and_b.iter().all(|c| c["delta"]["op"] == "diff16"), "{m}");
            assert_eq!(m["format_version"], 3);
        }
        let sum = |k: &str| a_and_b.iter().map(|c| c[k].as_u64().unwrap()).sum::<u64>() as f64;
        sum("stored_len") / sum("len")
    };
    let (delta_part, whole_part) = (stored("tuned", true), stored("whole", false));
    assert!(
        delta_part < 0.25 && whole_part > 0.6,
        "deltas {delta_part:.3} of their bytes, whole {whole_part:.3}"
    );
    let src = fs::read(tuned.join("model.safetensors")).unwrap();
    assert!(export(&store, "tuned", None) == src, "export differs");
    assert_eq!(verify(&store)["ok"], true);
    // Through a mount, with the page cache dropped: the same bytes.
    let mnt = dir.path().join("mnt");
    let state = dir.path().join("state");
    let mounted = Mounted::new(&store, &mnt, &state, &["--cache-size", "1MiB"]);
    let file = mnt.join("tuned/model.safetensors");
    assert!(fs::read(&file).unwrap() == src, "mounted bytes differ");
    drop_page_cache(&file);
    assert!(
        fs::read(&file).unwrap() == src,
        "mounted bytes differ on a re-read"
    );
    mounted.unmount();
}

#[test]
fn auto_picks_the_model_sharing_the_most_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&members(dir.path(), 1));
    let (base, tuned) = base_and_fine_tune(dir.path());
    let other = dir.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let unrelated = safetensors_image(&[("x.weight", "BF16", Rng::new(9).floats(1 << 20))]);
    fs::write(other.join("model.safetensors"), unrelated).unwrap();
    pack(&base, &store, CHUNK);
    pack(&other, &store, CHUNK);
    let out = stdout(&pack(
        &tuned,
        &store,
        &[CHUNK, &["--base", "auto"]].concat(),
    ));
    assert!(out.contains("base: base@1"), "{out}");
    // With no model sharing a tensor, auto says so and packs whole.
    let lone = tempfile::tempdir().unwrap();
    let lone_store = store_arg(&members(lone.path(), 1));
    let out = stdout(&pack(
        &tuned,
        &lone_store,
        &[CHUNK, &["--base", "auto"]].concat(),
    ));
    assert!(out.contains("base: none"), "{out}");
    let src = fs::read(tuned.join("model.safetensors")).unwrap();
    assert!(export(&lone_store, "tuned", None) == src);
    // A named base that is not in the store is an error, and nothing is packed.
    let out = fails(
        &[
            "pack",
            tuned.to_str().unwrap(),
            "--store",
            &lone_store,
            "--name",
            "t2",
            "--base",
            "nope",
        ],
        "nope",
    );
    assert!(!out.status.success());
    let ls = json(&ok(&["ls", "--store", &lone_store, "--json"]));
    assert_eq!(ls["models"].as_array().unwrap().len(), 1, "{ls}");
}

#[test]
fn removing_the_base_losing_a_disk_and_a_rebalance_leave_the_fine_tune_exact() {
    let dir = tempfile::tempdir().unwrap();
    let paths = members(dir.path(), 3);
    let store = store_arg(&paths);
    let (base, tuned) = base_and_fine_tune(dir.path());
    let replicas: &[&str] = &["--replicas", "2"];
    pack(&base, &store, &[CHUNK, replicas].concat());
    pack(
        &tuned,
        &store,
        &[CHUNK, replicas, &["--base", "base"]].concat(),
    );
    let src = fs::read(tuned.join("model.safetensors")).unwrap();
    let before: usize = paths.iter().map(|p| chunk_files(p).len()).sum();
    ok(&["rm", "--store", &store, "--name", "base"]);
    let gc = json(&ok(&["gc", "--store", &store, "--min-age", "0", "--json"]));
    // The base's own chunks that no delta needs go (its `d` tensor, its header); the ones the
    // deltas are taken against stay.
    let deleted = gc["chunk_files_deleted"].as_u64().unwrap() as usize;
    assert!(deleted >= 2 * 4, "{gc}");
    assert_eq!(
        paths.iter().map(|p| chunk_files(p).len()).sum::<usize>(),
        before - deleted
    );
    assert!(
        export(&store, "tuned", None) == src,
        "export after rm + gc differs"
    );
    assert_eq!(verify(&store)["ok"], true);
    // A lost disk: repair brings back every delta and every base chunk it held.
    let lost = &paths[1];
    let held = chunk_files(lost).len();
    assert!(held > 0);
    for f in chunk_files(lost) {
        fs::remove_file(f).unwrap();
    }
    assert_eq!(verify(&store)["ok"], false);
    let r = repair(&store);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        r["replicas_recreated"].as_u64().unwrap() as usize,
        held,
        "{r}"
    );
    fully_replicated(&paths, "tuned", 2);
    assert_eq!(verify(&store)["ok"], true);
    assert!(
        export(&store, "tuned", None) == src,
        "export after repair differs"
    );
    // A new disk and a rebalance: deltas and base chunks move, and no copy a manifest needs is
    // deleted from where it is listed.
    let mut paths = paths;
    let new = dir.path().join("disk-new");
    ok(&["member", "add", "--store", &store, new.to_str().unwrap()]);
    paths.push(new);
    let four = store_arg(&paths);
    let r = json(&ok(&["rebalance", "--store", &four, "--json"]));
    assert!(r["replicas_moved"].as_u64().unwrap() > 0, "{r}");
    fully_replicated(&paths, "tuned", 2);
    assert_eq!(verify(&four)["ok"], true);
    assert!(
        export(&four, "tuned", None) == src,
        "export after rebalance differs"
    );
    a_lost_base_chunk_is_named_by_the_delta(&paths, &four);
}

#[test]
fn a_mount_reads_a_base_chunk_once_for_the_base_and_its_fine_tune() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&members(dir.path(), 1));
    let (base, tuned) = base_and_fine_tune(dir.path());
    pack(&base, &store, CHUNK);
    pack(&tuned, &store, &[CHUNK, &["--base", "base"]].concat());
    let mnt = dir.path().join("mnt");
    let mounted = Mounted::new(
        &store,
        &mnt,
        &dir.path().join("state"),
        &["--cache-size", "64MiB"],
    );
    let loads = || mounted.status()["chunks_decompressed"].as_u64().unwrap();
    let tuned_file = mnt.join("tuned/model.safetensors");
    assert!(fs::read(&tuned_file).unwrap() == fs::read(tuned.join("model.safetensors")).unwrap());
    let after_tuned = loads();
    // The base's chunks the deltas were taken against came through the chunk cache: reading the
    // base now loads only the ones no delta needed (its `d` tensor, its header and ids).
    let base_file = mnt.join("base/model.safetensors");
    assert!(fs::read(&base_file).unwrap() == fs::read(base.join("model.safetensors")).unwrap());
    let for_base = loads() - after_tuned;
    let base_chunks = manifest_json(&members(dir.path(), 1)[0], "base")["files"][0]["chunks"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert!(
        for_base + 8 <= base_chunks,
        "{for_base} of {base_chunks} base chunks loaded again"
    );
    mounted.unmount();
}

/// Every copy of one base chunk of model `tuned` gone: repair fails, naming the fine-tune's bytes
/// that need it.
fn a_lost_base_chunk_is_named_by_the_delta(paths: &[std::path::PathBuf], store: &str) {
    let m = manifest_json(&paths[0], "tuned");
    let delta = m["files"][0]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["delta"].is_object())
        .unwrap()
        .clone();
    let base_hex = delta["delta"]["base"]["hash"].as_str().unwrap();
    for p in paths {
        for f in chunk_files(p) {
            if f.ends_with(base_hex) {
                fs::remove_file(f).unwrap();
            }
        }
    }
    let r = json(&run(&["repair", "--store", store, "--json"]));
    assert_eq!(r["ok"], false, "{r}");
    let lost = &r["unrepaired"][0];
    assert_eq!(
        (&lost["offset"], &lost["chunk"]),
        (&delta["offset"], &delta["delta"]["base"]["hash"])
    );
    assert!(
        lost["reason"].as_str().unwrap().contains("base chunk"),
        "{lost}"
    );
}
