//! S3-FIFO (Yang et al., SOSP 2023), byte-weighted: a small FIFO (10% of the budget) filters
//! one-hit wonders, a main FIFO (90%) with 2-bit frequencies reinserts accessed objects, and a
//! ghost FIFO of recently filtered keys (no data, up to the main budget in bytes) sends a key
//! that returns soon straight to main.
//!
//! [`S3Fifo::tinylfu`] is the default policy (`s3-tinylfu`), S3-FIFO with two additions measured
//! in docs/simulator.md (issue 11):
//!
//! - **a TinyLFU second chance**: an object leaving small without a hit there is not dropped at
//!   once when its long-term frequency (count-min sketch, aged, as W-TinyLFU's) is at least
//!   [`SECOND_CHANCE_MIN`]; it contests main's CLOCK victims and enters main only by out-counting
//!   each object it displaces. This keeps a stable part of a loop larger than the cache, which
//!   plain S3-FIFO (a FIFO of FIFOs) loses entirely;
//! - **a size filter**: an object larger than [`SIZE_FILTER_MEAN`] times the mean resident object
//!   goes to the ghost first and is admitted when it returns, so one large object does not flush
//!   many small ones on its first request (object hit ratio under a byte budget). With every
//!   object weighing the same, the filter never fires.

use super::list::{Arena, Queue};
use super::sketch::FrequencySketch;
use super::{percent_of, tinylfu_admits, EvictionPolicy, InsertOutcome, PolicyKind};

const SMALL: u8 = 0;
const MAIN: u8 = 1;
const GHOST: u8 = 2;
/// 2-bit frequency.
const FREQ_MAX: u8 = 3;
/// Percent of the budget for the small FIFO.
pub const SMALL_PERCENT: u64 = 10;
/// `s3-tinylfu`: smallest sketch frequency for an unaccessed object leaving small to contest main.
pub const SECOND_CHANCE_MIN: u64 = 3;
/// `s3-tinylfu`: objects above this many times the mean resident size wait in the ghost first.
pub const SIZE_FILTER_MEAN: u64 = 2;
/// The size filter needs a mean over at least this many resident objects.
const SIZE_FILTER_MIN_OBJECTS: usize = 16;
/// Assumed mean object size, to size the sketch before the cache has filled (it grows later).
const NOMINAL_OBJECT_BYTES: u64 = 8 * 1024;

/// Byte-weighted S3-FIFO, plain or with the `s3-tinylfu` additions.
#[derive(Debug, Clone)]
pub struct S3Fifo {
    arena: Arena,
    small: Queue,
    main: Queue,
    ghost: Queue,
    capacity: u64,
    small_capacity: u64,
    ghost_capacity: u64,
    /// `Some` for `s3-tinylfu`: long-term frequencies for the second chance.
    sketch: Option<FrequencySketch>,
    rng: u64,
}

