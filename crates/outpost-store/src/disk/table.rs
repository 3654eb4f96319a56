//! The SSD tier's main index as a compact open-addressing table: key hash → [`IndexEntry`] in
//! 28-byte slots (the hash as two `u32`s, so the slot needs only 4-byte alignment), Robin Hood
//! linear probing with backward-shift deletion (no tombstones), grown by 1.5× at 90% load. At
//! 60-90% load that is 31-47 bytes per object, where a general-purpose map with 8-byte
//! alignment, a control byte and power-of-two growth takes 37-75.

use super::index::IndexEntry;

/// Grow when `len` would exceed this share of the slots (in tenths).
const MAX_LOAD_TENTHS: usize = 9;
/// Smallest table.
const MIN_SLOTS: usize = 16;

/// One slot; `entry.len == 0` marks it empty (a record is never empty).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Slot {
    hash_lo: u32,
    hash_hi: u32,
    entry: IndexEntry,
}

const EMPTY: Slot = Slot {
    hash_lo: 0,
    hash_hi: 0,
    entry: IndexEntry {
        segment: 0,
        offset: 0,
        len: 0,
        expires: 0,
        flags: 0,
    },
};

impl Slot {
    fn hash(&self) -> u64 {
        (u64::from(self.hash_hi) << 32) | u64::from(self.hash_lo)
    }
    fn is_empty(&self) -> bool {
        self.entry.len == 0
    }
}

/// Key hash → index entry.
#[derive(Debug, Clone, Default)]
pub struct EntryTable {
    slots: Vec<Slot>,
    len: usize,
}

impl EntryTable {
    /// Home slot of `hash` in a table of `n` slots (multiply-shift, so `n` needs no power of two).
    #[inline]
    fn home(hash: u64, n: usize) -> usize {
        ((u128::from(hash) * n as u128) >> 64) as usize
    }

    /// How far slot `i` is from `home` (wrapping).
    #[inline]
    fn distance(i: usize, home: usize, n: usize) -> usize {
        if i >= home {
            i - home
        } else {
            i + n - home
        }
    }

