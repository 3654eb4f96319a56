//! One request through a node, top to bottom. [`handle`] is the whole story; each step is one
//! module:
//!
//! 1. [`admit`](crate::admit): framing, method, Host, tenant, loop check;
//! 2. [`filters`](crate::filters): rate limits, WAF, signed URLs (the chain is empty today);
//! 3. [`key`](crate::key): canonical URL; unsafe methods are forwarded ([`pass`](crate::pass)) and
//!    invalidate ([`purge`](crate::purge)); a bypass is forwarded as is; otherwise the cache key;
//! 4. [`tier`](crate::tier): in a PoP, a key another box owns is forwarded there (unless it is
//!    hot here);
//! 5. [`flow`](crate::flow): the `CacheFlow` state machine run against the store
//!    ([`objects`](crate::objects)), the fill registry ([`fill`](crate::fill)) and the upstream
//!    hop ([`hop`](crate::hop): the origin pool, or a shield set);
//! 6. [`respond`](crate::respond): 304 / 206 / HEAD shaping, `Age`, `Cache-Status`, errors;
//! 7. [`log`](crate::log): metrics and the access-log line.

use crate::admit::{self, Admitted};
use crate::body::RespBody;
use crate::filters::{FilterRequest, Verdict};
use crate::key::{self, CacheRequest, Keyed};
use crate::log::RequestLog;
use crate::metrics::Outcome;
use crate::tier::{self, Route};
use crate::{flow, owner, pass, respond, Node};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use outpost_http::cache_control::RequestCacheControl;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::Instrument;

