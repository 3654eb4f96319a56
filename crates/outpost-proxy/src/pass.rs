//! Pass-through: requests the cache does not answer, forwarded as they are (with their body)
//! through the tenant's hop and relayed back uncached: unsafe methods, after which what RFC 9111
//! §4.4 names is invalidated (through the purge path, so in-flight fills cannot bring it back),
//! and GET/HEAD that a bypass rule, a bypass cookie or an origin precondition keeps from the cache.

use crate::body::{stream_incoming, RespBody};
use crate::hop::{HopHeaders, HopRequest, HopResult};
use crate::log::RequestLog;
use crate::metrics::Outcome;
use crate::objects::strip_for_client;
use crate::purge::{self, Purge};
use crate::respond;
use crate::tenant::Tenant;
use crate::Node;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use outpost_cache::{canonicalize, CanonicalUrl};
use outpost_http::cache_status::{CacheStatus, Fwd};
use outpost_http::headers::invalidation_targets;
use std::net::SocketAddr;

/// Forward a request as is (with its body), without touching the cache.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    node: &Node,
    tenant: &Tenant,
    req: Request<Incoming>,
    url: &CanonicalUrl,
    peer: SocketAddr,
    fwd: Fwd,
    detail: Option<String>,
    log: &mut RequestLog,
) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    let hop = HopHeaders {
        node: &node.name,
        peer,
    };
    if let Err(e) = hop.check_loop(&parts.headers) {
        return respond::error(node, &e, log);
    }
    let body = body
        .map_err(|e| Box::new(e) as outpost_upstream::BoxError)
        .boxed();
    let path = url.path_and_query();
    let result = tenant
        .upstream
        .send(HopRequest {
            key: outpost_upstream::ring::name_seed(&path),
            method: &parts.method,
            path_and_query: &path,
            headers: hop.pass(parts.headers),
            body: Some(body),
        })
        .await;
    tenant.stats.origin_fetch(result.is_err());
    let mut cs = CacheStatus::fwd(&node.name, fwd);
    cs.detail = detail;
    relay(node, result, cs, log)
}

/// A non-GET/HEAD request: forwarded; on success, what RFC 9111 §4.4 says is invalidated
/// (the target URI, and `Location` / `Content-Location` on the same host).
pub async fn forward_unsafe(
    node: &Node,
    tenant: &Tenant,
    req: Request<Incoming>,
    url: &CanonicalUrl,
    peer: SocketAddr,
    log: &mut RequestLog,
) -> Response<RespBody> {
    let method = req.method().clone();
    let resp = forward(node, tenant, req, url, peer, Fwd::Method, None, log).await;
    let status = resp.status();
    if !method.is_safe() && (status.is_success() || status.is_redirection()) {
        for target in invalidation_targets(&method, status, &url.absolute(), resp.headers()) {
            let Some(rest) = target.strip_prefix("http://") else {
                continue;
            };
            let (host, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            if let Ok(u) = canonicalize(host, path, &tenant.query) {
                if u.host == url.host {
                    purge::apply(node, tenant, &Purge::Url(u)).await;
                }
            }
        }
    }
    resp
}

/// The client's answer to a forwarded, uncached request: the upstream response streamed
/// through, or the class of the failure.
pub fn relay(
    node: &Node,
    result: HopResult,
    mut cs: CacheStatus,
    log: &mut RequestLog,
) -> Response<RespBody> {
    match result {
        Ok(resp) => {
            let (mut rp, rbody) = resp.into_parts();
            cs.fwd_status = Some(rp.status.as_u16());
            strip_for_client(&mut rp.headers);
            log.outcome = Outcome::Pass;
            respond::finish(rp.status, rp.headers, stream_incoming(rbody), cs, log)
        }
        Err(e) => respond::error(node, &e, log),
    }
}
