//! The per-request caching state machine (DESIGN §2): typed states that consume themselves and
//! return the next, so a request can only move along the transitions RFC 9111 allows and an
//! impossible one (serving a response that was never looked up, validating a miss, storing a
//! follower's copy) does not compile.
//!
//! ```text
//! CacheFlow ──on_lookup──▶ Lookup::Serve(Serve)                 respond from cache
//!                          Lookup::ServeAndRefresh(Serve, Fill)  respond + background validation
//!                          Lookup::Unavailable                   only-if-cached: 504
//!                          Lookup::Fill(Fill) ──lead──▶ Fetch ──on_response──▶ Fetched::{Store,
//!                                                 │          │                  Revalidated, Pass,
//!                                                 │          │                  StaleOnError}
//!                                                 │          └─on_error──▶ Failed::{StaleOnError, Error}
//!                                                 └─follow─▶ Follow ──on_failure──▶ Followed::{Retry,
//!                                                                                  StaleOnError, Error}
//! ```
//!
//! The states are generic over `O`, the caller's handle on a stored object, which they carry
//! untouched so that the state that may serve it hands it back. Nothing here does I/O or reads a
//! clock: the shell performs the lookup, the fill join and the upstream fetch, and feeds back
//! what happened with the time it happened.

use crate::decide::{
    evaluate_reuse, plan_store, HitAction, HitEval, ReuseFacts, StorePlan, StoredTiming,
    TenantPolicy,
};
use http::{HeaderMap, Method, StatusCode};
use outpost_http::cache_control::RequestCacheControl;
use outpost_http::storability::NotStorable;
use outpost_http::vary::Vary;
use std::time::SystemTime;

/// What the shell found in the store for the request's key.
#[derive(Debug, Clone)]
pub struct Stored<O> {
    /// The caller's handle on the object (returned in the states that may serve it).
    pub object: O,
    /// Its reuse directives, parsed when it was stored.
    pub facts: ReuseFacts,
    /// Its timing.
    pub timing: StoredTiming,
}

/// Why a stored response may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Fresh (RFC 9111 §4.2).
    Fresh,
    /// Stale, accepted by the client's `max-stale` (§5.2.1.2).
    StaleAccepted,
    /// Stale within `stale-while-revalidate`; a background validation runs (RFC 5861 §3).
    StaleWhileRevalidate,
    /// Stale, served because validation failed, within `stale-if-error` or the tenant's grace
    /// (RFC 5861 §4, RFC 9111 §4.2.4).
    StaleOnError,
}

impl Freshness {
    /// Name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::StaleAccepted => "stale-accepted",
            Freshness::StaleWhileRevalidate => "stale-while-revalidate",
            Freshness::StaleOnError => "stale-on-error",
        }
    }
}

/// Start of one cacheable request (GET or HEAD that no rule bypasses).
#[derive(Debug, Clone)]
pub struct CacheFlow {
    req: RequestCacheControl,
    policy: TenantPolicy,
}

impl CacheFlow {
    /// A flow for a request with these directives under this tenant policy.
    pub fn new(req: RequestCacheControl, policy: TenantPolicy) -> Self {
        Self { req, policy }
    }

    /// The request's cache directives.
    pub fn request(&self) -> &RequestCacheControl {
        &self.req
    }

    /// The tenant policy in force.
    pub fn policy(&self) -> &TenantPolicy {
        &self.policy
    }

    /// The store answered `found` at `now` (`None`: nothing usable under the key).
    pub fn on_lookup<O: Clone>(self, found: Option<Stored<O>>, now: SystemTime) -> Lookup<O> {
        let Some(stored) = found else {
            return self.miss(None);
        };
        let eval = evaluate_reuse(&stored.facts, &stored.timing, &self.req, &self.policy, now);
        match eval.action {
            HitAction::Serve => Lookup::Serve(Serve::new(stored.object, eval, Freshness::Fresh)),
            HitAction::ServeStale => {
                Lookup::Serve(Serve::new(stored.object, eval, Freshness::StaleAccepted))
            }
            HitAction::ServeStaleAndRefresh => {
                // The background validation is nobody's request: no client directives, and a
                // failure just leaves the stale copy in place.
                let refresh = Fill {
                    flow: CacheFlow::new(RequestCacheControl::default(), self.policy),
                    stale: Some(StaleCopy {
                        object: stored.object.clone(),
                        eval: HitEval {
                            stale_on_error_ok: false,
                            ..eval
                        },
                    }),
                };
                Lookup::ServeAndRefresh(
                    Serve::new(stored.object, eval, Freshness::StaleWhileRevalidate),
                    refresh,
                )
            }
            HitAction::Revalidate => self.miss(Some(StaleCopy {
                object: stored.object,
                eval,
            })),
        }
    }

