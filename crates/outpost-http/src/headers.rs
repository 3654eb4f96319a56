//! Header hygiene for a forwarding cache: hop-by-hop fields (RFC 9110 §7.6.1),
//! fields that must not be stored (RFC 9111 §3.1), and the URIs invalidated by
//! unsafe requests (RFC 9111 §4.4) with RFC 3986 §5 reference resolution.

use http::header::{HeaderName, CONNECTION, CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method, StatusCode};

use crate::cache_control::ResponseCacheControl;
use crate::lex;

/// Fields that are hop-by-hop by definition (RFC 9110 §7.6.1, RFC 9112 §6.1,
/// §7.4) or proxy-specific (RFC 9110 §11.7, RFC 9111 §3.1).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-authentication-info",
];

/// Is `name` one of the always-hop-by-hop / proxy-specific fields?
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// The field names a message's `Connection` header lists (hop-by-hop for this message).
pub fn connection_listed(h: &HeaderMap) -> Vec<HeaderName> {
    lex::split_all(h.get_all(CONNECTION))
        .into_iter()
        .filter_map(|m| HeaderName::from_bytes(m).ok())
        .collect()
}

/// Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-Authenticate/Authorization, plus every field named in Connection (RFC 9110 §7.6.1).
///
/// Also Proxy-Authentication-Info (RFC 9110 §11.7.3; RFC 9111 §3.1 forbids
/// storing it). Call this on inbound requests *before* adding any header of
/// your own, or a client could name it in `Connection` to have it removed.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in connection_listed(h) {
        h.remove(name);
    }
    for name in HOP_BY_HOP {
        h.remove(name);
    }
}

/// Prepare response headers for storage (RFC 9111 §3.1): drop hop-by-hop and
/// proxy-specific fields, and the fields named by qualified `private`
/// (§5.2.2.7) or qualified `no-cache` (§5.2.2.4). The response sent to the
/// client that caused the fill keeps them; only the stored copy loses them.
pub fn strip_before_store(h: &mut HeaderMap, cc: &ResponseCacheControl) {
    strip_hop_by_hop(h);
    // RFC 9211: the upstream members describe the fill's path; a later hit touches only this
    // cache, so its Cache-Status must not replay them.
    h.remove("cache-status");
    for name in cc.unstorable_fields() {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            h.remove(n);
        }
    }
}

