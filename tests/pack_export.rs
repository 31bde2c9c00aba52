//! Round trips through `pack` and `export` with the real binary: sizes around chunk boundaries,
//! large random and float-like files, folders, every placement, replicas 1-3, dedup, re-packs.

mod common;
use common::sync::{repair, verify};
use common::*;
use std::collections::BTreeSet;
use std::fs;

const CS: usize = 64 * 1024;

#[test]
fn sizes_around_chunk_boundaries_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&members(dir.path(), 3));
    let mut rng = Rng::new(1);
    for size in [0, 1, CS - 1, CS, CS + 1, 3 * CS + 17] {
        for (kind, data) in [("random", rng.bytes(size)), ("float", rng.floats(size))] {
            let name = format!("{kind}-{size}");
            pack_bytes(
                dir.path(),
                &store,
                &name,
                &data,
                &["--chunk-size", "64KiB", "--replicas", "2"],
            );
            assert_eq!(
                export(&store, &name, None),
                data,
                "{name} differs after export"
            );
            // A file packed alone keeps its own file name inside the model.
            assert_eq!(export(&store, &name, Some(&format!("{name}.bin"))), data);
        }
    }
    let listing = stdout(&ok(&["ls", "--store", &store]));
    assert!(
        listing.contains("random-0") && listing.contains("float-196625"),
        "{listing}"
    );
    ok(&["verify", "--store", &store]);
}

#[test]
fn hundred_mib_files_round_trip_and_floats_compress() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&members(dir.path(), 3));
    let mut rng = Rng::new(2);
    for (name, data) in [
        ("rand", rng.bytes(100 << 20)),
        ("floats", rng.floats(100 << 20)),
    ] {
        let src = dir.path().join(format!("{name}.bin"));
        fs::write(&src, &data).unwrap();
        let out = stdout(&pack(&src, &store, &["--replicas", "2"]));
        assert!(out.contains("25 chunks"), "{out}");
        let exported = dir.path().join(format!("{name}.out"));
        ok(&[
            "export",
            "--store",
            &store,
            "--name",
            name,
            "-o",
            exported.to_str().unwrap(),
        ]);
        assert!(
            fs::read(&exported).unwrap() == data,
            "{name} differs after export"
        );
    }
    let ls: serde_json::Value =
        serde_json::from_slice(&ok(&["ls", "--store", &store, "--json"]).stdout).unwrap();
    let ratio = |n: &str| {
        ls["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == n)
            .unwrap()["ratio"]
            .as_f64()
            .unwrap()
    };
    assert!(
        ratio("rand") <= 1.0001,
        "random data must be stored raw, not expanded"
    );
    assert!(
        ratio("floats") > 1.15,
        "float-like data should compress, got {}",
        ratio("floats")
    );
}

#[test]
fn folders_keep_their_tree() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&members(dir.path(), 2));
    let model = dir.path().join("my-model");
    let mut rng = Rng::new(3);
    let files = [
        ("config.json", rng.bytes(300)),
        ("tokenizer/vocab.txt", rng.bytes(70_000)),
        ("weights/part-1.bin", rng.floats(200_000)),
        ("weights/deep/er/part-2.bin", rng.floats(CS)),
        ("empty", vec![]),
    ];
    for (rel, data) in &files {
        let p = model.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    // A file linked from inside the folder is packed as the file it leads to.
    let blob = rng.floats(90_000);
    fs::write(model.join("blob"), &blob).unwrap();
    std::os::unix::fs::symlink("../blob", model.join("weights/linked.bin")).unwrap();
    pack(&model, &store, &["--chunk-size", "64KiB"]);
    // The model takes the folder's name; exporting it whole writes the tree to a new directory.
    let out = dir.path().join("restored");
    let to_dir = [
        "export",
        "--store",
        &store,
        "--name",
        "my-model",
        "-o",
        out.to_str().unwrap(),
    ];
    ok(&to_dir);
    assert_eq!(tree(&out), tree(&model));
    let linked = ("weights/linked.bin", blob.clone());
    assert_eq!(fs::read(out.join("blob")).unwrap(), blob);
    for (rel, data) in files.iter().chain([&linked]) {
        assert_eq!(&fs::read(out.join(rel)).unwrap(), data, "{rel}");
        assert_eq!(&export(&store, "my-model", Some(rel)), data, "{rel}");
    }
    assert!(
        !fs::symlink_metadata(out.join(linked.0))
            .unwrap()
            .file_type()
            .is_symlink(),
        "exported as a regular file"
    );
    fails(
        &["export", "--store", &store, "--name", "my-model", "-o", "-"],
        "pick one with --file",
    );
    // The same export again: the directory is there now.
    fails(&to_dir, "exists");
    fails(
        &[
            "export", "--store", &store, "--name", "my-model", "--file", "nope", "-o", "-",
        ],
        "no file 'nope'",
    );
}