    /// Fills this request followed kept losing their leader: forward it alone, uncached.
    pub fn give_up(self) -> Pass {
        Pass {
            reason: PassReason::LeadersGone,
        }
    }

    fn miss<O>(self, stale: Option<StaleCopy<O>>) -> Lookup<O> {
        // RFC 9111 §5.2.1.7: only-if-cached and nothing usable ⇒ 504, never upstream.
        if self.req.only_if_cached {
            return Lookup::Unavailable(Unavailable { _private: () });
        }
        Lookup::Fill(Fill { flow: self, stale })
    }
}

/// What a lookup leads to.
#[derive(Debug)]
pub enum Lookup<O> {
    /// Serve the stored response.
    Serve(Serve<O>),
    /// Serve the stored response now and validate it in the background (once per key).
    ServeAndRefresh(Serve<O>, Fill<O>),
    /// Nothing usable is stored (or it must be validated first): go upstream, through the fill
    /// registry.
    Fill(Fill<O>),
    /// `only-if-cached` and nothing usable: answer 504 (RFC 9111 §5.2.1.7).
    Unavailable(Unavailable),
}

/// A stored response to serve, with its age and remaining freshness.
#[derive(Debug)]
pub struct Serve<O> {
    object: O,
    eval: HitEval,
    freshness: Freshness,
}

impl<O> Serve<O> {
    fn new(object: O, eval: HitEval, freshness: Freshness) -> Self {
        Self {
            object,
            eval,
            freshness,
        }
    }

    /// The object to serve.
    pub fn object(&self) -> &O {
        &self.object
    }

    /// Age and remaining freshness (`Age`, `Cache-Status; ttl=`).
    pub fn eval(&self) -> &HitEval {
        &self.eval
    }

    /// Why it may be served.
    pub fn freshness(&self) -> Freshness {
        self.freshness
    }

    /// The parts, to respond with.
    pub fn into_parts(self) -> (O, HitEval, Freshness) {
        (self.object, self.eval, self.freshness)
    }
}

/// `only-if-cached` could not be satisfied.
#[derive(Debug)]
pub struct Unavailable {
    _private: (),
}

impl Unavailable {
    /// The status to answer with (RFC 9111 §5.2.1.7).
    pub fn status(&self) -> StatusCode {
        StatusCode::GATEWAY_TIMEOUT
    }
}

/// A stale stored copy kept while a fill validates or replaces it.
#[derive(Debug)]
struct StaleCopy<O> {
    object: O,
    eval: HitEval,
}

/// The request needs a response from upstream. The shell joins the fill registry for the key and
/// calls [`Fill::lead`] (it fetches) or [`Fill::follow`] (it reads another request's fill).
#[derive(Debug)]
pub struct Fill<O> {
    flow: CacheFlow,
    stale: Option<StaleCopy<O>>,
}

impl<O> Fill<O> {
    /// The stale copy being validated, if any: its validators go on the upstream request
    /// (RFC 9111 §4.3.1).
    pub fn validating(&self) -> Option<&O> {
        self.stale.as_ref().map(|s| &s.object)
    }

    /// This request fetches from upstream for everyone waiting on the key.
    pub fn lead(self) -> Fetch<O> {
        Fetch {
            flow: self.flow,
            stale: self.stale,
        }
    }

    /// This request reads another request's fill.
    pub fn follow(self) -> Follow<O> {
        Follow {
            flow: self.flow,
            stale: self.stale,
        }
    }

    /// The key is marked uncacheable (hit-for-pass) or the fill was released: forward this
    /// request on its own, without storing.
    pub fn pass(self) -> Pass {
        Pass {
            reason: PassReason::HitForPass,
        }
    }
}

/// Why a fill or follower failed, as the shell classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// No response in time (connect or first byte, or the body stalled): 504.
    Timeout,
    /// Upstream unreachable or broke the protocol: 502.
    Unreachable,
    /// Upstream answered with a server error status (RFC 5861 §4 counts 500, 502, 503, 504 as
    /// errors for `stale-if-error`).
    ServerError(u16),
    /// The leader went away (its client left before the head): try again.
    LeaderGone,
}

