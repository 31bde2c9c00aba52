//! Packing against a base model (`pack --base NAME|auto`): which model is the base, which of
//! its chunks each new chunk is taken against, and whether the delta pays.
//!
//! A new chunk is paired with a base chunk when both hold the same float tensors (by name and
//! dtype, in the same order), it is the same occurrence of that tensor list in its model (the
//! k-th chunk of a large tensor with the k-th chunk of the base's), and the two have the same
//! length. The pairing only decides the ratio, never the bytes: a delta is made from the chunk
//! and its base by an op that undoes itself (`codec::delta::DeltaOp`: element-wise differences
//! for floats of one width, else the XOR), so any base chunk of the same length gives back the
//! chunk exactly, and reading checks the result against the chunk's own hash. A delta's base is always stored whole: a base
//! chunk that is itself a delta is replaced by its own base, so chains are one deep.

use super::manifest::{ChunkRef, Manifest};
use super::{Store, StoreError};
use crate::chunking::Cut;
use crate::codec::Content;
use std::collections::HashMap;

/// What `pack --base` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseChoice {
    /// This model of the store.
    Named(String),
    /// The model of the store that shares the most float tensors with the new one.
    Auto,
}

/// What a chunk holds, as pairing sees it: its tensors (name, dtype), which occurrence of that
/// list it is in its model, and its length.
type Key = (Vec<(String, String)>, usize, u64);

/// The keys of a model's chunks in order, `None` for chunks that are not float tensors.
fn keys<'a>(
    chunks: impl Iterator<Item = (&'a [crate::chunking::TensorTag], u64, bool)>,
) -> Vec<Option<Key>> {
    let mut seen: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    chunks
        .map(|(tags, len, floats)| {
            if tags.is_empty() || !floats {
                return None;
            }
            let list: Vec<(String, String)> = tags
                .iter()
                .map(|t| (t.name.clone(), t.dtype.clone()))
                .collect();
            let n = seen.entry(list.clone()).or_default();
            *n += 1;
            Some((list, *n - 1, len))
        })
        .collect()
}

/// The base chunks of one model, by key.
struct BaseIndex {
    /// `name@version` of the base model.
    label: String,
    by_key: HashMap<Key, ChunkRef>,
}

impl BaseIndex {
    fn of(m: &Manifest) -> BaseIndex {
        let chunks: Vec<&ChunkRef> = m.files.iter().flat_map(|f| &f.chunks).collect();
        let keyed = keys(chunks.iter().map(|c| {
            let floats = c
                .tensors
                .iter()
                .all(|t| crate::chunking::dtype_float_width(&t.dtype).is_some());
            (&c.tensors[..], c.len, floats)
        }));
        let by_key = chunks
            .into_iter()
            .zip(keyed)
            .filter_map(|(c, k)| {
                // Chains stay one deep: a delta's place is taken by its own base. Bytes kept in
                // the base's manifest are no chunk to take a delta against.
                let whole = c.delta.as_ref().map_or(c, |d| &*d.base);
                k.filter(|_| whole.inline.is_none())
                    .map(|k| (k, whole.clone()))
            })
            .collect();
        BaseIndex {
            label: format!("{}@{}", m.name, m.version),
            by_key,
        }
    }

    /// For each of the new model's cuts (`keys` of them, in order), the base chunk it is taken
    /// against, if any; and how many have one.
    fn pair(&self, keyed: &[Option<Key>]) -> (Vec<Option<ChunkRef>>, usize) {
        let paired: Vec<Option<ChunkRef>> = keyed
            .iter()
            .map(|k| k.as_ref().and_then(|k| self.by_key.get(k).cloned()))
            .collect();
        let shared = paired.iter().flatten().count();
        (paired, shared)
    }
}

/// A new model paired with its base: the base's `name@version`, and for each file's cuts the
/// base chunk each is taken against, if any.
pub struct Paired {
    pub label: String,
    pub bases: Bases,
}

/// For each file's cuts, the base chunk each is taken against, if any.
pub type Bases = Vec<Vec<Option<ChunkRef>>>;