#[test]
fn every_placement_and_replica_count() {
    let mut rng = Rng::new(4);
    // A tail chunk long enough for a chunk file of its own (shorter ones stay in the manifest).
    let data = rng.floats(20 * CS + 30_000);
    for placement in ["hash", "round-robin", "range"] {
        for replicas in 1..=3usize {
            let dir = tempfile::tempdir().unwrap();
            let paths = members(dir.path(), 3);
            let store = store_arg(&paths);
            let src = dir.path().join("m.bin");
            fs::write(&src, &data).unwrap();
            let r = replicas.to_string();
            pack(
                &src,
                &store,
                &[
                    "--chunk-size",
                    "64KiB",
                    "--replicas",
                    &r,
                    "--placement",
                    placement,
                    "--codec",
                    "zstd",
                ],
            );
            assert_eq!(export(&store, "m", None), data, "{placement} r={replicas}");
            // Each chunk is on exactly `replicas` distinct members, as the manifest says.
            let manifest = manifest_json(&paths[0], "m");
            let chunks = manifest["files"][0]["chunks"].as_array().unwrap();
            assert_eq!(chunks.len(), 21);
            let mut per_member = vec![0usize; 3];
            for c in chunks {
                let holders: BTreeSet<usize> = (0..3)
                    .filter(|&i| {
                        chunk_files(&paths[i])
                            .iter()
                            .any(|f| f.ends_with(c["hash"].as_str().unwrap()))
                    })
                    .collect();
                assert_eq!(holders.len(), replicas, "{placement}: chunk on {holders:?}");
                assert_eq!(c["members"].as_array().unwrap().len(), replicas);
                for h in holders {
                    per_member[h] += 1;
                }
            }
            if replicas < 3 {
                assert!(
                    per_member.iter().all(|&n| n > 0),
                    "{placement} r={replicas}: {per_member:?}"
                );
            }
            ok(&["verify", "--store", &store]);
        }
    }
}

#[test]
fn dedup_and_repack() {
    let dir = tempfile::tempdir().unwrap();
    let paths = members(dir.path(), 2);
    let store = store_arg(&paths);
    let mut rng = Rng::new(5);
    let v1 = rng.floats(10 * CS);
    let src = pack_bytes(dir.path(), &store, "model", &v1, &["--chunk-size", "64KiB"]);
    let count = || paths.iter().map(|p| chunk_files(p).len()).sum::<usize>();
    let bytes = || {
        paths
            .iter()
            .flat_map(|p| chunk_files(p))
            .map(|f| fs::metadata(f).unwrap().len())
            .sum::<u64>()
    };
    let (n1, b1) = (count(), bytes());
    assert_eq!(n1, 10);
    // The same bytes under another name add no chunk.
    let out = stdout(&pack(
        &src,
        &store,
        &["--chunk-size", "64KiB", "--name", "copy"],
    ));
    assert!(out.contains("(0 new)"), "{out}");
    assert_eq!((count(), bytes()), (n1, b1));
    // Re-packing a changed file replaces the model; only the changed chunk is new.
    let mut v2 = v1.clone();
    v2[3 * CS + 7] ^= 0xff;
    fs::write(&src, &v2).unwrap();
    let out = stdout(&pack(&src, &store, &["--chunk-size", "64KiB"]));
    assert!(
        out.contains("(1 new)") && out.contains("version 2"),
        "{out}"
    );
    assert_eq!(export(&store, "model", None), v2);
    assert_eq!(export(&store, "copy", None), v1);
    assert_eq!(count(), 11);
}

