//! Real model files, written by the libraries that write them (safetensors, gguf, torch.save,
//! numpy, pickle), round-trip byte-exactly through a 3-member store with 2 replicas.
//! Needs SHARDFS_PYTHON: a python with those libraries (scripts/test sets it up).

mod common;
use common::*;
use std::fs;

#[test]
fn real_model_formats_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("sample-model");
    gen_models(&models, 6);
    let paths = members(dir.path(), 3);
    let store = store_arg(&paths);
    let files = tree(&models);
    assert_eq!(
        files,
        [
            "array.npy",
            "model.gguf",
            "model.pkl",
            "model.pth",
            "model.safetensors",
            "numpy.safetensors"
        ]
    );
    for f in &files {
        let src = models.join(f);
        pack(
            &src,
            &store,
            &["--replicas", "2", "--chunk-size", "1MiB", "--name", f],
        );
        let got = export(&store, f, Some(f));
        assert!(got == fs::read(&src).unwrap(), "{f} differs after export");
    }
    // The folder as one model, read back whole.
    pack(&models, &store, &["--replicas", "2"]);
    let restored = dir.path().join("restored");
    ok(&[
        "export",
        "--store",
        &store,
        "--name",
        "sample-model",
        "-o",
        restored.to_str().unwrap(),
    ]);
    for f in &files {
        assert!(
            fs::read(restored.join(f)).unwrap() == fs::read(models.join(f)).unwrap(),
            "{f}"
        );
    }
    let listing = stdout(&ok(&["ls", "--store", &store]));
    assert_eq!(listing.lines().count(), 1 + files.len() + 1, "{listing}");
    ok(&["verify", "--store", &store]);
}

#[test]
fn a_tensor_of_the_largest_chunk_size_and_a_gap_pack_into_a_readable_model() {
    // GGUF: a 1 GiB F32 tensor, a 4 KiB gap, a small tensor; sparse, so it costs no disk.
    let dir = tempfile::tempdir().unwrap();
    let mut head = b"GGUF".to_vec();
    head.extend(3u32.to_le_bytes());
    head.extend(2u64.to_le_bytes());
    head.extend(0u64.to_le_bytes());
    for (name, elems, offset) in [("big", 1u64 << 28, 0u64), ("small", 1024, (1 << 30) + 4096)] {
        head.extend((name.len() as u64).to_le_bytes());
        head.extend(name.as_bytes());
        head.extend(1u32.to_le_bytes());
        head.extend(elems.to_le_bytes());
        head.extend(0u32.to_le_bytes());
        head.extend(offset.to_le_bytes());
    }
    head.resize(head.len().div_ceil(32) * 32, 0);
    let src = dir.path().join("gap.gguf");
    fs::write(&src, &head).unwrap();
    let f = fs::File::options().write(true).open(&src).unwrap();
    f.set_len(head.len() as u64 + (1 << 30) + 8192).unwrap();
    drop(f);
    let store = store_arg(&members(dir.path(), 1));
    let args = ["--chunk-size", "1GiB", "--codec", "zstd"];
    pack(&src, &store, &args);
    // Every cut fits the largest chunk a reader accepts, and readers accept the model.
    let mf = manifest_json(&members(dir.path(), 1)[0], "gap");
    for c in mf["files"][0]["chunks"].as_array().unwrap() {
        assert!(c["len"].as_u64().unwrap() <= 1 << 30, "{c}");
    }
    assert_eq!(common::sync::verify(&store)["ok"], true);
}
