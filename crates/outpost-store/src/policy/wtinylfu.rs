//! W-TinyLFU (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache Admission Policy"),
//! byte-weighted, after Caffeine's design:
//!
//! - a window LRU (1% of the budget) takes every new key, so recency bursts get a chance;
//! - a segmented-LRU main (99%: protected 80% of it, the rest probation) holds the rest;
//! - a key leaving the window is a *candidate* that enters main only if its TinyLFU frequency
//!   (count-min sketch + doorkeeper, aged periodically) beats main's probation victim; objects
//!   larger than the window skip it and contest directly. Victims are taken until the candidate
//!   fits, so one big candidate must beat every victim it displaces.
//!
//! One-pass scans lose every contest (frequency 1 against established keys), which is what makes
//! the policy scan resistant.

use super::list::{Arena, Queue};
use super::sketch::FrequencySketch;
use super::{percent_of, EvictionPolicy, InsertOutcome, PolicyKind};

const WINDOW: u8 = 0;
const PROBATION: u8 = 1;
const PROTECTED: u8 = 2;

/// Percent of the budget for the admission window.
pub const WINDOW_PERCENT: u64 = 1;
/// Percent of the main region for the protected segment.
pub const PROTECTED_PERCENT: u64 = 80;
/// A candidate at least this frequent wins a lost contest with probability 1/128, so an attacker
/// who inflates a victim's sketch counters cannot pin it forever (Caffeine's hash-flooding guard).
const ADMIT_HASHDOS_THRESHOLD: u64 = 6;
/// Assumed mean object size, to size the sketch before the cache has filled (it grows later).
const NOMINAL_OBJECT_BYTES: u64 = 8 * 1024;

/// Byte-weighted W-TinyLFU.
#[derive(Debug, Clone)]
pub struct WTinyLfu {
    arena: Arena,
    window: Queue,
    probation: Queue,
    protected: Queue,
    capacity: u64,
    window_capacity: u64,
    main_capacity: u64,
    protected_capacity: u64,
    sketch: FrequencySketch,
    rng: u64,
}

impl WTinyLfu {
    /// An empty W-TinyLFU with a byte budget of `capacity` and the default shape (window 1%,
    /// protected 80% of main).
    pub fn new(capacity: u64) -> Self {
        Self::with_shape(capacity, WINDOW_PERCENT, PROTECTED_PERCENT)
    }