    fn find(&self, hash: u64) -> Option<usize> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let mut i = Self::home(hash, n);
        let mut dist = 0;
        loop {
            let s = &self.slots[i];
            if s.is_empty() {
                return None;
            }
            if s.hash() == hash {
                return Some(i);
            }
            // Robin Hood invariant: a resident closer to its home than we are to ours means our
            // key would have displaced it, so it is absent.
            if Self::distance(i, Self::home(s.hash(), n), n) < dist {
                return None;
            }
            dist += 1;
            i = if i + 1 == n { 0 } else { i + 1 };
        }
    }

    /// The entry of `hash`.
    pub fn get(&self, hash: &u64) -> Option<&IndexEntry> {
        self.find(*hash).map(|i| &self.slots[i].entry)
    }

    /// The entry of `hash`, mutable (its location must not change through this).
    pub fn get_mut(&mut self, hash: &u64) -> Option<&mut IndexEntry> {
        self.find(*hash).map(|i| &mut self.slots[i].entry)
    }

    /// Whether `hash` is indexed.
    pub fn contains_key(&self, hash: &u64) -> bool {
        self.find(*hash).is_some()
    }

    /// Entries indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is indexed.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of slots allocated (the table's RAM).
    pub fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// Bytes of one slot.
    pub fn slot_bytes() -> usize {
        std::mem::size_of::<Slot>()
    }

    /// Indexes `entry` (whose `len` must be non-zero) under `hash`; returns the entry it replaced.
    pub fn insert(&mut self, hash: u64, entry: IndexEntry) -> Option<IndexEntry> {
        debug_assert!(entry.len > 0, "an index entry has a length");
        if let Some(i) = self.find(hash) {
            return Some(std::mem::replace(&mut self.slots[i].entry, entry));
        }
        if (self.len + 1) * 10 > self.slots.len() * MAX_LOAD_TENTHS {
            self.grow();
        }
        self.place(Slot {
            hash_lo: hash as u32,
            hash_hi: (hash >> 32) as u32,
            entry,
        });
        self.len += 1;
        None
    }

    /// Robin Hood placement of a slot known to be absent.
    fn place(&mut self, mut slot: Slot) {
        let n = self.slots.len();
        let mut i = Self::home(slot.hash(), n);
        let mut dist = 0;
        loop {
            if self.slots[i].is_empty() {
                self.slots[i] = slot;
                return;
            }
            let resident = Self::distance(i, Self::home(self.slots[i].hash(), n), n);
            if resident < dist {
                std::mem::swap(&mut self.slots[i], &mut slot);
                dist = resident;
            }
            dist += 1;
            i = if i + 1 == n { 0 } else { i + 1 };
        }
    }

    fn grow(&mut self) {
        let n = (self.slots.len() + self.slots.len() / 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; n]);
        for s in old.into_iter().filter(|s| !s.is_empty()) {
            self.place(s);
        }
    }

    /// Drops `hash`; returns its entry.
    pub fn remove(&mut self, hash: &u64) -> Option<IndexEntry> {
        let mut i = self.find(*hash)?;
        let removed = self.slots[i].entry;
        let n = self.slots.len();
        // Backward shift: pull following displaced slots one step towards their homes.
        loop {
            let next = if i + 1 == n { 0 } else { i + 1 };
            let s = self.slots[next];
            if s.is_empty() || Self::distance(next, Self::home(s.hash(), n), n) == 0 {
                self.slots[i] = EMPTY;
                break;
            }
            self.slots[i] = s;
            i = next;
        }
        self.len -= 1;
        Some(removed)
    }

    /// Every (hash, entry), in table order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &IndexEntry)> + '_ {
        self.slots
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| (s.hash(), &s.entry))
    }

    /// Every entry.
    #[cfg(test)]
    pub fn values(&self) -> impl Iterator<Item = &IndexEntry> + '_ {
        self.iter().map(|(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn entry(n: u32) -> IndexEntry {
        IndexEntry {
            segment: n,
            offset: n.wrapping_mul(7),
            len: n.max(1),
            expires: n,
            flags: (n % 2) as u8,
        }
    }

    #[test]
    fn slot_is_28_bytes() {
        assert_eq!(EntryTable::slot_bytes(), 28);
    }

    #[test]
    fn basic_operations() {
        let mut t = EntryTable::default();
        assert!(t.get(&1).is_none());
        assert!(t.insert(1, entry(1)).is_none());
        assert_eq!(t.insert(1, entry(2)), Some(entry(1)));
        assert_eq!(t.get(&1), Some(&entry(2)));
        t.get_mut(&1).unwrap().flags = 9;
        assert_eq!(t.get(&1).unwrap().flags, 9);
        assert_eq!(t.remove(&1).map(|e| e.segment), Some(2));
        assert!(t.remove(&1).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn colliding_homes_and_wraparound() {
        let mut t = EntryTable::default();
        // Hashes near u64::MAX all have homes at the end of the table, so probes wrap.
        let hashes: Vec<u64> = (0..200).map(|i| u64::MAX - i).collect();
        for (i, h) in hashes.iter().enumerate() {
            t.insert(*h, entry(i as u32 + 1));
        }
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(t.get(h), Some(&entry(i as u32 + 1)));
        }
        for h in hashes.iter().step_by(2) {
            assert!(t.remove(h).is_some());
        }
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(t.get(h).is_some(), i % 2 == 1);
        }
    }

    #[test]
    fn footprint_stays_compact() {
        let mut t = EntryTable::default();
        for i in 0..100_000u64 {
            t.insert(crate::hashing::mix64(i), entry(i as u32 + 1));
        }
        let per = t.allocated_bytes() as f64 / t.len() as f64;
        assert!(per <= 28.0 / 0.55, "{per} bytes per entry");
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u8..3, 0u64..64, 1u32..1000), 0..400)) {
            let mut t = EntryTable::default();
            let mut m: HashMap<u64, IndexEntry> = HashMap::new();
            for (op, k, v) in ops {
                // Spread keys and force shared homes (small key space, hashes in two clusters).
                let h = if k % 2 == 0 { k } else { u64::MAX - k };
                match op {
                    0 => prop_assert_eq!(t.insert(h, entry(v)), m.insert(h, entry(v))),
                    1 => prop_assert_eq!(t.remove(&h), m.remove(&h)),
                    _ => prop_assert_eq!(t.get(&h), m.get(&h)),
                }
                prop_assert_eq!(t.len(), m.len());
            }
            let mut all: Vec<(u64, IndexEntry)> = t.iter().map(|(h, e)| (h, *e)).collect();
            all.sort_by_key(|(h, _)| *h);
            let mut want: Vec<(u64, IndexEntry)> = m.into_iter().collect();
            want.sort_by_key(|(h, _)| *h);
            prop_assert_eq!(all, want);
        }
    }
}
