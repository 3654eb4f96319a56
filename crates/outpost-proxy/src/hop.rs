//! Upstream hops: where a node sends what it cannot answer. [`Upstream`] is the seam: the
//! tenant's origin pool ([`OriginHop`]) is one implementation, a peer set chosen by key (a PoP's
//! owner box, an origin's shield set: `tier::PeerHop`) the other. Everything a hop adds to a
//! request is built here, in one place ([`HopHeaders`]): hop-by-hop fields removed, `Via`,
//! `X-Forwarded-For`, `CDN-Loop` (RFC 8586), `Surrogate-Capability`, and for cache fills the
//! removal of what the cache key does not account for. On the way back, the upstream's
//! `Cache-Status` members are kept and this node's member is appended after them (RFC 9211 §2),
//! by `respond::finish`.

use crate::error::ProxyError;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response};
use hyper::body::Incoming;
use outpost_http::headers::strip_hop_by_hop;
use outpost_http::vary;
use outpost_upstream::{OriginPool, ReqBody};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// One request for an upstream hop.
pub struct HopRequest<'a> {
    /// The hash the hop picks a member by (the primary cache key's; the URL's for passes).
    pub key: u64,
    /// Method.
    pub method: &'a Method,
    /// Path and query (origin-form).
    pub path_and_query: &'a str,
    /// Headers, already shaped by [`HopHeaders`].
    pub headers: HeaderMap,
    /// Body (`None`: bodiless, so it may be retried on another server of the hop).
    pub body: Option<ReqBody>,
}

/// What a hop returns.
pub type HopResult = Result<Response<Incoming>, ProxyError>;

/// The future of a hop request.
pub type HopFuture<'a> = Pin<Box<dyn Future<Output = HopResult> + Send + 'a>>;

/// An upstream hop: a set of servers that answer HTTP requests for a node.
pub trait Upstream: Send + Sync + 'static {
    /// Name for logs.
    fn name(&self) -> &str;
    /// Send one request.
    fn send<'a>(&'a self, req: HopRequest<'a>) -> HopFuture<'a>;
}

/// The tenant's origins: keep-alive pool, failover in order, timeouts.
pub struct OriginHop {
    name: String,
    pool: OriginPool,
    origins: Vec<String>,
}

impl OriginHop {
    /// A hop to `origins` (`host:port`) through `pool`.
    pub fn new(tenant: &str, origins: Vec<String>, pool: OriginPool) -> Self {
        Self {
            name: format!("origin:{tenant}"),
            pool,
            origins,
        }
    }

    /// The origin authorities, in failover order.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// The connection pool (shared with a later snapshot whose origins did not change).
    pub fn pool(&self) -> &OriginPool {
        &self.pool
    }
}

impl Upstream for OriginHop {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, req: HopRequest<'a>) -> HopFuture<'a> {
        Box::pin(async move {
            self.pool
                .send(
                    req.key,
                    req.method,
                    req.path_and_query,
                    &req.headers,
                    req.body,
                )
                .await
                .map_err(ProxyError::upstream)
        })
    }
}

static CDN_LOOP: header::HeaderName = header::HeaderName::from_static("cdn-loop");
static SURROGATE_CAPABILITY: header::HeaderName =
    header::HeaderName::from_static("surrogate-capability");
static X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");

/// Request headers an origin may reflect into a response but the cache key does not account for
/// (reference 003 §16: unkeyed input → keyed output is how caches get poisoned).
const UNKEYED: [&str; 11] = [
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-proto",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "forwarded",
];

/// Builds the request headers of one hop.
pub struct HopHeaders<'a> {
    /// This node's name (`Via`, `CDN-Loop`).
    pub node: &'a str,
    /// The client (appended to `X-Forwarded-For`).
    pub peer: SocketAddr,
}

