//! One request through an edge, top to bottom: framing checks, tenant by Host, cache key, lookup,
//! serve / serve stale / revalidate / coalesced fill / pass, and the response a client sees
//! (`Age`, `Cache-Status`, conditional 304, Range 206, HEAD). Every caching *decision* is made by
//! the pure crates (`outpost_http`, `outpost_cache`); this file performs the I/O they ask for.

use crate::body::{full, stream_incoming, ChunkBody, FollowerBody, RespBody, TapBody};
use crate::fill::{Filling, FillingBody};
use crate::metrics::Outcome;
use crate::tenant::Tenant;
use crate::Node;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use outpost_cache::cookie::{self, CookieDecision};
use outpost_cache::{
    canonicalize, canonicalize_target, evaluate_reuse, plan_store, CanonicalUrl, HitAction,
    HitEval, ReuseFacts, StoredTiming, TenantPolicy,
};
use outpost_fill::{FillError, FillFollower, FillLeader, Joined};
use outpost_http::cache_control::{effective_response_cc, strip_targeted, RequestCacheControl};
use outpost_http::cache_status::{CacheStatus, Fwd};
use outpost_http::conditional::{
    add_validators, client_not_modified, has_origin_preconditions, merge_304, not_modified_headers,
    validator_selects,
};
use outpost_http::freshness::current_age;
use outpost_http::headers::{invalidation_targets, strip_before_store, strip_hop_by_hop};
use outpost_http::range::{self, RangeDecision};
use outpost_http::storability::NotStorable;
use outpost_http::vary::{self, Vary};
use outpost_store::{CacheKey, Derived, ObjectMeta, StoredObject, StreamHead, StreamTap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument;

/// How long a URL whose response was uncacheable skips coalescing (hit-for-pass).
const HIT_FOR_PASS: Duration = Duration::from_secs(10);
/// Largest body the leader's own client reads straight from the origin (see `Ctx::lead`).
const INLINE_FILL_MAX: u64 = 256 * 1024;
/// Smallest announced body that is streamed onto SSD (when the node has an SSD tier) instead of
/// being buffered whole in RAM: one SSD chunk.
const STREAM_MIN_BYTES: u64 = 1 << 20;
/// Smallest SSD record a whole-body hit reads chunk by chunk (when the RAM tier could not hold
/// it either) instead of loading it whole: one SSD chunk.
const CHUNKED_HIT_MIN_BYTES: u64 = 1 << 20;
/// Separates a primary key from its variance key in the store.
const VARIANT_SEP: &str = "#vary:";

/// What a fill publishes to its followers: everything needed to answer from it.
pub struct FillHead {
    status: StatusCode,
    headers: HeaderMap,
    timing: StoredTiming,
    /// Vary fields and the leader's variance key, when the response varies.
    vary: Option<(Arc<[HeaderName]>, String)>,
    content_length: Option<u64>,
    /// When the body streams onto SSD: followers read it there as it is written, and the fill
    /// registry holds no copy of it.
    tap: Option<StreamTap>,
}

impl FillHead {
    /// Response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// Headers in stored form.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    /// Timing for freshness and age.
    pub fn timing(&self) -> &StoredTiming {
        &self.timing
    }
    /// Vary fields and the leader's variance key.
    pub fn vary(&self) -> Option<&(Arc<[HeaderName]>, String)> {
        self.vary.as_ref()
    }
    /// Declared body length.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }
}

/// Facts about one request gathered for metrics and the access log.
pub struct RequestLog {
    /// Tenant index, once known.
    pub tenant: Option<usize>,
    /// Outcome.
    pub outcome: Outcome,
    /// Canonical URL, once known.
    pub url: String,
    /// Cache-Status value sent (kept only when `detailed`).
    pub cache_status: String,
    /// Whether the access log wants the string fields.
    pub detailed: bool,
}

/// Handle one request and account for it.
pub async fn handle(
    node: Arc<Node>,
    req: Request<Incoming>,
    peer: SocketAddr,
    ambiguous_framing: bool,
) -> Response<RespBody> {
    let started = Instant::now();
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    // A request id only matters to the access log and debug spans (and a shared counter costs
    // every request a contended atomic otherwise).
    let id = if node.access_log || debug {
        node.next_request_id()
    } else {
        0
    };
    let method = req.method().clone();
    let (path, host) = if node.access_log {
        (
            req.uri().path().to_string(),
            host_of(&req).unwrap_or("").to_string(),
        )
    } else {
        (String::new(), String::new())
    };
    let mut log = RequestLog {
        tenant: None,
        outcome: Outcome::Rejected,
        url: String::new(),
        cache_status: String::new(),
        detailed: node.access_log,
    };
    // The span costs ~1% of a hit even when disabled, so it exists only when debug logging is on.
    let resp = if debug {
        let target = req.uri().path().to_string();
        let span = tracing::debug_span!("request", id, %method, path = %target);
        serve(&node, req, peer, ambiguous_framing, &mut log)
            .instrument(span)
            .await
    } else {
        serve(&node, req, peer, ambiguous_framing, &mut log).await
    };
    let micros = started.elapsed().as_micros() as u64;
    let status = resp.status().as_u16();
    let bytes = if method == Method::HEAD {
        0
    } else {
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    node.metrics
        .record(log.tenant, log.outcome, status, bytes, micros);
    if node.access_log {
        let line = serde_json::json!({
            "ts": httpdate::fmt_http_date(SystemTime::now()),
            "id": id,
            "node": node.name,
            "client": peer.ip().to_string(),
            "method": method.as_str(),
            "host": host,
            "path": path,
            "url": log.url,
            "status": status,
            "outcome": log.outcome.as_str(),
            "cache_status": log.cache_status,
            "bytes": bytes,
            "duration_ms": micros as f64 / 1000.0,
            "tenant": log.tenant.and_then(|i| node.tenants.all().get(i)).map(|t| t.name.as_str()),
        });
        node.write_access_log(&line.to_string());
    }
    resp
}

fn host_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    })
}

