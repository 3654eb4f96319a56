//! Tenants as the request path uses them: compiled from a config snapshot (upstream hop, cache
//! policy, key rules, per-path rules, metrics handle) and looked up by Host. An unknown Host
//! never reaches the cache. A new snapshot keeps each unchanged tenant's origin connection pool
//! and every tenant's counters (found by name).

use crate::hop::{OriginHop, Upstream};
use crate::metrics::{Metrics, TenantStats};
use crate::tier::Tier;
use outpost_cache::cookie::CookiePolicy;
use outpost_cache::{QueryRules, TenantPolicy};
use outpost_config::{Config, CookiePolicyKind, OriginPoolConfig, SetCookieMode, TenantConfig};
use outpost_http::SetCookiePolicy;
use outpost_upstream::limit::OriginLimit;
use outpost_upstream::peers::HealthPolicy;
use outpost_upstream::{ActiveHealth, OriginPool, PoolOptions, Timeouts};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A per-path rule, compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Path prefix.
    pub path_prefix: String,
    /// Always forward, never cache.
    pub bypass: bool,
    /// TTL override.
    pub ttl: Option<Duration>,
    /// Cookie handling.
    pub cookie: CookiePolicy,
}

/// One tenant, ready for the request path.
pub struct Tenant {
    /// Name: cache namespace and metrics label.
    pub name: String,
    /// Its counters.
    pub stats: &'static TenantStats,
    /// Where misses and passes go: the tenant's shield set from an edge that has one, else its
    /// origin pool.
    pub upstream: Arc<dyn Upstream>,
    /// The origin hop (kept so a later snapshot can reuse its connection pool).
    origin: Arc<OriginHop>,
    /// Origin timeouts the pool was built with.
    timeouts: Timeouts,
    /// The pool settings it was built with.
    pool_config: OriginPoolConfig,
    /// Its shield set's name.
    shield: Option<String>,
    /// The per-origin limit it was built with.
    origin_concurrency: usize,
    /// Cache defaults.
    pub policy: TenantPolicy,
    /// Query parameter rules for keys.
    pub query: QueryRules,
    /// Per-path rules, first match wins.
    pub rules: Vec<Rule>,
    /// Variants kept per URL.
    pub max_variants: usize,
    /// Largest object stored.
    pub max_object_bytes: u64,
    /// HTTPS settings (redirect, HSTS; the certificate lives in the TLS store).
    pub tls: Option<outpost_config::TenantTlsConfig>,
    /// The `Strict-Transport-Security` value for its HTTPS answers, if it sets one.
    pub hsts: Option<http::HeaderValue>,
}

static DEFAULT_RULE: Rule = Rule {
    path_prefix: String::new(),
    bypass: false,
    ttl: None,
    cookie: CookiePolicy::Ignore,
};

impl Tenant {
    /// The tenant's origin first-byte timeout.
    pub fn origin_timeout(&self) -> std::time::Duration {
        self.timeouts.first_byte
    }

    /// The shield set this tenant's misses go to from an edge, if any.
    pub fn shield_name(&self) -> Option<&str> {
        self.shield.as_deref()
    }

    /// Each origin and whether it is up.
    pub fn origin_health(&self) -> Vec<(String, bool)> {
        self.origin.pool().health()
    }

