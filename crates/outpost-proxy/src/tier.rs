//! Where this node sits in the CDN ([`Tier`]: role, region, PoP or shield set, its peers) and
//! the two hops the hierarchy adds to the origin's ([`PeerHop`]):
//!
//! - **In a PoP**, each cache key has one owner box (consistent hashing over the PoP's boxes,
//!   with health and ramp-up, `outpost_upstream::peers`). A box that does not own a key forwards
//!   the client's request to the owner in one hop and relays the answer without storing it
//!   (the `owner` module), unless the key is hot on this box ([`HotKeys`]): then it runs the
//!   normal cache flow with the owner as its upstream, so the key is replicated here and served
//!   as a local hit. A request that arrives from a PoP peer (its `CDN-Loop` names one) is
//!   answered here, whoever the ring says owns it now, so two boxes that disagree for a moment
//!   (one saw a peer go down) never bounce a request.
//! - **To an origin's shield set**: an edge's misses for a tenant with `shield = "..."` go to the
//!   set's member for the key, failing over along the key's order.
//!
//! A changed topology (boxes or shields added or removed) is applied with the config snapshot
//! ([`Tier::reload`]): members that stay keep their health, new ones ramp up. A node's own place
//! (role, PoP) and the other `[topology]` settings need a restart.

use crate::error::ProxyError;
use crate::hop::{HopFuture, HopRequest, Upstream};
use crate::log_position::LogPosition;
use arc_swap::ArcSwap;
use http::HeaderMap;
use outpost_config::{Config, Role};
use outpost_store::CacheKey;
use outpost_upstream::peers::{HealthPolicy, PeerProtocol, PeerSet, PeerSpec};
use outpost_upstream::Timeouts;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Timeouts between tiers: connecting is local-network fast; the first byte may wait for a
/// whole miss path behind the peer, so each hop waits the tenant's origin timeout plus
/// [`TIER_MARGIN`] per tier behind it ([`PEER_TIMEOUTS`]'s first byte is the fallback).
const PEER_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    first_byte: Duration::from_secs(60),
};

/// What one tier adds to the wait for a response head (a shield answers 504 itself once the
/// origin timeout passes; the edge waits that long plus this).
pub const TIER_MARGIN: Duration = Duration::from_secs(5);

/// This node's place in the CDN.
pub struct Tier {
    /// Edge or shield.
    pub role: Role,
    /// Region name.
    pub region: String,
    /// PoP (edge) or shield set (shield) name.
    pub group: String,
    /// Its PoP's boxes and the shield sets, swapped when the topology changes.
    peers: ArcSwap<Peers>,
    /// An edge's regional mid-tier (a shield set its PoP names), which takes its misses.
    pub mid_tier: Option<String>,
    /// Whether this shield is part of a PoP's mid-tier (its misses go on to the shield set).
    pub is_mid_tier: bool,
    /// Forwarded GET/HEADs ask the owner over a pipelined connection first (`owner.rs`).
    pub pipeline: bool,
    /// Per-key request rates on this box.
    pub hot: HotKeys,
    /// Simulated client → PoP latency (edges add it before answering).
    pub client_latency: Duration,
    /// Simulated → origin latency.
    pub origin_latency: Duration,
    /// Requests forwarded to their owner box.
    pub forwarded: AtomicU64,
    /// Of those, answered by a pipelined ask (`owner.rs`).
    pub pipelined: AtomicU64,
    /// Requests a PoP peer forwarded here (this box answered as the owner).
    pub served_as_owner: AtomicU64,
    /// Requests for hot keys this box answered from its own copy or filled through the owner.
    pub hot_replica: AtomicU64,
    /// The node's control-log position, stamped on requests to peers.
    pub log: Arc<LogPosition>,
}

/// The peer sets of a tier, rebuilt when the topology changes.
pub struct Peers {
    /// The boxes of this edge's PoP (this node included, as the local member).
    pub pop: Option<Arc<PeerSet>>,
    /// Shield sets by name (what edges and mid-tiers send tenants' misses to).
    pub shield_sets: HashMap<String, Arc<PeerSet>>,
    /// Every member of the topology (edges and shields), by name.
    pub members: Vec<String>,
}

