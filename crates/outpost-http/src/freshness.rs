//! Freshness and age (RFC 9111 §4.2) for a shared cache: the freshness lifetime
//! (s-maxage, max-age, Expires, heuristics), `Age` parsing and the age
//! calculation. The reuse decision built on them (fresh, stale serving under
//! RFC 5861, request directives) is `outpost_cache::decide::evaluate_reuse`,
//! the one engine the proxy runs. The clock is always passed in.

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::cache_control::{effective_source, ResponseCacheControl};
use crate::date::{header_date, parse_http_date_strict, single_value, SingleValue};
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
            // RFC 9111 §5.3 + §4.2: only a grammatical HTTP-date counts (case-insensitive
            // names, GMT only); anything else is already expired.
            let expires = match expires {
                SingleValue::One(v) => parse_http_date_strict(v, response_time),
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
/// §5.1: "a cache encountering a message with a list-based Age field value SHOULD use the
/// first member of the field value, discarding subsequent ones. If the field value (after
/// discarding additional members ...) is invalid (e.g., it contains something other than a
/// non-negative integer), a cache SHOULD ignore the field." Repeated field lines are one
/// comma-joined value (RFC 9110 §5.3), and empty list elements do not count (§5.6.1), so the
/// first member is the first non-empty member of the first line that has one. An ignored field
/// is "not available": age_value 0 (§4.2.3); a Date still gives the apparent age. Values too
/// large saturate at 2^31 (§1.2.2). The older suite's expectation that an invalid or list-valued
/// Age makes the response stale is RFC 7234 era (docs/behaviour.md).
pub fn age_value(h: &HeaderMap) -> u64 {
    h.get_all(AGE)
        .iter()
        .find_map(|v| lex::split_list(v.as_bytes()).into_iter().next())
        .and_then(lex::parse_delta_seconds)
        .unwrap_or(0)
}

/// RFC 9111 §4.2.3 `corrected_initial_age`: the larger of the apparent age (`response_time -
/// Date`, 0 when Date is absent, invalid or in the future) and the corrected Age value (Age, see
/// [`age_value`], plus the response delay).
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
        // RFC 9111 §5.1: a list uses its first member; an invalid value is ignored (0).
        let cases: &[(&[&str], u64)] = &[
            (&[], 0),
            (&["0"], 0),
            (&["7200"], 7200),
            (&[" 30 "], 30),
            (&["0030"], 30),
            (&["abc"], 0),
            (&["-7200"], 0),
            (&["7200.0"], 0),
            (&["7200,0"], 7200),
            (&["0,7200"], 0),
            (&["0, 0"], 0),
            (&["3600, 3600"], 3600),
            (&[", 5"], 5),
            (&["7200", "0"], 7200),
            (&["0", "7200"], 0),
            (&["", "30"], 30),
            (&["0", "0"], 0),
            (&["7200;foo=bar"], 0),
            (&["7200;foo=111"], 0),
            (&["\"7200\""], 0),
            (&[""], 0),
            (&["99999999999999999999"], DELTA_SECONDS_MAX),
            (&["2147483649"], DELTA_SECONDS_MAX),
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
        // Invalid Age ⇒ ignored; the Date still counts.
        let h = headers(&[("age", "abc")]);
        assert_eq!(corrected_initial_age(&h, at(T0), at(T0)), secs(0));
        let h = headers(&[("age", "-7200"), ("date", &d(T0 - 60))]);
        assert_eq!(corrected_initial_age(&h, at(T0), at(T0)), secs(60));
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
