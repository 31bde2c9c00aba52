//! Reads over fault-injecting members: hedging, failover, corrupt and stalled replicas.

use super::*;
use crate::codec;
use crate::codec::{CodecChoice, Content};
use crate::member::dir::DirMember;
use crate::member::faulty::{Fault, Faulty};
use crate::member::{IfPresent, MemberIo, Setup};
use crate::store::member::MemberInfo;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Members `a` and `b`, each holding a replica of one chunk, wrapped to inject faults; a
/// member deadline of 300 ms.
fn two(dir: &std::path::Path) -> (Store, Vec<Arc<Faulty>>, ChunkRef, Vec<u8>) {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (mut faulty, mut members) = (Vec::new(), Vec::new());
    for (i, id) in ["a", "b"].iter().enumerate() {
        let d = DirMember::new(&dir.join(id));
        d.init(b"{}", Setup::Existing).unwrap();
        let f = Arc::new(Faulty::new(Arc::new(d)));
        members.push(Member {
            io: f.clone(),
            info: MemberInfo::for_test(id, i as u32),
        });
        faulty.push(f);
    }
    let mut store = Store::assemble(members, vec![]).unwrap();
    store.timeout = Duration::from_millis(300);
    let chunk = put_whole(&store, &data);
    (store, faulty, chunk, data)
}

/// Puts `data` on both members of `store` as a chunk of its own; its reference.
fn put_whole(store: &Store, data: &[u8]) -> ChunkRef {
    let (codec, image) = codec::encode(data, CodecChoice::Zstd, 3, Content::Bytes).unwrap();
    let hash = Hash32::of(data);
    for m in &store.members {
        m.io.put_chunk(&hash, &image, IfPresent::Refuse).unwrap();
    }
    ChunkRef {
        offset: 0,
        len: data.len() as u64,
        hash,
        codec,
        stored_len: image.len() as u64,
        members: vec!["a".into(), "b".into()],
        tensors: vec![],
        delta: None,
        inline: None,
    }
}

fn load(store: &Store, chunk: &ChunkRef) -> (Result<String, ChunkUnreadable>, Vec<u8>) {
    let mut out = vec![0u8; chunk.len as usize];
    let got = store.load_chunk_into(chunk, &mut out, &|_, _| {});
    (got, out)
}

#[test]
fn a_slow_replica_is_hedged_and_the_next_one_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    f[0].set(Fault::Slow(Duration::from_secs(3)));
    let (got, out) = load(&store, &chunk);
    assert_eq!(got.unwrap(), "b");
    assert!(out == data);
    let stats = store.liveness.snapshot(|id| id.to_string());
    assert_eq!(stats[0].hedges, 1, "{stats:?}");
}

#[test]
fn a_corrupt_replica_is_never_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    f[0].set(Fault::Corrupt);
    let failed = Mutex::new(Vec::new());
    let mut out = vec![0u8; chunk.len as usize];
    let got = store.load_chunk_into(&chunk, &mut out, &|id, e| {
        failed.lock().push(format!("{id}: {}", e.kind().name()));
    });
    assert_eq!(got.unwrap(), "b");
    assert!(out == data);
    assert_eq!(*failed.lock(), vec!["a: corrupt".to_string()]);
    f[1].set(Fault::Corrupt);
    assert!(load(&store, &chunk).0.is_err());
}

