//! The tier without a mount: fills from two chunkings, a writer that fails, a writer behind.

use super::*;
use crate::buffer::ChunkBuf;
use crate::codec::Codec;
use crate::store::manifest::ChunkRef;
use parking_lot::Mutex;

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
    // Offers the writer is too busy for are loaded again (from the chunking they came from).
    tier.on_missed(reload_from(data.clone(), Arc::default()));
    // The first half from one chunking, the rest from the other.
    tier.offer(&a, 0, &chunk(&data, &a, 0));
    tier.offer(&b, 1, &chunk(&data, &b, 1));
    for i in 2..b.chunks.len() {
        tier.offer(&b, i, &chunk(&data, &b, i));
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
    tier.offer(&f, 0, &chunk(&data, &f, 0));
    wait_for("the tier did not turn off", || {
        tier.off.load(Ordering::SeqCst)
    });
    // Offers return, and no copy is ever handed out.
    for _ in 0..2 * QUEUED {
        tier.offer(&f, 1, &chunk(&data, &f, 1));
    }
    assert!(tier.open_copy(&f).is_none());
}

/// A reload hook serving `data` cut as `file`, recording the chunks it was asked for.
fn reload_from(data: Vec<u8>, asked: Arc<Mutex<Vec<usize>>>) -> Reload {
    Box::new(move |file, i| {
        asked.lock().push(i);
        Some(chunk(&data, file, i))
    })
}

#[test]
fn chunks_read_while_the_writer_is_behind_are_loaded_again_and_complete_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Tier::open(dir.path(), 1 << 30).unwrap();
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let f = chunked(&data, 300_001);
    let asked = Arc::new(Mutex::new(Vec::new()));
    tier.on_missed(reload_from(data.clone(), asked.clone()));
    // Every chunk offered (twice, as a chunk read in several requests is) while the writer is
    // held: one is taken, a few queue, the others are missed, and no offer waits.
    let held = tier.hold_writer();
    for i in 0..f.chunks.len() {
        tier.offer(&f, i, &chunk(&data, &f, i));
        tier.offer(&f, i, &chunk(&data, &f, i));
    }
    assert!(tier.state.lock().has_missed());
    drop(held);
    wait_for("the copy did not complete", || tier.report().copies == 1);
    let report = tier.report();
    let least = (f.chunks.len() - QUEUED - 1) as u64;
    assert!(report.reloaded >= least, "{report:?}");
    assert_eq!(report.damaged, 0);
    // Each chunk was asked for once at most.
    let mut asked = asked.lock().clone();
    assert_eq!(asked.len() as u64, report.reloaded);
    asked.dedup();
    assert_eq!(asked.len() as u64, report.reloaded);
    let mut got = Vec::new();
    (&tier.open_copy(&f).expect("a checked copy"))
        .read_to_end(&mut got)
        .unwrap();
    assert!(got == data);
}

#[test]
fn only_chunks_that_were_read_are_loaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Tier::open(dir.path(), 1 << 30).unwrap();
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i * 17 % 251) as u8).collect();
    let f = chunked(&data, 250_000);
    let asked = Arc::new(Mutex::new(Vec::new()));
    tier.on_missed(reload_from(data.clone(), asked.clone()));
    // A partial load: the first half of the chunks read, the writer behind.
    let half = f.chunks.len() / 2;
    let held = tier.hold_writer();
    for i in 0..half {
        tier.offer(&f, i, &chunk(&data, &f, i));
    }
    drop(held);
    let least = (half - QUEUED - 1) as u64;
    wait_for("the missed chunks were not loaded again", || {
        tier.report().reloaded >= least && !tier.state.lock().has_missed()
    });
    // The half read is in; the rest was never fetched for the copy, which stays unfinished.
    assert!(asked.lock().iter().all(|&i| i < half));
    let report = tier.report();
    assert_eq!((report.copies, report.filling), (0, 1));
    assert!(tier.open_copy(&f).is_none());
}