/// Handle one request and account for it.
pub async fn handle(
    node: Arc<Node>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    ambiguous_framing: bool,
) -> Response<RespBody> {
    // RFC 9113 §8.3.1: an HTTP/2 request names its host in `:authority`; what this node
    // forwards carries it as `Host`, like every HTTP/1.1 request.
    if req.version() == http::Version::HTTP_2 && !req.headers().contains_key(http::header::HOST) {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let mut log = RequestLog::start(&node, req.method(), req.uri(), req.headers(), peer);
    // The span costs ~1% of a hit even when disabled, so it exists only when debug logging is on.
    let resp = if tracing::enabled!(tracing::Level::DEBUG) {
        let id = log.id(&node);
        let span =
            tracing::debug_span!("request", id, method = %req.method(), path = %req.uri().path());
        serve(&node, req, peer, ambiguous_framing, &mut log)
            .instrument(span)
            .await
    } else {
        serve(&node, req, peer, ambiguous_framing, &mut log).await
    };
    let mut resp = resp;
    // HSTS goes on every HTTPS answer of a tenant that asks for it (RFC 6797 §7.1).
    if let Some(v) = log.hsts.take() {
        resp.headers_mut()
            .insert(http::header::STRICT_TRANSPORT_SECURITY, v);
    }
    log.finish(&node, resp.status().as_u16(), resp.headers());
    resp
}

async fn serve(
    node: &Arc<Node>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    ambiguous_framing: bool,
    log: &mut RequestLog,
) -> Response<RespBody> {
    if let Some(delay) = node.tier.as_ref().map(|t| t.client_latency) {
        if !delay.is_zero() {
            Box::pin(tokio::time::sleep(delay)).await;
        }
    }
    if node.catching_up.load(std::sync::atomic::Ordering::Relaxed) {
        return respond::catching_up(log);
    }
    // 0. ACME HTTP-01 challenges, for any Host (RFC 8555 §8.3): only while an order waits.
    if let Some(key_auth) = node.acme.answer(req.uri().path()) {
        return respond::acme_challenge(key_auth, log);
    }
    // 1. Admission, against the config snapshot in force now.
    let admitted = admit::admit(&node.config().tenants, &req, ambiguous_framing);
    let Admitted { tenant, host } = match admitted {
        Ok(a) => a,
        Err(e) => return respond::error(node, &e, log),
    };
    log.tenant = Some(tenant.stats);
    // 1b. TLS: the certificate's tenant and the Host's must agree (RFC 9110 §15.5.20: one
    // tenant's certificate never fronts another's content); plain HTTP may be redirected.
    match req.extensions().get::<crate::tls::TlsInfo>() {
        Some(info) => {
            if let Some(err) = admit::sni_mismatch(&node.config().tenants, info, &tenant) {
                return respond::error(node, &err, log);
            }
            log.hsts = tenant.hsts.clone();
            // TLS 0-RTT (RFC 8470): early data may be a replay, so only safe methods are
            // served from it, and what is forwarded says it came early.
            if info.in_early_data() {
                if let Err(err) = admit::early_data(req.method()) {
                    return respond::error(node, &err, log);
                }
                req.headers_mut()
                    .insert("early-data", http::HeaderValue::from_static("1"));
            }
        }
        None => {
            if let Some(resp) = respond::https_redirect(node, &tenant, &host, &req, log) {
                return resp;
            }
        }
    }

    // 2. Filters.
    if !node.filters.is_empty() {
        let input = FilterRequest {
            tenant: &tenant,
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            peer,
        };
        if let Verdict::Respond(resp) = node.filters.run(&input) {
            log.outcome = Outcome::Rejected;
            return resp;
        }
    }

    // 3. The canonical URL; what the cache does not answer goes straight through.
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // In a CDN the key's host has no port: every box computes the same key for a URL, however
    // the client reached it.
    let host = if node.tier.is_some() {
        tier::without_port(host)
    } else {
        host
    };
    let url = match key::canonical_url(&tenant, host, target) {
        Ok(u) => u,
        Err(e) => return respond::error(node, &e, log),
    };
    if log.detailed {
        log.url = url.to_string();
    }
    // A PoP peer's pipelined ask (owner.rs): a cached answer, or a quick decline.
    let pipe_max = if log.internal {
        owner::pipe_max(req.headers_mut())
    } else {
        None
    };
    if pipe_max.is_some() && !matches!(*req.method(), Method::GET | Method::HEAD) {
        return respond::pipe_declined("only GET and HEAD are pipelined", log);
    }
    if req.method().as_str() == "PURGE" {
        let target = url.path_and_query();
        let purge =
            crate::edge_purge::handle(node, &tenant, req.headers(), &url.host, &target, log);
        return Box::pin(purge).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        // Boxed: cold paths keep the hit's future small (see flow::run).
        return Box::pin(pass::forward_unsafe(node, &tenant, req, &url, peer, log)).await;
    }
    let (primary, policy, keep_cookie) = match key::decide(&tenant, &url, req.headers()) {
        Keyed::Bypass { .. } if pipe_max.is_some() => {
            return respond::pipe_declined("not cached here", log);
        }
        Keyed::Bypass { fwd, detail } => {
            let fwd = pass::forward(node, &tenant, req, &url, peer, fwd, Some(detail), log);
            return Box::pin(fwd).await;
        }
        Keyed::Cache {
            primary,
            policy,
            keep_cookie,
        } => (primary, policy, keep_cookie),
    };

    // 4. Tiers: in a PoP, the key's owner box answers it; another box forwards, unless the
    //    key is hot here (tier.rs). The request body is not part of the key: it is dropped.
    let (parts, _unkeyed_body) = req.into_parts();
    let mut via_owner = None;
    // A peer that has applied more of the control log than this node (a purge this node has
    // not seen yet) must not be answered from this node's cache (log_position.rs).
    let mut behind_peer = false;
    if let Some(tier) = &node.tier {
        if let Some(want) = crate::log_position::wanted(&parts.headers) {
            if want > node.log_position.get() && log.internal {
                if pipe_max.is_some() {
                    // Never hold the pipelined connection: the ordinary request waits.
                    return respond::pipe_declined("behind the peer's control log", log);
                }
                behind_peer = !node
                    .log_position
                    .wait_for(want, crate::log_position::CATCH_UP_WAIT)
                    .await;
                if behind_peer {
                    tracing::warn!(
                        want,
                        have = node.log_position.get(),
                        "behind a peer's control log; revalidating"
                    );
                }
            }
        }
        // The owner may be filling through a mid-tier and a shield: allow for each.
        let owner_wait = tenant.origin_timeout() + tier::TIER_MARGIN * 3;
        match tier.route(&primary, &parts.headers) {
            Route::Local => {}
            Route::Replica(pop) => {
                via_owner = Some(tier::replica_hop(
                    pop,
                    tenant.upstream.clone(),
                    owner_wait,
                    node.log_position.clone(),
                ))
            }
            Route::Forward(pop) => {
                let path = url.path_and_query();
                let fwd = owner::forward(
                    node,
                    &pop,
                    &parts.method,
                    &parts.headers,
                    &path,
                    primary.hash64(),
                    owner_wait,
                    peer,
                    log,
                );
                if let Some(resp) = Box::pin(fwd).await {
                    return resp;
                }
            }
        }
    }

    // 5. The cache flow.
    // Decided once, when the request's record was started.
    let to_member = log.internal;
    let mut cc = RequestCacheControl::from_headers(&parts.headers);
    cc.no_cache |= behind_peer;
    cc.only_if_cached |= pipe_max.is_some();
    let cache_request = CacheRequest {
        node: node.clone(),
        cc,
        tenant,
        method: parts.method,
        headers: parts.headers,
        url,
        primary,
        policy,
        peer,
        keep_cookie,
        via_owner,
        to_member,
        pipe_max,
    };
    flow::run(cache_request, log).await
}