#[test]
fn a_failing_member_goes_down_and_is_asked_last_then_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    f[0].set(Fault::Fail);
    for _ in 0..2 {
        let (got, out) = load(&store, &chunk);
        assert_eq!(got.unwrap(), "b");
        assert!(out == data);
    }
    assert!(store.liveness.is_down("a"));
    let asked = f[0].gets.load(Ordering::Relaxed);
    assert_eq!(load(&store, &chunk).0.unwrap(), "b");
    assert_eq!(
        f[0].gets.load(Ordering::Relaxed),
        asked,
        "a down member was asked first"
    );
    // Both down: EIO at once, neither asked.
    f[1].set(Fault::Fail);
    f[0].set(Fault::Fail);
    assert!(load(&store, &chunk).0.is_err());
    assert!(load(&store, &chunk).0.is_err());
    let asked = (
        f[0].gets.load(Ordering::Relaxed),
        f[1].gets.load(Ordering::Relaxed),
    );
    assert!(store.liveness.is_down("b"));
    let e = load(&store, &chunk).0.unwrap_err();
    assert!(e.details.contains("down"), "{}", e.details);
    assert_eq!(
        (
            f[0].gets.load(Ordering::Relaxed),
            f[1].gets.load(Ordering::Relaxed)
        ),
        asked
    );
}

#[test]
fn a_chunk_is_looked_for_on_members_its_manifest_does_not_list() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    found_on_b_though_listed_on_a_only(&store, &f, chunk, &data);
}

/// With the manifest listing only "a", whose replica is damaged, the read finds "b"'s.
fn found_on_b_though_listed_on_a_only(
    store: &Store,
    f: &[Arc<Faulty>],
    mut chunk: ChunkRef,
    data: &[u8],
) {
    chunk.members = vec!["a".into()];
    f[0].set(Fault::Corrupt);
    let (got, out) = load(store, &chunk);
    assert_eq!(got.unwrap(), "b");
    assert!(out == data);
}

#[test]
fn an_unlisted_member_that_is_down_is_still_asked_before_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    // "b" failed its last reads (it is down); the manifest, out of date, lists only "a",
    // which lost its replica. "b" holds the chunk: the read finds it there.
    let record = store.liveness.record("b").unwrap();
    for _ in 0..3 {
        record.record(Duration::from_millis(1), Outcome::Failed);
    }
    assert!(store.liveness.is_down("b"));
    found_on_b_though_listed_on_a_only(&store, &f, chunk, &data);
}

#[test]
fn stalled_members_end_in_an_error_not_a_wait_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, _) = two(dir.path());
    f[0].set(Fault::Stall(Duration::from_secs(30)));
    f[1].set(Fault::Stall(Duration::from_secs(30)));
    let started = Instant::now();
    let (got, _) = load(&store, &chunk);
    assert!(got.unwrap_err().details.contains("did not answer in time"));
    // The read gave up on its own deadline (one per replica, plus a second), not the
    // members' 30 s.
    assert!(started.elapsed() < Duration::from_secs(10));
}

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

#[test]
fn a_small_read_from_a_slow_replica_is_hedged_as_a_whole_one_is() {
    use crate::member::faulty::Op;
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    f[0].on(Op::ReadChunkAt, Fault::Slow(Duration::from_secs(3)));
    let started = Instant::now();
    let got = store.load_frames(&chunk, 150_000..150_010, &|_, _| {});
    let got = got.unwrap().unwrap();
    assert_eq!(got.member, "b", "answered by the replica asked second");
    assert!(got.bytes[..] == data[1 << 17..]);
    assert!(started.elapsed() < Duration::from_secs(2));
    let stats = store.liveness.snapshot(|id| id.to_string());
    assert_eq!(stats[0].hedges, 1, "{stats:?}");
}