impl FailureClass {
    /// The status a client gets when nothing stale may be served.
    pub fn status(&self) -> StatusCode {
        match self {
            FailureClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
            FailureClass::ServerError(s) => {
                StatusCode::from_u16(*s).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            FailureClass::Unreachable | FailureClass::LeaderGone => StatusCode::BAD_GATEWAY,
        }
    }
}

/// What a failure leads to.
#[derive(Debug)]
pub enum Failed<O> {
    /// Serve the stale copy (RFC 5861 §4 / tenant grace).
    StaleOnError(Serve<O>),
    /// Answer with an error status.
    Error(StatusCode),
}

fn on_failure<O>(stale: Option<StaleCopy<O>>, class: FailureClass) -> Failed<O> {
    match stale {
        Some(s) if s.eval.stale_on_error_ok => {
            Failed::StaleOnError(Serve::new(s.object, s.eval, Freshness::StaleOnError))
        }
        _ => Failed::Error(class.status()),
    }
}

/// Reading another request's fill.
#[derive(Debug)]
pub struct Follow<O> {
    flow: CacheFlow,
    stale: Option<StaleCopy<O>>,
}

/// What a failed follow leads to.
#[derive(Debug)]
pub enum Followed<O> {
    /// The leader went away before answering: look the key up again (a new leader is elected).
    Retry(CacheFlow),
    /// The fill failed.
    Failed(Failed<O>),
}

impl<O> Follow<O> {
    /// The leader failed with `class`.
    pub fn on_failure(self, class: FailureClass) -> Followed<O> {
        if class == FailureClass::LeaderGone {
            return Followed::Retry(self.flow);
        }
        Followed::Failed(on_failure(self.stale, class))
    }

    /// The leader released its followers (the response is not shareable, or not for this
    /// variant): forward on its own.
    pub fn released(self) -> Pass {
        Pass {
            reason: PassReason::Released,
        }
    }

    /// The fill's response is already stale for this request (stale on arrival, or outlived by
    /// a slow fill; RFC 9111 §4 forbids reusing it unvalidated): forward on its own.
    pub fn stale_fill(self) -> Pass {
        Pass {
            reason: PassReason::StaleFill,
        }
    }
}

/// Forward without storing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    reason: PassReason,
}

/// Why a request is forwarded without the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassReason {
    /// The URL recently answered with an uncacheable response (hit-for-pass).
    HitForPass,
    /// The fill this request followed turned out not to be shareable with it.
    Released,
    /// The fill this request followed had a response already stale for it.
    StaleFill,
    /// The fills this request followed kept losing their leader.
    LeadersGone,
}

impl Pass {
    /// Why.
    pub fn reason(&self) -> PassReason {
        self.reason
    }
}

impl PassReason {
    /// Name for `Cache-Status; detail=` and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            PassReason::HitForPass => "hit-for-pass",
            PassReason::Released => "uncacheable",
            PassReason::StaleFill => "stale-fill",
            PassReason::LeadersGone => "fill-leaders-gone",
        }
    }
}

/// The upstream request this request leads.
#[derive(Debug)]
pub struct Fetch<O> {
    flow: CacheFlow,
    stale: Option<StaleCopy<O>>,
}

/// What the shell knows of an upstream response head, for [`Fetch::on_response`].
#[derive(Debug, Clone, Copy)]
pub struct ResponseFacts<'a> {
    /// Status.
    pub status: StatusCode,
    /// Headers as received.
    pub headers: &'a HeaderMap,
    /// The request headers the fill was made for (Authorization, request `no-store`).
    pub request_headers: &'a HeaderMap,
    /// When the request went upstream.
    pub request_time: SystemTime,
    /// When the head arrived.
    pub response_time: SystemTime,
    /// A uniform sample in [-1, 1] for TTL jitter (derived from the key by the shell).
    pub jitter: f64,
    /// The tenant's largest storable object.
    pub max_object_bytes: u64,
}

/// Why a response is forwarded but not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DontStore {
    /// RFC 9111 (or a tenant rule) forbids storing it.
    NotStorable(NotStorable),
    /// `Vary: *` (RFC 9110 §12.5.5): never matches a later request.
    VaryStar,
    /// Larger than the tenant's object limit.
    TooLarge,
}

