//! [`HybridStore`]: the RAM tier ([`MemoryStore`]) in front of the SSD tier ([`DiskStore`])
//! behind the [`Store`] trait. `get` tries RAM, then SSD (verified; a hit is promoted to RAM
//! through the RAM policy); `insert` goes to RAM and is appended to SSD through the SSD
//! admission policy; purges hit both tiers and are persisted as tombstones. Without a usable
//! directory it runs RAM-only ([`HybridStore::ram_only`]).
//!
//! The `_async` forms of [`Store`] answer a RAM hit at once, on the caller's thread and without
//! allocating, and so an SSD hit the page cache holds (read without waiting for the device);
//! other SSD work goes to the SSD tier's I/O threads (a hit is promoted to RAM there, a purge
//! removes from RAM there after the SSD tier). A purge epoch, bumped by every purge before
//! it removes from RAM, lets a promotion that raced a purge undo itself, so a purged object is
//! never left in RAM.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::counter::{Count, Sharded};
use std::sync::Arc;
use std::time::SystemTime;

use crate::disk::{DiskConfig, DiskStats, DiskStore, LaneKind, OpenError, RecoveryReport};
use crate::hashing::U64Set;
use crate::policy::PolicyKind;
use crate::store::{Admission, Store, StoreStats};
use crate::{CacheKey, ChunkedHit, Completion, MemoryStore, StoredObject, StreamFill, StreamHead};

/// RAM tier in front of an optional SSD tier.
#[derive(Debug)]
pub struct HybridStore {
    /// Shared with SSD jobs, which promote hits and apply purges on the I/O threads.
    ram: Arc<MemoryStore>,
    disk: Option<DiskStore>,
    n: Arc<Counters>,
}

/// Counters of the hybrid store and the purge epoch (shared with SSD jobs).
#[derive(Debug, Default)]
struct Counters {
    hits: Sharded,
    misses: Sharded,
    disk_hits: Sharded,
    promotions: Sharded,
    /// Bumped by every purge before it removes from RAM.
    purge_epoch: AtomicU64,
}

/// What an SSD read found, after the RAM miss: counted, and promoted into RAM through the RAM
/// policy unless a purge ran since `epoch` (read before the SSD read), in which case the
/// promotion is undone: that purge may have cleared RAM before this insert.
fn promoted(
    ram: &MemoryStore,
    n: &Counters,
    key: &CacheKey,
    found: Option<StoredObject>,
    now: SystemTime,
    epoch: u64,
) -> Option<Arc<StoredObject>> {
    let Some(obj) = found else {
        n.misses.add(1);
        return None;
    };
    let obj = Arc::new(obj);
    n.hits.add(1);
    n.disk_hits.add(1);
    if ram.insert(key.clone(), Arc::clone(&obj), now).is_admitted() {
        if n.purge_epoch.load(Ordering::SeqCst) == epoch {
            n.promotions.add(1);
        } else {
            ram.remove(key);
        }
    }
    Some(obj)
}

