//! Manifest tests, and the manifests other modules' tests build.

use super::*;

pub fn sample() -> Manifest {
    let chunk = |offset, len, byte: u8| ChunkRef {
        offset,
        len,
        hash: Hash32::of(&[byte]),
        codec: Codec::Zstd,
        stored_len: len / 2,
        members: vec!["m0".into(), "m1".into()],
        tensors: vec![TensorTag {
            name: format!("t{byte}"),
            dtype: "BF16".into(),
        }],
        delta: None,
        inline: None,
    };
    Manifest {
        format_version: MANIFEST_FORMAT,
        name: "model".into(),
        version: 3,
        created_unix: 1_700_000_000,
        chunk_size: 4,
        codec: "auto".into(),
        level: 3,
        placement: Placement::Hash,
        replicas: 2,
        members: vec![MemberRef {
            id: "m0".into(),
            index: 0,
        }],
        base: None,
        sealed: Default::default(),
        files: vec![
            FileEntry {
                path: "model.safetensors".into(),
                size: 10,
                mode: 0o644,
                mtime_secs: 1_700_000_000,
                mtime_nanos: 5,
                blake3: Hash32::of(b"file"),
                chunks: vec![chunk(0, 4, 1), chunk(4, 4, 2), chunk(8, 2, 1)],
                lossy: Some(Lossy {
                    kind: "bf16".into(),
                    original_size: 20,
                    original_blake3: Hash32::of(b"orig"),
                }),
            },
            FileEntry {
                path: "sub/empty.txt".into(),
                size: 0,
                mode: 0o600,
                mtime_secs: 0,
                mtime_nanos: 0,
                blake3: Hash32::of(b""),
                chunks: vec![],
                lossy: None,
            },
        ],
    }
}

#[test]
fn chunks_are_numbered_across_files_in_order() {
    let mut m = sample();
    let one = m.files[0].clone();
    m.files = vec![
        one.clone(),
        FileEntry {
            chunks: vec![],
            ..one.clone()
        },
        one,
    ];
    let n = m.files[0].chunks.len() as u64;
    assert!(n > 0);
    assert_eq!(m.chunk_count() as u64, 2 * n);
    let places = m.chunk_places();
    let pos = |f: usize, i: usize| places[f].of(i, &m.files[f].chunks[i]);
    assert_eq!((pos(0, 0).index, pos(2, 0).index), (0, n));
    assert_eq!(pos(2, n as usize - 1).index, 2 * n - 1);
    assert!(places.len() == 3 && pos(2, 0).total == 2 * n);
    assert_eq!(pos(2, 0).hash, &m.files[2].chunks[0].hash);
}

#[test]
fn the_current_copy_is_the_highest_version_then_the_later_pack_whatever_the_order() {
    let at = |version, created_unix| Manifest {
        version,
        created_unix,
        ..sample()
    };
    let copies = [at(2, 100), at(3, 50), at(3, 60), at(1, 999)];
    let picked = |order: &[usize]| {
        let m = current(order.iter().map(|&i| &copies[i])).unwrap();
        (m.version, m.created_unix)
    };
    assert_eq!(picked(&[0, 1, 2, 3]), (3, 60));
    assert_eq!(picked(&[3, 2, 1, 0]), (3, 60));
    // Same version and time, different bytes: the hash decides, the same way every time.
    let a = Manifest {
        chunk_size: 1,
        ..at(4, 7)
    };
    let b = Manifest {
        chunk_size: 2,
        ..at(4, 7)
    };
    let one = current([&a, &b]).unwrap().chunk_size;
    assert_eq!(current([&b, &a]).unwrap().chunk_size, one);
    assert!(current(std::iter::empty()).is_none());
}

#[test]
fn round_trips() {
    let m = sample();
    let bytes = m.to_bytes().unwrap();
    assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
    assert_eq!(m.logical_size(), 10);
    assert_eq!(m.stored_size(), 2 + 2); // chunks 1 and 2; the third repeats chunk 1
    assert_eq!(m.chunk_count(), 3);
    let by = m.by_dtype();
    assert_eq!(by.get("BF16"), Some(&(8, 4)), "{by:?}");
    assert!(m.file("/sub/empty.txt").is_some());
}

#[test]
fn detects_damage() {
    let bytes = sample().to_bytes().unwrap();
    assert!(Manifest::from_bytes(&bytes[..bytes.len() / 2]).is_err());
    assert!(Manifest::from_bytes(b"").is_err());
    // A flipped digit inside a size still parses as JSON but fails the checksum.
    let text = String::from_utf8(bytes)
        .unwrap()
        .replacen("\"size\":10", "\"size\":11", 1);
    assert_eq!(
        Manifest::from_bytes(text.as_bytes()).unwrap_err(),
        "checksum mismatch"
    );
}

#[test]
fn rejects_inconsistent_manifests() {
    let cases: [fn(&mut Manifest); 8] = [
        |m| m.files[0].size = 11,
        |m| m.files[0].chunks[1].offset = 5,
        |m| m.files[0].chunks[1].members.clear(),
        |m| m.files[1].path = "../etc/passwd".into(),
        |m| m.files[1].path = "a//b".into(),
        |m| m.files[1].path = m.files[0].path.clone(),
        |m| m.files[1].path = "model.safetensors/x".into(),
        |m| m.format_version = 99,
    ];
    for (i, break_it) in cases.iter().enumerate() {
        let mut m = sample();
        break_it(&mut m);
        assert!(
            Manifest::from_bytes(&m.to_bytes().unwrap()).is_err(),
            "case {i} accepted"
        );
    }
}

