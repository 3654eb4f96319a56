//! Admission: what a request must be before anything else looks at it. Unambiguous framing (a
//! request with both Content-Length and Transfer-Encoding is how requests get smuggled between
//! hops, RFC 9112 §6.1: 400 and close); a method the node proxies (`CONNECT` would turn the edge
//! into a tunnel to the origin: 405, the origin is never contacted); one Host (RFC 9112 §3.2: 400
//! when missing or repeated, except that an HTTP/1.0 request without Host is served by the `*`
//! tenant when one is configured); a tenant for that Host (421 otherwise: unknown hosts never
//! touch the cache). Loops (`CDN-Loop` already naming this node) are refused where a request
//! would be forwarded (`hop::HopHeaders::check_loop`), not on hits.

use crate::error::{ErrorClass, ProxyError};
use crate::tenant::{Tenant, Tenants};
use http::{header, Method, Request, Version};
use std::sync::Arc;

/// An admitted request: its tenant and canonical host.
pub struct Admitted {
    /// The tenant serving the Host.
    pub tenant: Arc<Tenant>,
    /// Canonical host (lower case, no default port).
    pub host: String,
}

/// Admit `req` (`ambiguous_framing`: the connection saw both framing fields, conn.rs).
pub fn admit<B>(
    tenants: &Tenants,
    req: &Request<B>,
    ambiguous_framing: bool,
) -> Result<Admitted, ProxyError> {
    let h = req.headers();
    let has_te = h.contains_key(header::TRANSFER_ENCODING);
    if has_te && (ambiguous_framing || h.contains_key(header::CONTENT_LENGTH)) {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::client(
            ErrorClass::MethodNotAllowed,
            "CONNECT is not proxied",
        ));
    }
    if h.get_all(header::HOST).iter().count() > 1 {
        return Err(bad("more than one Host header"));
    }
    let Some(raw_host) = host_of(req) else {
        // RFC 9112 §3.2: HTTP/1.1 requires Host; an HTTP/1.0 client may not know it.
        if req.version() <= Version::HTTP_10 {
            if let Some(tenant) = tenants.wildcard() {
                return Ok(Admitted {
                    tenant: tenant.clone(),
                    host: String::new(),
                });
            }
        }
        return Err(bad("missing Host header"));
    };
    let host = outpost_cache::key::canonical_host(raw_host).map_err(|e| bad(&e.to_string()))?;
    let Some(tenant) = tenants.find(&host) else {
        return Err(ProxyError::client(
            ErrorClass::UnknownHost,
            format!("no tenant is configured for host {host}"),
        ));
    };
    Ok(Admitted {
        tenant: tenant.clone(),
        host,
    })
}

fn bad(message: &str) -> ProxyError {
    ProxyError::client(ErrorClass::BadRequest, message)
}

/// The request's authority: absolute-form target first, then Host.
pub fn host_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    })
}

/// A request over TLS whose SNI names a tenant other than the Host's: 421 (RFC 9110 §15.5.20),
/// so a client cannot use one tenant's certificate to reach another tenant. An SNI that names
/// no tenant (the default certificate) leaves the Host to decide.
pub fn sni_mismatch(
    tenants: &crate::tenant::Tenants,
    info: &crate::tls::TlsInfo,
    tenant: &crate::tenant::Tenant,
) -> Option<ProxyError> {
    let sni = info.sni.as_deref()?;
    let by_sni = tenants.find(sni)?;
    if by_sni.name == tenant.name {
        return None;
    }
    Some(ProxyError::client(
        ErrorClass::UnknownHost,
        format!("this connection's TLS name {sni} is not this Host's tenant"),
    ))
}

/// A request that arrived as TLS early data (before the handshake completed) may be a replay:
/// only GET and HEAD are served from it (RFC 8470 §3); anything else gets 425 Too Early and
/// the client repeats it after the handshake (§5.2).
pub fn early_data(method: &http::Method) -> Result<(), ProxyError> {
    if method == http::Method::GET || method == http::Method::HEAD {
        return Ok(());
    }
    Err(ProxyError::client(
        ErrorClass::TooEarly,
        format!("{method} is not accepted in TLS early data; send it again after the handshake"),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn http10_without_host_needs_a_wildcard_tenant() {
        let cfg =
            outpost_config::Config::single_origin("127.0.0.1:0", "http://127.0.0.1:1").unwrap();
        let metrics = crate::metrics::Metrics::new();
        let limits = crate::tenant::OriginLimits::default();
        let env = crate::tenant::Env {
            metrics: &metrics,
            tier: None,
            limits: &limits,
            origin_concurrency: 16,
        };
        let tenants = Tenants::from_config(&cfg, &env, None);
        let mut req = Request::new(());
        *req.version_mut() = Version::HTTP_10;
        assert!(admit(&tenants, &req, false).is_ok());
        *req.version_mut() = Version::HTTP_11;
        assert_eq!(
            admit(&tenants, &req, false).err().map(|e| e.class),
            Some(ErrorClass::BadRequest)
        );
    }
}
