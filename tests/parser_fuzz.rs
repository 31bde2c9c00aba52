//! Property tests of the layout parsers: damaged, truncated or random headers must never panic
//! or hang, and whatever a parser accepts must lie inside the file without overlaps. Runs a
//! short search in the test suite; set PROPTEST_CASES for a longer one.

use proptest::prelude::*;
use shardfs::chunking::{self, Bytes, Partition, TensorSpan};

fn safetensors_image() -> Vec<u8> {
    let header = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[4,2],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(&[7u8; 28]);
    out
}

fn gguf_image() -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes()); // tensors
    out.extend_from_slice(&2u64.to_le_bytes()); // metadata
    for (k, t) in [("general.name", 8u32), ("general.alignment", 4)] {
        out.extend_from_slice(&(k.len() as u64).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&t.to_le_bytes());
        if t == 8 {
            out.extend_from_slice(&4u64.to_le_bytes());
            out.extend_from_slice(b"tiny");
        } else {
            out.extend_from_slice(&32u32.to_le_bytes());
        }
    }
    out.extend_from_slice(&1u64.to_le_bytes());
    out.extend_from_slice(b"w");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&8u64.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // F16
    out.extend_from_slice(&0u64.to_le_bytes());
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    out.extend_from_slice(&[9u8; 16]);
    out
}

const TINY_PTH: &[u8] = include_bytes!("fixtures/tiny.pth");

fn check(bytes: &[u8]) {
    let src = Bytes(bytes);
    if let Ok(Some(spans)) = chunking::layout(&src) {
        let spans: Vec<TensorSpan> = spans;
        for s in &spans {
            assert!(
                s.start <= s.end && s.end <= bytes.len() as u64,
                "{s:?} outside {}",
                bytes.len()
            );
        }
        for w in spans.windows(2) {
            assert!(w[0].end <= w[1].start, "overlap {w:?}");
        }
    }
    // Planning never fails for a valid chunk size, and its cuts tile the file.
    let cuts = chunking::plan(&src, Partition::Tensor, 64, "fuzz").unwrap();
    let mut at = 0;
    for c in &cuts {
        assert_eq!(c.offset, at);
        assert!(c.len > 0);
        at += c.len;
    }
    assert_eq!(at, bytes.len() as u64);
}

/// A valid image with some bytes overwritten and possibly cut short.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    (prop::collection::vec((0..len, any::<u8>()), 0..8), 0..=len).prop_map(move |(edits, cut)| {
        let mut b = base.clone();
        for (at, v) in edits {
            b[at] = v;
        }
        b.truncate(cut.max(1));
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn safetensors_mutations(bytes in mutated(safetensors_image())) {
        check(&bytes);
    }

    #[test]
    fn gguf_mutations(bytes in mutated(gguf_image())) {
        check(&bytes);
    }

    #[test]
    fn torch_zip_mutations(bytes in mutated(TINY_PTH.to_vec())) {
        check(&bytes);
    }

    #[test]
    fn random_bytes_with_a_magic(magic in 0usize..3, tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = [b"GGUF".to_vec(), b"PK\x03\x04".to_vec(), 40u64.to_le_bytes().to_vec()][magic].clone();
        bytes.extend_from_slice(&tail);
        check(&bytes);
    }
}

#[test]
fn valid_images_are_recognised() {
    for img in [safetensors_image(), gguf_image(), TINY_PTH.to_vec()] {
        assert!(matches!(chunking::layout(&Bytes(&img)), Ok(Some(_))));
        check(&img);
    }
}
