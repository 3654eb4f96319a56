//! Range requests served from a stored complete response (RFC 9110 §14):
//! parsing `Range: bytes=...`, `If-Range` (§13.1.5), and the `Content-Range`
//! values for 206 and 416. Only single byte ranges are served partially; a
//! multi-range request gets the full representation, which §14.2 permits.

use http::header::{DATE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, HeaderValue, Method};

use crate::conditional::EntityTag;
use crate::date::{header_date, parse_http_date};
use crate::lex;

/// What to send for a (possibly) ranged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// 200 with the whole representation.
    Full,
    /// 206 with bytes `start..=end_inclusive`.
    Partial {
        /// First byte offset.
        start: u64,
        /// Last byte offset, inclusive.
        end_inclusive: u64,
    },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// One `byte-range-spec` / `suffix-range` (RFC 9110 §14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRangeSpec {
    /// `first-last`
    FromTo {
        /// first-pos
        first: u64,
        /// last-pos (inclusive, ≥ first)
        last: u64,
    },
    /// `first-`
    From {
        /// first-pos
        first: u64,
    },
    /// `-suffix`
    Suffix {
        /// suffix-length
        len: u64,
    },
}

impl ByteRangeSpec {
    /// Resolve against a representation of `len` bytes: `Some((start, end))`
    /// if satisfiable (§14.1.1), `None` otherwise.
    pub fn resolve(&self, len: u64) -> Option<(u64, u64)> {
        if len == 0 {
            return None;
        }
        let last_byte = len - 1;
        match *self {
            ByteRangeSpec::FromTo { first, last } => {
                (first < len).then(|| (first, last.min(last_byte)))
            }
            ByteRangeSpec::From { first } => (first < len).then_some((first, last_byte)),
            ByteRangeSpec::Suffix { len: n } => (n > 0).then(|| (len.saturating_sub(n), last_byte)),
        }
    }
}

/// RFC 9110 §14.2: Range for GET with If-Range (strong ETag compare or exact Last-Modified date compare; else Full).
/// Only `bytes=` single ranges (first-last, first-, -suffix) are served as Partial; multiple ranges ⇒ Full (allowed by RFC). Malformed ⇒ Full (ignore).
///
/// A zero-length representation is always `Full`. Apply only to stored 200
/// responses. An If-Range date additionally needs a strong Last-Modified
/// (at least one second before `Date`, RFC 9110 §8.8.2.2).
pub fn evaluate(method: &Method, req: &HeaderMap, stored: &HeaderMap, len: u64) -> RangeDecision {
    if method != Method::GET || len == 0 {
        return RangeDecision::Full;
    }
    let mut lines = req.get_all(RANGE).iter();
    let (Some(range), None) = (lines.next(), lines.next()) else {
        return RangeDecision::Full;
    };
    if req.contains_key(IF_RANGE) && !if_range_matches(req, stored) {
        return RangeDecision::Full;
    }
    let Some(specs) = range.to_str().ok().and_then(parse_range_header) else {
        return RangeDecision::Full;
    };
    match specs.as_slice() {
        [one] => match one.resolve(len) {
            Some((start, end_inclusive)) => RangeDecision::Partial {
                start,
                end_inclusive,
            },
            None => RangeDecision::Unsatisfiable,
        },
        many => {
            if many.iter().all(|s| s.resolve(len).is_none()) {
                RangeDecision::Unsatisfiable
            } else {
                RangeDecision::Full
            }
        }
    }
}

/// RFC 9110 §13.1.5 If-Range: an entity-tag must strongly match the stored
/// ETag; a date must exactly equal a strong stored Last-Modified.
fn if_range_matches(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut lines = req.get_all(IF_RANGE).iter();
    let (Some(v), None) = (lines.next(), lines.next()) else {
        return false;
    };
    let raw = lex::trim_ows(v.as_bytes());
    if raw.first() == Some(&b'"') || raw.starts_with(b"W/") {
        let wanted = EntityTag::parse(raw);
        let mut etags = stored.get_all(ETAG).iter();
        return match (etags.next(), etags.next()) {
            (Some(e), None) => EntityTag::parse(e.as_bytes()).strong_eq(&wanted),
            _ => false,
        };
    }
    let (Some(wanted), Some(lm)) = (parse_http_date(raw), header_date(stored, &LAST_MODIFIED))
    else {
        return false;
    };
    let strong = header_date(stored, &DATE).is_none_or(|date| {
        date.duration_since(lm)
            .is_ok_and(|d| d >= std::time::Duration::from_secs(1))
    });
    wanted == lm && strong
}

