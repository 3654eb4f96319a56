//! The forwarding phase of a box that does not own a key in its PoP (`tier::Route::Forward`):
//! the client's GET/HEAD goes to the owner box in one hop and its answer is relayed, not stored.
//!
//! With `topology.forward_pipeline` (the default) the box first asks over the owner's
//! pipelined HTTP/1.1 connection (`outpost_upstream::pipe`), marked `Outpost-Pipe: <max>`: the
//! owner answers only from its cache and only with a body up to `max` bytes, else 504 at once.
//! Requests from many clients then share each write and read between the two boxes, which is
//! most of what a forwarded hit costs; a miss, a large object or any failure takes the
//! ordinary path (`peer_protocol`), so what the client gets is the same either way.

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
use outpost_upstream::pipe::Head;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

/// Largest forwarded body read whole before answering (the rest stream through).
const WHOLE_BODY_MAX: u64 = 64 * 1024;

/// The header of a pipelined ask, and the largest body it takes.
const PIPE_HEADER: &str = "outpost-pipe";
/// `outpost_upstream::pipe::MAX_BODY`, as sent (a test checks they agree).
const PIPE_MAX: &str = "262144";
/// How long a pipelined ask may take before the ordinary path is tried.
const PIPE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// At the owner: the largest body a peer's pipelined ask takes (the header is removed).
pub fn pipe_max(headers: &mut HeaderMap) -> Option<u64> {
    let v = headers.remove(PIPE_HEADER)?;
    v.to_str().ok()?.trim().parse().ok()
}

/// Ask the owner over its pipelined connection; `None`: take the ordinary path. The client's
/// fields go straight into the request head, shaped as [`HopHeaders::pass`] shapes them.
#[allow(clippy::too_many_arguments)]
async fn pipelined(
    node: &Node,
    pop: &PeerSet,
    hop: &HopHeaders<'_>,
    method: &Method,
    client: &HeaderMap,
    path_and_query: &str,
    key: u64,
    log: &mut RequestLog,
) -> Option<Response<RespBody>> {
    let owner = pop.owner(key).filter(|&i| Some(i) != pop.local())?;
    let mut head = Head::new(method, path_and_query);
    // First: the owner recognises a pipelined connection by it (lib.rs `opening`).
    head.field(PIPE_HEADER.as_bytes(), PIPE_MAX.as_bytes());
    hop.pass_fields(client, Some(node.log_position.get()), |n, v| {
        head.field(n, v)
    });
    let r = match pop.pipelined(owner, PIPE_WAIT, head.finish()).await {
        Ok(r) if r.status != http::StatusCode::GATEWAY_TIMEOUT => r,
        Ok(_) => return None,
        Err(e) => {
            tracing::debug!(error = %e, "pipelined ask failed; forwarding on the ordinary path");
            return None;
        }
    };
    if let Some(t) = &node.tier {
        t.forwarded.fetch_add(1, Relaxed);
        t.pipelined.fetch_add(1, Relaxed);
    }
    let mut cs = CacheStatus::fwd(&node.name, Fwd::Miss);
    cs.detail = pop.peers().get(owner).map(|p| format!("owner {}", p.name));
    cs.fwd_status = Some(r.status.as_u16());
    let mut headers = r.headers;
    strip_for_client(&mut headers);
    log.outcome = Outcome::Forwarded;
    Some(crate::respond::finish(
        r.status,
        headers,
        full(r.body),
        cs,
        log,
    ))
}

/// Forward a GET/HEAD to the key's owner box and relay its answer (its `Cache-Status` member
/// first, then this box's). Client conditionals and `Range` go along, so the owner answers 304
/// and 206 from its cache. `None` when no owner could be reached: the caller answers it here.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    node: &Node,
    pop: &PeerSet,
    method: &Method,
    headers: &HeaderMap,
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
    if node.tier.as_ref().is_some_and(|t| t.pipeline) {
        let ask = pipelined(node, pop, &hop, method, headers, path_and_query, key, log);
        if let Some(resp) = ask.await {
            return Some(resp);
        }
    }
    let mut headers = hop.pass(headers.clone());
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_pipelined_ask_names_the_pipes_limit() {
        assert_eq!(
            PIPE_MAX.parse::<usize>().unwrap(),
            outpost_upstream::pipe::MAX_BODY
        );
        let mut h = HeaderMap::new();
        h.insert(PIPE_HEADER, http::HeaderValue::from_static(PIPE_MAX));
        assert_eq!(pipe_max(&mut h), Some(262_144));
        assert!(h.is_empty(), "the marker is removed at the owner");
    }
}
