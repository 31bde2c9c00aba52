//! Storing one chunk of a pack: placing it, finding what its targets hold already, and
//! writing it where they lack it — whole, as a delta against a base chunk where that pays
//! (`pack --base`), or kept in the manifest when a chunk file would grow it.

use super::super::base;
use super::super::manifest::{ChunkRef, Delta, Inline};
use super::super::member::Member;
use super::super::{Store, StoreError, member_err};
use super::PackOptions;
use crate::chunking::Cut;
use crate::codec::delta::DeltaOp;
use crate::codec::{self, ChunkHeader, Codec, HEADER_LEN, Hash32};
use crate::member::{ChunkHead, IfPresent, MemberError};
use crate::placement::{self, ChunkPos, Slot};
use std::collections::HashSet;
use std::sync::Mutex;

/// Chunks shorter than this may be kept in the manifest (see `Ctx::inline`): at this length and
/// over, a chunk file's 24-byte header costs at most 0.1% of its bytes.
pub const INLINE_MAX: u64 = 24 << 10;

/// Shared state of the chunk workers.
pub(super) struct Ctx<'a> {
    pub(super) store: &'a Store,
    pub(super) slots: Vec<Slot<'a>>,
    pub(super) opts: &'a PackOptions,
    pub(super) total_chunks: u64,
    /// Chunks this pack wrote at least one replica of.
    pub(super) written: Mutex<HashSet<Hash32>>,
    pub(super) progress: crate::progress::Reporter,
}

/// A chunk file image and the codec it was encoded with.
type Encoded = (Codec, Vec<u8>);

/// A chunk's image stored whole, made when first needed, and the chaining values of its frames
/// made as it was hashed.
struct Whole {
    cvs: Option<Vec<[u8; 32]>>,
    image: Option<Encoded>,
}

/// What the targets of a chunk hold under one name: the codec and size of a whole copy found,
/// and the targets lacking one (with whether a damaged file there is to be replaced).
struct Heads<'m> {
    existing: Option<(Codec, u64)>,
    missing: Vec<(&'m Member, IfPresent)>,
}

fn heads<'m>(targets: &[&'m Member], name: &Hash32, len: u64) -> Result<Heads<'m>, StoreError> {
    let mut h = Heads {
        existing: None,
        missing: Vec::new(),
    };
    for m in targets {
        match m.io.chunk_head(name).map_err(member_err(m.location()))? {
            Some(head) => match whole_chunk(&head, len) {
                Some(found) => h.existing = h.existing.or(Some(found)),
                None => h.missing.push((*m, IfPresent::Replace)),
            },
            None => h.missing.push((*m, IfPresent::Refuse)),
        }
    }
    Ok(h)
}