async fn serve(
    node: &Arc<Node>,
    req: Request<Incoming>,
    peer: SocketAddr,
    ambiguous_framing: bool,
    log: &mut RequestLog,
) -> Response<RespBody> {
    // 1. Framing: a request with both Content-Length and Transfer-Encoding is how requests get
    //    smuggled between hops (RFC 9112 §6.1): refuse it and close the connection.
    //    hyper drops the Content-Length of such a request, so the connection's scanner (conn.rs) tells.
    let has_te = req.headers().contains_key(header::TRANSFER_ENCODING);
    if has_te && (ambiguous_framing || req.headers().contains_key(header::CONTENT_LENGTH)) {
        return bad_request(node, "both Content-Length and Transfer-Encoding", log);
    }
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return bad_request(node, "more than one Host header", log);
    }
    // 2. Tenant by Host: unknown hosts never touch the cache.
    let Some(raw_host) = host_of(&req) else {
        return bad_request(node, "missing Host header", log);
    };
    let host = match outpost_cache::key::canonical_host(raw_host) {
        Ok(h) => h,
        Err(e) => return bad_request(node, &e.to_string(), log),
    };
    let Some(tenant) = node.tenants.find(&host).cloned() else {
        let msg = format!("no tenant is configured for host {host}");
        return simple(
            node,
            StatusCode::MISDIRECTED_REQUEST,
            "unknown-host",
            &msg,
            log,
            false,
        );
    };
    log.tenant = Some(tenant.index);
    // 3. Cache key.
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = match canonicalize_target(host, target, &tenant.query) {
        Ok(u) => u,
        Err(e) => return bad_request(node, &e.to_string(), log),
    };
    if node.access_log {
        log.url = url.to_string();
    }
    let rule = tenant.rule_for(&url.path);
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return forward_unsafe(node, &tenant, req, &url, peer, log).await;
    }
    // Requests the cache must not answer, in order: a bypass cookie, a bypass rule, and
    // If-Match / If-Unmodified-Since, which are the origin's to evaluate (RFC 9110 §13.2.1).
    let (extra, bypass) = match cookie::decide(&rule.cookie, req.headers()) {
        CookieDecision::Key(extra) => (extra, None),
        CookieDecision::Bypass(name) => {
            (String::new(), Some((Fwd::Bypass, format!("cookie {name}"))))
        }
    };
    let bypass = bypass
        .or_else(|| rule.bypass.then(|| (Fwd::Bypass, "rule".to_string())))
        .or_else(|| {
            has_origin_preconditions(req.headers())
                .then(|| (Fwd::Request, "precondition".to_string()))
        });
    if let Some((fwd, detail)) = bypass {
        return pass(
            node,
            &tenant,
            req,
            &url,
            peer,
            log,
            fwd,
            Some(detail),
            false,
        )
        .await;
    }
    let mut policy = tenant.policy.clone();
    policy.ttl_override = rule.ttl;
    let strip_cookie = extra.is_empty();
    let (parts, _unkeyed_body) = req.into_parts();
    let req_cc = RequestCacheControl::from_headers(&parts.headers);
    let primary = CacheKey::new(url.key_text(&tenant.name, &extra));
    let ctx = Ctx {
        node: node.clone(),
        tenant: tenant.clone(),
        method,
        headers: parts.headers,
        url,
        primary,
        policy,
        peer,
        strip_cookie,
    };
    ctx.cached(req_cc, log).await
}

/// Everything a cacheable GET/HEAD needs after routing.
struct Ctx {
    node: Arc<Node>,
    tenant: Arc<Tenant>,
    method: Method,
    headers: HeaderMap,
    url: CanonicalUrl,
    primary: CacheKey,
    policy: TenantPolicy,
    peer: SocketAddr,
    strip_cookie: bool,
}

impl Ctx {
    fn status(&self) -> CacheStatus {
        CacheStatus::fwd(&self.node.name, Fwd::UriMiss)
    }

    /// The key to look up and what the store holds for it: the primary key's object, or, when a
    /// Vary marker is stored there, the variant key for this request's variance and its object.
    fn resolve_key(&self, now: SystemTime) -> (CacheKey, Fwd, Option<Arc<StoredObject>>) {
        match self.node.store.get(&self.primary, now) {
            Some(obj) => match &obj.meta.vary {
                Some(fields) => {
                    let key =
                        variant_key(&self.primary, &vary::variance_key(fields, &self.headers));
                    let found = self.node.store.get(&key, now);
                    (key, Fwd::VaryMiss, found)
                }
                None => (self.primary.clone(), Fwd::UriMiss, Some(obj)),
            },
            None => (self.primary.clone(), Fwd::UriMiss, None),
        }
    }

