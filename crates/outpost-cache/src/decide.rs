//! The caching decisions of one request, as pure functions of (request, stored object, tenant
//! policy, now): may a stored response be served, must it be revalidated, may it be served stale on
//! error, and how long a new response is kept. The proxy performs I/O; every "whether" lives here.

use http::{HeaderMap, Method, StatusCode};
use outpost_http::cache_control::{effective_response_cc, CcSource, MaxStale, RequestCacheControl};
use outpost_http::freshness::{corrected_initial_age, current_age, freshness_lifetime, Lifetime};
use outpost_http::storability::{check_storable_with, NotStorable, SetCookiePolicy};
use std::time::{Duration, SystemTime};

/// Tenant (and rule) defaults that shape decisions where the origin is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantPolicy {
    /// TTL for negative responses (404, 410, …) that carry no freshness. Zero disables.
    pub negative_ttl: Duration,
    /// Serve stale for this long after expiry when the origin fails (tenant-level stale-if-error).
    pub grace: Duration,
    /// ± percent applied to lifetimes.
    pub jitter_percent: u8,
    /// Cap for heuristic freshness.
    pub heuristic_cap: Duration,
    /// A rule's TTL override for storable responses.
    pub ttl_override: Option<Duration>,
    /// How long a stale object with validators is kept for conditional revalidation.
    pub keep_for_revalidation: Duration,
    /// Whether responses carrying `Set-Cookie` may be stored.
    pub set_cookie: SetCookiePolicy,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            negative_ttl: Duration::from_secs(10),
            grace: Duration::ZERO,
            jitter_percent: 0,
            heuristic_cap: Duration::from_secs(86400),
            ttl_override: None,
            keep_for_revalidation: Duration::from_secs(3600),
            set_cookie: SetCookiePolicy::default(),
        }
    }
}

/// Statuses cached with the tenant's negative TTL when the origin gives no freshness.
pub fn is_negative(status: StatusCode) -> bool {
    matches!(status.as_u16(), 404 | 405 | 410 | 414 | 501)
}

/// The timing facts kept with a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredTiming {
    /// When the request that produced it was sent upstream.
    pub request_time: SystemTime,
    /// When its response head arrived.
    pub response_time: SystemTime,
    /// RFC 9111 §4.2.3 corrected initial age.
    pub initial_age: Duration,
    /// Freshness lifetime decided at store time (after overrides and jitter).
    pub lifetime: Duration,
}

/// What to do with a stored response for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitAction {
    /// Fresh enough: serve it.
    Serve,
    /// Stale but allowed (max-stale): serve it, no refresh.
    ServeStale,
    /// Stale within stale-while-revalidate: serve it and refresh in the background.
    ServeStaleAndRefresh,
    /// Must be validated upstream before use.
    Revalidate,
}

impl HitAction {
    /// Name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            HitAction::Serve => "hit",
            HitAction::ServeStale => "stale",
            HitAction::ServeStaleAndRefresh => "stale-while-revalidate",
            HitAction::Revalidate => "revalidate",
        }
    }
}

/// The evaluation of a stored response against a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HitEval {
    /// The action.
    pub action: HitAction,
    /// Current age (for the `Age` header).
    pub age: Duration,
    /// Remaining freshness in seconds (negative when stale), for `Cache-Status; ttl=`.
    pub ttl: i64,
    /// Whether, if revalidation fails (5xx, timeout, refused), the stale copy may be served.
    pub stale_on_error_ok: bool,
}

/// The response directives that decide reuse of a stored response, parsed once (at store time)
/// from its effective cache-control field (RFC 9213 targeted field first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReuseFacts {
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`: never serve it stale.
    pub no_stale: bool,
    /// Unqualified `no-cache`: validate before every reuse.
    pub always_revalidate: bool,
    /// `stale-while-revalidate` seconds.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` seconds.
    pub stale_if_error: Option<u64>,
    /// `immutable` (RFC 8246): while fresh, a client's reload (`no-cache`, `max-age`) does not
    /// make the cache revalidate it.
    pub immutable: bool,
}

