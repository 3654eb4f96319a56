//! Cache-key canonicalisation: one canonical form for every URL that names the same resource.
//!
//! Lower-case host without the default port or a trailing dot; RFC 3986 §6.2.2 path normalisation
//! (percent-encoding hex upper-cased, unreserved characters decoded, dot segments removed, bytes
//! outside the allowed set percent-encoded); the query split into parameters, tracking parameters
//! dropped (unless kept), allow/deny lists applied, then sorted by name (stable, so repeated names keep
//! their order). The key text is `tenant|host|path?query|extra` where `extra` carries cookie buckets;
//! the canonical path-and-query is also what is forwarded upstream, so the key accounts for every input
//! the origin sees.

use std::fmt;

/// Query parameters dropped by default: analytics click ids that never change a response.
pub const TRACKING_PARAMS: &[&str] = &[
    "utm_*",
    "fbclid",
    "gclid",
    "gclsrc",
    "dclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "mc_cid",
    "mc_eid",
    "yclid",
    "igshid",
    "_ga",
    "_gl",
    "_hsenc",
    "_hsmi",
    "mkt_tok",
    "ttclid",
    "twclid",
    "li_fat_id",
    "srsltid",
];

/// Query-parameter rules for a tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRules {
    /// If non-empty, only these parameters are kept.
    pub allow: Vec<String>,
    /// Parameters dropped in addition to tracking ones (`name` or `prefix*`).
    pub deny: Vec<String>,
    /// Keep tracking parameters instead of dropping them.
    pub keep_tracking: bool,
}

/// Why a URL could not be canonicalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The Host is empty or has characters a hostname cannot have.
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// The request target is not origin-form (`/path?query`).
    #[error("request target must start with '/'")]
    NotOriginForm,
}

/// The canonical request URL a key is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalUrl {
    /// Lower-case host, with a port only when it is not the default.
    pub host: String,
    /// Normalised path (always starts with '/').
    pub path: String,
    /// Normalised, filtered, sorted query without the '?' (empty when none).
    pub query: String,
}

impl CanonicalUrl {
    /// Path and query as forwarded upstream.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// The cache key text for a tenant namespace and extra key material (cookie buckets).
    pub fn key_text(&self, tenant: &str, extra: &str) -> String {
        let mut s = String::with_capacity(
            tenant.len() + self.host.len() + self.path.len() + self.query.len() + extra.len() + 4,
        );
        s.push_str(tenant);
        s.push('|');
        s.push_str(&self.host);
        s.push_str(&self.path);
        if !self.query.is_empty() {
            s.push('?');
            s.push_str(&self.query);
        }
        s.push('|');
        s.push_str(extra);
        s
    }

    /// `http://host/path?query`, the absolute URI used for invalidation matching.
    pub fn absolute(&self) -> String {
        format!("http://{}{}", self.host, self.path_and_query())
    }
}

impl fmt::Display for CanonicalUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.path)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        Ok(())
    }
}

/// Canonicalise `host` (from the Host header, may carry a port) and an origin-form request target.
pub fn canonicalize(
    host: &str,
    target: &str,
    rules: &QueryRules,
) -> Result<CanonicalUrl, KeyError> {
    canonicalize_target(canonical_host(host)?, target, rules)
}

/// [`canonicalize`] for a host already passed through [`canonical_host`] (the request path
/// canonicalises the Host once, to find the tenant, and reuses it here).
pub fn canonicalize_target(
    host: String,
    target: &str,
    rules: &QueryRules,
) -> Result<CanonicalUrl, KeyError> {
    if !target.starts_with('/') {
        return Err(KeyError::NotOriginForm);
    }
    let target = target.split('#').next().unwrap_or("");
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let normalized = normalize_pct(raw_path, PctContext::Path);
    let path = remove_dot_segments(&normalized);
    let query = raw_query
        .map(|q| canonical_query(q, rules))
        .unwrap_or_default();
    Ok(CanonicalUrl { host, path, query })
}

