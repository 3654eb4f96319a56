//! The shared state of a running node ([`Node`]): the config snapshot in force (swapped at run
//! time without a restart: [`Node::apply_config`]), the store, the fill registry, the purge log,
//! metrics, the injected clock and the request filter chain.

use crate::filters::FilterChain;
use crate::metrics::{self, Metrics};
use crate::tenant::Tenants;
use crate::throttle::Warnings;
use arc_swap::ArcSwap;
use outpost_cache::{Clock, SystemClock};
use outpost_config::{Config, ConfigError};
use outpost_fill::FillRegistry;
use outpost_store::{CacheKey, DiskConfig, HybridStore, MemoryStore, PolicyKind, Store};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a node is built with besides its config: the seams tests and embedders replace.
#[derive(Clone)]
pub struct NodeOptions {
    /// The wall clock the node reads (freshness, ages, dates); a fake one in tests.
    pub clock: Arc<dyn Clock>,
    /// Request filters run after admission.
    pub filters: FilterChain,
    /// Start answering 503 until the control plane's log has been caught up with
    /// (`Node::catching_up`): a node whose SSD cache outlived a restart must apply the purges
    /// it missed before it serves from it.
    pub catching_up: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            filters: FilterChain::default(),
            catching_up: false,
        }
    }
}

/// The tenant configuration in force, immutable; a new config replaces it whole.
pub struct ConfigSnapshot {
    /// Monotonic version (1 for the config the node started with).
    pub version: u64,
    /// Tenants by host.
    pub tenants: Tenants,
    /// Certificate files the TLS listener serves (tenant certificates by name, the default).
    pub tls_sources: crate::tls::TlsSources,
}

/// Shared state of a running node.
pub struct Node {
    /// Name in `Cache-Status`, `Via`, `CDN-Loop` and metrics.
    pub name: String,
    config: ArcSwap<ConfigSnapshot>,
    /// The object store.
    pub store: Arc<dyn Store>,
    /// Whether the store has an SSD tier (hits that read SSD chunks are only tried then).
    pub has_disk: bool,
    /// In-flight fills.
    pub fills: FillRegistry<CacheKey, crate::fill_head::FillHead>,
    /// The purge sequence fills check before storing.
    pub purges: crate::purge_log::PurgeLog,
    /// Recent soft purges (what they mark stale, and since when).
    pub soft_purges: crate::soft_purge::SoftPurges,
    /// Counters.
    pub metrics: Metrics,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
    /// Request filters.
    pub filters: FilterChain,
    /// Whether to write JSON access log lines to stdout.
    pub access_log: bool,
    /// This node's `Cache-Status` hit member, pre-rendered.
    pub hit_status: outpost_http::cache_status::HitStatus,
    /// Rate-limited warnings.
    pub warnings: Warnings,
    /// Bearer token that admits admin requests from non-loopback clients (none: loopback only).
    pub admin_token: Option<String>,
    /// The control plane's API (`http://host:port`), where `PURGE` requests are relayed; set
    /// once it is known (`edge_purge.rs`).
    pub control_api: std::sync::OnceLock<String>,
    /// Set while the node catches up with the control log after a start: requests get 503
    /// with `Retry-After` and `/healthz` says so (the agent clears it).
    pub catching_up: AtomicBool,
    /// Its place in a CDN (role, PoP, peers), when the config has a topology.
    pub tier: Option<crate::tier::Tier>,
    /// Port of the HTTPS listener, once bound (plain-HTTP redirects point there).
    pub tls_port: std::sync::OnceLock<u16>,
    /// Pending ACME HTTP-01 challenges (answered on the HTTP listener).
    pub acme: Arc<crate::acme::Challenges>,
    /// How far this node has applied the control plane's log (its agent advances it; requests
    /// to peers carry it, see `log_position.rs`).
    pub log_position: Arc<crate::log_position::LogPosition>,
    /// Concurrency limits per origin, shared by tenants and snapshots.
    pub limits: crate::tenant::OriginLimits,
    /// Set once the node drains (health checks then answer 503).
    pub draining: AtomicBool,
    next_id: AtomicU64,
    log_out: Mutex<std::io::Stdout>,
}

impl Node {
    /// Build a node from a validated config.
    pub fn new(cfg: &Config, opts: NodeOptions) -> Result<Self, String> {
        let store = open_store(cfg)?;
        let metrics = Metrics::new();
        let log_position = Arc::new(crate::log_position::LogPosition::default());
        let tier = crate::tier::Tier::from_config(cfg, log_position.clone());
        let limits = crate::tenant::OriginLimits::default();
        let env = crate::tenant::Env {
            metrics: &metrics,
            tier: tier.as_ref(),
            limits: &limits,
            origin_concurrency: cfg.node.origin_concurrency,
        };
        let tenants = Tenants::from_config(cfg, &env, None);
        metrics.set_config_version(1);
        Ok(Node {
            name: cfg.node.name.clone(),
            config: ArcSwap::from_pointee(ConfigSnapshot {
                version: 1,
                tenants,
                tls_sources: crate::tls::sources(cfg),
            }),
            has_disk: store.stats_disk().is_some(),
            store,
            fills: FillRegistry::new(),
            purges: crate::purge_log::PurgeLog::default(),
            soft_purges: crate::soft_purge::SoftPurges::default(),
            metrics,
            clock: opts.clock,
            filters: opts.filters,
            access_log: cfg.node.access_log,
            hit_status: outpost_http::cache_status::HitStatus::new(&cfg.node.name),
            warnings: Warnings::default(),
            admin_token: cfg.node.admin_token.clone(),
            control_api: std::sync::OnceLock::new(),
            catching_up: AtomicBool::new(opts.catching_up),
            tls_port: std::sync::OnceLock::new(),
            acme: Arc::new(crate::acme::Challenges::default()),
            tier,
            log_position,
            limits,
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            log_out: Mutex::new(std::io::stdout()),
        })
    }

