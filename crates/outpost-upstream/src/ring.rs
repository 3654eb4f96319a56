//! Consistent hashing, one module for every place that assigns keys to members: the owner box of
//! a key in a PoP, the shield a key goes to within a shield set, and `outpost sim`'s hierarchy.
//!
//! Weighted rendezvous hashing (highest random weight): each (key, member) pair gets a score and
//! the key belongs to the member with the highest one; the other members, in score order, are
//! the failover order. Removing a member moves exactly the keys it owned (each to its own
//! runner-up) and no others; adding one takes about 1/N of the keys, from every member in
//! proportion. Chosen over a ring with virtual nodes because a PoP or shield set has a handful of
//! members, so scoring all of them per lookup (a few nanoseconds each) is cheaper than a ring's
//! binary search and memory, and the balance is that of the hash, not of how many virtual nodes
//! were placed (measured in the tests below: ±1.5% per member with 4 members and 100k keys).
//!
//! Ramp-up (Varnish's shard director calls it that): a member that joined or came back recently
//! takes only a `fraction` of the keys it would own; the rest stay with their runner-up until the
//! fraction reaches 1. Which keys it takes first is fixed per key, so the share grows
//! monotonically and the keys it already took stay with it.

/// 64-bit finaliser (splitmix64): a fast, well-mixed hash of a `u64`.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stable 64-bit hash of a member name (FNV-1a, then mixed): the same in every process.
pub fn name_seed(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// A uniform number in (0, 1] from a hash.
#[inline]
fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// Whether a member takes keys right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Eligibility {
    /// Takes its full share.
    Up,
    /// Joined or came back recently: takes this fraction (0..1) of its share.
    Ramping(f64),
    /// Down: gets keys only when no member is up (last resort).
    Down,
}

#[derive(Debug, Clone)]
struct Member {
    seed: u64,
    weight: f64,
}

/// A set of members to assign keys to.
#[derive(Debug, Clone)]
pub struct Ring {
    members: Vec<Member>,
}