/// `sample` with its second chunk stored as a delta against its first.
fn with_delta() -> Manifest {
    let mut m = sample();
    let base = m.files[0].chunks[0].clone();
    let c = &mut m.files[0].chunks[1];
    c.delta = Some(Delta {
        object: Hash32::of(b"xor"),
        base: Box::new(ChunkRef { len: c.len, ..base }),
        op: DeltaOp::Xor,
    });
    m
}

#[test]
fn deltas_round_trip_and_name_what_they_need() {
    let m = with_delta();
    assert_eq!(Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap(), m);
    let c = &m.files[0].chunks[1];
    let needed: Vec<Hash32> = c.needs().map(|n| *n.object()).collect();
    assert_eq!(needed, vec![Hash32::of(b"xor"), m.files[0].chunks[0].hash]);
    assert_eq!(m.delta_count(), 1);
    // What gc keeps of a copy this build cannot read names the delta and its base too.
    let loose = Manifest::newer_chunks(&m.to_bytes().unwrap()).unwrap();
    assert!(needed.iter().all(|h| loose.contains(h)), "{loose:?}");
    // A base of another length, a base that is a delta, or one with no replica: refused.
    let cases: [fn(&mut Delta); 3] = [
        |d| d.base.len += 1,
        |d| d.base.delta = Some(d.clone()),
        |d| d.base.members.clear(),
    ];
    for (i, break_it) in cases.iter().enumerate() {
        let mut m = with_delta();
        break_it(m.files[0].chunks[1].delta.as_mut().unwrap());
        assert!(
            Manifest::from_bytes(&m.to_bytes().unwrap()).is_err(),
            "case {i} accepted"
        );
    }
}

#[test]
fn a_delta_of_differences_is_written_as_format_2_and_read_only_so() {
    // An XOR delta: format 1, the op not written, so builds that read format 1 read it.
    let mut m = with_delta();
    assert_eq!(format_for(&m.files), 1);
    assert!(!String::from_utf8_lossy(&m.to_bytes().unwrap()).contains("\"op\""));
    // As builds before format 2 wrote it: read, its delta an XOR.
    m.format_version = 1;
    let back = Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(back.files[0].chunks[1].delta_op(), DeltaOp::Xor);
    let mut m = with_delta();
    m.files[0].chunks[1].delta.as_mut().unwrap().op = DeltaOp::Diff16;
    assert_eq!(format_for(&m.files), 2);
    // Claimed as format 1 it is refused: a build reading format 1 would take it for an XOR.
    m.format_version = 1;
    assert!(Manifest::from_bytes(&m.to_bytes().unwrap()).is_err());
    m.format_version = 2;
    let back = Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(
        back.files[0].chunks[1].delta.as_ref().unwrap().op,
        DeltaOp::Diff16
    );
}

#[test]
fn model_names() {
    for ok in ["model", "Llama-3.1-8B", "a_b+c"] {
        assert!(check_model_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".hidden", "a/b", "with space", &"x".repeat(129)] {
        assert!(check_model_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn inline_bytes_round_trip_and_need_no_member() {
    let mut m = sample();
    let c = &mut m.files[0].chunks[0];
    c.inline = Some(Inline(vec![7u8; c.len as usize]));
    c.members.clear();
    let back = Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.files[0].chunks[0].needs().count(), 0);
    // Inline bytes of another length, or beside replicas or a delta: refused.
    let cases: [fn(&mut ChunkRef); 3] = [
        |c| c.inline.as_mut().unwrap().0.push(1),
        |c| c.members.push("m0".into()),
        |c| {
            c.delta = Some(Delta {
                object: Hash32::of(b"x"),
                base: Box::new(c.clone()),
                op: DeltaOp::Xor,
            })
        },
    ];
    for (i, break_it) in cases.iter().enumerate() {
        let mut broken = m.clone();
        break_it(&mut broken.files[0].chunks[0]);
        assert!(
            Manifest::from_bytes(&broken.to_bytes().unwrap()).is_err(),
            "case {i} accepted"
        );
    }
}

#[test]
fn a_grouped_chunk_is_written_as_format_3_and_older_formats_of_it_still_read() {
    let mut m = sample();
    assert!(format_for(&m.files) < 3);
    m.files[0].chunks[0].codec = Codec::Float16;
    // Its groups may be entropy-coded, which builds reading format 2 only cannot decode.
    assert_eq!(format_for(&m.files), 3);
    m.format_version = 3;
    assert_eq!(Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap(), m);
    // As builds before format 3 wrote such a chunk: still read.
    m.format_version = 1;
    assert!(Manifest::from_bytes(&m.to_bytes().unwrap()).is_ok());
    // A base that is grouped counts too.
    let mut d = with_delta();
    d.files[0].chunks[1].delta.as_mut().unwrap().base.codec = Codec::Float32;
    assert_eq!(format_for(&d.files), 3);
    // A format past this build's: refused as a newer shardfs's, not as damage.
    m.format_version = MANIFEST_FORMAT + 1;
    let err = Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap_err();
    assert!(is_newer(&err), "{err}");
}
