//! S3-FIFO (Yang et al., SOSP 2023), byte-weighted: a small FIFO (10% of the budget) filters
//! one-hit wonders, a main FIFO (90%) with 2-bit frequencies reinserts accessed objects, and a
//! ghost FIFO of recently filtered keys (no data, up to the main budget in bytes) sends a key
//! that returns soon straight to main.
//!
//! [`S3Fifo::tinylfu`] is the default policy (`s3-tinylfu`), S3-FIFO with these additions, each
//! measured in docs/simulator.md (issue 11):
//!
//! - **a TinyLFU second chance**: an object leaving small without a hit there is not dropped at
//!   once when its long-term frequency (count-min sketch, aged, as W-TinyLFU's) is at least
//!   [`SECOND_CHANCE_MIN`]; it contests main's CLOCK victims and enters main only by out-counting
//!   each object it displaces by more than [`INCUMBENT_MARGIN`] (counts a step apart are noise,
//!   and a resident that wins ties keeps a stable part of a loop larger than the cache, which
//!   plain S3-FIFO, a FIFO of FIFOs, loses entirely);
//! - **a size filter**: an object larger than [`SIZE_FILTER_MEAN`] times the mean resident object
//!   (and above [`SIZE_FILTER_FLOOR_PPM`] of the budget) goes to the ghost first and is admitted
//!   when it returns, so one large object does not flush many small ones on its first request;
//!   an object above the mean and above [`LARGE_OBJECT_PPM`] of the budget is admitted only once
//!   the sketch has seen it [`SECOND_CHANCE_MIN`] times, once more above
//!   [`LARGE_OBJECT_STEP_PPM`] and again for each doubling of its share past that (a big
//!   download must prove itself before it displaces a share of a small cache); above
//!   [`LARGE_OBJECT_RETURN_PPM`] it must also have come back while the ghost remembered it,
//!   once per that share (an inter-arrival test: the aged sketch also counts requests spread
//!   over a long period). With every object weighing the same, none of these fires;
//! - **a ghost sized in keys**: it remembers [`GHOST_PERCENT_OF_RESIDENT`] keys per 100 resident
//!   objects, whatever their sizes, so a large object the size filter sent there is still
//!   remembered when it returns;
//! - **two modes chosen by miniature simulation**: [`Mode::Recency`] is the above (small FIFO
//!   [`SMALL_PERCENT`]% of the budget; hit-in-small and ghost hits enter main freely: new content
//!   gets in fast). [`Mode::Frequency`] shrinks small to [`FREQUENCY_SMALL_PERCENT`]% and makes
//!   those entries contest main's victims too, as W-TinyLFU admits (a loop or a stable
//!   frequency ranking stays); its second chance starts at [`FREQUENCY_SECOND_CHANCE_MIN`].
//!   Two shadow caches, one per mode, run on 1 key in [`SHADOW_RATE`] (by hash) with
//!   1/[`SHADOW_RATE`] of the budget (Waldspurger et al., "Cache Modeling and Optimization
//!   using Miniature Simulations", USENIX ATC 2017); every few shadow lifetimes the cache takes
//!   the other mode if its shadow hit significantly more often (McNemar's test, two standard
//!   deviations, so a short or noisy sample keeps the current mode).

use super::duel::Duel;
use super::list::{Arena, Queue};
use super::sketch::FrequencySketch;
use super::{percent_of, tinylfu_admits, EvictionPolicy, InsertOutcome, PolicyKind};

