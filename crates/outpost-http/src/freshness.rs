//! Freshness and age (RFC 9111 §4.2) for a shared cache: the freshness lifetime
//! (s-maxage, max-age, Expires, heuristics), `Age` parsing and the age
//! calculation. The reuse decision built on them (fresh, stale serving under
//! RFC 5861, request directives) is `outpost_cache::decide::evaluate_reuse`,
//! the one engine the proxy runs. The clock is always passed in.

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::cache_control::{effective_source, ResponseCacheControl};
use crate::date::{header_date, parse_http_date, single_value, SingleValue};
use crate::lex::{self, DELTA_SECONDS_MAX};

/// How long a response is fresh for, and where that came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// From s-maxage, max-age or Expires (RFC 9111 §4.2.1).
    Explicit(Duration),
    /// Heuristic (RFC 9111 §4.2.2).
    Heuristic(Duration),
    /// No freshness information: stale on arrival.
    None,
}

impl Lifetime {
    /// The lifetime; `ZERO` for `None`.
    pub fn duration(&self) -> Duration {
        match self {
            Lifetime::Explicit(d) | Lifetime::Heuristic(d) => *d,
            Lifetime::None => Duration::ZERO,
        }
    }

    /// Stable name for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Lifetime::Explicit(_) => "explicit",
            Lifetime::Heuristic(_) => "heuristic",
            Lifetime::None => "none",
        }
    }
}

/// RFC 9111 §4.2.1 for a shared cache: s-maxage, max-age, Expires - Date (Date missing ⇒ response_time; invalid Expires ⇒ already expired),
/// then heuristic (10% of Date - Last-Modified, capped at `heuristic_cap`) only when the status is heuristically cacheable or `public` is present.
///
/// When a targeted field (CDN-Cache-Control / Surrogate-Control) governs the
/// response, `Expires` is ignored as RFC 9213 §2.1 requires; pass the `cc`
/// returned by [`crate::cache_control::effective_response_cc`].
/// Expires repeated with different values counts as invalid (§4.2.1).
pub fn freshness_lifetime(
    status: StatusCode,
    h: &HeaderMap,
    cc: &ResponseCacheControl,
    response_time: SystemTime,
    heuristic_cap: Duration,
) -> Lifetime {
    if let Some(s) = cc.s_maxage {
        return Lifetime::Explicit(Duration::from_secs(s));
    }
    if let Some(m) = cc.max_age {
        return Lifetime::Explicit(Duration::from_secs(m));
    }
    let targeted = effective_source(h).is_targeted();
    if !targeted {
        if let Some(expires) = single_value(h, &EXPIRES) {
            let expires = match expires {
                SingleValue::One(v) => parse_http_date(v),
                SingleValue::Conflicting => None,
            };
            // §5.3: an invalid Expires (e.g. "0") means "already expired".
            let Some(expires) = expires else {
                return Lifetime::Explicit(Duration::ZERO);
            };
            let date = header_date(h, &DATE).unwrap_or(response_time);
            let lifetime = expires.duration_since(date).unwrap_or(Duration::ZERO);
            return Lifetime::Explicit(cap_delta(lifetime));
        }
    }
    // §4.2.2: heuristics only for heuristically cacheable statuses or `public`.
    if !(is_heuristically_cacheable(status) || cc.public) {
        return Lifetime::None;
    }
    let Some(last_modified) = header_date(h, &LAST_MODIFIED) else {
        return Lifetime::None;
    };
    let date = header_date(h, &DATE).unwrap_or(response_time);
    let since = date.duration_since(last_modified).unwrap_or(Duration::ZERO);
    Lifetime::Heuristic((since / 10).min(heuristic_cap))
}

fn cap_delta(d: Duration) -> Duration {
    d.min(Duration::from_secs(DELTA_SECONDS_MAX))
}

