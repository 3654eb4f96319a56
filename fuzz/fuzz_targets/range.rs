//! Fuzz Range handling (outpost_http::range).
//!
//! Input layout: byte 0 = flags, then the representation length (bit 0 of the flags set: one byte,
//! so small lengths are common; else eight little-endian bytes), then the rest split at '\n':
//! Range value, If-Range value, stored ETag, stored Last-Modified, stored Date.
//! Checks:
//! - parse_range_header never panics, is deterministic, never yields `first > last`, never more
//!   than 100 specs, and every resolved spec satisfies start <= end < len;
//! - evaluate(GET, ...) Partial ⇒ start <= end_inclusive < len; len 0 or HEAD ⇒ Full;
//!   two Range lines ⇒ Full; without If-Range, evaluate agrees with parse + resolve.
#![no_main]

use http::header::{DATE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use outpost_http::range::{evaluate, parse_range_header, ByteRangeSpec, RangeDecision};

fn check_specs(specs: &[ByteRangeSpec], len: u64) {
    assert!(
        !specs.is_empty() && specs.len() <= 100,
        "spec count {}",
        specs.len()
    );
    for s in specs {
        if let ByteRangeSpec::FromTo { first, last } = *s {
            assert!(first <= last, "FromTo with first > last: {s:?}");
        }
        if let Some((a, b)) = s.resolve(len) {
            assert!(a <= b && b < len, "{s:?}.resolve({len}) = ({a}, {b})");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (len, rest) = if flags & 1 != 0 {
        match rest.split_first() {
            Some((&b, r)) => (u64::from(b), r),
            None => return,
        }
    } else {
        if rest.len() < 8 {
            return;
        }
        let (l, r) = rest.split_at(8);
        (u64::from_le_bytes(l.try_into().unwrap_or([0; 8])), r)
    };
    let mut parts = rest.split(|&b| b == b'\n');
    let range_raw = parts.next().unwrap_or(&[]);
    let if_range = parts.next();
    let etag = parts.next();
    let last_modified = parts.next();
    let date = parts.next();

    // The parser on its own, over the lossily decoded string.
    let s = String::from_utf8_lossy(range_raw);
    let parsed = parse_range_header(&s);
    assert_eq!(parsed, parse_range_header(&s), "parse not deterministic");
    if let Some(specs) = &parsed {
        check_specs(specs, len);
        check_specs(specs, len.saturating_add(1));
        check_specs(specs, 1);
    }

    // evaluate() needs the Range as a header value.
    let Ok(range_v) = HeaderValue::from_bytes(range_raw) else {
        return;
    };
    let mut req = HeaderMap::new();
    req.insert(RANGE, range_v.clone());
    let mut stored = HeaderMap::new();
    let hv = |b: Option<&[u8]>| b.and_then(|b| HeaderValue::from_bytes(b).ok());
    if let Some(v) = hv(if_range) {
        req.insert(IF_RANGE, v);
    }
    if let Some(v) = hv(etag) {
        stored.insert(ETAG, v);
    }
    if let Some(v) = hv(last_modified) {
        stored.insert(LAST_MODIFIED, v);
    }
    if let Some(v) = hv(date) {
        stored.insert(DATE, v);
    }

    let d = evaluate(&Method::GET, &req, &stored, len);
    assert_eq!(
        d,
        evaluate(&Method::GET, &req, &stored, len),
        "evaluate not deterministic"
    );
    if let RangeDecision::Partial {
        start,
        end_inclusive,
    } = d
    {
        assert!(
            start <= end_inclusive && end_inclusive < len,
            "Partial {{ start: {start}, end_inclusive: {end_inclusive} }} for len {len}"
        );
    }
    assert_eq!(
        evaluate(&Method::HEAD, &req, &stored, len),
        RangeDecision::Full
    );
    assert_eq!(
        evaluate(&Method::GET, &req, &stored, 0),
        RangeDecision::Full
    );

    // Two Range field lines are not a single range: Full.
    let mut twice = req.clone();
    twice.append(RANGE, range_v.clone());
    assert_eq!(
        evaluate(&Method::GET, &twice, &stored, len),
        RangeDecision::Full
    );

    // Without If-Range, evaluate is exactly parse + resolve (RFC 9110 §14.2).
    if !req.contains_key(IF_RANGE) && len > 0 {
        let expected = match range_v.to_str().ok().and_then(parse_range_header) {
            None => RangeDecision::Full,
            Some(specs) => match specs.as_slice() {
                [one] => match one.resolve(len) {
                    Some((start, end_inclusive)) => RangeDecision::Partial {
                        start,
                        end_inclusive,
                    },
                    None => RangeDecision::Unsatisfiable,
                },
                many if many.iter().all(|s| s.resolve(len).is_none()) => {
                    RangeDecision::Unsatisfiable
                }
                _ => RangeDecision::Full,
            },
        };
        assert_eq!(
            d, expected,
            "evaluate disagrees with parse_range_header + resolve"
        );
    }
});
