//! The edges an operator meets: a source file changing while it is packed, an export
//! interrupted by Ctrl-C, a chunk size too small to be sane, a pack to part of the member list.

mod common;

use common::*;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_file_that_changes_while_it_is_packed_is_never_published_torn() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = members(d, 2);
    let store = store_arg(&paths);
    let src = d.join("big.bin");
    let original = Rng::new(91).bytes(256 << 20);
    fs::write(&src, &original).unwrap();
    let mut pack = Command::new(bin())
        .args(["pack", src.to_str().unwrap(), "--store", &store])
        .args(["--name", "big", "--chunk-size", "1MiB", "--codec", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // As soon as the pack holds the store's lock (it has looked at the file and is about to
    // read it), the file is changed in the middle and grows at the end (a download still being
    // written, an editor saving over it).
    let started = Instant::now();
    while !paths[0].join("lock").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "pack took no lock");
        if pack.try_wait().unwrap().is_some() {
            let out = pack.wait_with_output().unwrap();
            panic!("pack ended before it was seen: {out:?}");
        }
        std::thread::yield_now();
    }
    let mut f = fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.seek(SeekFrom::Start(200 << 20)).unwrap();
    f.write_all(&[0xAB; 4096]).unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(&[0xCD; 1 << 20]).unwrap();
    drop(f);
    let out = pack.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // Only possible if every byte was read before the change: then it is the original.
        assert!(export(&store, "big", None) == original, "a torn file was published");
    } else {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("changed while it was packed"), "{err}");
        let listed = stdout(&ok(&["ls", "--store", &store]));
        assert!(!listed.contains("big"), "{listed}");
    }
}
