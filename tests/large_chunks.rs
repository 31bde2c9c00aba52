//! Chunks larger than the whole cache, as a member may hold whatever a manifest says: they are
//! read in windows of the cache, each decoded from the chunk in pieces and checked against the
//! chunk's hash, so the daemon's memory stays within the cache budget and readers get the exact
//! bytes.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::FileExt;

#[test]
fn chunks_larger_than_the_cache_are_read_in_windows_within_the_budget() {
    // Three 1 GiB chunks (a sparse file, one distinct byte per GiB) and a 64 MiB cache: a member
    // can hold chunks this large, and readers asking for all three at once must not hold even
    // one whole.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = members(d, 1);
    let s = store_arg(&paths);
    let src = d.join("g.bin");
    let f = fs::File::create(&src).unwrap();
    f.set_len(3 << 30).unwrap();
    for i in 0..3u64 {
        f.write_at(&[i as u8 + 1; 4096], i << 30).unwrap();
    }
    drop(f);
    ok(&[
        "pack",
        src.to_str().unwrap(),
        "--store",
        &s,
        "--chunk-size",
        "1GiB",
    ]);
    fs::remove_file(&src).unwrap();
    let mnt = d.join("mnt");
    let m = Mounted::new(&s, &mnt, &d.join("state"), &["--cache-size", "64MiB"]);
    let file = fs::File::open(mnt.join("g/g.bin")).unwrap();
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for i in 0..3u64 {
            let file = &file;
            scope.spawn(move || {
                let mut buf = [0u8; 4096];
                file.read_exact_at(&mut buf, i << 30).unwrap();
                assert!(buf.iter().all(|&b| b == i as u8 + 1));
            });
        }
    });
    let hwm_kib = proc_status(m.pid(), "VmHWM");
    eprintln!(
        "three concurrent reads of 1 GiB chunks, 64 MiB cache: {:.1} s, daemon peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        hwm_kib >> 10
    );
    // Chunks larger than the cache are read in windows of it: the cache and the daemon's own,
    // never a whole chunk.
    assert!(
        hwm_kib < (64 + 64) << 10,
        "daemon peak RSS {hwm_kib} KiB, over the 64 MiB cache + 64 MiB"
    );
    // A window decodes its whole chunk: the member's bytes fetched count every stored byte.
    let stored: u64 = manifest_json(&paths[0], "g")["files"][0]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["stored_len"].as_u64().unwrap())
        .sum();
    let fetched = m.status()["members"][0]["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched >= stored,
        "{fetched} bytes fetched, {stored} stored"
    );
    drop(file);
    assert!(m.unmount().status.success());
}

#[test]
fn an_incompressible_chunk_larger_than_the_cache_reads_back_exactly_across_its_windows() {
    // One 40 MiB chunk of random bytes, stored raw (its image as large as the chunk), and a
    // 16 MiB cache: windows of 4 MiB, each read from the member by ranges.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = store_arg(&members(d, 2));
    let data = Rng::new(11).bytes(40 << 20);
    let src = d.join("r.bin");
    fs::write(&src, &data).unwrap();
    let src_arg = src.to_str().unwrap();
    let args = ["pack", src_arg, "--store", &s, "--chunk-size", "64MiB"];
    ok(&[&args[..], &["--codec", "none", "--replicas", "2"]].concat());
    let mnt = d.join("mnt");
    let m = Mounted::new(&s, &mnt, &d.join("state"), &["--cache-size", "16MiB"]);
    let file = fs::File::open(mnt.join("r/r.bin")).unwrap();
    // Reads that cross a window's edge, and the chunk's last bytes.
    let mut rng = Rng::new(3);
    let mut edges: Vec<u64> = (1..10).map(|k| (k << 22) - 100).collect();
    edges.extend((0..20).map(|_| rng.below((40 << 20) - 300)));
    edges.push((40 << 20) - 300);
    for at in edges {
        let mut buf = [0u8; 300];
        file.read_exact_at(&mut buf, at).unwrap();
        assert!(
            buf[..] == data[at as usize..at as usize + 300],
            "300 bytes at {at}"
        );
    }
    // And the whole file, front to back.
    assert!(fs::read(mnt.join("r/r.bin")).unwrap() == data);
    let hwm_kib = proc_status(m.pid(), "VmHWM");
    eprintln!(
        "40 MiB raw chunk, 16 MiB cache: daemon peak RSS {} MiB",
        hwm_kib >> 10
    );
    assert!(
        hwm_kib < (16 + 64) << 10,
        "daemon peak RSS {hwm_kib} KiB, over the 16 MiB cache + 64 MiB"
    );
    assert_eq!(m.status()["errors"].as_u64(), Some(0));
    drop(file);
    assert!(m.unmount().status.success());
}
