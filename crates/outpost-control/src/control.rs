//! The control service ([`Control`], started by [`start`]): the store, the bus, and the tasks
//! that join them. A write follows the sync path validate → persist (state and its log entry in
//! one transaction) → publish → answer; entries the bus did not take stay in the outbox and are
//! published again by [`Control::flush`] (after every write, every second, and at start, so a
//! crash between persist and publish republishes on restart). Node acknowledgements are
//! collected into the store for purge status.

use crate::bus::Bus;
use crate::log::now_ms;
use crate::store::{Store, StoreError};
use outpost_config::{Config, TenantConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the control service runs.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// API listen address (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// Store file; none: in memory (tests).
    pub db: Option<PathBuf>,
    /// An admin key to accept (`opk_<id>.<secret>`); none: one is created on first start and
    /// returned once by [`start`].
    pub admin_key: Option<String>,
    /// The config tenants are validated against (its node section and topology) and, when the
    /// store has no tenants yet, seeded from.
    pub template: Config,
    /// API requests per second per key (token bucket), and the burst.
    pub rate: f64,
    /// Burst size.
    pub burst: f64,
    /// Roll new config versions out to one PoP first (none: everywhere at once).
    pub canary: Option<CanaryOptions>,
}

/// How config versions are rolled out: to the boxes of one PoP, watched, then everywhere, or
/// rolled back when the canary does worse than the PoPs still on the previous version.
#[derive(Debug, Clone)]
pub struct CanaryOptions {
    /// The canary PoP.
    pub pop: String,
    /// How long the canary is watched before the decision.
    pub watch: Duration,
    /// Fewer client requests than this at the canary during the watch: promoted unjudged.
    pub min_requests: u64,
    /// Largest increase of the 5xx share (and of the upstream error share) tolerated, in
    /// absolute terms (0.05 = five percentage points).
    pub max_error_increase: f64,
    /// Largest drop of the hit ratio tolerated, in absolute terms.
    pub max_hit_ratio_drop: f64,
}

impl CanaryOptions {
    /// Watch `pop` for `watch`, with the default thresholds.
    pub fn new(pop: &str, watch: Duration) -> Self {
        Self {
            pop: pop.to_string(),
            watch,
            min_requests: 20,
            max_error_increase: 0.05,
            max_hit_ratio_drop: 0.2,
        }
    }
}

impl ControlOptions {
    /// Defaults around `template`, on `listen`, in memory.
    pub fn new(listen: &str, template: Config) -> Self {
        Self {
            listen: listen.to_string(),
            db: None,
            admin_key: None,
            template,
            rate: 50.0,
            burst: 100.0,
            canary: None,
        }
    }
}

/// A running control service.
pub struct RunningControl {
    /// API address.
    pub addr: SocketAddr,
    /// The service.
    pub control: Arc<Control>,
    /// The admin key created on this start (shown once); none when it already existed.
    pub new_admin_key: Option<String>,
}

/// The control service's shared state.
pub struct Control {
    /// Durable state.
    pub store: Store,
    /// The bus to the nodes.
    pub bus: Arc<dyn Bus>,
    /// Template config (node section, topology) tenants are validated against.
    pub template: Config,
    publishing: tokio::sync::Mutex<()>,
    limiter: Limiter,
    canary: Option<CanaryOptions>,
}

