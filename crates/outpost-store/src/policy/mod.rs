//! Admission and eviction policies, pure and byte-weighted, over `(key hash, weight)` only.
//!
//! The RAM tier ([`MemoryStore`](crate::MemoryStore)) drives one policy instance per shard, and
//! the trace simulator drives the very same types to compare hit ratios, so nothing here knows
//! about objects, clocks or locks. Policies:
//!
//! - `s3-tinylfu` (default, [`S3Fifo::tinylfu`]): S3-FIFO with a TinyLFU second chance for
//!   objects leaving the small queue, size rules for large objects, and a recency or frequency
//!   [`Mode`] for entries into main, picked by two miniature simulations on sampled keys.
//! - `s3-fifo` ([`S3Fifo::new`]): small FIFO + main FIFO + ghost queue, 2-bit frequencies.
//! - [`WTinyLfu`]: window LRU + segmented LRU main, admission by TinyLFU frequency, adaptive
//!   window (the default until issue 11: it trails on byte budgets and popularity churn).
//! - [`SizeAware`]: GDSF over TinyLFU frequencies, for object hit ratio over byte hit ratio.
//! - [`Lru`]: plain least-recently-used, the baseline.
//!
//! docs/simulator.md has the measurements behind the default.

pub(crate) mod duel;
mod gdsf;
mod ghost;
mod list;
mod lru;
pub(crate) mod s3fifo;
pub(crate) mod sketch;
mod wtinylfu;

use std::fmt;
use std::str::FromStr;

pub use gdsf::SizeAware;
pub use lru::Lru;
pub use s3fifo::{Mode, ModeShadows, S3Fifo};
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
    /// Takes `mode` (`s3-tinylfu`, whose shadows are the RAM tier's rather than its own); a
    /// no-op for the other policies.
    fn switch_mode(&mut self, _mode: Mode) {}
}

/// The available policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PolicyKind {
    /// S3-FIFO with a TinyLFU second chance and a size filter (the default).
    #[default]
    S3TinyLfu,
    /// W-TinyLFU (window LRU + SLRU main + count-min sketch admission, adaptive window).
    WTinyLfu,
    /// S3-FIFO (small + main FIFO, ghost queue).
    S3Fifo,
    /// GDSF over TinyLFU frequencies: object hit ratio first.
    SizeAware,
    /// Plain LRU.
    Lru,
}

impl PolicyKind {
    /// Every policy, for simulators and tests.
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::S3TinyLfu,
        PolicyKind::WTinyLfu,
        PolicyKind::S3Fifo,
        PolicyKind::SizeAware,
        PolicyKind::Lru,
    ];

    /// The config/CLI name: `s3-tinylfu`, `w-tinylfu`, `s3-fifo`, `size-aware` or `lru`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyKind::S3TinyLfu => "s3-tinylfu",
            PolicyKind::WTinyLfu => "w-tinylfu",
            PolicyKind::S3Fifo => "s3-fifo",
            PolicyKind::SizeAware => "size-aware",
            PolicyKind::Lru => "lru",
        }
    }

    /// A fresh policy of this kind with a byte budget of `capacity`.
    pub fn build(self, capacity: u64) -> Box<dyn EvictionPolicy> {
        match self {
            PolicyKind::S3TinyLfu => Box::new(S3Fifo::tinylfu(capacity)),
            PolicyKind::WTinyLfu => Box::new(WTinyLfu::new(capacity)),
            PolicyKind::S3Fifo => Box::new(S3Fifo::new(capacity)),
            PolicyKind::SizeAware => Box::new(SizeAware::new(capacity)),
            PolicyKind::Lru => Box::new(Lru::new(capacity)),
        }
    }

    /// Whether the policy keeps TinyLFU frequencies (the SSD tier's admission then uses them).
    pub fn uses_frequency(self) -> bool {
        !matches!(self, PolicyKind::S3Fifo | PolicyKind::Lru)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown cache policy {0:?} (expected \"s3-tinylfu\", \"w-tinylfu\", \"s3-fifo\", \"size-aware\" or \"lru\")"
)]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "s3-tinylfu" | "s3tinylfu" => Ok(PolicyKind::S3TinyLfu),
            "w-tinylfu" | "wtinylfu" | "tinylfu" => Ok(PolicyKind::WTinyLfu),
            "size-aware" | "sizeaware" | "gdsf" => Ok(PolicyKind::SizeAware),
            "s3-fifo" | "s3fifo" => Ok(PolicyKind::S3Fifo),
            "lru" => Ok(PolicyKind::Lru),
            _ => Err(UnknownPolicy(s.to_owned())),
        }
    }
}

/// A candidate at least this frequent wins a lost TinyLFU contest with probability 1/128, so an
/// attacker who inflates a victim's sketch counters cannot pin it forever (Caffeine's
/// hash-flooding guard).
const ADMIT_HASHDOS_THRESHOLD: u64 = 6;

/// TinyLFU's contest: does a candidate seen `candidate` times deserve the place of a victim seen
/// `victim` times? Strictly more frequent wins; a frequent loser still wins with probability
/// 1/128, drawn from `rng` (xorshift64*, deterministic so simulations are reproducible).
pub(crate) fn tinylfu_admits(candidate: u64, victim: u64, rng: &mut u64) -> bool {
    if candidate > victim {
        return true;
    }
    if candidate < ADMIT_HASHDOS_THRESHOLD {
        return false;
    }
    let mut x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d) & 127 == 0
}

/// `percent`% of `value`, without overflow.
pub(crate) fn percent_of(value: u64, percent: u64) -> u64 {
    let scaled = u128::from(value) * u128::from(percent) / 100;
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod tests;