impl Ring {
    /// Members by name and weight (a weight ≤ 0 or not finite counts as 1).
    pub fn new<'a>(members: impl IntoIterator<Item = (&'a str, f64)>) -> Self {
        Ring {
            members: members
                .into_iter()
                .map(|(name, w)| Member {
                    seed: name_seed(name),
                    weight: if w.is_finite() && w > 0.0 { w } else { 1.0 },
                })
                .collect(),
        }
    }

    /// Equal-weight members.
    pub fn equal<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self::new(names.into_iter().map(|n| (n, 1.0)))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The score of member `i` for `key` (weighted rendezvous: `-w / ln(u)`).
    #[inline]
    fn score(&self, key: u64, i: usize) -> f64 {
        let m = &self.members[i];
        let u = unit(mix64(key ^ m.seed));
        // ln(u) < 0 for u in (0, 1); u == 1 gives the largest possible score.
        let l = u.ln();
        if l == 0.0 {
            f64::INFINITY
        } else {
            -m.weight / l
        }
    }

    /// Whether a ramping member takes `key` at `fraction` of its share (fixed per key, so the
    /// keys it takes only grow with the fraction).
    #[inline]
    fn ramp_takes(&self, key: u64, i: usize, fraction: f64) -> bool {
        unit(mix64(key ^ self.members[i].seed ^ 0x7261_6d70_2d75_7021)) <= fraction
    }

    /// The owner of `key` with every member up.
    pub fn owner(&self, key: u64) -> Option<usize> {
        self.owner_with(key, |_| Eligibility::Up)
    }

    /// The owner of `key`: the best-scoring member that takes it now; if none does, the
    /// best-scoring ramping one, then the best-scoring down one. No allocation.
    pub fn owner_with(&self, key: u64, state: impl Fn(usize) -> Eligibility) -> Option<usize> {
        // (tier, score): tier 0 takes the key, 1 ramping but not for this key, 2 down.
        let mut best: Option<(u8, f64, usize)> = None;
        for i in 0..self.members.len() {
            let tier = self.tier(key, i, state(i));
            let s = self.score(key, i);
            let better = match best {
                None => true,
                Some((bt, bs, _)) => tier < bt || (tier == bt && s > bs),
            };
            if better {
                best = Some((tier, s, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    fn tier(&self, key: u64, i: usize, e: Eligibility) -> u8 {
        match e {
            Eligibility::Up => 0,
            Eligibility::Ramping(f) if self.ramp_takes(key, i, f) => 0,
            Eligibility::Ramping(_) => 1,
            Eligibility::Down => 2,
        }
    }

    /// Every member in the order to try for `key`: those that take it now by score, then
    /// ramping ones, then down ones (failover order).
    pub fn order_with(&self, key: u64, state: impl Fn(usize) -> Eligibility) -> Vec<usize> {
        let mut v: Vec<(u8, f64, usize)> = (0..self.members.len())
            .map(|i| (self.tier(key, i, state(i)), self.score(key, i), i))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        v.into_iter().map(|(_, _, i)| i).collect()
    }

    /// [`Ring::order_with`] with every member up.
    pub fn order(&self, key: u64) -> Vec<usize> {
        self.order_with(key, |_| Eligibility::Up)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("box-{i}")).collect()
    }

    fn ring(names: &[String]) -> Ring {
        Ring::equal(names.iter().map(String::as_str))
    }

    const KEYS: u64 = 100_000;

    #[test]
    fn balance_is_even() {
        let n = names(4);
        let r = ring(&n);
        let mut counts = [0u64; 4];
        for k in 0..KEYS {
            counts[r.owner(mix64(k)).unwrap()] += 1;
        }
        for c in counts {
            let share = c as f64 / KEYS as f64;
            assert!((share - 0.25).abs() < 0.015, "{counts:?}");
        }
    }

    #[test]
    fn removing_one_of_four_moves_a_quarter_and_nothing_between_survivors() {
        let all = names(4);
        let before = ring(&all);
        let survivors: Vec<String> = all.iter().filter(|n| *n != "box-2").cloned().collect();
        let after = ring(&survivors);
        let mut moved = 0u64;
        for k in 0..KEYS {
            let key = mix64(k);
            let old = &all[before.owner(key).unwrap()];
            let new = &survivors[after.owner(key).unwrap()];
            if old != new {
                moved += 1;
                // Only keys of the removed member move.
                assert_eq!(old, "box-2");
            }
        }
        let frac = moved as f64 / KEYS as f64;
        assert!((frac - 0.25).abs() < 0.015, "moved {frac}");
    }

    #[test]
    fn adding_one_takes_about_one_over_n() {
        let four = names(4);
        let five = names(5);
        let (a, b) = (ring(&four), ring(&five));
        let mut moved = 0u64;
        for k in 0..KEYS {
            let key = mix64(k);
            let old = &four[a.owner(key).unwrap()];
            let new = &five[b.owner(key).unwrap()];
            if old != new {
                assert_eq!(new, "box-4", "a key moved between old members");
                moved += 1;
            }
        }
        let frac = moved as f64 / KEYS as f64;
        assert!((frac - 0.2).abs() < 0.015, "moved {frac}");
    }

    #[test]
    fn down_member_means_runner_up_and_is_last_resort() {
        let n = names(3);
        let r = ring(&n);
        for k in 0..1000 {
            let key = mix64(k);
            let order = r.order(key);
            let owner = order[0];
            let with_down = r.owner_with(key, |i| {
                if i == owner {
                    Eligibility::Down
                } else {
                    Eligibility::Up
                }
            });
            assert_eq!(with_down, Some(order[1]));
            let o = r.order_with(key, |i| {
                if i == owner {
                    Eligibility::Down
                } else {
                    Eligibility::Up
                }
            });
            assert_eq!(o, vec![order[1], order[2], owner]);
            assert_eq!(r.owner_with(key, |_| Eligibility::Down), Some(owner));
        }
        assert_eq!(Ring::equal([]).owner(1), None);
    }

    #[test]
    fn ramp_up_share_grows_monotonically() {
        let n = names(4);
        let r = ring(&n);
        let full: Vec<usize> = (0..KEYS).map(|k| r.owner(mix64(k)).unwrap()).collect();
        let mut prev_taken: Option<Vec<bool>> = None;
        for frac in [0.0, 0.25, 0.5, 0.75, 1.0] {
            let state = |i: usize| {
                if i == 3 {
                    Eligibility::Ramping(frac)
                } else {
                    Eligibility::Up
                }
            };
            let taken: Vec<bool> = (0..KEYS)
                .map(|k| r.owner_with(mix64(k), state).unwrap() == 3)
                .collect();
            let count = taken.iter().filter(|t| **t).count() as f64;
            let own = full.iter().filter(|o| **o == 3).count() as f64;
            assert!(
                (count / own - frac).abs() < 0.02,
                "frac {frac}: {}",
                count / own
            );
            // Only keys it would own at full share, and everything it took before stays.
            for (k, t) in taken.iter().enumerate() {
                if *t {
                    assert_eq!(full[k], 3);
                }
                if let Some(p) = &prev_taken {
                    assert!(!p[k] || *t);
                }
            }
            prev_taken = Some(taken);
        }
    }

    #[test]
    fn weights_shift_shares() {
        let r = Ring::new([("a", 1.0), ("b", 3.0)]);
        let b = (0..KEYS).filter(|k| r.owner(mix64(*k)) == Some(1)).count() as f64;
        assert!((b / KEYS as f64 - 0.75).abs() < 0.015);
    }

    #[test]
    fn seeds_are_stable() {
        // Part of the contract between processes: every node must agree on owners.
        assert_eq!(name_seed("edge-a"), name_seed("edge-a"));
        assert_ne!(name_seed("edge-a"), name_seed("edge-b"));
        assert_eq!(mix64(0), 0xe220_a839_7b1d_cdaf);
    }
}
