//! Hierarchy mode: N edges, each with its own cache, in front of one shield, in front of the
//! origin; and the capacity maths that turns hit ratios into requests per second per tier.
//!
//! Each request goes to one edge ([`Routing::Random`]: users spread over PoPs, so every edge
//! sees a sample of the whole catalogue; [`Routing::Hash`]: keys sharded over edges by the same
//! consistent hashing a PoP uses to pick a key's owner box (`outpost_upstream::ring`), so each key
//! lives on one edge only and a joining or leaving edge moves about 1/N of the keys). An edge miss becomes a shield request; a shield miss becomes an
//! origin request. Both tiers fill on a miss (inclusive caching), using the store's own
//! policies.
//!
//! Capacity maths: a tier that receives `rps` requests per second and hits a fraction `h` of them
//! sends `rps × (1 − h)` to the next tier — a 95% edge hit ratio at 10M rps leaves 500k rps for
//! the shield ([`next_tier_rps`]).

use std::str::FromStr;

use outpost_store::policy::{EvictionPolicy, PolicyKind};

use crate::error::SimError;
use crate::replay::Mode;
use crate::rng::{mix64, Rng};
use crate::trace::Trace;
use outpost_upstream::ring::Ring;

/// Requests per second reaching the next tier when a tier receiving `rps` hits `hit_ratio` of
/// them.
pub fn next_tier_rps(rps: f64, hit_ratio: f64) -> f64 {
    rps * (1.0 - hit_ratio.clamp(0.0, 1.0))
}

/// How client requests are spread over edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// Uniformly at random (seeded): each edge sees a sample of all keys.
    #[default]
    Random,
    /// By key hash: each key always goes to the same edge.
    Hash,
}

impl FromStr for Routing {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "random" => Ok(Routing::Random),
            "hash" => Ok(Routing::Hash),
            other => Err(SimError::invalid(
                "--route",
                format!("{other:?} (expected random or hash)"),
            )),
        }
    }
}

/// Hierarchy settings (capacities already resolved to objects or bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct HierarchyConfig {
    /// Number of edges (≥ 1).
    pub edges: usize,
    /// Capacity of each edge.
    pub edge_capacity: u64,
    /// Capacity of the shield.
    pub shield_capacity: u64,
    /// Edge policy.
    pub edge_policy: PolicyKind,
    /// Shield policy.
    pub shield_policy: PolicyKind,
    /// How requests are spread over edges.
    pub routing: Routing,
    /// Seed for random routing.
    pub seed: u64,
    /// Objects or bytes.
    pub mode: Mode,
    /// Client request rate for the capacity maths.
    pub rps: f64,
}

/// Request and hit counts of one cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierStats {
    /// Requests received.
    pub requests: u64,
    /// Requests that hit.
    pub hits: u64,
    /// Bytes requested.
    pub bytes_requested: u64,
    /// Bytes served from this cache.
    pub bytes_hit: u64,
}

impl TierStats {
    /// Hits / requests (0 when idle).
    pub fn hit_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.hits as f64 / self.requests as f64
        }
    }

    /// Bytes hit / bytes requested (0 when idle).
    pub fn byte_hit_ratio(&self) -> f64 {
        if self.bytes_requested == 0 {
            0.0
        } else {
            self.bytes_hit as f64 / self.bytes_requested as f64
        }
    }

    /// Misses, i.e. requests passed to the next tier.
    pub fn misses(&self) -> u64 {
        self.requests - self.hits
    }

    fn accumulate(&mut self, other: &TierStats) {
        self.requests += other.requests;
        self.hits += other.hits;
        self.bytes_requested += other.bytes_requested;
        self.bytes_hit += other.bytes_hit;
    }
}

/// What a hierarchy run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct HierarchyReport {
    /// The settings.
    pub config: HierarchyConfig,
    /// One entry per edge.
    pub edges: Vec<TierStats>,
    /// The shield.
    pub shield: TierStats,
}

impl HierarchyReport {
    /// All edges together.
    pub fn edge_total(&self) -> TierStats {
        let mut total = TierStats::default();
        for e in &self.edges {
            total.accumulate(e);
        }
        total
    }

    /// Share of client requests that reach the origin.
    pub fn origin_fraction(&self) -> f64 {
        let clients = self.edge_total().requests;
        if clients == 0 {
            0.0
        } else {
            self.shield.misses() as f64 / clients as f64
        }
    }

    /// Share of client bytes fetched from the origin.
    pub fn origin_byte_fraction(&self) -> f64 {
        let clients = self.edge_total().bytes_requested;
        if clients == 0 {
            0.0
        } else {
            (self.shield.bytes_requested - self.shield.bytes_hit) as f64 / clients as f64
        }
    }