    async fn cached(self, req_cc: RequestCacheControl, log: &mut RequestLog) -> Response<RespBody> {
        let node = self.node.clone();
        let mut now = SystemTime::now();
        if let Some(resp) = self.chunked_hit(&req_cc, now, log) {
            return resp;
        }
        for attempt in 0..3 {
            if attempt > 0 {
                now = SystemTime::now();
            }
            let (key, miss_kind, found) = self.resolve_key(now);
            let mut stale = None;
            if let Some(obj) = found {
                if obj.meta.vary.is_none() {
                    let facts = match hit_template(&obj) {
                        Some(t) => t.reuse,
                        None => ReuseFacts::from_headers(&obj.headers),
                    };
                    let eval =
                        evaluate_reuse(&facts, &timing(&obj.meta), &req_cc, &self.policy, now);
                    match eval.action {
                        HitAction::Serve | HitAction::ServeStale => {
                            let outcome = if eval.action == HitAction::Serve {
                                Outcome::Hit
                            } else {
                                Outcome::HitStale
                            };
                            return self.respond_hit(&obj, &eval, None, outcome, log);
                        }
                        HitAction::ServeStaleAndRefresh => {
                            self.spawn_refresh(key.clone(), obj.clone());
                            let detail = Some("stale-while-revalidate");
                            return self.respond_hit(&obj, &eval, detail, Outcome::HitStale, log);
                        }
                        HitAction::Revalidate => stale = Some((obj, eval)),
                    }
                }
            }
            if req_cc.only_if_cached {
                return simple(
                    &node,
                    StatusCode::GATEWAY_TIMEOUT,
                    "only-if-cached",
                    "not in cache",
                    log,
                    false,
                );
            }
            match node.fills.join(&key, Instant::now()) {
                Joined::Leader(leader) => {
                    let kind = if stale.is_some() {
                        Fwd::Stale
                    } else {
                        miss_kind
                    };
                    return self.lead(key, leader, stale, kind, log).await;
                }
                Joined::Follower(f) => {
                    node.metrics.collapsed();
                    match self.follow(f, log).await {
                        Ok(resp) => return resp,
                        Err(FillError::Released) => break,
                        Err(FillError::LeaderFailed(reason)) if reason == "leader dropped" => {
                            continue
                        }
                        Err(FillError::LeaderFailed(reason)) => {
                            if let Some((obj, eval)) = stale.filter(|(_, e)| e.stale_on_error_ok) {
                                return self.serve_stale_on_error(&obj, &eval, &reason, log);
                            }
                            return simple(
                                &node,
                                StatusCode::BAD_GATEWAY,
                                "origin-error",
                                &reason,
                                log,
                                false,
                            );
                        }
                    }
                }
                Joined::Pass => break,
            }
        }
        self.pass_uncached(Fwd::UriMiss, Some("uncacheable".into()), log)
            .await
    }

    /// Follow another request's fill.
    async fn follow(
        &self,
        mut f: FillFollower<FillHead>,
        log: &mut RequestLog,
    ) -> Result<Response<RespBody>, FillError> {
        let head = f.head().await?;
        if let Some((fields, variance)) = &head.vary {
            if &vary::variance_key(fields, &self.headers) != variance {
                return Err(FillError::Released);
            }
        }
        let mut cs = self.status();
        cs.fwd_status = Some(head.status.as_u16());
        cs.collapsed = true;
        Ok(self.respond_streaming(&head, f, cs, Outcome::Collapsed, log))
    }

