//! The flow runner: one cacheable GET/HEAD driven through the [`CacheFlow`] state machine. The
//! states decide (serve, refresh in the background, validate, fill, follow, pass, fall back to a
//! stale copy); this file performs what they ask for: the store lookup, the fill-registry join,
//! the upstream request through the tenant's hop, storing through the purge log, and the
//! response. Every store operation that may touch the SSD is awaited (`*_async`): its I/O runs
//! on the store's own threads, never on this worker.
//!
//! ```text
//! run ─ chunked_hit? ─ lookup ─▶ Serve ─────────────▶ respond::hit
//!                               ServeAndRefresh ───▶ respond::hit + spawn_refresh ─▶ lead
//!                               Unavailable ───────▶ 504
//!                               Fill ─ join ─ Leader ───▶ lead ─ hop ─▶ Store ─▶ Filling + response
//!                                           │                    ├──▶ Revalidated ─▶ merge, store
//!                                           │                    ├──▶ Pass ─▶ relayed uncached
//!                                           │                    └──▶ StaleOnError / error
//!                                           ├ Follower ─▶ follow ─▶ respond::following | retry | error
//!                                           └ Pass ───▶ pass_uncached
//! ```

use crate::body::{full, stream_incoming, ChunkBody, RespBody};
use crate::error::{ErrorClass, ProxyError};
use crate::fill::{Filling, FillingBody};
use crate::fill_head::FillHead;
use crate::hop::{HopHeaders, HopRequest};
use crate::key::CacheRequest;
use crate::log::{http_date, RequestLog};
use crate::metrics::Outcome;
use crate::objects::{self, jitter_sample, strip_for_client};
use crate::respond::{self, follower_body, BodyPlan};
use crate::soft_purge;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use outpost_cache::{
    CacheFlow, Failed, FailureClass, Fetch, Fetched, Follow, Followed, Freshness, Lookup, Pass,
    ResponseFacts, Revalidated, Serve, StorePlan, Stored,
};
use outpost_fill::{FillError, FillFailure, FillFollower, FillLeader, Joined};
use outpost_http::cache_control::effective_response_cc;
use outpost_http::cache_status::{CacheStatus, Fwd};
use outpost_http::conditional::{add_validators, merge_304};
use outpost_http::headers::{strip_before_store, strip_hop_by_hop};
use outpost_http::vary::{self, Vary};
use outpost_store::{CacheKey, StoredObject, StreamHead};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument;

/// How long a URL whose response was uncacheable skips coalescing (hit-for-pass).
const HIT_FOR_PASS: Duration = Duration::from_secs(10);
/// Largest body the leader's own client reads straight from the origin (see [`lead`]).
const INLINE_FILL_MAX: u64 = 256 * 1024;
/// Smallest announced body that is streamed onto SSD (when the node has an SSD tier) instead of
/// being buffered whole in RAM: one SSD chunk.
const STREAM_MIN_BYTES: u64 = 1 << 20;
/// Smallest SSD record a whole-body hit reads chunk by chunk (when the RAM tier could not hold
/// it either) instead of loading it whole: one SSD chunk.
const CHUNKED_HIT_MIN_BYTES: u64 = 1 << 20;
/// Lookups a request makes when fills it follows lose their leader before answering.
const ATTEMPTS: usize = 3;

type Obj = Arc<StoredObject>;

