//! The node side of the control plane ([`spawn`]): a task that follows the log through the bus
//! with the node's durable position, applies each entry once and in order (config versions
//! replace the node's tenants after the node validates them; purges go through the node's purge
//! path; warm jobs start fetching in the background), acknowledges it, and sends a heartbeat
//! with its applied position every second. The data plane never waits on it: with the bus down
//! the node serves with its last config and the agent resubscribes (replaying what it missed)
//! when the bus is back.

use crate::bus::Bus;
use crate::log::{now_ms, Ack, Entry, Op, Rollup, WarmOp};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use outpost_config::{Config, Role, TenantConfig};
use outpost_proxy::admin::purge_request;
use outpost_proxy::metrics::ClientTotals;
use outpost_proxy::{Node, RunningNode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest a starting node waits to catch up with the log before it serves anyway (the data
/// plane does not wait on the control plane for longer).
pub const CATCH_UP_MAX: Duration = Duration::from_secs(10);
/// How often the applied position is repeated to the control plane.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Requests one node has in flight for a warm job.
const WARM_CONCURRENCY: usize = 8;
/// How often a warm job reports its progress.
const WARM_REPORT: Duration = Duration::from_millis(250);

/// What the agent has done, for tests and metrics.
#[derive(Debug, Default)]
pub struct AgentState {
    /// Highest sequence handled (applied or refused).
    pub applied: AtomicU64,
    /// The config version in force from the log (0: none yet).
    pub config_version: AtomicU64,
    /// Config versions refused by node-side validation.
    pub refused: AtomicU64,
}

/// What the agent needs to apply entries on one node.
struct Target {
    node: Arc<Node>,
    /// The node's own listener (warm requests go through it, so they take the normal path).
    addr: SocketAddr,
    base: Config,
    bus: Arc<dyn Bus>,
}

/// Follow the log for `running` (named `node.name` on the bus). `base` is the node's own
/// config: its node settings and topology stay, each config version replaces its tenants.
pub fn spawn(running: &RunningNode, base: Config, bus: Arc<dyn Bus>) -> Arc<AgentState> {
    let state = Arc::new(AgentState::default());
    // A node with an SSD tier keeps its log position beside its objects, so after a restart it
    // knows which entries its stored objects have already seen.
    let position_file = (!base.store.dir.is_empty())
        .then(|| std::path::Path::new(&base.store.dir).join("control-log.pos"));
    if let Some(seq) = position_file
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        state.applied.store(seq, Ordering::Release);
        running.node.log_position.advance(seq);
    }
    let name = running.node.name.clone();
    {
        let (bus, state, name) = (bus.clone(), state.clone(), name.clone());
        let node = running.node.clone();
        tokio::spawn(async move {
            // What the last heartbeat that reached the bus had reported.
            let mut sent: HashMap<String, ClientTotals> = HashMap::new();
            loop {
                let applied = state.applied.load(Ordering::Acquire);
                let totals = node.metrics.client_totals();
                let rollups = totals
                    .iter()
                    .filter_map(|t| rollup(t, sent.get(&t.tenant)))
                    .collect();
                let beat = Ack {
                    node: name.clone(),
                    seq: 0,
                    applied,
                    at_ms: now_ms(),
                    error: None,
                    detail: None,
                    rollups,
                };
                if bus.ack(beat).await.is_ok() {
                    sent = totals.into_iter().map(|t| (t.tenant.clone(), t)).collect();
                }
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
    }
    let target = Arc::new(Target {
        node: running.node.clone(),
        addr: running.addr,
        base,
        bus,
    });
    if running.node.catching_up.load(Ordering::Acquire) {
        let node = running.node.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CATCH_UP_MAX).await;
            if node.catching_up.swap(false, Ordering::AcqRel) {
                tracing::warn!(
                    "the control log could not be caught up with in {CATCH_UP_MAX:?}; serving anyway"
                );
            }
        });
    }
    let st = state.clone();
    tokio::spawn(async move {
        // The log's end when the node started: once applied, it may serve.
        let mut catch_up_to: Option<u64> = None;
        loop {
            if target.node.catching_up.load(Ordering::Acquire) && catch_up_to.is_none() {
                catch_up_to = target.bus.head().await.ok();
                if catch_up_to == Some(0)
                    || catch_up_to.is_some_and(|h| h <= st.applied.load(Ordering::Acquire))
                {
                    caught_up(&target.node);
                }
            }
            let mut rx = match target.bus.subscribe(&name).await {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::debug!(error = %e, "log subscription failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            while let Some(d) = rx.recv().await {
                let seq = d.entry.seq;
                if seq > st.applied.load(Ordering::Acquire) {
                    let error = apply(&target, &d.entry, &st).await;
                    st.applied.store(seq, Ordering::Release);
                    target.node.log_position.advance(seq);
                    if let Some(p) = &position_file {
                        if let Err(e) = std::fs::write(p, format!("{seq}\n")) {
                            tracing::warn!(error = %e, file = %p.display(), "cannot keep the log position");
                        }
                    }
                    let _ = target
                        .bus
                        .ack(Ack {
                            node: name.clone(),
                            seq,
                            applied: seq,
                            at_ms: now_ms(),
                            error,
                            detail: None,
                            rollups: Vec::new(),
                        })
                        .await;
                }
                if let Err(e) = d.done().await {
                    tracing::debug!(error = %e, seq, "log ack failed");
                }
                if catch_up_to.is_some_and(|h| seq >= h) {
                    caught_up(&target.node);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    state
}

fn caught_up(node: &Node) {
    if node.catching_up.swap(false, Ordering::AcqRel) {
        tracing::info!(
            position = node.log_position.get(),
            "caught up with the control log; serving"
        );
    }
}

/// Apply one entry; the error is why the node refused it.
async fn apply(t: &Arc<Target>, entry: &Entry, st: &AgentState) -> Option<String> {
    match &entry.op {
        Op::Config { only, .. } if !only.is_empty() && !in_pops(&t.base, &t.node.name, only) => {
            // A canary version for other PoPs.
            None
        }
        Op::Config {
            version, tenants, ..
        } => match config_from(&t.base, tenants) {
            Ok(cfg) => match t.node.apply_config(&cfg) {
                Ok(_) => {
                    st.config_version.store(*version, Ordering::Release);
                    tracing::debug!(version, seq = entry.seq, "config version applied");
                    None
                }
                Err(e) => refuse(st, *version, e.to_string()),
            },
            Err(e) => refuse(st, *version, e),
        },
        Op::Purge(p) => {
            match purge_request(&t.node, &p.purge).await {
                Ok(done) => {
                    tracing::debug!(id = %p.id, removed = done.removed, "purge applied");
                    None
                }
                // A tenant this node does not serve has nothing to purge here.
                Err(e) if e.code == "unknown-tenant" => None,
                Err(e) => Some(e.to_string()),
            }
        }
        Op::Warm(w) => {
            if warms_here(&t.base, &t.node.name, w) {
                tokio::spawn(warm(t.clone(), entry.seq, w.clone()));
            }
            None
        }
    }
}

/// Whether the node `name` is a box of one of `pops`.
fn in_pops(base: &Config, name: &str, pops: &[String]) -> bool {
    base.topology
        .as_ref()
        .and_then(|t| t.find(name))
        .is_some_and(|(role, _, group, _)| role == Role::Edge && pops.iter().any(|p| p == group))
}

/// Whether this node fetches for warm job `w`: edges of the job's regions (every region when
/// it names none); a node outside any topology when the job names no region.
fn warms_here(base: &Config, name: &str, w: &WarmOp) -> bool {
    match base.topology.as_ref().and_then(|t| t.find(name)) {
        Some((role, region, _, _)) => {
            role == Role::Edge && (w.regions.is_empty() || w.regions.iter().any(|r| r == region))
        }
        None => w.regions.is_empty(),
    }
}

/// Fetch every URL of `w` through this node's own listener (so a non-owner box forwards to the
/// owner and the owner fills through its shield, coalesced like any miss), a few at a time,
/// reporting progress.
async fn warm(t: Arc<Target>, seq: u64, w: WarmOp) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let total = w.urls.len() as u64;
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let report = |finished: bool| {
        let t = t.clone();
        let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        async move {
            let _ = t
                .bus
                .ack(Ack {
                    node: t.node.name.clone(),
                    seq,
                    applied: t.node.log_position.get(),
                    at_ms: now_ms(),
                    error: None,
                    detail: Some(serde_json::json!({
                        "done": done, "failed": failed, "total": total, "finished": finished,
                    })),
                    rollups: Vec::new(),
                })
                .await;
        }
    };
    report(false).await;
    let fetches = futures_util::stream::iter(w.urls.clone())
        .map(|url| {
            let (client, addr) = (client.clone(), t.addr);
            async move { fetch(&client, addr, &url).await }
        })
        .buffer_unordered(WARM_CONCURRENCY);
    tokio::pin!(fetches);
    let mut last = tokio::time::Instant::now();
    while let Some(ok) = fetches.next().await {
        if ok {
            done.fetch_add(1, Ordering::Relaxed);
        } else {
            failed.fetch_add(1, Ordering::Relaxed);
        }
        if last.elapsed() >= WARM_REPORT {
            last = tokio::time::Instant::now();
            report(false).await;
        }
    }
    report(true).await;
    tracing::info!(id = %w.id, total, failed = failed.load(Ordering::Relaxed), "warm job finished");
}

/// GET an absolute `url` through the node at `addr`; whether it answered 2xx/3xx.
async fn fetch(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    url: &str,
) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Ok(req) = http::Request::get(format!("http://{addr}{path}"))
        .header(http::header::HOST, host)
        .body(Empty::new())
    else {
        return false;
    };
    match tokio::time::timeout(Duration::from_secs(60), client.request(req)).await {
        Ok(Ok(resp)) => {
            let ok = resp.status().as_u16() < 400;
            ok && resp.into_body().collect().await.is_ok()
        }
        _ => false,
    }
}

/// What changed between two client totals of a tenant (none: nothing was served).
fn rollup(now: &ClientTotals, before: Option<&ClientTotals>) -> Option<Rollup> {
    let zero = ClientTotals::default();
    let b = before.unwrap_or(&zero);
    let requests = now.requests.saturating_sub(b.requests);
    let fetches = now.upstream_fetches.saturating_sub(b.upstream_fetches);
    let bytes = now.upstream_bytes.saturating_sub(b.upstream_bytes);
    // A shield serves no client but fetches from the origin: that is reported too.
    if requests == 0 && fetches == 0 && bytes == 0 {
        return None;
    }
    let mut classes = [0u64; 6];
    for (i, c) in classes.iter_mut().enumerate() {
        *c = now.classes[i].saturating_sub(b.classes[i]);
    }
    let latency = now
        .latency
        .iter()
        .enumerate()
        .map(|(i, n)| (i, n.saturating_sub(b.latency.get(i).copied().unwrap_or(0))))
        .filter(|(_, n)| *n > 0)
        .collect();
    Some(Rollup {
        tenant: now.tenant.clone(),
        requests,
        hits: now.hits.saturating_sub(b.hits),
        classes,
        bytes_out: now.bytes_out.saturating_sub(b.bytes_out),
        upstream_bytes: now.upstream_bytes.saturating_sub(b.upstream_bytes),
        latency,
        upstream_fetches: now.upstream_fetches.saturating_sub(b.upstream_fetches),
        upstream_errors: now.upstream_errors.saturating_sub(b.upstream_errors),
    })
}

fn refuse(st: &AgentState, version: u64, why: String) -> Option<String> {
    st.refused.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(version, error = %why, "config version refused; keeping the last good one");
    Some(why)
}

/// The node's config with `tenants` (JSON documents) in place of its own.
pub fn config_from(base: &Config, tenants: &[serde_json::Value]) -> Result<Config, String> {
    let mut cfg = base.clone();
    cfg.tenants = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::from_value::<TenantConfig>(t.clone())
                .map_err(|e| format!("tenant[{i}]: {e}"))
        })
        .collect::<Result<_, _>>()?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}
