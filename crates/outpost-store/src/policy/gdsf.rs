//! `size-aware`: GreedyDual-Size-Frequency (Cherkasova 1998) over TinyLFU frequencies, for
//! operators who pay per origin request rather than per byte. Every resident object has the
//! priority `L + frequency / size^1.4`; the lowest priority leaves first and sets the inflation
//! `L`, so objects that stopped being asked for age out. Unlike textbook GDSF:
//!
//! - the frequency is the count-min sketch's long-term estimate (aged, as W-TinyLFU's), so an
//!   object that left and returns keeps its history;
//! - a new object whose priority is below every victim it would displace is not admitted;
//! - size weighs more than linearly ([`SIZE_EXPONENT`], measured in docs/simulator.md: 1.0 trails
//!   LHD on video at 0.1% of bytes, 1.6 trails GDSF on onehit at 1%).
//!
//! Small objects win: object hit ratio goes up and byte hit ratio down (docs/simulator.md shows
//! both). The priority queue is a binary heap with lazy deletion: a hit pushes a fresh entry and
//! stale ones are skipped (and the heap rebuilt when they outnumber the live ones), so a hit costs
//! O(log n), more than the FIFO policies' O(1).

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};

use super::sketch::FrequencySketch;
use super::{EvictionPolicy, InsertOutcome, PolicyKind};

/// Exponent of the size in the priority.
pub const SIZE_EXPONENT: f64 = 1.4;
/// Rebuild the heap when it holds this many times more entries than resident objects (plus slack).
const HEAP_SLACK_FACTOR: usize = 2;
const HEAP_SLACK_MIN: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Resident {
    weight: u64,
    /// `weight^SIZE_EXPONENT`, computed once per weight.
    cost: f64,
    /// The current heap entry's stamp; older entries of this key are stale.
    stamp: u64,
}

/// A heap entry: priority (non-negative `f64` bits, which order as the floats do), stamp, key.
type HeapItem = Reverse<(u64, u64, u64)>;

fn cost_of(weight: u64) -> f64 {
    (weight.max(1) as f64).powf(SIZE_EXPONENT)
}

/// Byte-weighted GDSF with TinyLFU frequencies.
#[derive(Debug, Clone)]
pub struct SizeAware {
    residents: HashMap<u64, Resident>,
    heap: BinaryHeap<HeapItem>,
    sketch: FrequencySketch,
    bytes: u64,
    capacity: u64,
    /// The inflation value `L`: the priority of the last object evicted.
    inflation: f64,
    next_stamp: u64,
}

impl SizeAware {
    /// An empty size-aware policy with a byte budget of `capacity`.
    pub fn new(capacity: u64) -> Self {
        Self {
            residents: HashMap::new(),
            heap: BinaryHeap::new(),
            sketch: FrequencySketch::for_budget(capacity),
            bytes: 0,
            capacity,
            inflation: 0.0,
            next_stamp: 0,
        }
    }

    fn priority(&self, hash: u64, cost: f64) -> f64 {
        self.inflation + self.sketch.frequency(hash) as f64 / cost
    }

    /// Pushes a fresh heap entry for `hash` and returns its stamp.
    fn push(&mut self, hash: u64, priority: f64) -> u64 {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.heap.push(Reverse((priority.to_bits(), stamp, hash)));
        if self.heap.len() > HEAP_SLACK_FACTOR * self.residents.len() + HEAP_SLACK_MIN {
            let residents = &self.residents;
            self.heap.retain(|Reverse((_, stamp, hash))| {
                residents.get(hash).is_some_and(|r| r.stamp == *stamp)
            });
        }
        stamp
    }

    /// The lowest-priority resident other than `protect`, with its priority; stale heap entries
    /// on the way are dropped. `protect`'s own entry is set aside and pushed back.
    fn lowest(&mut self, protect: Option<u64>) -> Option<(u64, f64)> {
        let mut kept = None;
        let found = loop {
            let Some(Reverse((bits, stamp, hash))) = self.heap.pop() else {
                break None;
            };
            let live = self.residents.get(&hash).is_some_and(|r| r.stamp == stamp);
            if !live {
                continue;
            }
            if Some(hash) == protect {
                kept = Some(Reverse((bits, stamp, hash)));
                continue;
            }
            // Put it back: the caller decides whether to evict.
            self.heap.push(Reverse((bits, stamp, hash)));
            break Some((hash, f64::from_bits(bits)));
        };
        if let Some(item) = kept {
            self.heap.push(item);
        }
        found
    }

