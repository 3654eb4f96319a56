//! outpost-store: the storage engine. The RAM tier [`MemoryStore`] and the SSD tier
//! [`DiskStore`] (append-only segments, in-RAM index, tombstones, checksums, recovery: see
//! [`disk`]), combined by [`HybridStore`] behind the [`Store`] trait, with byte-weighted,
//! scan-resistant admission and eviction ([`policy`]: S3-FIFO with a TinyLFU second chance by default, W-TinyLFU, S3-FIFO, size-aware GDSF, LRU).
//! No network, no clock reads (`now` is passed in). The SSD tier does its file I/O on threads of
//! its own behind bounded queues; async callers use the `_async` forms of [`Store`] and await a
//! [`Completion`] (no runtime needed), the blocking forms stay for tests and tools.

mod counter;
pub mod disk;
mod hashing;
mod hybrid;
mod key;
mod memory;
mod object;
pub mod policy;
mod store;

pub use disk::{
    ChunkError, ChunkReader, ChunkedHit, Completion, DiskConfig, DiskStats, DiskStore, OpenError,
    RangeRead, RecoveryReport, StreamFill, StreamHead, StreamTap, TapError, TapReader, Written,
    DEFAULT_READ_THREADS, DEFAULT_SEGMENT_BYTES,
};
pub use hybrid::{HybridStats, HybridStore};
pub use key::CacheKey;
pub use memory::{
    default_shard_count, MemoryStore, MAX_OBJECT_SHARE, MAX_SHARDS, TARGET_SHARD_BYTES,
};
pub use object::{
    Derived, ObjectMeta, StoredObject, HEADER_OVERHEAD_BYTES, OBJECT_OVERHEAD_BYTES,
    TAG_OVERHEAD_BYTES,
};
pub use policy::{EvictionPolicy, InsertOutcome, PolicyKind, UnknownPolicy};
pub use store::{Admission, Store, StoreStats};

#[cfg(test)]
mod tests;
