//! Stored objects as the request path sees them: finding the object for a request (through a
//! Vary marker to the variant for the request's variance), building an object to store (timing,
//! namespaced surrogate-key tags, the derived hit template), storing a variant under its marker,
//! and removing an object with its variants. The store itself is `outpost_store`.
//!
//! A response with `Vary` is stored under `primary#vary:<variance>`, and the primary key holds a
//! *marker*: an object whose `meta.vary` lists the Vary fields and whose body lists the variance
//! keys it knows, newest last, so a per-URL cap evicts the oldest variant.
//!
//! Store reads are awaited (they may read SSD on the store's I/O threads). Writes are only
//! *submitted* by the functions that store or remove (they run in submission order on the
//! store's append thread), so they can be called under the purge log's lock: what they read is
//! read beforehand ([`vary_marker`], the primary object for a variant) and passed in.

use crate::purge_log::tag_key;
use crate::Node;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use outpost_cache::{ReuseFacts, Stored, StoredTiming};
use outpost_http::cache_status::upstream_members;
use outpost_http::vary;
use outpost_store::{Admission, CacheKey, Completion, Derived, ObjectMeta, StoredObject};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Separates a primary key from its variance key in the store.
const VARIANT_SEP: &str = "#vary:";

pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// What a lookup found for a request.
pub struct Found {
    /// The key looked up last (the variant key when the primary holds a marker).
    pub key: CacheKey,
    /// Whether a Vary marker was followed (a miss is then a `vary-miss`).
    pub via_marker: bool,
    /// The object, when one is stored there.
    pub object: Option<Arc<StoredObject>>,
}

/// The key to look up and what the store holds for it: the primary key's object, or, when a
/// Vary marker is stored there, the variant for this request's variance and its object.
pub async fn lookup(node: &Node, primary: &CacheKey, req: &HeaderMap, now: SystemTime) -> Found {
    match node.store.get_async(primary, now).await {
        Some(obj) => match &obj.meta.vary {
            Some(fields) => {
                let key = variant_key(primary, &vary::variance_key(fields, req));
                let object = node.store.get_async(&key, now).await;
                Found {
                    key,
                    via_marker: true,
                    object,
                }
            }
            None => Found {
                key: primary.clone(),
                via_marker: false,
                object: Some(obj),
            },
        },
        None => Found {
            key: primary.clone(),
            via_marker: false,
            object: None,
        },
    }
}

/// A stored object as the cache flow sees it: its reuse facts (from the hit template when it has
/// one, parsed otherwise) and timing.
pub fn as_stored(object: Arc<StoredObject>) -> Stored<Arc<StoredObject>> {
    let (facts, timing) = reuse_facts(&object.meta, &object.headers);
    Stored {
        object,
        facts,
        timing,
    }
}

/// The reuse facts and timing of a stored object's head.
pub fn reuse_facts(meta: &ObjectMeta, headers: &HeaderMap) -> (ReuseFacts, StoredTiming) {
    let facts = match template_of(meta) {
        Some(t) => t.reuse,
        None => ReuseFacts::from_headers(headers),
    };
    (facts, timing(meta))
}

/// What a hit needs from a stored object, derived once when it is stored: the parsed reuse
/// directives and the headers a plain GET of it gets (client copy, Content-Length, Accept-Ranges).
pub struct HitTemplate {
    pub(crate) reuse: ReuseFacts,
    /// Client headers, ending with `Age` and `Cache-Status` placeholders that a hit overwrites in
    /// place (so the clone never grows).
    pub(crate) headers: HeaderMap,
    /// `Cache-Status` members the stored response brought from upstream tiers, joined.
    pub(crate) upstream_status: Vec<u8>,
}

