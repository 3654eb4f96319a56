//! [`MemoryStore`]: the RAM tier. A fixed number of shards, each a mutex over a hash map keyed by
//! the key hash, its own eviction policy instance with an equal share of the byte budget, and
//! its share of the surrogate-key tag index. With `s3-tinylfu` the tier also owns the shadow
//! caches that pick the shards' mode (one sample across all shards). Pure and synchronous; the
//! clock is passed in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::hashing::{U64Map, U64Set};
use crate::policy::{EvictionPolicy, Mode, ModeShadows, PolicyKind, S3Fifo};
use crate::store::{Admission, Store, StoreStats};
use crate::{CacheKey, StoredObject};

/// Target bytes per shard when the shard count is chosen from the capacity.
pub const TARGET_SHARD_BYTES: u64 = 64 * 1024 * 1024;
/// Most shards a store uses.
pub const MAX_SHARDS: usize = 64;
/// An object may take at most this fraction (1/N) of its shard's budget.
pub const MAX_OBJECT_SHARE: u64 = 8;

struct Entry {
    key: CacheKey,
    object: Arc<StoredObject>,
    /// Bytes charged: object weight + key text.
    charge: u64,
}

#[derive(Default)]
struct Counters {
    hits: u64,
    misses: u64,
    inserts: u64,
    rejected: u64,
    too_large: u64,
    evictions: u64,
    expired: u64,
}

struct Shard {
    entries: U64Map<Entry>,
    policy: Box<dyn EvictionPolicy>,
    tags: HashMap<Box<str>, U64Set>,
    bytes: u64,
    counters: Counters,
}

impl Shard {
    fn new(policy: Box<dyn EvictionPolicy>) -> Self {
        Self {
            entries: U64Map::default(),
            policy,
            tags: HashMap::new(),
            bytes: 0,
            counters: Counters::default(),
        }
    }

    /// Removes an entry from the map and the tag index (not from the policy).
    fn detach(&mut self, hash: u64) -> Option<Entry> {
        let entry = self.entries.remove(&hash)?;
        self.bytes -= entry.charge;
        for tag in &entry.object.meta.tags {
            if let Some(set) = self.tags.get_mut(tag.as_str()) {
                set.remove(&hash);
                if set.is_empty() {
                    self.tags.remove(tag.as_str());
                }
            }
        }
        Some(entry)
    }

    /// Removes an entry from the map, the tag index and the policy.
    fn drop_entry(&mut self, hash: u64) -> bool {
        let found = self.detach(hash).is_some();
        self.policy.on_remove(hash);
        found
    }

    fn attach(&mut self, hash: u64, entry: Entry) {
        for tag in &entry.object.meta.tags {
            self.tags
                .entry(Box::from(tag.as_str()))
                .or_default()
                .insert(hash);
        }
        self.bytes += entry.charge;
        self.entries.insert(hash, entry);
    }

    fn get(&mut self, key: &CacheKey, now: SystemTime) -> Option<Arc<StoredObject>> {
        let hash = key.hash64();
        let found = match self.entries.get(&hash) {
            Some(entry) if entry.key.text() == key.text() => {
                (now < entry.object.meta.keep_until).then(|| Arc::clone(&entry.object))
            }
            _ => {
                self.counters.misses += 1;
                return None;
            }
        };
        let Some(object) = found else {
            self.drop_entry(hash);
            self.counters.expired += 1;
            self.counters.misses += 1;
            return None;
        };
        self.policy.on_hit(hash);
        self.counters.hits += 1;
        Some(object)
    }

    fn insert(&mut self, key: CacheKey, object: Arc<StoredObject>, charge: u64) -> Admission {
        let hash = key.hash64();
        // Whatever was stored under this hash is superseded: the same key's older version, or a
        // colliding key (which is displaced, counted as an eviction). The policy keeps the hash
        // resident and sees an update.
        let replacing = match self.detach(hash) {
            Some(old) => {
                if old.key.text() != key.text() {
                    self.counters.evictions += 1;
                }
                true
            }
            None => false,
        };
        let outcome = self.policy.on_insert(hash, charge);
        for victim in outcome.evicted {
            if self.detach(victim).is_some() {
                self.counters.evictions += 1;
            }
        }
        if outcome.admitted {
            self.attach(
                hash,
                Entry {
                    key,
                    object,
                    charge,
                },
            );
            self.counters.inserts += 1;
            Admission::Admitted
        } else {
            if replacing {
                // Cannot happen for charges within the shard budget; keep the policy in step.
                self.policy.on_remove(hash);
            }
            self.counters.rejected += 1;
            Admission::Rejected
        }
    }

    fn remove_matching(&mut self, mut pred: impl FnMut(&Entry) -> bool) -> Vec<u64> {
        let doomed: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| pred(entry))
            .map(|(hash, _)| *hash)
            .collect();
        for hash in &doomed {
            self.drop_entry(*hash);
        }
        doomed
    }
}