const SMALL: u8 = 0;
const MAIN: u8 = 1;
const GHOST: u8 = 2;
/// 2-bit frequency.
const FREQ_MAX: u8 = 3;
/// Percent of the budget for the small FIFO ([`Mode::Recency`], and plain S3-FIFO).
pub const SMALL_PERCENT: u64 = 10;
/// Percent of the budget for the small FIFO in [`Mode::Frequency`].
pub const FREQUENCY_SMALL_PERCENT: u64 = 1;
/// `s3-tinylfu`: a second-chance candidate must out-count a victim by more than this.
pub const INCUMBENT_MARGIN: u64 = 1;
/// `s3-tinylfu`: objects above this share of the budget (parts per million) and above the mean
/// resident object are admitted only once the sketch has seen them [`SECOND_CHANCE_MIN`] times
/// (more above [`LARGE_OBJECT_STEP_PPM`]).
pub const LARGE_OBJECT_PPM: u64 = 5_000;
/// `s3-tinylfu`: a large object above this share of the budget (parts per million) needs one
/// sighting more than [`SECOND_CHANCE_MIN`], and one more for each doubling of its share (above
/// 2%: 4, 4%: 5, 8%: 6, 16%: 7, ...): the larger its share of a small cache, the more small
/// objects, and object hits, it displaces, so the hotter it must be.
pub const LARGE_OBJECT_STEP_PPM: u64 = 20_000;
/// `s3-tinylfu`: a large object must also have come back while the ghost remembered it once for
/// each this many parts per million of the budget it takes (5%: once, 10%: twice, 20%: four
/// times). The ghost entry of a held-back object counts its returns; one that drops out of the
/// ghost starts again. The sketch's count is aged over many cache lifetimes, so a large object
/// requested now and then has the count of a hot one; its returns do not come within a ghost
/// lifetime, and a large share of a small cache is too much to give it.
pub const LARGE_OBJECT_RETURN_PPM: u64 = 50_000;
/// `s3-tinylfu`: the size filter leaves objects at or below this share of the budget (parts per
/// million) alone, however far above the mean: they are small next to the cache.
pub const SIZE_FILTER_FLOOR_PPM: u64 = 200;
/// `s3-tinylfu`: the shadow caches see 1 key in this many (a power of two) with this fraction of
/// the budget.
pub const SHADOW_RATE: u64 = 64;
/// The mode switches when the other mode's shadow leads by this many standard deviations.
const SHADOW_SIGMAS: u64 = 2;
/// Odd multiplier for the shadow sample (its top bits pick the sample).
const SHADOW_SAMPLE_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
/// `s3-tinylfu`: smallest sketch frequency for an unaccessed object leaving small to contest main.
pub const SECOND_CHANCE_MIN: u64 = 3;
/// `s3-tinylfu` in [`Mode::Frequency`]: the second chance starts at this sketch frequency, so an
/// object seen twice (a loop's second pass) can fill a main that has room, as W-TinyLFU's window
/// victims fill its main.
pub const FREQUENCY_SECOND_CHANCE_MIN: u64 = 2;
/// `s3-tinylfu`: the ghost remembers this many keys per 100 resident objects (plain S3-FIFO's
/// ghost is a byte budget, main's). A ghost entry costs the same whatever the object's size, and
/// a large object the size filter sent there must still be remembered when it returns; a ghost
/// as long as the cache would let a loop slightly longer than the cache cycle through it.
pub const GHOST_PERCENT_OF_RESIDENT: u64 = 70;
/// `s3-tinylfu`: objects above this many times the mean resident size wait in the ghost first.
pub const SIZE_FILTER_MEAN: u64 = 2;
/// The size filter needs a mean over at least this many resident objects.
const SIZE_FILTER_MIN_OBJECTS: usize = 16;

/// How objects enter main (`s3-tinylfu`; plain S3-FIFO is always [`Mode::Recency`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// S3-FIFO's entries: a hit in small or a ghost hit enters main at once.
    Recency,
    /// Every entry into main contests main's victims by sketch frequency; small FIFO 1%.
    Frequency,
}

/// The miniature simulations that pick the mode: one `s3-tinylfu` per mode at 1/[`SHADOW_RATE`]
/// of the budget, fed the sampled keys ([`S3Fifo::in_shadow_sample`]). Inside one policy, or
/// shared by the shards of a RAM tier (`MemoryStore`), so that the sample covers the whole tier.
#[derive(Debug, Clone)]
pub struct ModeShadows {
    /// One cache per mode, `[Recency, Frequency]`, with a fixed mode and no shadows of their own.
    minis: [S3Fifo; 2],
    /// Their score.
    duel: Duel,
}

