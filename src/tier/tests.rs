//! The tier without a mount: fills from two chunkings, a writer that fails.

use super::*;
use crate::buffer::ChunkBuf;
use crate::codec::Codec;
use crate::store::manifest::ChunkRef;

/// `data` cut every `step` bytes, as a file entry of its own hash.
fn chunked(data: &[u8], step: usize) -> Arc<FileEntry> {
    let chunks = data
        .chunks(step)
        .enumerate()
        .map(|(i, c)| ChunkRef {
            offset: (i * step) as u64,
            len: c.len() as u64,
            hash: Hash32::of(c),
            codec: Codec::None,
            stored_len: c.len() as u64,
            members: vec![],
            tensors: vec![],
            delta: None,
            inline: None,
        })
        .collect();
    let mut f = FileEntry::for_test(data.len() as u64, chunks);
    f.blake3 = Hash32::of(data);
    Arc::new(f)
}

fn chunk(data: &[u8], file: &FileEntry, i: usize) -> Chunk {
    let c = &file.chunks[i];
    Arc::new(ChunkBuf::from_slice(&data[c.offset as usize..(c.offset + c.len) as usize]).unwrap())
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{what}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn two_chunkings_of_one_file_fill_one_correct_copy() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Tier::open(dir.path(), 1 << 30).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (a, b) = (chunked(&data, 1 << 20), chunked(&data, 700_000));
    // The first half from one chunking, the rest from the other.
    tier.offer(&a, 0, &chunk(&data, &a, 0), Backlog::Wait);
    tier.offer(&b, 1, &chunk(&data, &b, 1), Backlog::Wait);
    for i in 2..b.chunks.len() {
        tier.offer(&b, i, &chunk(&data, &b, i), Backlog::Wait);
    }
    wait_for("the copy did not complete", || tier.report().copies == 1);
    let copy = tier.open_copy(&a).expect("a checked copy");
    let mut got = Vec::new();
    (&copy).read_to_end(&mut got).unwrap();
    assert!(got == data);
    assert_eq!(tier.report().damaged, 0);
    // Bytes already in are not written twice; the copy serves the other chunking too.
    assert!(tier.open_copy(&b).is_some());
}

#[test]
fn a_failed_writer_turns_the_tier_off_and_nothing_waits() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Tier::open(dir.path(), 1 << 30).unwrap();
    let data = vec![5u8; 3 << 20];
    let f = chunked(&data, 1 << 20);
    tier.panic_next.store(true, Ordering::SeqCst);
    tier.offer(&f, 0, &chunk(&data, &f, 0), Backlog::Wait);
    wait_for("the tier did not turn off", || {
        tier.off.load(Ordering::SeqCst)
    });
    // Offers (even waiting ones) return, and no copy is ever handed out.
    for _ in 0..2 * QUEUED {
        tier.offer(&f, 1, &chunk(&data, &f, 1), Backlog::Wait);
    }
    assert!(tier.open_copy(&f).is_none());
}