    /// Whether any rule keys on a cookie bucket (so one URL may have several primary keys).
    pub fn keys_on_cookies(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.cookie, CookiePolicy::Bucket { .. }))
    }

    /// The rule for a path (a default that caches normally when none matches).
    pub fn rule_for(&self, path: &str) -> &Rule {
        self.rules
            .iter()
            .find(|r| path.starts_with(&r.path_prefix))
            .unwrap_or(&DEFAULT_RULE)
    }

    fn from_config(
        t: &TenantConfig,
        env: &Env<'_>,
        previous: Option<&Tenants>,
        tenants_per_origin: &HashMap<String, usize>,
    ) -> Self {
        let (metrics, tier) = (env.metrics, env.tier);
        let origins: Vec<String> = t
            .origins
            .iter()
            .filter_map(|o| outpost_config::parse_origin(o).ok())
            .map(|o| o.pool_address())
            .collect();
        let timeouts = Timeouts {
            connect: t.cache.connect_timeout.0,
            first_byte: t.cache.origin_timeout.0,
        };
        let limits: Vec<Arc<OriginLimit>> = origins
            .iter()
            .map(|a| {
                let l = env.limits.get(a, env.origin_concurrency);
                l.set_tenants(tenants_per_origin.get(a).copied().unwrap_or(1));
                l
            })
            .collect();
        // An unchanged origin pool keeps its connections and health state.
        let reused = previous
            .and_then(|p| p.by_name(&t.name))
            .filter(|old| {
                old.origin.origins() == origins.as_slice()
                    && old.timeouts == timeouts
                    && old.pool_config == t.origin_pool
                    && old.origin_concurrency == env.origin_concurrency
            })
            .map(|old| old.origin.clone());
        let origin = reused.unwrap_or_else(|| {
            let op = &t.origin_pool;
            let health = (!op.health_path.is_empty()).then(|| ActiveHealth {
                path: op.health_path.clone(),
                host: origins.first().cloned().unwrap_or_default(),
                policy: HealthPolicy {
                    interval: op.health_interval.0,
                    timeout: op.health_timeout.0,
                    fall: op.health_fall,
                    rise: op.health_rise,
                    ramp_up: Duration::ZERO,
                },
            });
            let opts = PoolOptions {
                weights: (!op.weights.is_empty()).then(|| op.weights.clone()),
                health,
                limits: Some((t.name.clone(), limits)),
                delay: tier.map_or(Duration::ZERO, |t| t.origin_latency),
                tls: if origins.iter().any(|o| o.starts_with("https://")) {
                    match outpost_upstream::origin_tls(&op.ca_file) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!(tenant = %t.name, error = %e, "origin CA bundle unreadable; using the system's roots");
                            None
                        }
                    }
                } else {
                    None
                },
            };
            let pool = OriginPool::with_options(origins.clone(), timeouts, opts);
            pool.spawn_probes();
            Arc::new(OriginHop::new(&t.name, origins, pool))
        });
        // An edge whose tenant names a shield set sends its misses there.
        let upstream: Arc<dyn Upstream> = tier
            .and_then(|tier| tier.shield_hop(t.shield.as_deref(), t.cache.origin_timeout.0))
            .unwrap_or_else(|| origin.clone());
        let rules = t
            .rules
            .iter()
            .map(|r| Rule {
                path_prefix: r.path_prefix.clone(),
                bypass: r.bypass,
                ttl: r.ttl.map(|d| d.0),
                cookie: match r.cookie {
                    CookiePolicyKind::Ignore => CookiePolicy::Ignore,
                    CookiePolicyKind::Bypass => CookiePolicy::BypassIf(r.bypass_cookies.clone()),
                    CookiePolicyKind::Bucket => CookiePolicy::Bucket {
                        cookie: r.bucket_cookie.clone().unwrap_or_default(),
                        values: r.bucket_values.clone(),
                    },
                },
            })
            .collect();
        Tenant {
            name: t.name.clone(),
            stats: metrics.tenant(&t.name),
            upstream,
            origin,
            timeouts,
            pool_config: t.origin_pool.clone(),
            shield: t.shield.clone(),
            origin_concurrency: env.origin_concurrency,
            policy: TenantPolicy {
                negative_ttl: t.cache.negative_ttl.0,
                grace: t.cache.grace.0,
                jitter_percent: t.cache.ttl_jitter_percent,
                heuristic_cap: t.cache.heuristic_cap.0,
                ttl_override: None,
                keep_for_revalidation: Duration::from_secs(3600),
                set_cookie: match t.cache.set_cookie {
                    SetCookieMode::Store => SetCookiePolicy::Store,
                    SetCookieMode::Explicit => SetCookiePolicy::RequireExplicitShared,
                    SetCookieMode::Never => SetCookiePolicy::Never,
                },
            },
            query: QueryRules {
                allow: t.cache_key.query_allow.clone(),
                deny: t.cache_key.query_deny.clone(),
                keep_tracking: t.cache_key.keep_tracking_params,
            },
            rules,
            max_variants: t.cache.max_variants,
            max_object_bytes: t.cache.max_object_bytes.0,
            tls: t.tls.clone(),
            hsts: t.tls.as_ref().and_then(hsts_header),
        }
    }
}