impl ModeShadows {
    /// The shadows of a cache of `capacity`.
    pub fn new(capacity: u64) -> Self {
        let shadow = |mode| {
            let mut mini = S3Fifo::tinylfu_fixed(capacity / SHADOW_RATE, mode);
            mini.scale = SHADOW_RATE;
            mini
        };
        Self {
            minis: [shadow(Mode::Recency), shadow(Mode::Frequency)],
            duel: Duel::new(SHADOW_SIGMAS),
        }
    }

    /// Replays one sampled request (a hit, or a miss offering `weight`) through both shadows;
    /// returns the mode to take when, at the end of a period, the other one than `current` won
    /// significantly.
    pub fn observe(&mut self, hash: u64, weight: u64, current: Mode) -> Option<Mode> {
        let mut hit = [false; 2];
        for (mini, hit) in self.minis.iter_mut().zip(hit.iter_mut()) {
            *hit = mini.contains(hash);
            if *hit {
                mini.on_hit(hash);
            } else {
                mini.on_insert(hash, weight);
            }
        }
        let resident = self.minis.iter().map(|m| m.len()).max().unwrap_or(0);
        let side = |mode| match mode {
            Mode::Recency => 0,
            Mode::Frequency => 1,
        };
        self.duel
            .score(hit, resident, side(current))
            .then_some(match current {
                Mode::Recency => Mode::Frequency,
                Mode::Frequency => Mode::Recency,
            })
    }

