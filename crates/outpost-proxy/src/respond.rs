//! Response shaping: what a client gets from a stored or filling response (conditional 304,
//! Range 206/416, HEAD, `Age`), this node's `Cache-Status` member appended after the upstream
//! ones (RFC 9211 §2), and the answers the node generates itself ([`error`]): the class of the
//! failure and the request id for the client, the cause for the log.

use crate::body::{full, FollowerBody, RespBody, TapBody};
use crate::error::ProxyError;
use crate::fill_head::FillHead;
use crate::key::CacheRequest;
use crate::log::RequestLog;
use crate::metrics::Outcome;
use crate::objects::{client_copy, copy_tags, strip_for_client, template_of, CACHE_STATUS};
use crate::Node;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use outpost_cache::HitEval;
use outpost_fill::FillFollower;
use outpost_http::cache_status::{CacheStatus, Fwd};
use outpost_http::conditional::{client_not_modified, not_modified_headers};
use outpost_http::range::{self, RangeDecision};
use outpost_store::StoredObject;
use std::sync::Arc;
use std::time::Duration;

/// Which part of a body a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// None (HEAD, 304, 416).
    None,
    /// All of it.
    All,
    /// Bytes `start..=end`.
    Range(u64, u64),
}

/// [`shape`] for a cache request: a request from another tier of the CDN also gets the
/// object's surrogate keys (the tier that stores it must be able to purge it by tag).
pub fn shape_for(
    req: &CacheRequest,
    status: StatusCode,
    stored: &HeaderMap,
    len: Option<u64>,
    age: Duration,
) -> (StatusCode, HeaderMap, BodyPlan) {
    let (status, mut headers, plan) = shape(&req.method, &req.headers, status, stored, len, age);
    if req.to_member {
        copy_tags(stored, &mut headers);
    }
    (status, headers, plan)
}

