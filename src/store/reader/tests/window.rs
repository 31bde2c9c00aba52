//! Windows of a chunk too large to hold, read over fault-injecting members.

use super::*;

/// Bytes `window` of the chunk `two` built, read in pieces.
fn window(
    store: &Store,
    chunk: &ChunkRef,
    window: std::ops::Range<u64>,
) -> Result<Vec<u8>, ChunkUnreadable> {
    let mut out = vec![0u8; (window.end - window.start) as usize];
    let failed = Mutex::new(0);
    store.load_window_into(chunk, window, &mut out, &|_, _| *failed.lock() += 1)?;
    Ok(out)
}

#[test]
fn a_window_of_a_chunk_decoded_in_pieces_has_exactly_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    for w in [0..4096, 70_000..130_001, 199_999..200_000, 0..200_000] {
        let got = window(&store, &chunk, w.clone()).unwrap();
        assert!(got[..] == data[w.start as usize..w.end as usize], "{w:?}");
    }
    // Read by ranges, never whole.
    assert_eq!(f[0].calls(crate::member::faulty::Op::GetChunk), 0);
    assert!(f[0].calls(crate::member::faulty::Op::ReadChunkAt) >= 2);
}

#[test]
fn a_window_fails_over_from_a_corrupt_short_or_failing_replica_and_never_hands_out_wrong_bytes() {
    use crate::member::faulty::Op;
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    for fault in [Fault::Corrupt, Fault::Short, Fault::Fail] {
        f[0].on(Op::ReadChunkAt, fault);
        let got = window(&store, &chunk, 1000..5000).unwrap();
        assert!(got[..] == data[1000..5000], "{fault:?}");
    }
    // A fault on the second range only (mid-chunk), on both replicas: each is read again after
    // the look for replaced members, and gives the right bytes then.
    f[0].on(Op::ReadChunkAt, Fault::None);
    let calls = |i: usize| f[i].calls(Op::ReadChunkAt);
    let before = calls(0);
    assert!(window(&store, &chunk, 0..10).unwrap() == data[..10]);
    let per_read = calls(0) - before;
    let second_range = |i: usize, pass: u64| calls(i) + pass * per_read + 2;
    for (i, member) in f.iter().enumerate() {
        member.on_nth(Op::ReadChunkAt, second_range(i, 0), Fault::Corrupt);
    }
    assert!(window(&store, &chunk, 0..10).unwrap() == data[..10]);
    assert_eq!(
        calls(0) - before,
        3 * per_read,
        "a clean read, then a read twice"
    );
    // The same fault on both passes: an error, not bytes.
    for (i, member) in f.iter().enumerate() {
        for pass in 0..2 {
            member.on_nth(Op::ReadChunkAt, second_range(i, pass), Fault::Corrupt);
        }
    }
    let err = window(&store, &chunk, 0..10).unwrap_err();
    assert!(
        err.details.contains("hash") || err.details.contains("corrupt"),
        "{}",
        err.details
    );
}

#[test]
fn a_window_asks_no_replica_while_every_one_is_down() {
    use crate::member::faulty::Op;
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    for id in ["a", "b"] {
        let record = store.liveness.record(id).unwrap();
        for _ in 0..3 {
            record.record(Duration::from_millis(1), Outcome::Failed);
        }
    }
    let asked = (f[0].calls(Op::ReadChunkAt), f[1].calls(Op::ReadChunkAt));
    let e = window(&store, &chunk, 0..10).unwrap_err();
    assert!(e.details.contains("down"), "{}", e.details);
    assert_eq!(
        (f[0].calls(Op::ReadChunkAt), f[1].calls(Op::ReadChunkAt)),
        asked
    );
    // One back: it is asked and serves.
    store
        .liveness
        .record("b")
        .unwrap()
        .record(Duration::from_millis(1), Outcome::Answered { bytes: 1 });
    assert!(window(&store, &chunk, 0..10).unwrap() == data[..10]);
}