/// The base `choice` names for a pack cut along `plans`, paired with them: `None` when `auto`
/// finds no model sharing a float tensor chunk with it (said), an error when a named model is
/// not in the store.
pub fn find(
    store: &Store,
    choice: &BaseChoice,
    plans: &[Vec<Cut>],
) -> Result<Option<Paired>, StoreError> {
    let keyed = keys(plans.iter().flatten().map(|c| {
        let floats = matches!(c.content, Content::Floats(_));
        (&c.tensors[..], c.len, floats)
    }));
    let found = match choice {
        BaseChoice::Named(name) => {
            let index = BaseIndex::of(&store.manifest(name)?);
            let (paired, shared) = index.pair(&keyed);
            if shared == 0 {
                log::warn!(
                    "no chunk of the new model pairs with a chunk of '{}' (the same float tensors, the same length): it is stored whole",
                    index.label
                );
            }
            (index.label, paired)
        }
        BaseChoice::Auto => {
            let mut best: Option<(usize, u64, String, Vec<Option<ChunkRef>>)> = None;
            for m in store.manifests()? {
                let index = BaseIndex::of(&m);
                let (paired, shared) = index.pair(&keyed);
                let better = best
                    .as_ref()
                    .is_none_or(|(n, at, ..)| (shared, m.created_unix) > (*n, *at));
                if shared > 0 && better {
                    best = Some((shared, m.created_unix, index.label, paired));
                }
            }
            let Some((shared, _, label, paired)) = best else {
                crate::say!("base: none (no model of the store shares a float tensor chunk)");
                return Ok(None);
            };
            crate::say!("base: {label} ({shared} chunks of the new model pair with its chunks)");
            (label, paired)
        }
    };
    let (label, mut paired) = (found.0, found.1.into_iter());
    let bases = plans
        .iter()
        .map(|cuts| paired.by_ref().take(cuts.len()).collect())
        .collect();
    Ok(Some(Paired { label, bases }))
}

/// A delta image at most this fraction of the chunk's raw length is kept without encoding
/// the chunk whole to compare: no codec of ours stores float weights that small.
pub const CLEARLY_PAYS: f64 = 0.5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunking::TensorTag;

    fn cut(offset: u64, len: u64, names: &[&str], content: Content) -> Cut {
        Cut {
            offset,
            len,
            content,
            tensors: names
                .iter()
                .map(|n| TensorTag {
                    name: n.to_string(),
                    dtype: "BF16".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn chunks_pair_by_tensors_occurrence_and_length() {
        let f = Content::Floats(2);
        let base_cuts = [vec![
            cut(0, 100, &["a"], f),
            cut(100, 100, &["a"], f),
            cut(200, 50, &["b", "c"], f),
            cut(250, 10, &[], Content::Bytes),
        ]];
        let mut m = crate::store::manifest::tests::sample();
        let file = &mut m.files[0];
        file.chunks = base_cuts[0]
            .iter()
            .map(|c| ChunkRef {
                offset: c.offset,
                len: c.len,
                hash: crate::codec::Hash32::of(&c.offset.to_le_bytes()),
                codec: crate::codec::Codec::None,
                stored_len: c.len,
                members: vec!["m0".into()],
                tensors: c.tensors.clone(),
                delta: None,
                inline: None,
            })
            .collect();
        let index = BaseIndex::of(&m);
        let new = [
            cut(0, 100, &["a"], f),
            cut(100, 100, &["a"], f),
            cut(0, 50, &["b", "c"], f),
            cut(50, 10, &[], Content::Bytes),
            cut(60, 99, &["a"], f),
            cut(159, 50, &["b", "c"], Content::Bytes),
        ];
        let keyed = keys(new.iter().map(|c| {
            let floats = matches!(c.content, Content::Floats(_));
            (&c.tensors[..], c.len, floats)
        }));
        let (paired, shared) = index.pair(&keyed);
        let offsets: Vec<Option<u64>> = paired
            .iter()
            .map(|c| c.as_ref().map(|c| c.offset))
            .collect();
        // The k-th chunk of `a` pairs with the base's k-th; a third `a` chunk has no partner,
        // and neither has a chunk of bytes.
        assert_eq!(
            offsets,
            vec![Some(0), Some(100), Some(200), None, None, None]
        );
        assert_eq!(shared, 3);
    }
}
