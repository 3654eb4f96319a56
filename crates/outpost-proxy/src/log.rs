//! What one request leaves behind: the facts gathered on its way ([`RequestLog`]), counted in the
//! metrics and written as one JSON access-log line when enabled.

use crate::metrics::{Facing, Outcome, TenantStats};
use crate::Node;
use http::{HeaderMap, Method};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

/// Facts about one request gathered for metrics and the access log.
pub struct RequestLog {
    /// Request id (0 until one is needed: access log, debug span or an error answer).
    pub id: u64,
    /// The tenant's counters, once the tenant is known.
    pub tenant: Option<&'static TenantStats>,
    /// Outcome.
    pub outcome: Outcome,
    /// Canonical URL, once known (kept only when `detailed`).
    pub url: String,
    /// Cache-Status value sent (kept only when `detailed`).
    pub cache_status: String,
    /// Whether the access log wants the string fields.
    pub detailed: bool,
    /// Sent by another tier of the CDN (its `CDN-Loop` names a topology member): not counted in
    /// client analytics, and answered with the object's surrogate keys.
    pub internal: bool,
    /// `Strict-Transport-Security` for the answer (an HTTPS request of a tenant that sets it).
    pub hsts: Option<http::HeaderValue>,
    /// A PoP peer's pipelined ask this node declined (not cached here, too large, behind the
    /// peer's control log): not a request of its own (the peer's ordinary request follows and
    /// is counted), so it is neither counted nor logged.
    pub declined: bool,
    started: Instant,
    method: Method,
    host: String,
    path: String,
    peer: SocketAddr,
}

impl RequestLog {
    /// Start the record of a request.
    pub fn start(
        node: &Node,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Self {
        let detailed = node.access_log;
        let (host, path) = if detailed {
            let host = uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| {
                    headers
                        .get(http::header::HOST)
                        .and_then(|v| v.to_str().ok())
                })
                .unwrap_or("");
            (host.to_string(), uri.path().to_string())
        } else {
            (String::new(), String::new())
        };
        Self {
            id: if detailed { node.next_request_id() } else { 0 },
            tenant: None,
            outcome: Outcome::Rejected,
            url: String::new(),
            cache_status: String::new(),
            detailed,
            started: Instant::now(),
            internal: node.tier.as_ref().is_some_and(|t| t.from_member(headers)),
            hsts: None,
            declined: false,
            method: method.clone(),
            host,
            path,
            peer,
        }
    }

    /// The record of a request the node makes itself (a background revalidation): counted under
    /// its tenant, never written to the access log.
    pub fn background(tenant: &'static TenantStats) -> Self {
        Self {
            id: 0,
            tenant: Some(tenant),
            outcome: Outcome::Miss,
            url: String::new(),
            cache_status: String::new(),
            detailed: false,
            // Not a client's request: not in client analytics.
            internal: true,
            hsts: None,
            declined: false,
            started: Instant::now(),
            method: Method::GET,
            host: String::new(),
            path: String::new(),
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// The request id, made now if none was needed so far.
    pub fn id(&mut self, node: &Node) -> u64 {
        if self.id == 0 {
            self.id = node.next_request_id();
        }
        self.id
    }

    /// Count the request and write its access-log line.
    /// Whether a miss or forward here was answered from another tier's cache (the owner box,
    /// a shield), read from the response's `Cache-Status`: its first member is the tier nearest
    /// the origin.
    fn answered_upstream_from_cache(&self, headers: &HeaderMap) -> bool {
        matches!(self.outcome, Outcome::Forwarded | Outcome::Miss)
            && headers
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|first| first.contains("; hit"))
    }

    pub fn finish(self, node: &Node, status: u16, headers: &HeaderMap) {
        if self.declined {
            return;
        }
        let micros = self.started.elapsed().as_micros() as u64;
        let bytes = if self.method == Method::HEAD {
            0
        } else {
            headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let facing = if self.internal {
            Facing::Internal
        } else {
            Facing::Client {
                upstream_hit: self.answered_upstream_from_cache(headers),
            }
        };
        node.metrics
            .record(self.tenant, self.outcome, status, bytes, micros, facing);
        if !self.detailed {
            return;
        }
        let line = serde_json::json!({
            "ts": httpdate::fmt_http_date(node.clock.now()),
            "id": self.id,
            "node": node.name,
            "client": self.peer.ip().to_string(),
            "method": self.method.as_str(),
            "host": self.host,
            "path": self.path,
            "url": self.url,
            "status": status,
            "outcome": self.outcome.as_str(),
            "cache_status": self.cache_status,
            "bytes": bytes,
            "duration_ms": micros as f64 / 1000.0,
            "tenant": self.tenant.as_ref().map(|t| t.name()),
        });
        node.write_access_log(&line.to_string());
    }
}

/// The current time as an HTTP-date, for `Date` fields the node adds.
pub fn http_date(t: SystemTime) -> http::HeaderValue {
    http::HeaderValue::from_str(&httpdate::fmt_http_date(t)).unwrap_or(
        http::HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    )
}
