//! The forwarding phase of a box that does not own a key in its PoP (`tier::Route::Forward`):
//! the client's GET/HEAD goes to the owner box in one hop and its answer is relayed, not stored.

use crate::body::{full, RespBody};
use crate::error::ProxyError;
use crate::hop::HopHeaders;
use crate::log::RequestLog;
use crate::metrics::Outcome;
use crate::objects::strip_for_client;
use crate::Node;
use http::{HeaderMap, Method, Response};
use http_body_util::BodyExt;
use outpost_http::cache_status::{CacheStatus, Fwd};
use outpost_upstream::peers::PeerSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

/// Largest forwarded body read whole before answering (the rest stream through).
const WHOLE_BODY_MAX: u64 = 64 * 1024;

/// Forward a GET/HEAD to the key's owner box and relay its answer (its `Cache-Status` member
/// first, then this box's). Client conditionals and `Range` go along, so the owner answers 304
/// and 206 from its cache. `None` when no owner could be reached: the caller answers it here.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    node: &Node,
    pop: &PeerSet,
    method: &Method,
    headers: HeaderMap,
    path_and_query: &str,
    key: u64,
    first_byte: std::time::Duration,
    peer: SocketAddr,
    log: &mut RequestLog,
) -> Option<Response<RespBody>> {
    let hop = HopHeaders {
        node: &node.name,
        peer,
    };
    let mut headers = hop.pass(headers);
    node.log_position.stamp(&mut headers);
    let result = pop
        .send_within(
            first_byte,
            key,
            method,
            path_and_query,
            &headers,
            None,
            pop.local(),
        )
        .await;
    match result {
        Ok((resp, owner)) => {
            if let Some(t) = &node.tier {
                t.forwarded.fetch_add(1, Relaxed);
            }
            let mut cs = CacheStatus::fwd(&node.name, Fwd::Miss);
            cs.detail = pop.peers().get(owner).map(|p| format!("owner {}", p.name));
            // A small body (most hits) is read whole and sent with the head in one write;
            // a larger or unknown one streams through.
            let small = resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n <= WHOLE_BODY_MAX);
            let resp = if small {
                let (mut parts, body) = resp.into_parts();
                match body.collect().await {
                    Ok(b) => {
                        cs.fwd_status = Some(parts.status.as_u16());
                        strip_for_client(&mut parts.headers);
                        log.outcome = Outcome::Forwarded;
                        return Some(crate::respond::finish(
                            parts.status,
                            parts.headers,
                            full(b.to_bytes()),
                            cs,
                            log,
                        ));
                    }
                    Err(e) => {
                        let e = ProxyError::upstream(outpost_upstream::UpstreamError::new(
                            outpost_upstream::UpstreamErrorKind::Protocol,
                            pop.peers().get(owner).map_or("", |p| p.http.as_str()),
                            Some(Box::new(e)),
                        ));
                        return Some(crate::respond::error(node, &e, log));
                    }
                }
            } else {
                crate::pass::relay(node, Ok(resp), cs, log)
            };
            log.outcome = Outcome::Forwarded;
            Some(resp)
        }
        Err(e) if e.kind.is_timeout() => {
            let e = ProxyError::upstream(e);
            Some(crate::respond::error(node, &e, log))
        }
        Err(e) => {
            tracing::debug!(error = %e.detail(), "no owner box reachable; answering here");
            None
        }
    }
}