    /// Lead a fill (or revalidation) for `key`.
    async fn lead(
        &self,
        key: CacheKey,
        leader: FillLeader<CacheKey, FillHead>,
        stale: Option<(Arc<StoredObject>, HitEval)>,
        fwd: Fwd,
        log: &mut RequestLog,
    ) -> Response<RespBody> {
        let node = &self.node;
        let mut up = self.upstream_headers();
        if let Some((obj, _)) = &stale {
            add_validators(&obj.headers, &mut up);
            node.metrics.revalidation();
        }
        let request_time = SystemTime::now();
        let result = self
            .tenant
            .pool
            .send(&Method::GET, &self.url.path_and_query(), &up, None)
            .await;
        node.metrics
            .origin_fetch(self.tenant.index, result.is_err());
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                leader.fail(e.kind.as_str());
                if let Some((obj, eval)) = stale.filter(|(_, e)| e.stale_on_error_ok) {
                    return self.serve_stale_on_error(&obj, &eval, e.kind.as_str(), log);
                }
                log.outcome = Outcome::Error;
                return error_response(node, e.kind.status(), e.kind.as_str(), &e.to_string(), log);
            }
        };
        let response_time = SystemTime::now();
        let status = resp.status();
        // RFC 5861 §4: stale-if-error covers 500, 502, 503 and 504 from the origin too.
        if matches!(status.as_u16(), 500 | 502 | 503 | 504) {
            if let Some((obj, eval)) = stale.as_ref().filter(|(_, e)| e.stale_on_error_ok) {
                leader.fail("origin error status");
                return self.serve_stale_on_error(
                    obj,
                    eval,
                    &format!("origin-status-{}", status.as_u16()),
                    log,
                );
            }
        }
        if status == StatusCode::NOT_MODIFIED {
            if let Some((obj, _)) = &stale {
                // A 304 to our own conditional validates the one stored response we asked about.
                // RFC 9111 §4.3.4 would refuse one carrying a different strong ETag; origins that
                // do that are mis-tagging, and merge_304 keeps the stored ETag, which names the
                // stored body (http-cache-tests `304-etag-update-response-ETag`).
                if !validator_selects(&obj.headers, resp.headers()) {
                    tracing::debug!("304 carries a different validator; keeping the stored one");
                }
                return self.revalidated(
                    key,
                    leader,
                    obj,
                    resp.headers(),
                    request_time,
                    response_time,
                    log,
                );
            }
        }
        let (rparts, rbody) = resp.into_parts();
        let jitter = jitter_sample(&self.primary);
        let plan = plan_store(
            &Method::GET,
            &self.headers,
            status,
            &rparts.headers,
            &self.policy,
            request_time,
            response_time,
            jitter,
        );
        let too_big =
            content_length(&rparts.headers).is_some_and(|l| l > self.tenant.max_object_bytes);
        let vary = vary::parse(&rparts.headers);
        let plan = match (plan, too_big, &vary) {
            (_, _, Vary::Star) => Err("vary-star".to_string()),
            (_, true, _) => Err("too-large".to_string()),
            (Err(reason), _, _) => {
                if is_per_url(reason) {
                    node.fills
                        .mark_pass(key.clone(), Instant::now() + HIT_FOR_PASS);
                }
                Err(reason.as_str().to_string())
            }
            (Ok(p), false, _) => Ok(p),
        };
        let plan = match plan {
            Ok(p) => p,
            Err(reason) => {
                leader.release();
                if stale.is_some() {
                    // The stored copy is superseded by a response we may not keep.
                    invalidate(node, &self.primary);
                }
                let mut cs = CacheStatus::fwd(&node.name, fwd);
                cs.fwd_status = Some(status.as_u16());
                cs.detail = Some(reason);
                log.outcome = Outcome::Pass;
                let mut parts = rparts;
                client_headers(&mut parts.headers);
                return finish_response(status, parts.headers, stream_incoming(rbody), cs, log);
            }
        };
        let mut headers = rparts.headers;
        strip_hop_by_hop(&mut headers);
        let (rcc, _) = effective_response_cc(&headers);
        // The client that caused the fill sees what the origin sent; the store keeps less only
        // when a qualified no-cache/private names fields, and only then is a copy needed.
        let leader_headers = if rcc.unstorable_fields().is_empty() {
            None
        } else {
            Some(headers.clone())
        };
        strip_before_store(&mut headers, &rcc);
        if !headers.contains_key(header::DATE) {
            headers.insert(header::DATE, date_value(response_time));
        }
        let vary_fields = match vary {
            Vary::Fields(f) if !f.is_empty() => {
                let fields: Arc<[HeaderName]> = f.into();
                let variance = vary::variance_key(&fields, &self.headers);
                Some((fields, variance))
            }
            _ => None,
        };
        let content_length = content_length(&headers);
        // A large body of known length streams onto SSD as it arrives (never whole in RAM);
        // variants and RAM-only nodes buffer it and store it at the end.
        let stream = match content_length {
            Some(len)
                if len >= STREAM_MIN_BYTES && vary_fields.is_none() && key == self.primary =>
            {
                let stream_head = StreamHead {
                    status,
                    meta: stored_meta(&headers, &plan.timing, plan.keep_until, None),
                    headers: headers.clone(),
                    body_len: len,
                };
                node.store
                    .begin_stream(&key, &stream_head, SystemTime::now())
            }
            _ => None,
        };
        let head = Arc::new(FillHead {
            status,
            content_length,
            headers,
            timing: plan.timing,
            vary: vary_fields,
            tap: stream.as_ref().map(|s| s.tap()),
        });
        leader.set_head(head.clone());
        let filling = Filling::new(
            node.clone(),
            self.tenant.clone(),
            self.primary.clone(),
            key,
            leader,
            head.clone(),
            plan.keep_until,
            stream,
        );
        let mut cs = CacheStatus::fwd(&node.name, fwd);
        cs.fwd_status = Some(status.as_u16());
        cs.stored = true;
        log.outcome = Outcome::Miss;
        // Followers see the stored form (see `leader_headers` above for this client).
        let age = current_age(
            head.timing.initial_age,
            head.timing.response_time,
            SystemTime::now(),
        );
        let (status, headers, plan) = self.shape(
            head.status,
            leader_headers.as_ref().unwrap_or(&head.headers),
            head.content_length,
            age,
        );
        let body = match plan {
            // Small bodies (hyper buffers them whole, so a slow client cannot hold back the
            // followers): this client's body *is* the fill, with no task between origin and
            // client; if the client leaves early, the rest of the fill continues in a task.
            BodyPlan::All if head.content_length.is_some_and(|l| l <= INLINE_FILL_MAX) => {
                RespBody::stream(FillingBody::new(rbody, filling))
            }
            // Large or unknown-length bodies fill in their own task at origin speed; this client
            // follows like any other.
            BodyPlan::All => {
                let follower = filling.follower();
                tokio::spawn(filling.drain(rbody));
                follower_body(&head, follower, 0, None)
            }
            BodyPlan::None => {
                tokio::spawn(filling.drain(rbody));
                full(Bytes::new())
            }
            BodyPlan::Range(start, end) => {
                let follower = filling.follower();
                tokio::spawn(filling.drain(rbody));
                follower_body(&head, follower, start, Some(end - start + 1))
            }
        };
        finish_response(status, headers, body, cs, log)
    }

    /// A 304 validated the stored object: merge, store, publish, serve (RFC 9111 §4.3.4).
    #[allow(clippy::too_many_arguments)]
    fn revalidated(
        &self,
        key: CacheKey,
        leader: FillLeader<CacheKey, FillHead>,
        obj: &StoredObject,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        log: &mut RequestLog,
    ) -> Response<RespBody> {
        let node = &self.node;
        let mut headers = obj.headers.clone();
        merge_304(&mut headers, not_modified);
        if !not_modified.contains_key(header::DATE) {
            headers.insert(header::DATE, date_value(response_time));
        }
        let jitter = jitter_sample(&self.primary);
        let mut cs = CacheStatus::fwd(&node.name, Fwd::Stale);
        cs.fwd_status = Some(304);
        let plan = plan_store(
            &Method::GET,
            &self.headers,
            obj.status,
            &headers,
            &self.policy,
            request_time,
            response_time,
            jitter,
        );
        let (timing, keep_until) = match &plan {
            Ok(p) => (p.timing, p.keep_until),
            Err(_) => (
                StoredTiming {
                    request_time,
                    response_time,
                    initial_age: Duration::ZERO,
                    lifetime: Duration::ZERO,
                },
                response_time,
            ),
        };
        let fresh = Arc::new(cacheable_object(
            obj.status,
            headers,
            obj.body.clone(),
            &timing,
            keep_until,
        ));
        if plan.is_ok() {
            node.store.insert(key, fresh.clone(), response_time);
            cs.stored = true;
            leader.set_head(Arc::new(FillHead {
                status: fresh.status,
                headers: fresh.headers.clone(),
                timing,
                vary: None,
                content_length: Some(fresh.body.len() as u64),
                tap: None,
            }));
            leader.push(fresh.body.clone());
            leader.finish();
        } else {
            node.store.remove(&key);
            leader.release();
        }
        let age = current_age(timing.initial_age, timing.response_time, SystemTime::now());
        self.respond_stored(&fresh, age, cs, Outcome::Revalidated, log)
    }

    fn serve_stale_on_error(
        &self,
        obj: &StoredObject,
        eval: &HitEval,
        reason: &str,
        log: &mut RequestLog,
    ) -> Response<RespBody> {
        let mut cs = CacheStatus::hit(&self.node.name);
        cs.ttl = Some(eval.ttl);
        cs.detail = Some(format!("stale-if-error {reason}"));
        self.respond_stored(obj, eval.age, cs, Outcome::StaleOnError, log)
    }

    /// Refresh a stale object in the background (stale-while-revalidate), once per key.
    fn spawn_refresh(&self, key: CacheKey, obj: Arc<StoredObject>) {
        let Joined::Leader(leader) = self.node.fills.join(&key, Instant::now()) else {
            return;
        };
        let ctx = Ctx {
            node: self.node.clone(),
            tenant: self.tenant.clone(),
            method: Method::GET,
            headers: self.headers.clone(),
            url: self.url.clone(),
            primary: self.primary.clone(),
            policy: self.policy.clone(),
            peer: self.peer,
            strip_cookie: self.strip_cookie,
        };
        let eval = HitEval {
            action: HitAction::Revalidate,
            age: Duration::ZERO,
            ttl: 0,
            stale_on_error_ok: false,
        };
        tokio::spawn(
            async move {
                let mut log = RequestLog {
                    tenant: Some(ctx.tenant.index),
                    outcome: Outcome::Miss,
                    url: String::new(),
                    cache_status: String::new(),
                    detailed: false,
                };
                let resp = ctx
                    .lead(key, leader, Some((obj, eval)), Fwd::Stale, &mut log)
                    .await;
                // Drain the body so a streaming fill completes.
                let _ = resp.into_body().collect().await;
            }
            .instrument(tracing::debug_span!("background-revalidation")),
        );
    }

    /// Forward without caching or coalescing (uncacheable URL, released follower).
    async fn pass_uncached(
        &self,
        fwd: Fwd,
        detail: Option<String>,
        log: &mut RequestLog,
    ) -> Response<RespBody> {
        let up = self.upstream_headers();
        let node = &self.node;
        let result = self
            .tenant
            .pool
            .send(&self.method, &self.url.path_and_query(), &up, None)
            .await;
        node.metrics
            .origin_fetch(self.tenant.index, result.is_err());
        let mut cs = CacheStatus::fwd(&node.name, fwd);
        cs.detail = detail;
        relay(node, result, cs, log)
    }

    /// Headers for a cache fill: hop-by-hop removed, client conditionals and Range removed (we fetch
    /// the whole object), and unkeyed inputs that can change a response stripped (reference 003 §16).
    fn upstream_headers(&self) -> HeaderMap {
        let mut h = self.headers.clone();
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
        // The key holds the normalised Accept-Encoding / Accept-Language buckets, so the origin must
        // see the bucket too, or a stored variant could differ from what its key promises.
        if let Some(ae) = vary::normalised_accept_encoding(&self.headers) {
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(ae));
        }
        if let Some(al) = vary::normalised_accept_language(&self.headers).filter(|a| !a.is_empty())
        {
            if let Ok(v) = HeaderValue::from_str(&al) {
                h.insert(header::ACCEPT_LANGUAGE, v);
            }
        }
        h.insert(
            "surrogate-capability",
            HeaderValue::from_static("outpost=\"Surrogate/1.0\""),
        );
        if self.strip_cookie {
            h.remove(header::COOKIE);
        }
        add_forwarding(&mut h, &self.node.name, self.peer);
        h
    }

    /// A fresh hit on an object the SSD tier serves chunk by chunk
    /// ([`Store::get_chunked`](outpost_store::Store::get_chunked)): any request with a `Range`
    /// header, and whole-body requests for objects too large for the RAM tier (at least
    /// [`CHUNKED_HIT_MIN_BYTES`]). The head is verified and shaped (conditional 304, HEAD, 206/416)
    /// before any body byte is read; the body is then read one verified chunk at a time as the
    /// client takes it, and only the chunks a range overlaps. Anything else (RAM-resident, small,
    /// a Vary marker, stale) takes the whole-object path (`None`).
    fn chunked_hit(
        &self,
        req_cc: &RequestCacheControl,
        now: SystemTime,
        log: &mut RequestLog,
    ) -> Option<Response<RespBody>> {
        if !self.node.has_disk {
            return None;
        }
        let min = if self.headers.contains_key(header::RANGE) {
            0
        } else {
            CHUNKED_HIT_MIN_BYTES
        };
        let hit = self.node.store.get_chunked(&self.primary, min, now)?;
        if hit.meta.vary.is_some() {
            return None;
        }
        let facts = ReuseFacts::from_headers(&hit.headers);
        let eval = evaluate_reuse(&facts, &timing(&hit.meta), req_cc, &self.policy, now);
        if eval.action != HitAction::Serve {
            return None;
        }
        let (status, headers, plan) =
            self.shape(hit.status, &hit.headers, Some(hit.body_len), eval.age);
        let range = match plan {
            BodyPlan::None => None,
            BodyPlan::All => Some(0..hit.body_len),
            BodyPlan::Range(start, end) => Some(start..end.saturating_add(1)),
        };
        let body = match range {
            None => full(Bytes::new()),
            Some(range) => {
                // The first chunk is read and verified before the response starts: a damaged
                // one is then a miss (the segment is retired and the whole-object path goes to
                // the origin) rather than a cut response. A range inside one chunk, the common
                // case, is served whole or not at all.
                let mut reader = hit.reader(range);
                match reader.next_chunk() {
                    Some(Err(_)) => return None,
                    Some(Ok(first)) if reader.chunks_left() == 0 => full(first),
                    first => RespBody::stream(ChunkBody::new(reader, first.and_then(Result::ok))),
                }
            }
        };
        hit.served();
        log.outcome = Outcome::Hit;
        let mut cs = CacheStatus::hit(&self.node.name);
        cs.ttl = Some(eval.ttl);
        Some(finish_response(status, headers, body, cs, log))
    }

    /// A hit (fresh, or stale where allowed). Most hits are a plain GET of an object with a hit
    /// template: its precomputed headers are cloned and `Age` and `Cache-Status` overwritten in
    /// place, with no header parsing or formatting machinery.
    fn respond_hit(
        &self,
        obj: &StoredObject,
        eval: &HitEval,
        detail: Option<&str>,
        outcome: Outcome,
        log: &mut RequestLog,
    ) -> Response<RespBody> {
        if let (Some(t), None) = (hit_template(obj), detail) {
            let plain = self.method == Method::GET
                && !self.headers.contains_key(header::RANGE)
                && !self.headers.contains_key(header::IF_NONE_MATCH)
                && !self.headers.contains_key(header::IF_MODIFIED_SINCE);
            if plain {
                log.outcome = outcome;
                let mut headers = t.headers.clone();
                headers.insert(header::AGE, HeaderValue::from(eval.age.as_secs()));
                let status = self.node.hit_status.value(&t.upstream_status, eval.ttl);
                if log.detailed {
                    log.cache_status = status.to_str().unwrap_or("").to_string();
                }
                headers.insert(CACHE_STATUS.clone(), status);
                let mut resp = Response::new(full(obj.body.clone()));
                *resp.status_mut() = obj.status;
                *resp.headers_mut() = headers;
                return resp;
            }
        }
        let mut cs = CacheStatus::hit(&self.node.name);
        cs.ttl = Some(eval.ttl);
        cs.detail = detail.map(str::to_string);
        self.respond_stored(obj, eval.age, cs, outcome, log)
    }

    fn respond_stored(
        &self,
        obj: &StoredObject,
        age: Duration,
        cs: CacheStatus,
        outcome: Outcome,
        log: &mut RequestLog,
    ) -> Response<RespBody> {
        log.outcome = outcome;
        let len = obj.body.len() as u64;
        let (status, headers, plan) = self.shape(obj.status, &obj.headers, Some(len), age);
        let body = match plan {
            BodyPlan::None => full(Bytes::new()),
            BodyPlan::All => full(obj.body.clone()),
            BodyPlan::Range(start, end) => full(obj.body.slice(start as usize..=end as usize)),
        };
        finish_response(status, headers, body, cs, log)
    }

    fn respond_streaming(
        &self,
        head: &FillHead,
        f: FillFollower<FillHead>,
        cs: CacheStatus,
        outcome: Outcome,
        log: &mut RequestLog,
    ) -> Response<RespBody> {
        log.outcome = outcome;
        let age = current_age(
            head.timing.initial_age,
            head.timing.response_time,
            SystemTime::now(),
        );
        let (status, headers, plan) =
            self.shape(head.status, &head.headers, head.content_length, age);
        let body = match plan {
            BodyPlan::None => full(Bytes::new()),
            BodyPlan::All => follower_body(head, f, 0, None),
            BodyPlan::Range(start, end) => follower_body(head, f, start, Some(end - start + 1)),
        };
        finish_response(status, headers, body, cs, log)
    }

    /// Client-facing status, headers and body plan for a stored or filling response: conditional
    /// 304 (RFC 9110 §13), Range 206/416 (§14), HEAD, `Age` (RFC 9111 §5.1).
    fn shape(
        &self,
        status: StatusCode,
        stored: &HeaderMap,
        len: Option<u64>,
        age: Duration,
    ) -> (StatusCode, HeaderMap, BodyPlan) {
        let age_value = HeaderValue::from(age.as_secs());
        if client_not_modified(&self.method, &self.headers, status, stored) {
            let mut h = not_modified_headers(stored);
            h.insert(header::AGE, age_value);
            client_headers(&mut h);
            return (StatusCode::NOT_MODIFIED, h, BodyPlan::None);
        }
        let mut h = client_copy(stored);
        h.insert(header::AGE, age_value);
        let head_only = self.method == Method::HEAD;
        let Some(len) = len else {
            return (
                status,
                h,
                if head_only {
                    BodyPlan::None
                } else {
                    BodyPlan::All
                },
            );
        };
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if status == StatusCode::OK {
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            match range::evaluate(&self.method, &self.headers, stored, len) {
                RangeDecision::Full => {}
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
                    let plan = if head_only {
                        BodyPlan::None
                    } else {
                        BodyPlan::Range(start, end_inclusive)
                    };
                    return (StatusCode::PARTIAL_CONTENT, h, plan);
                }
                RangeDecision::Unsatisfiable => {
                    let mut h2 = HeaderMap::new();
                    h2.insert(header::CONTENT_RANGE, range::unsatisfied_content_range(len));
                    h2.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
                    if let Some(d) = stored.get(header::DATE) {
                        h2.insert(header::DATE, d.clone());
                    }
                    return (StatusCode::RANGE_NOT_SATISFIABLE, h2, BodyPlan::None);
                }
            }
        }
        (
            status,
            h,
            if head_only {
                BodyPlan::None
            } else {
                BodyPlan::All
            },
        )
    }
}

