//! Which members hold the replicas of a chunk: rendezvous hashing (`hash`), `round-robin` and
//! contiguous `range`s, each giving `replicas` distinct members.

use crate::codec::Hash32;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("{replicas} replicas need at least {replicas} members, the store has {members}")]
    TooFewMembers { replicas: usize, members: usize },
    #[error("replicas must be at least 1")]
    NoReplicas,
}

/// A placement policy, as named on the command line and in manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Rendezvous hashing of the chunk hash over member ids, weighted by member weight: adding a
    /// member moves only about 1/N of the chunks.
    Hash,
    /// Chunk i goes to member i mod N, its replicas to the members after it.
    RoundRobin,
    /// Contiguous runs of chunks per member, replicas on the members after it.
    Range,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Hash => "hash",
            Placement::RoundRobin => "round-robin",
            Placement::Range => "range",
        }
    }
}

/// A member as placement sees it: a stable id and a weight (relative capacity).
#[derive(Debug, Clone)]
pub struct Slot<'a> {
    pub id: &'a str,
    pub weight: f64,
}

/// Where one chunk of a model goes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkPos<'a> {
    pub hash: &'a Hash32,
    /// Position of the chunk among all chunks of the model, and their count.
    pub index: u64,
    pub total: u64,
}

/// Checks that `replicas` distinct members can be found among `members`.
pub fn check(replicas: usize, members: usize) -> Result<(), PlacementError> {
    if replicas == 0 {
        return Err(PlacementError::NoReplicas);
    }
    if replicas > members {
        return Err(PlacementError::TooFewMembers { replicas, members });
    }
    Ok(())
}