/// Answer a cacheable request.
pub async fn run(req: CacheRequest, log: &mut RequestLog) -> Response<RespBody> {
    // The request stays on this task's stack; only a fill it leads shares it (`Arc`).
    let node = &req.node;
    let mut now = node.clock.now();
    // The cold paths below are boxed (`Box::pin`): a hit's future then stays small (it is moved
    // into hyper's connection state on every request), and only a request that takes one of
    // them pays for its state.
    if node.has_disk {
        if let Some(resp) = Box::pin(chunked_hit(&req, now, log)).await {
            return resp;
        }
    }
    let mut flow = CacheFlow::new(req.cc.clone(), req.policy);
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            now = node.clock.now();
        }
        let found = objects::lookup(node, &req.primary, &req.headers, now).await;
        let miss = if found.via_marker {
            Fwd::VaryMiss
        } else {
            Fwd::UriMiss
        };
        let stored = found
            .object
            .filter(|o| o.meta.vary.is_none())
            .map(objects::as_stored)
            .map(|mut s| {
                let soft = node.soft_purges.covers(
                    found.key.text(),
                    &s.object.meta.tags,
                    s.timing.response_time,
                );
                if let Some(at) = soft {
                    soft_purge::mark_stale(&mut s.facts, &mut s.timing, at, req.to_member);
                }
                s
            });
        let fill = match flow.on_lookup(stored, now) {
            Lookup::Serve(s) => return serve(&req, s, log),
            Lookup::ServeAndRefresh(s, refresh) => {
                spawn_refresh(&req, found.key, refresh);
                return serve(&req, s, log);
            }
            Lookup::Unavailable(_) if req.pipe_max.is_some() => {
                return respond::pipe_declined("not cached here", log);
            }
            Lookup::Unavailable(_) => {
                let e = ProxyError::client(ErrorClass::NotCached, "not in cache");
                return respond::error(node, &e, log);
            }
            Lookup::Fill(fill) => fill,
        };
        match node.fills.join(&found.key, Instant::now()) {
            Joined::Leader(leader) => {
                let fwd = if fill.validating().is_some() {
                    Fwd::Stale
                } else {
                    miss
                };
                let req = Arc::new(req);
                return Box::pin(lead(&req, found.key, leader, fill.lead(), fwd, log)).await;
            }
            Joined::Follower(f) => {
                node.metrics.collapsed();
                match Box::pin(follow(&req, f, fill.follow(), log)).await {
                    Followed2::Response(r) => return r,
                    Followed2::Retry(next) => flow = next,
                    Followed2::Pass(p) => return Box::pin(pass_uncached(&req, p, log)).await,
                }
            }
            Joined::Pass => return Box::pin(pass_uncached(&req, fill.pass(), log)).await,
        }
    }
    // Every leader went away: go upstream alone.
    Box::pin(pass_uncached(&req, flow.give_up(), log)).await
}

/// Serve a stored response the flow allowed.
fn serve(req: &CacheRequest, s: Serve<Obj>, log: &mut RequestLog) -> Response<RespBody> {
    let (obj, eval, freshness) = s.into_parts();
    if req.pipe_max.is_some_and(|m| obj.body.len() as u64 > m) {
        return too_big_for_pipe(req, log);
    }
    let (outcome, detail) = match freshness {
        Freshness::Fresh => (Outcome::Hit, None),
        Freshness::StaleAccepted => (Outcome::HitStale, None),
        Freshness::StaleWhileRevalidate => (Outcome::HitStale, Some("stale-while-revalidate")),
        Freshness::StaleOnError => (Outcome::StaleOnError, Some("stale-if-error")),
    };
    respond::hit(req, &obj, &eval, detail, outcome, log)
}

/// A pipelined ask from a PoP peer for an object larger than its pipe carries: declined, and
/// the peer asks again on its ordinary connection.
#[cold]
fn too_big_for_pipe(_req: &CacheRequest, log: &mut RequestLog) -> Response<RespBody> {
    respond::pipe_declined("too large for a pipelined answer", log)
}

/// Serve a stale copy because the fill failed (`why` goes into `Cache-Status; detail=`).
fn serve_stale(
    req: &CacheRequest,
    s: Serve<Obj>,
    why: &str,
    log: &mut RequestLog,
) -> Response<RespBody> {
    let (obj, eval, _) = s.into_parts();
    let mut cs = CacheStatus::hit(&req.node.name);
    cs.ttl = Some(eval.ttl);
    cs.detail = Some(format!("stale-if-error {why}"));
    respond::stored(req, &obj, eval.age, cs, Outcome::StaleOnError, log)
}

/// What following another request's fill came to.
enum Followed2 {
    Response(Response<RespBody>),
    Retry(CacheFlow),
    Pass(Pass),
}

