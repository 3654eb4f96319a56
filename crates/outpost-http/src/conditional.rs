//! Validators and conditional requests: entity-tag comparison (RFC 9110 §8.8.3),
//! answering a client's `If-None-Match` / `If-Modified-Since` from a stored
//! response (RFC 9110 §13.1, §13.2; RFC 9111 §4.3.2), the 304 a cache generates
//! (RFC 9110 §15.4.5), revalidation requests (RFC 9111 §4.3.1) and freshening a
//! stored response from a 304 (RFC 9111 §3.2, §4.3.4).

use http::header::{
    HeaderName, AGE, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_LOCATION,
    CONTENT_RANGE, DATE, ETAG, EXPIRES, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_UNMODIFIED_SINCE, LAST_MODIFIED, TRANSFER_ENCODING, VARY,
};
use http::{HeaderMap, Method, StatusCode};

use crate::date::{header_date, single_value, SingleValue};
use crate::headers::{is_hop_by_hop, strip_hop_by_hop};
use crate::lex;

/// An entity-tag, parsed leniently: `W/` (or `w/`) marks weak; the opaque part is
/// the content between the quotes, or — for malformed, unquoted legacy tags —
/// the remaining raw bytes, so two identical malformed tags still compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    /// Weak validator (RFC 9110 §8.8.1).
    pub weak: bool,
    /// Opaque tag without quotes.
    pub opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    /// Parse one entity-tag (never fails; see the type docs).
    pub fn parse(raw: &'a [u8]) -> Self {
        let raw = lex::trim_ows(raw);
        let (weak, rest) = match raw {
            [b'W' | b'w', b'/', rest @ ..] => (true, rest),
            _ => (false, raw),
        };
        let opaque = match rest {
            [b'"', inner @ .., b'"'] => inner,
            _ => rest,
        };
        EntityTag { weak, opaque }
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both strong and identical.
    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison: opaque tags identical, weakness ignored.
    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// The stored response's ETag, if it has exactly one.
fn stored_etag(h: &HeaderMap) -> Option<EntityTag<'_>> {
    match single_value(h, &ETAG)? {
        SingleValue::One(v) if !lex::trim_ows(v).is_empty() => Some(EntityTag::parse(v)),
        _ => None,
    }
}

/// RFC 9110 §13.1/§13.2: evaluate a client's If-None-Match / If-Modified-Since against a stored 2xx response
/// (weak comparison for INM; IMS only for GET/HEAD and when INM absent). true ⇒ answer 304.
///
/// Without `Last-Modified`, IMS is evaluated against the stored `Date`
/// (RFC 9111 §4.3.2). Requests with `If-Match`/`If-Unmodified-Since` should be
/// forwarded (see [`has_origin_preconditions`]); this function ignores them.
pub fn client_not_modified(
    method: &Method,
    req: &HeaderMap,
    stored_status: StatusCode,
    stored: &HeaderMap,
) -> bool {
    if !stored_status.is_success() || !(method == Method::GET || method == Method::HEAD) {
        return false;
    }
    if req.contains_key(IF_NONE_MATCH) {
        let members = lex::split_all(req.get_all(IF_NONE_MATCH));
        if members.iter().any(|m| *m == b"*") {
            return true;
        }
        let Some(etag) = stored_etag(stored) else {
            return false;
        };
        return members.iter().any(|m| EntityTag::parse(m).weak_eq(&etag));
    }
    // RFC 9110 §13.1.3: ignore IMS that is invalid or has more than one member.
    let Some(ims) = header_date(req, &IF_MODIFIED_SINCE) else {
        return false;
    };
    let Some(modified) = header_date(stored, &LAST_MODIFIED).or_else(|| header_date(stored, &DATE))
    else {
        return false;
    };
    modified <= ims
}

/// The request carries preconditions only an origin can evaluate correctly
/// (`If-Match`, `If-Unmodified-Since`, RFC 9110 §13.1.1, §13.1.4): forward it.
pub fn has_origin_preconditions(req: &HeaderMap) -> bool {
    req.contains_key(IF_MATCH) || req.contains_key(IF_UNMODIFIED_SINCE)
}