/// The `Age` value of a response (RFC 9111 §5.1), in seconds.
///
/// `Age` is a singleton `delta-seconds`; it is valid only as exactly one field
/// line of digits. Anything else — non-numeric, negative, fractional, a list
/// (`0, 0`), repeated lines, parameters — is invalid freshness information and,
/// per §4.2.1 ("caches are encouraged to consider responses that have invalid
/// freshness information to be stale"), is read as 2^31 so the response is
/// stale. Absent ⇒ 0.
pub fn age_value(h: &HeaderMap) -> u64 {
    let mut it = h.get_all(AGE).iter();
    let Some(first) = it.next() else {
        return 0;
    };
    if it.next().is_some() {
        return DELTA_SECONDS_MAX;
    }
    lex::parse_delta_seconds(lex::trim_ows(first.as_bytes())).unwrap_or(DELTA_SECONDS_MAX)
}

/// RFC 9111 §4.2.3 corrected_initial_age (apparent_age, corrected_age_value with response_delay). Invalid/negative/repeated Age per §5.1 (use first valid value; invalid ⇒ ignore... read the RFC and pick).
///
/// Chosen: see [`age_value`] — an invalid `Age` makes the response stale. An
/// absent or invalid `Date` gives apparent_age 0 (Date taken as response_time).
pub fn corrected_initial_age(
    h: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let date = header_date(h, &DATE).unwrap_or(response_time);
    let apparent_age = response_time.duration_since(date).unwrap_or(Duration::ZERO);
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    let corrected_age_value = Duration::from_secs(age_value(h)).saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

/// current_age = corrected_initial_age + (now - response_time), saturating.
pub fn current_age(
    corrected_initial_age: Duration,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    let resident = now.duration_since(response_time).unwrap_or(Duration::ZERO);
    corrected_initial_age.saturating_add(resident)
}

/// The `Age` header for a response served from cache (RFC 9111 §5.1): whole
/// seconds, capped at 2^31.
pub fn age_header_value(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs().min(DELTA_SECONDS_MAX))
}

/// Remaining freshness in whole seconds (negative once stale), for the
/// Cache-Status `ttl` parameter (RFC 9211 §2.4).
pub fn ttl_secs(lifetime: Lifetime, age: Duration) -> i64 {
    let l = i64::try_from(lifetime.duration().as_secs()).unwrap_or(i64::MAX);
    let a = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
    l.saturating_sub(a)
}