enum BodyPlan {
    None,
    All,
    Range(u64, u64),
}

/// Store one variant under its variance key and record it in the primary key's Vary marker, which
/// lists the variants it knows (newest last) so a per-URL cap can evict the oldest.
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_variant(
    node: &Node,
    tenant: &Tenant,
    primary: &CacheKey,
    fields: &Arc<[HeaderName]>,
    variance: &str,
    obj: Arc<StoredObject>,
    keep_until: SystemTime,
    now: SystemTime,
) {
    let mut list: Vec<String> = Vec::new();
    let mut marker_keep = keep_until;
    if let Some(old) = node.store.get(primary, now) {
        match &old.meta.vary {
            Some(old_fields) if old_fields[..] == fields[..] => {
                list = String::from_utf8_lossy(&old.body)
                    .lines()
                    .map(str::to_string)
                    .collect();
                marker_keep = marker_keep.max(old.meta.keep_until);
            }
            _ => invalidate(node, primary),
        }
    }
    list.retain(|v| v != variance);
    list.push(variance.to_string());
    while list.len() > tenant.max_variants {
        let oldest = list.remove(0);
        node.store.remove(&variant_key(primary, &oldest));
    }
    let marker = Arc::new(StoredObject {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from(list.join("\n")),
        meta: ObjectMeta {
            request_time: now,
            response_time: now,
            initial_age: Duration::ZERO,
            lifetime: Duration::ZERO,
            keep_until: marker_keep,
            tags: Vec::new(),
            vary: Some(fields.clone()),
            derived: None,
        },
    });
    node.store.insert(primary.clone(), marker, now);
    node.store.insert(variant_key(primary, variance), obj, now);
}