/// Headers a 304 must carry when generated from a stored response (RFC 9110 §15.4.5): copy Cache-Control, Content-Location, Date, ETag, Expires, Vary, Last-Modified(optional) from `stored`.
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ] {
        for v in stored.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// Add If-None-Match (from ETag) and If-Modified-Since (from Last-Modified, or Date if no LM) to an upstream revalidation request (RFC 9111 §4.3.1).
///
/// Any conditional headers already on `outgoing` (the client's own) are removed
/// first so the origin answers about *our* stored response. Values are copied
/// byte-for-byte (origins often compare them as strings).
pub fn add_validators(stored: &HeaderMap, outgoing: &mut HeaderMap) {
    for name in [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
    ] {
        outgoing.remove(name);
    }
    if let Some(etag) = stored.get(ETAG) {
        if !lex::trim_ows(etag.as_bytes()).is_empty() {
            outgoing.insert(IF_NONE_MATCH, etag.clone());
        }
    }
    let date_src = if stored.contains_key(LAST_MODIFIED) {
        LAST_MODIFIED
    } else {
        DATE
    };
    if header_date(stored, &date_src).is_some() {
        if let Some(v) = stored.get(&date_src) {
            outgoing.insert(IF_MODIFIED_SINCE, v.clone());
        }
    }
}

/// RFC 9111 §4.3.4: does this 304 select the stored response (strong ETag match, or LM match, or neither validator present)?
///
/// * 304 has a strong ETag ⇒ selected iff the stored ETag is strongly equal.
/// * else 304 has Last-Modified ⇒ selected iff equal to the stored one.
/// * else 304 has a weak ETag ⇒ selected iff weakly equal.
/// * else (no validator in the 304) ⇒ selected. RFC 9111 only says so when the
///   stored response also lacks validators; Outpost validates one stored
///   response per conditional request, and validator-less 304s are common.
pub fn validator_selects(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    let new_etag = stored_etag(not_modified);
    let old_etag = stored_etag(stored);
    if let Some(new) = new_etag.filter(|e| !e.weak) {
        return old_etag.is_some_and(|old| old.strong_eq(&new));
    }
    if not_modified.contains_key(LAST_MODIFIED) {
        return match (
            header_date(not_modified, &LAST_MODIFIED),
            header_date(stored, &LAST_MODIFIED),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
    }
    if let Some(new) = new_etag {
        return old_etag.is_some_and(|old| old.weak_eq(&new));
    }
    true
}

/// Fields a 304 never overwrites in the stored response (RFC 9111 §3.2): the
/// framing and body-derived fields the stored content depends on.
fn never_updated(name: &HeaderName) -> bool {
    *name == CONTENT_LENGTH
        || *name == CONTENT_ENCODING
        || *name == CONTENT_RANGE
        || *name == TRANSFER_ENCODING
        || name.as_str() == "content-md5"
        || name.as_str() == "digest"
        || name.as_str() == "content-digest"
        || name.as_str() == "repr-digest"
        || is_hop_by_hop(name)
}

/// RFC 9111 §3.2: update stored headers from a 304 (replace each field present in the 304 except Content-Length/Content-Encoding/
/// Content-Range/Transfer-Encoding and hop-by-hop).
///
/// Also: body digests (Content-MD5, Digest, Content-Digest, Repr-Digest) are
/// kept; an existing ETag is never replaced (the stored body is what the old tag
/// names; one is added if the stored response had none); `Age` is taken from the
/// 304 or removed, so recompute the initial age from the merged headers with the
/// revalidation's request/response times. Fields listed in the 304's
/// `Connection` are ignored.
pub fn merge_304(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    let mut nm = not_modified.clone();
    strip_hop_by_hop(&mut nm);
    let mut names: Vec<HeaderName> = nm.keys().cloned().collect();
    names.dedup();
    for name in names {
        if never_updated(&name) {
            continue;
        }
        if name == ETAG && stored.contains_key(ETAG) {
            continue;
        }
        stored.remove(&name);
        for v in nm.get_all(&name) {
            stored.append(name.clone(), v.clone());
        }
    }
    if !nm.contains_key(AGE) {
        stored.remove(AGE);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    use crate::test_util::headers;

    #[test]
    fn etag_comparison() {
        // RFC 9110 §8.8.3.2 table.
        let p = |s: &'static str| EntityTag::parse(s.as_bytes());
        assert!(!p("W/\"1\"").strong_eq(&p("W/\"1\"")));
        assert!(p("W/\"1\"").weak_eq(&p("W/\"1\"")));
        assert!(!p("W/\"1\"").strong_eq(&p("W/\"2\"")));
        assert!(!p("W/\"1\"").weak_eq(&p("W/\"2\"")));
        assert!(!p("W/\"1\"").strong_eq(&p("\"1\"")));
        assert!(p("W/\"1\"").weak_eq(&p("\"1\"")));
        assert!(p("\"1\"").strong_eq(&p("\"1\"")));
        assert!(p("\"1\"").weak_eq(&p("\"1\"")));
        assert!(p(" w/\"x\" ").weak);
        assert_eq!(p("abc").opaque, b"abc");
        assert!(p("abc").weak_eq(&p("\"abc\"")));
        assert_eq!(p("\"").opaque, b"\"");
        assert_eq!(p("").opaque, b"");
    }

    const LM: &str = "Thu, 01 Jan 2015 00:00:00 GMT";
    const BEFORE: &str = "Wed, 31 Dec 2014 00:00:00 GMT";
    const AFTER: &str = "Fri, 02 Jan 2015 00:00:00 GMT";

    #[test]
    fn client_conditionals() {
        let ok = StatusCode::OK;
        let etag_stored = headers(&[
            ("etag", "\"abcdef\""),
            ("last-modified", LM),
            ("date", AFTER),
        ]);
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, &'a str)>,
            StatusCode,
            &'a HeaderMap,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "GET",
                vec![("if-none-match", "\"abcdef\"")],
                ok,
                &etag_stored,
                true,
            ),
            (
                "HEAD",
                vec![("if-none-match", "\"abcdef\"")],
                ok,
                &etag_stored,
                true,
            ),
            (
                "POST",
                vec![("if-none-match", "\"abcdef\"")],
                ok,
                &etag_stored,
                false,
            ),
            (
                "GET",
                vec![("if-none-match", "W/\"abcdef\"")],
                ok,
                &etag_stored,
                true,
            ),
            (
                "GET",
                vec![("if-none-match", "\"1234\", \"abcdef\", \"5678\"")],
                ok,
                &etag_stored,
                true,
            ),
            (
                "GET",
                vec![
                    ("if-none-match", "\"1234\""),
                    ("if-none-match", "\"abcdef\""),
                ],
                ok,
                &etag_stored,
                true,
            ),
            (
                "GET",
                vec![("if-none-match", "\"1234\", \"5678\"")],
                ok,
                &etag_stored,
                false,
            ),
            ("GET", vec![("if-none-match", "*")], ok, &etag_stored, true),
            (
                "GET",
                vec![("if-none-match", "abcdef")],
                ok,
                &etag_stored,
                true,
            ),
            (
                "GET",
                vec![("if-none-match", "\"abcdef\"")],
                StatusCode::NOT_FOUND,
                &etag_stored,
                false,
            ),
            // INM takes precedence over IMS, even when IMS would say 304.
            (
                "GET",
                vec![("if-none-match", "\"zzz\""), ("if-modified-since", AFTER)],
                ok,
                &etag_stored,
                false,
            ),
            (
                "GET",
                vec![
                    ("if-none-match", "\"abcdef\""),
                    ("if-modified-since", BEFORE),
                ],
                ok,
                &etag_stored,
                true,
            ),
            (
                "GET",
                vec![("if-modified-since", LM)],
                ok,
                &etag_stored,
                true,
            ),
            (
                "GET",
                vec![("if-modified-since", AFTER)],
                ok,
                &etag_stored,
                true,
            ),
            (
                "GET",
                vec![("if-modified-since", BEFORE)],
                ok,
                &etag_stored,
                false,
            ),
            (
                "GET",
                vec![("if-modified-since", "Thursday, 01-Jan-15 00:00:00 GMT")],
                ok,
                &etag_stored,
                true,
            ),
            (
                "GET",
                vec![("if-modified-since", "garbage")],
                ok,
                &etag_stored,
                false,
            ),
            (
                "GET",
                vec![("if-modified-since", LM), ("if-modified-since", AFTER)],
                ok,
                &etag_stored,
                false,
            ),
            (
                "PUT",
                vec![("if-modified-since", LM)],
                ok,
                &etag_stored,
                false,
            ),
            ("GET", vec![], ok, &etag_stored, false),
        ];
        for (m, req, status, stored, want) in cases {
            let got = client_not_modified(
                &Method::from_bytes(m.as_bytes()).unwrap(),
                &headers(&req),
                status,
                stored,
            );
            assert_eq!(got, want, "{m} {req:?}");
        }
        // No Last-Modified: compare with Date.
        let dated = headers(&[("date", LM)]);
        assert!(client_not_modified(
            &Method::GET,
            &headers(&[("if-modified-since", AFTER)]),
            ok,
            &dated
        ));
        assert!(!client_not_modified(
            &Method::GET,
            &headers(&[("if-modified-since", BEFORE)]),
            ok,
            &dated
        ));
        // No validators at all.
        assert!(!client_not_modified(
            &Method::GET,
            &headers(&[("if-none-match", "\"x\"")]),
            ok,
            &HeaderMap::new()
        ));
        // Malformed but identical tags (obs-text, lowercase w/, backslash) compare equal.
        for tag in [
            "\"abcdef\u{fc}\"",
            "w/\"abcdef\"",
            "W\\\"abcdef\"",
            "W\"abcdef\"",
            "abcdef",
        ] {
            let stored = headers(&[("etag", tag)]);
            assert!(
                client_not_modified(
                    &Method::GET,
                    &headers(&[("if-none-match", tag)]),
                    ok,
                    &stored
                ),
                "{tag}"
            );
        }
        assert!(has_origin_preconditions(&headers(&[("if-match", "*")])));
        assert!(has_origin_preconditions(&headers(&[(
            "if-unmodified-since",
            LM
        )])));
        assert!(!has_origin_preconditions(&headers(&[(
            "if-none-match",
            "*"
        )])));
    }

    #[test]
    fn not_modified_header_set() {
        let stored = headers(&[
            ("cache-control", "max-age=60"),
            ("cache-control", "public"),
            ("content-location", "/x"),
            ("date", LM),
            ("etag", "\"a\""),
            ("expires", AFTER),
            ("vary", "accept-encoding"),
            ("last-modified", BEFORE),
            ("content-type", "text/plain"),
            ("content-length", "10"),
            ("set-cookie", "a=b"),
        ]);
        let nm = not_modified_headers(&stored);
        assert_eq!(nm.get_all(CACHE_CONTROL).iter().count(), 2);
        for n in [
            "content-location",
            "date",
            "etag",
            "expires",
            "vary",
            "last-modified",
        ] {
            assert!(nm.contains_key(n), "{n}");
        }
        for n in ["content-type", "content-length", "set-cookie"] {
            assert!(!nm.contains_key(n), "{n}");
        }
    }

    #[test]
    fn validators_for_revalidation() {
        let mut out = headers(&[
            ("if-none-match", "\"client\""),
            ("if-modified-since", BEFORE),
            ("accept", "*/*"),
        ]);
        add_validators(
            &headers(&[("etag", "abcdef"), ("last-modified", LM), ("date", AFTER)]),
            &mut out,
        );
        assert_eq!(out.get(IF_NONE_MATCH).unwrap(), "abcdef");
        assert_eq!(out.get(IF_MODIFIED_SINCE).unwrap(), LM);
        assert_eq!(out.get("accept").unwrap(), "*/*");

        let mut out = headers(&[("if-none-match", "\"client\"")]);
        add_validators(&headers(&[("date", AFTER)]), &mut out);
        assert!(!out.contains_key(IF_NONE_MATCH));
        assert_eq!(out.get(IF_MODIFIED_SINCE).unwrap(), AFTER);

        let mut out = HeaderMap::new();
        add_validators(
            &headers(&[("last-modified", "garbage"), ("etag", "W/\"x\"")]),
            &mut out,
        );
        assert_eq!(out.get(IF_NONE_MATCH).unwrap(), "W/\"x\"");
        assert!(!out.contains_key(IF_MODIFIED_SINCE));
    }

    #[test]
    fn selection() {
        let s =
            |a: &[(&str, &str)], b: &[(&str, &str)]| validator_selects(&headers(a), &headers(b));
        assert!(s(&[("etag", "\"a\"")], &[("etag", "\"a\"")]));
        assert!(!s(&[("etag", "\"a\"")], &[("etag", "\"b\"")]));
        assert!(!s(&[("etag", "W/\"a\"")], &[("etag", "\"a\"")]));
        assert!(!s(&[], &[("etag", "\"a\"")]));
        assert!(s(&[("etag", "W/\"a\"")], &[("etag", "W/\"a\"")]));
        assert!(s(&[("etag", "\"a\"")], &[("etag", "W/\"a\"")]));
        assert!(!s(&[("etag", "W/\"a\"")], &[("etag", "W/\"b\"")]));
        assert!(s(&[("last-modified", LM)], &[("last-modified", LM)]));
        assert!(s(
            &[("last-modified", LM)],
            &[("last-modified", "Thursday, 01-Jan-15 00:00:00 GMT")]
        ));
        assert!(!s(&[("last-modified", LM)], &[("last-modified", AFTER)]));
        assert!(!s(&[], &[("last-modified", LM)]));
        assert!(s(&[("etag", "\"a\"")], &[("date", LM)]));
        assert!(s(&[], &[]));
    }

    #[test]
    fn merge() {
        let mut stored = headers(&[
            ("cache-control", "max-age=2"),
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("content-encoding", "gzip"),
            ("content-md5", "old"),
            ("etag", "\"abcdef\""),
            ("set-cookie", "a=b"),
            ("set-cookie", "c=d"),
            ("test-header", "A"),
            ("age", "30"),
            ("date", BEFORE),
        ]);
        let nm = headers(&[
            ("cache-control", "max-age=3600"),
            ("content-type", "text/plain;charset=utf-8"),
            ("content-length", "10"),
            ("content-encoding", "br"),
            ("content-md5", "new"),
            ("content-range", "bytes 0-1/2"),
            ("etag", "\"ghijkl\""),
            ("set-cookie", "a=c"),
            ("date", AFTER),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
        ]);
        merge_304(&mut stored, &nm);
        assert_eq!(stored.get(CACHE_CONTROL).unwrap(), "max-age=3600");
        assert_eq!(
            stored.get("content-type").unwrap(),
            "text/plain;charset=utf-8"
        );
        assert_eq!(stored.get("content-length").unwrap(), "5");
        assert_eq!(stored.get("content-encoding").unwrap(), "gzip");
        assert_eq!(stored.get("content-md5").unwrap(), "old");
        assert!(!stored.contains_key("content-range"));
        assert_eq!(stored.get(ETAG).unwrap(), "\"abcdef\"");
        let cookies: Vec<_> = stored.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, vec!["a=c"]);
        assert_eq!(stored.get("test-header").unwrap(), "A");
        assert_eq!(stored.get(DATE).unwrap(), AFTER);
        assert!(!stored.contains_key(AGE));
        for n in ["connection", "x-secret", "keep-alive", "transfer-encoding"] {
            assert!(!stored.contains_key(n), "{n}");
        }
        // ETag added when the stored response had none; Age taken from the 304.
        let mut stored = headers(&[("last-modified", LM)]);
        merge_304(&mut stored, &headers(&[("etag", "\"n\""), ("age", "3")]));
        assert_eq!(stored.get(ETAG).unwrap(), "\"n\"");
        assert_eq!(stored.get(AGE).unwrap(), "3");
    }
}
