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
