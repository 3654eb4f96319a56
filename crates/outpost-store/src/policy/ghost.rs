//! A lossy set of recently departed key hashes ("ghosts"), for adaptive policies that learn from
//! what they just threw away. Direct-mapped: one 32-bit tag per slot, a newer ghost overwrites an
//! older one in its slot, so the set remembers roughly the last `slots` departures at 4 bytes each
//! and needs no queue or map. A false positive needs a 32-bit tag collision in one slot.

use crate::hashing::mix64;

/// Smallest table.
const MIN_SLOTS: usize = 64;
/// Largest table (16 MiB of tags).
const MAX_SLOTS: usize = 1 << 22;
/// Decorrelates slot choice from the arena's own use of the hash bits.
const SLOT_SEED: u64 = 0x5851_f42d_4c95_7f2d;

/// Recently departed hashes.
#[derive(Debug, Clone)]
pub(crate) struct Ghosts {
    tags: Vec<u32>,
}

impl Ghosts {
    /// A table remembering about `entries` departures.
    pub(crate) fn new(entries: usize) -> Self {
        Self {
            tags: vec![0; entries.clamp(MIN_SLOTS, MAX_SLOTS).next_power_of_two()],
        }
    }

    #[inline]
    fn slot_and_tag(&self, hash: u64) -> (usize, u32) {
        let mixed = mix64(hash ^ SLOT_SEED);
        let slot = (mixed as usize) & (self.tags.len() - 1);
        // Tag 0 means "empty", so a tag is never 0.
        let tag = ((mixed >> 32) as u32).max(1);
        (slot, tag)
    }

    /// Remember a departure.
    pub(crate) fn insert(&mut self, hash: u64) {
        let (slot, tag) = self.slot_and_tag(hash);
        self.tags[slot] = tag;
    }

    /// Whether `hash` departed recently; forgets it (a ghost is evidence once).
    pub(crate) fn take(&mut self, hash: u64) -> bool {
        let (slot, tag) = self.slot_and_tag(hash);
        if self.tags[slot] == tag {
            self.tags[slot] = 0;
            true
        } else {
            false
        }
    }

    /// Grow to remember about `entries` departures (existing ghosts are dropped: they are hints).
    pub(crate) fn ensure_capacity(&mut self, entries: usize) {
        if entries > self.tags.len() && self.tags.len() < MAX_SLOTS {
            *self = Self::new(entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_recent_and_forgets_after_take() {
        let mut g = Ghosts::new(1024);
        for h in 0..100u64 {
            g.insert(h.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        let found = (0..100u64)
            .filter(|h| g.take(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .count();
        // 100 keys in 1024 direct-mapped slots: a few collide and overwrite each other.
        assert!(found >= 90, "found {found}");
        assert!(!g.take(0));
        assert!(!g.take(12345));
    }

    #[test]
    fn old_ghosts_are_overwritten() {
        let mut g = Ghosts::new(64);
        g.insert(7);
        for h in 1000..5000u64 {
            g.insert(h);
        }
        assert!(!g.take(7));
    }
}