/// Parse `Range` (RFC 9110 §14.1.1, §14.2). `None` for other units or any
/// syntax error — including `first > last`, which makes the whole set invalid.
/// Case-insensitive unit; OWS and empty list elements tolerated. Never panics.
pub fn parse_range_header(v: &str) -> Option<Vec<ByteRangeSpec>> {
    let v = v.trim_matches([' ', '\t']);
    let (unit, set) = v.split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut out = Vec::new();
    for member in lex::split_list(set.as_bytes()) {
        let s = std::str::from_utf8(member).ok()?;
        let (first, last) = s.split_once('-')?;
        let spec = match (first, last) {
            ("", n) => ByteRangeSpec::Suffix { len: digits(n)? },
            (f, "") => ByteRangeSpec::From { first: digits(f)? },
            (f, l) => {
                let (first, last) = (digits(f)?, digits(l)?);
                if last < first {
                    return None;
                }
                ByteRangeSpec::FromTo { first, last }
            }
        };
        out.push(spec);
        if out.len() > 100 {
            // Pathological range sets are ignored (RFC 9110 §14.2 permits it).
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// 1*DIGIT as u64; overflow ⇒ invalid.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `Content-Range: bytes start-end/total` for a 206 (RFC 9110 §14.4).
pub fn content_range(start: u64, end_inclusive: u64, total: u64) -> HeaderValue {
    HeaderValue::try_from(format!("bytes {start}-{end_inclusive}/{total}"))
        .unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

/// `Content-Range: bytes */N` for a 416 (RFC 9110 §15.5.17).
pub fn unsatisfied_content_range(total: u64) -> HeaderValue {
    HeaderValue::try_from(format!("bytes */{total}"))
        .unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    use crate::test_util::headers;

    #[test]
    fn parse_table() {
        use ByteRangeSpec::*;
        let cases: &[(&str, Option<Vec<ByteRangeSpec>>)] = &[
            ("bytes=0-1", Some(vec![FromTo { first: 0, last: 1 }])),
            ("bytes=1-", Some(vec![From { first: 1 }])),
            ("bytes=-5", Some(vec![Suffix { len: 5 }])),
            ("BYTES=0-0", Some(vec![FromTo { first: 0, last: 0 }])),
            (
                "bytes=0-1, 5-",
                Some(vec![FromTo { first: 0, last: 1 }, From { first: 5 }]),
            ),
            ("bytes= 0-1 ,, ", Some(vec![FromTo { first: 0, last: 1 }])),
            (
                "bytes=0-18446744073709551615",
                Some(vec![FromTo {
                    first: 0,
                    last: u64::MAX,
                }]),
            ),
            ("bytes=0-18446744073709551616", None),
            ("bytes=5-1", None),
            ("bytes=-", None),
            ("bytes=", None),
            ("bytes=a-b", None),
            ("bytes=1-2-3", None),
            ("bytes=+1-2", None),
            ("bytes=--1", None),
            ("bytes 0-1", None),
            ("items=0-1", None),
            ("", None),
            ("bytes=0-1,x", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_range_header(v), *want, "{v}");
        }
        let many = format!("bytes={}", vec!["0-1"; 101].join(","));
        assert_eq!(parse_range_header(&many), None);
    }

    fn eval(req: &[(&str, &str)], stored: &[(&str, &str)], len: u64) -> RangeDecision {
        evaluate(&Method::GET, &headers(req), &headers(stored), len)
    }

    fn partial(start: u64, end_inclusive: u64) -> RangeDecision {
        RangeDecision::Partial {
            start,
            end_inclusive,
        }
    }

    const LM: &str = "Thu, 01 Jan 2015 00:00:00 GMT";
    const LATER: &str = "Fri, 02 Jan 2015 00:00:00 GMT";

    #[test]
    fn evaluate_table() {
        use RangeDecision::*;
        type Pairs = Vec<(&'static str, &'static str)>;
        let cases: Vec<(Pairs, Pairs, u64, RangeDecision)> = vec![
            (vec![], vec![], 11, Full),
            (vec![("range", "bytes=0-1")], vec![], 11, partial(0, 1)),
            (vec![("range", "bytes=1-")], vec![], 11, partial(1, 10)),
            (vec![("range", "bytes=-1")], vec![], 11, partial(10, 10)),
            (vec![("range", "bytes=-100")], vec![], 11, partial(0, 10)),
            (vec![("range", "bytes=5-100")], vec![], 11, partial(5, 10)),
            (vec![("range", "bytes=11-")], vec![], 11, Unsatisfiable),
            (vec![("range", "bytes=11-20")], vec![], 11, Unsatisfiable),
            (vec![("range", "bytes=-0")], vec![], 11, Unsatisfiable),
            (vec![("range", "bytes=0-1")], vec![], 0, Full),
            (vec![("range", "bytes=0-1,3-4")], vec![], 11, Full),
            (vec![("range", "bytes=20-,30-")], vec![], 11, Unsatisfiable),
            (vec![("range", "bytes=5-1")], vec![], 11, Full),
            (vec![("range", "lines=1-2")], vec![], 11, Full),
            (
                vec![("range", "bytes=0-1"), ("range", "bytes=2-3")],
                vec![],
                11,
                Full,
            ),
            // If-Range with entity-tags: strong comparison only.
            (
                vec![("range", "bytes=0-1"), ("if-range", "\"a\"")],
                vec![("etag", "\"a\"")],
                11,
                partial(0, 1),
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", "\"b\"")],
                vec![("etag", "\"a\"")],
                11,
                Full,
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", "W/\"a\"")],
                vec![("etag", "W/\"a\"")],
                11,
                Full,
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", "\"a\"")],
                vec![("etag", "W/\"a\"")],
                11,
                Full,
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", "\"a\"")],
                vec![],
                11,
                Full,
            ),
            // If-Range with dates: exact match with a strong Last-Modified.
            (
                vec![("range", "bytes=0-1"), ("if-range", LM)],
                vec![("last-modified", LM), ("date", LATER)],
                11,
                partial(0, 1),
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", LM)],
                vec![("last-modified", LM)],
                11,
                partial(0, 1),
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", LM)],
                vec![("last-modified", LM), ("date", LM)],
                11,
                Full,
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", LATER)],
                vec![("last-modified", LM)],
                11,
                Full,
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", "garbage")],
                vec![("last-modified", LM)],
                11,
                Full,
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", LM)],
                vec![],
                11,
                Full,
            ),
        ];
        for (req, stored, len, want) in cases {
            assert_eq!(eval(&req, &stored, len), want, "{req:?} {stored:?} {len}");
        }
        let h = headers(&[("range", "bytes=0-1")]);
        assert_eq!(
            evaluate(&Method::HEAD, &h, &HeaderMap::new(), 11),
            RangeDecision::Full
        );
        assert_eq!(
            evaluate(&Method::POST, &h, &HeaderMap::new(), 11),
            RangeDecision::Full
        );
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_bytes(b"bytes=\xff-1").unwrap());
        assert_eq!(
            evaluate(&Method::GET, &h, &HeaderMap::new(), 11),
            RangeDecision::Full
        );
        assert_eq!(
            eval(&[("range", "bytes=0-")], &[], u64::MAX),
            partial(0, u64::MAX - 1)
        );
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(0, 1, 11), "bytes 0-1/11");
        assert_eq!(
            content_range(0, u64::MAX - 1, u64::MAX),
            format!("bytes 0-{}/{}", u64::MAX - 1, u64::MAX).as_str()
        );
        assert_eq!(unsatisfied_content_range(11), "bytes */11");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = parse_range_header(&s);
        }

        #[test]
        fn parse_structured_never_panics(s in "(bytes|BYTES|x)?=?[0-9,\\- ]{0,40}", len in proptest::num::u64::ANY) {
            if let Some(specs) = parse_range_header(&s) {
                for spec in specs {
                    if let Some((a, b)) = spec.resolve(len) {
                        proptest::prop_assert!(a <= b && b < len);
                    }
                }
            }
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&s) {
                h.insert(RANGE, v);
            }
            if let RangeDecision::Partial { start, end_inclusive } = evaluate(&Method::GET, &h, &HeaderMap::new(), len) {
                proptest::prop_assert!(start <= end_inclusive && end_inclusive < len);
            }
        }
    }
}