impl HopHeaders<'_> {
    /// RFC 8586: a request whose `CDN-Loop` already names this node came back to it; forwarding
    /// it again would loop. Checked before every upstream request (508), not on hits.
    pub fn check_loop(&self, client: &HeaderMap) -> Result<(), ProxyError> {
        let looped = client
            .get_all(&CDN_LOOP)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|member| member.split(';').next())
            .any(|id| id.trim().eq_ignore_ascii_case(self.node));
        if looped {
            return Err(ProxyError::client(
                crate::error::ErrorClass::LoopDetected,
                "CDN-Loop already names this node",
            ));
        }
        Ok(())
    }

    /// Headers for a request forwarded as is (pass, unsafe methods): hop-by-hop fields removed,
    /// forwarding fields added.
    pub fn pass(&self, mut h: HeaderMap) -> HeaderMap {
        strip_hop_by_hop(&mut h);
        self.forwarding(&mut h);
        h
    }

    /// Headers for a cache fill or revalidation made on behalf of `client`: what the cache key
    /// does not account for is removed (client conditionals and Range, since the cache fetches
    /// whole objects; its own Cache-Control; unkeyed override headers; Cookie unless the key holds
    /// a cookie bucket), and the normalised `Accept-Encoding` / `Accept-Language` buckets the key
    /// holds are sent instead of the raw values, so a stored variant is what its key promises.
    pub fn fill(&self, client: &HeaderMap, keep_cookie: bool) -> HeaderMap {
        let mut h = client.clone();
        strip_hop_by_hop(&mut h);
        for name in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::RANGE,
            header::CACHE_CONTROL,
            header::PRAGMA,
        ] {
            h.remove(name);
        }
        strip_unkeyed(&mut h);
        if let Some(ae) = vary::normalised_accept_encoding(client) {
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(ae));
        }
        if let Some(al) = vary::normalised_accept_language(client).filter(|a| !a.is_empty()) {
            if let Ok(v) = HeaderValue::from_str(&al) {
                h.insert(header::ACCEPT_LANGUAGE, v);
            }
        }
        h.insert(
            SURROGATE_CAPABILITY.clone(),
            HeaderValue::from_static("outpost=\"Surrogate/1.0\""),
        );
        if !keep_cookie {
            h.remove(header::COOKIE);
        }
        self.forwarding(&mut h);
        h
    }

    /// `Via`, `X-Forwarded-For` and `CDN-Loop` (RFC 8586 §2: each CDN adds its own member, so a
    /// request that comes back to a node that already handled it can be recognised).
    /// [`HopHeaders::pass`] for `client`, written as field lines through `emit` instead of
    /// into a new `HeaderMap` (a pipelined ask to the owner box writes them straight into its
    /// request head); `log` is this node's control-log position (`Outpost-Log`), if any.
    pub fn pass_fields(
        &self,
        client: &HeaderMap,
        log: Option<u64>,
        mut emit: impl FnMut(&[u8], &[u8]),
    ) {
        let listed = outpost_http::headers::connection_listed(client);
        let log = log.filter(|&s| s > 0);
        let mut prev_xff: Option<&[u8]> = None;
        for (name, value) in client {
            if outpost_http::headers::is_hop_by_hop(name)
                || listed.contains(name)
                || (log.is_some() && name == crate::log_position::OUTPOST_LOG)
            {
                continue;
            }
            if name == X_FORWARDED_FOR {
                if prev_xff.is_none() {
                    prev_xff = Some(value.as_bytes());
                }
                continue;
            }
            emit(name.as_str().as_bytes(), value.as_bytes());
        }
        emit(b"via", format!("1.1 {}", self.node).as_bytes());
        let ip = self.peer.ip().to_string();
        match prev_xff {
            Some(prev) => {
                let mut v = prev.to_vec();
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip.as_bytes());
                emit(b"x-forwarded-for", &v);
            }
            None => emit(b"x-forwarded-for", ip.as_bytes()),
        }
        emit(b"cdn-loop", self.node.as_bytes());
        if let Some(seq) = log {
            let mut buf = itoa::Buffer::new();
            emit(b"outpost-log", buf.format(seq).as_bytes());
        }
    }

    fn forwarding(&self, h: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&format!("1.1 {}", self.node)) {
            h.append(header::VIA, v);
        }
        let ip = self.peer.ip().to_string();
        let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(self.node) {
            h.append(CDN_LOOP.clone(), v);
        }
    }
}

