//! Admission to the SSD tier. Eviction there is the log's own: whole segments are reclaimed oldest
//! first and records hit since they were written are re-appended (a CLOCK over segments), so no
//! per-object policy node is kept. With the policies that keep TinyLFU frequencies (`s3-tinylfu`,
//! the default, `w-tinylfu` and `size-aware`), a fill that needs room competes with the records
//! reclamation would drop next, by TinyLFU frequency (the same count-min sketch and doorkeeper as
//! the RAM tier, sized at about half an entry per object): a key seen once cannot displace records
//! seen more often, so crawler scans cannot flush the tier. S3-FIFO and LRU admit every fill (their
//! FIFO/recency order is what the log does already). With `s3-tinylfu` the filter adapts: two
//! miniature logs of 1/[`SHADOW_RATE`] of the tier replay the sampled keys' accesses, one
//! admitting every fill, one with the contest, and the tier takes the side whose shadow wins
//! significantly ([`Duel`], the rule of the RAM tier's modes). Admitting every fill lets new
//! content in fast (popularity churn); the contest keeps loops and stable favourites.
//! `outpost sim node` replays a trace through both tiers; docs/simulator.md has what this filter
//! gains and costs per workload class.

use std::collections::VecDeque;

use crate::hashing::U64Map;
use crate::policy::duel::Duel;
use crate::policy::sketch::FrequencySketch;
use crate::policy::{PolicyKind, S3Fifo};

/// The side switches when the other side's shadow leads by this many standard deviations (the
/// RAM tier's rule). At 3, churn at 200,000 requests (RAM 1%, SSD 10%) switched or not from one
/// build to the next as the RAM tier's miss stream changed a little (node hit ratio 37.1% or
/// 34.2%); at 2 it switches in every run, and no class switches the wrong way
/// (docs/simulator.md, two tiers).
const SIGMAS: u64 = 2;
/// The shadows see 1 key in this many (a power of two) with this fraction of the tier: denser
/// than the RAM tier's 1 in 64, as they run only on SSD accesses (RAM misses), off the hit path,
/// and an SSD tier sees fewer requests than RAM in front of it (at 1 in 64, the loop and churn
/// classes at 1M requests decided one way or the other from run to run).
const SHADOW_RATE: u64 = 16;
/// Side 0 of the duel: admit every fill.
const EVERY_FILL: usize = 0;
/// Side 1 of the duel: the TinyLFU contest (where the tier starts).
const CONTEST: usize = 1;

/// The SSD tier's admission filter.
#[derive(Debug)]
pub(crate) struct DiskAdmission {
    sketch: Option<FrequencySketch>,
    /// Admit every fill (the sketch still counts): the side the shadows picked.
    every_fill: bool,
    /// `s3-tinylfu`: the miniature logs and their score.
    shadows: Option<Box<LogShadows>>,
}

/// The SSD tier's two miniature logs, `[EVERY_FILL, CONTEST]`, and their score.
#[derive(Debug)]
struct LogShadows {
    logs: [LogShadow; 2],
    duel: Duel,
}

impl DiskAdmission {
    /// The filter `kind` asks for, for a tier of `capacity` bytes.
    pub(crate) fn new(kind: PolicyKind, capacity: u64) -> Self {
        let adaptive = kind == PolicyKind::S3TinyLfu;
        Self {
            sketch: kind.uses_frequency().then(|| FrequencySketch::new(0)),
            every_fill: false,
            shadows: adaptive.then(|| {
                let log = || LogShadow::new(capacity / SHADOW_RATE);
                Box::new(LogShadows {
                    logs: [log(), log()],
                    duel: Duel::new(SIGMAS),
                })
            }),
        }
    }

