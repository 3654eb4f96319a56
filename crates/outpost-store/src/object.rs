//! The stored object ([`StoredObject`]) and its caching metadata ([`ObjectMeta`]), plus the weight
//! rule that charges an object against the byte budget.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Fixed bytes charged per object on top of body and headers: the shard map entry, the policy
/// node, the `Arc` and the metadata.
pub const OBJECT_OVERHEAD_BYTES: u64 = 256;
/// Bytes charged per header field on top of its name and value (the `HeaderMap` slot).
pub const HEADER_OVERHEAD_BYTES: u64 = 32;
/// Bytes charged per tag on top of its text.
pub const TAG_OVERHEAD_BYTES: u64 = 24;

/// A cached response: status, headers, the whole body, and metadata.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Response status.
    pub status: http::StatusCode,
    /// Response headers as stored.
    pub headers: http::HeaderMap,
    /// The complete body.
    pub body: bytes::Bytes,
    /// Caching metadata.
    pub meta: ObjectMeta,
}

/// Caching metadata of a [`StoredObject`].
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    /// When the request that produced this response was sent (RFC 9111 §4.2.3 `request_time`).
    pub request_time: SystemTime,
    /// When the response was received (RFC 9111 §4.2.3 `response_time`).
    pub response_time: SystemTime,
    /// RFC 9111 corrected_initial_age at store time.
    pub initial_age: Duration,
    /// Freshness lifetime.
    pub lifetime: Duration,
    /// After this instant the store may drop the object (fresh + stale-while-revalidate /
    /// stale-if-error / grace windows); set by the caller.
    pub keep_until: SystemTime,
    /// Surrogate-key / cache-tag values.
    pub tags: Vec<String>,
    /// For a primary-key "vary marker" entry: the request header names the response varies on
    /// (caller-defined semantics).
    pub vary: Option<Arc<[http::HeaderName]>>,
    /// Data the caller derived from this object to answer hits quickly (e.g. parsed directives,
    /// client-facing headers). In memory only: never persisted, rebuilt by the caller when absent.
    pub derived: Option<Derived>,
}

/// Opaque, caller-defined derived data attached to an object (see [`ObjectMeta::derived`]).
#[derive(Clone)]
pub struct Derived(pub Arc<dyn std::any::Any + Send + Sync>);

impl Derived {
    /// The data, if it is of type `T`.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived(..)")
    }
}

impl StoredObject {
    /// Bytes charged against the budget: body + headers (approximate) + tags + fixed overhead.
    pub fn weight(&self) -> u64 {
        let body = self.body.len() as u64;
        let headers: u64 = self
            .headers
            .iter()
            .map(|(name, value)| {
                name.as_str().len() as u64 + value.len() as u64 + HEADER_OVERHEAD_BYTES
            })
            .sum();
        let tags: u64 = self
            .meta
            .tags
            .iter()
            .map(|tag| tag.len() as u64 + TAG_OVERHEAD_BYTES)
            .sum();
        let vary: u64 = self.meta.vary.as_ref().map_or(0, |names| {
            names
                .iter()
                .map(|name| name.as_str().len() as u64 + HEADER_OVERHEAD_BYTES)
                .sum()
        });
        body.saturating_add(headers)
            .saturating_add(tags)
            .saturating_add(vary)
            .saturating_add(OBJECT_OVERHEAD_BYTES)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn weight_counts_body_headers_tags_and_overhead() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let obj = StoredObject {
            status: http::StatusCode::OK,
            headers,
            body: bytes::Bytes::from_static(b"hello"),
            meta: ObjectMeta {
                request_time: SystemTime::UNIX_EPOCH,
                response_time: SystemTime::UNIX_EPOCH,
                initial_age: Duration::ZERO,
                lifetime: Duration::from_secs(60),
                keep_until: SystemTime::UNIX_EPOCH,
                tags: vec!["abc".into()],
                vary: None,
                derived: None,
            },
        };
        let expected = 5
            + (12 + 10 + HEADER_OVERHEAD_BYTES)
            + (3 + TAG_OVERHEAD_BYTES)
            + OBJECT_OVERHEAD_BYTES;
        assert_eq!(obj.weight(), expected);
    }
}