    /// How often [`ModeShadows::observe`] said to switch.
    pub fn switches(&self) -> u64 {
        self.duel.switches()
    }
}

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
    mode: Mode,
    /// `s3-tinylfu`: the mode's miniature simulations (`None` in plain S3-FIFO and in shadows).
    shadows: Option<Box<ModeShadows>>,
    /// The budget the share rules refer to is `capacity × scale` (a shadow's is the real one).
    scale: u64,
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
            mode: Mode::Recency,
            shadows: None,
            scale: 1,
        }
    }

    /// An empty `s3-tinylfu` (the default policy): S3-FIFO with the TinyLFU second chance, the
    /// size rules, and its mode picked by two shadow caches (starting in [`Mode::Recency`]).
    pub fn tinylfu(capacity: u64) -> Self {
        Self {
            shadows: Some(Box::new(ModeShadows::new(capacity))),
            ..Self::tinylfu_fixed(capacity, Mode::Recency)
        }
    }

    /// `s3-tinylfu` in one mode (no shadows of its own; [`EvictionPolicy::switch_mode`] changes
    /// it, as the RAM tier does for its shards).
    pub fn tinylfu_fixed(capacity: u64, mode: Mode) -> Self {
        let mut policy = Self {
            sketch: Some(FrequencySketch::for_budget(capacity)),
            ..Self::new(capacity)
        };
        policy.set_mode(mode);
        policy
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How often the shadows have switched the mode.
    pub fn mode_switches(&self) -> u64 {
        self.shadows.as_ref().map_or(0, |s| s.switches())
    }

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        let percent = match mode {
            Mode::Recency => SMALL_PERCENT,
            Mode::Frequency => FREQUENCY_SMALL_PERCENT,
        };
        self.small_capacity = percent_of(self.capacity, percent).max(1);
    }

    /// Whether `hash` is in the shadows' sample (its hits and misses also replay through them).
    pub fn in_shadow_sample(hash: u64) -> bool {
        Self::in_sample(hash, SHADOW_RATE)
    }

    /// Whether `hash` is in a sample of 1 key in `rate` (a power of two), the sample of
    /// [`S3Fifo::in_shadow_sample`] and of every denser rate included.
    pub fn in_sample(hash: u64, rate: u64) -> bool {
        hash.wrapping_mul(SHADOW_SAMPLE_MULTIPLIER) >> (64 - rate.trailing_zeros()) == 0
    }

    /// Replays one sampled request through the shadows; every period, takes the better mode.
    fn observe(&mut self, hash: u64, weight: u64) {
        let Some(shadows) = self.shadows.as_deref_mut() else {
            return;
        };
        if let Some(mode) = shadows.observe(hash, weight, self.mode) {
            self.set_mode(mode);
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

    /// The TinyLFU second chance for a detached, unaccessed object leaving small: a contest for
    /// main if it is frequent enough ([`SECOND_CHANCE_MIN`], or [`FREQUENCY_SECOND_CHANCE_MIN`]
    /// in [`Mode::Frequency`]). False (nothing placed) when it is not or loses.
    fn second_chance(&mut self, idx: u32, protect: Option<u64>, evicted: &mut Vec<u64>) -> bool {
        let candidate = self.frequency(self.arena.node(idx).hash);
        let min = match self.mode {
            Mode::Recency => SECOND_CHANCE_MIN,
            Mode::Frequency => FREQUENCY_SECOND_CHANCE_MIN,
        };
        candidate >= min && self.contest(idx, protect, evicted, INCUMBENT_MARGIN)
    }

    /// A detached object's contest for main (`s3-tinylfu`): it enters if main has room or it
    /// out-counts every victim it displaces by more than `margin`. False (nothing placed) when it
    /// loses; victims it beat before losing stay evicted, and their room goes to the next object.
    fn contest(
        &mut self,
        idx: u32,
        protect: Option<u64>,
        evicted: &mut Vec<u64>,
        margin: u64,
    ) -> bool {
        let (hash, weight) = {
            let node = self.arena.node(idx);
            (node.hash, node.weight)
        };
        let candidate = self.frequency(hash);
        let main_capacity = self.capacity.saturating_sub(self.small_capacity);
        if self.sketch.is_none() || weight > main_capacity {
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
            if !tinylfu_admits(candidate, victim_frequency + margin, &mut self.rng) {
                return false;
            }
            evicted.push(victim_hash);
            self.arena.unlink(&mut self.main, victim);
            self.arena.release(victim);
        }
    }

    /// `s3-tinylfu`'s size filter: is `weight` too large to enter before it returns?
    fn oversized(&self, weight: u64) -> bool {
        weight > self.small_capacity
            || (self.above_mean(weight, SIZE_FILTER_MEAN)
                && self.above_share(weight, SIZE_FILTER_FLOOR_PPM))
    }

    /// `s3-tinylfu`: is this a large object the sketch has not seen often enough to admit, or
    /// one that has come back through the ghost (`returns` times in a row) too seldom?
    fn held_back(&self, hash: u64, weight: u64, returns: u64) -> bool {
        self.above_share(weight, LARGE_OBJECT_PPM)
            && self.above_mean(weight, 1)
            && (self.frequency(hash) < self.large_object_frequency(weight)
                || returns < self.large_object_returns(weight))
    }

    /// The returns through the ghost a large object of `weight` needs: one per
    /// [`LARGE_OBJECT_RETURN_PPM`] of the budget.
    fn large_object_returns(&self, weight: u64) -> u64 {
        let budget = u128::from(self.capacity) * u128::from(self.scale);
        let share_ppm = u128::from(weight) * 1_000_000 / budget.max(1);
        u64::try_from(share_ppm / u128::from(LARGE_OBJECT_RETURN_PPM)).unwrap_or(u64::MAX)
    }

    /// The sketch frequency a large object of `weight` needs: [`SECOND_CHANCE_MIN`], one more
    /// above [`LARGE_OBJECT_STEP_PPM`] of the budget and one more for each doubling of its share
    /// past that.
    fn large_object_frequency(&self, weight: u64) -> u64 {
        let mut need = SECOND_CHANCE_MIN;
        let mut share = LARGE_OBJECT_STEP_PPM;
        while share <= 1_000_000 && self.above_share(weight, share) {
            need += 1;
            share *= 2;
        }
        need
    }

    /// `s3-tinylfu`: is `weight` above `multiple` times the mean resident object?
    fn above_mean(&self, weight: u64, multiple: u64) -> bool {
        let objects = self.small.len() + self.main.len();
        self.sketch.is_some()
            && objects >= SIZE_FILTER_MIN_OBJECTS
            && u128::from(weight) * objects as u128
                > u128::from(multiple) * u128::from(self.resident_bytes())
    }

    /// Is `weight` above `ppm` parts per million of the budget?
    fn above_share(&self, weight: u64, ppm: u64) -> bool {
        u128::from(weight) * 1_000_000
            > u128::from(ppm) * u128::from(self.capacity) * u128::from(self.scale)
    }

    /// Is the ghost over its budget: keys per resident object for `s3-tinylfu`
    /// ([`GHOST_PERCENT_OF_RESIDENT`]), bytes for plain S3-FIFO?
    fn ghost_full(&self) -> bool {
        if self.sketch.is_some() {
            let resident = (self.small.len() + self.main.len()).max(1) as u64;
            self.ghost.len() as u64 * 100 > resident * GHOST_PERCENT_OF_RESIDENT
        } else {
            self.ghost.bytes() > self.ghost_capacity
        }
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
        while self.ghost_full() {
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
        let hit = self.arena.node(idx).freq >= 1;
        let placed = if hit {
            self.arena.node_mut(idx).freq = 0;
            self.enter_main(idx, protect, evicted)
        } else {
            self.second_chance(idx, protect, evicted)
        };
        if !placed {
            evicted.push(self.arena.node(idx).hash);
            self.remember_ghost(idx);
        }
        true
    }

    /// A detached object that has earned main (a hit in small, a ghost hit): in
    /// [`Mode::Recency`] it enters; in [`Mode::Frequency`] it contests main's victims. False if
    /// it lost (nothing placed).
    fn enter_main(&mut self, idx: u32, protect: Option<u64>, evicted: &mut Vec<u64>) -> bool {
        match self.mode {
            Mode::Recency => {
                self.arena.push_head(&mut self.main, idx);
                true
            }
            Mode::Frequency => self.contest(idx, protect, evicted, 0),
        }
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
        if self.sketch.is_none() {
            // (s3-tinylfu's ghost is trimmed to the resident count on its next entry: removals
            // and large insertions shrink that count in between.)
            assert!(self.ghost.bytes() <= self.ghost_capacity);
        }
    }
}

impl EvictionPolicy for S3Fifo {
    fn switch_mode(&mut self, mode: Mode) {
        if self.sketch.is_some() {
            self.set_mode(mode);
        }
    }

    fn kind(&self) -> PolicyKind {
        if self.sketch.is_some() {
            PolicyKind::S3TinyLfu
        } else {
            PolicyKind::S3Fifo
        }
    }

    fn on_hit(&mut self, hash: u64) {
        let Some(idx) = self.resident_index(hash) else {
            return;
        };
        if let Some(sketch) = self.sketch.as_mut() {
            sketch.increment(hash);
        }
        let node = self.arena.node_mut(idx);
        node.freq = (node.freq + 1).min(FREQ_MAX);
        let weight = node.weight;
        if self.shadows.is_some() && Self::in_shadow_sample(hash) {
            self.observe(hash, weight);
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
        if self.shadows.is_some() && Self::in_shadow_sample(hash) {
            self.observe(hash, weight);
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
        let ghost = self.arena.find(hash);
        // In the ghost, `freq` counts a held-back object's returns so far; this is one more.
        let mut returns = 0;
        if let Some(ghost) = ghost {
            returns = self.arena.node(ghost).freq.saturating_add(1);
            self.arena.unlink(&mut self.ghost, ghost);
            self.arena.release(ghost);
        }
        if self.held_back(hash, weight, u64::from(returns)) {
            // Large next to the budget and not yet frequent: remembered (again), not admitted.
            let idx = self.arena.alloc(hash, weight);
            self.arena.node_mut(idx).freq = returns;
            self.remember_ghost(idx);
            return InsertOutcome {
                admitted: false,
                evicted,
            };
        }
        if ghost.is_some() {
            // Seen recently and filtered out: it has proved itself, on to main (in
            // Mode::Frequency by contest, else through small again).
            let idx = self.arena.alloc(hash, weight);
            if !self.enter_main(idx, None, &mut evicted) {
                self.arena.push_head(&mut self.small, idx);
            }
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
