//! Whether a response may be stored by a shared cache (RFC 9111 §3, §3.5),
//! with a named reason when it may not (used in `Cache-Status: detail=` and logs).
//!
//! Set-Cookie: RFC 9111 does not forbid storing responses that set cookies
//! (the origin marks per-user responses `private`/`no-store`), and the
//! conformance suite requires a cache to store and replay `Set-Cookie`
//! (`headers-store-Set-Cookie`, `304-etag-update-response-Set-Cookie`, both
//! required). [`check_storable`] therefore follows the RFC; deployments that
//! want the stricter CDN habit select a [`SetCookiePolicy`] via
//! [`check_storable_with`].

use http::header::{AUTHORIZATION, ETAG, EXPIRES, LAST_MODIFIED, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};

use crate::cache_control::{CcSource, RequestCacheControl, ResponseCacheControl};
use crate::freshness::is_heuristically_cacheable;
use crate::vary::{self, Vary};

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// Request method other than GET/HEAD.
    Method,
    /// Non-final status, or 304 (RFC 9111 §3).
    Status,
    /// Request carried `Cache-Control: no-store` (§5.2.1.5).
    RequestNoStore,
    /// Response `no-store` (§5.2.2.5).
    NoStore,
    /// Unqualified `private` (§5.2.2.7).
    Private,
    /// Request had `Authorization` and the response did not opt in (§3.5).
    Authorization,
    /// `Vary: *` can never be matched (§4.1).
    VaryStar,
    /// Nothing makes the response reusable: no explicit freshness, not
    /// heuristically cacheable with a validator, not `public`.
    NoFreshness,
    /// `must-understand` with a status code Outpost does not implement (§5.2.2.3).
    MustUnderstandUnknown,
    /// 206: Outpost stores whole objects only.
    PartialContent,
    /// `Set-Cookie` refused by the configured [`SetCookiePolicy`].
    SetCookie,
}

impl NotStorable {
    /// Stable name, used in `Cache-Status; detail=` and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::RequestNoStore => "request-no-store",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::VaryStar => "vary-star",
            NotStorable::NoFreshness => "no-freshness",
            NotStorable::MustUnderstandUnknown => "must-understand",
            NotStorable::PartialContent => "partial-content",
            NotStorable::SetCookie => "set-cookie",
        }
    }
}

impl std::fmt::Display for NotStorable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with responses that carry `Set-Cookie`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCookiePolicy {
    /// RFC 9111 behaviour (§3.1, §7.3): stored and replayed like any other field.
    Store,
    /// The default, as Varnish, nginx and Cloudflare default to not sharing cookies: store only
    /// when explicitly meant for shared caches (`public`, `s-maxage`, or a targeted field such
    /// as CDN-Cache-Control), and keep `Set-Cookie` out of the shared copy
    /// ([`SetCookiePolicy::shares_cookie`]), so no client is ever handed another's cookie.
    #[default]
    RequireExplicitShared,
    /// Never store.
    Never,
}

/// RFC 9111 §3 + §3.5 for a shared cache. The response must have explicit freshness, a validator with heuristic eligibility, public, s-maxage,
/// or be heuristically cacheable. Authorization requests need public/s-maxage/must-revalidate. Responses with Set-Cookie: store only if
/// explicitly shared-cacheable (s-maxage or public or targeted cc) — decide per the conformance tests and document the choice.
/// 206 responses are never stored by us (we fetch whole objects). Methods: GET and HEAD are storable (POST is not, for us).
///
/// [`check_storable`] applies RFC 9111 to Set-Cookie ([`SetCookiePolicy::Store`]);
/// the node's default is stricter ([`check_storable_with`] and
/// [`SetCookiePolicy::RequireExplicitShared`], docs/behaviour.md). "Heuristically
/// cacheable" additionally requires `Last-Modified` or `ETag`, since without
/// either the response could never be reused or revalidated.
pub fn check_storable(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    cc: &ResponseCacheControl,
    source: CcSource,
) -> Result<(), NotStorable> {
    check_storable_with(
        method,
        req,
        status,
        resp,
        cc,
        source,
        SetCookiePolicy::Store,
    )
}