impl ReuseFacts {
    /// Parse the facts from stored response headers.
    pub fn from_headers(stored: &HeaderMap) -> Self {
        let (cc, _src) = effective_response_cc(stored);
        ReuseFacts {
            no_stale: cc.forbids_stale(),
            always_revalidate: cc.requires_revalidation(),
            stale_while_revalidate: cc.stale_while_revalidate,
            stale_if_error: cc.stale_if_error,
            immutable: cc.immutable,
        }
    }
}

/// Decide how a stored response may satisfy a request (RFC 9111 §4, §4.2.4, §5.2; RFC 5861).
pub fn evaluate_hit(
    stored: &HeaderMap,
    timing: &StoredTiming,
    req: &RequestCacheControl,
    policy: &TenantPolicy,
    now: SystemTime,
) -> HitEval {
    evaluate_reuse(&ReuseFacts::from_headers(stored), timing, req, policy, now)
}

/// The one reuse engine: how a stored response (its parsed directives and timing) may satisfy a
/// request, in RFC order. The proxy reaches it through [`crate::flow::CacheFlow`].
///
/// 1. Unqualified response `no-cache` ⇒ validate before every reuse (RFC 9111 §5.2.2.4).
/// 2. Request `no-cache` (or `Pragma: no-cache`) and request `max-age` below the current age ⇒
///    validate (§5.2.1.4, §5.2.1.1), except that a *fresh* `immutable` response satisfies them
///    (RFC 8246 §2: a reload does not revalidate an immutable response while it is fresh; once
///    stale it is revalidated as usual, §2.1).
/// 3. Request `min-fresh` not met ⇒ validate (§5.2.1.3); a stale response never meets a
///    positive `min-fresh`.
/// 4. Fresh ⇒ serve.
/// 5. Stale: never served unvalidated when the response forbids it (`must-revalidate`,
///    `proxy-revalidate`, `s-maxage`, §4.2.4); else the client's `max-stale` (§5.2.1.2: stale by
///    *no more than* the value), then `stale-while-revalidate` (RFC 5861 §3: served "up to the
///    indicated number of seconds" after it became stale — the boundary is inclusive, like
///    `max-stale`).
/// 6. Otherwise validate. `stale_on_error_ok` says whether a failed validation may fall back to
///    the stale copy: within the largest of response `stale-if-error`, request `stale-if-error`
///    (RFC 5861 §4) and the tenant's grace, never when stale serving is forbidden or the request
///    says `no-store`.
pub fn evaluate_reuse(
    facts: &ReuseFacts,
    timing: &StoredTiming,
    req: &RequestCacheControl,
    policy: &TenantPolicy,
    now: SystemTime,
) -> HitEval {
    let age = current_age(timing.initial_age, timing.response_time, now);
    let lifetime = timing.lifetime;
    let ttl = duration_secs_i64(lifetime).saturating_sub(duration_secs_i64(age));
    let fresh = lifetime > age;
    let staleness = age.saturating_sub(lifetime);

    let no_stale = facts.no_stale;
    let sie_window = secs_opt(facts.stale_if_error)
        .max(policy.grace)
        .max(secs_opt(req.stale_if_error));
    let stale_on_error_ok = !no_stale && !req.no_store && staleness <= sie_window;

    let eval = |action| HitEval {
        action,
        age,
        ttl,
        stale_on_error_ok,
    };

    if facts.always_revalidate {
        return eval(HitAction::Revalidate);
    }
    let immutable_fresh = fresh && facts.immutable;
    if req.no_cache && !immutable_fresh {
        return eval(HitAction::Revalidate);
    }
    if let Some(max_age) = req.max_age {
        if age > Duration::from_secs(max_age) && !immutable_fresh {
            return eval(HitAction::Revalidate);
        }
    }
    if let Some(min_fresh) = req.min_fresh {
        if lifetime.saturating_sub(age) < Duration::from_secs(min_fresh) {
            return eval(HitAction::Revalidate);
        }
    }
    if fresh {
        return eval(HitAction::Serve);
    }
    if no_stale {
        return eval(HitAction::Revalidate);
    }
    match req.max_stale {
        Some(MaxStale::Any) => return eval(HitAction::ServeStale),
        Some(MaxStale::Seconds(s)) if staleness <= Duration::from_secs(s) => {
            return eval(HitAction::ServeStale)
        }
        _ => {}
    }
    if let Some(swr) = facts.stale_while_revalidate {
        if staleness <= Duration::from_secs(swr) {
            return eval(HitAction::ServeStaleAndRefresh);
        }
    }
    eval(HitAction::Revalidate)
}

