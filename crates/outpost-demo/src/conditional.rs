//! Conditional requests and byte ranges for the demo origin: `If-None-Match` / `If-Modified-Since`
//! evaluation (RFC 9110 §13) and single-range `Range` / `If-Range` handling (RFC 9110 §14).
//!
//! Only what an origin needs to exercise a CDN: one range per request (a multi-range request gets the
//! full representation, which RFC 9110 §14.2 allows).

use std::time::SystemTime;

use http::HeaderMap;

/// Strips the weak prefix of an entity tag, for weak comparison (RFC 9110 §8.8.3.2).
fn opaque(tag: &str) -> &str {
    tag.trim().strip_prefix("W/").unwrap_or(tag.trim())
}

/// True when `If-None-Match` (RFC 9110 §13.1.2, weak comparison) matches `etag`.
pub fn none_match(header: &str, etag: &str) -> bool {
    let want = opaque(etag);
    header.split(',').any(|candidate| {
        let candidate = candidate.trim();
        candidate == "*" || (!candidate.is_empty() && opaque(candidate) == want)
    })
}

/// Whether a GET/HEAD should be answered 304 (RFC 9110 §13.2.2: If-None-Match takes precedence over
/// If-Modified-Since, which is only evaluated when If-None-Match is absent).
pub fn not_modified(
    headers: &HeaderMap,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> bool {
    if let Some(inm) = headers.get(http::header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else { return false };
        return etag.is_some_and(|etag| none_match(inm, etag));
    }
    let (Some(ims), Some(lm)) = (headers.get(http::header::IF_MODIFIED_SINCE), last_modified)
    else {
        return false;
    };
    let Some(ims) = ims
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    // Compare at the one-second resolution of HTTP-date.
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    secs(lm) <= secs(ims)
}

/// Outcome of evaluating `Range` against a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No (usable) range: send the whole representation with 200.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial { start: u64, end: u64 },
    /// The range cannot be satisfied: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Evaluates `Range` (and `If-Range`, RFC 9110 §13.1.5, strong comparison) for a GET.
pub fn evaluate_range(
    headers: &HeaderMap,
    len: u64,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> RangeOutcome {
    let Some(range) = headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return RangeOutcome::Full;
    };
    if let Some(if_range) = headers.get(http::header::IF_RANGE) {
        let Ok(if_range) = if_range.to_str() else {
            return RangeOutcome::Full;
        };
        let if_range = if_range.trim();
        let fresh = if if_range.starts_with('"') {
            etag.is_some_and(|e| !e.starts_with("W/") && e == if_range)
        } else {
            match (httpdate::parse_http_date(if_range), last_modified) {
                (Ok(date), Some(lm)) => {
                    httpdate::fmt_http_date(date) == httpdate::fmt_http_date(lm)
                }
                _ => false,
            }
        };
        if !fresh {
            return RangeOutcome::Full;
        }
    }
    parse_range(range, len)
}

/// Parses a `Range: bytes=...` value with exactly one range spec (RFC 9110 §14.1.1).
pub fn parse_range(value: &str, len: u64) -> RangeOutcome {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeOutcome::Full; // unknown unit: ignore
    };
    if spec.contains(',') {
        return RangeOutcome::Full; // multiple ranges: serving the whole thing is allowed
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeOutcome::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        if !digits(last) {
            return RangeOutcome::Full;
        }
        let Ok(n) = last.parse::<u64>() else {
            return RangeOutcome::Full;
        };
        if n == 0 || len == 0 {
            return RangeOutcome::Unsatisfiable;
        }
        let n = n.min(len);
        return RangeOutcome::Partial {
            start: len - n,
            end: len - 1,
        };
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return RangeOutcome::Full;
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeOutcome::Full;
    };
    let end = if last.is_empty() {
        len.saturating_sub(1)
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end.min(len.saturating_sub(1)),
            Ok(_) => return RangeOutcome::Full, // invalid (last < first): ignore the header
            Err(_) => len.saturating_sub(1),    // absurdly large: to the end
        }
    };
    if start >= len {
        return RangeOutcome::Unsatisfiable;
    }
    RangeOutcome::Partial { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_uses_weak_comparison() {
        assert!(none_match("\"a\"", "\"a\""));
        assert!(none_match("W/\"a\"", "\"a\""));
        assert!(none_match("\"x\", W/\"a\"", "W/\"a\""));
        assert!(none_match("*", "\"a\""));
        assert!(!none_match("\"b\"", "\"a\""));
        assert!(!none_match("", "\"a\""));
    }

    #[test]
    fn ranges() {
        use RangeOutcome::*;
        assert_eq!(parse_range("bytes=0-9", 100), Partial { start: 0, end: 9 });
        assert_eq!(
            parse_range("bytes=90-", 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=90-500", 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-1000", 100),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range("items=0-1", 100), Full);
        assert_eq!(parse_range("bytes=a-b", 100), Full);
        assert_eq!(parse_range("bytes=+1-2", 100), Full);
    }

    #[test]
    fn if_range_requires_a_strong_match() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::RANGE,
            http::HeaderValue::from_static("bytes=0-0"),
        );
        h.insert(
            http::header::IF_RANGE,
            http::HeaderValue::from_static("\"v1\""),
        );
        assert_eq!(
            evaluate_range(&h, 10, Some("\"v1\""), None),
            RangeOutcome::Partial { start: 0, end: 0 }
        );
        assert_eq!(
            evaluate_range(&h, 10, Some("\"v2\""), None),
            RangeOutcome::Full
        );
        assert_eq!(
            evaluate_range(&h, 10, Some("W/\"v1\""), None),
            RangeOutcome::Full
        );
    }
}