/// Build the derived hit data for an object about to be stored.
pub(crate) fn derive_hit(status: StatusCode, stored: &HeaderMap, body_len: usize) -> Derived {
    let mut headers = client_copy(stored);
    let upstream_status = upstream_members(&headers);
    headers.remove(&CACHE_STATUS);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if status == StatusCode::OK {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    headers.insert(header::AGE, HeaderValue::from_static("0"));
    headers.insert(CACHE_STATUS.clone(), HeaderValue::from_static(""));
    Derived(Arc::new(HitTemplate {
        reuse: ReuseFacts::from_headers(stored),
        headers,
        upstream_status,
    }))
}

/// The hit template of an object, when it has one.
pub(crate) fn template_of(meta: &ObjectMeta) -> Option<&HitTemplate> {
    meta.derived.as_ref().and_then(|d| d.get::<HitTemplate>())
}

/// The client-facing copy of *stored* headers (already free of hop-by-hop fields): one pass that
/// leaves out fields addressed to this cache only (surrogate keys, Surrogate-Control and the
/// Outpost-targeted cache-control field). `CDN-Cache-Control` is kept, so a CDN behind this one
/// in a multi-CDN chain can use it (RFC 9213 §2.1).
pub(crate) fn client_copy(stored: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(stored.len() + 4);
    for (name, value) in stored {
        if name == SURROGATE_KEY || name == CACHE_TAG || outpost_http::cache_control::is_ours(name)
        {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    h
}

/// Copy the surrogate keys of `stored` into `to` (a response to another tier of this CDN, which
/// stores the object and must be able to purge it by tag).
pub(crate) fn copy_tags(stored: &HeaderMap, to: &mut HeaderMap) {
    for name in [&SURROGATE_KEY, &CACHE_TAG] {
        for v in stored.get_all(name) {
            to.append(name.clone(), v.clone());
        }
    }
}

/// Remove from a client-bound response what only this cache may see (hop-by-hop fields,
/// surrogate keys, fields targeted at this cache).
pub(crate) fn strip_for_client(h: &mut HeaderMap) {
    outpost_http::headers::strip_hop_by_hop(h);
    outpost_http::cache_control::strip_ours(h);
    h.remove(&SURROGATE_KEY);
    h.remove(&CACHE_TAG);
}

/// Metadata of a response about to be stored: timing, expiry, tenant-namespaced tags.
pub(crate) fn stored_meta(
    tenant: &str,
    headers: &HeaderMap,
    timing: &StoredTiming,
    keep_until: SystemTime,
    derived: Option<Derived>,
) -> ObjectMeta {
    ObjectMeta {
        request_time: timing.request_time,
        response_time: timing.response_time,
        initial_age: timing.initial_age,
        lifetime: timing.lifetime,
        keep_until,
        tags: tags_of(tenant, headers),
        vary: None,
        derived,
    }
}

/// A response object ready for the store: its timing, tags and derived hit template.
pub(crate) fn cacheable_object(
    tenant: &str,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    timing: &StoredTiming,
    keep_until: SystemTime,
) -> StoredObject {
    let derived = Some(derive_hit(status, &headers, body.len()));
    let meta = stored_meta(tenant, &headers, timing, keep_until, derived);
    StoredObject {
        status,
        headers,
        body,
        meta,
    }
}

/// Store one variant under its variance key and record it in the primary key's Vary marker.
/// `old` is what the primary key held, read beforehand. Submits the writes; the completion is
/// the variant's insert (the last of them).
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_variant(
    node: &Node,
    max_variants: usize,
    primary: &CacheKey,
    fields: &Arc<[HeaderName]>,
    variance: &str,
    obj: Arc<StoredObject>,
    keep_until: SystemTime,
    now: SystemTime,
    old: Option<&StoredObject>,
) -> Completion<Admission> {
    let mut list: Vec<String> = Vec::new();
    let mut marker_keep = keep_until;
    if let Some(old) = old {
        match &old.meta.vary {
            Some(old_fields) if old_fields[..] == fields[..] => {
                list = String::from_utf8_lossy(&old.body)
                    .lines()
                    .map(str::to_string)
                    .collect();
                marker_keep = marker_keep.max(old.meta.keep_until);
            }
            // Another marker (other fields: its variants go) or a plain object.
            Some(_) => drop(remove_listed(node, primary, Some(old))),
            None => drop(remove_listed(node, primary, None)),
        }
    }
    list.retain(|v| v != variance);
    list.push(variance.to_string());
    while list.len() > max_variants {
        let oldest = list.remove(0);
        drop(node.store.remove_async(&variant_key(primary, &oldest)));
    }
    let marker = Arc::new(StoredObject {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from(list.join("\n")),
        meta: ObjectMeta {
            request_time: now,
            response_time: now,
            initial_age: Duration::ZERO,
            lifetime: Duration::ZERO,
            keep_until: marker_keep,
            tags: Vec::new(),
            vary: Some(fields.clone()),
            derived: None,
        },
    });
    drop(node.store.insert_async(primary.clone(), marker, now));
    node.store
        .insert_async(variant_key(primary, variance), obj, now)
}

/// Store a non-variant object under its primary key, replacing the Vary marker `marker` (and
/// its variants) read there beforehand. Submits the writes; the completion is the insert's.
pub(crate) fn store_primary(
    node: &Node,
    key: CacheKey,
    obj: Arc<StoredObject>,
    now: SystemTime,
    marker: Option<&StoredObject>,
) -> Completion<Admission> {
    if marker.is_some() {
        drop(remove_listed(node, &key, marker));
    }
    node.store.insert_async(key, obj, now)
}

/// Remove a primary key and, when it is a Vary marker, every variant it lists; returns how many
/// objects went. (A replacement, not a purge: purges go through `purge::apply`.)
pub(crate) async fn remove_with_variants(node: &Node, primary: &CacheKey) -> usize {
    let marker = vary_marker(node, primary, SystemTime::UNIX_EPOCH).await;
    let mut n = 0;
    for removed in remove_listed(node, primary, marker.as_deref()) {
        n += usize::from(removed.await);
    }
    n
}

/// Submits the removal of `primary` and of every variant `marker` (the Vary marker read there
/// beforehand, if any) lists, in that order; the completions say whether each was stored.
pub(crate) fn remove_listed(
    node: &Node,
    primary: &CacheKey,
    marker: Option<&StoredObject>,
) -> Vec<Completion<bool>> {
    let mut out = Vec::new();
    if let Some(marker) = marker.filter(|m| m.meta.vary.is_some()) {
        for v in String::from_utf8_lossy(&marker.body).lines() {
            out.push(node.store.remove_async(&variant_key(primary, v)));
        }
    }
    out.push(node.store.remove_async(primary));
    node.fills.clear_pass(primary);
    out
}

/// The key of one variant of `primary`.
pub(crate) fn variant_key(primary: &CacheKey, variance: &str) -> CacheKey {
    CacheKey::new(format!("{}{VARIANT_SEP}{variance}", primary.text()))
}

/// The Vary marker stored under `primary`, if that is what is stored there. An object on SSD is
/// identified by its head alone (a large one is never read just to find it is not a marker).
pub(crate) async fn vary_marker(
    node: &Node,
    primary: &CacheKey,
    now: SystemTime,
) -> Option<Arc<StoredObject>> {
    if let Some(head) = node.store.get_chunked_async(primary, 0, now).await {
        // Not a marker: nothing more to read.
        head.meta.vary.as_ref()?;
    }
    node.store
        .get_async(primary, now)
        .await
        .filter(|o| o.meta.vary.is_some())
}

/// The timing kept with a stored object.
pub(crate) fn timing(m: &ObjectMeta) -> StoredTiming {
    StoredTiming {
        request_time: m.request_time,
        response_time: m.response_time,
        initial_age: m.initial_age,
        lifetime: m.lifetime,
    }
}

/// `Surrogate-Key` (space-separated) and `Cache-Tag` (comma-separated) values, namespaced by
/// tenant ([`tag_key`]) so that one tenant's tag purge never reaches another's objects.
pub(crate) fn tags_of(tenant: &str, h: &HeaderMap) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for v in h
        .get_all(&SURROGATE_KEY)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        tags.extend(v.split_ascii_whitespace().map(|t| tag_key(tenant, t)));
    }
    for v in h.get_all(&CACHE_TAG).iter().filter_map(|v| v.to_str().ok()) {
        tags.extend(
            v.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| tag_key(tenant, t)),
        );
    }
    tags.sort();
    tags.dedup();
    tags
}