    /// Records an access (a hit, or a fill offered) to `hash`, a record of `bytes`, while
    /// `resident` objects are held; a sampled key also replays through the shadows.
    pub(crate) fn record(&mut self, hash: u64, bytes: u64, resident: usize) {
        let Some(sketch) = &mut self.sketch else {
            return;
        };
        sketch.ensure_capacity_with(resident, resident / 2);
        sketch.increment(hash);
        let Some(shadows) = self.shadows.as_deref_mut() else {
            return;
        };
        if !S3Fifo::in_sample(hash, SHADOW_RATE) {
            return;
        }
        let LogShadows { logs, duel } = shadows;
        let hit = [
            logs[EVERY_FILL].access(hash, bytes, None),
            logs[CONTEST].access(hash, bytes, Some(sketch)),
        ];
        let resident = logs.iter().map(LogShadow::len).max().unwrap_or(0);
        let current = if self.every_fill { EVERY_FILL } else { CONTEST };
        if duel.score(hit, resident, current) {
            self.every_fill = !self.every_fill;
        }
    }

    /// Whether the shadows have the tier admitting every fill now.
    pub(crate) fn admits_every_fill(&self) -> bool {
        self.every_fill
    }

    /// How often the shadows switched sides.
    pub(crate) fn switches(&self) -> u64 {
        self.shadows.as_ref().map_or(0, |s| s.duel.switches())
    }

    /// Whether a fill of `candidate` may displace `victim` (the next record reclamation would
    /// drop; `None` when nothing has to go).
    pub(crate) fn admits(&self, candidate: u64, victim: Option<u64>) -> bool {
        match (&self.sketch, victim) {
            _ if self.every_fill => true,
            // Ties go to the newcomer: among equally frequent records the log keeps the newer,
            // as FIFO eviction would.
            (Some(sketch), Some(victim)) => sketch.frequency(candidate) >= sketch.frequency(victim),
            _ => true,
        }
    }

    /// Whether [`DiskAdmission::admits`] would let `candidate` in after one more
    /// [`DiskAdmission::record`] of it, without recording anything (a streamed fill asks first;
    /// when refused, the caller's whole-object insert records and decides).
    pub(crate) fn would_admit(&self, candidate: u64, victim: Option<u64>) -> bool {
        match (&self.sketch, victim) {
            _ if self.every_fill => true,
            (Some(sketch), Some(victim)) => {
                sketch.frequency(candidate).saturating_add(1) >= sketch.frequency(victim)
            }
            _ => true,
        }
    }

    /// RAM of the filter (the shadows' fixed-size part included).
    pub(crate) fn bytes(&self) -> usize {
        let shadows = self.shadows.as_ref().map_or(0, |s| {
            s.logs.iter().map(LogShadow::bytes).sum::<usize>() + std::mem::size_of_val(&**s)
        });
        self.sketch.as_ref().map_or(0, FrequencySketch::bytes) + shadows
    }
}

/// A miniature of the SSD log at object granularity: a FIFO whose records hit since they were
/// written get one more lap (the tier re-appends hot records when it reclaims their segment),
/// with or without the TinyLFU contest for fills that need room.
#[derive(Debug, Default)]
struct LogShadow {
    order: VecDeque<u64>,
    /// Record bytes and whether it was hit since written (or re-appended).
    records: U64Map<(u64, bool)>,
    bytes: u64,
    capacity: u64,
}

impl LogShadow {
    fn new(capacity: u64) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn bytes(&self) -> usize {
        self.order.capacity() * 8 + self.records.capacity() * 24
    }

    /// One access: a hit marks the record hot; a miss is a fill, admitted when there is room,
    /// or (with `contest`) when the key is at least as frequent as the next victim. Returns
    /// whether it hit.
    fn access(&mut self, hash: u64, bytes: u64, contest: Option<&FrequencySketch>) -> bool {
        if let Some((_, hot)) = self.records.get_mut(&hash) {
            *hot = true;
            return true;
        }
        if bytes > self.capacity {
            return false;
        }
        if self.bytes + bytes > self.capacity {
            if let (Some(sketch), Some(victim)) = (contest, self.next_victim()) {
                if sketch.frequency(hash) < sketch.frequency(victim) {
                    return false;
                }
            }
            while self.bytes + bytes > self.capacity {
                let Some(victim) = self.next_victim() else {
                    break;
                };
                self.order.pop_front();
                if let Some((weight, _)) = self.records.remove(&victim) {
                    self.bytes -= weight;
                }
            }
        }
        self.order.push_back(hash);
        self.records.insert(hash, (bytes, false));
        self.bytes += bytes;
        false
    }