/// [`check_storable`] with an explicit [`SetCookiePolicy`].
pub fn check_storable_with(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    cc: &ResponseCacheControl,
    source: CcSource,
    set_cookie: SetCookiePolicy,
) -> Result<(), NotStorable> {
    // §3: "the request method is understood by the cache" — GET and HEAD.
    if method != Method::GET && method != Method::HEAD {
        return Err(NotStorable::Method);
    }
    // §3: "the response status code is final"; 304 only updates (§4.3.4).
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return Err(NotStorable::Status);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(NotStorable::PartialContent);
    }
    // §5.2.2.3: must-understand limits storage to understood status codes, and
    // a cache that understands the status ignores no-store.
    let understood = cc.must_understand && is_understood_status(status);
    if cc.must_understand && !understood {
        return Err(NotStorable::MustUnderstandUnknown);
    }
    if RequestCacheControl::from_headers(req).no_store {
        return Err(NotStorable::RequestNoStore);
    }
    if cc.no_store && !understood {
        return Err(NotStorable::NoStore);
    }
    // §5.2.2.7: a shared cache must not store an unqualified private response
    // (qualified private only withholds the named fields, see
    // `headers::strip_before_store`).
    if cc.is_private() {
        return Err(NotStorable::Private);
    }
    // §3.5: a shared cache must not reuse a response to a request with
    // Authorization unless the response explicitly allows it.
    if req.contains_key(AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    if vary::parse(resp) == Vary::Star {
        return Err(NotStorable::VaryStar);
    }
    if resp.contains_key(SET_COOKIE) {
        let allowed = match set_cookie {
            SetCookiePolicy::Store => true,
            SetCookiePolicy::RequireExplicitShared => {
                cc.public || cc.s_maxage.is_some() || source.is_targeted()
            }
            SetCookiePolicy::Never => false,
        };
        if !allowed {
            return Err(NotStorable::SetCookie);
        }
    }
    // §3: at least one of public, max-age, s-maxage, Expires (ignored under a
    // targeted field, RFC 9213 §2.1), or a heuristically cacheable status —
    // which is only useful with a validator to compute heuristics or revalidate.
    let explicit = cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || (!source.is_targeted() && resp.contains_key(EXPIRES));
    let heuristic = is_heuristically_cacheable(status)
        && (resp.contains_key(LAST_MODIFIED) || resp.contains_key(ETAG));
    if explicit || cc.public || heuristic {
        Ok(())
    } else {
        Err(NotStorable::NoFreshness)
    }
}

impl SetCookiePolicy {
    /// Whether a stored copy keeps the `Set-Cookie` of the response that filled it (only in the
    /// RFC 9111 mode; otherwise the filling client gets it and the stored copy does not).
    pub fn shares_cookie(&self) -> bool {
        matches!(self, SetCookiePolicy::Store)
    }
}

