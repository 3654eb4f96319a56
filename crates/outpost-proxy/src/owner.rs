//! The forwarding phase of a box that does not own a key in its PoP (`tier::Route::Forward`):
//! the client's GET/HEAD goes to the owner box in one hop and its answer is relayed, not stored.

use crate::body::RespBody;
use crate::error::ProxyError;
use crate::hop::HopHeaders;
use crate::log::RequestLog;
use crate::metrics::Outcome;
use crate::Node;
use http::{HeaderMap, Method, Response};
use outpost_http::cache_status::{CacheStatus, Fwd};
use outpost_upstream::peers::PeerSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

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
    peer: SocketAddr,
    log: &mut RequestLog,
) -> Option<Response<RespBody>> {
    let hop = HopHeaders {
        node: &node.name,
        peer,
    };
    let headers = hop.pass(headers);
    let result = pop
        .send(key, method, path_and_query, &headers, None, pop.local())
        .await;
    match result {
        Ok((resp, owner)) => {
            if let Some(t) = &node.tier {
                t.forwarded.fetch_add(1, Relaxed);
            }
            let mut cs = CacheStatus::fwd(&node.name, Fwd::Miss);
            cs.detail = pop.peers().get(owner).map(|p| format!("owner {}", p.name));
            let resp = crate::pass::relay(node, Ok(resp), cs, log);
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
