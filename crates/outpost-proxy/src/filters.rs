//! The request filter chain: checks that run on every admitted request before the cache key is
//! computed, in order, each able to let the request go on or answer it itself. Empty today; rate
//! limits, WAF rules, signed URLs and JWT checks plug in here (a filter sees the tenant, so rules
//! are per tenant). Filters are synchronous and must not block: anything that needs I/O belongs
//! in a hop.

use crate::body::RespBody;
use crate::tenant::Tenant;
use http::{HeaderMap, Method, Response, Uri};
use std::net::SocketAddr;
use std::sync::Arc;

/// What a filter sees of a request.
pub struct FilterRequest<'a> {
    /// The tenant serving it.
    pub tenant: &'a Tenant,
    /// Method.
    pub method: &'a Method,
    /// Target as received.
    pub uri: &'a Uri,
    /// Headers as received.
    pub headers: &'a HeaderMap,
    /// Client address.
    pub peer: SocketAddr,
}

/// A filter's decision.
pub enum Verdict {
    /// Go on to the next filter, then the cache.
    Continue,
    /// Answer with this response (counted as rejected); nothing after the filter runs.
    Respond(Response<RespBody>),
}

/// One check in the chain.
pub trait RequestFilter: Send + Sync + 'static {
    /// Name for logs.
    fn name(&self) -> &str;
    /// Decide on one request.
    fn check(&self, req: &FilterRequest<'_>) -> Verdict;
}

/// The filters a node runs, in order (cheap to clone).
#[derive(Clone, Default)]
pub struct FilterChain(Arc<[Arc<dyn RequestFilter>]>);

impl FilterChain {
    /// A chain of `filters`, run in this order.
    pub fn new(filters: Vec<Arc<dyn RequestFilter>>) -> Self {
        Self(filters.into())
    }

    /// Whether the chain has no filter (the request path then skips building its input).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Run every filter until one answers.
    pub fn run(&self, req: &FilterRequest<'_>) -> Verdict {
        for f in self.0.iter() {
            if let Verdict::Respond(r) = f.check(req) {
                tracing::debug!(
                    filter = f.name(),
                    status = r.status().as_u16(),
                    "filter answered"
                );
                return Verdict::Respond(r);
            }
        }
        Verdict::Continue
    }
}