impl Control {
    /// Publish every entry the bus has not taken yet, in order; stops at the first failure
    /// (the outbox keeps the rest). Returns how many went out.
    pub async fn flush(&self) -> usize {
        let _one_at_a_time = self.publishing.lock().await;
        let pending = match self.store.tx(|t| t.unpublished()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "reading the outbox failed");
                return 0;
            }
        };
        let mut sent = 0;
        for entry in pending {
            let seq = entry.seq;
            match tokio::time::timeout(Duration::from_secs(3), self.bus.publish(entry)).await {
                Ok(Ok(())) => {
                    if let Err(e) = self.store.tx(|t| t.mark_published(seq)) {
                        tracing::error!(error = %e, seq, "marking an entry published failed");
                        break;
                    }
                    sent += 1;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, seq, "publish failed; kept in the outbox");
                    break;
                }
                Err(_) => {
                    tracing::warn!(seq, "publish timed out; kept in the outbox");
                    break;
                }
            }
        }
        sent
    }

    /// Record the current tenants as a new version: to the canary PoP first when rollouts are
    /// canaried (the rollout watcher promotes or rolls it back), else everywhere.
    pub fn new_version(
        &self,
        t: &crate::store::Tx<'_>,
        reason: &str,
        now: u64,
    ) -> Result<crate::log::Entry, StoreError> {
        match &self.canary {
            Some(c) => {
                let previous = t.stable_version()?;
                let entry = t.new_version_to(reason, now, std::slice::from_ref(&c.pop))?;
                if let crate::log::Op::Config { version, .. } = &entry.op {
                    t.start_rollout(*version, &c.pop, previous, now)?;
                }
                Ok(entry)
            }
            None => t.new_version(reason, now),
        }
    }

    /// Decide every rollout whose canary has been watched long enough; returns the decisions
    /// made (version, state, reason).
    pub async fn judge_rollouts(&self) -> Vec<(u64, String, String)> {
        let Some(opts) = &self.canary else {
            return Vec::new();
        };
        let now = now_ms();
        let result = self.store.tx(|t| -> Result<_, StoreError> {
            let mut decided = Vec::new();
            for r in t.rollouts(Some("canary"))? {
                if now.saturating_sub(r.started_ms) < opts.watch.as_millis() as u64 {
                    continue;
                }
                let watch = opts.watch.as_millis() as u64;
                let rows = t.rollups_since(None, r.started_ms.saturating_sub(watch))?;
                let (before, after): (Vec<_>, Vec<_>) =
                    rows.into_iter().partition(|(at, _, _)| *at < r.started_ms);
                let (canary, rest) = self.split_by_pop(&after, &r.canary);
                let (canary_before, _) = self.split_by_pop(&before, &r.canary);
                match crate::rollout::judge(opts, &canary, &rest, &canary_before) {
                    Ok(why) => {
                        let tenants = t
                            .version(r.version)?
                            .map(|(_, tenants)| tenants)
                            .unwrap_or_default();
                        t.append(
                            crate::log::Op::Config {
                                version: r.version,
                                tenants,
                                only: Vec::new(),
                            },
                            now,
                        )?;
                        t.decide_rollout(r.version, "promoted", &why, now)?;
                        decided.push((r.version, "promoted".to_string(), why));
                    }
                    Err(why) => {
                        // Back to the previous version: the canary PoP gets it again as a new
                        // version; the others never left it.
                        let tenants = t
                            .version(r.previous)?
                            .map(|(_, tenants)| tenants)
                            .unwrap_or_default();
                        t.replace_tenants(&tenants, now)?;
                        let reason = format!(
                            "automatic rollback of version {} to {}: {why}",
                            r.version, r.previous
                        );
                        t.new_version_to(&reason, now, std::slice::from_ref(&r.canary))?;
                        t.decide_rollout(r.version, "rolled_back", &why, now)?;
                        decided.push((r.version, "rolled_back".to_string(), why));
                    }
                }
            }
            Ok(decided)
        });
        match result {
            Ok(d) => {
                for (v, state, why) in &d {
                    tracing::warn!(version = v, state = %state, reason = %why, "config rollout decided");
                }
                if !d.is_empty() {
                    self.flush().await;
                }
                d
            }
            Err(e) => {
                tracing::error!(error = %e, "judging rollouts failed");
                Vec::new()
            }
        }
    }

    /// Client traffic of the canary PoP's boxes and of every other edge.
    fn split_by_pop(
        &self,
        rows: &[(u64, String, crate::log::Rollup)],
        pop: &str,
    ) -> (crate::rollout::Traffic, crate::rollout::Traffic) {
        let topo = self.template.topology.as_ref();
        let (mut canary, mut rest) = Default::default();
        for (_, node, r) in rows {
            if let Some((outpost_config::Role::Edge, _, group, _)) = topo.and_then(|t| t.find(node))
            {
                let side: &mut crate::rollout::Traffic =
                    if group == pop { &mut canary } else { &mut rest };
                side.add(r);
            }
        }
        (canary, rest)
    }

    /// How a new version goes out, for API answers: `{"canary": POP, "watch_ms": N}`, or null
    /// when it goes everywhere at once.
    pub fn rollout_plan(&self) -> serde_json::Value {
        match &self.canary {
            Some(c) => serde_json::json!({"canary": c.pop, "watch_ms": c.watch.as_millis() as u64}),
            None => serde_json::Value::Null,
        }
    }

    /// The topology's members (every one is expected to apply every entry).
    pub fn members(&self) -> Vec<String> {
        self.template
            .topology
            .as_ref()
            .map(|t| t.members().iter().map(|m| m.3.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Take one token for `key_id`; `Err(seconds)` to wait when the bucket is empty.
    pub fn admit(&self, key_id: &str) -> Result<(), u64> {
        self.limiter.take(key_id)
    }

    /// Validate tenant documents as a whole config (the template's node section and topology
    /// with these tenants).
    pub fn validate_tenants(
        &self,
        docs: &[serde_json::Value],
    ) -> Result<Config, (usize, String, String)> {
        let mut cfg = self.template.clone();
        // In a topology, as its first member sees them (node-level checks need a member).
        if let Some(first) = cfg
            .topology
            .as_ref()
            .and_then(|t| t.members().first().map(|m| m.3.name.clone()))
        {
            cfg.node.name = first;
        }
        cfg.tenants = Vec::with_capacity(docs.len());
        for (i, d) in docs.iter().enumerate() {
            let t: TenantConfig = serde_path_to_error::deserialize(d.clone()).map_err(|e| {
                let path = e.path().to_string();
                (
                    i,
                    if path == "." { String::new() } else { path },
                    e.into_inner().to_string(),
                )
            })?;
            cfg.tenants.push(t);
        }
        cfg.validate().map_err(|e| {
            // `tenant[i].field` → (i, field).
            let p = e.path.clone();
            match p
                .strip_prefix("tenant[")
                .and_then(|r| r.split_once(']'))
                .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)))
            {
                Some((i, rest)) => (i, rest.trim_start_matches('.').to_string(), e.message),
                None => (usize::MAX, p, e.message),
            }
        })?;
        Ok(cfg)
    }
}

