//! Belady's offline optimum (MIN), the upper bound the online policies are measured against.
//!
//! The trace is known in advance, so each request's *next use* (the index of the next request
//! for the same key) is precomputed in one backward pass. On a miss the cache evicts the resident
//! objects whose next use is farthest in the future.
//!
//! Two variants:
//!
//! - [`Belady::new`] with `bypass = true` (the `belady` policy): an object is admitted only if
//!   it is needed sooner than everything it would displace; an object never requested again is
//!   not admitted at all. With unit sizes this is exactly the optimum (MIN with bypass), so no
//!   online policy can beat it.
//! - `bypass = false` (the `belady-admit` policy): every miss is admitted and the farthest
//!   *resident* objects make room, which is what libCacheSim's `Belady` does. It is at most one
//!   object's worth of cache worse than the optimum and is kept for like-for-like comparisons.
//!
//! With variable sizes neither is optimal (optimal offline caching with sizes is NP-hard); both
//! use the usual heuristic "evict the objects whose next use is farthest until the newcomer
//! fits", which is the standard reference point but not a strict bound on byte hit ratio.

use std::collections::{BTreeSet, HashMap};

/// Next-use value of a request whose key is never requested again.
pub const NEVER: u64 = u64::MAX;

/// For each request index `i`, the index of the next request for the same key, or [`NEVER`].
pub fn next_uses(keys: impl DoubleEndedIterator<Item = u64> + ExactSizeIterator) -> Vec<u64> {
    let n = keys.len();
    let mut next = vec![NEVER; n];
    let mut last_seen: HashMap<u64, u64> = HashMap::with_capacity(n / 4 + 1);
    for (i, key) in keys.enumerate().rev() {
        if let Some(j) = last_seen.insert(key, i as u64) {
            next[i] = j;
        }
    }
    next
}

/// A Belady cache of `capacity` weight units.
#[derive(Debug, Clone)]
pub struct Belady {
    capacity: u64,
    used: u64,
    bypass: bool,
    /// key → (next use, weight)
    resident: HashMap<u64, (u64, u64)>,
    /// (next use, key), farthest last.
    order: BTreeSet<(u64, u64)>,
}

impl Belady {
    /// An empty cache; see the module docs for `bypass`.
    pub fn new(capacity: u64, bypass: bool) -> Self {
        Self {
            capacity,
            used: 0,
            bypass,
            resident: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// Resident objects.
    pub fn len(&self) -> usize {
        self.resident.len()
    }

    /// Whether nothing is resident.
    pub fn is_empty(&self) -> bool {
        self.resident.is_empty()
    }

    /// Resident weight.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Whether `key` is resident.
    pub fn contains(&self, key: u64) -> bool {
        self.resident.contains_key(&key)
    }

    /// One request for `key` (weight `weight`) whose next request is at index `next` (or
    /// [`NEVER`]). Returns whether it was a hit.
    pub fn access(&mut self, key: u64, weight: u64, next: u64) -> bool {
        if let Some(entry) = self.resident.get_mut(&key) {
            let old = entry.0;
            entry.0 = next;
            self.order.remove(&(old, key));
            self.order.insert((next, key));
            return true;
        }
        if weight > self.capacity || (self.bypass && next == NEVER) {
            return false;
        }
        let free = self.capacity - self.used;
        if weight > free {
            let need = weight - free;
            if self.bypass {
                // Admit only if enough weight is held by objects needed later than this one.
                let mut reclaimable = 0u64;
                for &(victim_next, victim) in self.order.iter().rev() {
                    if victim_next <= next {
                        break;
                    }
                    reclaimable += self.resident.get(&victim).map_or(0, |e| e.1);
                    if reclaimable >= need {
                        break;
                    }
                }
                if reclaimable < need {
                    return false;
                }
            }
            while self.capacity - self.used < weight {
                let Some((victim_next, victim)) = self.order.pop_last() else {
                    break;
                };
                debug_assert!(!self.bypass || victim_next > next);
                if let Some((_, w)) = self.resident.remove(&victim) {
                    self.used -= w;
                }
            }
        }
        self.resident.insert(key, (next, weight));
        self.order.insert((next, key));
        self.used += weight;
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn next_uses_point_at_the_following_request() {
        let keys = [1u64, 2, 1, 3, 2, 1];
        assert_eq!(
            next_uses(keys.iter().copied()),
            vec![2, 4, 5, NEVER, NEVER, NEVER]
        );
    }

    fn hits(keys: &[u64], capacity: u64, bypass: bool) -> u64 {
        let next = next_uses(keys.iter().copied());
        let mut b = Belady::new(capacity, bypass);
        let mut hits = 0;
        for (i, &k) in keys.iter().enumerate() {
            hits += u64::from(b.access(k, 1, next[i]));
            assert!(b.used() <= capacity);
        }
        hits
    }

    /// The true optimum with unit sizes and bypass, by exhaustive search over eviction choices.
    fn brute_force(keys: &[u64], capacity: usize) -> u64 {
        fn go(keys: &[u64], capacity: usize, cache: &mut Vec<u64>) -> u64 {
            let Some((&k, rest)) = keys.split_first() else {
                return 0;
            };
            if cache.contains(&k) {
                return 1 + go(rest, capacity, cache);
            }
            // Bypass.
            let mut best = go(rest, capacity, cache);
            if cache.len() < capacity {
                cache.push(k);
                best = best.max(go(rest, capacity, cache));
                cache.pop();
            } else {
                for i in 0..cache.len() {
                    let old = std::mem::replace(&mut cache[i], k);
                    best = best.max(go(rest, capacity, cache));
                    cache[i] = old;
                }
            }
            best
        }
        go(keys, capacity, &mut Vec::new())
    }

    #[test]
    fn belady_with_bypass_is_optimal_on_small_traces() {
        let mut rng = crate::rng::Rng::new(5);
        for _ in 0..300 {
            let len = 1 + rng.below(11) as usize;
            let alphabet = 1 + rng.below(5);
            let capacity = 1 + rng.below(3);
            let keys: Vec<u64> = (0..len).map(|_| rng.below(alphabet)).collect();
            let opt = brute_force(&keys, capacity as usize);
            assert_eq!(hits(&keys, capacity, true), opt, "{keys:?} cap {capacity}");
            assert!(hits(&keys, capacity, false) <= opt);
        }
    }

    #[test]
    fn admit_all_variant_always_admits() {
        // Capacity 1: A B A — with bypass B is not admitted and A hits; admit-all loses A.
        assert_eq!(hits(&[1, 2, 1], 1, true), 1);
        assert_eq!(hits(&[1, 2, 1], 1, false), 0);
    }

    #[test]
    fn variable_sizes_evict_farthest_until_the_newcomer_fits() {
        let keys = [1u64, 2, 3, 4, 1, 2, 3];
        let weights = [4u64, 3, 3, 6, 4, 3, 3];
        let next = next_uses(keys.iter().copied());
        let mut b = Belady::new(10, true);
        let mut hit = Vec::new();
        for ((&k, &w), &n) in keys.iter().zip(&weights).zip(&next) {
            hit.push(b.access(k, w, n));
            assert!(b.used() <= 10);
        }
        // 1+2+3 = 10 fit; 4 (never reused) is bypassed; then all three hit.
        assert_eq!(hit, vec![false, false, false, false, true, true, true]);
        // Too big for the cache: never admitted.
        let mut b = Belady::new(5, false);
        assert!(!b.access(9, 6, 3));
        assert!(b.is_empty());
    }
}