/// Remove a primary key and, when it is a Vary marker, every variant it lists.
pub(crate) fn invalidate(node: &Node, primary: &CacheKey) {
    if let Some(marker) = stored_vary_marker(node, primary, SystemTime::UNIX_EPOCH) {
        for v in String::from_utf8_lossy(&marker.body).lines() {
            let key = variant_key(primary, v);
            node.fills.poison(&key);
            node.store.remove(&key);
        }
    }
    // A fill in flight must not store what is now outdated after this removal.
    node.fills.poison(primary);
    node.store.remove(primary);
    node.fills.clear_pass(primary);
}

pub(crate) fn variant_key(primary: &CacheKey, variance: &str) -> CacheKey {
    CacheKey::new(format!("{}{VARIANT_SEP}{variance}", primary.text()))
}

/// Non-GET/HEAD: forward with its body; on success invalidate what RFC 9111 §4.4 says.
async fn forward_unsafe(
    node: &Arc<Node>,
    tenant: &Arc<Tenant>,
    req: Request<Incoming>,
    url: &CanonicalUrl,
    peer: SocketAddr,
    log: &mut RequestLog,
) -> Response<RespBody> {
    let method = req.method().clone();
    let resp = pass(node, tenant, req, url, peer, log, Fwd::Method, None, true).await;
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
                    invalidate(node, &CacheKey::new(u.key_text(&tenant.name, "")));
                }
            }
        }
    }
    resp
}

