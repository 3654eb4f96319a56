//! The [`Store`] trait every storage tier implements, its insert outcome ([`Admission`]) and its
//! counters ([`StoreStats`]). Every operation that may touch the SSD has an `_async` form that
//! returns a [`Completion`]: async callers await it instead of blocking their worker on disk
//! I/O. The defaults answer at once from the blocking form (a RAM-only tier does no I/O).

use std::sync::Arc;
use std::time::SystemTime;

use crate::{CacheKey, Completion, StoredObject};

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Stored.
    Admitted,
    /// Not stored: the admission policy judged it less valuable than what it would displace.
    Rejected,
    /// Not stored: larger than the store accepts for one object.
    TooLarge,
}

impl Admission {
    /// Stable name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Admission::Admitted => "admitted",
            Admission::Rejected => "rejected",
            Admission::TooLarge => "too_large",
        }
    }

    /// Whether the object is now stored.
    pub fn is_admitted(&self) -> bool {
        matches!(self, Admission::Admitted)
    }
}

impl std::fmt::Display for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of a store. Gauges (`objects`, `bytes`, `capacity_bytes`) are current values; the
/// rest count events since creation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Objects stored.
    pub objects: u64,
    /// Bytes charged (see [`StoredObject::weight`]; the store adds the key text).
    pub bytes: u64,
    /// The byte budget.
    pub capacity_bytes: u64,
    /// `get` calls that returned an object.
    pub hits: u64,
    /// `get` calls that returned nothing (absent or expired).
    pub misses: u64,
    /// Objects stored by `insert` (new keys and replacements).
    pub inserts: u64,
    /// Inserts the admission policy refused.
    pub rejected: u64,
    /// Inserts refused as too large (not counted in `rejected`).
    pub too_large: u64,
    /// Objects dropped to make room (including one displaced by a hash-colliding key).
    pub evictions: u64,
    /// Objects dropped because `keep_until` had passed.
    pub expired: u64,
}

/// A storage tier: a map from [`CacheKey`] to [`StoredObject`] with a byte budget.
pub trait Store: Send + Sync + 'static {
    /// Returns the object if present and `now < keep_until` (expired ones are removed and
    /// counted). Records the access for the policy.
    fn get(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<StoredObject>>;
    /// Insert/replace. Replacement of an existing key is always admitted (it's an update). New
    /// keys go through the admission policy.
    fn insert(&self, key: CacheKey, obj: Arc<StoredObject>, now: SystemTime) -> Admission;
    /// Removes one object; returns whether it was there.
    fn remove(&self, key: &CacheKey) -> bool;
    /// Remove every object carrying this surrogate-key tag; returns how many.
    fn remove_tag(&self, tag: &str) -> usize;
    /// Remove every object whose key text starts with prefix; returns how many.
    fn remove_prefix(&self, prefix: &str) -> usize;
    /// The object of `key` with its head read and its body left in place, to be read chunk by
    /// chunk ([`ChunkedHit::reader`](crate::ChunkedHit::reader)): for a tier that keeps bodies in
    /// chunks (SSD), so that a large object or a range of one is served without loading it whole.
    /// `None` means "use [`Store::get`]": the default, for tiers that hold whole objects in RAM;
    /// the answer of a hybrid store when RAM holds the object, when the SSD tier does not, and,
    /// unless `min_record_bytes` is 0 (ranges), for objects the RAM tier could hold (so `get`
    /// promotes them) or records shorter than `min_record_bytes`.
    fn get_chunked(
        &self,
        _key: &CacheKey,
        _min_record_bytes: u64,
        _now: SystemTime,
    ) -> Option<crate::ChunkedHit> {
        None
    }
    /// Starts streaming a fill of `head.body_len` bytes onto a tier that writes bodies chunk by
    /// chunk (SSD), so the body is never held whole in RAM and readers can follow it while it is
    /// written ([`StreamFill::tap`](crate::StreamFill::tap)). `None`: no such tier, or it did not
    /// admit the fill (the caller buffers and uses [`Store::insert`]).
    fn begin_stream(
        &self,
        _key: &CacheKey,
        _head: &crate::StreamHead,
        _now: SystemTime,
    ) -> Option<crate::StreamFill> {
        None
    }
    /// Commits a fill begun with [`Store::begin_stream`] once its body is written whole.
    fn commit_stream(&self, fill: crate::StreamFill, now: SystemTime) -> Admission {
        fill.commit(now)
    }
    /// [`Store::get`], awaitable: a tier with an SSD reads it on an I/O thread (a RAM hit is
    /// answered at once); a full read queue makes it a miss.
    fn get_async(&self, key: &CacheKey, now: SystemTime) -> Completion<Option<Arc<StoredObject>>> {
        Completion::ready(self.get(key, now))
    }
    /// [`Store::get_chunked`], awaitable (see [`Store::get_async`]).
    fn get_chunked_async(
        &self,
        key: &CacheKey,
        min_record_bytes: u64,
        now: SystemTime,
    ) -> Completion<Option<crate::ChunkedHit>> {
        Completion::ready(self.get_chunked(key, min_record_bytes, now))
    }
    /// [`Store::insert`], awaitable: the SSD append runs on the tier's append thread, in the
    /// order of submission (a purge submitted later applies after it); a full append queue
    /// leaves the object out of the SSD tier. The insert is submitted when this returns:
    /// awaiting only gives its outcome.
    fn insert_async(
        &self,
        key: CacheKey,
        obj: Arc<StoredObject>,
        now: SystemTime,
    ) -> Completion<Admission> {
        Completion::ready(self.insert(key, obj, now))
    }
    /// [`Store::begin_stream`], awaitable (on the append thread; `None` when its queue is full).
    fn begin_stream_async(
        &self,
        key: &CacheKey,
        head: &crate::StreamHead,
        now: SystemTime,
    ) -> Completion<Option<crate::StreamFill>> {
        Completion::ready(self.begin_stream(key, head, now))
    }
    /// [`Store::commit_stream`], awaitable; submitted (in order) when this returns.
    fn commit_stream_async(
        &self,
        fill: crate::StreamFill,
        now: SystemTime,
    ) -> Completion<Admission> {
        Completion::ready(self.commit_stream(fill, now))
    }
    /// [`Store::remove`], awaitable; submitted (in order) when this returns.
    fn remove_async(&self, key: &CacheKey) -> Completion<bool> {
        Completion::ready(self.remove(key))
    }
    /// [`Store::remove_tag`], awaitable; submitted (in order) when this returns.
    fn remove_tag_async(&self, tag: &str) -> Completion<usize> {
        Completion::ready(self.remove_tag(tag))
    }
    /// [`Store::remove_prefix`], awaitable; submitted (in order) when this returns.
    fn remove_prefix_async(&self, prefix: &str) -> Completion<usize> {
        Completion::ready(self.remove_prefix(prefix))
    }
    /// Current counters.
    fn stats(&self) -> StoreStats;
    /// Counters of the SSD tier, for stores that have one.
    fn stats_disk(&self) -> Option<crate::DiskStats> {
        None
    }
    /// The SSD tier, for stores that have one.
    fn disk_tier(&self) -> Option<&crate::DiskStore> {
        None
    }
    /// Makes committed writes durable against power loss (`fdatasync`), for stores that write
    /// files; a no-op otherwise.
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}