    /// An empty W-TinyLFU with a chosen window share of the budget and protected share of main
    /// (both in percent, clamped to 0..=100; the window is at least one byte).
    pub fn with_shape(capacity: u64, window_percent: u64, protected_percent: u64) -> Self {
        let window_capacity = percent_of(capacity, window_percent.min(100))
            .max(1)
            .min(capacity);
        let main_capacity = capacity - window_capacity;
        let protected_capacity = percent_of(main_capacity, protected_percent.min(100));
        let nominal = usize::try_from(capacity / NOMINAL_OBJECT_BYTES).unwrap_or(usize::MAX);
        Self {
            arena: Arena::default(),
            window: Queue::new(WINDOW),
            probation: Queue::new(PROBATION),
            protected: Queue::new(PROTECTED),
            capacity,
            window_capacity,
            main_capacity,
            protected_capacity,
            sketch: FrequencySketch::new(nominal),
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// The sketch's frequency estimate for a key (for tests and the simulator's explanations).
    pub fn frequency(&self, hash: u64) -> u64 {
        self.sketch.frequency(hash)
    }

    fn main_bytes(&self) -> u64 {
        self.probation.bytes() + self.protected.bytes()
    }

    fn total_bytes(&self) -> u64 {
        self.window.bytes() + self.main_bytes()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic, so simulations are reproducible.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// TinyLFU admission: does `candidate` deserve `victim`'s place?
    fn admit(&mut self, candidate: u64, victim: u64) -> bool {
        let candidate_freq = self.sketch.frequency(candidate);
        let victim_freq = self.sketch.frequency(victim);
        if candidate_freq > victim_freq {
            true
        } else if candidate_freq >= ADMIT_HASHDOS_THRESHOLD {
            self.next_random() & 127 == 0
        } else {
            false
        }
    }

    fn unlink_any(&mut self, idx: u32) {
        match self.arena.node(idx).queue {
            WINDOW => self.arena.unlink(&mut self.window, idx),
            PROBATION => self.arena.unlink(&mut self.probation, idx),
            PROTECTED => self.arena.unlink(&mut self.protected, idx),
            _ => {}
        }
    }

    fn evict(&mut self, idx: u32, evicted: &mut Vec<u64>) {
        evicted.push(self.arena.node(idx).hash);
        self.unlink_any(idx);
        self.arena.release(idx);
    }

    /// Main's next victim: probation's LRU, else protected's LRU.
    fn main_victim(&self, protect: Option<u64>) -> Option<u32> {
        self.arena
            .tail_except(&self.probation, protect)
            .or_else(|| self.arena.tail_except(&self.protected, protect))
    }

    /// A detached candidate contests main's victims until it fits or loses.
    fn contest(&mut self, candidate: u32, protect: Option<u64>, evicted: &mut Vec<u64>) {
        let (hash, weight) = {
            let node = self.arena.node(candidate);
            (node.hash, node.weight)
        };
        if weight <= self.main_capacity {
            loop {
                if self.main_bytes() + weight <= self.main_capacity {
                    self.arena.push_head(&mut self.probation, candidate);
                    return;
                }
                let Some(victim) = self.main_victim(protect) else {
                    break;
                };
                let victim_hash = self.arena.node(victim).hash;
                if !self.admit(hash, victim_hash) {
                    break;
                }
                self.evict(victim, evicted);
            }
        }
        evicted.push(hash);
        self.arena.release(candidate);
    }

    /// Moves the window's overflow (LRU first) into main through admission contests.
    fn drain_window(&mut self, protect: Option<u64>, evicted: &mut Vec<u64>) {
        while self.window.bytes() > self.window_capacity {
            match self.arena.tail_except(&self.window, protect) {
                Some(candidate) => {
                    self.arena.unlink(&mut self.window, candidate);
                    self.contest(candidate, protect, evicted);
                }
                None => {
                    // Only the updated key is left and it outgrew the window: it is resident
                    // already, so it moves to main without a contest.
                    if let Some(idx) = self.window.tail() {
                        self.arena.unlink(&mut self.window, idx);
                        self.arena.push_head(&mut self.probation, idx);
                    }
                    break;
                }
            }
        }
    }

    /// Demotes protected's LRU entries to probation while protected is over its share.
    fn demote_protected(&mut self) {
        while self.protected.bytes() > self.protected_capacity && self.protected.len() > 1 {
            let Some(idx) = self.protected.tail() else {
                break;
            };
            self.arena.unlink(&mut self.protected, idx);
            self.arena.push_head(&mut self.probation, idx);
        }
    }

    /// After an update changed weights: evict (no contest) until every region fits.
    fn enforce_budget(&mut self, protect: Option<u64>, evicted: &mut Vec<u64>) {
        while self.main_bytes() > self.main_capacity {
            let Some(victim) = self.main_victim(protect) else {
                break;
            };
            self.evict(victim, evicted);
        }
        while self.total_bytes() > self.capacity {
            let Some(victim) = self
                .main_victim(protect)
                .or_else(|| self.arena.tail_except(&self.window, protect))
            else {
                break;
            };
            self.evict(victim, evicted);
        }
        self.demote_protected();
    }

    /// Promotion on access.
    fn touch(&mut self, idx: u32) {
        match self.arena.node(idx).queue {
            WINDOW => self.arena.move_to_head(&mut self.window, idx),
            PROBATION => {
                self.arena.unlink(&mut self.probation, idx);
                self.arena.push_head(&mut self.protected, idx);
                self.demote_protected();
            }
            PROTECTED => self.arena.move_to_head(&mut self.protected, idx),
            _ => {}
        }
    }

    fn update(&mut self, idx: u32, hash: u64, weight: u64) -> InsertOutcome {
        let mut evicted = Vec::new();
        if weight > self.capacity {
            self.unlink_any(idx);
            self.arena.release(idx);
            return InsertOutcome {
                admitted: false,
                evicted,
            };
        }
        self.sketch.increment(hash);
        match self.arena.node(idx).queue {
            WINDOW => self.arena.reweigh(&mut self.window, idx, weight),
            PROBATION => self.arena.reweigh(&mut self.probation, idx, weight),
            _ => self.arena.reweigh(&mut self.protected, idx, weight),
        }
        self.touch(idx);
        self.drain_window(Some(hash), &mut evicted);
        self.enforce_budget(Some(hash), &mut evicted);
        InsertOutcome {
            admitted: true,
            evicted,
        }
    }

    /// Window, probation and protected hashes, head first (tests).
    #[cfg(test)]
    pub(crate) fn segments(&self) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
        (
            self.arena.hashes(&self.window),
            self.arena.hashes(&self.probation),
            self.arena.hashes(&self.protected),
        )
    }

    #[cfg(test)]
    pub(crate) fn check(&self) {
        self.arena.check_queue(&self.window);
        self.arena.check_queue(&self.probation);
        self.arena.check_queue(&self.protected);
        assert_eq!(
            self.arena.allocated(),
            self.window.len() + self.probation.len() + self.protected.len()
        );
        assert!(self.total_bytes() <= self.capacity);
    }
}

impl EvictionPolicy for WTinyLfu {
    fn kind(&self) -> PolicyKind {
        PolicyKind::WTinyLfu
    }

    fn on_hit(&mut self, hash: u64) {
        if let Some(idx) = self.arena.find(hash) {
            self.sketch.increment(hash);
            self.touch(idx);
        }
    }

    fn on_insert(&mut self, hash: u64, weight: u64) -> InsertOutcome {
        if let Some(idx) = self.arena.find(hash) {
            return self.update(idx, hash, weight);
        }
        let mut evicted = Vec::new();
        self.sketch.ensure_capacity(self.len() + 1);
        self.sketch.increment(hash);
        if weight > self.capacity {
            return InsertOutcome {
                admitted: false,
                evicted,
            };
        }
        let idx = self.arena.alloc(hash, weight);
        if weight > self.window_capacity {
            // Bigger than the whole window: contest for main right away instead of flushing the
            // window.
            self.contest(idx, None, &mut evicted);
        } else {
            self.arena.push_head(&mut self.window, idx);
            self.drain_window(None, &mut evicted);
        }
        self.enforce_budget(None, &mut evicted);
        let admitted = self.arena.find(hash).is_some();
        evicted.retain(|&h| h != hash);
        InsertOutcome { admitted, evicted }
    }

    fn on_remove(&mut self, hash: u64) -> bool {
        match self.arena.find(hash) {
            Some(idx) => {
                self.unlink_any(idx);
                self.arena.release(idx);
                true
            }
            None => false,
        }
    }

    fn contains(&self, hash: u64) -> bool {
        self.arena.find(hash).is_some()
    }

    fn len(&self) -> usize {
        self.window.len() + self.probation.len() + self.protected.len()
    }

    fn bytes(&self) -> u64 {
        self.total_bytes()
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }
}