/// Forward a request as is (with its body), without touching the cache.
#[allow(clippy::too_many_arguments)]
async fn pass(
    node: &Arc<Node>,
    tenant: &Arc<Tenant>,
    req: Request<Incoming>,
    url: &CanonicalUrl,
    peer: SocketAddr,
    log: &mut RequestLog,
    fwd: Fwd,
    detail: Option<String>,
    with_body: bool,
) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    let mut h = parts.headers;
    strip_hop_by_hop(&mut h);
    add_forwarding(&mut h, &node.name, peer);
    let body = if with_body {
        Some(
            body.map_err(|e| Box::new(e) as outpost_upstream::BoxError)
                .boxed(),
        )
    } else {
        None
    };
    let result = tenant
        .pool
        .send(&parts.method, &url.path_and_query(), &h, body)
        .await;
    node.metrics.origin_fetch(tenant.index, result.is_err());
    let mut cs = CacheStatus::fwd(&node.name, fwd);
    cs.detail = detail;
    relay(node, result, cs, log)
}

/// The client's answer to a forwarded, uncached request: the origin's response streamed through,
/// or an error naming the cause.
fn relay(
    node: &Node,
    result: Result<Response<Incoming>, outpost_upstream::UpstreamError>,
    mut cs: CacheStatus,
    log: &mut RequestLog,
) -> Response<RespBody> {
    match result {
        Ok(resp) => {
            let (mut rp, rbody) = resp.into_parts();
            cs.fwd_status = Some(rp.status.as_u16());
            client_headers(&mut rp.headers);
            log.outcome = Outcome::Pass;
            finish_response(rp.status, rp.headers, stream_incoming(rbody), cs, log)
        }
        Err(e) => {
            log.outcome = Outcome::Error;
            error_response(node, e.kind.status(), e.kind.as_str(), &e.to_string(), log)
        }
    }
}

/// Reasons that hold for every request of a URL (so later requests skip coalescing), as opposed to
/// reasons tied to one request (its Authorization or no-store).
fn is_per_url(r: NotStorable) -> bool {
    !matches!(
        r,
        NotStorable::Authorization | NotStorable::RequestNoStore | NotStorable::Method
    )
}

static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// Headers that must not reach a client: hop-by-hop, targeted cache control (RFC 9213), surrogate keys.
fn client_headers(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    strip_targeted(h);
    h.remove(&SURROGATE_KEY);
    h.remove(&CACHE_TAG);
}

/// What a hit needs from a stored object, derived once when it is stored: the parsed reuse
/// directives and the headers a plain GET of it gets (client copy, Content-Length, Accept-Ranges).
pub struct HitTemplate {
    reuse: ReuseFacts,
    /// Client headers, ending with `Age` and `Cache-Status` placeholders that a hit overwrites in
    /// place (so the clone never grows).
    headers: HeaderMap,
    /// `Cache-Status` members the stored response brought from upstream tiers, joined.
    upstream_status: Vec<u8>,
}