impl Peers {
    /// The peer sets `cfg`'s node talks to, with their health probes started. Members that
    /// `old` also had keep their health; new ones ramp up (they just joined).
    fn build(cfg: &Config, old: Option<&Peers>) -> Option<Peers> {
        let topo = cfg.topology.as_ref()?;
        let (role, _, group, _) = topo.find(&cfg.node.name)?;
        let policy = HealthPolicy {
            interval: topo.health_interval.0,
            timeout: topo.health_timeout.0,
            fall: topo.health_fall,
            rise: topo.health_rise,
            ramp_up: topo.ramp_up.0,
        };
        let specs = |boxes: &[outpost_config::MemberConfig]| -> Vec<PeerSpec> {
            boxes
                .iter()
                .map(|b| PeerSpec {
                    name: b.name.clone(),
                    http: b.listen.clone(),
                    admin: (!b.metrics.is_empty()).then(|| b.metrics.clone()),
                })
                .collect()
        };
        let protocol = if topo.peer_protocol == "http1" {
            PeerProtocol::Http1
        } else {
            PeerProtocol::Http2
        };
        let start = |set: PeerSet, previous: Option<&Arc<PeerSet>>| {
            if let Some(p) = previous {
                set.carry_over(p);
            }
            let set = Arc::new(set);
            set.spawn_probes();
            set
        };
        let pop = match role {
            Role::Edge => topo.pops.iter().find(|p| p.name == group).map(|p| {
                let set = PeerSet::with_protocol(
                    &p.name,
                    specs(&p.boxes),
                    Some(&cfg.node.name),
                    PEER_TIMEOUTS,
                    policy,
                    Duration::ZERO,
                    protocol,
                );
                start(set, old.and_then(|o| o.pop.as_ref()))
            }),
            Role::Shield => None,
        };
        let mut shield_sets = HashMap::new();
        if role == Role::Edge || topo.is_mid_tier(group) {
            for s in topo.shield_sets.iter().filter(|s| s.name != group) {
                let set = PeerSet::with_protocol(
                    &s.name,
                    specs(&s.boxes),
                    None,
                    PEER_TIMEOUTS,
                    policy,
                    topo.latency.pop_to_shield.0,
                    protocol,
                );
                let previous = old.and_then(|o| o.shield_sets.get(&s.name));
                shield_sets.insert(s.name.clone(), start(set, previous));
            }
        }
        let members = topo.members().iter().map(|m| m.3.name.clone()).collect();
        Some(Peers {
            pop,
            shield_sets,
            members,
        })
    }
}

impl Tier {
    /// The tier of `cfg`'s node, if it has a topology; starts the peers' health probes.
    pub fn from_config(cfg: &Config, log: Arc<LogPosition>) -> Option<Tier> {
        let topo = cfg.topology.as_ref()?;
        let (role, region, group, _) = topo.find(&cfg.node.name)?;
        let peers = Peers::build(cfg, None)?;
        let is_mid_tier = role == Role::Shield && topo.is_mid_tier(group);
        let mid_tier = match role {
            Role::Edge => topo
                .pops
                .iter()
                .find(|p| p.name == group)
                .and_then(|p| p.mid_tier.clone()),
            Role::Shield => None,
        };
        Some(Tier {
            role,
            region: region.to_string(),
            group: group.to_string(),
            peers: ArcSwap::from_pointee(peers),
            mid_tier,
            is_mid_tier,
            hot: HotKeys::new(topo.hot_key_rps),
            pipeline: topo.forward_pipeline,
            client_latency: if role == Role::Edge {
                topo.latency.client.0
            } else {
                Duration::ZERO
            },
            origin_latency: topo.latency.shield_to_origin.0,
            forwarded: AtomicU64::new(0),
            pipelined: AtomicU64::new(0),
            served_as_owner: AtomicU64::new(0),
            hot_replica: AtomicU64::new(0),
            log,
        })
    }