/// The class the cache flow uses for a fill failure.
fn failure_class(f: FillFailure) -> FailureClass {
    match f {
        FillFailure::LeaderGone => FailureClass::LeaderGone,
        FillFailure::UpstreamTimeout | FillFailure::BodyStalled => FailureClass::Timeout,
        FillFailure::UpstreamUnreachable
        | FillFailure::UpstreamStatus(_)
        | FillFailure::BodyFailed
        | FillFailure::BodyShort => FailureClass::Unreachable,
    }
}

/// The fill failure a hop error means for the followers of a fill.
fn fill_failure(e: &ProxyError) -> FillFailure {
    match e.class {
        ErrorClass::UpstreamTimeout => FillFailure::UpstreamTimeout,
        _ => FillFailure::UpstreamUnreachable,
    }
}

/// Read another request's fill.
async fn follow(
    req: &CacheRequest,
    mut f: FillFollower<FillHead>,
    state: Follow<Obj>,
    log: &mut RequestLog,
) -> Followed2 {
    let why = match f.head().await {
        Ok(head) => {
            if let Some((fields, variance)) = head.vary() {
                if &vary::variance_key(fields, &req.headers) != variance {
                    return Followed2::Pass(state.released());
                }
            }
            // A response stale for this request (stale on arrival, such as an Expires in the
            // past; or outlived by a slow fill) is the leader's answer, not one to
            // reuse without validation (RFC 9111 §4): this follower asks upstream itself. A
            // request that joins just after the leader's client got its answer lands here too.
            if head.age(req.node.clock.now()) >= head.timing().lifetime {
                return Followed2::Pass(state.stale_fill());
            }
            let mut cs = CacheStatus::fwd(&req.node.name, Fwd::UriMiss);
            cs.fwd_status = Some(head.status().as_u16());
            cs.collapsed = true;
            return Followed2::Response(respond::following(
                req,
                &head,
                f,
                cs,
                Outcome::Collapsed,
                log,
            ));
        }
        Err(FillError::Released) => return Followed2::Pass(state.released()),
        Err(FillError::LeaderFailed(why)) => why,
    };
    match state.on_failure(failure_class(why)) {
        Followed::Retry(flow) => Followed2::Retry(flow),
        Followed::Failed(Failed::StaleOnError(s)) => {
            Followed2::Response(serve_stale(req, s, why.as_str(), log))
        }
        Followed::Failed(Failed::Error(_)) => {
            Followed2::Response(respond::error(&req.node, &ProxyError::fill(why), log))
        }
    }
}

/// Lead a fill (or revalidation) of `key` through the tenant's upstream hop.
async fn lead(
    req: &Arc<CacheRequest>,
    key: CacheKey,
    leader: FillLeader<CacheKey, FillHead>,
    fetch: Fetch<Obj>,
    fwd: Fwd,
    log: &mut RequestLog,
) -> Response<RespBody> {
    let node = &req.node;
    // A purge applied from here on stops this fill from storing what it fetches.
    let since = node.purges.seq();
    let hop = HopHeaders {
        node: &node.name,
        peer: req.peer,
    };
    if let Err(e) = hop.check_loop(&req.headers) {
        leader.release();
        return respond::error(node, &e, log);
    }
    let mut headers = hop.fill(&req.headers, req.keep_cookie);
    if let Some(obj) = fetch.validating() {
        add_validators(&obj.headers, &mut headers);
        node.metrics.revalidation();
    }
    let request_time = node.clock.now();
    let path = req.url.path_and_query();
    let result = req
        .upstream()
        .send(HopRequest {
            key: req.primary.hash64(),
            method: &Method::GET,
            path_and_query: &path,
            headers,
            body: None,
        })
        .await;
    req.tenant.stats.origin_fetch(result.is_err());
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            leader.fail(fill_failure(&e));
            let class = failure_class(fill_failure(&e));
            return match fetch.on_error(class) {
                Failed::StaleOnError(s) => serve_stale(req, s, e.class.as_str(), log),
                Failed::Error(_) => respond::error(node, &e, log),
            };
        }
    };
    let response_time = node.clock.now();
    let (rparts, rbody) = resp.into_parts();
    let status = rparts.status;
    let facts = ResponseFacts {
        status,
        headers: &rparts.headers,
        request_headers: &req.headers,
        request_time,
        response_time,
        jitter: jitter_sample(&req.primary),
        max_object_bytes: req.tenant.max_object_bytes,
    };
    match fetch.on_response(facts) {
        Fetched::StaleOnError(s) => {
            leader.fail(FillFailure::UpstreamStatus(status.as_u16()));
            let why = format!("origin-status-{}", status.as_u16());
            serve_stale(req, s, &why, log)
        }
        Fetched::Revalidated(r) => {
            revalidated(req, key, leader, r, &rparts.headers, since, log).await
        }
        Fetched::Pass { reason, drop_stale } => {
            if reason.per_url() {
                node.fills
                    .mark_pass(key.clone(), Instant::now() + HIT_FOR_PASS);
            }
            leader.release();
            if drop_stale {
                // The stored copy is superseded by a response we may not keep.
                objects::remove_with_variants(node, &req.primary).await;
            }
            let mut cs = CacheStatus::fwd(&node.name, fwd);
            cs.fwd_status = Some(status.as_u16());
            cs.detail = Some(reason.as_str().to_string());
            log.outcome = Outcome::Pass;
            let mut headers = rparts.headers;
            strip_for_client(&mut headers);
            respond::finish(status, headers, stream_incoming(rbody), cs, log)
        }
        Fetched::Store(plan) => {
            let parts = Fresh {
                key,
                status,
                headers: rparts.headers,
                plan,
                response_time,
                since,
            };
            store_and_respond(req, leader, parts, rbody, fwd, log).await
        }
    }
}