impl DontStore {
    /// Name for `Cache-Status; detail=` and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            DontStore::NotStorable(r) => r.as_str(),
            DontStore::VaryStar => "vary-star",
            DontStore::TooLarge => "too-large",
        }
    }

    /// Whether the origin's answer says every request of the URL is uncacheable, so later
    /// requests should skip coalescing for a while (hit-for-pass) rather than queue behind a fill
    /// that will not be shared. Reasons tied to this request (its Authorization, its `no-store`)
    /// do not; neither do `Vary: *` and size, which say nothing about the next response.
    pub fn per_url(&self) -> bool {
        match self {
            DontStore::NotStorable(r) => !matches!(
                r,
                NotStorable::Authorization | NotStorable::RequestNoStore | NotStorable::Method
            ),
            DontStore::VaryStar | DontStore::TooLarge => false,
        }
    }
}

/// What an upstream response leads to.
#[derive(Debug)]
pub enum Fetched<O> {
    /// Store it (and stream it to the client and followers).
    Store(StorePlan),
    /// A 304 validated the stale copy: merge its headers into the stored ones (RFC 9111
    /// §4.3.4) and finish with [`Revalidated::plan`].
    Revalidated(Revalidated<O>),
    /// Forward it without storing; `drop_stale` says the stored copy it supersedes must go.
    Pass {
        /// Why it is not stored.
        reason: DontStore,
        /// Whether the stale copy this fill validated must be removed (RFC 9111 §4.3.4: a full
        /// response replaces it, and this one may not be kept).
        drop_stale: bool,
    },
    /// The origin answered with a server error and the stale copy may be served instead.
    StaleOnError(Serve<O>),
}

impl<O> Fetch<O> {
    /// The stale copy being validated, if any.
    pub fn validating(&self) -> Option<&O> {
        self.stale.as_ref().map(|s| &s.object)
    }

    /// The upstream request failed before a response head.
    pub fn on_error(self, class: FailureClass) -> Failed<O> {
        on_failure(self.stale, class)
    }

    /// The upstream response head arrived.
    pub fn on_response(mut self, r: ResponseFacts<'_>) -> Fetched<O> {
        let status = r.status;
        // RFC 5861 §4: stale-if-error covers 500, 502, 503 and 504 from the origin too.
        if matches!(status.as_u16(), 500 | 502 | 503 | 504) {
            if let Some(s) = self.stale.take_if(|s| s.eval.stale_on_error_ok) {
                return Fetched::StaleOnError(Serve::new(
                    s.object,
                    s.eval,
                    Freshness::StaleOnError,
                ));
            }
        }
        let drop_stale = self.stale.is_some();
        if status == StatusCode::NOT_MODIFIED {
            if let Some(stale) = self.stale {
                return Fetched::Revalidated(Revalidated {
                    object: stale.object,
                    policy: self.flow.policy,
                    request_time: r.request_time,
                    response_time: r.response_time,
                    jitter: r.jitter,
                });
            }
        }
        let pass = |reason| Fetched::Pass { reason, drop_stale };
        let plan = plan_store(
            &Method::GET,
            r.request_headers,
            status,
            r.headers,
            &self.flow.policy,
            r.request_time,
            r.response_time,
            r.jitter,
        );
        if matches!(outpost_http::vary::parse(r.headers), Vary::Star) {
            return pass(DontStore::VaryStar);
        }
        if declared_length(r.headers).is_some_and(|l| l > r.max_object_bytes) {
            return pass(DontStore::TooLarge);
        }
        match plan {
            Ok(p) => Fetched::Store(p),
            Err(reason) => pass(DontStore::NotStorable(reason)),
        }
    }
}

/// A 304 validated a stale copy.
#[derive(Debug)]
pub struct Revalidated<O> {
    object: O,
    policy: TenantPolicy,
    request_time: SystemTime,
    response_time: SystemTime,
    jitter: f64,
}

impl<O> Revalidated<O> {
    /// The validated stored object (whose headers the shell merges with the 304's).
    pub fn object(&self) -> &O {
        &self.object
    }

    /// When the 304 arrived.
    pub fn response_time(&self) -> SystemTime {
        self.response_time
    }

    /// How the refreshed object is stored, given its merged headers and status: `Err` means it
    /// may no longer be kept (the merged headers forbid it), and the stored copy must go.
    pub fn plan(
        self,
        status: StatusCode,
        merged: &HeaderMap,
        request_headers: &HeaderMap,
    ) -> (O, Result<StorePlan, NotStorable>) {
        let plan = plan_store(
            &Method::GET,
            request_headers,
            status,
            merged,
            &self.policy,
            self.request_time,
            self.response_time,
            self.jitter,
        );
        (self.object, plan)
    }
}

/// A `Content-Length` the response declares (none when chunked).
fn declared_length(h: &HeaderMap) -> Option<u64> {
    if h.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    h.get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests;
