//! outpost-store: the storage engine. Today the RAM tier: [`MemoryStore`] behind the [`Store`]
//! trait, with byte-weighted, scan-resistant admission and eviction ([`policy`]: W-TinyLFU by
//! default, S3-FIFO, LRU). Pure and synchronous: no network, no clock reads (`now` is passed in).

mod hashing;
mod key;
mod memory;
mod object;
pub mod policy;
mod store;

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