fn secs_opt(s: Option<u64>) -> Duration {
    s.map(Duration::from_secs).unwrap_or(Duration::ZERO)
}

fn duration_secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// How a new response is to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePlan {
    /// Timing to keep with it.
    pub timing: StoredTiming,
    /// When the store may drop it (fresh + stale windows, or longer when it can be revalidated).
    pub keep_until: SystemTime,
    /// Which directive field set the policy.
    pub source: CcSource,
    /// Whether the lifetime came from the tenant's negative-caching default.
    pub negative: bool,
}

/// Decide whether and how to store an upstream response (RFC 9111 §3, §4.2.1, RFC 9213).
/// `jitter` is a uniform sample in [-1, 1] supplied by the caller.
#[allow(clippy::too_many_arguments)]
pub fn plan_store(
    method: &Method,
    req_headers: &HeaderMap,
    status: StatusCode,
    resp_headers: &HeaderMap,
    policy: &TenantPolicy,
    request_time: SystemTime,
    response_time: SystemTime,
    jitter: f64,
) -> Result<StorePlan, NotStorable> {
    let (cc, source) = effective_response_cc(resp_headers);
    let storable = check_storable_with(
        method,
        req_headers,
        status,
        resp_headers,
        &cc,
        source,
        policy.set_cookie,
    );
    let mut negative = false;
    let lifetime = match storable {
        Ok(()) => match freshness_lifetime(
            status,
            resp_headers,
            &cc,
            response_time,
            policy.heuristic_cap,
        ) {
            Lifetime::Explicit(d) => d,
            Lifetime::Heuristic(d) => {
                if is_negative(status) && d.is_zero() && !policy.negative_ttl.is_zero() {
                    negative = true;
                    policy.negative_ttl
                } else {
                    d
                }
            }
            Lifetime::None => {
                if is_negative(status) && !policy.negative_ttl.is_zero() {
                    negative = true;
                    policy.negative_ttl
                } else {
                    Duration::ZERO
                }
            }
        },
        Err(NotStorable::NoFreshness) if is_negative(status) && !policy.negative_ttl.is_zero() => {
            negative = true;
            policy.negative_ttl
        }
        Err(e) => return Err(e),
    };
    let lifetime = match policy.ttl_override {
        Some(t) if !negative => t,
        _ => lifetime,
    };
    let lifetime = apply_jitter(lifetime, policy.jitter_percent, jitter);
    let initial_age = corrected_initial_age(resp_headers, request_time, response_time);
    let has_validator = resp_headers.contains_key(http::header::ETAG)
        || resp_headers.contains_key(http::header::LAST_MODIFIED);
    let stale_window = Duration::from_secs(
        cc.stale_while_revalidate
            .unwrap_or(0)
            .max(cc.stale_if_error.unwrap_or(0)),
    )
    .max(policy.grace);
    if lifetime.is_zero() && stale_window.is_zero() && !has_validator {
        // Already stale and nothing to revalidate with: storing it would only waste space.
        return Err(NotStorable::NoFreshness);
    }
    // Stale objects stay (the byte budget still evicts them) so they can be revalidated with a
    // conditional request, served to `max-stale` requests, or served on origin errors.
    let keep_extra = stale_window.max(policy.keep_for_revalidation);
    let remaining = lifetime.saturating_sub(initial_age);
    let keep_until = response_time
        .checked_add(remaining.saturating_add(keep_extra))
        .unwrap_or(response_time);
    Ok(StorePlan {
        timing: StoredTiming {
            request_time,
            response_time,
            initial_age,
            lifetime,
        },
        keep_until,
        source,
        negative,
    })
}