    /// Requests per second arriving at the shield, by the capacity maths.
    pub fn shield_rps(&self) -> f64 {
        next_tier_rps(self.config.rps, self.edge_total().hit_ratio())
    }

    /// Requests per second arriving at the origin.
    pub fn origin_rps(&self) -> f64 {
        next_tier_rps(self.shield_rps(), self.shield.hit_ratio())
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        let c = &self.config;
        let edges = self.edge_total();
        let mut out = String::new();
        out.push_str(&format!(
            "hierarchy: {} edge(s) × {} {} ({}), shield {} {} ({}), routing {:?}\n",
            c.edges,
            c.edge_capacity,
            c.mode.as_str(),
            c.edge_policy,
            c.shield_capacity,
            c.mode.as_str(),
            c.shield_policy,
            c.routing
        ));
        out.push_str(&format!(
            "{:<10} {:>12} {:>12} {:>10} {:>10} {:>16}\n",
            "tier", "requests", "hits", "hit %", "byte hit %", "rps in"
        ));
        for (i, e) in self.edges.iter().enumerate() {
            let share = if edges.requests == 0 {
                0.0
            } else {
                e.requests as f64 / edges.requests as f64
            };
            let name = format!("edge {i}");
            out.push_str(&format!(
                "{:<10} {:>12} {:>12} {:>10.2} {:>10.2} {:>16.0}\n",
                name,
                e.requests,
                e.hits,
                100.0 * e.hit_ratio(),
                100.0 * e.byte_hit_ratio(),
                c.rps * share
            ));
        }
        out.push_str(&format!(
            "{:<10} {:>12} {:>12} {:>10.2} {:>10.2} {:>16.0}\n",
            "edges",
            edges.requests,
            edges.hits,
            100.0 * edges.hit_ratio(),
            100.0 * edges.byte_hit_ratio(),
            c.rps
        ));
        out.push_str(&format!(
            "{:<10} {:>12} {:>12} {:>10.2} {:>10.2} {:>16.0}\n",
            "shield",
            self.shield.requests,
            self.shield.hits,
            100.0 * self.shield.hit_ratio(),
            100.0 * self.shield.byte_hit_ratio(),
            self.shield_rps()
        ));
        out.push_str(&format!(
            "{:<10} {:>12} {:>12} {:>10} {:>10} {:>16.0}\n",
            "origin",
            self.shield.misses(),
            "-",
            "-",
            "-",
            self.origin_rps()
        ));
        out.push_str(&format!(
            "end to end: {:.2}% of requests and {:.2}% of bytes served from cache; \
             {:.0} rps × (1 − {:.4}) = {:.0} rps to the shield, × (1 − {:.4}) = {:.0} rps to the origin\n",
            100.0 * (1.0 - self.origin_fraction()),
            100.0 * (1.0 - self.origin_byte_fraction()),
            c.rps,
            edges.hit_ratio(),
            self.shield_rps(),
            self.shield.hit_ratio(),
            self.origin_rps()
        ));
        out
    }
}

/// Replays `trace` through the hierarchy.
pub fn simulate(trace: &Trace, config: &HierarchyConfig) -> Result<HierarchyReport, SimError> {
    if config.edges == 0 {
        return Err(SimError::invalid("--edges", "at least one edge"));
    }
    if !(config.rps.is_finite() && config.rps >= 0.0) {
        return Err(SimError::invalid("--rps", "must be a non-negative number"));
    }
    if trace.is_empty() {
        return Err(SimError::EmptyTrace);
    }
    let mut edges: Vec<Box<dyn EvictionPolicy>> = (0..config.edges)
        .map(|_| config.edge_policy.build(config.edge_capacity))
        .collect();
    let mut shield = config.shield_policy.build(config.shield_capacity);
    let mut edge_stats = vec![TierStats::default(); config.edges];
    let mut shield_stats = TierStats::default();
    let mut rng = Rng::new(config.seed);
    let n = config.edges as u64;
    let names: Vec<String> = (0..config.edges).map(|i| format!("edge-{i}")).collect();
    let ring = Ring::equal(names.iter().map(String::as_str));
    for r in &trace.requests {
        let hash = mix64(r.key);
        let weight = config.mode.weight(r.size);
        let edge_index = match config.routing {
            Routing::Random => rng.below(n),
            Routing::Hash => ring.owner(hash).unwrap_or(0) as u64,
        };
        let e = usize::try_from(edge_index).unwrap_or(0);
        let (Some(edge), Some(stats)) = (edges.get_mut(e), edge_stats.get_mut(e)) else {
            continue;
        };
        if lookup_or_fill(edge.as_mut(), stats, hash, weight, r.size) {
            continue;
        }
        lookup_or_fill(shield.as_mut(), &mut shield_stats, hash, weight, r.size);
    }
    Ok(HierarchyReport {
        config: config.clone(),
        edges: edge_stats,
        shield: shield_stats,
    })
}

