//! Admission to the SSD tier. Eviction there is the log's own: whole segments are reclaimed oldest
//! first and records hit since they were written are re-appended (a CLOCK over segments), so no
//! per-object policy node is kept. With the policies that keep TinyLFU frequencies (`s3-tinylfu`,
//! the default, `w-tinylfu` and `size-aware`), a fill that needs room competes with the records
//! reclamation would drop next, by TinyLFU frequency (the same count-min sketch and doorkeeper as
//! the RAM tier, sized at about half an entry per object): a key seen once cannot displace records
//! seen more often, so crawler scans cannot flush the tier. S3-FIFO and LRU admit every fill (their
//! FIFO/recency order is what the log does already). `outpost sim node` replays a trace through
//! both tiers; docs/simulator.md has what this filter gains and costs per workload class.

use crate::policy::sketch::FrequencySketch;
use crate::policy::PolicyKind;

/// The SSD tier's admission filter.
#[derive(Debug)]
pub(crate) struct DiskAdmission {
    sketch: Option<FrequencySketch>,
}

impl DiskAdmission {
    /// The filter `kind` asks for.
    pub(crate) fn new(kind: PolicyKind) -> Self {
        Self {
            sketch: kind.uses_frequency().then(|| FrequencySketch::new(0)),
        }
    }

    /// Records an access (a hit, or a fill offered) to `hash` while `resident` objects are held.
    pub(crate) fn record(&mut self, hash: u64, resident: usize) {
        if let Some(sketch) = &mut self.sketch {
            sketch.ensure_capacity_with(resident, resident / 2);
            sketch.increment(hash);
        }
    }

    /// Whether a fill of `candidate` may displace `victim` (the next record reclamation would
    /// drop; `None` when nothing has to go).
    pub(crate) fn admits(&self, candidate: u64, victim: Option<u64>) -> bool {
        match (&self.sketch, victim) {
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
            (Some(sketch), Some(victim)) => {
                sketch.frequency(candidate).saturating_add(1) >= sketch.frequency(victim)
            }
            _ => true,
        }
    }

    /// RAM of the filter.
    pub(crate) fn bytes(&self) -> usize {
        self.sketch.as_ref().map_or(0, FrequencySketch::bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tinylfu_prefers_the_more_frequent() {
        let mut a = DiskAdmission::new(PolicyKind::WTinyLfu);
        for _ in 0..5 {
            a.record(1, 100);
        }
        a.record(2, 100);
        assert!(a.admits(1, Some(2)));
        assert!(!a.admits(2, Some(1)));
        assert!(a.admits(2, None), "room left: every fill is admitted");
        a.record(3, 100);
        assert!(a.admits(3, Some(2)), "a tie goes to the newcomer");
    }

    #[test]
    fn fifo_policies_admit_everything() {
        for kind in [PolicyKind::S3Fifo, PolicyKind::Lru] {
            let mut a = DiskAdmission::new(kind);
            for _ in 0..5 {
                a.record(1, 100);
            }
            assert!(a.admits(2, Some(1)));
            assert_eq!(a.bytes(), 0);
        }
    }
}