    /// The record the log drops next: hot records at the front get another lap first.
    fn next_victim(&mut self) -> Option<u64> {
        // Each hot record is moved once and cleared, so this ends within two passes.
        while let Some(&front) = self.order.front() {
            match self.records.get_mut(&front) {
                Some((_, hot)) if *hot => {
                    *hot = false;
                    self.order.rotate_left(1);
                }
                Some(_) => return Some(front),
                None => {
                    self.order.pop_front();
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::mix64;

    #[test]
    fn tinylfu_prefers_the_more_frequent() {
        let mut a = DiskAdmission::new(PolicyKind::WTinyLfu, 1 << 30);
        for _ in 0..5 {
            a.record(1, 10, 100);
        }
        a.record(2, 10, 100);
        assert!(a.admits(1, Some(2)));
        assert!(!a.admits(2, Some(1)));
        assert!(a.admits(2, None), "room left: every fill is admitted");
        a.record(3, 10, 100);
        assert!(a.admits(3, Some(2)), "a tie goes to the newcomer");
    }

    #[test]
    fn fifo_policies_admit_everything() {
        for kind in [PolicyKind::S3Fifo, PolicyKind::Lru] {
            let mut a = DiskAdmission::new(kind, 1 << 30);
            for _ in 0..5 {
                a.record(1, 10, 100);
            }
            assert!(a.admits(2, Some(1)));
            assert_eq!(a.bytes(), 0);
        }
    }

    #[test]
    fn log_shadow_gives_hot_records_a_lap_and_contests_fills() {
        let mut log = LogShadow::new(3);
        for h in 1..=3 {
            assert!(!log.access(h, 1, None));
        }
        assert!(log.access(1, 1, None), "resident: a hit");
        // Full: 1 is hot, so 2 goes first, then 3.
        assert!(!log.access(4, 1, None));
        assert!(log.access(1, 1, None) && !log.access(2, 1, None));
        assert_eq!(log.len(), 3);
        assert!(!log.records.contains_key(&3));
        // The contest: a key never counted cannot displace a counted victim.
        let mut sketch = FrequencySketch::new(16);
        for _ in 0..3 {
            sketch.increment(1);
            sketch.increment(4);
            sketch.increment(2);
        }
        assert!(!log.access(9, 1, Some(&sketch)));
        assert!(!log.records.contains_key(&9), "refused");
        assert_eq!(log.bytes, 3);
        assert!(!log.access(5, 5, None), "larger than the log: never stored");
        assert_eq!(log.len(), 3);
    }

    /// Replays accesses through the adaptive admission at `capacity` objects of weight 1, as the
    /// tier would record them (the tier's own admission decisions do not feed back here).
    fn replay(a: &mut DiskAdmission, keys: impl Iterator<Item = u64>, capacity: usize) {
        for k in keys {
            a.record(mix64(k), 1, capacity);
        }
    }

    #[test]
    fn shadows_admit_every_fill_under_churn_and_keep_the_contest_for_a_stable_set() {
        const CAPACITY: usize = 4_096;
        let mut rng = crate::hashing::mix64(7);
        let mut next = move || {
            rng = mix64(rng);
            rng
        };
        // A stable set of 3,000 keys (fits): both shadows hit alike, no reason to leave the contest.
        let mut a = DiskAdmission::new(PolicyKind::S3TinyLfu, CAPACITY as u64);
        let stable: Vec<u64> = (0..400_000).map(|_| next() % 3_000).collect();
        replay(&mut a, stable.into_iter(), CAPACITY);
        assert!(!a.admits_every_fill());
        assert_eq!(a.switches(), 0);
        // Churn: every 40,000 requests, the hot window of 6,000 keys moves by 3,000 new keys.
        // Old favourites keep high counts; the contest keeps refusing the newcomers.
        let churn: Vec<u64> = (0..1_200_000u64)
            .map(|i| (i / 40_000) * 3_000 + next() % 6_000)
            .collect();
        replay(&mut a, churn.into_iter(), CAPACITY);
        assert!(a.admits_every_fill(), "{} switches", a.switches());
        assert!(a.admits(mix64(1 << 40), Some(mix64(1))));
    }
}