/// The RAM tier: sharded, byte-budgeted, with a pluggable admission/eviction policy.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: u64,
    capacity: u64,
    shard_capacity: u64,
    max_object_bytes: u64,
    kind: PolicyKind,
    /// `s3-tinylfu`: the tier's mode and its shadows, one sample across all shards (a shard's
    /// own would be too small to decide). Taken with `try_lock` after the shard lock is
    /// released: a busy lock drops that sample, so a hit never waits for it.
    modes: Option<Mutex<TierMode>>,
}

/// The RAM tier's `s3-tinylfu` mode and the shadows that pick it.
struct TierMode {
    shadows: ModeShadows,
    mode: Mode,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("capacity", &self.capacity)
            .field("max_object_bytes", &self.max_object_bytes)
            .field("policy", &self.kind)
            .field("mode", &self.mode())
            .finish()
    }
}

/// Shards for a capacity: about one per [`TARGET_SHARD_BYTES`], a power of two in
/// `1..=MAX_SHARDS`.
pub fn default_shard_count(capacity_bytes: u64) -> usize {
    let wanted = usize::try_from(capacity_bytes / TARGET_SHARD_BYTES).unwrap_or(MAX_SHARDS);
    let wanted = wanted.clamp(1, MAX_SHARDS);
    // Round down to a power of two.
    1 << (usize::BITS - 1 - wanted.leading_zeros())
}

impl MemoryStore {
    /// A store of `capacity_bytes`, with the shard count chosen by [`default_shard_count`] and
    /// the policy chosen by `policy`.
    pub fn new(capacity_bytes: u64, policy: PolicyKind) -> Self {
        Self::with_shards(capacity_bytes, policy, default_shard_count(capacity_bytes))
    }

    /// A store with an explicit shard count (rounded up to a power of two, at most
    /// [`MAX_SHARDS`]). Each shard gets `capacity_bytes / shards` and accepts objects up to
    /// 1/[`MAX_OBJECT_SHARE`] of that.
    pub fn with_shards(capacity_bytes: u64, policy: PolicyKind, shards: usize) -> Self {
        let shards = shards.clamp(1, MAX_SHARDS).next_power_of_two();
        let shard_capacity = capacity_bytes / shards as u64;
        let adaptive = policy == PolicyKind::S3TinyLfu;
        let build = |capacity| -> Box<dyn EvictionPolicy> {
            if adaptive {
                Box::new(S3Fifo::tinylfu_fixed(capacity, Mode::Recency))
            } else {
                policy.build(capacity)
            }
        };
        Self {
            shards: (0..shards)
                .map(|_| Mutex::new(Shard::new(build(shard_capacity))))
                .collect(),
            shard_mask: shards as u64 - 1,
            capacity: capacity_bytes,
            shard_capacity,
            max_object_bytes: shard_capacity / MAX_OBJECT_SHARE,
            kind: policy,
            modes: adaptive.then(|| {
                Mutex::new(TierMode {
                    shadows: ModeShadows::new(shard_capacity * shards as u64),
                    mode: Mode::Recency,
                })
            }),
        }
    }

    /// `s3-tinylfu`: the tier's current mode (`None` for the other policies).
    pub fn mode(&self) -> Option<Mode> {
        let modes = self.modes.as_ref()?;
        Some(modes.lock().unwrap_or_else(PoisonError::into_inner).mode)
    }

    /// `s3-tinylfu`: how often the tier's shadows switched its mode.
    pub fn mode_switches(&self) -> u64 {
        self.modes.as_ref().map_or(0, |m| {
            m.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .shadows
                .switches()
        })
    }

    /// Replays a request (a hit, or an insert) of a sampled key through the tier's shadows,
    /// unless another thread holds them; a switch sets every shard's mode. `charge` is asked only
    /// for a sampled key. Called with no shard lock held (the order is shadows, then shard).
    fn observe(&self, hash: u64, charge: impl FnOnce() -> u64) {
        let Some(modes) = &self.modes else {
            return;
        };
        if !S3Fifo::in_shadow_sample(hash) {
            return;
        }
        let Ok(mut tier) = modes.try_lock() else {
            return;
        };
        let current = tier.mode;
        if let Some(mode) = tier.shadows.observe(hash, charge(), current) {
            tier.mode = mode;
            for shard in self.shards.iter() {
                let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                shard.policy.switch_mode(mode);
            }
        }
    }