/// `max-age=N[; includeSubDomains]` (RFC 6797 §6.1), or none for a zero age.
fn hsts_header(tls: &outpost_config::TenantTlsConfig) -> Option<http::HeaderValue> {
    let age = tls.hsts_max_age.0.as_secs();
    if age == 0 {
        return None;
    }
    let v = if tls.hsts_include_subdomains {
        format!("max-age={age}; includeSubDomains")
    } else {
        format!("max-age={age}")
    };
    http::HeaderValue::from_str(&v).ok()
}

/// What tenants are compiled with besides their config: the node's counters, its place in a
/// CDN and the origin limits shared by every snapshot.
pub struct Env<'a> {
    /// Counters (found by tenant name).
    pub metrics: &'a Metrics,
    /// The node's tier, if it is part of a topology.
    pub tier: Option<&'a Tier>,
    /// Concurrency limits per origin.
    pub limits: &'a OriginLimits,
    /// `node.origin_concurrency`.
    pub origin_concurrency: usize,
}

/// The concurrency limit of each origin, by authority, for the life of the node (every tenant
/// and snapshot that uses an origin shares its limit).
#[derive(Default)]
pub struct OriginLimits {
    map: std::sync::Mutex<HashMap<String, Arc<OriginLimit>>>,
}

impl OriginLimits {
    /// The limit of `authority` (a new one if `limit` changed).
    pub fn get(&self, authority: &str, limit: usize) -> Arc<OriginLimit> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(authority) {
            Some(l) if l.limit() == limit.max(2) => l.clone(),
            _ => {
                let l = OriginLimit::new(limit);
                m.insert(authority.to_string(), l.clone());
                l
            }
        }
    }
}

/// Host → tenant.
pub struct Tenants {
    by_host: HashMap<String, Arc<Tenant>>,
    wildcard: Option<Arc<Tenant>>,
    all: Vec<Arc<Tenant>>,
}

impl Tenants {
    /// Compile every tenant of a (validated) config, reusing what `previous` already built;
    /// `env.tier` (the node's place in a CDN) decides each tenant's upstream hop.
    pub fn from_config(cfg: &Config, env: &Env<'_>, previous: Option<&Tenants>) -> Self {
        let mut by_host = HashMap::new();
        let mut wildcard = None;
        let mut all = Vec::new();
        let mut tenants_per_origin: HashMap<String, usize> = HashMap::new();
        for t in &cfg.tenants {
            for o in &t.origins {
                if let Ok(o) = outpost_config::parse_origin(o) {
                    *tenants_per_origin.entry(o.pool_address()).or_insert(0) += 1;
                }
            }
        }
        for t in &cfg.tenants {
            let tenant = Arc::new(Tenant::from_config(t, env, previous, &tenants_per_origin));
            for h in &t.hostnames {
                if h == "*" {
                    wildcard = Some(tenant.clone());
                } else {
                    by_host.insert(h.to_ascii_lowercase(), tenant.clone());
                }
            }
            all.push(tenant);
        }
        Tenants {
            by_host,
            wildcard,
            all,
        }
    }

    /// The tenant for a canonical host (lower-case; a port is ignored for matching).
    pub fn find(&self, host: &str) -> Option<&Arc<Tenant>> {
        let name = match host.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        self.by_host.get(name).or(self.wildcard.as_ref())
    }

    /// The tenant answering any Host (`*`), if one is configured.
    pub fn wildcard(&self) -> Option<&Arc<Tenant>> {
        self.wildcard.as_ref()
    }

    /// The tenant called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.all.iter().find(|t| t.name == name)
    }

    /// All tenants in config order.
    pub fn all(&self) -> &[Arc<Tenant>] {
        &self.all
    }
}