    /// The config snapshot in force (hold it briefly: a request takes its tenant and lets go).
    pub fn config(&self) -> arc_swap::Guard<Arc<ConfigSnapshot>> {
        self.config.load()
    }

    /// Validate `cfg` and make its tenants the ones in force, without a restart: requests already
    /// running finish with the snapshot they started with, new ones use the new one. Tenants
    /// keep their counters (by name) and, when their origins did not change, their origin
    /// connection pools. Node-level settings (listeners, store) need a restart and are ignored
    /// here with a warning. Returns the new version.
    pub fn apply_config(&self, cfg: &Config) -> Result<u64, ConfigError> {
        cfg.validate()?;
        if cfg.node.name != self.name {
            tracing::warn!("node.name changes need a restart; keeping {:?}", self.name);
        }
        // A changed topology first, so the tenants' shield hops use the new shield sets.
        match (&self.tier, cfg.topology.is_some()) {
            (Some(tier), true) => tier
                .reload(cfg)
                .map_err(|m| ConfigError::new("topology", m))?,
            (None, false) => {}
            _ => {
                return Err(ConfigError::new(
                    "topology",
                    "adding or removing [topology] needs a restart",
                ))
            }
        }
        let old = self.config.load_full();
        let env = crate::tenant::Env {
            metrics: &self.metrics,
            tier: self.tier.as_ref(),
            limits: &self.limits,
            origin_concurrency: cfg.node.origin_concurrency,
        };
        let tenants = Tenants::from_config(cfg, &env, Some(&old.tenants));
        let version = old.version + 1;
        self.config.store(Arc::new(ConfigSnapshot {
            version,
            tenants,
            tls_sources: crate::tls::sources(cfg),
        }));
        self.metrics.set_config_version(version);
        tracing::info!(
            version,
            tenants = cfg.tenants.len(),
            "config snapshot applied"
        );
        Ok(version)
    }

    /// A fresh request id.
    pub fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Write one access-log line.
    pub fn write_access_log(&self, line: &str) {
        let mut out = self.log_out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
    }

    /// Metrics text.
    pub fn render_metrics(&self) -> String {
        let mut text = self
            .metrics
            .render(&self.name, &self.store.stats(), self.fills.in_flight());
        if let Some(disk) = self.store.stats_disk() {
            text.push_str(&metrics::render_disk(&self.name, &disk));
        }
        let snapshot = self.config();
        let _ = std::fmt::Write::write_str(
            &mut text,
            "# HELP outpost_origin_up Whether an origin of a tenant is up (passive health).\n# TYPE outpost_origin_up gauge\n",
        );
        for t in snapshot.tenants.all() {
            for (origin, up) in t.origin_health() {
                text.push_str(&format!(
                    "outpost_origin_up{{node=\"{}\",tenant=\"{}\",origin=\"{}\"}} {}\n",
                    metrics::label(&self.name),
                    metrics::label(&t.name),
                    metrics::label(&origin),
                    u8::from(up)
                ));
            }
        }
        if let Some(tier) = &self.tier {
            tier.render(&self.name, &mut text);
            // Every series of this node carries its role, region and PoP (or shield set).
            let from = format!("node=\"{}\"", metrics::label(&self.name));
            let to = format!(
                "{from},role=\"{}\",region=\"{}\",pop=\"{}\"",
                tier.role.as_str(),
                metrics::label(&tier.region),
                metrics::label(&tier.group)
            );
            text = text.replace(&from, &to);
        }
        text
    }
}

/// The object store a config asks for: RAM only, or RAM + SSD when `store.dir` is set. An SSD
/// directory that cannot be used (missing, unwritable, I/O errors) is logged and the node serves
/// from RAM and origin; one written by a newer on-disk format is refused (never misread).
fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, String> {
    let policy: PolicyKind = cfg.store.policy.parse().unwrap_or_default();
    let cap = cfg.store.ram_bytes.0;
    // Shards of ~128 MiB (power of two, 1..=64): objects up to 1/8 of a shard are storable, so
    // the default 512 MiB keeps 16 MiB objects, and 2-4 shards are plenty for a few cores.
    let shards = ((cap / (128 << 20)).clamp(1, 64) as usize)
        .next_power_of_two()
        .min(64);
    let ram = || Arc::new(MemoryStore::with_shards(cap, policy, shards)) as Arc<dyn Store>;
    if cfg.store.dir.is_empty() {
        return Ok(ram());
    }
    let dir = std::path::Path::new(&cfg.store.dir);
    let disk = DiskConfig {
        segment_bytes: cfg.store.segment_bytes.0.min(cfg.store.disk_bytes.0 / 4),
        policy,
        read_threads: cfg.store.read_threads,
        fast_reads: cfg.store.fast_reads,
        ..DiskConfig::new(dir, cfg.store.disk_bytes.0)
    };
    match HybridStore::open_with(
        MemoryStore::new(cap, policy),
        &disk,
        std::time::SystemTime::UNIX_EPOCH,
    ) {
        Ok((store, report)) => {
            tracing::info!(dir = %dir.display(), ?report, "SSD tier opened");
            Ok(Arc::new(store))
        }
        Err(e) if e.fallback_to_ram() => {
            tracing::error!(error = %e, "SSD tier unavailable: serving from RAM and origin only");
            Ok(ram())
        }
        Err(e) => Err(e.to_string()),
    }
}