/// Client-facing status, headers and body plan for a stored or filling response: conditional
/// 304 (RFC 9110 §13), Range 206/416 (§14), HEAD, `Age` (RFC 9111 §5.1).
pub fn shape(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    stored: &HeaderMap,
    len: Option<u64>,
    age: Duration,
) -> (StatusCode, HeaderMap, BodyPlan) {
    let age_value = HeaderValue::from(age.as_secs());
    if client_not_modified(method, req, status, stored) {
        let mut h = not_modified_headers(stored);
        h.insert(header::AGE, age_value);
        strip_for_client(&mut h);
        return (StatusCode::NOT_MODIFIED, h, BodyPlan::None);
    }
    let mut h = client_copy(stored);
    h.insert(header::AGE, age_value);
    let whole = if method == Method::HEAD {
        BodyPlan::None
    } else {
        BodyPlan::All
    };
    let Some(len) = len else {
        return (status, h, whole);
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status != StatusCode::OK {
        return (status, h, whole);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    match range::evaluate(method, req, stored, len) {
        RangeDecision::Full => (status, h, whole),
        RangeDecision::Partial {
            start,
            end_inclusive,
        } => {
            h.insert(
                header::CONTENT_RANGE,
                range::content_range(start, end_inclusive, len),
            );
            h.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(end_inclusive - start + 1),
            );
            let plan = match whole {
                BodyPlan::None => BodyPlan::None,
                _ => BodyPlan::Range(start, end_inclusive),
            };
            (StatusCode::PARTIAL_CONTENT, h, plan)
        }
        RangeDecision::Unsatisfiable => {
            let mut h2 = HeaderMap::new();
            h2.insert(header::CONTENT_RANGE, range::unsatisfied_content_range(len));
            h2.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            if let Some(d) = stored.get(header::DATE) {
                h2.insert(header::DATE, d.clone());
            }
            (StatusCode::RANGE_NOT_SATISFIABLE, h2, BodyPlan::None)
        }
    }
}

/// The response: `cs` appended to the `Cache-Status` members already in `headers` (RFC 9211 §2:
/// the member nearest the client last).
pub fn finish(
    status: StatusCode,
    mut headers: HeaderMap,
    body: RespBody,
    cs: CacheStatus,
    log: &mut RequestLog,
) -> Response<RespBody> {
    cs.append_to(&mut headers);
    if log.detailed {
        log.cache_status = headers
            .get(&CACHE_STATUS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// 503 while the node catches up with the control log after a start (`Retry-After: 1`).
pub fn catching_up(log: &mut RequestLog) -> Response<RespBody> {
    log.outcome = Outcome::Rejected;
    let mut resp = Response::new(full(Bytes::from_static(
        b"503 Service Unavailable: catching up with the control plane's log\n",
    )));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// A plain-HTTP request for a tenant with `tls.redirect_http`, on a node with an HTTPS
/// listener: 308 to the same URL over HTTPS (308 keeps the method, RFC 9110 §15.4.9). Requests
/// from other tiers are never redirected (they travel between nodes in plain HTTP).
pub fn https_redirect(
    node: &Node,
    tenant: &crate::tenant::Tenant,
    host: &str,
    req: &http::Request<hyper::body::Incoming>,
    log: &mut RequestLog,
) -> Option<Response<RespBody>> {
    if !tenant.tls.as_ref().is_some_and(|t| t.redirect_http) {
        return None;
    }
    let port = *node.tls_port.get()?;
    if node
        .tier
        .as_ref()
        .is_some_and(|t| t.from_member(req.headers()))
    {
        return None;
    }
    let host = crate::tier::without_port(host.to_string());
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    let loc = HeaderValue::from_str(&location).ok()?;
    log.outcome = Outcome::Rejected;
    let mut resp = Response::new(full(Bytes::from_static(b"")));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, loc);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(resp)
}

/// The key authorization of a pending ACME HTTP-01 challenge (RFC 8555 §8.3).
pub fn acme_challenge(key_auth: String, log: &mut RequestLog) -> Response<RespBody> {
    log.outcome = Outcome::Pass;
    let mut resp = Response::new(full(Bytes::from(key_auth)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An answer the node generates: `STATUS code; request-id=N` (and, for a client error, what was
/// wrong with the request), `Cache-Control: no-store`. Upstream failures are logged as
/// rate-limited warnings with their cause; the client never sees origin addresses or library
/// error text.
/// A PoP peer's pipelined ask declined (`owner.rs`): 504, uncounted; the peer takes its
/// ordinary path.
#[cold]
pub fn pipe_declined(why: &'static str, log: &mut RequestLog) -> Response<RespBody> {
    log.declined = true;
    let mut resp = Response::new(full(Bytes::from_static(why.as_bytes())));
    *resp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn error(node: &Node, err: &ProxyError, log: &mut RequestLog) -> Response<RespBody> {
    let id = log.id(node);
    let class = err.class;
    if class.is_upstream() {
        if let Some(suppressed) = node.warnings.upstream.allow() {
            tracing::warn!(
                request_id = id,
                error = %err.detail(),
                suppressed,
                "upstream failure answered with {}",
                class.status().as_u16()
            );
        }
    } else {
        tracing::debug!(request_id = id, error = %err.detail(), "request refused");
    }
    log.outcome = if class.status().is_client_error() {
        Outcome::Rejected
    } else {
        Outcome::Error
    };
    let status = class.status();
    let text = match &err.message {
        Some(m) => format!(
            "{} {}: {m}; request-id={id}\n",
            status.as_u16(),
            class.as_str()
        ),
        None => format!("{} {}; request-id={id}\n", status.as_u16(), class.as_str()),
    };
    let body = Bytes::from(text);
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if class == crate::error::ErrorClass::MethodNotAllowed {
        h.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    if class.status() == StatusCode::BAD_REQUEST {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut cs = CacheStatus::fwd(&node.name, Fwd::Miss);
    cs.detail = Some(class.as_str().to_string());
    finish(status, h, full(body), cs, log)
}

/// A stored response for a request: the hit template's headers cloned with `Age` and
/// `Cache-Status` overwritten in place for a plain GET (most hits: no header parsing or
/// formatting), the general shaping otherwise.
pub fn hit(
    req: &CacheRequest,
    obj: &StoredObject,
    eval: &HitEval,
    detail: Option<&str>,
    outcome: Outcome,
    log: &mut RequestLog,
) -> Response<RespBody> {
    if let (Some(t), None) = (template_of(&obj.meta), detail) {
        let plain = req.method == Method::GET
            && !req.headers.contains_key(header::RANGE)
            && !req.headers.contains_key(header::IF_NONE_MATCH)
            && !req.headers.contains_key(header::IF_MODIFIED_SINCE);
        if plain {
            log.outcome = outcome;
            let mut headers = t.headers.clone();
            headers.insert(header::AGE, HeaderValue::from(eval.age.as_secs()));
            let status = req.node.hit_status.value(&t.upstream_status, eval.ttl);
            if log.detailed {
                log.cache_status = status.to_str().unwrap_or("").to_string();
            }
            headers.insert(CACHE_STATUS.clone(), status);
            if req.to_member {
                copy_tags(&obj.headers, &mut headers);
            }
            let mut resp = Response::new(full(obj.body.clone()));
            *resp.status_mut() = obj.status;
            *resp.headers_mut() = headers;
            return resp;
        }
    }
    let mut cs = CacheStatus::hit(&req.node.name);
    cs.ttl = Some(eval.ttl);
    cs.detail = detail.map(str::to_string);
    stored(req, obj, eval.age, cs, outcome, log)
}

/// A stored response, shaped for the request.
pub fn stored(
    req: &CacheRequest,
    obj: &StoredObject,
    age: Duration,
    cs: CacheStatus,
    outcome: Outcome,
    log: &mut RequestLog,
) -> Response<RespBody> {
    log.outcome = outcome;
    let len = obj.body.len() as u64;
    let (status, headers, plan) = shape_for(req, obj.status, &obj.headers, Some(len), age);
    let body = match plan {
        BodyPlan::None => full(Bytes::new()),
        BodyPlan::All => full(obj.body.clone()),
        BodyPlan::Range(start, end) => full(obj.body.slice(start as usize..=end as usize)),
    };
    finish(status, headers, body, cs, log)
}

/// A response read from a fill in progress (a collapsed follower, or the leader's own client
/// when the fill runs in its own task), shaped for the request.
pub fn following(
    req: &CacheRequest,
    head: &Arc<FillHead>,
    f: FillFollower<FillHead>,
    cs: CacheStatus,
    outcome: Outcome,
    log: &mut RequestLog,
) -> Response<RespBody> {
    log.outcome = outcome;
    let age = head.age(req.node.clock.now());
    let (status, headers, plan) = shape_for(
        req,
        head.status(),
        head.headers(),
        head.content_length(),
        age,
    );
    let body = match plan {
        BodyPlan::None => full(Bytes::new()),
        BodyPlan::All => follower_body(head, f, 0, None),
        BodyPlan::Range(start, end) => follower_body(head, f, start, Some(end - start + 1)),
    };
    finish(status, headers, body, cs, log)
}

/// The body of a client reading a fill from `skip`, `take` bytes: from SSD as it is written when
/// the fill streams there (and from the fill registry for whatever the SSD tier could not take),
/// else from the fill registry.
pub fn follower_body(
    head: &Arc<FillHead>,
    f: FillFollower<FillHead>,
    skip: u64,
    take: Option<u64>,
) -> RespBody {
    match head.tap() {
        Some(tap) => RespBody::stream(TapBody::new(tap.reader(skip), f, head.clone(), take)),
        None => RespBody::stream(FollowerBody::new(f, skip, take)),
    }
}