#[test]
fn a_second_small_read_of_a_replica_takes_one_ranged_read_and_a_table_it_fails_is_read_again() {
    use crate::member::faulty::Op;
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    let failed = Mutex::new(Vec::new());
    let read = |range: std::ops::Range<u64>| {
        let got = store.load_frames(&chunk, range, &|id, _| failed.lock().push(id.to_string()));
        got.unwrap().unwrap()
    };
    let got = read(150_000..150_010);
    assert!(got.bytes[..] == data[1 << 17..]);
    assert_eq!(
        f[0].calls(Op::ReadChunkAt),
        2,
        "header and table, then the frame"
    );
    let got = read(10..20);
    assert!(got.bytes[..] == data[..1 << 17]);
    assert_eq!(
        f[0].calls(Op::ReadChunkAt),
        3,
        "the kept table: the frame alone"
    );
    // Frames the kept table does not match: a bad replica, the other one serves, and the next
    // read of it reads its table again.
    f[0].on_nth(Op::ReadChunkAt, 4, Fault::Corrupt);
    let got = read(0..10);
    assert_eq!(got.member, "b");
    assert!(got.bytes[..] == data[..1 << 17]);
    assert_eq!(*failed.lock(), ["a"]);
    assert_eq!(read(0..10).member, "a");
    assert_eq!(
        f[0].calls(Op::ReadChunkAt),
        6,
        "table read again, then the frame"
    );
}

#[test]
fn a_small_read_takes_only_the_frames_it_needs_checked_and_fails_over() {
    use crate::member::faulty::Op;
    let dir = tempfile::tempdir().unwrap();
    let (store, f, chunk, data) = two(dir.path());
    assert!(readable_by_frames(&chunk));
    // Each read as the first of its replicas: header and table, then the frames.
    let read = |range: std::ops::Range<u64>| {
        store.frame_tables().clear();
        let failed = Mutex::new(0);
        let got = store.load_frames(&chunk, range, &|_, _| *failed.lock() += 1);
        (got, *failed.lock())
    };
    // Bytes 150 000.. lie in the second of two frames: that frame alone, in two ranged reads.
    let (got, failed) = read(150_000..150_010);
    let got = got.unwrap().unwrap();
    assert_eq!(
        (got.at, got.bytes.len(), failed),
        (1 << 17, 200_000 - (1 << 17), 0)
    );
    assert!(got.bytes[..] == data[1 << 17..]);
    assert_eq!(f[0].calls(Op::GetChunk), 0);
    assert_eq!(f[0].calls(Op::ReadChunkAt), 2);
    // A bad table (the first read), a bad frame (the second), a short or failing read: the
    // other replica serves the right bytes, and the bad one is reported.
    for (nth, fault) in [
        (1, Fault::Corrupt),
        (2, Fault::Corrupt),
        (1, Fault::Short),
        (2, Fault::Short),
        (2, Fault::Fail),
    ] {
        f[0].on_nth(Op::ReadChunkAt, f[0].calls(Op::ReadChunkAt) + nth, fault);
        let (got, failed) = read(0..10);
        let got = got.unwrap().unwrap();
        assert!(
            got.at == 0 && got.bytes[..] == data[..1 << 17],
            "{nth} {fault:?}"
        );
        assert_eq!(failed, 1, "{nth} {fault:?}");
    }
    // Both bad: an error, not bytes (each replica asked twice: again after a look for members
    // replaced since the store opened, as for a whole chunk).
    for m in &f {
        m.on(Op::ReadChunkAt, Fault::Corrupt);
    }
    let (got, failed) = read(0..10);
    assert!(got.is_err() && failed == 4, "{failed}");
    for m in &f {
        m.on(Op::ReadChunkAt, Fault::None);
    }
    // A replica stored in one piece (a store made before frames) is left to a whole read.
    let raw = crate::codec::ChunkHeader {
        codec: codec::Codec::None,
        raw_len: data.len() as u64,
        payload_len: data.len() as u64,
        frame_log: 0,
    };
    let mut image = raw.to_bytes().to_vec();
    image.extend_from_slice(&data);
    let hash = Hash32::of(&image[..1000]);
    for m in &store.members {
        m.io.put_chunk(&hash, &image, IfPresent::Refuse).unwrap();
    }
    let whole = ChunkRef {
        hash,
        codec: codec::Codec::None,
        stored_len: image.len() as u64,
        ..chunk.clone()
    };
    assert!(readable_by_frames(&whole));
    assert!(
        store
            .load_frames(&whole, 0..10, &|_, _| {})
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_chunk_stored_raw_is_used_in_the_buffer_it_was_read_into_once_it_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _f, zstd, zstd_data) = two(dir.path());
    // A chunk stored raw, in frames (a GGUF's quantized blocks are).
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (codec, image) = codec::encode(&data, CodecChoice::None, 3, Content::Bytes).unwrap();
    assert_eq!(codec, codec::Codec::None);
    let hash = Hash32::of(&data);
    for m in &store.members {
        m.io.put_chunk(&hash, &image, IfPresent::Refuse).unwrap();
    }
    let raw = ChunkRef {
        hash,
        len: data.len() as u64,
        codec,
        stored_len: image.len() as u64,
        ..zstd.clone()
    };
    let load_buf = |chunk: &ChunkRef| {
        let mut out = crate::buffer::ChunkBuf::for_overwrite(chunk.len as usize).unwrap();
        let given = out.as_ptr();
        let failed = Mutex::new(Vec::new());
        let got = store.load_chunk_buf(chunk, &mut out, &|m, _| failed.lock().push(m.to_string()));
        (got, out.as_ptr() != given, out, failed.into_inner())
    };
    // Raw: the member's buffer is the chunk's, holding exactly its bytes.
    let (got, replaced, out, failed) = load_buf(&raw);
    assert_eq!(
        (got.unwrap(), replaced, failed.len()),
        ("a".into(), true, 0)
    );
    assert!(out[..] == data[..]);
    // Compressed: decoded into the buffer given.
    let (got, replaced, out, _) = load_buf(&zstd);
    assert_eq!((got.unwrap(), replaced), ("a".into(), false));
    assert!(out[..] == zstd_data[..]);
    // A raw replica one byte off: its hash fails where it lies; the other replica serves.
    let mut bad = image.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    store.members[0]
        .io
        .put_chunk(&hash, &bad, IfPresent::Replace)
        .unwrap();
    let (got, _, out, failed) = load_buf(&raw);
    assert_eq!((got.unwrap(), failed), ("b".into(), vec!["a".to_string()]));
    assert!(out[..] == data[..]);
    // Both off: an error, not bytes.
    store.members[1]
        .io
        .put_chunk(&hash, &bad, IfPresent::Replace)
        .unwrap();
    let (got, _, _, _) = load_buf(&raw);
    assert!(got.is_err());
}