fn strip_unkeyed(h: &mut HeaderMap) {
    for name in UNKEYED {
        h.remove(name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hh() -> HopHeaders<'static> {
        HopHeaders {
            node: "edge1",
            peer: "192.0.2.9:5555".parse().unwrap(),
        }
    }

    #[test]
    fn fill_headers_drop_what_the_key_does_not_hold() {
        let mut c = HeaderMap::new();
        c.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        c.insert("range", HeaderValue::from_static("bytes=0-1"));
        c.insert("if-none-match", HeaderValue::from_static("\"a\""));
        c.insert("cookie", HeaderValue::from_static("s=1"));
        c.insert("accept", HeaderValue::from_static("*/*"));
        c.insert("connection", HeaderValue::from_static("close"));
        let h = hh().fill(&c, false);
        for gone in [
            "x-forwarded-host",
            "range",
            "if-none-match",
            "cookie",
            "connection",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["accept"], "*/*");
        assert_eq!(h["via"], "1.1 edge1");
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
        assert_eq!(h["cdn-loop"], "edge1");
        assert!(hh().fill(&c, true).contains_key("cookie"));
    }

    #[test]
    fn cdn_loop_members() {
        let mut h = HeaderMap::new();
        h.append("cdn-loop", HeaderValue::from_static("other; v=1, Edge1"));
        assert!(hh().check_loop(&h).is_err());
        let other = HopHeaders {
            node: "edge2",
            ..hh()
        };
        assert!(other.check_loop(&h).is_ok());
        assert!(hh().check_loop(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn pass_fields_write_what_pass_builds() {
        let mut c = HeaderMap::new();
        c.insert("host", HeaderValue::from_static("a.test"));
        c.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        c.append("x-forwarded-for", HeaderValue::from_static("198.51.100.2"));
        c.insert("cdn-loop", HeaderValue::from_static("other-cdn"));
        c.insert("via", HeaderValue::from_static("1.1 client-proxy"));
        c.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        c.insert("x-secret", HeaderValue::from_static("1"));
        c.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        c.insert("te", HeaderValue::from_static("trailers"));
        c.insert("accept-encoding", HeaderValue::from_static("gzip"));
        c.append("accept", HeaderValue::from_static("a/b"));
        c.append("accept", HeaderValue::from_static("c/d"));
        for log in [None, Some(0), Some(42)] {
            c.insert("outpost-log", HeaderValue::from_static("7"));
            let mut built = hh().pass(c.clone());
            if let Some(seq) = log.filter(|&s| s > 0) {
                built.insert("outpost-log", HeaderValue::from(seq));
            }
            let mut want: Vec<(String, Vec<u8>)> = built
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect();
            let mut got = Vec::new();
            hh().pass_fields(&c, log, |n, v| {
                got.push((String::from_utf8(n.to_vec()).unwrap(), v.to_vec()))
            });
            // Same fields, same order within each name.
            want.sort_by(|a, b| a.0.cmp(&b.0));
            got.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, want, "log {log:?}");
        }
    }

    #[test]
    fn forwarding_appends() {
        let mut c = HeaderMap::new();
        c.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        c.insert("cdn-loop", HeaderValue::from_static("other-cdn"));
        let h = hh().pass(c);
        assert_eq!(h["x-forwarded-for"], "198.51.100.1, 192.0.2.9");
        let loops: Vec<_> = h.get_all("cdn-loop").iter().collect();
        assert_eq!(loops, ["other-cdn", "edge1"]);
    }
}
