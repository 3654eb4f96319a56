//! Table and property tests that drive [`CacheFlow`] with no socket: a stored response, a request,
//! a time, and what upstream did, in; the state the flow reaches, out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use http::HeaderValue;
use proptest::prelude::*;
use std::time::Duration;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(*k, HeaderValue::from_str(v).unwrap());
    }
    m
}

/// A stored response with these headers, received at t0 with no delay.
fn stored(resp: &[(&'static str, &str)]) -> Stored<&'static str> {
    let headers = h(resp);
    let plan = plan_store(
        &Method::GET,
        &HeaderMap::new(),
        StatusCode::OK,
        &headers,
        &TenantPolicy::default(),
        t0(),
        t0(),
        0.0,
    )
    .unwrap();
    Stored {
        object: "stored",
        facts: ReuseFacts::from_headers(&headers),
        timing: plan.timing,
    }
}

fn flow(req: &[(&'static str, &str)]) -> CacheFlow {
    CacheFlow::new(
        RequestCacheControl::from_headers(&h(req)),
        TenantPolicy::default(),
    )
}

/// The name of the state a lookup reaches.
fn lookup(resp: &[(&'static str, &str)], req: &[(&'static str, &str)], after: u64) -> &'static str {
    match flow(req).on_lookup(Some(stored(resp)), t0() + secs(after)) {
        Lookup::Serve(s) => s.freshness().as_str(),
        Lookup::ServeAndRefresh(s, _) => s.freshness().as_str(),
        Lookup::Fill(f) if f.validating().is_some() => "validate",
        Lookup::Fill(_) => "fill",
        Lookup::Unavailable(_) => "unavailable",
    }
}

/// Header fields of a table row.
type Fields<'a> = &'a [(&'static str, &'static str)];

#[test]
fn lookup_table() {
    let none: Fields = &[];
    let cases: &[(Fields, Fields, u64, &str)] = &[
        (&[("cache-control", "max-age=100")], none, 10, "fresh"),
        (&[("cache-control", "max-age=100")], none, 100, "validate"),
        (
            &[("cache-control", "max-age=100, no-cache")],
            none,
            0,
            "validate",
        ),
        (
            &[("cache-control", "max-age=100, no-cache=\"a\"")],
            none,
            0,
            "fresh",
        ),
        (
            &[("cache-control", "max-age=100")],
            &[("cache-control", "no-cache")],
            0,
            "validate",
        ),
        (
            &[("cache-control", "max-age=100")],
            &[("pragma", "no-cache")],
            0,
            "validate",
        ),
        // RFC 8246 §2: a reload does not revalidate a fresh immutable response ...
        (
            &[("cache-control", "max-age=100, immutable")],
            &[("cache-control", "no-cache")],
            0,
            "fresh",
        ),
        (
            &[("cache-control", "max-age=100, immutable")],
            &[("cache-control", "max-age=0")],
            5,
            "fresh",
        ),
        // ... but a stale one is revalidated as usual (§2.1).
        (
            &[("cache-control", "max-age=100, immutable")],
            &[("cache-control", "no-cache")],
            200,
            "validate",
        ),
        (
            &[("cache-control", "max-age=100")],
            &[("cache-control", "max-age=0")],
            1,
            "validate",
        ),
        (
            &[("cache-control", "max-age=3600")],
            &[("cache-control", "max-age=600")],
            1800,
            "validate",
        ),
        (
            &[("cache-control", "max-age=3600")],
            &[("cache-control", "max-age=600")],
            600,
            "fresh",
        ),
        (
            &[("cache-control", "max-age=1500")],
            &[("cache-control", "min-fresh=2000")],
            0,
            "validate",
        ),
        (
            &[("cache-control", "max-age=1500")],
            &[("cache-control", "min-fresh=1000")],
            1000,
            "validate",
        ),
        (
            &[("cache-control", "max-age=1500")],
            &[("cache-control", "min-fresh=100")],
            1000,
            "fresh",
        ),
        (
            &[("cache-control", "max-age=1")],
            &[("cache-control", "max-stale=1000")],
            4,
            "stale-accepted",
        ),
        (
            &[("cache-control", "max-age=1")],
            &[("cache-control", "max-stale=1")],
            4,
            "validate",
        ),
        // max-stale: stale by no more than the value (inclusive).
        (
            &[("cache-control", "max-age=1")],
            &[("cache-control", "max-stale=3")],
            4,
            "stale-accepted",
        ),
        (
            &[("cache-control", "max-age=1")],
            &[("cache-control", "max-stale")],
            99_999,
            "stale-accepted",
        ),
        (
            &[("cache-control", "max-age=1, must-revalidate")],
            &[("cache-control", "max-stale")],
            4,
            "validate",
        ),
        (
            &[("cache-control", "max-age=1, stale-while-revalidate=10")],
            none,
            5,
            "stale-while-revalidate",
        ),
        // RFC 5861 §3: "up to the indicated number of seconds": 10 s stale is still inside.
        (
            &[("cache-control", "max-age=1, stale-while-revalidate=10")],
            none,
            11,
            "stale-while-revalidate",
        ),
        (
            &[("cache-control", "max-age=1, stale-while-revalidate=10")],
            none,
            12,
            "validate",
        ),
        (
            &[("cache-control", "s-maxage=1, stale-while-revalidate=10")],
            none,
            5,
            "validate",
        ),
        (
            &[(
                "cache-control",
                "max-age=1, proxy-revalidate, stale-while-revalidate=10",
            )],
            none,
            5,
            "validate",
        ),
        (
            &[("cache-control", "max-age=10")],
            &[("cache-control", "only-if-cached")],
            5,
            "fresh",
        ),
        (
            &[("cache-control", "max-age=10")],
            &[("cache-control", "only-if-cached")],
            50,
            "unavailable",
        ),
        (
            &[("cache-control", "max-age=10"), ("age", "8")],
            none,
            1,
            "fresh",
        ),
        (
            &[("cache-control", "max-age=10"), ("age", "8")],
            none,
            3,
            "validate",
        ),
    ];
    for (resp, req, after, want) in cases {
        assert_eq!(
            lookup(resp, req, *after),
            *want,
            "{resp:?} {req:?} +{after}s"
        );
    }
}

#[test]
fn nothing_stored_fills_or_is_unavailable() {
    let f = flow(&[]).on_lookup::<&str>(None, t0());
    assert!(matches!(&f, Lookup::Fill(f) if f.validating().is_none()));
    let u = flow(&[("cache-control", "only-if-cached")]).on_lookup::<&str>(None, t0());
    match u {
        Lookup::Unavailable(u) => assert_eq!(u.status(), StatusCode::GATEWAY_TIMEOUT),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refresh_fill_never_serves_stale_on_error() {
    let s = stored(&[(
        "cache-control",
        "max-age=1, stale-while-revalidate=30, stale-if-error=60",
    )]);
    let Lookup::ServeAndRefresh(serve, refresh) = flow(&[]).on_lookup(Some(s), t0() + secs(5))
    else {
        panic!("expected stale-while-revalidate");
    };
    assert_eq!(serve.eval().age, secs(5));
    assert_eq!(serve.eval().ttl, -4);
    // The background validation fails: the stale copy stays, nothing is served from it.
    let fetch = refresh.lead();
    assert!(fetch.validating().is_some());
    assert!(matches!(
        fetch.on_error(FailureClass::Timeout),
        Failed::Error(s) if s == StatusCode::GATEWAY_TIMEOUT
    ));
}

fn validate_fill(resp: &[(&'static str, &str)], after: u64) -> Fill<&'static str> {
    match flow(&[]).on_lookup(Some(stored(resp)), t0() + secs(after)) {
        Lookup::Fill(f) => f,
        other => panic!("{other:?}"),
    }
}

fn facts<'a>(status: u16, headers: &'a HeaderMap, req: &'a HeaderMap) -> ResponseFacts<'a> {
    ResponseFacts {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        request_headers: req,
        request_time: t0() + secs(100),
        response_time: t0() + secs(100),
        jitter: 0.0,
        max_object_bytes: 1 << 20,
    }
}

#[test]
fn upstream_outcomes() {
    let sie = &[
        ("cache-control", "max-age=1, stale-if-error=600"),
        ("etag", "\"a\""),
    ];
    let none = HeaderMap::new();
    // Errors: stale-if-error serves the copy; without it the class decides 502 / 504.
    let f = validate_fill(sie, 100).lead();
    assert!(
        matches!(f.on_error(FailureClass::Unreachable), Failed::StaleOnError(s) if s.freshness() == Freshness::StaleOnError)
    );
    let f = validate_fill(&[("cache-control", "max-age=1"), ("etag", "\"a\"")], 100).lead();
    assert!(matches!(f.on_error(FailureClass::Timeout), Failed::Error(s) if s == 504));
    let f = validate_fill(&[("cache-control", "max-age=1"), ("etag", "\"a\"")], 100).lead();
    assert!(matches!(f.on_error(FailureClass::Unreachable), Failed::Error(s) if s == 502));
    // 500/502/503/504 with stale-if-error: serve the stale copy (RFC 5861 §4).
    for code in [500u16, 502, 503, 504] {
        let f = validate_fill(sie, 100).lead();
        assert!(
            matches!(
                f.on_response(facts(code, &none, &none)),
                Fetched::StaleOnError(_)
            ),
            "{code}"
        );
    }
    let f = validate_fill(sie, 100).lead();
    assert!(matches!(
        f.on_response(facts(501, &none, &none)),
        Fetched::Store(p) if p.negative
    ));
    // 304 validates the copy.
    let f = validate_fill(sie, 100).lead();
    let Fetched::Revalidated(r) = f.on_response(facts(304, &none, &none)) else {
        panic!("304 must validate");
    };
    let merged = h(&[("cache-control", "max-age=60"), ("etag", "\"a\"")]);
    let (obj, plan) = r.plan(StatusCode::OK, &merged, &none);
    assert_eq!(obj, "stored");
    assert_eq!(plan.unwrap().timing.lifetime, secs(60));
    // A 304 to a request that validated nothing is just a response (not stored: no freshness).
    let f = flow(&[]).on_lookup::<&str>(None, t0());
    let Lookup::Fill(f) = f else { panic!() };
    assert!(matches!(
        f.lead().on_response(facts(304, &none, &none)),
        Fetched::Pass {
            drop_stale: false,
            ..
        }
    ));
    // A full response that may not be stored replaces the stale copy: it must go.
    let f = validate_fill(sie, 100).lead();
    let ns = h(&[("cache-control", "no-store")]);
    assert!(matches!(
        f.on_response(facts(200, &ns, &none)),
        Fetched::Pass {
            reason: DontStore::NotStorable(NotStorable::NoStore),
            drop_stale: true
        }
    ));
    // Vary: * and too-large bodies are not stored.
    let f = flow(&[]).on_lookup::<&str>(None, t0());
    let Lookup::Fill(f) = f else { panic!() };
    let vs = h(&[("cache-control", "max-age=60"), ("vary", "*")]);
    assert!(matches!(
        f.lead().on_response(facts(200, &vs, &none)),
        Fetched::Pass {
            reason: DontStore::VaryStar,
            ..
        }
    ));
    let f = flow(&[]).on_lookup::<&str>(None, t0());
    let Lookup::Fill(f) = f else { panic!() };
    let big = h(&[
        ("cache-control", "max-age=60"),
        ("content-length", "2000000"),
    ]);
    assert!(matches!(
        f.lead().on_response(facts(200, &big, &none)),
        Fetched::Pass {
            reason: DontStore::TooLarge,
            ..
        }
    ));
}

#[test]
fn followers() {
    let sie = &[
        ("cache-control", "max-age=1, stale-if-error=600"),
        ("etag", "\"a\""),
    ];
    // A leader that went away: look up again.
    let f = validate_fill(sie, 100).follow();
    assert!(matches!(
        f.on_failure(FailureClass::LeaderGone),
        Followed::Retry(_)
    ));
    // A timed-out fill is a 504 for followers too (as for its leader).
    let f = flow(&[]).on_lookup::<&str>(None, t0());
    let Lookup::Fill(f) = f else { panic!() };
    assert!(matches!(
        f.follow().on_failure(FailureClass::Timeout),
        Followed::Failed(Failed::Error(s)) if s == StatusCode::GATEWAY_TIMEOUT
    ));
    let f = validate_fill(sie, 100).follow();
    assert!(matches!(
        f.on_failure(FailureClass::Unreachable),
        Followed::Failed(Failed::StaleOnError(_))
    ));
    let f = validate_fill(sie, 100).follow();
    assert_eq!(f.released().reason(), PassReason::Released);
    let f = validate_fill(sie, 100).follow();
    assert_eq!(f.stale_fill().reason(), PassReason::StaleFill);
    assert_eq!(PassReason::StaleFill.as_str(), "stale-fill");
}

#[test]
fn per_url_reasons() {
    assert!(!DontStore::VaryStar.per_url());
    assert!(!DontStore::TooLarge.per_url());
    assert!(DontStore::NotStorable(NotStorable::NoStore).per_url());
    assert!(!DontStore::NotStorable(NotStorable::Authorization).per_url());
    assert!(!DontStore::NotStorable(NotStorable::RequestNoStore).per_url());
}

fn directive() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..200).prop_map(|n| format!("max-age={n}")),
        (0u64..200).prop_map(|n| format!("s-maxage={n}")),
        (0u64..200).prop_map(|n| format!("stale-while-revalidate={n}")),
        (0u64..200).prop_map(|n| format!("stale-if-error={n}")),
        Just("must-revalidate".to_string()),
        Just("no-cache".to_string()),
        Just("immutable".to_string()),
        Just("public".to_string()),
    ]
}

fn req_directive() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..200).prop_map(|n| format!("max-age={n}")),
        (0u64..200).prop_map(|n| format!("max-stale={n}")),
        Just("max-stale".to_string()),
        (0u64..200).prop_map(|n| format!("min-fresh={n}")),
        Just("no-cache".to_string()),
        Just("only-if-cached".to_string()),
        (0u64..200).prop_map(|n| format!("stale-if-error={n}")),
    ]
}

proptest! {
    /// Invariants of every lookup, for any response, request and time.
    #[test]
    fn lookup_invariants(
        resp in proptest::collection::vec(directive(), 0..4),
        req in proptest::collection::vec(req_directive(), 0..3),
        etag in any::<bool>(),
        after in 0u64..400,
    ) {
        let mut pairs = vec![("cache-control", resp.join(", "))];
        if etag {
            pairs.push(("etag", "\"v\"".to_string()));
        }
        let refs: Vec<(&'static str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let headers = h(&refs);
        let Ok(plan) = plan_store(&Method::GET, &HeaderMap::new(), StatusCode::OK, &headers,
            &TenantPolicy::default(), t0(), t0(), 0.0) else { return Ok(()); };
        let facts = ReuseFacts::from_headers(&headers);
        let s = Stored { object: 7u8, facts, timing: plan.timing };
        let reqh = h(&[("cache-control", &req.join(", "))]);
        let rcc = RequestCacheControl::from_headers(&reqh);
        let now = t0() + secs(after);
        let fresh = plan.timing.lifetime > secs(after);
        match CacheFlow::new(rcc.clone(), TenantPolicy::default()).on_lookup(Some(s), now) {
            Lookup::Serve(sv) => {
                // Unqualified no-cache is never served without validation.
                prop_assert!(!facts.always_revalidate);
                prop_assert_eq!(sv.eval().age, secs(after));
                match sv.freshness() {
                    Freshness::Fresh => prop_assert!(fresh),
                    Freshness::StaleAccepted => {
                        prop_assert!(!fresh);
                        prop_assert!(!facts.no_stale, "must-revalidate & co. are never served stale");
                        prop_assert!(rcc.max_stale.is_some());
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            Lookup::ServeAndRefresh(sv, refresh) => {
                prop_assert!(!fresh && !facts.no_stale);
                prop_assert!(facts.stale_while_revalidate.is_some());
                prop_assert_eq!(sv.freshness(), Freshness::StaleWhileRevalidate);
                prop_assert!(refresh.validating().is_some());
            }
            Lookup::Fill(f) => {
                prop_assert!(!rcc.only_if_cached, "only-if-cached never goes upstream");
                prop_assert!(f.validating().is_some());
                // A failure may fall back to the copy only when stale serving is allowed.
                if let Failed::StaleOnError(_) = f.lead().on_error(FailureClass::Unreachable) {
                    prop_assert!(!facts.no_stale);
                }
            }
            Lookup::Unavailable(_) => prop_assert!(rcc.only_if_cached),
        }
    }
}
