//! Two-tier node replay (`outpost sim node`): a trace through the store's own [`HybridStore`],
//! the RAM tier ([`outpost_store::MemoryStore`], its sharded policy) in front of the SSD tier
//! (real segment files in a scratch directory, its admission filter and log reclamation), so
//! the numbers come from the engine's code, not a model of it. Each request is a get; a miss is
//! a fill of an object whose body is the trace size divided by `scale` (so a multi-GB working
//! set replays in a small directory; budgets are divided by the same factor, per-object
//! overheads are real). Reported per tier: RAM hits over all requests, SSD hits over the RAM's
//! misses, and the node's total, in objects and in (trace) bytes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use outpost_store::{
    policy::Mode, CacheKey, DiskStats, HybridStore, ObjectMeta, PolicyKind, Store, StoredObject,
};

use crate::error::SimError;
use crate::hierarchy::TierStats;
use crate::trace::Trace;

/// Largest segment file the replay uses.
const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Smallest segment file the replay uses.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// Scaled working set `auto` scaling aims for.
pub const AUTO_SCALE_TARGET_BYTES: u64 = 256 << 20;

/// Settings of one node replay.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// RAM tier budget, in trace bytes (divided by `scale` for the store).
    pub ram_bytes: u64,
    /// SSD tier budget, in trace bytes (divided by `scale` for the store).
    pub ssd_bytes: u64,
    /// Policy of both tiers.
    pub policy: PolicyKind,
    /// Object sizes and budgets are divided by this (at least 1).
    pub scale: u64,
    /// Scratch directory for the segment files (emptied first, removed after).
    pub dir: PathBuf,
}

/// What a node replay measured.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// The settings.
    pub config: NodeConfig,
    /// RAM tier: every request.
    pub ram: TierStats,
    /// SSD tier: the RAM tier's misses.
    pub ssd: TierStats,
    /// The node as a whole.
    pub node: TierStats,
    /// The SSD tier's own counters at the end (admission refusals, reclamation).
    pub disk: Option<DiskStats>,
    /// `s3-tinylfu`: the RAM tier's mode at the end and how often it switched.
    pub ram_mode: Option<(Mode, u64)>,
    /// Wall time of the replay.
    pub elapsed: Duration,
}

impl NodeReport {
    /// A plain-text table.
    pub fn render(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "node: policy {}, RAM {} bytes, SSD {} bytes (trace bytes; store budgets / {}), {:.1?}\n",
            c.policy, c.ram_bytes, c.ssd_bytes, c.scale, self.elapsed
        );
        out.push_str("tier   requests    hits  object hit ratio  byte hit ratio\n");
        for (name, t) in [("ram", &self.ram), ("ssd", &self.ssd), ("node", &self.node)] {
            out.push_str(&format!(
                "{name:<5} {:>9} {:>7}  {:>15.4}  {:>14.4}\n",
                t.requests,
                t.hits,
                t.hit_ratio(),
                t.byte_hit_ratio()
            ));
        }
        if let Some((mode, switches)) = self.ram_mode {
            out.push_str(&format!(
                "ram mode at the end: {mode:?} ({switches} switches)\n"
            ));
        }
        if let Some(d) = &self.disk {
            out.push_str(&format!(
                "ssd: {} objects, {} fills appended, {} refused by admission, {} evicted, {} segments reclaimed, {} hot records re-appended\n",
                d.objects, d.inserts, d.rejected, d.evictions, d.reclaimed_segments, d.reappended
            ));
            out.push_str(&format!(
                "ssd admission at the end: {} ({} switches)\n",
                if d.admit_every_fill {
                    "every fill"
                } else {
                    "frequency contest"
                },
                d.admission_switches
            ));
        }
        out
    }
}

/// The scale that brings `unique_bytes` to about [`AUTO_SCALE_TARGET_BYTES`] (at least 1).
pub fn auto_scale(unique_bytes: u64) -> u64 {
    unique_bytes.div_ceil(AUTO_SCALE_TARGET_BYTES).max(1)
}

