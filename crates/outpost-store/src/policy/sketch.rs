//! The TinyLFU frequency estimate: a count-min sketch of 4-bit counters (depth 4, conservative
//! update) fronted by a doorkeeper bloom filter, with periodic aging (halve every counter and
//! clear the doorkeeper after a sample of `20 × resident entries` recorded accesses).

use crate::hashing::mix64;

const DEPTH: usize = 4;
/// 4-bit counters saturate here.
const COUNTER_MAX: u64 = 15;
/// Counters per row for each nominal entry.
const COUNTERS_PER_ENTRY: usize = 4;
/// Doorkeeper bits per nominal entry.
const DOORKEEPER_BITS_PER_ENTRY: usize = 32;
/// Doorkeeper hash functions.
const DOORKEEPER_HASHES: u64 = 3;
/// Aging happens after this many recorded accesses per nominal entry.
pub(crate) const SAMPLE_FACTOR: u64 = 20;
/// Smallest nominal size.
const MIN_ENTRIES: usize = 64;
/// Assumed mean object size, to size a policy's sketch before the cache has filled.
pub(crate) const NOMINAL_OBJECT_BYTES: u64 = 8 * 1024;
/// Largest nominal size (keeps the sketch below ~256 MiB of counters).
const MAX_ENTRIES: usize = 1 << 26;

const ROW_SEEDS: [u64; DEPTH] = [
    0xc3a5_c85c_97cb_3127,
    0xb492_b66f_be98_f273,
    0x9ae1_6a3b_2f90_404f,
    0xcbf2_9ce4_8422_2325,
];

/// Count-min sketch + doorkeeper.
#[derive(Debug, Clone)]
pub(crate) struct FrequencySketch {
    /// `DEPTH` rows of `width` 4-bit counters, 16 per word.
    table: Vec<u64>,
    /// Counters per row (power of two).
    width: usize,
    doorkeeper: Vec<u64>,
    /// Doorkeeper bits (power of two).
    doorkeeper_bits: usize,
    /// Nominal number of entries the sketch is sized for.
    entries: usize,
    /// Accesses recorded since the last aging.
    samples: u64,
    /// Aging happens when `samples` reaches this.
    sample_size: u64,
    /// How many times the sketch has aged (for tests and stats).
    resets: u64,
}

impl FrequencySketch {
    /// A sketch for a policy with a byte budget of `capacity`, sized for objects of
    /// [`NOMINAL_OBJECT_BYTES`] until the resident count is known (it grows later).
    pub(crate) fn for_budget(capacity: u64) -> Self {
        Self::new(usize::try_from(capacity / NOMINAL_OBJECT_BYTES).unwrap_or(usize::MAX))
    }

    /// A sketch sized for about `entries` resident objects.
    pub(crate) fn new(entries: usize) -> Self {
        let entries = entries.clamp(MIN_ENTRIES, MAX_ENTRIES).next_power_of_two();
        let width = entries * COUNTERS_PER_ENTRY;
        let doorkeeper_bits = entries * DOORKEEPER_BITS_PER_ENTRY;
        Self {
            table: vec![0; DEPTH * width / 16],
            width,
            doorkeeper: vec![0; doorkeeper_bits / 64],
            doorkeeper_bits,
            entries,
            samples: 0,
            sample_size: SAMPLE_FACTOR * entries as u64,
            resets: 0,
        }
    }

    /// RAM of the counters and the doorkeeper.
    pub(crate) fn bytes(&self) -> usize {
        (self.table.len() + self.doorkeeper.len()) * 8
    }

    /// The nominal number of entries.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    /// Number of agings so far.
    #[cfg(test)]
    pub(crate) fn resets(&self) -> u64 {
        self.resets
    }

    /// Grows the sketch when the cache holds more entries than it was sized for; cheap no-op
    /// otherwise. Counts survive: indexes are hash bits under a power-of-two mask, so each new
    /// slot inherits the old slot its low bits name, and every estimate is unchanged at first.
    pub(crate) fn ensure_capacity(&mut self, resident: usize) {
        self.ensure_capacity_with(resident, resident.saturating_mul(2));
    }

    /// [`FrequencySketch::ensure_capacity`] with the table sized for `table_entries` when it
    /// grows (the SSD tier sizes it at half its object count to keep RAM per object low).
    pub(crate) fn ensure_capacity_with(&mut self, resident: usize, table_entries: usize) {
        // Age after 20 x the *resident* count, not after a multiple of the table (up to 4x larger):
        // with popularity churn that longer period kept stale favourites in and fell below LRU.
        // Caffeine uses 10 x; 20 x measured better on the static cross-check trace once the
        // adaptive window took over the churn case (docs/simulator.md).
        self.sample_size = SAMPLE_FACTOR * resident.max(MIN_ENTRIES) as u64;
        if resident <= self.entries || self.entries >= MAX_ENTRIES {
            return;
        }
        if table_entries <= self.entries {
            return;
        }
        let mut grown = Self::new(table_entries);
        let old_mask = self.width - 1;
        for row in 0..DEPTH {
            for j in 0..grown.width {
                let value = self.counter(row * self.width + (j & old_mask));
                let i = row * grown.width + j;
                grown.table[i / 16] |= value << ((i % 16) * 4);
            }
        }
        let old_bits_mask = self.doorkeeper_bits - 1;
        for bit in 0..grown.doorkeeper_bits {
            let old = bit & old_bits_mask;
            if self.doorkeeper[old / 64] & (1 << (old % 64)) != 0 {
                grown.doorkeeper[bit / 64] |= 1 << (bit % 64);
            }
        }
        grown.samples = self.samples;
        grown.resets = self.resets;
        grown.sample_size = self.sample_size;
        *self = grown;
    }

