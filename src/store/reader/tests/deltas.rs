//! Deltas read with their base over fault-injecting members: which replica is blamed.

use super::*;

/// Chunk `base` on both members of `store`, and a delta of other bytes against it: the delta's
/// reference and the bytes it reads as.
fn delta_of(store: &Store, base: &ChunkRef, base_data: &[u8]) -> (ChunkRef, Vec<u8>) {
    let chunk_data: Vec<u8> = base_data.iter().map(|b| b ^ (b % 3)).collect();
    let mut xor = chunk_data.clone();
    codec::xor_into(&mut xor, base_data);
    let stored = put_whole(store, &xor);
    let delta = ChunkRef {
        hash: Hash32::of(&chunk_data),
        delta: Some(crate::store::manifest::Delta {
            object: stored.hash,
            base: Box::new(base.clone()),
            op: crate::codec::delta::DeltaOp::Xor,
        }),
        ..stored
    };
    (delta, chunk_data)
}

#[test]
fn a_delta_reads_back_only_with_the_base_it_was_taken_against() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f, base, base_data) = two(dir.path());
    let (delta, chunk_data) = delta_of(&store, &base, &base_data);
    let (got, out) = load(&store, &delta);
    assert!(got.is_ok() && out == chunk_data);
    // Another base of the same length, each part checking out: an error, not other bytes.
    let other = put_whole(&store, &vec![7u8; base_data.len()]);
    let mut wrong = delta.clone();
    *wrong.delta.as_mut().unwrap().base = other;
    let e = load(&store, &wrong).0.unwrap_err();
    assert!(
        e.details.contains("no replica made the chunk's bytes"),
        "{}",
        e.details
    );
    // A window of a delta is cut from the whole chunk.
    let mut window = vec![0u8; 1000];
    store
        .load_window_into(&delta, 5000..6000, &mut window, &|_, _| {})
        .unwrap();
    assert!(window == chunk_data[5000..6000]);
    // A base with no replica left: the delta alone is never handed out.
    for m in &store.members {
        m.io.delete_chunk(&base.hash).unwrap();
    }
    let e = load(&store, &delta).0.unwrap_err();
    assert_eq!(e.hash, base.hash, "{}", e.details);
    assert!(f[0].gets.load(Ordering::Relaxed) > 0);
}

#[test]
fn a_bad_replica_of_a_delta_or_of_its_base_is_the_one_blamed() {
    use crate::member::faulty::Op;
    let dir = tempfile::tempdir().unwrap();
    let (store, f, base, base_data) = two(dir.path());
    let (delta, chunk_data) = delta_of(&store, &base, &base_data);
    let failed = Mutex::new(Vec::new());
    let read = || {
        failed.lock().clear();
        let mut out = vec![0u8; delta.len as usize];
        let got = store.load_chunk_into(&delta, &mut out, &|id, e| {
            failed.lock().push(format!("{id}: {}", e.kind().name()));
        });
        (got, out, failed.lock().clone())
    };
    let gets = |i: usize| f[i].calls(Op::GetChunk);
    // Base and delta each read once, from the first member, and no hash of the base alone.
    let (got, out, failures) = read();
    assert!(got.is_ok() && out == chunk_data && failures.is_empty());
    assert_eq!((gets(0), gets(1)), (2, 0));
    // The base's image bad: it is the one reported, read again, and the delta then checks out.
    f[0].on_nth(Op::GetChunk, gets(0) + 1, Fault::Corrupt);
    let (got, out, failures) = read();
    assert!(got.is_ok() && out == chunk_data, "{got:?}");
    assert_eq!(failures, ["a: corrupt"]);
    assert_eq!((gets(0), gets(1)), (5, 0), "base, delta, the base again");
    // The delta's replica bad: it is the one reported, the next replica of it serves.
    f[0].on_nth(Op::GetChunk, gets(0) + 2, Fault::Corrupt);
    let (got, out, failures) = read();
    assert_eq!(got.unwrap(), "b");
    assert!(out == chunk_data);
    assert_eq!(failures, ["a: corrupt"]);
    assert_eq!(
        (gets(0), gets(1)),
        (7, 1),
        "base and delta from a, the delta from b"
    );
    // Every replica of the base holds other bytes: the error names the base, and only the base's
    // reads are blamed (the first image, then each replica read again, and again after the look
    // for replaced members), never the delta's.
    let other = codec::encode(
        &vec![9u8; base_data.len()],
        CodecChoice::Zstd,
        3,
        Content::Bytes,
    );
    for m in &store.members {
        m.io.delete_chunk(&base.hash).unwrap();
        m.io.put_chunk(&base.hash, &other.as_ref().unwrap().1, IfPresent::Refuse)
            .unwrap();
    }
    let (got, _, failures) = read();
    assert_eq!(got.unwrap_err().hash, base.hash);
    let blamed = [
        "a: corrupt",
        "a: corrupt",
        "b: corrupt",
        "a: corrupt",
        "b: corrupt",
    ];
    assert_eq!(failures, blamed);
}