    fn evict(&mut self, hash: u64, priority: f64, evicted: &mut Vec<u64>) {
        if let Some(r) = self.residents.remove(&hash) {
            self.bytes -= r.weight;
            self.inflation = self.inflation.max(priority);
            evicted.push(hash);
        }
    }

    /// Evicts lowest-priority residents (never `protect`) until `extra` more bytes fit. With
    /// `bar`, stops (false) at a victim whose priority is not below it.
    fn make_room(
        &mut self,
        extra: u64,
        protect: Option<u64>,
        bar: Option<f64>,
        evicted: &mut Vec<u64>,
    ) -> bool {
        while self.bytes + extra > self.capacity {
            let Some((hash, priority)) = self.lowest(protect) else {
                return false;
            };
            if bar.is_some_and(|bar| priority >= bar) {
                return false;
            }
            self.evict(hash, priority, evicted);
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn check(&self) {
        let sum: u64 = self.residents.values().map(|r| r.weight).sum();
        assert_eq!(sum, self.bytes);
        assert!(self.bytes <= self.capacity);
        for (hash, r) in &self.residents {
            assert!(
                self.heap
                    .iter()
                    .any(|Reverse((_, stamp, h))| h == hash && *stamp == r.stamp),
                "resident {hash} has no live heap entry"
            );
        }
    }
}

impl EvictionPolicy for SizeAware {
    fn kind(&self) -> PolicyKind {
        PolicyKind::SizeAware
    }

    fn on_hit(&mut self, hash: u64) {
        let Some(cost) = self.residents.get(&hash).map(|r| r.cost) else {
            return;
        };
        self.sketch.increment(hash);
        let priority = self.priority(hash, cost);
        let stamp = self.push(hash, priority);
        if let Some(r) = self.residents.get_mut(&hash) {
            r.stamp = stamp;
        }
    }

    fn on_insert(&mut self, hash: u64, weight: u64) -> InsertOutcome {
        let mut evicted = Vec::new();
        if let Some(old) = self.residents.get(&hash).map(|r| r.weight) {
            // An update: new weight, counts as an access.
            self.bytes -= old;
            if weight > self.capacity {
                self.residents.remove(&hash);
                return InsertOutcome {
                    admitted: false,
                    evicted,
                };
            }
            self.bytes += weight;
            if let Some(r) = self.residents.get_mut(&hash) {
                r.weight = weight;
                r.cost = cost_of(weight);
            }
            self.on_hit(hash);
            self.make_room(0, Some(hash), None, &mut evicted);
            return InsertOutcome {
                admitted: true,
                evicted,
            };
        }
        self.sketch.ensure_capacity(self.residents.len() + 1);
        self.sketch.increment(hash);
        if weight > self.capacity {
            return InsertOutcome {
                admitted: false,
                evicted,
            };
        }
        let cost = cost_of(weight);
        let priority = self.priority(hash, cost);
        // Not admitted when a victim it would displace has at least its priority (it would be the
        // next to leave anyway); measured better than textbook GDSF's admit-all.
        if !self.make_room(weight, None, Some(priority), &mut evicted) {
            return InsertOutcome {
                admitted: false,
                evicted,
            };
        }
        let stamp = self.push(hash, priority);
        if let Entry::Vacant(v) = self.residents.entry(hash) {
            v.insert(Resident {
                weight,
                cost,
                stamp,
            });
        }
        self.bytes += weight;
        InsertOutcome {
            admitted: true,
            evicted,
        }
    }

    fn on_remove(&mut self, hash: u64) -> bool {
        match self.residents.remove(&hash) {
            Some(r) => {
                self.bytes -= r.weight;
                true
            }
            None => false,
        }
    }

    fn contains(&self, hash: u64) -> bool {
        self.residents.contains_key(&hash)
    }

    fn len(&self) -> usize {
        self.residents.len()
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }
}
