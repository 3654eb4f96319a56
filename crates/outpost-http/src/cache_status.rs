//! `Cache-Status` (RFC 9211): one list member per cache that handled the
//! response, rendered as an RFC 8941 Structured Field. Each tier appends its own
//! member after those received from upstream (§2: "the most recent ... last").

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The `Cache-Status` field name.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// RFC 9211 entry. Display renders e.g. `Outpost-edge1; hit; ttl=42`, `Outpost-edge1; fwd=uri-miss; fwd-status=200; stored; collapsed`, `...; fwd=bypass; detail="no-store"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    /// Cache name (sf-token when possible, else sf-string).
    pub node: String,
    /// §2.1 `hit`.
    pub hit: bool,
    /// §2.2 `fwd`.
    pub fwd: Option<Fwd>,
    /// §2.3 `fwd-status`.
    pub fwd_status: Option<u16>,
    /// §2.5 `stored`.
    pub stored: bool,
    /// §2.6 `collapsed`.
    pub collapsed: bool,
    /// §2.4 `ttl` (negative when stale).
    pub ttl: Option<i64>,
    /// §2.8 `detail` (always rendered as an sf-string).
    pub detail: Option<String>,
}

/// RFC 9211 §2.2 forward reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Configured or directed not to use the cache.
    Bypass,
    /// Request method not cacheable.
    Method,
    /// No stored response for the URI.
    UriMiss,
    /// Stored responses, but none matching Vary.
    VaryMiss,
    /// Miss without a more specific reason.
    Miss,
    /// Request directives prevented reuse.
    Request,
    /// Stored response was stale.
    Stale,
    /// Stored response was partial.
    Partial,
}

impl Fwd {
    /// The RFC 9211 token.
    pub fn as_str(&self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Miss => "miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
            Fwd::Partial => "partial",
        }
    }
}

impl CacheStatus {
    /// A hit at `node`.
    pub fn hit(node: &str) -> Self {
        CacheStatus {
            node: node.to_owned(),
            hit: true,
            fwd: None,
            fwd_status: None,
            stored: false,
            collapsed: false,
            ttl: None,
            detail: None,
        }
    }

    /// A forward from `node` for `fwd`.
    pub fn fwd(node: &str, fwd: Fwd) -> Self {
        CacheStatus {
            hit: false,
            fwd: Some(fwd),
            ..CacheStatus::hit(node)
        }
    }

    /// Rendered as a header value.
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::try_from(self.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("Outpost"))
    }

    /// Append this entry after the members already in `h` (from upstream
    /// tiers), keeping a single field line: `upstream, ..., this`.
    pub fn append_to(&self, h: &mut HeaderMap) {
        let mut value = upstream_members(h);
        if !value.is_empty() {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(self.to_string().as_bytes());
        let hv = HeaderValue::from_bytes(&value).unwrap_or_else(|_| self.to_header_value());
        h.insert(CACHE_STATUS, hv);
    }
}

/// The members of every `Cache-Status` field line in `h` (those of upstream tiers), trimmed and
/// joined with `, ` into one value; empty when there are none.
pub fn upstream_members(h: &HeaderMap) -> Vec<u8> {
    let mut value: Vec<u8> = Vec::new();
    for v in h.get_all(CACHE_STATUS) {
        let v = crate::lex::trim_ows(v.as_bytes());
        if v.is_empty() {
            continue;
        }
        if !value.is_empty() {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(v);
    }
    value
}

/// The `Cache-Status` value of a hit, rendered without the formatting machinery: the node's
/// `name; hit; ttl=` prefix is built once, and a hit only appends the TTL (after any members from
/// upstream tiers). Equal to `CacheStatus::hit(node)` with `ttl` set, rendered.
#[derive(Debug, Clone)]
pub struct HitStatus {
    prefix: String,
}

impl HitStatus {
    /// The hit prefix for `node`.
    pub fn new(node: &str) -> Self {
        HitStatus {
            prefix: format!("{}; ttl=", CacheStatus::hit(node)),
        }
    }

    /// `upstream, ..., node; hit; ttl=N` as a header value; `upstream` is the stored response's
    /// own members, already joined (empty when none).
    pub fn value(&self, upstream: &[u8], ttl: i64) -> HeaderValue {
        let mut digits = itoa::Buffer::new();
        let ttl = digits.format(ttl.clamp(-SF_INTEGER_MAX, SF_INTEGER_MAX));
        let mut v = Vec::with_capacity(upstream.len() + 2 + self.prefix.len() + ttl.len());
        if !upstream.is_empty() {
            v.extend_from_slice(upstream);
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(self.prefix.as_bytes());
        v.extend_from_slice(ttl.as_bytes());
        // Bytes from a Vec is zero-copy, and from_maybe_shared keeps it.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(v))
            .unwrap_or_else(|_| HeaderValue::from_static("Outpost"))
    }
}

/// RFC 8941 §3.3.4 sf-token: `( ALPHA / "*" ) *( tchar / ":" / "/" )`.
fn is_sf_token(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'*')
        && b.all(|c| crate::lex::is_tchar(c) || c == b':' || c == b'/')
}

/// RFC 8941 §3.3.3 sf-string; characters outside %x20-7E become `?`.
fn write_sf_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' | '\\' => write!(f, "\\{c}")?,
            ' '..='~' => write!(f, "{c}")?,
            _ => f.write_str("?")?,
        }
    }
    f.write_str("\"")
}

