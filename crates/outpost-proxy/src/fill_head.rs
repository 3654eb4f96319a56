//! What a fill publishes to its followers ([`FillHead`]): the response head in stored form, its
//! timing, Vary, tags, and, for a fill streamed onto SSD, the stream readers follow and the offset
//! from which the fill registry holds the body after an SSD write failed.

use http::header::HeaderName;
use http::{HeaderMap, StatusCode};
use outpost_cache::StoredTiming;
use outpost_http::freshness::current_age;
use outpost_store::StreamTap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Spill offset meaning "not spilled".
const NOT_SPILLED: u64 = u64::MAX;

/// What a fill publishes to its followers: everything needed to answer from it.
pub struct FillHead {
    status: StatusCode,
    headers: HeaderMap,
    timing: StoredTiming,
    /// Vary fields and the leader's variance key, when the response varies.
    vary: Option<(Arc<[HeaderName]>, String)>,
    content_length: Option<u64>,
    /// Tenant-namespaced surrogate-key tags (a tag purge matches in-flight fills by them).
    tags: Vec<String>,
    /// When the body streams onto SSD: followers read it there as it is written, and the fill
    /// registry holds no copy of it (until a failed SSD write spills the rest there).
    tap: Option<StreamTap>,
    /// Body offset from which the registry holds the body, after an SSD write failed.
    spilled_from: AtomicU64,
}

impl FillHead {
    /// A head for a response about to be filled.
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        timing: StoredTiming,
        vary: Option<(Arc<[HeaderName]>, String)>,
        content_length: Option<u64>,
        tags: Vec<String>,
        tap: Option<StreamTap>,
    ) -> Self {
        Self {
            status,
            headers,
            timing,
            vary,
            content_length,
            tags,
            tap,
            spilled_from: AtomicU64::new(NOT_SPILLED),
        }
    }

    /// Response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// Headers in stored form.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    /// Timing for freshness and age.
    pub fn timing(&self) -> &StoredTiming {
        &self.timing
    }
    /// Current age of the response (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        current_age(self.timing.initial_age, self.timing.response_time, now)
    }
    /// Vary fields and the leader's variance key.
    pub fn vary(&self) -> Option<&(Arc<[HeaderName]>, String)> {
        self.vary.as_ref()
    }
    /// Declared body length.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }
    /// Tenant-namespaced tags.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }
    /// The SSD stream followers read, when the fill streams there.
    pub fn tap(&self) -> Option<&StreamTap> {
        self.tap.as_ref()
    }
    /// The SSD stream failed at body offset `at`: from here on the fill registry holds the body
    /// (set before the first spilled chunk is pushed, so a reader that sees one sees this).
    pub(crate) fn mark_spilled(&self, at: u64) {
        self.spilled_from.store(at, Ordering::Release);
    }

    /// The body offset from which the fill registry holds the body, once an SSD write failed.
    pub fn spilled_from(&self) -> Option<u64> {
        match self.spilled_from.load(Ordering::Acquire) {
            NOT_SPILLED => None,
            n => Some(n),
        }
    }
}
