//! W-TinyLFU (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache Admission Policy"),
//! byte-weighted, after Caffeine's design:
//!
//! - a window LRU (1% of the budget at first, adaptive, see below) takes every new key, so recency
//!   bursts get a chance;
//! - a segmented-LRU main (the rest: protected 90% of it, the rest probation) holds the rest;
//! - a key leaving the window is a *candidate* that enters main only if its TinyLFU frequency
//!   (count-min sketch + doorkeeper, aged periodically) beats main's probation victim; objects
//!   larger than the window skip it and contest directly. Victims are taken until the candidate
//!   fits, so one big candidate must beat every victim it displaces.
//!
//! One-pass scans lose every contest (frequency 1 against established keys), which is what makes
//! the policy scan resistant.
//!
//! The window adapts (ARC's rule, applied to Caffeine's window): candidates that lost their contest
//! and main's victims are remembered as ghosts; a miss on a rejected candidate's ghost means recency
//! was undervalued and the window grows by that object's weight, a miss on a main victim's ghost
//! means frequency was and the window shrinks by four times that weight. A static, frequency-driven workload keeps the window
//! near its 1% floor; popularity churn (new content turning hot) grows it towards LRU behaviour.

use super::ghost::Ghosts;
use super::list::{Arena, Queue};
use super::sketch::{FrequencySketch, NOMINAL_OBJECT_BYTES};
use super::{percent_of, tinylfu_admits, EvictionPolicy, InsertOutcome, PolicyKind};

const WINDOW: u8 = 0;
const PROBATION: u8 = 1;
const PROTECTED: u8 = 2;

/// Percent of the budget for the admission window (its floor when adaptive).
pub const WINDOW_PERCENT: u64 = 1;
/// Largest window, in percent of the budget, when adaptive.
pub const WINDOW_MAX_PERCENT: u64 = 80;
/// Percent of the main region for the protected segment.
pub const PROTECTED_PERCENT: u64 = 90;
/// A main victim's ghost shrinks the window by this many times its weight (a rejected
/// candidate's ghost grows it by one): frequency evidence counts more than recency evidence, which
/// keeps static workloads near the floor (measured in docs/simulator.md).
const SHRINK_FACTOR: i64 = 4;

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
    /// Window bounds; equal when the window is fixed.
    window_min: u64,
    window_max: u64,
    protected_percent: u64,
    /// Candidates that lost their admission contest.
    rejected: Ghosts,
    /// Main's victims.
    evicted: Ghosts,
}

impl WTinyLfu {
    /// An empty W-TinyLFU with a byte budget of `capacity` and the default shape: an adaptive
    /// window between 1% and 80% of the budget (starting at 1%), protected 90% of main.
    pub fn new(capacity: u64) -> Self {
        let mut p = Self::with_shape(capacity, WINDOW_PERCENT, PROTECTED_PERCENT);
        p.window_max = percent_of(capacity, WINDOW_MAX_PERCENT).max(p.window_min);
        p
    }

    /// An empty W-TinyLFU with a fixed window share of the budget and protected share of main
    /// (both in percent, clamped to 0..=100; the window is at least one byte).
    pub fn with_shape(capacity: u64, window_percent: u64, protected_percent: u64) -> Self {
        let window_capacity = percent_of(capacity, window_percent.min(100))
            .max(1)
            .min(capacity);
        let main_capacity = capacity - window_capacity;
        let nominal = usize::try_from(capacity / NOMINAL_OBJECT_BYTES).unwrap_or(usize::MAX);
        let protected_percent = protected_percent.min(100);
        let protected_capacity = percent_of(main_capacity, protected_percent);
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
            window_min: window_capacity,
            window_max: window_capacity,
            protected_percent,
            rejected: Ghosts::new(nominal),
            evicted: Ghosts::new(nominal),
        }
    }

    /// The current window budget in bytes.
    pub fn window_capacity(&self) -> u64 {
        self.window_capacity
    }

    /// Move the window budget by `delta` bytes within its bounds; main gets the rest. The regions
    /// settle on the next insert (the window drains into main through contests, an oversized
    /// main evicts its victims).
    fn resize_window(&mut self, delta: i64) {
        let target = self
            .window_capacity
            .saturating_add_signed(delta)
            .clamp(self.window_min, self.window_max);
        self.window_capacity = target;
        self.main_capacity = self.capacity - target;
        self.protected_capacity = percent_of(self.main_capacity, self.protected_percent);
    }

    /// A miss on `hash`: if it is a ghost, learn which region should have kept it.
    fn learn_from_miss(&mut self, hash: u64, weight: u64) {
        if self.window_min == self.window_max {
            return;
        }
        let step = i64::try_from(weight).unwrap_or(i64::MAX);
        if self.rejected.take(hash) {
            self.resize_window(step);
        } else if self.evicted.take(hash) {
            self.resize_window(-step.saturating_mul(SHRINK_FACTOR));
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

    /// TinyLFU admission: does `candidate` deserve `victim`'s place?
    fn admit(&mut self, candidate: u64, victim: u64) -> bool {
        let candidate_freq = self.sketch.frequency(candidate);
        let victim_freq = self.sketch.frequency(victim);
        tinylfu_admits(candidate_freq, victim_freq, &mut self.rng)
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
                self.evicted.insert(victim_hash);
                self.evict(victim, evicted);
            }
        }
        if weight <= self.main_capacity {
            // Rejected for its frequency (a candidate larger than main says nothing about recency).
            self.rejected.insert(hash);
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
            // No ghost: this eviction follows the window's own growth (or a reweigh), not a
            // contest, and must not count as evidence against it.
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
        self.rejected.ensure_capacity(self.len() + 1);
        self.evicted.ensure_capacity(self.len() + 1);
        self.sketch.increment(hash);
        self.learn_from_miss(hash, weight);
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
        }
        // Also settles a window that just shrank.
        self.drain_window(None, &mut evicted);
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