    /// The policy in use.
    pub fn policy(&self) -> PolicyKind {
        self.kind
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Bytes budgeted per shard.
    pub fn shard_capacity(&self) -> u64 {
        self.shard_capacity
    }

    /// The largest charge (object weight + key length) an insert accepts.
    pub fn max_object_bytes(&self) -> u64 {
        self.max_object_bytes
    }

    /// Bytes an insert of `obj` under `key` is charged.
    pub fn charge(key: &CacheKey, obj: &StoredObject) -> u64 {
        obj.weight().saturating_add(key.text().len() as u64)
    }

    /// Drops every object whose `keep_until` is at or before `now`; returns how many.
    pub fn remove_expired(&self, now: SystemTime) -> usize {
        self.each_shard(|shard| {
            let n = shard
                .remove_matching(|entry| now >= entry.object.meta.keep_until)
                .len();
            shard.counters.expired += n as u64;
            n
        })
    }

    /// Whether `key` is stored (expired or not), without touching the policy or the counters.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.shard(key.hash64())
            .entries
            .get(&key.hash64())
            .is_some_and(|entry| entry.key.text() == key.text())
    }

    /// Removes every object carrying `tag`; returns their key hashes.
    pub(crate) fn remove_tag_hashes(&self, tag: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(hashes) = shard.tags.remove(tag) else {
                continue;
            };
            out.extend(hashes.into_iter().filter(|hash| shard.drop_entry(*hash)));
        }
        out
    }

    /// Removes every object whose key starts with `prefix`; returns their key hashes.
    pub(crate) fn remove_prefix_hashes(&self, prefix: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(shard.remove_matching(|entry| entry.key.text().starts_with(prefix)));
        }
        out
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // Middle bits pick the shard: the map's hasher re-mixes, so no bits are wasted.
        let idx = ((hash >> 32) & self.shard_mask) as usize;
        self.shards[idx]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn each_shard(&self, mut f: impl FnMut(&mut Shard) -> usize) -> usize {
        self.shards
            .iter()
            .map(|shard| f(&mut shard.lock().unwrap_or_else(PoisonError::into_inner)))
            .sum()
    }

    /// Checks the store's internal consistency (tests).
    #[cfg(test)]
    #[allow(clippy::expect_used)]
    pub(crate) fn check_invariants(&self) {
        let mut total = 0;
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let charged: u64 = shard.entries.values().map(|e| e.charge).sum();
            assert_eq!(charged, shard.bytes, "shard bytes");
            assert_eq!(shard.policy.bytes(), shard.bytes, "policy bytes");
            assert_eq!(shard.policy.len(), shard.entries.len(), "policy len");
            assert!(shard.bytes <= self.shard_capacity, "shard over budget");
            for (hash, entry) in &shard.entries {
                assert_eq!(*hash, entry.key.hash64());
                assert!(shard.policy.contains(*hash));
                for tag in &entry.object.meta.tags {
                    assert!(shard
                        .tags
                        .get(tag.as_str())
                        .is_some_and(|s| s.contains(hash)));
                }
            }
            for (tag, set) in &shard.tags {
                assert!(!set.is_empty());
                for hash in set {
                    let entry = shard.entries.get(hash).expect("tagged entry present");
                    assert!(entry.object.meta.tags.iter().any(|t| t.as_str() == &**tag));
                }
            }
            total += shard.bytes;
        }
        assert!(total <= self.capacity);
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<StoredObject>> {
        let hash = key.hash64();
        let found = self.shard(hash).get(key, now);
        if let Some(obj) = &found {
            self.observe(hash, || Self::charge(key, obj));
        }
        found
    }

    fn insert(&self, key: CacheKey, obj: Arc<StoredObject>, _now: SystemTime) -> Admission {
        let charge = Self::charge(&key, &obj);
        let mut shard = self.shard(key.hash64());
        if charge > self.max_object_bytes {
            // The new version supersedes the stored one even though it cannot be kept.
            let hash = key.hash64();
            if shard
                .entries
                .get(&hash)
                .is_some_and(|entry| entry.key.text() == key.text())
            {
                shard.drop_entry(hash);
            }
            shard.counters.too_large += 1;
            return Admission::TooLarge;
        }
        let hash = key.hash64();
        let admission = shard.insert(key, obj, charge);
        drop(shard);
        self.observe(hash, || charge);
        admission
    }

    fn remove(&self, key: &CacheKey) -> bool {
        let hash = key.hash64();
        let mut shard = self.shard(hash);
        let matches = shard
            .entries
            .get(&hash)
            .is_some_and(|entry| entry.key.text() == key.text());
        matches && shard.drop_entry(hash)
    }

    fn remove_tag(&self, tag: &str) -> usize {
        self.remove_tag_hashes(tag).len()
    }

    fn remove_prefix(&self, prefix: &str) -> usize {
        self.remove_prefix_hashes(prefix).len()
    }

    fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            capacity_bytes: self.capacity,
            ..StoreStats::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let c = &shard.counters;
            stats.objects += shard.entries.len() as u64;
            stats.bytes += shard.bytes;
            stats.hits += c.hits;
            stats.misses += c.misses;
            stats.inserts += c.inserts;
            stats.rejected += c.rejected;
            stats.too_large += c.too_large;
            stats.evictions += c.evictions;
            stats.expired += c.expired;
        }
        stats
    }
}