    #[inline]
    fn indexes(&self, hash: u64) -> [usize; DEPTH] {
        let mask = self.width - 1;
        let mut out = [0usize; DEPTH];
        for (row, slot) in out.iter_mut().enumerate() {
            let h = mix64(hash ^ ROW_SEEDS[row]);
            *slot = row * self.width + (h as usize & mask);
        }
        out
    }

    #[inline]
    fn counter(&self, i: usize) -> u64 {
        (self.table[i / 16] >> ((i % 16) * 4)) & 0xf
    }

    #[inline]
    fn doorkeeper_slots(&self, hash: u64) -> [usize; DOORKEEPER_HASHES as usize] {
        let a = mix64(hash ^ 0x5851_f42d_4c95_7f2d);
        let b = mix64(hash ^ 0x1405_7b7e_f767_814f) | 1;
        let mask = self.doorkeeper_bits - 1;
        let mut out = [0usize; DOORKEEPER_HASHES as usize];
        for (k, slot) in out.iter_mut().enumerate() {
            *slot = (a.wrapping_add((k as u64).wrapping_mul(b)) as usize) & mask;
        }
        out
    }

    fn doorkeeper_contains(&self, hash: u64) -> bool {
        self.doorkeeper_slots(hash)
            .iter()
            .all(|&bit| self.doorkeeper[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// Sets the doorkeeper bits; returns whether they were all set already.
    fn doorkeeper_put(&mut self, hash: u64) -> bool {
        let mut present = true;
        for bit in self.doorkeeper_slots(hash) {
            let word = &mut self.doorkeeper[bit / 64];
            let mask = 1 << (bit % 64);
            present &= *word & mask != 0;
            *word |= mask;
        }
        present
    }

    /// Records one access of `hash`.
    pub(crate) fn increment(&mut self, hash: u64) {
        // The first access in a sample period only sets the doorkeeper; one-hit wonders never
        // reach the counters.
        if self.doorkeeper_put(hash) {
            let idx = self.indexes(hash);
            let min = idx.iter().map(|&i| self.counter(i)).min().unwrap_or(0);
            if min < COUNTER_MAX {
                // Conservative update: only the counters at the minimum grow.
                for i in idx {
                    if self.counter(i) == min {
                        self.table[i / 16] += 1 << ((i % 16) * 4);
                    }
                }
            }
        }
        self.samples += 1;
        if self.samples >= self.sample_size {
            self.age();
        }
    }

    /// Estimated frequency of `hash` in the current sample period (0..=16).
    pub(crate) fn frequency(&self, hash: u64) -> u64 {
        let counted = self
            .indexes(hash)
            .iter()
            .map(|&i| self.counter(i))
            .min()
            .unwrap_or(0);
        counted + u64::from(self.doorkeeper_contains(hash))
    }

    /// Halves every counter and clears the doorkeeper.
    fn age(&mut self) {
        for word in &mut self.table {
            *word = (*word >> 1) & 0x7777_7777_7777_7777;
        }
        self.doorkeeper.iter_mut().for_each(|w| *w = 0);
        self.samples /= 2;
        self.resets += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn counts_and_saturates() {
        let mut s = FrequencySketch::new(1024);
        assert_eq!(s.frequency(42), 0);
        s.increment(42);
        assert_eq!(s.frequency(42), 1, "doorkeeper only");
        s.increment(42);
        assert_eq!(s.frequency(42), 2);
        for _ in 0..100 {
            s.increment(42);
        }
        assert_eq!(s.frequency(42), 16, "15 in the counters + doorkeeper");
        assert_eq!(s.frequency(43), 0);
    }

    #[test]
    fn ages_after_sample() {
        let mut s = FrequencySketch::new(64);
        for _ in 0..10 {
            s.increment(7);
        }
        let before = s.frequency(7);
        assert_eq!(before, 10);
        // Fill the sample with other keys.
        let mut k = 1000u64;
        while s.resets() == 0 {
            s.increment(k);
            k += 1;
        }
        let after = s.frequency(7);
        assert!(after <= before / 2, "before {before} after {after}");
    }

    #[test]
    fn grows_with_resident_count_and_keeps_estimates() {
        let mut s = FrequencySketch::new(10);
        assert_eq!(s.entries(), 64);
        for k in 0..200u64 {
            for _ in 0..(k % 7) {
                s.increment(k);
            }
        }
        let before: Vec<u64> = (0..300).map(|k| s.frequency(k)).collect();
        s.ensure_capacity(64);
        assert_eq!(s.entries(), 64);
        s.ensure_capacity(65);
        assert_eq!(s.entries(), 256);
        let after: Vec<u64> = (0..300).map(|k| s.frequency(k)).collect();
        assert_eq!(before, after);
    }
}
