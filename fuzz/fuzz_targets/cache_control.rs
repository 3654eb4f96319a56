//! Fuzz Cache-Control parsing (outpost_http::cache_control).
//!
//! Input: the bytes are split at '\n' into up to four field lines (a byte HeaderValue rejects
//! anyway, so no line loses information); lines HeaderValue rejects are skipped. Checks:
//! - no panic in ResponseCacheControl::parse, RequestCacheControl::parse, effective_response_cc;
//! - parsing is deterministic (same input twice ⇒ equal results);
//! - delta-seconds values never exceed DELTA_SECONDS_MAX (RFC 9111 §1.2.2 saturation);
//! - qualified field-name lists are sorted, deduplicated, lower-case tokens;
//! - several field lines equal one comma-joined line (RFC 9110 §5.3) when no line has a quote;
//! - effective_response_cc: Cache-Control alone ⇒ source CacheControl with `parse`'s result;
//!   a targeted field either wins (source names it) or falls back to what remains; precedence
//!   CDN-Cache-Control > Surrogate-Control > Cache-Control.
#![no_main]

use http::header::{HeaderName, CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use outpost_http::cache_control::{effective_response_cc, CDN_CACHE_CONTROL, SURROGATE_CONTROL};
use outpost_http::{
    CcSource, MaxStale, RequestCacheControl, ResponseCacheControl, DELTA_SECONDS_MAX,
};

fn check_delta(what: &str, v: Option<u64>) {
    if let Some(v) = v {
        assert!(
            v <= DELTA_SECONDS_MAX,
            "{what} = {v} exceeds DELTA_SECONDS_MAX"
        );
    }
}

fn check_field_list(what: &str, list: &Option<Vec<String>>) {
    let Some(list) = list else { return };
    for w in list.windows(2) {
        assert!(w[0] < w[1], "{what} list not sorted/deduped: {list:?}");
    }
    for name in list {
        assert!(!name.is_empty(), "{what} list has an empty name: {list:?}");
        assert!(
            !name.bytes().any(|b| b.is_ascii_uppercase()),
            "{what} list not lower-case: {list:?}"
        );
        assert!(
            !name
                .bytes()
                .any(|b| b == b',' || b == b' ' || b == b'"' || b.is_ascii_control()),
            "{what} list member is not a token: {list:?}"
        );
    }
}

fn check_response(cc: &ResponseCacheControl) {
    check_delta("max_age", cc.max_age);
    check_delta("s_maxage", cc.s_maxage);
    check_delta("stale_while_revalidate", cc.stale_while_revalidate);
    check_delta("stale_if_error", cc.stale_if_error);
    check_field_list("private", &cc.private);
    check_field_list("no_cache", &cc.no_cache);
    let fields = cc.unstorable_fields();
    for w in fields.windows(2) {
        assert!(
            w[0] < w[1],
            "unstorable_fields not sorted/deduped: {fields:?}"
        );
    }
    if cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() {
        assert!(cc.forbids_stale(), "forbids_stale false for {cc:?}");
    }
    if cc.requires_revalidation() {
        assert!(
            cc.forbids_stale(),
            "unqualified no-cache must forbid stale: {cc:?}"
        );
    }
}

fn check_request(cc: &RequestCacheControl) {
    check_delta("req max_age", cc.max_age);
    check_delta("req min_fresh", cc.min_fresh);
    check_delta("req stale_if_error", cc.stale_if_error);
    if let Some(MaxStale::Seconds(s)) = cc.max_stale {
        check_delta("req max_stale", Some(s));
    }
}

fn map_with(name: &HeaderName, vals: &[HeaderValue]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in vals {
        h.append(name.clone(), v.clone());
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let vals: Vec<HeaderValue> = data
        .split(|&b| b == b'\n')
        .take(4)
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
        .collect();

    // Response and request directives, parsed twice.
    let resp = ResponseCacheControl::parse(&vals);
    assert_eq!(
        resp,
        ResponseCacheControl::parse(&vals),
        "response parse not deterministic"
    );
    check_response(&resp);
    let req = RequestCacheControl::parse(&vals);
    assert_eq!(
        req,
        RequestCacheControl::parse(&vals),
        "request parse not deterministic"
    );
    check_request(&req);

    // Multiple field lines ≡ one comma-joined line (RFC 9110 §5.3). Only when no line but the last
    // contains '"': an unterminated quoted string legitimately swallows the joining comma.
    if vals.len() >= 2
        && vals[..vals.len() - 1]
            .iter()
            .all(|v| !v.as_bytes().contains(&b'"'))
    {
        let mut joined = Vec::new();
        for (i, v) in vals.iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        if let Ok(j) = HeaderValue::from_bytes(&joined) {
            assert_eq!(
                resp,
                ResponseCacheControl::parse([&j]),
                "multi-line != joined (response)"
            );
            assert_eq!(
                req,
                RequestCacheControl::parse([&j]),
                "multi-line != joined (request)"
            );
        }
    }

    // Request: from_headers with Cache-Control present is exactly parse (Pragma ignored, §5.4).
    if !vals.is_empty() {
        let mut h = map_with(&CACHE_CONTROL, &vals);
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert_eq!(
            RequestCacheControl::from_headers(&h),
            req,
            "from_headers != parse"
        );
    }

    // effective_response_cc, field by field.
    assert_eq!(
        effective_response_cc(&HeaderMap::new()),
        (ResponseCacheControl::default(), CcSource::None)
    );
    if vals.is_empty() {
        return;
    }
    let cc_only = map_with(&CACHE_CONTROL, &vals);
    assert_eq!(
        effective_response_cc(&cc_only),
        (resp.clone(), CcSource::CacheControl),
        "Cache-Control alone must give parse()"
    );

    let cdn_only = map_with(&CDN_CACHE_CONTROL, &vals);
    let (cdn_cc, cdn_src) = effective_response_cc(&cdn_only);
    assert_eq!(
        effective_response_cc(&cdn_only),
        (cdn_cc.clone(), cdn_src),
        "not deterministic"
    );
    check_response(&cdn_cc);
    match cdn_src {
        CcSource::CdnCacheControl => {}
        CcSource::None => assert_eq!(cdn_cc, ResponseCacheControl::default()),
        other => panic!("CDN-Cache-Control alone gave source {other:?}"),
    }

    let sc_only = map_with(&SURROGATE_CONTROL, &vals);
    let (sc_cc, sc_src) = effective_response_cc(&sc_only);
    check_response(&sc_cc);
    match sc_src {
        CcSource::SurrogateControl => {}
        CcSource::None => assert_eq!(sc_cc, ResponseCacheControl::default()),
        other => panic!("Surrogate-Control alone gave source {other:?}"),
    }

    // All three fields carry the fuzzed lines (rotated, so each gets a different mix).
    let n = vals.len();
    let rot =
        |k: usize| -> Vec<HeaderValue> { (0..n).map(|i| vals[(i + k) % n].clone()).collect() };
    let (v_cc, v_cdn, v_sc) = (rot(0), rot(1), rot(2));
    let mut all = map_with(&CACHE_CONTROL, &v_cc);
    for v in &v_cdn {
        all.append(CDN_CACHE_CONTROL, v.clone());
    }
    for v in &v_sc {
        all.append(SURROGATE_CONTROL, v.clone());
    }
    let got = effective_response_cc(&all);
    check_response(&got.0);
    let cdn_alone = effective_response_cc(&map_with(&CDN_CACHE_CONTROL, &v_cdn));
    let sc_alone = effective_response_cc(&map_with(&SURROGATE_CONTROL, &v_sc));
    let cc_alone = effective_response_cc(&map_with(&CACHE_CONTROL, &v_cc));
    let expected = if cdn_alone.1 == CcSource::CdnCacheControl {
        cdn_alone
    } else if sc_alone.1 == CcSource::SurrogateControl {
        sc_alone
    } else {
        cc_alone
    };
    assert_eq!(
        got, expected,
        "precedence CDN > Surrogate > Cache-Control violated"
    );
    assert!(
        got.1.is_targeted()
            == matches!(
                got.1,
                CcSource::CdnCacheControl | CcSource::SurrogateControl
            )
    );
});