/// 200 203 204 206 300 301 308 404 405 410 414 501 (RFC 9110 §15.1)
pub fn is_heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::cache_control::effective_response_cc;
    use std::time::UNIX_EPOCH;

    const T0: u64 = 1_700_000_000;
    const CAP: Duration = Duration::from_secs(86_400);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    use crate::test_util::headers;

    fn lifetime_of(status: u16, h: &HeaderMap) -> Lifetime {
        let (cc, _) = effective_response_cc(h);
        freshness_lifetime(StatusCode::from_u16(status).unwrap(), h, &cc, at(T0), CAP)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn lifetime_table() {
        let d0 = date(T0);
        let cases: Vec<(Vec<(&str, String)>, Lifetime)> = vec![
            (vec![], Lifetime::None),
            (
                vec![("cache-control", "max-age=3600".into())],
                Lifetime::Explicit(secs(3600)),
            ),
            (
                vec![("cache-control", "max-age=0".into())],
                Lifetime::Explicit(secs(0)),
            ),
            (
                vec![("cache-control", "max-age=3600, s-maxage=1".into())],
                Lifetime::Explicit(secs(1)),
            ),
            (
                vec![("cache-control", "max-age=1, s-maxage=3600".into())],
                Lifetime::Explicit(secs(3600)),
            ),
            (
                vec![
                    ("cache-control", "max-age=0, s-maxage=3600".into()),
                    ("expires", date(T0 - 10)),
                ],
                Lifetime::Explicit(secs(3600)),
            ),
            (
                vec![
                    ("cache-control", "max-age=3600".into()),
                    ("expires", date(T0 - 7200)),
                    ("date", d0.clone()),
                ],
                Lifetime::Explicit(secs(3600)),
            ),
            (
                vec![
                    ("cache-control", "max-age=3600".into()),
                    ("expires", "0".into()),
                ],
                Lifetime::Explicit(secs(3600)),
            ),
            (
                vec![
                    ("cache-control", "max-age=0".into()),
                    ("expires", date(T0 + 3600)),
                    ("date", d0.clone()),
                ],
                Lifetime::Explicit(secs(0)),
            ),
            (
                vec![("expires", date(T0 + 30 * 86_400)), ("date", d0.clone())],
                Lifetime::Explicit(secs(30 * 86_400)),
            ),
            (
                vec![("expires", date(T0 - 30 * 86_400)), ("date", d0.clone())],
                Lifetime::Explicit(secs(0)),
            ),
            (
                vec![("expires", "0".into()), ("date", d0.clone())],
                Lifetime::Explicit(secs(0)),
            ),
            // Expires older than Date (both in the future of the receipt).
            (
                vec![("expires", date(T0 + 300)), ("date", date(T0 + 400))],
                Lifetime::Explicit(secs(0)),
            ),
            // Invalid Date ⇒ response_time.
            (
                vec![("date", "foo".into()), ("expires", date(T0 + 10))],
                Lifetime::Explicit(secs(10)),
            ),
            // Missing Date ⇒ response_time.
            (
                vec![("expires", date(T0 + 10))],
                Lifetime::Explicit(secs(10)),
            ),
            // Conflicting Expires lines ⇒ invalid ⇒ expired.
            (
                vec![("expires", date(T0 + 10)), ("expires", date(T0 + 20))],
                Lifetime::Explicit(secs(0)),
            ),
            // Far future saturates at 2^31.
            (
                vec![
                    ("expires", "Fri, 31 Dec 9999 23:59:59 GMT".into()),
                    ("date", d0.clone()),
                ],
                Lifetime::Explicit(secs(DELTA_SECONDS_MAX)),
            ),
            // Heuristic: 10% of Date - Last-Modified.
            (
                vec![("last-modified", date(T0 - 100_000)), ("date", d0.clone())],
                Lifetime::Heuristic(secs(10_000)),
            ),
            // ... capped.
            (
                vec![
                    ("last-modified", date(T0 - 100 * 86_400)),
                    ("date", d0.clone()),
                ],
                Lifetime::Heuristic(CAP),
            ),
            // Last-Modified in the future ⇒ zero.
            (
                vec![("last-modified", date(T0 + 100)), ("date", d0.clone())],
                Lifetime::Heuristic(secs(0)),
            ),
            (vec![("last-modified", "garbage".into())], Lifetime::None),
        ];
        for (pairs, want) in cases {
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let h = headers(&refs);
            assert_eq!(lifetime_of(200, &h), want, "{pairs:?}");
        }
    }

    #[test]
    fn heuristic_status_rules() {
        let lm = date(T0 - 86_400);
        let d0 = date(T0);
        let h = headers(&[("last-modified", &lm), ("date", &d0)]);
        for s in [
            200u16, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501,
        ] {
            assert!(
                matches!(lifetime_of(s, &h), Lifetime::Heuristic(d) if d == secs(8640)),
                "{s}"
            );
        }
        for s in [
            201u16, 202, 302, 303, 307, 400, 403, 500, 502, 503, 504, 599,
        ] {
            assert_eq!(lifetime_of(s, &h), Lifetime::None, "{s}");
        }
        let h = headers(&[
            ("last-modified", &lm),
            ("date", &d0),
            ("cache-control", "public"),
        ]);
        assert_eq!(lifetime_of(599, &h), Lifetime::Heuristic(secs(8640)));
    }

    #[test]
    fn targeted_field_ignores_expires() {
        let d0 = date(T0);
        let future = date(T0 + 10_000);
        let h = headers(&[
            ("surrogate-control", "no-cache"),
            ("expires", &future),
            ("date", &d0),
        ]);
        assert_eq!(lifetime_of(200, &h), Lifetime::None);
        let h = headers(&[
            ("surrogate-control", "max-age=3600"),
            ("expires", &date(T0 - 10_000)),
        ]);
        assert_eq!(lifetime_of(200, &h), Lifetime::Explicit(secs(3600)));
        let h = headers(&[("surrogate-control", "max-age=0"), ("expires", &future)]);
        assert_eq!(lifetime_of(200, &h), Lifetime::Explicit(secs(0)));
    }

    #[test]
    fn age_values() {
        // http-cache-tests age-parse-*: anything but one line of digits is invalid ⇒ stale.
        let cases: &[(&[&str], u64)] = &[
            (&[], 0),
            (&["0"], 0),
            (&["7200"], 7200),
            (&[" 30 "], 30),
            (&["0030"], 30),
            (&["abc"], DELTA_SECONDS_MAX),
            (&["-7200"], DELTA_SECONDS_MAX),
            (&["7200.0"], DELTA_SECONDS_MAX),
            (&["7200,0"], DELTA_SECONDS_MAX),
            (&["0,7200"], DELTA_SECONDS_MAX),
            (&["0, 0"], DELTA_SECONDS_MAX),
            (&["3600, 3600"], DELTA_SECONDS_MAX),
            (&["7200", "0"], DELTA_SECONDS_MAX),
            (&["0", "7200"], DELTA_SECONDS_MAX),
            (&["0", "0"], DELTA_SECONDS_MAX),
            (&["7200;foo=bar"], DELTA_SECONDS_MAX),
            (&["7200;foo=111"], DELTA_SECONDS_MAX),
            (&[""], DELTA_SECONDS_MAX),
            (&["99999999999999999999"], DELTA_SECONDS_MAX),
        ];
        for (lines, want) in cases {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|v| ("age", *v)).collect();
            assert_eq!(age_value(&headers(&pairs)), *want, "{lines:?}");
        }
    }

    #[test]
    fn corrected_age() {
        let d = |n: u64| date(n);
        // No Age, Date == response_time, no delay.
        let h = headers(&[("date", &d(T0))]);
        assert_eq!(corrected_initial_age(&h, at(T0), at(T0)), secs(0));
        // Apparent age from a slow Date.
        let h = headers(&[("date", &d(T0 - 7200))]);
        assert_eq!(corrected_initial_age(&h, at(T0), at(T0)), secs(7200));
        // Date in the future ⇒ apparent age 0.
        let h = headers(&[("date", &d(T0 + 50))]);
        assert_eq!(corrected_initial_age(&h, at(T0), at(T0)), secs(0));
        // Age plus response delay.
        let h = headers(&[("date", &d(T0)), ("age", "30")]);
        assert_eq!(corrected_initial_age(&h, at(T0 - 2), at(T0)), secs(32));
        // max(apparent, corrected).
        let h = headers(&[("date", &d(T0 - 10)), ("age", "25")]);
        assert_eq!(corrected_initial_age(&h, at(T0), at(T0)), secs(25));
        // request_time after response_time (clock skew) ⇒ no delay.
        let h = headers(&[("age", "5")]);
        assert_eq!(corrected_initial_age(&h, at(T0 + 9), at(T0)), secs(5));
        // Invalid Age ⇒ stale.
        let h = headers(&[("age", "abc")]);
        assert_eq!(
            corrected_initial_age(&h, at(T0), at(T0)),
            secs(DELTA_SECONDS_MAX)
        );
        // Saturation.
        let h = headers(&[("age", "99999999999")]);
        let a = corrected_initial_age(&h, UNIX_EPOCH, at(u64::from(u32::MAX)));
        assert!(a >= secs(DELTA_SECONDS_MAX));
    }

    #[test]
    fn current_age_and_helpers() {
        assert_eq!(current_age(secs(30), at(T0), at(T0 + 3)), secs(33));
        assert_eq!(current_age(secs(30), at(T0), at(T0 - 3)), secs(30));
        assert_eq!(
            current_age(Duration::MAX, at(T0), at(T0 + 3)),
            Duration::MAX
        );
        assert_eq!(age_header_value(secs(42)), "42");
        assert_eq!(age_header_value(Duration::MAX), "2147483648");
        assert_eq!(ttl_secs(Lifetime::Explicit(secs(60)), secs(18)), 42);
        assert_eq!(ttl_secs(Lifetime::Explicit(secs(2)), secs(5)), -3);
        assert_eq!(ttl_secs(Lifetime::None, secs(5)), -5);
        assert_eq!(Lifetime::None.duration(), Duration::ZERO);
        assert_eq!(Lifetime::Heuristic(secs(3)).as_str(), "heuristic");
    }
}
