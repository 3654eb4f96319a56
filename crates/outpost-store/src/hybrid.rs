//! [`HybridStore`]: the RAM tier ([`MemoryStore`]) in front of the SSD tier ([`DiskStore`])
//! behind the [`Store`] trait. `get` tries RAM, then SSD (verified; a hit is promoted to RAM
//! through the RAM policy); `insert` goes to RAM and is appended to SSD through the SSD
//! admission policy; purges hit both tiers and are persisted as tombstones. Without a usable
//! directory it runs RAM-only ([`HybridStore::ram_only`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::disk::{DiskConfig, DiskStats, DiskStore, OpenError, RecoveryReport};
use crate::hashing::U64Set;
use crate::policy::PolicyKind;
use crate::store::{Admission, Store, StoreStats};
use crate::{CacheKey, ChunkedHit, MemoryStore, StoredObject, StreamFill, StreamHead};

/// RAM tier in front of an optional SSD tier.
#[derive(Debug)]
pub struct HybridStore {
    ram: MemoryStore,
    disk: Option<DiskStore>,
    hits: AtomicU64,
    misses: AtomicU64,
    disk_hits: AtomicU64,
    promotions: AtomicU64,
}

/// Counters of the hybrid store beyond [`StoreStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HybridStats {
    /// Gets answered by the SSD tier (after a RAM miss).
    pub disk_hits: u64,
    /// SSD hits the RAM policy admitted into RAM.
    pub promotions: u64,
    /// The SSD tier's own counters, when it is open.
    pub disk: Option<DiskStats>,
}

impl HybridStore {
    /// Opens the SSD tier in `dir` (created when missing; recovered when not empty) behind a
    /// RAM tier of `ram_bytes`. Both tiers use `policy`. An error whose
    /// [`OpenError::fallback_to_ram`] is true should be logged and followed by
    /// [`HybridStore::ram_only`]; otherwise (a newer on-disk format) the node should refuse to
    /// start with that directory.
    ///
    /// No record is dropped as expired at recovery (no clock here); see
    /// [`HybridStore::open_at`].
    pub fn open(
        dir: &Path,
        ram_bytes: u64,
        disk_bytes: u64,
        policy: PolicyKind,
        segment_bytes: u64,
    ) -> Result<(Self, RecoveryReport), OpenError> {
        Self::open_at(
            dir,
            ram_bytes,
            disk_bytes,
            policy,
            segment_bytes,
            SystemTime::UNIX_EPOCH,
        )
    }

    /// [`HybridStore::open`], dropping records whose `keep_until` is not after `now`.
    pub fn open_at(
        dir: &Path,
        ram_bytes: u64,
        disk_bytes: u64,
        policy: PolicyKind,
        segment_bytes: u64,
        now: SystemTime,
    ) -> Result<(Self, RecoveryReport), OpenError> {
        let cfg = DiskConfig {
            segment_bytes,
            policy,
            ..DiskConfig::new(dir, disk_bytes)
        };
        Self::open_with(MemoryStore::new(ram_bytes, policy), &cfg, now)
    }

    /// Opens with an explicit RAM tier and SSD configuration.
    pub fn open_with(
        ram: MemoryStore,
        cfg: &DiskConfig,
        now: SystemTime,
    ) -> Result<(Self, RecoveryReport), OpenError> {
        let (disk, report) = DiskStore::open(cfg, now)?;
        Ok((Self::with_tiers(ram, Some(disk)), report))
    }

    /// RAM only (no directory configured, or it could not be used).
    pub fn ram_only(ram_bytes: u64, policy: PolicyKind) -> Self {
        Self::with_tiers(MemoryStore::new(ram_bytes, policy), None)
    }

    fn with_tiers(ram: MemoryStore, disk: Option<DiskStore>) -> Self {
        Self {
            ram,
            disk,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            promotions: AtomicU64::new(0),
        }
    }

    /// The RAM tier.
    pub fn ram(&self) -> &MemoryStore {
        &self.ram
    }

    /// The SSD tier, when open.
    pub fn disk(&self) -> Option<&DiskStore> {
        self.disk.as_ref()
    }

    /// The SSD tier's counters, when open.
    pub fn stats_disk(&self) -> Option<DiskStats> {
        self.disk.as_ref().map(DiskStore::stats)
    }

    /// Hybrid counters (SSD hits, promotions, SSD tier).
    pub fn stats_hybrid(&self) -> HybridStats {
        HybridStats {
            disk_hits: self.disk_hits.load(Ordering::Relaxed)
                + self.stats_disk().map_or(0, |d| d.chunked_hits),
            promotions: self.promotions.load(Ordering::Relaxed),
            disk: self.stats_disk(),
        }
    }

