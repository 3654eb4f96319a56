//! The SSD tier's in-RAM indexes: key hash → [`IndexEntry`] (20 bytes: where the record is, how
//! long, when it expires, whether it was hit), surrogate-key tag → key hashes, and key text →
//! key hash in key order for prefix purges. The key text of an object lives on disk and is
//! verified on every read; only the prefix index keeps a copy (see [`IndexFootprint`]).
//!
//! Tag and prefix entries are not removed when the policy evicts a key (the eviction names only
//! a hash): they are validated against the main index when used and swept when they outnumber
//! live entries two to one, so their cost stays amortised O(1). The prefix index is swept a
//! bounded step per insert ([`PREFIX_SWEEP_STEP`] entries, resuming where the last step ended),
//! so no insert holds the index lock for a whole pass.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use super::table::EntryTable;
use crate::hashing::U64Map;

/// Prefix entries one insert looks at when the prefix index needs sweeping.
pub const PREFIX_SWEEP_STEP: usize = 64;

/// The entry was hit since it was last written (a "hot" survivor when its segment is reclaimed).
pub const FLAG_HOT: u8 = 1;

/// Where and what one object record is. 20 bytes (+ the 8-byte key hash in the map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Segment id.
    pub segment: u32,
    /// Offset of the record in the segment.
    pub offset: u32,
    /// Record length.
    pub len: u32,
    /// `keep_until` in whole seconds since the epoch, rounded up (saturating).
    pub expires: u32,
    /// [`FLAG_HOT`].
    pub flags: u8,
}

impl IndexEntry {
    /// Segment and offset as one ordered value (later appends have larger locations).
    pub fn location(&self) -> u64 {
        (u64::from(self.segment) << 32) | u64::from(self.offset)
    }

    /// Whether `keep_until` has certainly passed at `now` (the exact check happens on read).
    pub fn expired(&self, now: SystemTime) -> bool {
        now_secs(now) >= u64::from(self.expires)
    }

    /// Whether the entry was hit since it was written.
    pub fn is_hot(&self) -> bool {
        self.flags & FLAG_HOT != 0
    }
}

/// `t` in seconds since the epoch rounded up, saturating into `u32`.
pub fn expiry_secs(t: SystemTime) -> u32 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

fn now_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The three indexes of the SSD tier.
#[derive(Debug, Default)]
pub struct DiskIndex {
    /// Key hash → record.
    pub entries: EntryTable,
    /// Tag → (key hash → location of the record that carried the tag).
    tags: HashMap<Box<str>, U64Map<u64>>,
    tag_refs: usize,
    /// Key text → key hash, in key order.
    prefix: BTreeMap<Box<str>, u64>,
    /// Where the incremental sweep of `prefix` resumes (after this key).
    prefix_cursor: Option<Box<str>>,
    /// Sum of indexed record lengths.
    pub live_bytes: u64,
}