/// A storable response from upstream, with what storing it needs.
struct Fresh {
    key: CacheKey,
    status: StatusCode,
    headers: HeaderMap,
    plan: StorePlan,
    response_time: SystemTime,
    since: u64,
}

/// Publish a storable response to the fill's followers, start filling (streamed onto SSD when
/// large), and answer the leader's own client.
async fn store_and_respond(
    req: &Arc<CacheRequest>,
    leader: FillLeader<CacheKey, FillHead>,
    fresh: Fresh,
    rbody: hyper::body::Incoming,
    fwd: Fwd,
    log: &mut RequestLog,
) -> Response<RespBody> {
    let node = &req.node;
    let Fresh {
        key,
        status,
        mut headers,
        plan,
        response_time,
        since,
    } = fresh;
    strip_hop_by_hop(&mut headers);
    let (rcc, _) = effective_response_cc(&headers);
    // The client that caused the fill sees what the origin sent; the stored copy keeps less when a
    // qualified no-cache/private names fields, and keeps Set-Cookie only in the RFC 9111 mode
    // (by default it would hand one client's cookie to every other: docs/behaviour.md).
    let drop_cookie =
        !req.policy.set_cookie.shares_cookie() && headers.contains_key(header::SET_COOKIE);
    // An upstream cache's Cache-Status is this client's path, never a later hit's.
    let leader_headers = (!rcc.unstorable_fields().is_empty()
        || drop_cookie
        || headers.contains_key("cache-status"))
    .then(|| headers.clone());
    strip_before_store(&mut headers, &rcc);
    if drop_cookie {
        headers.remove(header::SET_COOKIE);
    }
    if !headers.contains_key(header::DATE) {
        headers.insert(header::DATE, http_date(response_time));
    }
    let vary_fields = match vary::parse(&headers) {
        Vary::Fields(f) if !f.is_empty() => {
            let fields: Arc<[HeaderName]> = f.into();
            let variance = vary::variance_key(&fields, &req.headers);
            Some((fields, variance))
        }
        _ => None,
    };
    let content_length = content_length(&headers);
    let tags = objects::tags_of(&req.tenant.name, &headers);
    // A large body of known length streams onto SSD as it arrives (never whole in RAM);
    // variants and RAM-only nodes buffer it and store it at the end.
    let stream = match content_length {
        Some(len) if len >= STREAM_MIN_BYTES && vary_fields.is_none() && key == req.primary => {
            let stream_head = StreamHead {
                status,
                meta: objects::stored_meta(
                    &req.tenant.name,
                    &headers,
                    &plan.timing,
                    plan.keep_until,
                    None,
                ),
                headers: headers.clone(),
                body_len: len,
            };
            // The reservation is written on the store's append thread.
            node.store
                .begin_stream_async(&key, &stream_head, node.clock.now())
                .await
        }
        _ => None,
    };
    let head = Arc::new(FillHead::new(
        status,
        headers,
        plan.timing,
        vary_fields,
        content_length,
        tags,
        stream.as_ref().map(|s| s.tap()),
    ));
    leader.set_head(head.clone());
    let filling = Filling::new(
        req.clone(),
        key,
        leader,
        head.clone(),
        plan.keep_until,
        since,
        stream,
    );
    let mut cs = CacheStatus::fwd(&node.name, fwd);
    cs.fwd_status = Some(status.as_u16());
    cs.stored = true;
    log.outcome = Outcome::Miss;
    let stored_headers = leader_headers.as_ref().unwrap_or(head.headers());
    let (status, headers, body_plan) = respond::shape_for(
        req,
        head.status(),
        stored_headers,
        head.content_length(),
        head.age(node.clock.now()),
    );
    let body = match body_plan {
        // Small bodies (hyper buffers them whole, so a slow client cannot hold back the
        // followers): this client's body *is* the fill, with no task between origin and
        // client; if the client leaves early, the rest of the fill continues in a task.
        BodyPlan::All if head.content_length().is_some_and(|l| l <= INLINE_FILL_MAX) => {
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
    respond::finish(status, headers, body, cs, log)
}

/// A 304 validated the stored object: merge, store, publish, serve (RFC 9111 §4.3.4).
async fn revalidated(
    req: &CacheRequest,
    key: CacheKey,
    leader: FillLeader<CacheKey, FillHead>,
    r: Revalidated<Obj>,
    not_modified: &HeaderMap,
    since: u64,
    log: &mut RequestLog,
) -> Response<RespBody> {
    let node = &req.node;
    let response_time = r.response_time();
    let old = r.object().clone();
    let mut headers = old.headers.clone();
    merge_304(&mut headers, not_modified);
    if !req.policy.set_cookie.shares_cookie() {
        // A 304 never brings a cookie into the shared copy either.
        headers.remove(header::SET_COOKIE);
    }
    if !not_modified.contains_key(header::DATE) {
        headers.insert(header::DATE, http_date(response_time));
    }
    let (old, plan) = r.plan(old.status, &headers, &req.headers);
    let mut cs = CacheStatus::fwd(&node.name, Fwd::Stale);
    cs.fwd_status = Some(304);
    let (timing, keep_until) = match &plan {
        Ok(p) => (p.timing, p.keep_until),
        Err(_) => (
            outpost_cache::StoredTiming {
                request_time: response_time,
                response_time,
                initial_age: Duration::ZERO,
                lifetime: Duration::ZERO,
            },
            response_time,
        ),
    };
    let fresh = Arc::new(objects::cacheable_object(
        &req.tenant.name,
        old.status,
        headers,
        old.body.clone(),
        &timing,
        keep_until,
    ));
    // Submitted under the purge log's lock, awaited after it (see `purge::apply`).
    let submitted = plan.is_ok().then(|| {
        node.purges
            .commit_unless_purged(since, key.text(), &fresh.meta.tags, || {
                node.store
                    .insert_async(key.clone(), fresh.clone(), response_time)
            })
    });
    let stored = match submitted.flatten() {
        Some(insert) => {
            insert.await;
            true
        }
        None => false,
    };
    if stored {
        cs.stored = true;
        leader.set_head(Arc::new(FillHead::new(
            fresh.status,
            fresh.headers.clone(),
            timing,
            None,
            Some(fresh.body.len() as u64),
            fresh.meta.tags.clone(),
            None,
        )));
        leader.push(fresh.body.clone());
        leader.finish();
    } else {
        if plan.is_err() {
            node.store.remove_async(&key).await;
        }
        leader.release();
    }
    let age = outpost_http::freshness::current_age(
        timing.initial_age,
        timing.response_time,
        node.clock.now(),
    );
    respond::stored(req, &fresh, age, cs, Outcome::Revalidated, log)
}

/// Validate a stale object in the background (stale-while-revalidate), once per key.
fn spawn_refresh(req: &CacheRequest, key: CacheKey, refresh: outpost_cache::Fill<Obj>) {
    let Joined::Leader(leader) = req.node.fills.join(&key, Instant::now()) else {
        return;
    };
    let bg = Arc::new(req.background());
    tokio::spawn(
        async move {
            let mut log = RequestLog::background(bg.tenant.stats);
            let resp = lead(&bg, key, leader, refresh.lead(), Fwd::Stale, &mut log).await;
            // Drain the body so a streaming fill completes.
            let _ = resp.into_body().collect().await;
        }
        .instrument(tracing::debug_span!("background-revalidation")),
    );
}

/// Forward without caching or coalescing (hit-for-pass, a released follower).
async fn pass_uncached(req: &CacheRequest, pass: Pass, log: &mut RequestLog) -> Response<RespBody> {
    let node = &req.node;
    let hop = HopHeaders {
        node: &node.name,
        peer: req.peer,
    };
    if let Err(e) = hop.check_loop(&req.headers) {
        return respond::error(node, &e, log);
    }
    let path = req.url.path_and_query();
    let result = req
        .upstream()
        .send(HopRequest {
            key: req.primary.hash64(),
            method: &req.method,
            path_and_query: &path,
            headers: hop.fill(&req.headers, req.keep_cookie),
            body: None,
        })
        .await;
    req.tenant.stats.origin_fetch(result.is_err());
    let mut cs = CacheStatus::fwd(&node.name, Fwd::UriMiss);
    cs.detail = Some(pass.reason().as_str().to_string());
    crate::pass::relay(node, result, cs, log)
}

/// A fresh hit on an object the SSD tier serves chunk by chunk
/// ([`Store::get_chunked`](outpost_store::Store::get_chunked)): any request with a `Range`
/// header, and whole-body requests for objects too large for the RAM tier (at least
/// [`CHUNKED_HIT_MIN_BYTES`]). The head is verified and shaped (conditional 304, HEAD, 206/416)
/// before any body byte is read; the body is then read one verified chunk at a time as the
/// client takes it, and only the chunks a range overlaps. Anything else (RAM-resident, small,
/// a Vary marker, stale) takes the whole-object path (`None`).
async fn chunked_hit(
    req: &CacheRequest,
    now: SystemTime,
    log: &mut RequestLog,
) -> Option<Response<RespBody>> {
    let node = &req.node;
    if !node.has_disk {
        return None;
    }
    let min = if req.headers.contains_key(header::RANGE) {
        0
    } else {
        CHUNKED_HIT_MIN_BYTES
    };
    // The head is read and verified on the store's read threads.
    let hit = node.store.get_chunked_async(&req.primary, min, now).await?;
    if hit.meta.vary.is_some() {
        return None;
    }
    let (facts, timing) = objects::reuse_facts(&hit.meta, &hit.headers);
    if node
        .soft_purges
        .covers(req.primary.text(), &hit.meta.tags, timing.response_time)
        .is_some()
    {
        // Soft-purged: the general path decides how stale it may be served.
        return None;
    }
    let found = Stored {
        object: (),
        facts,
        timing,
    };
    let eval = match CacheFlow::new(req.cc.clone(), req.policy).on_lookup(Some(found), now) {
        Lookup::Serve(s) if s.freshness() == Freshness::Fresh => *s.eval(),
        _ => return None,
    };
    if req.pipe_max.is_some_and(|m| hit.body_len > m) {
        return Some(too_big_for_pipe(req, log));
    }
    let (status, headers, plan) =
        respond::shape_for(req, hit.status, &hit.headers, Some(hit.body_len), eval.age);
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
            match std::future::poll_fn(|cx| reader.poll_next_chunk(cx)).await {
                Some(Err(_)) => return None,
                Some(Ok(first)) if reader.chunks_left() == 0 => full(first),
                first => RespBody::stream(ChunkBody::new(reader, first.and_then(Result::ok))),
            }
        }
    };
    hit.served();
    log.outcome = Outcome::Hit;
    let mut cs = CacheStatus::hit(&node.name);
    cs.ttl = Some(eval.ttl);
    Some(respond::finish(status, headers, body, cs, log))
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