/// Returns the indices into `members` (distinct, primary first) that hold `chunk`'s replicas.
pub fn place(
    policy: Placement,
    chunk: ChunkPos<'_>,
    members: &[Slot<'_>],
    replicas: usize,
) -> Result<Vec<usize>, PlacementError> {
    check(replicas, members.len())?;
    let n = members.len();
    let first = match policy {
        Placement::Hash => return Ok(rendezvous(chunk.hash, members, replicas)),
        Placement::RoundRobin => (chunk.index % n as u64) as usize,
        Placement::Range => {
            let total = chunk.total.max(1) as u128;
            ((u128::from(chunk.index.min(chunk.total.saturating_sub(1))) * n as u128) / total)
                as usize
        }
    };
    Ok((0..replicas).map(|r| (first + r) % n).collect())
}

/// Weighted rendezvous (highest random weight) hashing: every member gets a score from the hash
/// of (chunk, member id); the `replicas` best scores win.
fn rendezvous(hash: &Hash32, members: &[Slot<'_>], replicas: usize) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut h = blake3::Hasher::new();
            h.update(&hash.0);
            h.update(m.id.as_bytes());
            let mut word = [0u8; 8];
            word.copy_from_slice(&h.finalize().as_bytes()[..8]);
            // u in (0, 1): the score w / -ln(u) makes each member win in proportion to its weight.
            let u = (u64::from_le_bytes(word) as f64 + 0.5) / 18_446_744_073_709_551_616.0;
            (m.weight.max(f64::MIN_POSITIVE) / -u.ln(), i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(replicas).map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("member-{i:02}-{}", i * 7919))
            .collect()
    }

    fn slots(ids: &[String]) -> Vec<Slot<'_>> {
        ids.iter().map(|id| Slot { id, weight: 1.0 }).collect()
    }

    fn hashes(n: usize) -> Vec<Hash32> {
        (0..n)
            .map(|i| Hash32::of(&(i as u64).to_le_bytes()))
            .collect()
    }

    #[test]
    fn every_policy_balances_and_keeps_replicas_distinct() {
        let ids = ids(4);
        let members = slots(&ids);
        let hs = hashes(10_000);
        for policy in [Placement::Hash, Placement::RoundRobin, Placement::Range] {
            for replicas in 1..=3 {
                let mut counts = [0usize; 4];
                for (i, h) in hs.iter().enumerate() {
                    let pos = ChunkPos {
                        hash: h,
                        index: i as u64,
                        total: hs.len() as u64,
                    };
                    let got = place(policy, pos, &members, replicas).unwrap();
                    assert_eq!(got.len(), replicas);
                    let mut sorted = got.clone();
                    sorted.sort();
                    sorted.dedup();
                    assert_eq!(sorted.len(), replicas, "{policy:?} gave duplicate members");
                    for m in got {
                        counts[m] += 1;
                    }
                }
                let mean = (hs.len() * replicas) as f64 / 4.0;
                for c in counts {
                    assert!(
                        (c as f64 - mean).abs() <= 0.1 * mean,
                        "{policy:?} r={replicas}: {counts:?} not within 10% of {mean}"
                    );
                }
            }
        }
    }

    #[test]
    fn range_is_contiguous() {
        let ids = ids(3);
        let members = slots(&ids);
        let h = Hash32::of(b"x");
        let primaries: Vec<usize> = (0..9)
            .map(|i| {
                place(
                    Placement::Range,
                    ChunkPos {
                        hash: &h,
                        index: i,
                        total: 9,
                    },
                    &members,
                    1,
                )
                .unwrap()[0]
            })
            .collect();
        assert_eq!(primaries, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn adding_a_member_moves_about_one_in_n_under_hash() {
        let ids5 = ids(5);
        let four = slots(&ids5[..4]);
        let five = slots(&ids5);
        let hs = hashes(10_000);
        let moved = hs
            .iter()
            .filter(|h| {
                let pos = ChunkPos {
                    hash: h,
                    index: 0,
                    total: 1,
                };
                place(Placement::Hash, pos, &four, 1).unwrap()
                    != place(Placement::Hash, pos, &five, 1).unwrap()
            })
            .count();
        let fraction = moved as f64 / hs.len() as f64;
        assert!((fraction - 0.2).abs() < 0.03, "moved {fraction}");
        // Every chunk that moved went to the new member.
        for h in &hs {
            let pos = ChunkPos {
                hash: h,
                index: 0,
                total: 1,
            };
            let new = place(Placement::Hash, pos, &five, 1).unwrap()[0];
            if new != 4 {
                assert_eq!(place(Placement::Hash, pos, &four, 1).unwrap()[0], new);
            }
        }
    }

    #[test]
    fn hash_does_not_depend_on_member_order() {
        let ids = ids(4);
        let members = slots(&ids);
        let reversed: Vec<Slot<'_>> = members.iter().rev().cloned().collect();
        for h in hashes(200) {
            let pos = ChunkPos {
                hash: &h,
                index: 0,
                total: 1,
            };
            let a: Vec<&str> = place(Placement::Hash, pos, &members, 2)
                .unwrap()
                .iter()
                .map(|&i| members[i].id)
                .collect();
            let b: Vec<&str> = place(Placement::Hash, pos, &reversed, 2)
                .unwrap()
                .iter()
                .map(|&i| reversed[i].id)
                .collect();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn weights_shift_load() {
        let ids = ids(2);
        let members = vec![
            Slot {
                id: &ids[0],
                weight: 3.0,
            },
            Slot {
                id: &ids[1],
                weight: 1.0,
            },
        ];
        let heavy = hashes(10_000)
            .iter()
            .filter(|h| {
                place(
                    Placement::Hash,
                    ChunkPos {
                        hash: h,
                        index: 0,
                        total: 1,
                    },
                    &members,
                    1,
                )
                .unwrap()[0]
                    == 0
            })
            .count();
        assert!((heavy as f64 / 10_000.0 - 0.75).abs() < 0.03, "{heavy}");
    }

    #[test]
    fn refuses_impossible_replica_counts() {
        let ids = ids(2);
        let members = slots(&ids);
        let h = Hash32::of(b"x");
        let pos = ChunkPos {
            hash: &h,
            index: 0,
            total: 1,
        };
        assert_eq!(
            place(Placement::Hash, pos, &members, 3),
            Err(PlacementError::TooFewMembers {
                replicas: 3,
                members: 2
            })
        );
        assert_eq!(
            place(Placement::Hash, pos, &members, 0),
            Err(PlacementError::NoReplicas)
        );
    }
}