/// RFC 8941 §3.3.1: integers have at most 15 digits.
const SF_INTEGER_MAX: i64 = 999_999_999_999_999;

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_sf_token(&self.node) {
            f.write_str(&self.node)?;
        } else {
            write_sf_string(f, &self.node)?;
        }
        if self.hit {
            f.write_str("; hit")?;
        }
        if let Some(fwd) = self.fwd {
            write!(f, "; fwd={}", fwd.as_str())?;
        }
        if let Some(s) = self.fwd_status {
            write!(f, "; fwd-status={s}")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={}", ttl.clamp(-SF_INTEGER_MAX, SF_INTEGER_MAX))?;
        }
        if self.stored {
            f.write_str("; stored")?;
        }
        if self.collapsed {
            f.write_str("; collapsed")?;
        }
        if let Some(d) = &self.detail {
            f.write_str("; detail=")?;
            write_sf_string(f, d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hit_status_matches_display() {
        for node in ["Outpost-edge1", "edge", "with space", "q\"uote"] {
            let fast = HitStatus::new(node);
            for ttl in [0, 1, 42, -7, i64::MAX, i64::MIN, 31_536_000] {
                let mut slow = CacheStatus::hit(node);
                slow.ttl = Some(ttl);
                assert_eq!(fast.value(b"", ttl).to_str().unwrap(), slow.to_string());
                assert_eq!(
                    fast.value(b"up; hit", ttl).to_str().unwrap(),
                    format!("up; hit, {slow}")
                );
            }
        }
    }

    #[test]
    fn rendering() {
        let mut hit = CacheStatus::hit("Outpost-edge1");
        hit.ttl = Some(42);
        assert_eq!(hit.to_string(), "Outpost-edge1; hit; ttl=42");

        let mut miss = CacheStatus::fwd("Outpost-edge1", Fwd::UriMiss);
        miss.fwd_status = Some(200);
        miss.stored = true;
        miss.collapsed = true;
        assert_eq!(
            miss.to_string(),
            "Outpost-edge1; fwd=uri-miss; fwd-status=200; stored; collapsed"
        );

        let mut bypass = CacheStatus::fwd("Outpost-edge1", Fwd::Bypass);
        bypass.detail = Some("no-store".into());
        assert_eq!(
            bypass.to_string(),
            "Outpost-edge1; fwd=bypass; detail=\"no-store\""
        );

        let mut odd = CacheStatus::fwd("edge 1 \"x\"\\é", Fwd::Stale);
        odd.ttl = Some(i64::MIN);
        odd.detail = Some("a\"b".into());
        assert_eq!(
            odd.to_string(),
            "\"edge 1 \\\"x\\\"\\\\?\"; fwd=stale; ttl=-999999999999999; detail=\"a\\\"b\""
        );
        assert_eq!(CacheStatus::hit("1edge").to_string(), "\"1edge\"; hit");
        assert_eq!(CacheStatus::hit("*x:y/z").to_string(), "*x:y/z; hit");
        assert_eq!(CacheStatus::hit("").to_string(), "\"\"; hit");
        for f in [
            Fwd::Bypass,
            Fwd::Method,
            Fwd::UriMiss,
            Fwd::VaryMiss,
            Fwd::Miss,
            Fwd::Request,
            Fwd::Stale,
            Fwd::Partial,
        ] {
            assert!(is_sf_token(f.as_str()));
        }
        assert_eq!(hit.to_header_value(), "Outpost-edge1; hit; ttl=42");
    }

    #[test]
    fn appending() {
        let mut h = HeaderMap::new();
        let mut shield = CacheStatus::fwd("Outpost-shield1", Fwd::UriMiss);
        shield.fwd_status = Some(200);
        shield.append_to(&mut h);
        CacheStatus::fwd("Outpost-edge1", Fwd::UriMiss).append_to(&mut h);
        assert_eq!(
            h.get(CACHE_STATUS).unwrap(),
            "Outpost-shield1; fwd=uri-miss; fwd-status=200, Outpost-edge1; fwd=uri-miss"
        );
        let mut h = HeaderMap::new();
        h.append(CACHE_STATUS, HeaderValue::from_static("Origin; hit"));
        h.append(CACHE_STATUS, HeaderValue::from_static(""));
        CacheStatus::hit("e").append_to(&mut h);
        assert_eq!(h.get_all(CACHE_STATUS).iter().count(), 1);
        assert_eq!(h.get(CACHE_STATUS).unwrap(), "Origin; hit, e; hit");
    }
}