/// Status codes whose caching semantics Outpost implements (for
/// `must-understand`, RFC 9111 §5.2.2.3): the final codes defined by RFC 9110
/// except 206 (never stored) and 304 (only updates).
pub fn is_understood_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 201
            | 202
            | 203
            | 204
            | 205
            | 300
            | 301
            | 302
            | 303
            | 307
            | 308
            | 400
            | 401
            | 402
            | 403
            | 404
            | 405
            | 406
            | 407
            | 408
            | 409
            | 410
            | 411
            | 412
            | 413
            | 414
            | 415
            | 416
            | 417
            | 421
            | 422
            | 426
            | 500
            | 501
            | 502
            | 503
            | 504
            | 505
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::cache_control::effective_response_cc;

    use crate::test_util::headers;

    fn check(
        method: &str,
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Result<(), NotStorable> {
        let resp = headers(resp);
        let (cc, src) = effective_response_cc(&resp);
        check_storable(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &headers(req),
            StatusCode::from_u16(status).unwrap(),
            &resp,
            &cc,
            src,
        )
    }

    const LM: &str = "Thu, 01 Jan 2015 00:00:00 GMT";
    const EXP: &str = "Thu, 01 Jan 2099 00:00:00 GMT";

    #[test]
    fn table() {
        use NotStorable::*;
        type Pairs = Vec<(&'static str, &'static str)>;
        type Case = (&'static str, Pairs, u16, Pairs, Result<(), NotStorable>);
        let cases: Vec<Case> = vec![
            (
                "GET",
                vec![],
                200,
                vec![("cache-control", "max-age=60")],
                Ok(()),
            ),
            (
                "HEAD",
                vec![],
                200,
                vec![("cache-control", "max-age=60")],
                Ok(()),
            ),
            (
                "POST",
                vec![],
                200,
                vec![("cache-control", "max-age=60")],
                Err(Method),
            ),
            (
                "PUT",
                vec![],
                200,
                vec![("cache-control", "max-age=60")],
                Err(Method),
            ),
            (
                "GET",
                vec![],
                100,
                vec![("cache-control", "max-age=60")],
                Err(Status),
            ),
            // Interim responses are never stored (§3: the status must be final).
            (
                "GET",
                vec![],
                103,
                vec![
                    ("cache-control", "public, max-age=60"),
                    ("link", "</a.css>"),
                ],
                Err(Status),
            ),
            (
                "GET",
                vec![],
                304,
                vec![("cache-control", "max-age=60")],
                Err(Status),
            ),
            (
                "GET",
                vec![],
                206,
                vec![("cache-control", "max-age=60")],
                Err(PartialContent),
            ),
            // Any final status with explicit freshness (status-*-fresh).
            ("GET", vec![], 299, vec![("expires", EXP)], Ok(())),
            ("GET", vec![], 302, vec![("expires", EXP)], Ok(())),
            ("GET", vec![], 500, vec![("expires", EXP)], Ok(())),
            (
                "GET",
                vec![],
                599,
                vec![("cache-control", "max-age=3600")],
                Ok(()),
            ),
            (
                "GET",
                vec![],
                599,
                vec![("cache-control", "max-age=3600, must-understand")],
                Err(MustUnderstandUnknown),
            ),
            (
                "GET",
                vec![],
                200,
                vec![("cache-control", "max-age=3600, must-understand, no-store")],
                Ok(()),
            ),
            (
                "GET",
                vec![],
                200,
                vec![("cache-control", "no-store")],
                Err(NoStore),
            ),
            (
                "GET",
                vec![],
                200,
                vec![
                    ("cache-control", "max-age=10000, No-StOrE"),
                    ("expires", EXP),
                ],
                Err(NoStore),
            ),
            (
                "GET",
                vec![("cache-control", "no-store")],
                200,
                vec![("cache-control", "max-age=60")],
                Err(RequestNoStore),
            ),
            (
                "GET",
                vec![("pragma", "no-cache")],
                200,
                vec![("cache-control", "max-age=60")],
                Ok(()),
            ),
            (
                "GET",
                vec![],
                200,
                vec![("cache-control", "private, max-age=3600")],
                Err(Private),
            ),
            (
                "GET",
                vec![],
                200,
                vec![("cache-control", "private=\"set-cookie\", max-age=3600")],
                Ok(()),
            ),
            (
                "GET",
                vec![],
                200,
                vec![("cache-control", "no-cache"), ("etag", "\"abcd\"")],
                Ok(()),
            ),
            (
                "GET",
                vec![],
                200,
                vec![("cache-control", "max-age=10000, no-cache")],
                Ok(()),
            ),
            // Authorization (§3.5).
            (
                "GET",
                vec![("authorization", "FOO")],
                200,
                vec![("expires", EXP)],
                Err(Authorization),
            ),
            (
                "GET",
                vec![("authorization", "FOO")],
                200,
                vec![("cache-control", "max-age=3600, public")],
                Ok(()),
            ),
            (
                "GET",
                vec![("authorization", "FOO")],
                200,
                vec![("cache-control", "max-age=3600, must-revalidate")],
                Ok(()),
            ),
            (
                "GET",
                vec![("authorization", "FOO")],
                200,
                vec![("cache-control", "s-maxage=3600")],
                Ok(()),
            ),
            // Vary.
            (
                "GET",
                vec![],
                200,
                vec![("expires", EXP), ("vary", "*")],
                Err(VaryStar),
            ),
            (
                "GET",
                vec![],
                200,
                vec![("expires", EXP), ("vary", ""), ("vary", "*")],
                Err(VaryStar),
            ),
            (
                "GET",
                vec![],
                200,
                vec![("expires", EXP), ("vary", "Foo")],
                Ok(()),
            ),
            // Freshness requirements.
            ("GET", vec![], 200, vec![], Err(NoFreshness)),
            ("GET", vec![], 200, vec![("last-modified", LM)], Ok(())),
            ("GET", vec![], 200, vec![("etag", "\"x\"")], Ok(())),
            ("GET", vec![], 204, vec![("last-modified", LM)], Ok(())),
            (
                "GET",
                vec![],
                201,
                vec![("last-modified", LM)],
                Err(NoFreshness),
            ),
            (
                "GET",
                vec![],
                403,
                vec![("last-modified", LM)],
                Err(NoFreshness),
            ),
            (
                "GET",
                vec![],
                503,
                vec![("last-modified", LM)],
                Err(NoFreshness),
            ),
            (
                "GET",
                vec![],
                599,
                vec![("last-modified", LM)],
                Err(NoFreshness),
            ),
            (
                "GET",
                vec![],
                599,
                vec![("last-modified", LM), ("cache-control", "public")],
                Ok(()),
            ),
            ("GET", vec![], 200, vec![("expires", "0")], Ok(())),
            // Targeted fields replace Cache-Control (and Expires).
            (
                "GET",
                vec![],
                200,
                vec![
                    ("cache-control", "no-store"),
                    ("surrogate-control", "max-age=10000;outpost"),
                ],
                Ok(()),
            ),
            (
                "GET",
                vec![],
                200,
                vec![
                    ("cache-control", "max-age=10000"),
                    ("surrogate-control", "no-store"),
                ],
                Err(NoStore),
            ),
            (
                "GET",
                vec![],
                302,
                vec![("cdn-cache-control", "no-cache"), ("expires", EXP)],
                Err(NoFreshness),
            ),
            // Set-Cookie stored by default (suite: headers-store-Set-Cookie).
            (
                "GET",
                vec![],
                200,
                vec![("cache-control", "max-age=3600"), ("set-cookie", "a=b")],
                Ok(()),
            ),
        ];
        for (m, req, status, resp, want) in cases {
            assert_eq!(
                check(m, &req, status, &resp),
                want,
                "{m} {req:?} {status} {resp:?}"
            );
        }
    }

    #[test]
    fn set_cookie_policies() {
        let run = |resp: &[(&str, &str)], p| {
            let resp = headers(resp);
            let (cc, src) = effective_response_cc(&resp);
            check_storable_with(
                &Method::GET,
                &HeaderMap::new(),
                StatusCode::OK,
                &resp,
                &cc,
                src,
                p,
            )
        };
        let plain = [("cache-control", "max-age=3600"), ("set-cookie", "a=b")];
        let public = [
            ("cache-control", "max-age=3600, public"),
            ("set-cookie", "a=b"),
        ];
        let smax = [("cache-control", "s-maxage=3600"), ("set-cookie", "a=b")];
        let cdn = [("cdn-cache-control", "max-age=3600"), ("set-cookie", "a=b")];
        assert_eq!(run(&plain, SetCookiePolicy::Store), Ok(()));
        assert_eq!(
            run(&plain, SetCookiePolicy::RequireExplicitShared),
            Err(NotStorable::SetCookie)
        );
        assert_eq!(run(&public, SetCookiePolicy::RequireExplicitShared), Ok(()));
        assert_eq!(run(&smax, SetCookiePolicy::RequireExplicitShared), Ok(()));
        assert_eq!(run(&cdn, SetCookiePolicy::RequireExplicitShared), Ok(()));
        assert_eq!(
            run(&public, SetCookiePolicy::Never),
            Err(NotStorable::SetCookie)
        );
        assert_eq!(
            SetCookiePolicy::default(),
            SetCookiePolicy::RequireExplicitShared
        );
        assert!(SetCookiePolicy::Store.shares_cookie());
        assert!(!SetCookiePolicy::RequireExplicitShared.shares_cookie());
    }

    #[test]
    fn names() {
        assert_eq!(NotStorable::NoStore.as_str(), "no-store");
        assert_eq!(NotStorable::VaryStar.to_string(), "vary-star");
        assert_eq!(
            NotStorable::MustUnderstandUnknown.as_str(),
            "must-understand"
        );
    }
}