#[test]
fn only_an_image_holding_its_chunk_as_it_is_is_checked_in_place() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let hash = Hash32::of(&data);
    let chunk = ChunkRef {
        offset: 0,
        len: data.len() as u64,
        hash,
        codec: codec::Codec::None,
        stored_len: 0,
        members: vec![],
        tensors: vec![],
        delta: None,
        inline: None,
    };
    // In frames after their table, and in one piece.
    let (_, framed) = codec::encode(&data, CodecChoice::None, 3, Content::Bytes).unwrap();
    let whole = crate::codec::ChunkHeader {
        codec: codec::Codec::None,
        raw_len: data.len() as u64,
        payload_len: data.len() as u64,
        frame_log: 0,
    };
    let mut one_piece = whole.to_bytes().to_vec();
    one_piece.extend_from_slice(&data);
    for image in [&framed, &one_piece] {
        let span = check::check_in_place(image, &chunk).unwrap().unwrap();
        assert!(image[span] == data[..]);
        let mut bad = image.clone();
        bad[codec::HEADER_LEN + 7] ^= 1;
        assert!(check::check_in_place(&bad, &chunk).is_err());
        // A byte short: left to the decoder, which says why.
        assert!(
            check::check_in_place(&image[..image.len() - 1], &chunk)
                .unwrap()
                .is_none()
        );
    }
    // Compressed: decoded, not used in place.
    let (_, zstd) = codec::encode(&data, CodecChoice::Zstd, 3, Content::Bytes).unwrap();
    assert!(check::check_in_place(&zstd, &chunk).unwrap().is_none());
}
