//! Reads over fault-injecting members: hedging, failover, corrupt and stalled replicas, the
//! frames of a small read, raw chunks used in place; windows of chunks too large to hold in
//! `window.rs`, deltas with their base in `deltas.rs`.

use super::*;
use crate::codec;
use crate::codec::{CodecChoice, Content};
use crate::member::dir::DirMember;
use crate::member::faulty::{Fault, Faulty};
use crate::member::{IfPresent, MemberIo, Setup};
use crate::store::member::MemberInfo;
use std::sync::Arc;
use std::sync::atomic::Ordering;

mod deltas;
mod window;

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
