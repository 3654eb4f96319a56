//! Admission and eviction policies, pure and byte-weighted, over `(key hash, weight)` only.
//!
//! The RAM tier ([`MemoryStore`](crate::MemoryStore)) drives one policy instance per shard, and
//! the trace simulator drives the very same types to compare hit ratios, so nothing here knows
//! about objects, clocks or locks. Policies:
//!
//! - [`WTinyLfu`] (default): window LRU + segmented LRU main, admission by TinyLFU frequency.
//! - [`S3Fifo`]: small FIFO + main FIFO + ghost queue, 2-bit frequencies.
//! - [`Lru`]: plain least-recently-used, the baseline.

mod ghost;
mod list;
mod lru;
mod s3fifo;
pub(crate) mod sketch;
mod wtinylfu;

use std::fmt;
use std::str::FromStr;

pub use lru::Lru;
pub use s3fifo::S3Fifo;
pub use wtinylfu::WTinyLfu;

/// What happened to an insert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Whether the inserted key is resident after the call. An update of a resident key is always
    /// admitted unless its new weight exceeds the whole capacity.
    pub admitted: bool,
    /// Keys that stopped being resident during the call, never including the inserted key itself.
    pub evicted: Vec<u64>,
}

/// A byte-weighted admission and eviction policy over key hashes.
///
/// Contract: `bytes() <= capacity()` after every call; `on_insert` of a resident key is an update
/// (new weight, counts as an access); `evicted` lists exactly the keys that left.
pub trait EvictionPolicy: Send + 'static {
    /// Which policy this is.
    fn kind(&self) -> PolicyKind;
    /// Records a hit on a resident key (no-op for an unknown key).
    fn on_hit(&mut self, hash: u64);
    /// Inserts a new key (subject to admission) or updates a resident one.
    fn on_insert(&mut self, hash: u64, weight: u64) -> InsertOutcome;
    /// Forgets a resident key (purge, expiry). Returns whether it was resident.
    fn on_remove(&mut self, hash: u64) -> bool;
    /// Whether the key is resident.
    fn contains(&self, hash: u64) -> bool;
    /// Resident keys.
    fn len(&self) -> usize;
    /// Whether nothing is resident.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Resident bytes.
    fn bytes(&self) -> u64;
    /// The byte budget.
    fn capacity(&self) -> u64;
}

/// The available policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PolicyKind {
    /// W-TinyLFU (window LRU + SLRU main + count-min sketch admission).
    #[default]
    WTinyLfu,
    /// S3-FIFO (small + main FIFO, ghost queue).
    S3Fifo,
    /// Plain LRU.
    Lru,
}

impl PolicyKind {
    /// Every policy, for simulators and tests.
    pub const ALL: [PolicyKind; 3] = [PolicyKind::WTinyLfu, PolicyKind::S3Fifo, PolicyKind::Lru];

    /// The config/CLI name: `w-tinylfu`, `s3-fifo` or `lru`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyKind::WTinyLfu => "w-tinylfu",
            PolicyKind::S3Fifo => "s3-fifo",
            PolicyKind::Lru => "lru",
        }
    }

    /// A fresh policy of this kind with a byte budget of `capacity`.
    pub fn build(self, capacity: u64) -> Box<dyn EvictionPolicy> {
        match self {
            PolicyKind::WTinyLfu => Box::new(WTinyLfu::new(capacity)),
            PolicyKind::S3Fifo => Box::new(S3Fifo::new(capacity)),
            PolicyKind::Lru => Box::new(Lru::new(capacity)),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cache policy {0:?} (expected \"w-tinylfu\", \"s3-fifo\" or \"lru\")")]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "w-tinylfu" | "wtinylfu" | "tinylfu" => Ok(PolicyKind::WTinyLfu),
            "s3-fifo" | "s3fifo" => Ok(PolicyKind::S3Fifo),
            "lru" => Ok(PolicyKind::Lru),
            _ => Err(UnknownPolicy(s.to_owned())),
        }
    }
}

/// `percent`% of `value`, without overflow.
pub(crate) fn percent_of(value: u64, percent: u64) -> u64 {
    let scaled = u128::from(value) * u128::from(percent) / 100;
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