impl Ctx<'_> {
    /// Hashes, places, and (where a member lacks it) encodes and writes one chunk: as a delta
    /// against `base` where one is given, pays, and the chunk is not stored whole already.
    pub(super) fn store_chunk(
        &self,
        index: u64,
        cut: &Cut,
        data: &[u8],
        base: Option<&ChunkRef>,
    ) -> Result<ChunkRef, StoreError> {
        let (hash, cvs) = codec::frames::hash_chunk(data);
        // The chunk's image stored whole, encoded once whoever asks first.
        let mut encoded = Whole { cvs, image: None };
        if let Some(inline) = self.inline(cut, data, hash, &mut encoded)? {
            return Ok(inline);
        }
        let pos = ChunkPos {
            hash: &hash,
            index,
            total: self.total_chunks,
        };
        let targets: Vec<&Member> =
            placement::place(self.opts.placement, pos, &self.slots, self.opts.replicas)?
                .into_iter()
                .map(|i| &self.store.members[i])
                .collect();
        let whole = heads(&targets, &hash, cut.len)?;
        let mut chunk = ChunkRef {
            offset: cut.offset,
            len: cut.len,
            hash,
            codec: Codec::None,
            stored_len: 0,
            members: targets.iter().map(|m| m.id().to_string()).collect(),
            tensors: cut.tensors.clone(),
            delta: None,
            inline: None,
        };
        let stored_whole = whole.missing.len() < targets.len();
        if let Some(base) = base.filter(|b| b.hash != hash && !stored_whole)
            && let Some((codec, stored_len, delta)) =
                self.store_delta((cut, data), base, &targets, &mut encoded)?
        {
            (chunk.codec, chunk.stored_len, chunk.delta) = (codec, stored_len, Some(delta));
        } else {
            (chunk.codec, chunk.stored_len) =
                self.put_missing(whole, &hash, (cut, data), &mut encoded)?;
        }
        self.progress.advance(cut.len);
        Ok(chunk)
    }

    /// A chunk under `INLINE_MAX` whose chunk file would be larger than its bytes by more than
    /// 0.1% (the header on bytes that do not compress), kept in the manifest instead.
    fn inline(
        &self,
        cut: &Cut,
        data: &[u8],
        hash: Hash32,
        encoded: &mut Whole,
    ) -> Result<Option<ChunkRef>, StoreError> {
        if cut.len >= INLINE_MAX {
            return Ok(None);
        }
        let (_, image) = self.whole_image((cut, data), encoded)?;
        if image.len() as u64 * 1000 <= cut.len * 1001 {
            return Ok(None);
        }
        self.progress.advance(cut.len);
        Ok(Some(ChunkRef {
            offset: cut.offset,
            len: cut.len,
            hash,
            codec: Codec::None,
            stored_len: cut.len,
            members: Vec::new(),
            tensors: cut.tensors.clone(),
            delta: None,
            inline: Some(Inline(data.to_vec())),
        }))
    }

    /// `raw` encoded as the pack asks.
    /// `raw` encoded as the pack asks; `cvs` its frames' chaining values, made as it was hashed.
    fn encode(
        &self,
        raw: &[u8],
        cvs: Option<&[[u8; 32]]>,
        cut: &Cut,
    ) -> Result<Encoded, StoreError> {
        codec::encode_hashed(raw, cvs, self.opts.codec, self.opts.level, cut.content)
            .map_err(|e| StoreError::Invalid(e.to_string()))
    }

    /// The chunk's image stored whole: `encoded`, or encoded now and kept there.
    fn whole_image<'e>(
        &self,
        (cut, data): (&Cut, &[u8]),
        encoded: &'e mut Whole,
    ) -> Result<&'e Encoded, StoreError> {
        let image = match encoded.image.take() {
            Some(image) => image,
            None => self.encode(data, encoded.cvs.as_deref(), cut)?,
        };
        Ok(encoded.image.insert(image))
    }

    /// Writes the chunk whole under `name` to the targets lacking it; the codec and size stored.
    fn put_missing(
        &self,
        h: Heads<'_>,
        name: &Hash32,
        (cut, data): (&Cut, &[u8]),
        encoded: &mut Whole,
    ) -> Result<(Codec, u64), StoreError> {
        if h.missing.is_empty() {
            return Ok(h.existing.unwrap_or((Codec::None, 0)));
        }
        let (codec, image) = self.whole_image((cut, data), encoded)?;
        self.put_image(&h, name, image, cut.len)?;
        Ok((*codec, image.len() as u64))
    }

    fn put_image(
        &self,
        h: &Heads<'_>,
        name: &Hash32,
        image: &[u8],
        len: u64,
    ) -> Result<(), StoreError> {
        for (m, present) in &h.missing {
            put_chunk(m, name, image, *present, len)?;
        }
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*name);
        Ok(())
    }

    /// Stores `data` as a delta against `base` where that saves 2% over the chunk stored whole
    /// (`codec::saves`): the codec and size of the delta stored, and the delta. `None` leaves
    /// the chunk to be stored whole.
    fn store_delta(
        &self,
        (cut, data): (&Cut, &[u8]),
        base: &ChunkRef,
        targets: &[&Member],
        encoded: &mut Whole,
    ) -> Result<Option<(Codec, u64, Delta)>, StoreError> {
        let base_bytes = match self.store.load_chunk(base, &|_, _| {}) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::warn!(
                    "base chunk unreadable, chunk at {} stored whole: {e}",
                    cut.offset
                );
                return Ok(None);
            }
        };
        // Floats of one width as element-wise differences (which code smaller than the XOR,
        // `DeltaOp`), as integers; anything else as the XOR, as its own content.
        let (op, content) = match cut.content {
            codec::Content::Floats(w) if !DeltaOp::for_floats(w).is_xor() => {
                (DeltaOp::for_floats(w), codec::Content::Ints(w))
            }
            other => (DeltaOp::Xor, other),
        };
        let mut delta_bytes = data.to_vec();
        op.make(&mut delta_bytes, &base_bytes);
        drop(base_bytes);
        let delta_cut = Cut {
            content,
            ..cut.clone()
        };
        let (object, delta_cvs) = codec::frames::hash_chunk(&delta_bytes);
        let h = heads(targets, &object, cut.len)?;
        let stored = if h.missing.is_empty() {
            h.existing.unwrap_or((Codec::None, 0))
        } else {
            let (codec, image) = self.encode(&delta_bytes, delta_cvs.as_deref(), &delta_cut)?;
            let clearly = image.len() as f64 <= data.len() as f64 * base::CLEARLY_PAYS;
            if !clearly
                && !codec::saves(image.len(), self.whole_image((cut, data), encoded)?.1.len())
            {
                return Ok(None);
            }
            self.put_image(&h, &object, &image, cut.len)?;
            (codec, image.len() as u64)
        };
        let delta = Delta {
            object,
            base: Box::new(base.clone()),
            op,
        };
        Ok(Some((stored.0, stored.1, delta)))
    }
}

/// A chunk file already in place, whole (its header and size agree) and for `len` bytes: its
/// codec and size. Anything else is written again.
fn whole_chunk(head: &ChunkHead, len: u64) -> Option<(Codec, u64)> {
    let h = ChunkHeader::parse(&head.header).ok()?;
    (h.raw_len == len && head.size == HEADER_LEN as u64 + h.payload_len)
        .then_some((h.codec, head.size))
}

/// Puts one chunk file on a member. One that another pack put meanwhile is kept when whole.
fn put_chunk(
    m: &Member,
    hash: &Hash32,
    image: &[u8],
    present: IfPresent,
    len: u64,
) -> Result<(), StoreError> {
    match m.io.put_chunk(hash, image, present) {
        Err(MemberError::AlreadyExists) => {
            let head = m.io.chunk_head(hash).map_err(member_err(m.location()))?;
            if head.is_some_and(|h| whole_chunk(&h, len).is_some()) {
                return Ok(());
            }
            m.io.put_chunk(hash, image, IfPresent::Replace)
                .map_err(member_err(m.location()))
        }
        other => other.map_err(member_err(m.location())),
    }
}
