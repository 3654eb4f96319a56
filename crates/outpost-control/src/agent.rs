//! The node side of the control plane ([`spawn`]): a task that follows the log through the bus
//! with the node's durable position, applies each entry once and in order (config versions
//! replace the node's tenants after the node validates them; purges go through the node's purge
//! path), acknowledges it, and sends a heartbeat with its applied position every second. The
//! data plane never waits on it: with the bus down the node serves with its last config and the
//! agent resubscribes (replaying what it missed) when the bus is back.

use crate::bus::Bus;
use crate::log::{now_ms, Ack, Entry, Op, PurgeOp};
use outpost_config::{Config, TenantConfig};
use outpost_proxy::admin::{purge_request, PurgeRequest};
use outpost_proxy::Node;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the applied position is repeated to the control plane.
const HEARTBEAT: Duration = Duration::from_secs(1);

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

/// Follow the log for `node` (named `node.name` on the bus). `base` is the node's own config:
/// its node settings and topology stay, each config version replaces its tenants.
pub fn spawn(node: Arc<Node>, base: Config, bus: Arc<dyn Bus>) -> Arc<AgentState> {
    let state = Arc::new(AgentState::default());
    let name = node.name.clone();
    {
        let (bus, state, name) = (bus.clone(), state.clone(), name.clone());
        tokio::spawn(async move {
            loop {
                let applied = state.applied.load(Ordering::Acquire);
                let _ = bus
                    .ack(Ack {
                        node: name.clone(),
                        seq: 0,
                        applied,
                        at_ms: now_ms(),
                        error: None,
                    })
                    .await;
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
    }
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let mut rx = match bus.subscribe(&name).await {
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
                    let error = apply(&node, &base, &d.entry, &st).await;
                    st.applied.store(seq, Ordering::Release);
                    node.log_position.advance(seq);
                    let _ = bus
                        .ack(Ack {
                            node: name.clone(),
                            seq,
                            applied: seq,
                            at_ms: now_ms(),
                            error,
                        })
                        .await;
                }
                if let Err(e) = d.done().await {
                    tracing::debug!(error = %e, seq, "log ack failed");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    state
}

/// Apply one entry; the error is why the node refused it.
async fn apply(node: &Node, base: &Config, entry: &Entry, st: &AgentState) -> Option<String> {
    match &entry.op {
        Op::Config { version, tenants } => match config_from(base, tenants) {
            Ok(cfg) => match node.apply_config(&cfg) {
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
            let req = purge_of(p);
            match purge_request(node, &req).await {
                Ok(done) => {
                    tracing::debug!(id = %p.id, removed = done.removed, "purge applied");
                    None
                }
                // A tenant this node does not serve has nothing to purge here.
                Err(e) if e.code == "unknown-tenant" => None,
                Err(e) => Some(e.to_string()),
            }
        }
    }
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

fn purge_of(p: &PurgeOp) -> PurgeRequest {
    PurgeRequest {
        tenant: p.tenant.clone(),
        urls: p.urls.clone(),
        prefixes: p.prefixes.clone(),
        hosts: p.hosts.clone(),
        tags: p.tags.clone(),
        everything: p.everything,
    }
}