fn object(body_len: u64, now: SystemTime) -> StoredObject {
    let len = usize::try_from(body_len).unwrap_or(usize::MAX);
    StoredObject {
        status: http::StatusCode::OK,
        headers: http::HeaderMap::new(),
        body: Bytes::from(vec![0u8; len]),
        meta: ObjectMeta {
            request_time: now,
            response_time: now,
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(365 * 86_400),
            keep_until: now + Duration::from_secs(365 * 86_400),
            tags: Vec::new(),
            vary: None,
            derived: None,
        },
    }
}

/// Replays `trace` through a RAM + SSD [`HybridStore`] built from `config`.
pub fn replay_node(trace: &Trace, config: &NodeConfig) -> Result<NodeReport, SimError> {
    let scale = config.scale.max(1);
    let ram = (config.ram_bytes / scale).max(1);
    let ssd = (config.ssd_bytes / scale).max(2 * MIN_SEGMENT_BYTES);
    let segment = (ssd / 16).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
    let io = |source| SimError::Io {
        path: config.dir.clone(),
        source,
    };
    if config.dir.exists() {
        std::fs::remove_dir_all(&config.dir).map_err(io)?;
    }
    std::fs::create_dir_all(&config.dir).map_err(io)?;
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let (store, _) = HybridStore::open_at(&config.dir, ram, ssd, config.policy, segment, now)
        .map_err(|e| SimError::invalid("--dir", format!("{}: {e}", config.dir.display())))?;
    let started = Instant::now();
    let (mut ram_t, mut ssd_t) = (TierStats::default(), TierStats::default());
    for r in &trace.requests {
        let key = CacheKey::new(format!("/o/{}", r.key));
        ram_t.requests += 1;
        ram_t.bytes_requested += r.size;
        let in_ram = store.ram().contains(&key);
        let found = store.get(&key, now).is_some();
        if found && in_ram {
            ram_t.hits += 1;
            ram_t.bytes_hit += r.size;
            continue;
        }
        ssd_t.requests += 1;
        ssd_t.bytes_requested += r.size;
        if found {
            ssd_t.hits += 1;
            ssd_t.bytes_hit += r.size;
        } else {
            store.insert(key, Arc::new(object((r.size / scale).max(1), now)), now);
        }
    }
    let elapsed = started.elapsed();
    let disk = store.stats_disk();
    let ram_mode = store
        .ram()
        .mode()
        .map(|mode| (mode, store.ram().mode_switches()));
    drop(store);
    let _ = std::fs::remove_dir_all(&config.dir);
    let node = TierStats {
        requests: ram_t.requests,
        hits: ram_t.hits + ssd_t.hits,
        bytes_requested: ram_t.bytes_requested,
        bytes_hit: ram_t.bytes_hit + ssd_t.bytes_hit,
    };
    Ok(NodeReport {
        config: config.clone(),
        ram: ram_t,
        ssd: ssd_t,
        node,
        disk,
        ram_mode,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::gen::{generate, GenConfig, SizeProfile};

    #[test]
    fn ssd_tier_serves_what_ram_lost_and_the_policies_differ() {
        let trace = generate(&GenConfig {
            requests: 20_000,
            keys: 5_000,
            zipf: 0.8,
            sizes: SizeProfile::Small,
            seed: 5,
            ..GenConfig::default()
        })
        .unwrap();
        let unique = trace.stats().unique_bytes;
        let mut node_ratios = Vec::new();
        for policy in [PolicyKind::S3TinyLfu, PolicyKind::Lru] {
            let dir = std::env::temp_dir().join(format!(
                "outpost-sim-node-{}-{}",
                std::process::id(),
                policy
            ));
            let report = replay_node(
                &trace,
                &NodeConfig {
                    ram_bytes: unique / 100,
                    ssd_bytes: unique / 5,
                    policy,
                    scale: 1,
                    dir: dir.clone(),
                },
            )
            .unwrap();
            eprintln!("{}", report.render());
            assert!(!dir.exists(), "scratch directory removed");
            assert_eq!(report.ram.requests, 20_000);
            assert_eq!(report.ssd.requests, report.ram.misses());
            assert!(report.ram.hits > 0, "{}", report.render());
            assert!(report.ssd.hits > 0, "the SSD tier must serve RAM misses");
            assert!(report.node.hit_ratio() > report.ram.hit_ratio());
            assert!(report.disk.is_some());
            node_ratios.push(report.node.hit_ratio());
        }
        assert_ne!(node_ratios[0], node_ratios[1]);
    }
}
