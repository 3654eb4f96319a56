//! Fuzz HTTP-date parsing (outpost_http::date) and the Expires freshness built on it.
//!
//! Input: byte 0 picks "now" (a year between 1970 and 2225 for the rfc850 two-digit-year rule),
//! the rest is the field value. Checks:
//! - neither parser panics, and both are deterministic;
//! - the strict parser accepts only the three fixed layouts (29 bytes IMF, 24 bytes asctime, or
//!   a long day name followed by 23 bytes of rfc850), and where it accepts an IMF or asctime
//!   date the lenient parser reads the same instant;
//! - a strictly valid date re-formatted as IMF-fixdate parses back to the same instant;
//! - an `Expires` the strict parser refuses gives a zero freshness lifetime (already expired).
#![no_main]

use http::header::{DATE, EXPIRES};
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use outpost_http::cache_control::ResponseCacheControl;
use outpost_http::date::{parse_http_date, parse_http_date_strict};
use outpost_http::freshness::{freshness_lifetime, Lifetime};
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let Some((&b, v)) = data.split_first() else {
        return;
    };
    let now = UNIX_EPOCH + Duration::from_secs(u64::from(b) * 365 * 86_400);
    let strict = parse_http_date_strict(v, now);
    assert_eq!(strict, parse_http_date_strict(v, now), "strict not deterministic");
    let lenient = parse_http_date(v);
    assert_eq!(lenient, parse_http_date(v), "lenient not deterministic");
    if let Some(t) = strict {
        let imf_or_asctime = v.len() == 29 || v.len() == 24;
        let long_name = v.iter().position(|&c| c == b',').is_some_and(|i| v.len() == i + 24);
        assert!(imf_or_asctime || long_name, "strict accepted an odd layout: {v:?}");
        if imf_or_asctime {
            assert_eq!(lenient, Some(t), "lenient disagrees on {:?}", String::from_utf8_lossy(v));
        }
        if t >= UNIX_EPOCH {
            let again = httpdate::fmt_http_date(t);
            assert_eq!(parse_http_date_strict(again.as_bytes(), now), Some(t), "{again}");
        }
    }
    let Ok(value) = HeaderValue::from_bytes(v) else {
        return;
    };
    let mut h = HeaderMap::new();
    h.insert(EXPIRES, value);
    h.insert(DATE, HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
    let life = freshness_lifetime(
        StatusCode::OK,
        &h,
        &ResponseCacheControl::default(),
        now,
        Duration::from_secs(86_400),
    );
    if strict.is_none() {
        assert_eq!(life, Lifetime::Explicit(Duration::ZERO), "invalid Expires must be expired");
    }
});