/// RFC 9110 §9.2.1 safe methods.
pub fn is_safe_method(method: &Method) -> bool {
    matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

/// RFC 9111 §4.4: after a non-error response to an unsafe method, the URIs to invalidate: the effective request URI plus
/// Location and Content-Location when same-origin (same scheme+authority; relative references resolved against the request URI).
/// `request_uri` is absolute ("http://host/path?q"). Returns absolute URIs.
///
/// "Non-error" is 2xx or 3xx. Unknown methods (e.g. `M-SEARCH`) are unsafe.
/// Returned URIs are in the request URI's scheme/authority spelling, without
/// fragments, with dot-segments removed, deduplicated. An unparsable
/// `request_uri` yields nothing.
pub fn invalidation_targets(
    method: &Method,
    status: StatusCode,
    request_uri: &str,
    resp: &HeaderMap,
) -> Vec<String> {
    if is_safe_method(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let Some(base) = AbsUri::parse(request_uri) else {
        return Vec::new();
    };
    let mut out = vec![base.to_string()];
    for name in [LOCATION, CONTENT_LOCATION] {
        let mut values = resp.get_all(&name).iter();
        let (Some(v), None) = (values.next(), values.next()) else {
            continue;
        };
        let Ok(s) = v.to_str() else {
            continue;
        };
        if let Some(target) = base.resolve(s.trim()) {
            if target.same_origin(&base) {
                let t = AbsUri {
                    scheme: base.scheme.clone(),
                    authority: base.authority.clone(),
                    ..target
                }
                .to_string();
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
    }
    out
}

/// An absolute URI split per RFC 3986 §3 (fragment dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct AbsUri {
    scheme: String,
    authority: String,
    path: String,
    query: Option<String>,
}

impl std::fmt::Display for AbsUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// Split off `#fragment`, then `?query`.
fn split_query(s: &str) -> (&str, Option<&str>) {
    let s = s.split('#').next().unwrap_or("");
    match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    }
}

fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn valid_ref(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

impl AbsUri {
    fn parse(s: &str) -> Option<AbsUri> {
        if !valid_ref(s) {
            return None;
        }
        let (scheme, rest) = s.split_once(':')?;
        if !is_scheme(scheme) {
            return None;
        }
        let rest = rest.strip_prefix("//")?;
        let (before, query) = split_query(rest);
        let (authority, path) = match before.find('/') {
            Some(i) => before.split_at(i),
            None => (before, ""),
        };
        if authority.is_empty() {
            return None;
        }
        Some(AbsUri {
            scheme: scheme.to_owned(),
            authority: authority.to_owned(),
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                remove_dot_segments(path)
            },
            query: query.map(str::to_owned),
        })
    }

    /// RFC 3986 §5.2.2 (strict) reference resolution against `self`.
    fn resolve(&self, r: &str) -> Option<AbsUri> {
        if !valid_ref(r) {
            return None;
        }
        if let Some((scheme, _)) = r.split_once(':') {
            if is_scheme(scheme) && !scheme.contains('/') {
                return AbsUri::parse(r);
            }
        }
        if let Some(net) = r.strip_prefix("//") {
            return AbsUri::parse(&format!("{}://{}", self.scheme, net));
        }
        let (path, query) = split_query(r);
        let (path, query) = if path.is_empty() {
            (
                self.path.clone(),
                query.map(str::to_owned).or_else(|| self.query.clone()),
            )
        } else if path.starts_with('/') {
            (remove_dot_segments(path), query.map(str::to_owned))
        } else {
            // §5.2.3 merge: base path up to its last '/', then the reference.
            let dir = match self.path.rfind('/') {
                Some(i) => self.path.get(..=i).unwrap_or("/"),
                None => "/",
            };
            (
                remove_dot_segments(&format!("{dir}{path}")),
                query.map(str::to_owned),
            )
        };
        Some(AbsUri {
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            path,
            query,
        })
    }

    fn same_origin(&self, other: &AbsUri) -> bool {
        self.scheme.eq_ignore_ascii_case(&other.scheme)
            && normalise_authority(&self.scheme, &self.authority)
                == normalise_authority(&other.scheme, &other.authority)
    }
}

/// Lower-case host, no userinfo, default port removed (RFC 3986 §6.2.3).
fn normalise_authority(scheme: &str, authority: &str) -> String {
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    let lower = hostport.to_ascii_lowercase();
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => Some(":80"),
        "https" => Some(":443"),
        _ => None,
    };
    match default {
        Some(d) if lower.ends_with(d) => {
            lower.get(..lower.len() - d.len()).unwrap_or("").to_owned()
        }
        _ => lower.strip_suffix(':').map(str::to_owned).unwrap_or(lower),
    }
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let absolute = path.starts_with('/');
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        if i == 0 && absolute {
            continue;
        }
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::new();
    if absolute {
        s.push('/');
    }
    s.push_str(&out.join("/"));
    if trailing_slash && !s.ends_with('/') {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::HeaderValue;

    use crate::test_util::headers;

    #[test]
    fn hop_by_hop() {
        let mut h = headers(&[
            ("connection", "a, B"),
            ("connection", "close"),
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authentication-info", "x"),
            ("cache-control", "max-age=1"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["c", "cache-control"]);
        // Garbage in Connection is ignored.
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_bytes(b"\xff, , x y").unwrap());
        h.insert("x", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key("x"));
    }

    #[test]
    fn before_store() {
        let mut h = headers(&[
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("set-cookie", "s=1"),
            ("keep-alive", "x"),
        ]);
        let cc = ResponseCacheControl::parse([&HeaderValue::from_static(
            "no-cache=\"a, b\", private=\"set-cookie\", max-age=3600",
        )]);
        strip_before_store(&mut h, &cc);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["c"]);
    }

    fn targets(method: &str, status: u16, uri: &str, resp: &[(&str, &str)]) -> Vec<String> {
        invalidation_targets(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            StatusCode::from_u16(status).unwrap(),
            uri,
            &headers(resp),
        )
    }

    #[test]
    fn invalidation() {
        let base = "http://example.com/test/abc";
        assert!(targets("GET", 200, base, &[]).is_empty());
        assert!(targets("HEAD", 200, base, &[]).is_empty());
        assert!(targets("OPTIONS", 200, base, &[]).is_empty());
        assert!(targets("POST", 500, base, &[]).is_empty());
        assert!(targets("POST", 404, base, &[]).is_empty());
        assert_eq!(targets("POST", 200, base, &[]), vec![base]);
        assert_eq!(targets("PUT", 201, base, &[]), vec![base]);
        assert_eq!(targets("DELETE", 204, base, &[]), vec![base]);
        assert_eq!(targets("M-SEARCH", 200, base, &[]), vec![base]);
        assert_eq!(targets("POST", 303, base, &[]), vec![base]);
        assert_eq!(
            targets("POST", 200, "http://example.com/test/abc?q=1#frag", &[]),
            vec!["http://example.com/test/abc?q=1"]
        );
        // http-cache-tests magic_locations: absolute-path references.
        assert_eq!(
            targets(
                "POST",
                200,
                base,
                &[
                    ("location", "/test/abc/location_target"),
                    ("content-location", "/test/abc/content_location_target")
                ]
            ),
            vec![
                base.to_string(),
                "http://example.com/test/abc/location_target".into(),
                "http://example.com/test/abc/content_location_target".into()
            ]
        );
        // Relative, absolute same-origin (different spelling), cross-origin, garbage.
        assert_eq!(
            targets(
                "POST",
                200,
                "http://example.com/a/b?x",
                &[("location", "c/../d?y")]
            ),
            vec!["http://example.com/a/b?x", "http://example.com/a/d?y"]
        );
        assert_eq!(
            targets(
                "POST",
                200,
                "http://example.com/a/b",
                &[("location", "HTTP://EXAMPLE.com:80/z")]
            ),
            vec!["http://example.com/a/b", "http://example.com/z"]
        );
        assert_eq!(
            targets(
                "POST",
                200,
                "http://example.com/a/b",
                &[("location", "//example.com/n")]
            ),
            vec!["http://example.com/a/b", "http://example.com/n"]
        );
        assert_eq!(
            targets(
                "POST",
                200,
                "http://example.com/a/b",
                &[("location", "http://evil.com/a/b")]
            ),
            vec!["http://example.com/a/b"]
        );
        assert_eq!(
            targets(
                "POST",
                200,
                "http://example.com/a/b",
                &[("location", "https://example.com/a/b")]
            ),
            vec!["http://example.com/a/b"]
        );
        assert_eq!(
            targets(
                "POST",
                200,
                "http://example.com/a/b",
                &[("content-location", "")]
            ),
            vec!["http://example.com/a/b"]
        );
        assert_eq!(
            targets(
                "POST",
                200,
                "http://example.com/a/b",
                &[("content-location", "?q=2")]
            ),
            vec!["http://example.com/a/b", "http://example.com/a/b?q=2"]
        );
        assert_eq!(
            targets(
                "POST",
                200,
                "http://example.com/a/b",
                &[("location", "/x y")]
            ),
            vec!["http://example.com/a/b"]
        );
        assert!(targets("POST", 200, "not a uri", &[]).is_empty());
        assert!(targets("POST", 200, "/relative", &[]).is_empty());
        assert!(targets("POST", 200, "http://", &[]).is_empty());
        assert_eq!(targets("POST", 200, "http://h", &[]), vec!["http://h/"]);
    }

    #[test]
    fn dot_segments() {
        // RFC 3986 §5.4 examples (paths only).
        for (input, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("mid/content=5/../6", "mid/6"),
            ("/a/b/../../../g", "/g"),
            ("/a/./", "/a/"),
            ("/a/..", "/"),
            ("/a/b/.", "/a/b/"),
            ("/", "/"),
        ] {
            assert_eq!(remove_dot_segments(input), want, "{input}");
        }
        let base = AbsUri::parse("http://a/b/c/d;p?q").unwrap();
        for (r, want) in [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g/"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q"),
            (";x", "http://a/b/c/;x"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../../g", "http://a/g"),
            ("g;x=1/../y", "http://a/b/c/y"),
        ] {
            assert_eq!(base.resolve(r).unwrap().to_string(), want, "{r}");
        }
    }

    proptest::proptest! {
        #[test]
        fn invalidation_never_panics(uri in "\\PC{0,40}", loc in "\\PC{0,40}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&loc) {
                h.insert(LOCATION, v.clone());
                h.insert(CONTENT_LOCATION, v);
            }
            let _ = invalidation_targets(&Method::POST, StatusCode::OK, &uri, &h);
            let _ = invalidation_targets(&Method::POST, StatusCode::OK, &format!("http://h/{uri}"), &h);
        }
    }
}