/// Token buckets per API key.
struct Limiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    fn take(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = b.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

/// Start the control service: open the store (seeding tenants from the template when it has
/// none), make sure an admin key exists, publish the outbox, collect acks, serve the API.
pub async fn start(opts: ControlOptions, bus: Arc<dyn Bus>) -> Result<RunningControl, String> {
    let store = match &opts.db {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("control db: cannot create {}: {e}", dir.display()))?;
            }
            Store::open(p)
        }
        None => Store::in_memory(),
    }
    .map_err(|e| e.to_string())?;
    let now = now_ms();
    let new_admin_key = store
        .tx(|t| -> Result<Option<String>, StoreError> {
            if let Some(k) = &opts.admin_key {
                t.ensure_admin_key(k, now)?;
            }
            if t.has_admin_key()? {
                return Ok(None);
            }
            t.create_key(None, now).map(Some)
        })
        .map_err(|e| e.to_string())?;
    let seed: Vec<serde_json::Value> = opts.template.tenants.iter().map(tenant_doc).collect();
    store
        .tx(|t| -> Result<(), StoreError> {
            if t.tenants()?.is_empty() && !seed.is_empty() {
                for d in &seed {
                    let name = d.get("name").and_then(|n| n.as_str()).unwrap_or_default();
                    t.put_tenant(name, d, now)?;
                }
                t.new_version("seeded from the node config", now)?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .map_err(|e| format!("control: cannot listen on {}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let control = Arc::new(Control {
        store,
        bus: bus.clone(),
        template: opts.template.clone(),
        publishing: tokio::sync::Mutex::new(()),
        canary: opts.canary.clone().filter(|c| {
            let pops = opts.template.topology.as_ref().map_or(0, |t| t.pops.len());
            let known = opts
                .template
                .topology
                .as_ref()
                .is_some_and(|t| t.pops.iter().any(|p| p.name == c.pop));
            if !known || pops < 2 {
                tracing::warn!(pop = %c.pop, "canary rollouts need the canary PoP and another one in the topology; versions go everywhere at once");
            }
            known && pops >= 2
        }),
        limiter: Limiter {
            rate: opts.rate.max(0.001),
            burst: opts.burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        },
    });
    // Acks into the store.
    {
        let c = control.clone();
        tokio::spawn(async move {
            loop {
                match c.bus.acks().await {
                    Ok(mut rx) => {
                        while let Some(a) = rx.recv().await {
                            if let Err(e) = c.store.tx(|t| t.record_ack(&a, now_ms())) {
                                tracing::error!(error = %e, "recording an ack failed");
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "ack subscription failed"),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
    // The outbox, now and every second; analytics older than 25 hours go once a minute;
    // canaries watched long enough are promoted or rolled back.
    {
        let c = control.clone();
        tokio::spawn(async move {
            let mut pruned = Instant::now();
            loop {
                c.flush().await;
                c.judge_rollouts().await;
                if pruned.elapsed() >= Duration::from_secs(60) {
                    pruned = Instant::now();
                    let before = now_ms().saturating_sub(25 * 3600 * 1000);
                    if let Err(e) = c.store.tx(|t| t.prune_rollups(before)) {
                        tracing::warn!(error = %e, "pruning analytics failed");
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
    tokio::spawn(crate::api::serve(listener, control.clone()));
    tracing::info!(%addr, bus = %bus.describe(), "control API listening");
    Ok(RunningControl {
        addr,
        control,
        new_admin_key,
    })
}

/// A tenant config as the API's JSON document (the shape of a `[[tenant]]` table).
pub fn tenant_doc(t: &TenantConfig) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
}