impl DiskIndex {
    /// Indexes a record; returns the entry it replaced.
    pub fn insert<'a>(
        &mut self,
        hash: u64,
        entry: IndexEntry,
        key: &str,
        tags: impl IntoIterator<Item = &'a str>,
    ) -> Option<IndexEntry> {
        let old = self.entries.insert(hash, entry);
        if let Some(old) = &old {
            self.live_bytes -= u64::from(old.len);
        }
        self.live_bytes += u64::from(entry.len);
        self.add_tags(hash, entry.location(), tags);
        if !self.prefix.contains_key(key) {
            self.prefix.insert(Box::from(key), hash);
        }
        self.maybe_sweep();
        old
    }

    /// Records that the live record of `hash` moved (a survivor re-appended), if it is still at
    /// `from` (a compare-and-swap: a record purged, replaced or expired meanwhile stays as it
    /// is). Its tags are added at the new location. Returns whether it moved.
    pub fn relocate_if<'a>(
        &mut self,
        hash: u64,
        from: u64,
        entry: IndexEntry,
        tags: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        let Some(old) = self.entries.get_mut(&hash) else {
            return false;
        };
        if old.location() != from {
            return false;
        }
        let old_len = old.len;
        *old = entry;
        self.live_bytes -= u64::from(old_len);
        self.live_bytes += u64::from(entry.len);
        self.add_tags(hash, entry.location(), tags);
        true
    }

    /// Drops the entry of `hash` if it is the record at `offset` of `segment`; returns whether
    /// it did.
    pub fn remove_if_at(&mut self, hash: u64, segment: u32, offset: u32) -> bool {
        let here = self
            .entries
            .get(&hash)
            .is_some_and(|e| e.segment == segment && e.offset == offset);
        here && self.remove(hash).is_some()
    }

    fn add_tags<'a>(&mut self, hash: u64, location: u64, tags: impl IntoIterator<Item = &'a str>) {
        for tag in tags {
            let set = match self.tags.get_mut(tag) {
                Some(set) => set,
                None => self.tags.entry(Box::from(tag)).or_default(),
            };
            if set.insert(hash, location).is_none() {
                self.tag_refs += 1;
            }
        }
    }

    /// Drops the entry of `hash` (tag and prefix entries go stale and are validated later).
    pub fn remove(&mut self, hash: u64) -> Option<IndexEntry> {
        let old = self.entries.remove(&hash)?;
        self.live_bytes -= u64::from(old.len);
        Some(old)
    }

    /// Drops the entry of a key and its prefix entry.
    pub fn remove_key(&mut self, hash: u64, key: &str) -> Option<IndexEntry> {
        self.prefix.remove(key);
        self.remove(hash)
    }

    /// Drops every live entry carrying `tag`; returns their hashes.
    pub fn take_tag(&mut self, tag: &str) -> Vec<u64> {
        let Some(set) = self.tags.remove(tag) else {
            return Vec::new();
        };
        self.tag_refs -= set.len();
        let mut out = Vec::new();
        for (hash, location) in set {
            if self
                .entries
                .get(&hash)
                .is_some_and(|e| e.location() == location)
            {
                self.remove(hash);
                out.push(hash);
            }
        }
        out
    }

    /// Drops every live entry whose key starts with `prefix`; returns their hashes.
    pub fn take_prefix(&mut self, prefix: &str) -> Vec<u64> {
        let doomed: Vec<(Box<str>, u64)> = self
            .prefix
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, hash)| (key.clone(), *hash))
            .collect();
        let mut out = Vec::new();
        for (key, hash) in doomed {
            self.prefix.remove(&key);
            if self.remove(hash).is_some() {
                out.push(hash);
            }
        }
        out
    }

    /// Live entries in `segment`, in offset order.
    pub fn entries_in(&self, segment: u32) -> Vec<(u64, IndexEntry)> {
        let mut v: Vec<(u64, IndexEntry)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.segment == segment)
            .map(|(h, e)| (h, *e))
            .collect();
        v.sort_by_key(|(_, e)| e.offset);
        v
    }

    /// Sweeps stale tag and prefix entries once they outnumber live entries two to one.
    fn maybe_sweep(&mut self) {
        let limit = self.entries.len().saturating_mul(2).saturating_add(1024);
        if self.tag_refs > limit {
            let entries = &self.entries;
            let mut refs = 0;
            self.tags.retain(|_, set| {
                set.retain(|hash, loc| entries.get(hash).is_some_and(|e| e.location() == *loc));
                refs += set.len();
                !set.is_empty()
            });
            self.tag_refs = refs;
        }
        if self.prefix.len() > limit {
            self.sweep_prefix_step(PREFIX_SWEEP_STEP);
        }
    }

    /// Looks at the next `n` prefix entries (wrapping around) and drops the stale ones.
    fn sweep_prefix_step(&mut self, n: usize) {
        let from = match &self.prefix_cursor {
            Some(key) => std::ops::Bound::Excluded(&**key),
            None => std::ops::Bound::Unbounded,
        };
        let mut stale = Vec::new();
        let mut seen = 0;
        let mut last = None;
        for (key, hash) in self
            .prefix
            .range::<str, _>((from, std::ops::Bound::Unbounded))
            .take(n)
        {
            seen += 1;
            last = Some(key);
            if !self.entries.contains_key(hash) {
                stale.push(key.clone());
            }
        }
        // A short step reached the end: the next one starts over.
        self.prefix_cursor = if seen < n { None } else { last.cloned() };
        for key in stale {
            self.prefix.remove(&key);
        }
    }

    /// Objects indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Tag references held (live and stale).
    pub fn tag_refs(&self) -> usize {
        self.tag_refs
    }

    /// Prefix entries held (live and stale).
    pub fn prefix_len(&self) -> usize {
        self.prefix.len()
    }
}