#[test]
fn result_does_not_depend_on_thread_count() {
    let mut rng = Rng::new(6);
    let data = rng.floats(40 * CS + 3);
    let mut results = Vec::new();
    for threads in ["1", "2", "5"] {
        let dir = tempfile::tempdir().unwrap();
        let paths = members(dir.path(), 3);
        let src = dir.path().join("m.bin");
        fs::write(&src, &data).unwrap();
        let out = command()
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "pack",
                src.to_str().unwrap(),
                "--store",
                &store_arg(&paths),
                "--chunk-size",
                "64KiB",
                "--replicas",
                "2",
                "--placement",
                "round-robin",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut files = manifest_json(&paths[0], "m")["files"].clone();
        // Member ids are random per store: compare chunk placement by member index instead.
        let ids: Vec<String> = paths
            .iter()
            .map(|p| {
                let info: serde_json::Value =
                    serde_json::from_slice(&fs::read(p.join("shardfs-store.json")).unwrap())
                        .unwrap();
                info["member_id"].as_str().unwrap().to_string()
            })
            .collect();
        for c in files[0]["chunks"].as_array_mut().unwrap() {
            let idx: Vec<usize> = c["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| ids.iter().position(|i| i == m).unwrap())
                .collect();
            c["members"] = serde_json::json!(idx);
        }
        files[0]["mtime_secs"] = serde_json::json!(0);
        files[0]["mtime_nanos"] = serde_json::json!(0);
        let chunk_sets: Vec<Vec<(String, Vec<u8>)>> = paths
            .iter()
            .map(|p| {
                chunk_files(p)
                    .into_iter()
                    .map(|f| {
                        (
                            f.file_name().unwrap().to_string_lossy().into_owned(),
                            fs::read(&f).unwrap(),
                        )
                    })
                    .collect()
            })
            .collect();
        results.push((files, chunk_sets));
    }
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "pack output differs with the thread count"
    );
}

/// A safetensors file with one F32 tensor of `values` and one I64 tensor.
fn f32_safetensors(values: &[f32]) -> Vec<u8> {
    let n = values.len() * 4;
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{n}]}},"i":{{"dtype":"I64","shape":[1],"data_offsets":[{n},{}]}}}}"#,
        values.len(),
        n + 8
    );
    let mut h = header.into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&42i64.to_le_bytes());
    out
}

#[test]
fn lossy_bf16_is_opt_in_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&members(dir.path(), 2));
    let values: Vec<f32> = (0..5000)
        .map(|i| ((i as f32) * 0.37).sin() * 0.02)
        .collect();
    let src = dir.path().join("m.safetensors");
    let original = f32_safetensors(&values);
    fs::write(&src, &original).unwrap();
    pack(&src, &store, &["--name", "exact"]);
    pack(&src, &store, &["--name", "small", "--lossy", "bf16"]);
    assert_eq!(
        export(&store, "exact", None),
        original,
        "without --lossy the bytes are exact"
    );
    let small = export(&store, "small", None);
    let hlen = u64::from_le_bytes(small[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&small[8..8 + hlen]).unwrap();
    assert_eq!(header["w"]["dtype"], "BF16");
    assert_eq!(header["w"]["data_offsets"], serde_json::json!([0, 10000]));
    assert_eq!(
        header["i"]["data_offsets"],
        serde_json::json!([10000, 10008])
    );
    let data = &small[8 + hlen..];
    for (i, v) in values.iter().enumerate() {
        let b = u16::from_le_bytes([data[2 * i], data[2 * i + 1]]);
        let bits = v.to_bits();
        let expect = ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
        assert_eq!(b, expect, "element {i}");
    }
    assert_eq!(&data[10000..], &42i64.to_le_bytes());
    let listing = stdout(&ok(&["ls", "--store", &store]));
    assert!(
        listing.contains("small (lossy)") && !listing.contains("exact (lossy)"),
        "{listing}"
    );
    let report = stdout(&ok(&["verify", "--store", &store]));
    assert!(
        report.contains("NOTE: model small") && report.contains("lossy (bf16)"),
        "{report}"
    );
    let ls: serde_json::Value =
        serde_json::from_slice(&ok(&["ls", "--store", &store, "--json"]).stdout).unwrap();
    let small_json = ls["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "small")
        .unwrap();
    assert_eq!(small_json["lossy"], true);
    assert_eq!(
        small_json["files"][0]["lossy"]["original_size"],
        original.len() as u64
    );
}

#[test]
fn lossy_fp8_keeps_the_layout_bounds_the_error_and_stores_the_codes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&members(dir.path(), 1));
    let values: Vec<f32> = (0..200_000)
        .map(|i| ((i as f32) * 0.37).sin() * 0.02 * if i % 977 == 0 { 30.0 } else { 1.0 })
        .collect();
    let src = dir.path().join("m.safetensors");
    let original = f32_safetensors(&values);
    fs::write(&src, &original).unwrap();
    let args = ["--name", "small", "--lossy", "fp8", "--chunk-size", "64KiB"];
    let out = stdout(&pack(&src, &store, &args));
    assert!(out.contains("packed small"), "{out}");
    let small = export(&store, "small", None);
    // The same file layout: the header and the I64 tensor byte for byte.
    assert_eq!(small.len(), original.len());
    let hlen = 8 + u64::from_le_bytes(small[..8].try_into().unwrap()) as usize;
    assert_eq!(small[..hlen], original[..hlen]);
    assert_eq!(small[small.len() - 8..], 42i64.to_le_bytes());
    // Every value within 1/16 of the largest of its block of 128, and some changed.
    let read = |b: &[u8], i: usize| {
        f32::from_le_bytes(b[hlen + 4 * i..hlen + 4 * i + 4].try_into().unwrap())
    };
    let mut changed = 0;
    for (block, chunk) in values.chunks(128).enumerate() {
        let top = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (j, v) in chunk.iter().enumerate() {
            let got = read(&small, block * 128 + j);
            assert!(
                (got - v).abs() <= top / 16.0,
                "element {}: {v} -> {got}",
                block * 128 + j
            );
            changed += usize::from(got != *v);
        }
    }
    assert!(changed > values.len() / 2, "{changed} changed");
    // Stored as FP8 codes: under a third of the fp32 bytes; marked lossy.
    let ls: serde_json::Value =
        serde_json::from_slice(&ok(&["ls", "--store", &store, "--json"]).stdout).unwrap();
    let m = &ls["models"][0];
    assert_eq!(m["lossy"], true);
    assert_eq!(m["files"][0]["lossy"]["kind"], "fp8");
    assert!(m["stored_codecs"]["fp8"].as_u64().unwrap() >= 1, "{m}");
    assert!(
        m["stored_bytes"].as_u64().unwrap() * 3 < original.len() as u64,
        "{m}"
    );
    let report = stdout(&ok(&["verify", "--store", &store]));
    assert!(report.contains("lossy (fp8)"), "{report}");
    // Through a mount: the same bytes as the export.
    let mnt = dir.path().join("mnt");
    let mounted = Mounted::new(&store, &mnt, &dir.path().join("state"), &[]);
    assert!(fs::read(mnt.join("small/m.safetensors")).unwrap() == small);
    mounted.unmount();
}