impl S3Fifo {
    /// An empty, plain S3-FIFO with a byte budget of `capacity`.
    pub fn new(capacity: u64) -> Self {
        let small_capacity = percent_of(capacity, SMALL_PERCENT).max(1);
        let ghost_capacity = capacity.saturating_sub(small_capacity).max(1);
        Self {
            arena: Arena::default(),
            small: Queue::new(SMALL),
            main: Queue::new(MAIN),
            ghost: Queue::new(GHOST),
            capacity,
            small_capacity,
            ghost_capacity,
            sketch: None,
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// An empty `s3-tinylfu` (the default policy): S3-FIFO with the TinyLFU second chance and the
    /// size filter.
    pub fn tinylfu(capacity: u64) -> Self {
        let nominal = usize::try_from(capacity / NOMINAL_OBJECT_BYTES).unwrap_or(usize::MAX);
        Self {
            sketch: Some(FrequencySketch::new(nominal)),
            ..Self::new(capacity)
        }
    }

    /// The sketch's frequency estimate (0 for plain S3-FIFO).
    pub fn frequency(&self, hash: u64) -> u64 {
        self.sketch.as_ref().map_or(0, |s| s.frequency(hash))
    }

    /// Rotates main's CLOCK (accessed objects go round again with their count decremented) until
    /// its tail is an unaccessed object other than `protect`: the next victim, not yet evicted.
    fn main_victim(&mut self, protect: Option<u64>) -> Option<u32> {
        let mut rotations = self.main.len() * (FREQ_MAX as usize + 1) + 1;
        while let Some(idx) = self.main.tail() {
            if rotations == 0 {
                return None;
            }
            rotations -= 1;
            let node = self.arena.node(idx);
            if Some(node.hash) == protect {
                if self.main.len() == 1 {
                    return None;
                }
                self.arena.move_to_head(&mut self.main, idx);
                continue;
            }
            if node.freq > 0 {
                self.arena.node_mut(idx).freq -= 1;
                self.arena.move_to_head(&mut self.main, idx);
                continue;
            }
            return Some(idx);
        }
        None
    }

    /// The TinyLFU second chance for a detached, unaccessed object leaving small: it enters main
    /// if main has room or it out-counts every victim it displaces. False (nothing placed) when it
    /// is not frequent enough or loses; victims it beat before losing stay evicted, and their room
    /// goes to the next object.
    fn second_chance(&mut self, idx: u32, protect: Option<u64>, evicted: &mut Vec<u64>) -> bool {
        let (hash, weight) = {
            let node = self.arena.node(idx);
            (node.hash, node.weight)
        };
        let candidate = self.frequency(hash);
        let main_capacity = self.capacity - self.small_capacity;
        if self.sketch.is_none() || candidate < SECOND_CHANCE_MIN || weight > main_capacity {
            return false;
        }
        loop {
            if self.main.bytes() + weight <= main_capacity {
                self.arena.push_head(&mut self.main, idx);
                return true;
            }
            let Some(victim) = self.main_victim(protect) else {
                return false;
            };
            let victim_hash = self.arena.node(victim).hash;
            let victim_frequency = self.frequency(victim_hash);
            if !tinylfu_admits(candidate, victim_frequency, &mut self.rng) {
                return false;
            }
            evicted.push(victim_hash);
            self.arena.unlink(&mut self.main, victim);
            self.arena.release(victim);
        }
    }

    /// `s3-tinylfu`'s size filter: is `weight` too large to enter before it returns?
    fn oversized(&self, weight: u64) -> bool {
        if weight > self.small_capacity {
            return true;
        }
        let objects = self.small.len() + self.main.len();
        self.sketch.is_some()
            && objects >= SIZE_FILTER_MIN_OBJECTS
            && u128::from(weight) * objects as u128
                > u128::from(SIZE_FILTER_MEAN) * u128::from(self.resident_bytes())
    }

    fn resident_bytes(&self) -> u64 {
        self.small.bytes() + self.main.bytes()
    }

    fn resident_index(&self, hash: u64) -> Option<u32> {
        self.arena
            .find(hash)
            .filter(|&idx| self.arena.node(idx).queue != GHOST)
    }

    fn unlink_any(&mut self, idx: u32) {
        match self.arena.node(idx).queue {
            SMALL => self.arena.unlink(&mut self.small, idx),
            MAIN => self.arena.unlink(&mut self.main, idx),
            GHOST => self.arena.unlink(&mut self.ghost, idx),
            _ => {}
        }
    }

    fn remember_ghost(&mut self, idx: u32) {
        self.arena.push_head(&mut self.ghost, idx);
        while self.ghost.bytes() > self.ghost_capacity {
            let Some(old) = self.ghost.tail() else { break };
            self.arena.unlink(&mut self.ghost, old);
            self.arena.release(old);
        }
    }

    /// Processes the small FIFO's tail: accessed → main, else → ghost. False if nothing to do.
    fn evict_small(&mut self, protect: Option<u64>, evicted: &mut Vec<u64>) -> bool {
        let Some(idx) = self.arena.tail_except(&self.small, protect) else {
            return false;
        };
        self.arena.unlink(&mut self.small, idx);
        if self.arena.node(idx).freq >= 1 {
            self.arena.node_mut(idx).freq = 0;
            self.arena.push_head(&mut self.main, idx);
        } else if !self.second_chance(idx, protect, evicted) {
            evicted.push(self.arena.node(idx).hash);
            self.remember_ghost(idx);
        }
        true
    }

    /// Evicts one object from main, reinserting accessed ones with their frequency decremented
    /// (2-bit CLOCK). False if main holds nothing evictable.
    fn evict_main(&mut self, protect: Option<u64>, evicted: &mut Vec<u64>) -> bool {
        let Some(idx) = self.main_victim(protect) else {
            return false;
        };
        evicted.push(self.arena.node(idx).hash);
        self.arena.unlink(&mut self.main, idx);
        self.arena.release(idx);
        true
    }

    fn evict_over_budget(&mut self, protect: Option<u64>, evicted: &mut Vec<u64>) {
        while self.resident_bytes() > self.capacity {
            let prefer_small = self.small.bytes() > self.small_capacity
                || self.arena.tail_except(&self.main, protect).is_none();
            let order = if prefer_small {
                [SMALL, MAIN]
            } else {
                [MAIN, SMALL]
            };
            let progressed = order.into_iter().any(|queue| match queue {
                SMALL => self.evict_small(protect, evicted),
                _ => self.evict_main(protect, evicted),
            });
            if !progressed {
                break;
            }
        }
    }

    /// Resident hashes of the small and main queues, head first (tests).
    #[cfg(test)]
    pub(crate) fn queues(&self) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
        (
            self.arena.hashes(&self.small),
            self.arena.hashes(&self.main),
            self.arena.hashes(&self.ghost),
        )
    }

    #[cfg(test)]
    pub(crate) fn check(&self) {
        self.arena.check_queue(&self.small);
        self.arena.check_queue(&self.main);
        self.arena.check_queue(&self.ghost);
        assert_eq!(
            self.arena.allocated(),
            self.small.len() + self.main.len() + self.ghost.len()
        );
        assert!(self.resident_bytes() <= self.capacity);
        assert!(self.ghost.bytes() <= self.ghost_capacity);
    }
}

impl EvictionPolicy for S3Fifo {
    fn kind(&self) -> PolicyKind {
        if self.sketch.is_some() {
            PolicyKind::S3TinyLfu
        } else {
            PolicyKind::S3Fifo
        }
    }