/// One lookup: a hit is counted, a miss fills. Returns whether it hit.
fn lookup_or_fill(
    cache: &mut dyn EvictionPolicy,
    stats: &mut TierStats,
    hash: u64,
    weight: u64,
    size: u64,
) -> bool {
    stats.requests += 1;
    stats.bytes_requested += size;
    if cache.contains(hash) {
        cache.on_hit(hash);
        stats.hits += 1;
        stats.bytes_hit += size;
        true
    } else {
        cache.on_insert(hash, weight);
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::gen::{generate, GenConfig, SizeProfile};

    #[test]
    fn capacity_maths_of_the_reference() {
        // 95% edge hit ratio at 10M rps → 500k rps to the next tier.
        let shield = next_tier_rps(10_000_000.0, 0.95);
        assert!((shield - 500_000.0).abs() < 1e-6, "{shield}");
        // A 90% shield hit ratio then leaves 50k rps for the origin.
        let origin = next_tier_rps(shield, 0.90);
        assert!((origin - 50_000.0).abs() < 1e-6, "{origin}");
        assert_eq!(next_tier_rps(1000.0, 1.5), 0.0, "clamped");
        assert_eq!(next_tier_rps(1000.0, 0.0), 1000.0);
    }

    #[test]
    fn report_arithmetic_is_consistent() {
        let report = HierarchyReport {
            config: HierarchyConfig {
                edges: 2,
                edge_capacity: 1,
                shield_capacity: 1,
                edge_policy: PolicyKind::Lru,
                shield_policy: PolicyKind::Lru,
                routing: Routing::Random,
                seed: 1,
                mode: Mode::Objects,
                rps: 10_000_000.0,
            },
            edges: vec![
                TierStats {
                    requests: 500,
                    hits: 475,
                    bytes_requested: 500,
                    bytes_hit: 475,
                },
                TierStats {
                    requests: 500,
                    hits: 475,
                    bytes_requested: 500,
                    bytes_hit: 475,
                },
            ],
            shield: TierStats {
                requests: 50,
                hits: 40,
                bytes_requested: 50,
                bytes_hit: 40,
            },
        };
        assert!((report.edge_total().hit_ratio() - 0.95).abs() < 1e-12);
        assert!((report.shield_rps() - 500_000.0).abs() < 1e-3);
        assert!((report.origin_rps() - 100_000.0).abs() < 1e-3);
        assert!((report.origin_fraction() - 0.01).abs() < 1e-12);
        assert!(report.render().contains("origin"));
    }

    #[test]
    fn requests_flow_through_the_tiers() {
        let trace = generate(&GenConfig {
            keys: 2_000,
            requests: 40_000,
            scan_fraction: 0.1,
            scan_burst: 100,
            sizes: SizeProfile::Unit,
            ..GenConfig::default()
        })
        .unwrap();
        for routing in [Routing::Random, Routing::Hash] {
            let cfg = HierarchyConfig {
                edges: 4,
                edge_capacity: 50,
                shield_capacity: 500,
                edge_policy: PolicyKind::WTinyLfu,
                shield_policy: PolicyKind::WTinyLfu,
                routing,
                seed: 3,
                mode: Mode::Objects,
                rps: 1_000_000.0,
            };
            let report = simulate(&trace, &cfg).unwrap();
            let edges = report.edge_total();
            assert_eq!(edges.requests, 40_000);
            assert_eq!(report.shield.requests, edges.misses());
            assert!(edges.hit_ratio() > 0.1 && report.shield.hit_ratio() > 0.05);
            assert!(report.origin_rps() < report.shield_rps());
            assert!(report.edges.iter().all(|e| e.requests > 5_000));
        }
        // Deterministic by seed.
        let cfg = HierarchyConfig {
            edges: 3,
            edge_capacity: 20,
            shield_capacity: 200,
            edge_policy: PolicyKind::Lru,
            shield_policy: PolicyKind::S3Fifo,
            routing: Routing::Random,
            seed: 9,
            mode: Mode::Bytes,
            rps: 1.0,
        };
        assert_eq!(
            simulate(&trace, &cfg).unwrap(),
            simulate(&trace, &cfg).unwrap()
        );
    }
}