#[test]
fn no_file_grows_by_more_than_a_thousandth() {
    let dir = tempfile::tempdir().unwrap();
    let paths = members(dir.path(), 2);
    let store = store_arg(&paths);
    let src = dir.path().join("model");
    fs::create_dir_all(&src).unwrap();
    // Incompressible files of every size around the point where a chunk file's header stops
    // costing more than 0.1%, a compressible one, and an empty one.
    let mut rng = Rng::new(5);
    let sizes = [1usize, 100, 4000, 24 * 1024 - 1, 24 * 1024, 300_000];
    for n in sizes {
        fs::write(src.join(format!("random-{n}")), rng.bytes(n)).unwrap();
    }
    fs::write(
        src.join("config.json"),
        "{\"hidden_size\": 384}\n".repeat(40),
    )
    .unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    pack(&src, &store, &["--replicas", "2"]);
    let m = manifest_json(&paths[0], "model");
    for f in m["files"].as_array().unwrap() {
        let size = f["size"].as_u64().unwrap();
        let chunks = f["chunks"].as_array().unwrap();
        let stored: u64 = chunks
            .iter()
            .filter(|c| c["inline"].is_null())
            .map(|c| c["stored_len"].as_u64().unwrap())
            .sum();
        let inline: u64 = chunks
            .iter()
            .filter_map(|c| c["inline"].as_str())
            .map(|h| h.len() as u64 / 2)
            .sum();
        assert!(
            stored * 1000 <= size * 1001,
            "{}: {stored} stored for {size}",
            f["path"]
        );
        // Only what a chunk file would have grown is kept in the manifest: the small random
        // files, not the JSON that compresses, nor random files whose 24-byte chunk header
        // costs at most 0.1% (24,000 bytes and over).
        let random = f["path"].as_str().unwrap().starts_with("random-");
        let header_costs = (size + 24) * 1000 > size * 1001;
        assert_eq!(inline > 0, random && header_costs, "{}", f["path"]);
    }
    // Exact back through export, verify and a mount; repair and gc leave them be.
    for n in sizes {
        let want = fs::read(src.join(format!("random-{n}"))).unwrap();
        assert!(
            export(&store, "model", Some(&format!("random-{n}"))) == want,
            "random-{n}"
        );
    }
    assert_eq!(verify(&store)["ok"], true);
    assert_eq!(repair(&store)["replicas_recreated"], 0);
    ok(&["gc", "--store", &store, "--min-age", "0"]);
    let mnt = dir.path().join("mnt");
    let mounted = Mounted::new(&store, &mnt, &dir.path().join("state"), &[]);
    for n in sizes {
        let want = fs::read(src.join(format!("random-{n}"))).unwrap();
        assert!(
            fs::read(mnt.join(format!("model/random-{n}"))).unwrap() == want,
            "random-{n}"
        );
    }
    mounted.unmount();
}
