//! outpost-http: the HTTP caching rules of a *shared* cache, pure and sans-IO.
//!
//! RFC 9111 (caching), RFC 9110 (conditionals, Range, Vary), RFC 5861
//! (stale-while-revalidate / stale-if-error), RFC 8246 (immutable), RFC 9211
//! (Cache-Status), RFC 9213 (CDN-Cache-Control) and Surrogate-Control. Every
//! function is synchronous and deterministic: the clock is always a parameter,
//! and every parser accepts arbitrary bytes without panicking.
//!
//! Typical flow for a response from upstream:
//! 1. [`cache_control::effective_response_cc`] → directives + [`CcSource`];
//! 2. [`storability::check_storable`] → store or a [`NotStorable`] reason;
//! 3. [`freshness::freshness_lifetime`] and [`freshness::corrected_initial_age`];
//! 4. [`headers::strip_before_store`] on the copy that is stored;
//! 5. on each later request, [`freshness::current_age`] and the reuse engine
//!    (`outpost_cache::decide::evaluate_reuse`), then [`conditional`] /
//!    [`range`] to shape the answer, with [`vary::variance_key`] selecting the
//!    variant.

pub mod cache_control;
pub mod cache_status;
pub mod conditional;
pub mod date;
pub mod freshness;
pub mod headers;
mod lex;
pub mod range;
pub mod storability;
pub mod vary;

#[cfg(test)]
mod test_util;

pub use cache_control::{CcSource, MaxStale, RequestCacheControl, ResponseCacheControl};
pub use cache_status::{CacheStatus, Fwd};
pub use freshness::Lifetime;
pub use lex::DELTA_SECONDS_MAX;
pub use range::{ByteRangeSpec, RangeDecision};
pub use storability::{NotStorable, SetCookiePolicy};
pub use vary::Vary;