    /// Apply a changed topology without a restart: the PoP's boxes and the shield sets are
    /// rebuilt (members still there keep their health; new ones ramp up). This node's place
    /// (role, PoP or set, mid-tier) and the other `[topology]` settings need a restart.
    pub fn reload(&self, cfg: &Config) -> Result<(), String> {
        let topo = cfg
            .topology
            .as_ref()
            .ok_or("removing [topology] needs a restart")?;
        let (role, region, group, _) = topo
            .find(&cfg.node.name)
            .ok_or("this node is no longer in the topology; that needs a restart")?;
        let mid_tier = topo
            .pops
            .iter()
            .find(|p| p.name == group)
            .and_then(|p| p.mid_tier.clone());
        if role != self.role
            || region != self.region
            || group != self.group
            || (role == Role::Edge && mid_tier != self.mid_tier)
            || (role == Role::Shield && topo.is_mid_tier(group) != self.is_mid_tier)
        {
            return Err(format!(
                "moving {} to another role, region, PoP or mid-tier needs a restart",
                cfg.node.name
            ));
        }
        let old = self.peers.load_full();
        let peers = Peers::build(cfg, Some(&old)).ok_or("no peers in the new topology")?;
        self.peers.store(Arc::new(peers));
        Ok(())
    }

    /// The hop for a tenant's misses when the tenant names a shield set: from an edge, its
    /// PoP's mid-tier if it has one, else the shield set; from a mid-tier shield, the shield set;
    /// from a shield, none (the origin).
    /// `origin_timeout` is the tenant's: the hop waits that plus a margin per tier behind it.
    pub fn shield_hop(
        &self,
        shield: Option<&str>,
        origin_timeout: Duration,
    ) -> Option<Arc<dyn Upstream>> {
        let shield = shield?;
        let (target, tiers_behind) = match self.role {
            Role::Edge => match self.mid_tier.as_deref() {
                Some(mid) => (mid, 2),
                None => (shield, 1),
            },
            Role::Shield if self.is_mid_tier && shield != self.group => (shield, 1),
            Role::Shield => return None,
        };
        let peers = self.peers.load();
        let set = peers.shield_sets.get(target)?;
        Some(Arc::new(PeerHop {
            name: format!("shield:{}", set.name()),
            set: set.clone(),
            skip: None,
            fallback: None,
            first_byte: origin_timeout + TIER_MARGIN * tiers_behind,
            log: self.log.clone(),
        }))
    }

    /// Where a cacheable request for `key` is answered.
    pub fn route(&self, key: &CacheKey, client: &HeaderMap) -> Route {
        let peers = self.peers.load();
        let Some(pop) = &peers.pop else {
            return Route::Local;
        };
        // A box of this PoP sent it here: answer it, whoever the ring says owns it now.
        if from_peer(pop, client) {
            self.served_as_owner.fetch_add(1, Relaxed);
            return Route::Local;
        }
        let local = pop.local();
        let owner = pop.owner(key.hash64());
        if owner == local || owner.is_none() {
            return Route::Local;
        }
        if self.hot.hit(key.hash64()) {
            self.hot_replica.fetch_add(1, Relaxed);
            return Route::Replica(pop.clone());
        }
        Route::Forward(pop.clone())
    }

