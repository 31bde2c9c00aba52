//! Unmodified Python loaders (safetensors, numpy, gguf, pickle, torch) read models through a
//! real mount and get every tensor equal to the original. Needs SHARDFS_PYTHON (scripts/test).

mod common;
use common::*;

#[test]
fn python_loaders_read_the_mount() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("sample-model");
    gen_models(&models, 24);
    let store = store_arg(&members(dir.path(), 3));
    pack(
        &models,
        &store,
        &["--replicas", "2", "--chunk-size", "1MiB"],
    );
    let m = Mounted::new(
        &store,
        &dir.path().join("mnt"),
        &dir.path().join("state"),
        &["--name", "sample-model"],
    );
    let stdout = python_script(
        "check_loaders.py",
        &[models.to_str().unwrap(), m.dir.to_str().unwrap()],
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        6,
        "{stdout}"
    );
    // Cold again, through the whole model folder view.
    drop(m);
    let m = Mounted::new(
        &store,
        &dir.path().join("mnt"),
        &dir.path().join("state"),
        &[],
    );
    python_script(
        "check_loaders.py",
        &[
            models.to_str().unwrap(),
            m.dir.join("sample-model").to_str().unwrap(),
        ],
    );
    assert_eq!(m.status()["errors"], 0);
}
