//! Tenants as the request path uses them: compiled from config once (origin pool, cache policy,
//! key rules, per-path rules) and looked up by Host. An unknown Host never reaches the cache.

use outpost_cache::cookie::CookiePolicy;
use outpost_cache::{QueryRules, TenantPolicy};
use outpost_config::{Config, CookiePolicyKind, SetCookieMode, TenantConfig};
use outpost_http::SetCookiePolicy;
use outpost_upstream::{OriginPool, Timeouts};
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
    /// Index into metrics arrays.
    pub index: usize,
    /// Origins.
    pub pool: OriginPool,
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
}

static DEFAULT_RULE: Rule = Rule {
    path_prefix: String::new(),
    bypass: false,
    ttl: None,
    cookie: CookiePolicy::Ignore,
};

impl Tenant {
    /// The rule for a path (a default that caches normally when none matches).
    pub fn rule_for(&self, path: &str) -> &Rule {
        self.rules
            .iter()
            .find(|r| path.starts_with(&r.path_prefix))
            .unwrap_or(&DEFAULT_RULE)
    }

    fn from_config(index: usize, t: &TenantConfig) -> Self {
        let origins = t
            .origins
            .iter()
            .filter_map(|o| outpost_config::parse_origin(o).ok())
            .map(|o| o.authority)
            .collect();
        let pool = OriginPool::new(
            origins,
            Timeouts {
                connect: t.cache.connect_timeout.0,
                first_byte: t.cache.origin_timeout.0,
            },
        );
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
            index,
            pool,
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
    /// Compile every tenant of a (validated) config.
    pub fn from_config(cfg: &Config) -> Self {
        let mut by_host = HashMap::new();
        let mut wildcard = None;
        let mut all = Vec::new();
        for (i, t) in cfg.tenants.iter().enumerate() {
            let tenant = Arc::new(Tenant::from_config(i, t));
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

    /// All tenants in config order.
    pub fn all(&self) -> &[Arc<Tenant>] {
        &self.all
    }
}