/// Build the derived hit data for an object about to be stored.
pub(crate) fn derive_hit(status: StatusCode, stored: &HeaderMap, body_len: usize) -> Derived {
    let mut headers = client_copy(stored);
    let upstream_status = outpost_http::cache_status::upstream_members(&headers);
    headers.remove(&CACHE_STATUS);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if status == StatusCode::OK {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    headers.insert(header::AGE, HeaderValue::from_static("0"));
    headers.insert(CACHE_STATUS.clone(), HeaderValue::from_static(""));
    Derived(Arc::new(HitTemplate {
        reuse: ReuseFacts::from_headers(stored),
        headers,
        upstream_status,
    }))
}

/// The body of a client reading a fill from `skip`, `take` bytes: from SSD as it is written when
/// the fill streams there, else from the fill registry.
fn follower_body(
    head: &FillHead,
    f: FillFollower<FillHead>,
    skip: u64,
    take: Option<u64>,
) -> RespBody {
    match &head.tap {
        Some(tap) => RespBody::stream(TapBody::new(tap.reader(skip), take)),
        None => RespBody::stream(FollowerBody::new(f, skip, take)),
    }
}

/// Metadata of a response about to be stored: timing, expiry, tags.
pub(crate) fn stored_meta(
    headers: &HeaderMap,
    timing: &StoredTiming,
    keep_until: SystemTime,
    derived: Option<Derived>,
) -> ObjectMeta {
    ObjectMeta {
        request_time: timing.request_time,
        response_time: timing.response_time,
        initial_age: timing.initial_age,
        lifetime: timing.lifetime,
        keep_until,
        tags: tags_of(headers),
        vary: None,
        derived,
    }
}

/// The Vary marker stored under `primary`, if that is what is stored there. An object on SSD is
/// identified by its head alone (a large one is never read just to find it is not a marker).
pub(crate) fn stored_vary_marker(
    node: &Node,
    primary: &CacheKey,
    now: SystemTime,
) -> Option<Arc<StoredObject>> {
    if let Some(head) = node.store.get_chunked(primary, 0, now) {
        // Not a marker: nothing more to read.
        head.meta.vary.as_ref()?;
    }
    node.store
        .get(primary, now)
        .filter(|o| o.meta.vary.is_some())
}

/// A response object ready for the store: its timing, tags and derived hit template.
pub(crate) fn cacheable_object(
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    timing: &StoredTiming,
    keep_until: SystemTime,
) -> StoredObject {
    let derived = Some(derive_hit(status, &headers, body.len()));
    let meta = stored_meta(&headers, timing, keep_until, derived);
    StoredObject {
        status,
        headers,
        body,
        meta,
    }
}

fn hit_template(obj: &StoredObject) -> Option<&HitTemplate> {
    obj.meta
        .derived
        .as_ref()
        .and_then(|d| d.get::<HitTemplate>())
}

/// The client-facing copy of *stored* headers (already free of hop-by-hop fields): one pass that
/// leaves out targeted cache control and surrogate keys.
fn client_copy(stored: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(stored.len() + 4);
    for (name, value) in stored {
        if name == SURROGATE_KEY
            || name == CACHE_TAG
            || name == CDN_CACHE_CONTROL
            || name == SURROGATE_CONTROL
        {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    h
}

/// Request headers an origin may reflect into a response but the key does not account for.
fn strip_unkeyed(h: &mut HeaderMap) {
    for name in [
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
    ] {
        h.remove(name);
    }
}

fn add_forwarding(h: &mut HeaderMap, node: &str, peer: SocketAddr) {
    if let Ok(v) = HeaderValue::from_str(&format!("1.1 {node}")) {
        h.append(header::VIA, v);
    }
    let ip = peer.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
}

fn finish_response(
    status: StatusCode,
    mut headers: HeaderMap,
    body: RespBody,
    cs: CacheStatus,
    log: &mut RequestLog,
) -> Response<RespBody> {
    // RFC 9211 §2: each cache appends its member after every upstream one (all field lines,
    // joined, as the hit template does); the last one is closest to the client.
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

/// A short plain-text error naming its cause.
fn error_response(
    node: &Node,
    status: StatusCode,
    code: &str,
    message: &str,
    log: &mut RequestLog,
) -> Response<RespBody> {
    let mut cs = CacheStatus::fwd(&node.name, Fwd::Miss);
    cs.detail = Some(code.to_string());
    let body = Bytes::from(format!("{} {code}: {message}\n", status.as_u16()));
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    finish_response(status, h, full(body), cs, log)
}

/// 400 naming what is wrong; the connection is closed after it.
fn bad_request(node: &Node, message: &str, log: &mut RequestLog) -> Response<RespBody> {
    simple(
        node,
        StatusCode::BAD_REQUEST,
        "bad-request",
        message,
        log,
        true,
    )
}

fn simple(
    node: &Node,
    status: StatusCode,
    code: &str,
    message: &str,
    log: &mut RequestLog,
    close: bool,
) -> Response<RespBody> {
    if status.is_client_error() {
        log.outcome = Outcome::Rejected;
    } else {
        log.outcome = Outcome::Error;
    }
    let mut resp = error_response(node, status, code, message, log);
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn timing(m: &ObjectMeta) -> StoredTiming {
    StoredTiming {
        request_time: m.request_time,
        response_time: m.response_time,
        initial_age: m.initial_age,
        lifetime: m.lifetime,
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    if h.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn date_value(t: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(t))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// `Surrogate-Key` (space-separated) and `Cache-Tag` (comma-separated) values.
pub(crate) fn tags_of(h: &HeaderMap) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for v in h
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        tags.extend(v.split_ascii_whitespace().map(str::to_string));
    }
    for v in h
        .get_all("cache-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        tags.extend(
            v.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        );
    }
    tags.sort();
    tags.dedup();
    tags
}

/// A uniform sample in [-1, 1] for TTL jitter, from the key and the clock (no RNG dependency).
fn jitter_sample(key: &CacheKey) -> f64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64;
    let mut x = key.hash64() ^ nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x as f64 / u64::MAX as f64) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tags_parse_both_conventions() {
        let mut h = HeaderMap::new();
        h.insert("surrogate-key", HeaderValue::from_static("page  home"));
        h.insert("cache-tag", HeaderValue::from_static("a, b,,home"));
        assert_eq!(tags_of(&h), vec!["a", "b", "home", "page"]);
    }

    #[test]
    fn jitter_in_range() {
        let k = CacheKey::new("t|h/x|");
        for _ in 0..100 {
            let j = jitter_sample(&k);
            assert!((-1.0..=1.0).contains(&j));
        }
    }

    #[test]
    fn unkeyed_headers_stripped() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.com"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_unkeyed(&mut h);
        assert!(!h.contains_key("x-forwarded-host"));
        assert!(h.contains_key("accept"));
    }
}