    /// `fdatasync`s the SSD tier (optional; see the durability contract of [`DiskStore`]).
    pub fn flush(&self) -> std::io::Result<()> {
        match &self.disk {
            Some(disk) => disk.flush(),
            None => Ok(()),
        }
    }
}

impl Store for HybridStore {
    fn get(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<StoredObject>> {
        if let Some(obj) = self.ram.get(key, now) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(obj);
        }
        let Some(obj) = self.disk.as_ref().and_then(|disk| disk.get(key, now)) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let obj = Arc::new(obj);
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.disk_hits.fetch_add(1, Ordering::Relaxed);
        // Promotion goes through the RAM tier's admission policy.
        if self
            .ram
            .insert(key.clone(), Arc::clone(&obj), now)
            .is_admitted()
        {
            self.promotions.fetch_add(1, Ordering::Relaxed);
        }
        Some(obj)
    }

    /// Only for objects on SSD and not in RAM (checked without counting an access); with a
    /// non-zero `min_record_bytes`, only for records longer than that and than the RAM tier's
    /// largest object (smaller ones take `get`, which promotes them). Nothing is promoted here:
    /// the object is not read whole.
    fn get_chunked(
        &self,
        key: &CacheKey,
        min_record_bytes: u64,
        now: SystemTime,
    ) -> Option<ChunkedHit> {
        let disk = self.disk.as_ref()?;
        if self.ram.contains(key) {
            return None;
        }
        let min = if min_record_bytes == 0 {
            0
        } else {
            min_record_bytes.max(self.ram.max_object_bytes().saturating_add(1))
        };
        // Counted when served (`ChunkedHit::served`, the SSD tier's `chunked_hits`).
        disk.get_chunked(key, min, now)
    }

    fn begin_stream(
        &self,
        key: &CacheKey,
        head: &StreamHead,
        now: SystemTime,
    ) -> Option<StreamFill> {
        self.disk.as_ref()?.begin_stream(key, head, now).ok()
    }

    /// A body written whole supersedes an older version in RAM, whether or not the SSD tier
    /// indexes it (a committed one lives on SSD: a later hit reads it there and the RAM policy
    /// decides on promotion).
    fn commit_stream(&self, fill: StreamFill, now: SystemTime) -> Admission {
        let key = fill.key().clone();
        let whole = fill.written() == fill.body_len();
        let admitted = fill.commit(now);
        if whole {
            self.ram.remove(&key);
        }
        admitted
    }

    fn insert(&self, key: CacheKey, obj: Arc<StoredObject>, now: SystemTime) -> Admission {
        let disk = match &self.disk {
            Some(disk) => disk.insert(&key, &obj, now),
            None => Admission::TooLarge,
        };
        let ram = self.ram.insert(key, obj, now);
        match (ram, disk) {
            (Admission::Admitted, _) | (_, Admission::Admitted) => Admission::Admitted,
            (Admission::TooLarge, Admission::TooLarge) => Admission::TooLarge,
            _ => Admission::Rejected,
        }
    }

    fn remove(&self, key: &CacheKey) -> bool {
        let in_ram = self.ram.remove(key);
        let on_disk = self.disk.as_ref().is_some_and(|disk| disk.remove(key));
        in_ram || on_disk
    }

    fn remove_tag(&self, tag: &str) -> usize {
        let mut removed: U64Set = self.ram.remove_tag_hashes(tag).into_iter().collect();
        if let Some(disk) = &self.disk {
            removed.extend(disk.remove_tag(tag));
        }
        removed.len()
    }

    fn remove_prefix(&self, prefix: &str) -> usize {
        let mut removed: U64Set = self.ram.remove_prefix_hashes(prefix).into_iter().collect();
        if let Some(disk) = &self.disk {
            removed.extend(disk.remove_prefix(prefix));
        }
        removed.len()
    }

    fn stats_disk(&self) -> Option<DiskStats> {
        HybridStore::stats_disk(self)
    }

    fn flush(&self) -> std::io::Result<()> {
        HybridStore::flush(self)
    }

    /// Gauges add up both tiers (an object held in both counts twice); `hits`/`misses` count
    /// `get` calls of the hybrid (an SSD hit is a hit) plus chunked hits served; the other
    /// counters add up both tiers.
    fn stats(&self) -> StoreStats {
        let mut stats = self.ram.stats();
        stats.hits = self.hits.load(Ordering::Relaxed);
        stats.misses = self.misses.load(Ordering::Relaxed);
        if let Some(disk) = self.stats_disk() {
            stats.hits += disk.chunked_hits;
            stats.objects += disk.objects;
            stats.bytes += disk.live_bytes;
            stats.capacity_bytes += disk.capacity_bytes;
            stats.inserts += disk.inserts;
            stats.rejected += disk.rejected;
            stats.too_large += disk.too_large;
            stats.evictions += disk.evictions;
            stats.expired += disk.expired;
        }
        stats
    }
}