/// The outcome of an insert into both tiers.
fn both(ram: Admission, disk: Admission) -> Admission {
    match (ram, disk) {
        (Admission::Admitted, _) | (_, Admission::Admitted) => Admission::Admitted,
        (Admission::TooLarge, Admission::TooLarge) => Admission::TooLarge,
        _ => Admission::Rejected,
    }
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
            ram: Arc::new(ram),
            disk,
            n: Arc::new(Counters::default()),
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
            disk_hits: self.n.disk_hits.get() + self.stats_disk().map_or(0, |d| d.chunked_hits),
            promotions: self.n.promotions.get(),
            disk: self.stats_disk(),
        }
    }

    /// The purge epoch (tests).
    #[cfg(test)]
    pub(crate) fn purge_epoch(&self) -> u64 {
        self.n.purge_epoch.load(Ordering::SeqCst)
    }

    /// Moves the purge epoch as a purge does (tests).
    #[cfg(test)]
    pub(crate) fn bump_purge_epoch(&self) {
        self.n.purge_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// What an SSD read job does with what it found (tests).
    #[cfg(test)]
    pub(crate) fn promote_for_test(
        &self,
        key: &CacheKey,
        found: Option<StoredObject>,
        now: SystemTime,
        epoch: u64,
    ) -> Option<Arc<StoredObject>> {
        promoted(&self.ram, &self.n, key, found, now, epoch)
    }

    /// The shortest record a chunked hit is for (see [`Store::get_chunked`]).
    fn chunked_min(&self, min_record_bytes: u64) -> u64 {
        if min_record_bytes == 0 {
            0
        } else {
            min_record_bytes.max(self.ram.max_object_bytes().saturating_add(1))
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
            self.n.hits.add(1);
            return Some(obj);
        }
        let Some(disk) = &self.disk else {
            self.n.misses.add(1);
            return None;
        };
        let epoch = self.n.purge_epoch.load(Ordering::SeqCst);
        promoted(&self.ram, &self.n, key, disk.get(key, now), now, epoch)
    }

    /// A RAM hit is answered at once (no thread hop, no allocation), and so is an SSD record
    /// the page cache holds (read on the caller's thread without waiting for the device, then
    /// promoted here); otherwise the SSD read and the promotion run on an SSD read thread. A
    /// full read queue is a miss.
    fn get_async(&self, key: &CacheKey, now: SystemTime) -> Completion<Option<Arc<StoredObject>>> {
        if let Some(obj) = self.ram.get(key, now) {
            self.n.hits.add(1);
            return Completion::ready(Some(obj));
        }
        let Some(disk) = &self.disk else {
            self.n.misses.add(1);
            return Completion::ready(None);
        };
        let epoch = self.n.purge_epoch.load(Ordering::SeqCst);
        if let Some(found) = disk.get_now(key, now) {
            return Completion::ready(promoted(&self.ram, &self.n, key, found, now, epoch));
        }
        let (ram, n, key) = (self.ram.clone(), self.n.clone(), key.clone());
        disk.submit(LaneKind::Read, None, move |d| {
            let found = d.get(&key, now);
            promoted(&ram, &n, &key, found, now, epoch)
        })
        .unwrap_or_else(|| {
            self.n.misses.add(1);
            Completion::ready(None)
        })
    }

    fn get_chunked_async(
        &self,
        key: &CacheKey,
        min_record_bytes: u64,
        now: SystemTime,
    ) -> Completion<Option<ChunkedHit>> {
        let Some(disk) = &self.disk else {
            return Completion::ready(None);
        };
        if self.ram.contains(key) {
            return Completion::ready(None);
        }
        disk.get_chunked_async(key, self.chunked_min(min_record_bytes), now)
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
        // Counted when served (`ChunkedHit::served`, the SSD tier's `chunked_hits`).
        disk.get_chunked(key, self.chunked_min(min_record_bytes), now)
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

    fn begin_stream_async(
        &self,
        key: &CacheKey,
        head: &StreamHead,
        now: SystemTime,
    ) -> Completion<Option<StreamFill>> {
        let Some(disk) = &self.disk else {
            return Completion::ready(None);
        };
        let (key, head) = (key.clone(), head.clone());
        // (`now` is not used by the SSD tier's admission.)
        let _ = now;
        disk.submit(LaneKind::Append, None, move |d| {
            d.begin_stream(&key, &head).ok()
        })
        .unwrap_or_else(|| Completion::ready(None))
    }

    fn commit_stream_async(&self, fill: StreamFill, now: SystemTime) -> Completion<Admission> {
        let Some(disk) = &self.disk else {
            return Completion::ready(self.commit_stream(fill, now));
        };
        let ram = self.ram.clone();
        disk.submit(LaneKind::AppendAlways, Admission::Rejected, move |_| {
            let key = fill.key().clone();
            let whole = fill.written() == fill.body_len();
            let admitted = fill.commit(now);
            if whole {
                ram.remove(&key);
            }
            admitted
        })
        .unwrap_or_else(|| Completion::ready(Admission::Rejected))
    }

    fn insert(&self, key: CacheKey, obj: Arc<StoredObject>, now: SystemTime) -> Admission {
        let disk = match &self.disk {
            Some(disk) => disk.insert(&key, &obj, now),
            None => Admission::TooLarge,
        };
        both(self.ram.insert(key, obj, now), disk)
    }

    /// The RAM insert happens now; the SSD append is queued (a full queue leaves it out).
    fn insert_async(
        &self,
        key: CacheKey,
        obj: Arc<StoredObject>,
        now: SystemTime,
    ) -> Completion<Admission> {
        let Some(disk) = &self.disk else {
            return Completion::ready(self.insert(key, obj, now));
        };
        let ram = self.ram.insert(key.clone(), obj.clone(), now);
        disk.submit(LaneKind::Append, both(ram, Admission::Rejected), move |d| {
            both(ram, d.insert(&key, &obj))
        })
        .unwrap_or_else(|| Completion::ready(both(ram, Admission::Rejected)))
    }

    /// SSD first (its tombstone is written), then RAM, after bumping the purge epoch.
    fn remove(&self, key: &CacheKey) -> bool {
        let on_disk = self.disk.as_ref().is_some_and(|disk| disk.remove(key));
        self.n.purge_epoch.fetch_add(1, Ordering::SeqCst);
        let in_ram = self.ram.remove(key);
        in_ram || on_disk
    }

    fn remove_async(&self, key: &CacheKey) -> Completion<bool> {
        let Some(disk) = &self.disk else {
            return Completion::ready(self.remove(key));
        };
        let (ram, n, key) = (self.ram.clone(), self.n.clone(), key.clone());
        disk.submit(LaneKind::AppendAlways, false, move |d| {
            let on_disk = d.remove(&key);
            n.purge_epoch.fetch_add(1, Ordering::SeqCst);
            ram.remove(&key) || on_disk
        })
        .unwrap_or_else(|| Completion::ready(false))
    }

    fn remove_tag(&self, tag: &str) -> usize {
        let on_disk = self.disk.as_ref().map(|disk| disk.remove_tag(tag));
        self.n.purge_epoch.fetch_add(1, Ordering::SeqCst);
        let mut removed: U64Set = self.ram.remove_tag_hashes(tag).into_iter().collect();
        removed.extend(on_disk.unwrap_or_default());
        removed.len()
    }

    fn remove_tag_async(&self, tag: &str) -> Completion<usize> {
        let Some(disk) = &self.disk else {
            return Completion::ready(self.remove_tag(tag));
        };
        let (ram, n, tag) = (self.ram.clone(), self.n.clone(), tag.to_owned());
        disk.submit(LaneKind::AppendAlways, 0, move |d| {
            let on_disk = d.remove_tag(&tag);
            n.purge_epoch.fetch_add(1, Ordering::SeqCst);
            let mut removed: U64Set = ram.remove_tag_hashes(&tag).into_iter().collect();
            removed.extend(on_disk);
            removed.len()
        })
        .unwrap_or_else(|| Completion::ready(0))
    }

    fn remove_prefix(&self, prefix: &str) -> usize {
        let on_disk = self.disk.as_ref().map(|disk| disk.remove_prefix(prefix));
        self.n.purge_epoch.fetch_add(1, Ordering::SeqCst);
        let mut removed: U64Set = self.ram.remove_prefix_hashes(prefix).into_iter().collect();
        removed.extend(on_disk.unwrap_or_default());
        removed.len()
    }

    fn remove_prefix_async(&self, prefix: &str) -> Completion<usize> {
        let Some(disk) = &self.disk else {
            return Completion::ready(self.remove_prefix(prefix));
        };
        let (ram, n, prefix) = (self.ram.clone(), self.n.clone(), prefix.to_owned());
        disk.submit(LaneKind::AppendAlways, 0, move |d| {
            let on_disk = d.remove_prefix(&prefix);
            n.purge_epoch.fetch_add(1, Ordering::SeqCst);
            let mut removed: U64Set = ram.remove_prefix_hashes(&prefix).into_iter().collect();
            removed.extend(on_disk);
            removed.len()
        })
        .unwrap_or_else(|| Completion::ready(0))
    }

    fn stats_disk(&self) -> Option<DiskStats> {
        HybridStore::stats_disk(self)
    }

    fn disk_tier(&self) -> Option<&DiskStore> {
        self.disk.as_ref()
    }

    fn flush(&self) -> std::io::Result<()> {
        HybridStore::flush(self)
    }

    /// Gauges add up both tiers (an object held in both counts twice); `hits`/`misses` count
    /// `get` calls of the hybrid (an SSD hit is a hit) plus chunked hits served; the other
    /// counters add up both tiers.
    fn stats(&self) -> StoreStats {
        let mut stats = self.ram.stats();
        stats.hits = self.n.hits.get();
        stats.misses = self.n.misses.get();
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