/// A uniform sample in [-1, 1] for TTL jitter, derived from the key alone: the same key gets the
/// same jitter on every node and every fill (no wall clock, no RNG), and different keys spread.
pub(crate) fn jitter_sample(key: &CacheKey) -> f64 {
    let mut x = key.hash64() ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x as f64 / u64::MAX as f64) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tags_parse_both_conventions_namespaced() {
        let mut h = HeaderMap::new();
        h.insert("surrogate-key", HeaderValue::from_static("page  home"));
        h.insert("cache-tag", HeaderValue::from_static("a, b,,home"));
        assert_eq!(tags_of("t", &h), vec!["t|a", "t|b", "t|home", "t|page"]);
    }

    #[test]
    fn jitter_is_a_function_of_the_key() {
        let k = CacheKey::new("t|h/x|");
        let j = jitter_sample(&k);
        assert!((-1.0..=1.0).contains(&j));
        assert_eq!(j, jitter_sample(&CacheKey::new("t|h/x|")));
        let spread: Vec<f64> = (0..200)
            .map(|i| jitter_sample(&CacheKey::new(format!("t|h/{i}|"))))
            .collect();
        assert!(spread.iter().all(|j| (-1.0..=1.0).contains(j)));
        assert!(spread.iter().any(|j| *j < -0.5) && spread.iter().any(|j| *j > 0.5));
    }
}