fn apply_jitter(lifetime: Duration, percent: u8, jitter: f64) -> Duration {
    if percent == 0 || lifetime.is_zero() || !jitter.is_finite() {
        return lifetime;
    }
    let f = 1.0 + jitter.clamp(-1.0, 1.0) * f64::from(percent.min(100)) / 100.0;
    Duration::from_secs_f64((lifetime.as_secs_f64() * f).max(0.0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }
    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }
    fn date(t: SystemTime) -> String {
        httpdate::fmt_http_date(t)
    }

    fn plan(resp: &HeaderMap, status: u16) -> Result<StorePlan, NotStorable> {
        plan_store(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::from_u16(status).unwrap(),
            resp,
            &TenantPolicy::default(),
            t0(),
            t0(),
            0.0,
        )
    }

    fn eval(resp: &HeaderMap, req: &HeaderMap, after: u64) -> HitEval {
        let p = plan(resp, 200).unwrap();
        evaluate_hit(
            resp,
            &p.timing,
            &RequestCacheControl::from_headers(req),
            &TenantPolicy::default(),
            t0() + Duration::from_secs(after),
        )
    }

    #[test]
    fn fresh_then_stale() {
        let r = h(&[("cache-control", "max-age=10"), ("date", &date(t0()))]);
        assert_eq!(eval(&r, &HeaderMap::new(), 5).action, HitAction::Serve);
        assert_eq!(eval(&r, &HeaderMap::new(), 5).ttl, 5);
        assert_eq!(
            eval(&r, &HeaderMap::new(), 11).action,
            HitAction::Revalidate
        );
    }

    #[test]
    fn swr_and_sie_windows() {
        let r = h(&[
            (
                "cache-control",
                "max-age=5, stale-while-revalidate=30, stale-if-error=60",
            ),
            ("date", &date(t0())),
        ]);
        let e = eval(&r, &HeaderMap::new(), 20);
        assert_eq!(e.action, HitAction::ServeStaleAndRefresh);
        let e = eval(&r, &HeaderMap::new(), 50);
        assert_eq!(e.action, HitAction::Revalidate);
        assert!(e.stale_on_error_ok);
        let e = eval(&r, &HeaderMap::new(), 100);
        assert!(!e.stale_on_error_ok);
    }

    #[test]
    fn must_revalidate_forbids_stale() {
        let r = h(&[
            (
                "cache-control",
                "max-age=5, must-revalidate, stale-if-error=60",
            ),
            ("date", &date(t0())),
        ]);
        let e = eval(&r, &h(&[("cache-control", "max-stale")]), 10);
        assert_eq!(e.action, HitAction::Revalidate);
        assert!(!e.stale_on_error_ok);
    }

    #[test]
    fn request_directives() {
        let r = h(&[("cache-control", "max-age=100"), ("date", &date(t0()))]);
        assert_eq!(
            eval(&r, &h(&[("cache-control", "max-age=5")]), 10).action,
            HitAction::Revalidate
        );
        assert_eq!(
            eval(&r, &h(&[("cache-control", "no-cache")]), 1).action,
            HitAction::Revalidate
        );
        assert_eq!(
            eval(&r, &h(&[("pragma", "no-cache")]), 1).action,
            HitAction::Revalidate
        );
        assert_eq!(
            eval(&r, &h(&[("cache-control", "min-fresh=95")]), 10).action,
            HitAction::Revalidate
        );
        assert_eq!(
            eval(&r, &h(&[("cache-control", "max-stale=50")]), 120).action,
            HitAction::ServeStale
        );
        assert_eq!(
            eval(&r, &h(&[("cache-control", "max-stale=10")]), 120).action,
            HitAction::Revalidate
        );
    }

    #[test]
    fn no_cache_response_always_revalidates() {
        let r = h(&[
            ("cache-control", "no-cache"),
            ("etag", "\"a\""),
            ("date", &date(t0())),
        ]);
        let p = plan(&r, 200).unwrap();
        assert!(p.keep_until > t0());
        assert_eq!(eval(&r, &HeaderMap::new(), 0).action, HitAction::Revalidate);
    }

    #[test]
    fn negative_caching_default() {
        let r = h(&[("date", &date(t0()))]);
        let p = plan(&r, 404).unwrap();
        assert!(p.negative);
        assert_eq!(p.timing.lifetime, Duration::from_secs(10));
        // origin-provided freshness wins
        let r = h(&[("date", &date(t0())), ("cache-control", "max-age=3")]);
        let p = plan(&r, 404).unwrap();
        assert!(!p.negative);
        assert_eq!(p.timing.lifetime, Duration::from_secs(3));
        // 500 is never negatively cached
        assert!(plan(&h(&[("date", &date(t0()))]), 500).is_err());
    }

    #[test]
    fn targeted_cc_wins() {
        let r = h(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=60"),
            ("date", &date(t0())),
        ]);
        let p = plan(&r, 200).unwrap();
        assert_eq!(p.timing.lifetime, Duration::from_secs(60));
        assert_eq!(p.source, CcSource::CdnCacheControl);
    }

    #[test]
    fn not_storable_reasons() {
        assert_eq!(
            plan(&h(&[("cache-control", "no-store")]), 200),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            plan(&h(&[("cache-control", "private, max-age=9")]), 200),
            Err(NotStorable::Private)
        );
    }

    #[test]
    fn set_cookie_policy() {
        let r = h(&[
            ("cache-control", "max-age=60"),
            ("set-cookie", "s=1"),
            ("date", &date(t0())),
        ]);
        let rfc = TenantPolicy {
            set_cookie: SetCookiePolicy::Store,
            ..TenantPolicy::default()
        };
        let stored = plan_store(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &r,
            &rfc,
            t0(),
            t0(),
            0.0,
        );
        assert!(stored.is_ok(), "the RFC 9111 mode stores it");
        let strict = TenantPolicy::default();
        let p = plan_store(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &r,
            &strict,
            t0(),
            t0(),
            0.0,
        );
        assert_eq!(p, Err(NotStorable::SetCookie));
        let r2 = h(&[
            ("cache-control", "public, max-age=60"),
            ("set-cookie", "s=1"),
            ("date", &date(t0())),
        ]);
        let p = plan_store(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &r2,
            &strict,
            t0(),
            t0(),
            0.0,
        );
        assert!(p.is_ok());
    }

    #[test]
    fn jitter_bounds() {
        let l = Duration::from_secs(100);
        assert_eq!(apply_jitter(l, 10, 1.0), Duration::from_secs(110));
        assert_eq!(apply_jitter(l, 10, -1.0), Duration::from_secs(90));
        assert_eq!(apply_jitter(l, 0, 1.0), l);
        assert_eq!(apply_jitter(l, 10, f64::NAN), l);
    }

    #[test]
    fn age_header_counts() {
        let r = h(&[
            ("cache-control", "max-age=10"),
            ("age", "8"),
            ("date", &date(t0())),
        ]);
        let e = eval(&r, &HeaderMap::new(), 1);
        assert_eq!(e.age, Duration::from_secs(9));
        assert_eq!(e.action, HitAction::Serve);
        assert_eq!(eval(&r, &HeaderMap::new(), 3).action, HitAction::Revalidate);
    }
}
