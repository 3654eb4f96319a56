//! The cache key phase: the canonical URL (RFC 3986 normalisation, sorted query, tracking
//! parameters dropped, the tenant's allow/deny lists), the path rule, and what the key holds
//! besides the URL (a cookie bucket). It also decides which GET/HEAD requests the cache must not
//! answer at all: a bypass cookie, a bypass rule, or `If-Match` / `If-Unmodified-Since`, which
//! are the origin's to evaluate (RFC 9110 §13.2.1). A request the cache may answer becomes a
//! [`CacheRequest`]: everything the flow runner needs, with the request body dropped (a GET body
//! is not part of the key, so it is never forwarded: reference 003 §16).

use crate::error::{ErrorClass, ProxyError};
use crate::hop::Upstream;
use crate::tenant::Tenant;
use crate::Node;
use http::{HeaderMap, Method};
use outpost_cache::cookie::{self, CookieDecision};
use outpost_cache::{canonicalize_target, CanonicalUrl, TenantPolicy};
use outpost_http::cache_control::RequestCacheControl;
use outpost_http::cache_status::Fwd;
use outpost_http::conditional::has_origin_preconditions;
use outpost_store::CacheKey;
use std::net::SocketAddr;
use std::sync::Arc;

/// The canonical URL of a request for its tenant (`400` when the target cannot be normalised).
pub fn canonical_url(
    tenant: &Tenant,
    host: String,
    target: &str,
) -> Result<CanonicalUrl, ProxyError> {
    canonicalize_target(host, target, &tenant.query)
        .map_err(|e| ProxyError::client(ErrorClass::BadRequest, e.to_string()))
}

/// What the key phase decided for a GET or HEAD.
pub enum Keyed {
    /// The cache may answer: the key and policy.
    Cache {
        /// Cache key (tenant namespace, URL, cookie bucket).
        primary: CacheKey,
        /// The tenant policy with the path rule applied.
        policy: TenantPolicy,
        /// Whether the key holds a cookie bucket, so the origin must see the Cookie.
        keep_cookie: bool,
    },
    /// The cache must not answer: forward as is.
    Bypass {
        /// Why, for `Cache-Status; fwd=`.
        fwd: Fwd,
        /// Detail for `Cache-Status; detail=`.
        detail: String,
    },
}

/// Decide the key (or a bypass) of a GET/HEAD for `url`.
pub fn decide(tenant: &Tenant, url: &CanonicalUrl, headers: &HeaderMap) -> Keyed {
    let rule = tenant.rule_for(&url.path);
    let (extra, bypass) = match cookie::decide(&rule.cookie, headers) {
        CookieDecision::Key(extra) => (extra, None),
        CookieDecision::Bypass(name) => {
            (String::new(), Some((Fwd::Bypass, format!("cookie {name}"))))
        }
    };
    let bypass = bypass
        .or_else(|| rule.bypass.then(|| (Fwd::Bypass, "rule".to_string())))
        .or_else(|| {
            has_origin_preconditions(headers).then(|| (Fwd::Request, "precondition".to_string()))
        });
    if let Some((fwd, detail)) = bypass {
        return Keyed::Bypass { fwd, detail };
    }
    let mut policy = tenant.policy;
    policy.ttl_override = rule.ttl;
    Keyed::Cache {
        keep_cookie: !extra.is_empty(),
        primary: CacheKey::new(url.key_text(&tenant.name, &extra)),
        policy,
    }
}

/// Everything a cacheable GET/HEAD needs after the key phase.
pub struct CacheRequest {
    /// The node.
    pub node: Arc<Node>,
    /// Its tenant (from the config snapshot in force when the request arrived).
    pub tenant: Arc<Tenant>,
    /// GET or HEAD.
    pub method: Method,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request cache directives.
    pub cc: RequestCacheControl,
    /// Canonical URL.
    pub url: CanonicalUrl,
    /// Primary cache key.
    pub primary: CacheKey,
    /// Tenant policy with the rule applied.
    pub policy: TenantPolicy,
    /// Client address.
    pub peer: SocketAddr,
    /// Whether the origin must see the Cookie (the key holds a cookie bucket).
    pub keep_cookie: bool,
    /// The hop misses take instead of the tenant's: the key's owner box, when this box keeps
    /// a replica of a hot key it does not own.
    pub via_owner: Option<Arc<dyn Upstream>>,
    /// The request came from another tier of this CDN: responses keep the object's surrogate
    /// keys, so the tier that stores them can purge by tag too.
    pub to_member: bool,
    /// A PoP peer's pipelined ask (`owner::PIPE_MAX`): only a cached answer with a body up to
    /// this many bytes; anything else is 504 and the peer takes its ordinary path.
    pub pipe_max: Option<u64>,
}

impl CacheRequest {
    /// The same request made by nobody (a background revalidation): GET, no client directives.
    pub fn background(&self) -> Self {
        Self {
            node: self.node.clone(),
            tenant: self.tenant.clone(),
            method: Method::GET,
            headers: self.headers.clone(),
            cc: RequestCacheControl::default(),
            url: self.url.clone(),
            primary: self.primary.clone(),
            policy: self.policy,
            peer: self.peer,
            keep_cookie: self.keep_cookie,
            via_owner: self.via_owner.clone(),
            to_member: false,
            pipe_max: None,
        }
    }

    /// Where this request's misses go.
    pub fn upstream(&self) -> &dyn Upstream {
        match &self.via_owner {
            Some(hop) => hop.as_ref(),
            None => self.tenant.upstream.as_ref(),
        }
    }
}
