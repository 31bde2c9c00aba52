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

/// Turns the members' capacity weights into the weights rendezvous hashing scores with, so that
/// each member's share of the replicas follows its capacity share also when a chunk has several
/// replicas. Picking the `replicas` best scores is sampling without replacement, which evens the
/// shares out (weights 1:1:1:2 with 2 replicas give the heavy member 35% instead of 40%); the
/// weights are corrected until every member's chance of holding a chunk is `replicas` times its
/// share. A share above 1/`replicas` cannot be met (a member holds a chunk at most once): such a
/// member holds every chunk and the rest is shared by weight. Equal weights, one replica, or more
/// than `MAX_TERMS` placements to weigh leave the weights as they are. The result depends on the
/// set of members, not their order.
pub fn weigh(slots: &mut [Slot<'_>], replicas: usize) {
    let n = slots.len();
    let equal = slots.windows(2).all(|w| w[0].weight == w[1].weight);
    if replicas <= 1 || replicas >= n || equal || ordered_choices(n, replicas) > MAX_TERMS {
        return;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| slots[a].id.cmp(slots[b].id));
    let capacity: Vec<f64> = order
        .iter()
        .map(|&i| slots[i].weight.max(f64::MIN_POSITIVE))
        .collect();
    let target = inclusion_targets(&capacity, replicas);
    let mut w = capacity.clone();
    for _ in 0..200 {
        let p = inclusion(&w, replicas);
        let mut worst = 0f64;
        for i in 0..n {
            worst = worst.max((p[i] - target[i]).abs());
            // A member that must hold every chunk only ever gains weight.
            w[i] *= (target[i] / p[i]).min(1e3);
        }
        let sum: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= sum);
        if worst < 1e-9 {
            break;
        }
    }
    for (k, &i) in order.iter().enumerate() {
        slots[i].weight = w[k];
    }
}

/// Placements `weigh` enumerates at most (ordered choices of `replicas` among the members).
const MAX_TERMS: u64 = 200_000;

fn ordered_choices(n: usize, r: usize) -> u64 {
    (0..r as u64).fold(1u64, |acc, k| acc.saturating_mul(n as u64 - k))
}

/// Each member's wanted chance of holding a chunk: `replicas` times its share, at most 1 (the
/// excess of a capped member goes to the others by weight).
fn inclusion_targets(capacity: &[f64], replicas: usize) -> Vec<f64> {
    let mut target = vec![0f64; capacity.len()];
    let mut capped = vec![false; capacity.len()];
    loop {
        let left = replicas as f64 - capped.iter().filter(|c| **c).count() as f64;
        let free: f64 = (0..capacity.len())
            .filter(|&i| !capped[i])
            .map(|i| capacity[i])
            .sum();
        let mut changed = false;
        for i in 0..capacity.len() {
            if capped[i] {
                target[i] = 1.0;
                continue;
            }
            target[i] = left * capacity[i] / free;
            if target[i] > 1.0 {
                capped[i] = true;
                changed = true;
            }
        }
        if !changed {
            // A chance of exactly 1 needs an infinite weight; a hair below is as good.
            target.iter_mut().for_each(|t| *t = t.min(1.0 - 1e-6));
            return target;
        }
    }
}

/// Each member's chance of being among the `replicas` picked when members are drawn one after
/// another, each with a chance proportional to its weight among those not drawn yet (what the
/// best scores of rendezvous hashing amount to).
fn inclusion(w: &[f64], replicas: usize) -> Vec<f64> {
    fn draw(w: &[f64], taken: &mut Vec<bool>, left: f64, prob: f64, depth: usize, p: &mut [f64]) {
        for i in 0..w.len() {
            if taken[i] {
                continue;
            }
            let q = prob * w[i] / left;
            p[i] += q;
            if depth > 1 {
                taken[i] = true;
                draw(w, taken, left - w[i], q, depth - 1, p);
                taken[i] = false;
            }
        }
    }
    let mut p = vec![0f64; w.len()];
    let total: f64 = w.iter().sum();
    draw(w, &mut vec![false; w.len()], total, 1.0, replicas, &mut p);
    p
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

    /// Each member's share of `replicas`-replica placements over many chunks, after `weigh`.
    fn weighted_shares(weights: &[f64], replicas: usize) -> Vec<f64> {
        let ids = ids(weights.len());
        let mut members: Vec<Slot<'_>> = ids
            .iter()
            .zip(weights)
            .map(|(id, &weight)| Slot { id, weight })
            .collect();
        weigh(&mut members, replicas);
        let hs = hashes(20_000);
        let mut counts = vec![0usize; weights.len()];
        for h in &hs {
            let pos = ChunkPos {
                hash: h,
                index: 0,
                total: 1,
            };
            for i in place(Placement::Hash, pos, &members, replicas).unwrap() {
                counts[i] += 1;
            }
        }
        let total = (hs.len() * replicas) as f64;
        counts.iter().map(|&c| c as f64 / total).collect()
    }

    #[test]
    fn weighted_shares_follow_weights_with_several_replicas() {
        for (weights, replicas, want) in [
            (vec![1.0, 1.0, 1.0, 2.0], 2, vec![0.2, 0.2, 0.2, 0.4]),
            (vec![1.0, 2.0, 3.0, 4.0], 2, vec![0.1, 0.2, 0.3, 0.4]),
            (
                vec![1.0, 2.0, 3.0, 4.0, 5.0],
                3,
                vec![1.0 / 15.0, 2.0 / 15.0, 0.2, 4.0 / 15.0, 1.0 / 3.0],
            ),
            // 4 of 6 is more than a member can hold with 2 replicas: it holds every chunk.
            (vec![1.0, 1.0, 4.0], 2, vec![0.25, 0.25, 0.5]),
        ] {
            let got = weighted_shares(&weights, replicas);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 0.05 * w + 0.002,
                    "weights {weights:?} r={replicas}: shares {got:?}, want {want:?}"
                );
            }
        }
        // Without the correction the heavy member of 1:1:1:2 falls short by an eighth.
        let ids = ids(4);
        let plain: Vec<Slot<'_>> = ids
            .iter()
            .zip([1.0, 1.0, 1.0, 2.0])
            .map(|(id, weight)| Slot { id, weight })
            .collect();
        let p = inclusion(&plain.iter().map(|s| s.weight).collect::<Vec<_>>(), 2);
        assert!((p[3] / 2.0 - 0.35).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn weighing_keeps_equal_weights_and_ignores_member_order() {
        let ids = ids(4);
        let mut members: Vec<Slot<'_>> = slots(&ids);
        weigh(&mut members, 2);
        assert!(members.iter().all(|m| m.weight == 1.0));
        let mut a: Vec<Slot<'_>> = ids
            .iter()
            .zip([1.0, 2.0, 3.0, 4.0])
            .map(|(id, weight)| Slot { id, weight })
            .collect();
        let mut b: Vec<Slot<'_>> = a.iter().rev().cloned().collect();
        weigh(&mut a, 2);
        weigh(&mut b, 2);
        for m in &a {
            let other = b.iter().find(|o| o.id == m.id).unwrap();
            assert_eq!(m.weight, other.weight);
        }
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