    fn on_hit(&mut self, hash: u64) {
        if let Some(idx) = self.resident_index(hash) {
            if let Some(sketch) = self.sketch.as_mut() {
                sketch.increment(hash);
            }
            let node = self.arena.node_mut(idx);
            node.freq = (node.freq + 1).min(FREQ_MAX);
        }
    }

    fn on_insert(&mut self, hash: u64, weight: u64) -> InsertOutcome {
        let mut evicted = Vec::new();
        if let Some(idx) = self.resident_index(hash) {
            if weight > self.capacity {
                self.unlink_any(idx);
                self.arena.release(idx);
                return InsertOutcome {
                    admitted: false,
                    evicted,
                };
            }
            match self.arena.node(idx).queue {
                SMALL => self.arena.reweigh(&mut self.small, idx, weight),
                _ => self.arena.reweigh(&mut self.main, idx, weight),
            }
            self.on_hit(hash);
            self.evict_over_budget(Some(hash), &mut evicted);
            return InsertOutcome {
                admitted: true,
                evicted,
            };
        }
        if weight > self.capacity {
            return InsertOutcome {
                admitted: false,
                evicted,
            };
        }
        let resident = self.small.len() + self.main.len() + 1;
        if let Some(sketch) = self.sketch.as_mut() {
            sketch.ensure_capacity(resident);
            sketch.increment(hash);
        }
        if let Some(ghost) = self.arena.find(hash) {
            // Seen recently and filtered out: it has proved itself, straight to main.
            self.arena.unlink(&mut self.ghost, ghost);
            self.arena.release(ghost);
            let idx = self.arena.alloc(hash, weight);
            self.arena.push_head(&mut self.main, idx);
        } else if self.oversized(weight) {
            // Too big for the filter queue (or, for s3-tinylfu, far above the mean object):
            // remember it, admit it when it comes back.
            let idx = self.arena.alloc(hash, weight);
            self.remember_ghost(idx);
            return InsertOutcome {
                admitted: false,
                evicted,
            };
        } else {
            let idx = self.arena.alloc(hash, weight);
            self.arena.push_head(&mut self.small, idx);
        }
        self.evict_over_budget(None, &mut evicted);
        let admitted = self.resident_index(hash).is_some();
        evicted.retain(|&h| h != hash);
        InsertOutcome { admitted, evicted }
    }

    fn on_remove(&mut self, hash: u64) -> bool {
        match self.resident_index(hash) {
            Some(idx) => {
                self.unlink_any(idx);
                self.arena.release(idx);
                true
            }
            None => false,
        }
    }

    fn contains(&self, hash: u64) -> bool {
        self.resident_index(hash).is_some()
    }

    fn len(&self) -> usize {
        self.small.len() + self.main.len()
    }

    fn bytes(&self) -> u64 {
        self.resident_bytes()
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }
}