    /// Prometheus lines for the tier (appended to the node's metrics).
    pub fn render(&self, node: &str, out: &mut String) {
        let node = crate::metrics::label(node);
        let counters = [
            (
                "outpost_tier_forwarded_to_owner_total",
                "Requests forwarded to their owner box in the PoP.",
                self.forwarded.load(Relaxed),
            ),
            (
                "outpost_tier_forwarded_pipelined_total",
                "Forwarded requests the owner answered on the pipelined connection (cached, up to 256 KiB).",
                self.pipelined.load(Relaxed),
            ),
            (
                "outpost_tier_served_as_owner_total",
                "Requests a PoP peer forwarded to this box, answered here as the owner.",
                self.served_as_owner.load(Relaxed),
            ),
            (
                "outpost_tier_hot_replica_total",
                "Requests for keys hot on this box, answered from its own replica or filling it.",
                self.hot_replica.load(Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {v}");
        }
        let peers = self.peers.load();
        let sets: Vec<&Arc<PeerSet>> = peers.pop.iter().chain(peers.shield_sets.values()).collect();
        let _ = writeln!(
            out,
            "# HELP outpost_peer_up Whether a peer (PoP box or shield) is up for this node.\n# TYPE outpost_peer_up gauge"
        );
        for set in &sets {
            for (i, p) in set.peers().iter().enumerate() {
                let _ = writeln!(
                    out,
                    "outpost_peer_up{{node=\"{node}\",set=\"{}\",peer=\"{}\"}} {}",
                    crate::metrics::label(set.name()),
                    crate::metrics::label(&p.name),
                    u8::from(set.is_up(i))
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP outpost_peer_share Fraction of its keys a peer takes now (0 down, below 1 while ramping up).\n# TYPE outpost_peer_share gauge"
        );
        for set in &sets {
            for (i, p) in set.peers().iter().enumerate() {
                let share = match set.eligibility(i) {
                    outpost_upstream::ring::Eligibility::Up => 1.0,
                    outpost_upstream::ring::Eligibility::Ramping(f) => f,
                    outpost_upstream::ring::Eligibility::Down => 0.0,
                };
                let _ = writeln!(
                    out,
                    "outpost_peer_share{{node=\"{node}\",set=\"{}\",peer=\"{}\"}} {share:.3}",
                    crate::metrics::label(set.name()),
                    crate::metrics::label(&p.name),
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP outpost_peer_failovers_total Requests sent to the next member after one failed.\n# TYPE outpost_peer_failovers_total counter"
        );
        for set in &sets {
            let _ = writeln!(
                out,
                "outpost_peer_failovers_total{{node=\"{node}\",set=\"{}\"}} {}",
                crate::metrics::label(set.name()),
                set.failovers()
            );
        }
    }
}

/// A canonical host without its port (`name:8080` → `name`, `[::1]:8080` → `[::1]`).
pub fn without_port(mut host: String) -> String {
    if let Some((h, p)) = host.rsplit_once(':') {
        if !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (h.ends_with(']') || !h.contains(':'))
        {
            let n = h.len();
            host.truncate(n);
        }
    }
    host
}

/// Whether the request came from a box of this PoP (its `CDN-Loop` names one).
impl Tier {
    /// Whether the request was sent by a member of the topology (its `CDN-Loop` names one).
    pub fn from_member(&self, client: &HeaderMap) -> bool {
        let peers = self.peers.load();
        cdn_loop_members(client).any(|id| peers.members.iter().any(|m| m.eq_ignore_ascii_case(id)))
    }
}

/// The member names of a request's `CDN-Loop` fields.
fn cdn_loop_members(client: &HeaderMap) -> impl Iterator<Item = &str> {
    client
        .get_all("cdn-loop")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|m| m.split(';').next())
        .map(str::trim)
}

fn from_peer(pop: &PeerSet, client: &HeaderMap) -> bool {
    cdn_loop_members(client).any(|id| pop.peers().iter().any(|p| p.name.eq_ignore_ascii_case(id)))
}

/// Where a cacheable request is answered.
pub enum Route {
    /// Here, with the tenant's upstream.
    Local,
    /// Here (a hot key), filling from the owner box ([`replica_hop`]).
    Replica(Arc<PeerSet>),
    /// At the owner box: forward and relay.
    Forward(Arc<PeerSet>),
}

/// A hop to a peer set: the key's member first, then the next ones.
pub struct PeerHop {
    name: String,
    set: Arc<PeerSet>,
    skip: Option<usize>,
    /// Where a bodiless request goes when no member could be reached (or this node is next in
    /// the key's order): the tenant's own upstream.
    fallback: Option<Arc<dyn Upstream>>,
    /// Longest wait for a member's response head.
    first_byte: Duration,
    /// This node's control-log position, sent along (`Outpost-Log`).
    log: Arc<LogPosition>,
}

/// The hop a hot key's replica fills through: the key's owner box in `pop`, or `fallback` (the
/// tenant's upstream) when the owner cannot be reached, as this box then answers the key itself.
/// `first_byte` is how long the owner may take (its own upstream path included).
pub fn replica_hop(
    pop: Arc<PeerSet>,
    fallback: Arc<dyn Upstream>,
    first_byte: Duration,
    log: Arc<LogPosition>,
) -> Arc<dyn Upstream> {
    Arc::new(PeerHop {
        name: format!("owner:{}", pop.name()),
        skip: pop.local(),
        set: pop,
        fallback: Some(fallback),
        first_byte,
        log,
    })
}

impl Upstream for PeerHop {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, req: HopRequest<'a>) -> HopFuture<'a> {
        Box::pin(async move {
            let HopRequest {
                key,
                method,
                path_and_query,
                mut headers,
                body,
            } = req;
            self.log.stamp(&mut headers);
            let bodiless = body.is_none();
            let sent = self
                .set
                .send_within(
                    self.first_byte,
                    key,
                    method,
                    path_and_query,
                    &headers,
                    body,
                    self.skip,
                )
                .await;
            match (sent, &self.fallback) {
                (Ok((resp, _)), _) => Ok(resp),
                (Err(e), Some(fallback)) if bodiless && !e.kind.is_timeout() => {
                    tracing::debug!(error = %e.detail(), "owner unreachable; filling from the tenant's upstream");
                    fallback
                        .send(HopRequest {
                            key,
                            method,
                            path_and_query,
                            headers,
                            body: None,
                        })
                        .await
                }
                (Err(e), _) => Err(ProxyError::upstream(e)),
            }
        })
    }
}

/// Request rates per key on this box, to find hot keys: a fixed table of 4,096 slots indexed by
/// key hash, each counting the requests of the current second (collisions only overestimate).
/// A key is hot once its slot counted `threshold` requests in this second and the last.
pub struct HotKeys {
    threshold: u32,
    slots: Box<[AtomicU64]>,
    epoch: std::time::Instant,
}

const HOT_SLOTS: usize = 4096;

impl HotKeys {
    /// A tracker with `threshold` requests per second (0: nothing is ever hot).
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            slots: (0..HOT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: std::time::Instant::now(),
        }
    }

    /// Count one request for `key`; whether the key is hot (at or above the threshold over
    /// this second and the last).
    pub fn hit(&self, key: u64) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let sec = self.epoch.elapsed().as_secs() as u32;
        let slot = &self.slots[(outpost_upstream::ring::mix64(key) as usize) % HOT_SLOTS];
        // Slot: second (high 32 bits), count this second (low 24), count last second (next 8,
        // saturating at 255: enough to know it was over any threshold below that).
        let mut cur = slot.load(Relaxed);
        loop {
            let (s, count, last) = (
                (cur >> 32) as u32,
                cur as u32 & 0xff_ffff,
                (cur >> 24) as u32 & 0xff,
            );
            let (count, last) = if s == sec {
                (count + 1, last)
            } else if s + 1 == sec {
                (1, count.min(255))
            } else {
                (1, 0)
            };
            let next =
                (u64::from(sec) << 32) | (u64::from(last) << 24) | u64::from(count.min(0xff_ffff));
            match slot.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
                Ok(_) => return count + last >= self.threshold,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_keys_need_the_rate() {
        let h = HotKeys::new(5);
        for _ in 0..4 {
            assert!(!h.hit(42));
        }
        assert!(h.hit(42), "the fifth request within a second is hot");
        assert!(!h.hit(7), "another key is not");
        assert!(!HotKeys::new(0).hit(42));
    }

    #[test]
    fn ports_leave_the_key_host() {
        assert_eq!(without_port("a.example:8080".into()), "a.example");
        assert_eq!(without_port("a.example".into()), "a.example");
        assert_eq!(without_port("[::1]:81".into()), "[::1]");
        assert_eq!(without_port("[::1]".into()), "[::1]");
    }
}
