//! Small reads through a mount decode, and fetch, only the 128 KiB frames that hold them; a
//! stream still loads whole chunks. Bytes compared with the source every time.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

#[test]
fn small_random_reads_take_only_their_frames_and_a_stream_whole_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 2));
    // 64 MiB: the first half compressible (zstd frames), the second random (raw frames).
    let mut rng = Rng::new(71);
    let mut data = rng.bytes(64 << 20);
    for page in data[..32 << 20].chunks_mut(8192) {
        page[..6000].fill(0);
    }
    pack_bytes(d, &store, "m", &data, &["--chunk-size", "4MiB"]);
    let mnt = d.join("mnt");
    // The chunk path alone: with a tier, a second open could be served from its copy.
    let m = Mounted::new(
        &store,
        &mnt,
        &d.join("state"),
        &["--name", "m", "--no-local-cache"],
    );
    let path = mnt.join("m.bin");
    let f = fs::File::open(&path).unwrap();
    // Page-sized reads, exactly as asked (no kernel read-ahead), each far from the one before
    // (no stream): alternately in the first and the last quarter of the file.
    assert_eq!(
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) },
        0
    );
    let reads = 40u64;
    for i in 0..reads {
        let base = if i % 2 == 0 { 0 } else { 48 << 20 };
        let at = base + rng.below((16 << 20) - 4096);
        let mut page = [0u8; 4096];
        f.read_exact_at(&mut page, at).unwrap();
        assert!(page[..] == data[at as usize..at as usize + 4096], "at {at}");
    }
    let s = m.status();
    let n = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    let fetched = |s: &serde_json::Value| -> u64 {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["bytes_fetched"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(n(&s, "chunks_decompressed"), 0, "{s}");
    assert!(n(&s, "frame_reads") >= reads - 2, "{s}");
    // At most a table and two frames per read, not 4 MiB chunks.
    assert!(fetched(&s) <= reads * (2 * (128 << 10) + 8192), "{s}");
    drop(f);
    // A stream through the whole file: exact, in whole chunks.
    assert!(fs::read(&path).unwrap() == data, "wrong bytes");
    let s = m.status();
    assert!(n(&s, "chunks_decompressed") >= 14, "{s}");
    assert!(n(&s, "frame_reads") <= reads + 2, "{s}");
}