/// RAM the SSD tier spends per object, measured by building its structures (see `store_bench`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexFootprint {
    /// Objects indexed.
    pub objects: u64,
    /// `size_of::<IndexEntry>()`.
    pub entry_bytes: u64,
    /// One table slot: key hash + entry.
    pub slot_bytes: u64,
    /// Main index bytes per object: the table's allocation after `objects` inserts, divided.
    pub index_bytes_per_object: f64,
    /// Admission filter bytes per object (W-TinyLFU's sketch after `objects` fills).
    pub admission_bytes_per_object: f64,
    /// Prefix index bytes per object besides the key text (B-tree slot, box, allocation:
    /// estimated from struct sizes, not measured).
    pub prefix_bytes_per_object_plus_key: f64,
}

impl IndexFootprint {
    /// Main index plus admission filter, per object: what every SSD object costs in RAM besides
    /// the purge indexes.
    pub fn per_object(&self) -> f64 {
        self.index_bytes_per_object + self.admission_bytes_per_object
    }
}

/// Builds the SSD tier's per-object RAM structures for `objects` objects (the default W-TinyLFU
/// admission) and measures them.
pub fn index_footprint(objects: u64) -> IndexFootprint {
    let objects = objects.max(1);
    let mut table = EntryTable::default();
    let mut admission =
        super::admission::DiskAdmission::new(crate::policy::PolicyKind::WTinyLfu, 0);
    for i in 0..objects {
        let hash = crate::hashing::mix64(i);
        admission.record(hash, 0, table.len());
        table.insert(
            hash,
            IndexEntry {
                segment: (i / 100_000) as u32,
                offset: i as u32,
                len: 1,
                expires: u32::MAX,
                flags: 0,
            },
        );
    }
    // BTreeMap leaf: key (Box<str>, 16) + value (8) per slot, ~70% full nodes, plus the boxed
    // text's allocation header (~16).
    let prefix = (16.0 + 8.0) / 0.7 + 16.0;
    IndexFootprint {
        objects,
        entry_bytes: std::mem::size_of::<IndexEntry>() as u64,
        slot_bytes: EntryTable::slot_bytes() as u64,
        index_bytes_per_object: table.allocated_bytes() as f64 / objects as f64,
        admission_bytes_per_object: admission.bytes() as f64 / objects as f64,
        prefix_bytes_per_object_plus_key: prefix,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn entry(i: u32) -> IndexEntry {
        IndexEntry {
            segment: 1,
            offset: i,
            len: 10,
            expires: u32::MAX,
            flags: 0,
        }
    }

    #[test]
    fn the_prefix_index_is_swept_a_bounded_step_at_a_time() {
        let mut ix = DiskIndex::default();
        // Keys whose entries the policy evicts (by hash only): their prefix entries go stale.
        for i in 0..5000u32 {
            ix.insert(
                u64::from(i),
                entry(i),
                &format!("https://a.example/{i:05}"),
                [],
            );
            ix.remove(u64::from(i));
            // Swept as it grows: stale entries stay within a small multiple of the limit.
            assert!(
                ix.prefix_len() <= 2 * (2 * ix.len() + 1024),
                "{}",
                ix.prefix_len()
            );
        }
        // Live keys keep their prefix entries through the sweeps.
        for i in 5000..5100u32 {
            ix.insert(
                u64::from(i),
                entry(i),
                &format!("https://b.example/{i:05}"),
                [],
            );
        }
        for i in 5100..9000u32 {
            ix.insert(
                u64::from(i),
                entry(i),
                &format!("https://a.example/{i:05}"),
                [],
            );
            ix.remove(u64::from(i));
        }
        assert!(
            ix.prefix_len() <= 2 * (2 * ix.len() + 1024),
            "{}",
            ix.prefix_len()
        );
        assert_eq!(ix.take_prefix("https://b.example/").len(), 100);
    }
}