/// Lower-case the host, drop `:80` and a trailing dot, and check its characters: a registered
/// name (letters, digits, `-`, `_`, non-empty dot-separated labels) or a bracketed IPv6 literal,
/// then an optional port of 1-5 digits (normalised, so `:080` is `:80` and is dropped).
pub fn canonical_host(raw: &str) -> Result<String, KeyError> {
    let bad = || KeyError::InvalidHost(raw.to_string());
    let raw_t = raw.trim();
    let (name, port) = if raw_t.starts_with('[') {
        let i = raw_t.find(']').ok_or_else(bad)?;
        let rest = &raw_t[i + 1..];
        let port = match rest {
            "" => None,
            r => Some(r.strip_prefix(':').ok_or_else(bad)?),
        };
        let inner = &raw_t[1..i];
        let ok = !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ok {
            return Err(bad());
        }
        (&raw_t[..=i], port)
    } else {
        match raw_t.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw_t, None),
        }
    };
    let is_v6 = name.starts_with('[');
    let name = if is_v6 {
        name
    } else {
        let n = name.strip_suffix('.').unwrap_or(name);
        let ok = !n.is_empty()
            && n.len() <= 253
            && n.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !ok {
            return Err(bad());
        }
        n
    };
    let mut out = name.to_ascii_lowercase();
    match port {
        None | Some("") => {}
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: u16 = p.parse().map_err(|_| bad())?;
            if n != 80 {
                out.push(':');
                out.push_str(&n.to_string());
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PctContext {
    Path,
    Query,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_allowed_raw(b: u8, ctx: PctContext) -> bool {
    // pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; query adds "/" and "?".
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
        || (ctx == PctContext::Path && b == b'/')
        || (ctx == PctContext::Query && matches!(b, b'/' | b'?'))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_pct(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// RFC 3986 §6.2.2.1/§6.2.2.2: upper-case percent-encodings, decode unreserved, encode the rest.
fn normalize_pct(s: &str, ctx: PctContext) -> String {
    let b = s.as_bytes();
    // Fast path: nothing encoded and nothing to encode (most request targets).
    if b.iter().all(|&c| c != b'%' && is_allowed_raw(c, ctx)) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) {
                let v = h * 16 + l;
                if is_unreserved(v) {
                    out.push(v as char);
                } else {
                    push_pct(&mut out, v);
                }
                i += 3;
                continue;
            }
            // A stray '%' is itself encoded so the result is valid and stable.
            push_pct(&mut out, b'%');
            i += 1;
            continue;
        }
        if is_allowed_raw(c, ctx) {
            out.push(c as char);
        } else {
            push_pct(&mut out, c);
        }
        i += 1;
    }
    out
}

/// RFC 3986 §5.2.4 remove_dot_segments (input already percent-normalised, so "%2E" became ".").
fn remove_dot_segments(path: &str) -> String {
    // Fast path: no dot segment and no empty segment to collapse.
    if path.starts_with('/') && !path.contains("//") && !path.contains("/.") {
        return path.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    let trailing_slash = path.ends_with('/')
        || path.ends_with("/.")
        || path.ends_with("/..")
        || path == "."
        || path == "..";
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    // Empty segments ("//") are collapsed: no origin we front distinguishes them and keeping them
    // lets "/a//b" and "/a/b" split the cache.
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() || (trailing_slash && !s.ends_with('/')) {
        s.push('/');
    }
    s
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn canonical_query(q: &str, rules: &QueryRules) -> String {
    let mut params: Vec<(String, String)> = Vec::new();
    for part in q.split('&') {
        if part.is_empty() {
            continue;
        }
        let (n, v) = match part.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (part, None),
        };
        let name = normalize_pct(n, PctContext::Query).replace('=', "%3D");
        if !rules.allow.is_empty() && !rules.allow.iter().any(|a| a == &name) {
            continue;
        }
        if !rules.keep_tracking && TRACKING_PARAMS.iter().any(|p| name_matches(p, &name)) {
            continue;
        }
        if rules.deny.iter().any(|p| name_matches(p, &name)) {
            continue;
        }
        let mut item = name.clone();
        if let Some(v) = v {
            item.push('=');
            item.push_str(&normalize_pct(v, PctContext::Query));
        }
        params.push((name, item));
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(q.len());
    for (i, (_, item)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(item);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn c(host: &str, target: &str) -> String {
        canonicalize(host, target, &QueryRules::default())
            .unwrap()
            .to_string()
    }

    #[test]
    fn table() {
        let cases = [
            ("Example.COM", "/a/b", "example.com/a/b"),
            ("example.com:80", "/", "example.com/"),
            ("example.com.", "/", "example.com/"),
            ("example.com:8080", "/", "example.com:8080/"),
            ("h", "/a/./b/../c", "h/a/c"),
            ("h", "/../../x", "h/x"),
            ("h", "/a/b/..", "h/a/"),
            ("h", "/a//b", "h/a/b"),
            ("h", "/%7euser/%2fx", "h/~user/%2Fx"),
            ("h", "/%41%42c", "h/ABc"),
            ("h", "/a%2e%2E/b", "h/a../b"),
            ("h", "/%2e%2e/b", "h/b"),
            ("h", "/sp ace", "h/sp%20ace"),
            ("h", "/bad%zz", "h/bad%25zz"),
            ("h", "/p?b=2&a=1", "h/p?a=1&b=2"),
            ("h", "/p?a=2&a=1", "h/p?a=2&a=1"),
            ("h", "/p?utm_source=x&id=3&fbclid=y&gclid=z", "h/p?id=3"),
            ("h", "/p?&&", "h/p"),
            ("h", "/p?x", "h/p?x"),
            ("h", "/p?q=%7e%2f", "h/p?q=~%2F"),
            ("h", "/p#frag", "h/p"),
            ("h", "/é", "h/%C3%A9"),
        ];
        for (host, target, want) in cases {
            assert_eq!(c(host, target), want, "{host} {target}");
        }
    }

    #[test]
    fn allow_and_deny_lists() {
        let rules = QueryRules {
            allow: vec!["page".into(), "utm_campaign".into()],
            deny: vec![],
            keep_tracking: true,
        };
        let u = canonicalize("h", "/?z=1&page=2&utm_campaign=x", &rules).unwrap();
        assert_eq!(u.query, "page=2&utm_campaign=x");
        let rules = QueryRules {
            allow: vec![],
            deny: vec!["session*".into(), "t".into()],
            keep_tracking: false,
        };
        let u = canonicalize("h", "/?sessionid=1&t=9&k=v", &rules).unwrap();
        assert_eq!(u.query, "k=v");
    }

    #[test]
    fn bad_hosts() {
        assert!(canonical_host("").is_err());
        assert!(canonical_host("a b").is_err());
        assert!(canonical_host("a:99999").is_err());
        assert!(canonical_host("evil.com/x").is_err());
        assert_eq!(canonical_host("[::1]:8080").unwrap(), "[::1]:8080");
        // Found by the canonical_url fuzz target: each must be idempotent or rejected.
        assert_eq!(canonical_host("a:080").unwrap(), "a");
        assert_eq!(canonical_host("[::1]:0080").unwrap(), "[::1]");
        assert!(canonical_host("[::1]:+080").is_err());
        assert!(canonical_host("a..").is_err());
        assert!(canonical_host("a:b:80").is_err());
        assert!(canonical_host(":[:").is_err());
        assert!(canonical_host("1::").is_err());
        assert!(canonical_host("y::1]:80").is_err());
        assert!(canonical_host("[zz]").is_err());
    }

    #[test]
    fn key_text_has_namespace() {
        let u = canonicalize("h", "/x?b=1", &QueryRules::default()).unwrap();
        assert_eq!(u.key_text("shop", ""), "shop|h/x?b=1|");
        assert_eq!(u.key_text("shop", "ab=a"), "shop|h/x?b=1|ab=a");
        assert_ne!(u.key_text("a", ""), u.key_text("b", ""));
    }

    proptest! {
        #[test]
        fn idempotent(path in "(/[a-zA-Z0-9%._~!$&'()*+,;=:@ -]{0,8}){0,5}", query in "[a-z0-9=&%._~+]{0,30}") {
            let target = if query.is_empty() { path.clone() } else { format!("{}?{}", if path.is_empty() { "/" } else { &path }, query) };
            let target = if target.starts_with('/') { target } else { format!("/{target}") };
            let once = canonicalize("Host.Example", &target, &QueryRules::default()).unwrap();
            let twice = canonicalize(&once.host, &once.path_and_query(), &QueryRules::default()).unwrap();
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn encoding_unreserved_is_equivalent(s in "[a-zA-Z0-9._~-]{1,20}") {
            let encoded: String = s.bytes().map(|b| format!("%{b:02x}")).collect();
            let a = canonicalize("h", &format!("/{s}"), &QueryRules::default()).unwrap();
            let b = canonicalize("h", &format!("/{encoded}"), &QueryRules::default()).unwrap();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn query_order_does_not_matter(mut pairs in proptest::collection::vec(("[a-z]{1,4}", "[a-z0-9]{0,4}"), 0..6)) {
            pairs.sort();
            pairs.dedup_by(|a, b| a.0 == b.0);
            let fwd: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut rev = fwd.clone();
            rev.reverse();
            let a = canonicalize("h", &format!("/p?{}", fwd.join("&")), &QueryRules::default()).unwrap();
            let b = canonicalize("h", &format!("/p?{}", rev.join("&")), &QueryRules::default()).unwrap();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn never_panics(host in "\\PC{0,20}", target in "/\\PC{0,40}") {
            let _ = canonicalize(&host, &target, &QueryRules::default());
        }

        #[test]
        fn host_idempotent(host in "[a-zA-Z0-9.:\\[\\]+_-]{0,16}") {
            if let Ok(once) = canonical_host(&host) {
                prop_assert_eq!(canonical_host(&once), Ok(once.clone()));
            }
        }
    }
}
