//! Outpost's configuration: the TOML schema (serde), parsing with field-path errors, and validation.
//!
//! One file configures a node: `[node]` (name, listeners, limits), `[store]` (RAM budget, policy) and
//! one `[[tenant]]` table per customer (hostnames, origins, cache defaults, cache-key rules, per-path
//! rules). Every error names the field path it is about, e.g. `tenant[0].origins[1]: ...`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A configuration problem, always naming the offending field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Dotted field path, e.g. `tenant[0].origins[1]`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error at `path` (a field path such as `tenant[0].origins`).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A byte size written as an integer or a string with a K/M/G/T suffix (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parse `"512M"`, `"10G"`, `"4096"`, `"1.5G"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty size".into());
        }
        let (num, mult) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let m: u64 = match c.to_ascii_uppercase() {
                    'B' => 1,
                    'K' => 1 << 10,
                    'M' => 1 << 20,
                    'G' => 1 << 30,
                    'T' => 1 << 40,
                    _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G or T)")),
                };
                (&t[..i], m)
            }
            _ => (t, 1),
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("invalid size {s:?} (examples: 4096, 512M, 10G)"))?;
        if !v.is_finite() || v < 0.0 {
            return Err(format!(
                "expected a size of 0 or more bytes (e.g. 4096, 512M), found {s:?}"
            ));
        }
        let bytes = v * mult as f64;
        if bytes > u64::MAX as f64 / 2.0 {
            return Err(format!("size {s:?} is too large"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size of 0 or more bytes: an integer, or a string like \"512M\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| {
                    E::custom(format!(
                        "expected a size of 0 or more bytes (e.g. 4096 or \"512M\"), found {v}"
                    ))
                })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!(
                    "expected a whole number of bytes or a string like \"1.5G\", found {v}"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as seconds (integer) or a string like `"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"2d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parse `"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"2d"` or a bare number of seconds.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        if t.starts_with('-') {
            return Err(format!(
                "expected a duration of 0 or more (e.g. 250ms, 10s), found {s:?}"
            ));
        }
        let (num, unit) = t.split_at(split);
        let v: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?} (examples: 250ms, 10s, 5m, 1h)"))?;
        let secs = match unit.trim() {
            "" | "s" => v,
            "ms" => v / 1000.0,
            "m" => v * 60.0,
            "h" => v * 3600.0,
            "d" => v * 86400.0,
            u => return Err(format!("unknown duration unit {u:?} in {s:?}")),
        };
        if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
            return Err(format!("invalid duration {s:?}"));
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}

/// Written back as whole milliseconds (`"1500ms"`), which [`Dur::parse`] reads.
impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration: seconds as an integer, or a string like \"250ms\" or \"5m\"",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|s| Dur(Duration::from_secs(s)))
                    .map_err(|_| {
                        E::custom(format!(
                            "expected a duration of 0 or more (e.g. 10 or \"250ms\"), found {v}"
                        ))
                    })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                if v.is_finite() && (0.0..=1e10).contains(&v) {
                    Ok(Dur(Duration::from_secs_f64(v)))
                } else {
                    Err(E::custom(format!(
                        "expected a duration of 0 or more seconds, found {v}"
                    )))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Node identity, listeners and limits.
    #[serde(default)]
    pub node: NodeConfig,
    /// Storage budget and policy.
    #[serde(default)]
    pub store: StoreConfig,
    /// Tenants served by this node.
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// The CDN this node belongs to (PoPs of edge boxes, shield sets); none: a standalone node.
    #[serde(default)]
    pub topology: Option<TopologyConfig>,
    /// The `dns` role (GeoDNS); read by `outpost dns`, ignored by cache nodes.
    #[serde(default)]
    pub dns: Option<DnsConfig>,
}

/// `[topology]`: every node of a CDN reads the same one and finds itself in it by `node.name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// How long a box or shield that joined or came back takes to reach its full share of keys.
    pub ramp_up: Dur,
    /// Requests per second for one key on one box above which that box also caches the key
    /// when it is not its owner (hot-key replication in the PoP); 0 disables.
    pub hot_key_rps: u32,
    /// Time between active health probes of peers (`GET /healthz` on their metrics listener).
    pub health_interval: Dur,
    /// Health probe timeout.
    pub health_timeout: Dur,
    /// Consecutive failures (probes or requests) that mark a peer down.
    pub health_fall: u32,
    /// Consecutive successful probes that bring a peer back.
    pub health_rise: u32,
    /// Protocol between nodes: `http2` (one multiplexed connection per peer, prior knowledge)
    /// or `http1` (a keep-alive pool).
    pub peer_protocol: String,
    /// A box forwarding a GET/HEAD to the key's owner asks first over a pipelined HTTP/1.1
    /// connection for a cached answer of up to 256 KiB (requests from many clients share one
    /// write and one read); a miss or a larger object then takes `peer_protocol`.
    pub forward_pipeline: bool,
    /// Simulated latency per link (zero in production).
    pub latency: LatencyConfig,
    /// Regions: where they are, for steering users to the nearest PoP (`outpost dns`).
    #[serde(rename = "region")]
    pub regions: Vec<RegionConfig>,
    /// PoPs of edge boxes.
    #[serde(rename = "pop")]
    pub pops: Vec<PopConfig>,
    /// Shield sets (named by tenants' `shield`).
    #[serde(rename = "shield_set")]
    pub shield_sets: Vec<ShieldSetConfig>,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            ramp_up: Dur(Duration::from_secs(30)),
            hot_key_rps: 50,
            health_interval: Dur(Duration::from_secs(1)),
            health_timeout: Dur(Duration::from_secs(1)),
            health_fall: 3,
            health_rise: 2,
            peer_protocol: "http2".into(),
            forward_pipeline: true,
            latency: LatencyConfig::default(),
            regions: Vec::new(),
            pops: Vec::new(),
            shield_sets: Vec::new(),
        }
    }
}

/// `[topology.latency]`: delays added on each link, so tier effects show in timings locally.
#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// Client → PoP (added before an edge answers).
    pub client: Dur,
    /// Edge → shield (added before each request to a shield set).
    pub pop_to_shield: Dur,
    /// Shield → origin (added before each origin request a shield makes).
    pub shield_to_origin: Dur,
}

/// `[[topology.pop]]`: the edge boxes of one PoP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopConfig {
    /// PoP name (metrics label).
    pub name: String,
    /// Region (metrics label; the shield set a tenant names may be in another region).
    pub region: String,
    /// A shield set acting as this PoP's regional mid-tier: the boxes send tenants' misses there
    /// instead of to the tenant's shield set, and the mid-tier sends its own misses on to it.
    #[serde(default)]
    pub mid_tier: Option<String>,
    /// The boxes.
    #[serde(rename = "box")]
    pub boxes: Vec<MemberConfig>,
    /// Addresses the GeoDNS answers for this PoP (its public service IPs, v4 and v6); empty:
    /// the IPs of its boxes' listeners.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Percent (0-100) of the clients that have this PoP as their nearest healthy one that the
    /// GeoDNS keeps here; the rest go to the next PoP in their ranking (capacity shedding).
    #[serde(default = "full_weight")]
    pub weight: u32,
    /// Maintenance: the GeoDNS sends nobody here (as `weight = 0`), health aside.
    #[serde(default)]
    pub drain: bool,
}

fn full_weight() -> u32 {
    100
}

/// `[[topology.region]]`: where a region is, so the GeoDNS can rank PoPs by distance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Region name, as in `[[topology.pop]].region`.
    pub name: String,
    /// Latitude in degrees (north positive).
    pub lat: f64,
    /// Longitude in degrees (east positive).
    pub lon: f64,
    /// ISO 3166-1 alpha-2 country codes always sent to this region first, whatever the distance
    /// (an explicit country → region table; unlisted countries go by distance).
    #[serde(default)]
    pub countries: Vec<String>,
}

/// `[dns]`: the CDN's authoritative GeoDNS (`outpost dns`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// UDP and TCP listener.
    pub listen: String,
    /// HTTP listener for `/metrics`, `/healthz` and `/explain`; empty: none.
    pub admin: String,
    /// The CDN's zone (tenants CNAME their hostnames to `<hostname>.<zone>`).
    pub zone: String,
    /// Name servers of the zone (NS records), each in the zone; empty: `ns1.<zone>`.
    pub nameservers: Vec<String>,
    /// Addresses of the name servers (their A/AAAA); empty: the listener's IP.
    pub nameserver_addresses: Vec<String>,
    /// TTL of steered answers.
    pub ttl: Dur,
    /// A GeoIP database in the MaxMind DB format with a country code per network; empty:
    /// every client is in `default_region`.
    pub geoip: String,
    /// Region of clients whose address the database does not place (private, loopback,
    /// unlisted); empty: the first `[[topology.region]]`.
    pub default_region: String,
    /// Time between health probes of every edge box (`GET /healthz` on its metrics listener,
    /// or a TCP connect to its listener).
    pub probe_interval: Dur,
    /// Probe timeout.
    pub probe_timeout: Dur,
    /// Consecutive failed probes (timeouts, error statuses) that mark a box down. A refused
    /// connection (nothing listening) marks it down at once.
    pub probe_fall: u32,
    /// Consecutive good probes that bring a box back.
    pub probe_rise: u32,
    /// The control plane's API (`http://host:port`): boxes whose heartbeat is older than
    /// `heartbeat_stale` count as failing (a passive signal beside the probes); empty: none.
    pub control_api: String,
    /// API key for `control_api` (or the `OUTPOST_DNS_API_KEY` environment variable).
    pub control_key: String,
    /// Age of a box's last heartbeat after which the control plane's view counts it failing.
    pub heartbeat_stale: Dur,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5353".into(),
            admin: String::new(),
            zone: "cdn.localhost".into(),
            nameservers: Vec::new(),
            nameserver_addresses: Vec::new(),
            ttl: Dur(Duration::from_secs(30)),
            geoip: String::new(),
            default_region: String::new(),
            probe_interval: Dur(Duration::from_secs(1)),
            probe_timeout: Dur(Duration::from_millis(500)),
            probe_fall: 2,
            probe_rise: 2,
            control_api: String::new(),
            control_key: String::new(),
            heartbeat_stale: Dur(Duration::from_secs(5)),
        }
    }
}

/// `[[topology.shield_set]]`: shields that share an origin's misses by key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShieldSetConfig {
    /// Set name (named by `tenant.shield`).
    pub name: String,
    /// Region, usually the one nearest the origin.
    pub region: String,
    /// The shields.
    #[serde(rename = "box")]
    pub boxes: Vec<MemberConfig>,
}

/// One node of the topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Node name: unique in the topology, the `node.name` of that node.
    pub name: String,
    /// Its HTTP listener (`host:port`).
    pub listen: String,
    /// Its metrics/admin listener (`/healthz` probes go there); empty: TCP probes of `listen`.
    #[serde(default)]
    pub metrics: String,
}

/// A node's place in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An edge box in a PoP.
    Edge,
    /// A shield in a shield set.
    Shield,
}

impl Role {
    /// Name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Shield => "shield",
        }
    }
}

impl TopologyConfig {
    /// Where `name` sits: role, region, PoP or set name, and its member entry.
    pub fn find(&self, name: &str) -> Option<(Role, &str, &str, &MemberConfig)> {
        for p in &self.pops {
            if let Some(m) = p.boxes.iter().find(|b| b.name == name) {
                return Some((Role::Edge, &p.region, &p.name, m));
            }
        }
        for s in &self.shield_sets {
            if let Some(m) = s.boxes.iter().find(|b| b.name == name) {
                return Some((Role::Shield, &s.region, &s.name, m));
            }
        }
        None
    }

    /// Whether the shield set `name` is some PoP's regional mid-tier.
    pub fn is_mid_tier(&self, name: &str) -> bool {
        self.pops
            .iter()
            .any(|p| p.mid_tier.as_deref() == Some(name))
    }

    /// Every node: (role, region, pop or set, member).
    pub fn members(&self) -> Vec<(Role, &str, &str, &MemberConfig)> {
        let mut v = Vec::new();
        for p in &self.pops {
            for b in &p.boxes {
                v.push((Role::Edge, p.region.as_str(), p.name.as_str(), b));
            }
        }
        for s in &self.shield_sets {
            for b in &s.boxes {
                v.push((Role::Shield, s.region.as_str(), s.name.as_str(), b));
            }
        }
        v
    }

    fn validate(&self, tenants: &[TenantConfig]) -> Result<(), ConfigError> {
        let mut names: Vec<&str> = Vec::new();
        let mut addrs: Vec<&str> = Vec::new();
        let groups = self
            .pops
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("topology.pop[{i}]"), &p.name, &p.region, &p.boxes))
            .chain(self.shield_sets.iter().enumerate().map(|(i, s)| {
                (
                    format!("topology.shield_set[{i}]"),
                    &s.name,
                    &s.region,
                    &s.boxes,
                )
            }));
        let mut group_names: Vec<&str> = Vec::new();
        for (gp, name, region, boxes) in groups {
            if !is_name(name) {
                return Err(ConfigError::new(format!("{gp}.name"), NAME_RULE));
            }
            if group_names.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    format!("{gp}.name"),
                    format!("duplicate name {name:?}"),
                ));
            }
            group_names.push(name);
            if !is_name(region) {
                return Err(ConfigError::new(format!("{gp}.region"), NAME_RULE));
            }
            if boxes.is_empty() {
                return Err(ConfigError::new(format!("{gp}.box"), "at least one box"));
            }
            for (j, b) in boxes.iter().enumerate() {
                let bp = format!("{gp}.box[{j}]");
                if !is_name(&b.name) {
                    return Err(ConfigError::new(format!("{bp}.name"), NAME_RULE));
                }
                if names.contains(&b.name.as_str()) {
                    return Err(ConfigError::new(
                        format!("{bp}.name"),
                        format!("duplicate node name {:?}", b.name),
                    ));
                }
                names.push(&b.name);
                check_addr(&format!("{bp}.listen"), &b.listen)?;
                if !b.metrics.is_empty() {
                    check_addr(&format!("{bp}.metrics"), &b.metrics)?;
                }
                for (field, a) in [("listen", &b.listen), ("metrics", &b.metrics)] {
                    if a.is_empty() {
                        continue;
                    }
                    if addrs.contains(&a.as_str()) {
                        return Err(ConfigError::new(
                            format!("{bp}.{field}"),
                            format!("address {a} is used twice"),
                        ));
                    }
                    addrs.push(a);
                }
            }
        }
        if !["http1", "http2"].contains(&self.peer_protocol.as_str()) {
            return Err(ConfigError::new(
                "topology.peer_protocol",
                format!("unknown protocol {:?} (http1, http2)", self.peer_protocol),
            ));
        }
        for (path, d) in [
            ("topology.health_interval", self.health_interval),
            ("topology.health_timeout", self.health_timeout),
        ] {
            nonzero(path, d)?;
        }
        if self.health_fall == 0 || self.health_rise == 0 {
            return Err(ConfigError::new(
                if self.health_fall == 0 {
                    "topology.health_fall"
                } else {
                    "topology.health_rise"
                },
                "must be at least 1",
            ));
        }
        let mut region_names: Vec<&str> = Vec::new();
        for (i, r) in self.regions.iter().enumerate() {
            let rp = format!("topology.region[{i}]");
            if !is_name(&r.name) {
                return Err(ConfigError::new(format!("{rp}.name"), NAME_RULE));
            }
            if region_names.contains(&r.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{rp}.name"),
                    format!("duplicate region {:?}", r.name),
                ));
            }
            region_names.push(&r.name);
            if !(-90.0..=90.0).contains(&r.lat) {
                return Err(ConfigError::new(format!("{rp}.lat"), "must be in -90..=90"));
            }
            if !(-180.0..=180.0).contains(&r.lon) {
                return Err(ConfigError::new(
                    format!("{rp}.lon"),
                    "must be in -180..=180",
                ));
            }
            for (j, c) in r.countries.iter().enumerate() {
                if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
                    return Err(ConfigError::new(
                        format!("{rp}.countries[{j}]"),
                        format!("{c:?} is not an ISO 3166-1 alpha-2 code (two capital letters)"),
                    ));
                }
            }
        }
        for (i, p) in self.pops.iter().enumerate() {
            let pp = format!("topology.pop[{i}]");
            if !region_names.is_empty() && !region_names.contains(&p.region.as_str()) {
                return Err(ConfigError::new(
                    format!("{pp}.region"),
                    format!("no [[topology.region]] is called {:?}", p.region),
                ));
            }
            for (j, a) in p.addresses.iter().enumerate() {
                if a.parse::<std::net::IpAddr>().is_err() {
                    return Err(ConfigError::new(
                        format!("{pp}.addresses[{j}]"),
                        format!("{a:?} is not an IP address"),
                    ));
                }
            }
            if p.weight > 100 {
                return Err(ConfigError::new(
                    format!("{pp}.weight"),
                    "is a percentage: 0 to 100",
                ));
            }
        }
        for (i, p) in self.pops.iter().enumerate() {
            if let Some(m) = &p.mid_tier {
                if !self.shield_sets.iter().any(|set| &set.name == m) {
                    return Err(ConfigError::new(
                        format!("topology.pop[{i}].mid_tier"),
                        format!("no [[topology.shield_set]] is called {m:?}"),
                    ));
                }
            }
        }
        for (i, t) in tenants.iter().enumerate() {
            if let Some(s) = &t.shield {
                if self.is_mid_tier(s) {
                    return Err(ConfigError::new(
                        format!("tenant[{i}].shield"),
                        format!("{s:?} is a PoP's mid_tier, not an origin's shield set"),
                    ));
                }
                if !self.shield_sets.iter().any(|set| &set.name == s) {
                    return Err(ConfigError::new(
                        format!("tenant[{i}].shield"),
                        format!("no [[topology.shield_set]] is called {s:?}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A DNS name in presentation form without the final dot: labels of 1-63 letters, digits,
/// '-' or '_', at most 253 characters.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

const NAME_RULE: &str = "must be non-empty and use only letters, digits, '-', '_' and '.'";

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `[node]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Name shown in `Cache-Status` (e.g. `edge1`).
    pub name: String,
    /// HTTP listen address.
    pub listen: String,
    /// Prometheus metrics listen address (empty disables).
    pub metrics: String,
    /// Write one JSON line per request to stdout.
    pub access_log: bool,
    /// Time a client has to send complete request headers (slowloris defence).
    pub header_read_timeout: Dur,
    /// Largest request header block accepted; bigger → 431.
    pub max_header_bytes: ByteSize,
    /// Idle keep-alive connection timeout.
    pub idle_timeout: Dur,
    /// Dedicated serving threads, each with its own single-threaded event loop, so a connection
    /// lives on one core from accept to close; 0 (default) serves on the shared work-stealing
    /// runtime, whose p99 tail is narrower when cores are shared with other load.
    pub workers: usize,
    /// On SIGTERM, how long to finish responses and fills in flight before exiting (a second
    /// signal exits at once).
    pub drain_timeout: Dur,
    /// Bearer token that admits admin requests (`POST /purge` on the `metrics` listener) from
    /// non-loopback clients; without one only loopback clients may use them.
    pub admin_token: Option<String>,
    /// Requests in flight to one origin from this node, shared fairly between the tenants that
    /// use it (half guaranteed in equal parts, half first come first served).
    pub origin_concurrency: usize,
    /// HTTPS listen address (TLS 1.3 and 1.2, ALPN `h2` and `http/1.1`); empty: none.
    pub tls_listen: String,
    /// Certificate chain (PEM) served when the client's SNI matches no tenant certificate (or
    /// it sends none); empty: such handshakes fail with an alert.
    pub tls_default_cert: String,
    /// Private key (PEM) of `tls_default_cert`.
    pub tls_default_key: String,
    /// TLS 1.3 0-RTT (RFC 8446 §2.3): how much early data a resuming client may send before
    /// the handshake completes; 0 (the default) turns it off. Requests that arrive in early
    /// data may only be GET or HEAD (others get 425 Too Early, RFC 8470) and are forwarded
    /// with `Early-Data: 1`. Turning it on replaces session tickets by single-use stateful
    /// resumption, so one node never accepts the same early data twice.
    pub tls_early_data: ByteSize,
    /// ACME (RFC 8555): certificates for tenants with `tls.acme = true`.
    pub acme: Option<AcmeConfig>,
}

/// `[node.acme]`: where certificates come from for tenants with `tls.acme = true`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The ACME server's directory URL (e.g. Let's Encrypt's, or a local pebble).
    pub directory: String,
    /// Contact URIs for the account (`mailto:ops@example.com`).
    pub contact: Vec<String>,
    /// CA bundle (PEM) the ACME server's own HTTPS certificate must chain to; empty: the
    /// system's trust store.
    pub ca_file: String,
    /// Directory for the account credentials (mode 0600).
    pub state_dir: String,
    /// Fraction of a certificate's lifetime after which it is renewed.
    pub renew_at: f64,
    /// First retry delay after a failed order (doubling up to `max_backoff`).
    pub min_backoff: Dur,
    /// Longest delay between retries.
    pub max_backoff: Dur,
    /// How the CA validates a name: `"http-01"` (a token on the HTTP listener, port 80 in
    /// production) or `"tls-alpn-01"` (RFC 8737: a self-signed certificate on the HTTPS
    /// listener, port 443, for connections that offer ALPN `acme-tls/1`).
    pub challenge: AcmeChallenge,
}

/// `[node.acme] challenge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum AcmeChallenge {
    /// HTTP-01 (RFC 8555 §8.3).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// TLS-ALPN-01 (RFC 8737).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory: String::new(),
            contact: Vec::new(),
            ca_file: String::new(),
            state_dir: String::new(),
            renew_at: 2.0 / 3.0,
            min_backoff: Dur(Duration::from_secs(5)),
            max_backoff: Dur(Duration::from_secs(3600)),
            challenge: AcmeChallenge::Http01,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "outpost".into(),
            listen: "127.0.0.1:8080".into(),
            metrics: "127.0.0.1:9100".into(),
            access_log: false,
            header_read_timeout: Dur(Duration::from_secs(10)),
            max_header_bytes: ByteSize(32 * 1024),
            idle_timeout: Dur(Duration::from_secs(60)),
            workers: 0,
            drain_timeout: Dur(Duration::from_secs(30)),
            admin_token: None,
            origin_concurrency: 512,
            tls_listen: String::new(),
            tls_default_cert: String::new(),
            tls_default_key: String::new(),
            tls_early_data: ByteSize(0),
            acme: None,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// RAM tier budget.
    pub ram_bytes: ByteSize,
    /// Admission/eviction policy: `s3-tinylfu` (default), `w-tinylfu`, `s3-fifo`, `size-aware`
    /// (object hit ratio first, for operators who pay per origin request), `lru`.
    pub policy: String,
    /// Directory of the SSD tier's segment files; empty = RAM only.
    pub dir: String,
    /// SSD tier budget (used when `dir` is set).
    pub disk_bytes: ByteSize,
    /// Size of one SSD segment file (at most a quarter of `disk_bytes` is used, so eviction
    /// always has whole segments to reclaim).
    pub segment_bytes: ByteSize,
    /// Threads that read SSD records the page cache does not hold (`ssd-read-N`), 1..=64.
    pub read_threads: usize,
    /// Serve SSD reads the page cache holds on the worker thread (`preadv2` with `RWF_NOWAIT`)
    /// instead of handing them to a read thread; off by itself where unsupported.
    pub fast_reads: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            ram_bytes: ByteSize(512 << 20),
            policy: "s3-tinylfu".into(),
            dir: String::new(),
            disk_bytes: ByteSize(10 << 30),
            segment_bytes: ByteSize(256 << 20),
            read_threads: 4,
            fast_reads: true,
        }
    }
}

/// `[[tenant]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant name (cache namespace and metrics label).
    pub name: String,
    /// Hostnames answered for this tenant (lower-case, no port). `*` matches any host.
    pub hostnames: Vec<String>,
    /// Origin base URLs (`http://host:port`), tried in order on connection failure.
    pub origins: Vec<String>,
    /// Cache defaults.
    #[serde(default)]
    pub cache: CacheDefaults,
    /// Cache-key rules.
    #[serde(default)]
    pub cache_key: CacheKeyConfig,
    /// Per-path rules (first matching prefix wins).
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// The shield set (a `[[topology.shield_set]]` name) every edge sends this tenant's misses
    /// to; none: edges go to the origins directly.
    #[serde(default)]
    pub shield: Option<String>,
    /// How the origins are chosen and health-checked.
    #[serde(default)]
    pub origin_pool: OriginPoolConfig,
    /// HTTPS for this tenant's hostnames (certificate chosen by SNI, redirect, HSTS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TenantTlsConfig>,
}

/// `[tenant.tls]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantTlsConfig {
    /// Certificate chain (PEM) for the tenant's hostnames (a `*.example.com` certificate covers
    /// one label); reloaded when the file changes.
    pub cert: String,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Answer plain-HTTP requests with a 308 to the same URL over HTTPS.
    pub redirect_http: bool,
    /// `Strict-Transport-Security: max-age=...` on HTTPS responses; 0: not sent.
    pub hsts_max_age: Dur,
    /// Add `includeSubDomains` to the HSTS header.
    pub hsts_include_subdomains: bool,
    /// Obtain and renew the certificate by ACME (`[node.acme]`), HTTP-01 answered by the edge;
    /// `cert` and `key` are where it is written (and served from).
    pub acme: bool,
    /// The chain itself (PEM), as uploaded through the control plane's API; used instead of
    /// the `cert` file when set.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cert_pem: String,
    /// The key itself (PEM), with `cert_pem`. Never shown by the API.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_pem: String,
}

/// `[tenant.origin_pool]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginPoolConfig {
    /// One weight per origin: keys are spread over healthy origins by weighted consistent
    /// hashing. Empty: the first healthy origin takes everything (primary, then the next).
    pub weights: Vec<f64>,
    /// Path probed with GET on every origin (2xx/3xx = healthy); empty: passive checks only
    /// (an origin that refused a connection is skipped for 3 s).
    pub health_path: String,
    /// Time between probes.
    pub health_interval: Dur,
    /// Probe timeout.
    pub health_timeout: Dur,
    /// Consecutive failures (probes or connection failures) that mark an origin down.
    pub health_fall: u32,
    /// Consecutive successful probes that bring it back.
    pub health_rise: u32,
    /// CA bundle (PEM) that `https://` origins' certificates must chain to; empty: the
    /// system's trust store.
    pub ca_file: String,
}

impl Default for OriginPoolConfig {
    fn default() -> Self {
        Self {
            weights: Vec::new(),
            health_path: String::new(),
            health_interval: Dur(Duration::from_secs(2)),
            health_timeout: Dur(Duration::from_secs(1)),
            health_fall: 2,
            health_rise: 2,
            ca_file: String::new(),
        }
    }
}

/// `[tenant.cache]`: defaults applied where the origin says nothing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheDefaults {
    /// TTL for 404/410/… when the origin gives no freshness (negative caching). 0 disables.
    pub negative_ttl: Dur,
    /// Serve stale this long when the origin fails, even without `stale-if-error` (tenant grace).
    pub grace: Dur,
    /// ± percentage applied to computed TTLs so expiries do not align. 0 disables.
    pub ttl_jitter_percent: u8,
    /// Most variants kept per URL for Vary responses.
    pub max_variants: usize,
    /// Upper bound on heuristic freshness (10% of Last-Modified age).
    pub heuristic_cap: Dur,
    /// Origin connect timeout.
    pub connect_timeout: Dur,
    /// Time allowed for the origin to start answering.
    pub origin_timeout: Dur,
    /// Largest object stored; bigger ones are streamed through uncached.
    pub max_object_bytes: ByteSize,
    /// Responses with `Set-Cookie`: `explicit` (the default: stored only with `public`,
    /// `s-maxage` or a targeted field such as CDN-Cache-Control, and the stored copy never
    /// carries the cookie), `store` (RFC 9111: stored and replayed like any field) or `never`.
    pub set_cookie: SetCookieMode,
}

/// How responses carrying `Set-Cookie` are treated.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SetCookieMode {
    /// Stored when otherwise storable, cookie included (RFC 9111).
    Store,
    /// Stored only when explicitly shared-cacheable, without the cookie (default).
    #[default]
    Explicit,
    /// Never stored.
    Never,
}

impl Default for CacheDefaults {
    fn default() -> Self {
        Self {
            negative_ttl: Dur(Duration::from_secs(10)),
            grace: Dur(Duration::ZERO),
            ttl_jitter_percent: 0,
            max_variants: 16,
            heuristic_cap: Dur(Duration::from_secs(86400)),
            connect_timeout: Dur(Duration::from_secs(3)),
            origin_timeout: Dur(Duration::from_secs(30)),
            max_object_bytes: ByteSize(64 << 20),
            set_cookie: SetCookieMode::Explicit,
        }
    }
}

/// `[tenant.cache_key]`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CacheKeyConfig {
    /// If non-empty, only these query parameters are kept in the key (and forwarded).
    pub query_allow: Vec<String>,
    /// Extra query parameters to drop (names; a trailing `*` matches a prefix).
    pub query_deny: Vec<String>,
    /// Keep the default tracking parameters (utm_*, fbclid, gclid, …) instead of dropping them.
    pub keep_tracking_params: bool,
}

/// `[[tenant.rule]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Path prefix this rule applies to (e.g. `/api/`).
    pub path_prefix: String,
    /// Never cache, always forward.
    #[serde(default)]
    pub bypass: bool,
    /// Override the origin's TTL for cacheable responses.
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// Cookie policy: `ignore` (default; Cookie is not forwarded, not keyed), `bypass` (requests
    /// carrying one of `bypass_cookies` bypass the cache), `bucket` (key on `bucket_cookie`'s value
    /// among `bucket_values`, anything else maps to `other`).
    #[serde(default)]
    pub cookie: CookiePolicyKind,
    /// Cookies whose presence makes the request bypass the cache (`cookie = "bypass"`).
    #[serde(default)]
    pub bypass_cookies: Vec<String>,
    /// Cookie whose value selects a bucket (`cookie = "bucket"`).
    #[serde(default)]
    pub bucket_cookie: Option<String>,
    /// Allowed bucket values.
    #[serde(default)]
    pub bucket_values: Vec<String>,
}

/// Cookie handling per rule.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CookiePolicyKind {
    /// Strip Cookie before forwarding; not part of the key.
    #[default]
    Ignore,
    /// Bypass the cache when a named cookie is present (forward it).
    Bypass,
    /// Key on a cookie's bucket.
    Bucket,
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} on {} with {} tenant(s)",
            self.node.name,
            self.node.listen,
            self.tenants.len()
        )
    }
}

impl Config {
    /// Parse and validate a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg = Self::parse_toml(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse a TOML document without the semantic checks (a topology file read by
    /// `outpost up --topology`, whose `node.name` is chosen per member: see [`Config::for_member`]).
    pub fn parse_toml(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.message().to_string();
            let at = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigError::new(
                if path.is_empty() || path == "." {
                    "config".to_string()
                } else {
                    path
                },
                format!("{msg}{at}"),
            )
        })?;
        Ok(cfg)
    }

    /// Read, parse and validate a file.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml(&text)
    }

    /// Semantic checks serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.name.is_empty()
            || !self
                .node
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::new(
                "node.name",
                "must be non-empty and use only letters, digits, '-', '_' and '.'",
            ));
        }
        check_addr("node.listen", &self.node.listen)?;
        if !self.node.metrics.is_empty() {
            check_addr("node.metrics", &self.node.metrics)?;
        }
        if !self.node.tls_listen.is_empty() {
            check_addr("node.tls_listen", &self.node.tls_listen)?;
        }
        if let Some(a) = &self.node.acme {
            if !a.directory.starts_with("https://") && !a.directory.starts_with("http://") {
                return Err(ConfigError::new(
                    "node.acme.directory",
                    format!("{:?} is not an http(s) URL", a.directory),
                ));
            }
            if a.state_dir.is_empty() {
                return Err(ConfigError::new(
                    "node.acme.state_dir",
                    "a directory for the account credentials is required",
                ));
            }
            if !(a.renew_at > 0.0 && a.renew_at < 1.0) {
                return Err(ConfigError::new(
                    "node.acme.renew_at",
                    "a fraction of the lifetime, between 0 and 1 (e.g. 0.6667)",
                ));
            }
            if a.challenge == AcmeChallenge::TlsAlpn01 && self.node.tls_listen.is_empty() {
                return Err(ConfigError::new(
                    "node.acme.challenge",
                    "tls-alpn-01 is answered on the HTTPS listener: set node.tls_listen",
                ));
            }
            nonzero("node.acme.min_backoff", a.min_backoff)?;
            nonzero("node.acme.max_backoff", a.max_backoff)?;
        }
        if self.node.tls_early_data.0 > 1 << 20 {
            return Err(ConfigError::new(
                "node.tls_early_data",
                "at most 1M of early data (16K is usual); 0 turns 0-RTT off",
            ));
        }
        if self.node.tls_default_cert.is_empty() != self.node.tls_default_key.is_empty() {
            return Err(ConfigError::new(
                if self.node.tls_default_cert.is_empty() {
                    "node.tls_default_cert"
                } else {
                    "node.tls_default_key"
                },
                "tls_default_cert and tls_default_key go together",
            ));
        }
        for (path, d) in [
            ("node.header_read_timeout", self.node.header_read_timeout),
            ("node.idle_timeout", self.node.idle_timeout),
            ("node.drain_timeout", self.node.drain_timeout),
        ] {
            nonzero(path, d)?;
        }
        if self.node.max_header_bytes.0 < 1024 {
            return Err(ConfigError::new(
                "node.max_header_bytes",
                "must be at least 1K",
            ));
        }
        if self.node.origin_concurrency < 2 {
            return Err(ConfigError::new(
                "node.origin_concurrency",
                format!("must be at least 2, got {}", self.node.origin_concurrency),
            ));
        }
        if self.node.workers > 1024 {
            return Err(ConfigError::new(
                "node.workers",
                "must be at most 1024 (0 = the shared runtime)",
            ));
        }
        if self.store.ram_bytes.0 < (1 << 20) {
            return Err(ConfigError::new("store.ram_bytes", "must be at least 1M"));
        }
        if !self.store.dir.is_empty() {
            if self.store.segment_bytes.0 < (1 << 20) {
                return Err(ConfigError::new(
                    "store.segment_bytes",
                    "must be at least 1M",
                ));
            }
            if self.store.disk_bytes.0 < (4 << 20) {
                return Err(ConfigError::new("store.disk_bytes", "must be at least 4M"));
            }
            if !(1..=64).contains(&self.store.read_threads) {
                return Err(ConfigError::new(
                    "store.read_threads",
                    format!("must be 1 to 64, got {}", self.store.read_threads),
                ));
            }
        }
        if !["s3-tinylfu", "w-tinylfu", "s3-fifo", "size-aware", "lru"]
            .contains(&self.store.policy.as_str())
        {
            return Err(ConfigError::new(
                "store.policy",
                format!(
                    "unknown policy {:?} (s3-tinylfu, w-tinylfu, s3-fifo, size-aware, lru)",
                    self.store.policy
                ),
            ));
        }
        if self.tenants.is_empty() {
            return Err(ConfigError::new(
                "tenant",
                "at least one [[tenant]] is required",
            ));
        }
        let mut seen_hosts: Vec<(&str, usize)> = Vec::new();
        let mut seen_names: Vec<&str> = Vec::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let ca = &t.origin_pool.ca_file;
            if !ca.is_empty() && !std::path::Path::new(ca).is_file() {
                return Err(ConfigError::new(
                    format!("tenant[{i}].origin_pool.ca_file"),
                    format!("{ca:?} is not a readable file"),
                ));
            }
            if let Some(tls) = &t.tls {
                if tls.acme && self.node.acme.is_none() {
                    return Err(ConfigError::new(
                        format!("tenant[{i}].tls.acme"),
                        "needs a [node.acme] section (the ACME server to ask)",
                    ));
                }
                let inline = !tls.cert_pem.is_empty() || !tls.key_pem.is_empty();
                if inline && (tls.cert_pem.is_empty() || tls.key_pem.is_empty()) {
                    return Err(ConfigError::new(
                        format!(
                            "tenant[{i}].tls.{}",
                            if tls.cert_pem.is_empty() {
                                "cert_pem"
                            } else {
                                "key_pem"
                            }
                        ),
                        "cert_pem and key_pem go together",
                    ));
                }
                if !inline && (tls.cert.is_empty() || tls.key.is_empty()) {
                    return Err(ConfigError::new(
                        format!(
                            "tenant[{i}].tls.{}",
                            if tls.cert.is_empty() { "cert" } else { "key" }
                        ),
                        "a PEM file path is required (or cert_pem and key_pem)",
                    ));
                }
            }
            let p = format!("tenant[{i}]");
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(ConfigError::new(
                    format!("{p}.name"),
                    "must be non-empty letters, digits, '-' or '_'",
                ));
            }
            if seen_names.contains(&t.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{p}.name"),
                    format!("duplicate tenant name {:?}", t.name),
                ));
            }
            seen_names.push(&t.name);
            if t.hostnames.is_empty() {
                return Err(ConfigError::new(
                    format!("{p}.hostnames"),
                    "at least one hostname",
                ));
            }
            for (j, h) in t.hostnames.iter().enumerate() {
                let hp = format!("{p}.hostnames[{j}]");
                let valid = h == "*"
                    || (!h.is_empty()
                        && h.len() <= 253
                        && h.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
                if !valid {
                    return Err(ConfigError::new(hp, format!("invalid hostname {h:?}")));
                }
                let lower = h.as_str();
                if let Some((_, other)) = seen_hosts
                    .iter()
                    .find(|(x, _)| x.eq_ignore_ascii_case(lower))
                {
                    return Err(ConfigError::new(
                        hp,
                        format!("hostname {h:?} already belongs to tenant[{other}]"),
                    ));
                }
                seen_hosts.push((lower, i));
            }
            if t.origins.is_empty() {
                return Err(ConfigError::new(
                    format!("{p}.origins"),
                    "at least one origin URL",
                ));
            }
            for (j, o) in t.origins.iter().enumerate() {
                parse_origin(o).map_err(|m| ConfigError::new(format!("{p}.origins[{j}]"), m))?;
            }
            let op = &t.origin_pool;
            if !op.weights.is_empty() {
                if op.weights.len() != t.origins.len() {
                    return Err(ConfigError::new(
                        format!("{p}.origin_pool.weights"),
                        format!(
                            "one weight per origin: {} weights for {} origins",
                            op.weights.len(),
                            t.origins.len()
                        ),
                    ));
                }
                if let Some(j) = op.weights.iter().position(|w| !(w.is_finite() && *w > 0.0)) {
                    return Err(ConfigError::new(
                        format!("{p}.origin_pool.weights[{j}]"),
                        "must be a positive number",
                    ));
                }
            }
            if !op.health_path.is_empty() && !op.health_path.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{p}.origin_pool.health_path"),
                    "must start with '/'",
                ));
            }
            nonzero(
                &format!("{p}.origin_pool.health_interval"),
                op.health_interval,
            )?;
            nonzero(
                &format!("{p}.origin_pool.health_timeout"),
                op.health_timeout,
            )?;
            if op.health_fall == 0 || op.health_rise == 0 {
                return Err(ConfigError::new(
                    format!("{p}.origin_pool.health_fall"),
                    "health_fall and health_rise must be at least 1",
                ));
            }
            nonzero(
                &format!("{p}.cache.connect_timeout"),
                t.cache.connect_timeout,
            )?;
            nonzero(&format!("{p}.cache.origin_timeout"), t.cache.origin_timeout)?;
            if t.cache.ttl_jitter_percent > 50 {
                return Err(ConfigError::new(
                    format!("{p}.cache.ttl_jitter_percent"),
                    "must be between 0 and 50",
                ));
            }
            if t.cache.max_variants == 0 {
                return Err(ConfigError::new(
                    format!("{p}.cache.max_variants"),
                    "must be at least 1",
                ));
            }
            for (j, r) in t.rules.iter().enumerate() {
                let rp = format!("{p}.rule[{j}]");
                if !r.path_prefix.starts_with('/') {
                    return Err(ConfigError::new(
                        format!("{rp}.path_prefix"),
                        "must start with '/'",
                    ));
                }
                if r.cookie == CookiePolicyKind::Bucket
                    && (r.bucket_cookie.is_none() || r.bucket_values.is_empty())
                {
                    return Err(ConfigError::new(
                        format!("{rp}.bucket_cookie"),
                        "cookie = \"bucket\" needs bucket_cookie and bucket_values",
                    ));
                }
                if r.cookie == CookiePolicyKind::Bypass && r.bypass_cookies.is_empty() {
                    return Err(ConfigError::new(
                        format!("{rp}.bypass_cookies"),
                        "cookie = \"bypass\" needs at least one cookie name",
                    ));
                }
            }
        }
        match &self.topology {
            Some(topo) => {
                topo.validate(&self.tenants)?;
                if topo.find(&self.node.name).is_none() {
                    return Err(ConfigError::new(
                        "node.name",
                        format!(
                            "{:?} is not a box of any [[topology.pop]] or [[topology.shield_set]]",
                            self.node.name
                        ),
                    ));
                }
            }
            None => {
                if let Some(i) = self.tenants.iter().position(|t| t.shield.is_some()) {
                    return Err(ConfigError::new(
                        format!("tenant[{i}].shield"),
                        "needs a [topology] with that shield set",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check what `outpost dns` needs: a topology whose PoPs' regions all have coordinates, and
    /// a valid `[dns]` section (defaults when absent).
    pub fn validate_dns(&self) -> Result<DnsConfig, ConfigError> {
        let topo = self
            .topology
            .as_ref()
            .ok_or_else(|| ConfigError::new("topology", "the dns role needs a [topology]"))?;
        topo.validate(&self.tenants)?;
        if topo.pops.is_empty() {
            return Err(ConfigError::new(
                "topology.pop",
                "the dns role needs at least one PoP",
            ));
        }
        for (i, p) in topo.pops.iter().enumerate() {
            if !topo.regions.iter().any(|r| r.name == p.region) {
                return Err(ConfigError::new(
                    format!("topology.pop[{i}].region"),
                    format!(
                        "region {:?} has no [[topology.region]] with coordinates (the dns role ranks PoPs by them)",
                        p.region
                    ),
                ));
            }
        }
        let dns = self.dns.clone().unwrap_or_default();
        check_addr("dns.listen", &dns.listen)?;
        if !dns.admin.is_empty() {
            check_addr("dns.admin", &dns.admin)?;
        }
        let zone = dns.zone.trim_end_matches('.').to_ascii_lowercase();
        if !is_dns_name(&zone) {
            return Err(ConfigError::new(
                "dns.zone",
                format!("{:?} is not a DNS name", dns.zone),
            ));
        }
        for (i, n) in dns.nameservers.iter().enumerate() {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            if !is_dns_name(&n) || !(n.ends_with(&format!(".{zone}"))) {
                return Err(ConfigError::new(
                    format!("dns.nameservers[{i}]"),
                    format!("{n:?} must be a DNS name inside the zone {zone:?}"),
                ));
            }
        }
        for (i, a) in dns.nameserver_addresses.iter().enumerate() {
            if a.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::new(
                    format!("dns.nameserver_addresses[{i}]"),
                    format!("{a:?} is not an IP address"),
                ));
            }
        }
        nonzero("dns.ttl", dns.ttl)?;
        if dns.ttl.0 > Duration::from_secs(86_400) {
            return Err(ConfigError::new("dns.ttl", "at most one day"));
        }
        nonzero("dns.probe_interval", dns.probe_interval)?;
        nonzero("dns.probe_timeout", dns.probe_timeout)?;
        nonzero("dns.heartbeat_stale", dns.heartbeat_stale)?;
        if dns.probe_fall == 0 {
            return Err(ConfigError::new("dns.probe_fall", "must be at least 1"));
        }
        if dns.probe_rise == 0 {
            return Err(ConfigError::new("dns.probe_rise", "must be at least 1"));
        }
        if !dns.default_region.is_empty()
            && !topo.regions.iter().any(|r| r.name == dns.default_region)
        {
            return Err(ConfigError::new(
                "dns.default_region",
                format!("no [[topology.region]] is called {:?}", dns.default_region),
            ));
        }
        if !dns.control_api.is_empty() && !dns.control_api.starts_with("http://") {
            return Err(ConfigError::new(
                "dns.control_api",
                format!("{:?} must be an http:// URL", dns.control_api),
            ));
        }
        for (i, t) in self.tenants.iter().enumerate() {
            for (j, h) in t.hostnames.iter().enumerate() {
                if h != "*" && h.parse::<std::net::IpAddr>().is_err() && !is_dns_name(h) {
                    return Err(ConfigError::new(
                        format!("tenant[{i}].hostnames[{j}]"),
                        format!("{h:?} is not a DNS name"),
                    ));
                }
            }
        }
        Ok(dns)
    }

    /// The config of the topology member `name`: `node.name`, `listen` and `metrics` from its
    /// entry; everything else (tenants, store, limits) as in this config.
    pub fn for_member(&self, name: &str) -> Result<Config, ConfigError> {
        let topo = self
            .topology
            .as_ref()
            .ok_or_else(|| ConfigError::new("topology", "the config has no [topology]"))?;
        let (_, _, _, m) = topo.find(name).ok_or_else(|| {
            ConfigError::new("node.name", format!("{name:?} is not in the topology"))
        })?;
        let mut cfg = self.clone();
        cfg.node.name = m.name.clone();
        cfg.node.listen = m.listen.clone();
        cfg.node.metrics = m.metrics.clone();
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config `outpost node --listen ADDR --origin URL` builds: one tenant answering every Host.
    pub fn single_origin(listen: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg = Config {
            node: NodeConfig {
                listen: listen.to_string(),
                ..NodeConfig::default()
            },
            store: StoreConfig::default(),
            tenants: vec![TenantConfig {
                name: "default".into(),
                hostnames: vec!["*".into()],
                origins: vec![origin.to_string()],
                cache: CacheDefaults::default(),
                cache_key: CacheKeyConfig::default(),
                rules: Vec::new(),
                shield: None,
                origin_pool: OriginPoolConfig::default(),
                tls: None,
            }],
            topology: None,
            dns: None,
        };
        cfg.validate().map_err(|e| {
            if e.path == "tenant[0].origins[0]" {
                ConfigError::new("--origin", e.message)
            } else if e.path == "node.listen" {
                ConfigError::new("--listen", e.message)
            } else {
                e
            }
        })?;
        Ok(cfg)
    }
}

/// A parsed origin base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginUrl {
    /// `host:port` to connect to.
    pub authority: String,
    /// Host name (no port) for the Host header when the tenant rewrites it.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `https://`: reached over TLS, its certificate verified.
    pub tls: bool,
}

impl OriginUrl {
    /// The origin as an origin pool takes it: `host:port`, or `https://host:port` for TLS.
    pub fn pool_address(&self) -> String {
        if self.tls {
            format!("https://{}", self.authority)
        } else {
            self.authority.clone()
        }
    }
}

/// Parse `http://host[:port][/]` or `https://host[:port][/]` (default ports 80 and 443).
pub fn parse_origin(s: &str) -> Result<OriginUrl, String> {
    let (rest, tls) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => return Err(format!("origin {s:?} must start with http:// or https://")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') || rest.contains('@') || rest.contains('?') {
        return Err(format!(
            "origin {s:?} must be http(s)://host[:port] with no path"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port: u16 = p
                .parse()
                .map_err(|_| format!("origin {s:?} has an invalid port"))?;
            (h.to_string(), port)
        }
        _ => (rest.to_string(), if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(format!("origin {s:?} has no host"));
    }
    Ok(OriginUrl {
        authority: format!("{host}:{port}"),
        host,
        port,
        tls,
    })
}

/// A timeout of zero would fail every request (or never time out, depending on the library):
/// refuse it, naming the field.
fn nonzero(path: &str, d: Dur) -> Result<(), ConfigError> {
    if d.0.is_zero() {
        return Err(ConfigError::new(
            path,
            "must be more than zero (e.g. \"250ms\", \"10s\")",
        ));
    }
    Ok(())
}

fn check_addr(path: &str, s: &str) -> Result<(), ConfigError> {
    s.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| ConfigError::new(path, format!("{s:?} is not an IP:port address")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const GOOD: &str = r#"
[node]
name = "edge1"
listen = "127.0.0.1:8080"

[store]
ram_bytes = "256M"

[[tenant]]
name = "shop"
hostnames = ["shop.example", "www.shop.example"]
origins = ["http://127.0.0.1:9000", "http://127.0.0.1:9001/"]
[tenant.cache]
negative_ttl = "30s"
grace = "1h"
[tenant.cache_key]
query_allow = ["page", "q"]
[[tenant.rule]]
path_prefix = "/account/"
bypass = true
"#;

    #[test]
    fn parses_good_config() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.node.name, "edge1");
        assert_eq!(c.store.ram_bytes.0, 256 << 20);
        assert_eq!(c.tenants[0].origins.len(), 2);
        assert_eq!(c.tenants[0].cache.grace.0, Duration::from_secs(3600));
        assert_eq!(c.tenants[0].rules[0].path_prefix, "/account/");
    }

    #[test]
    fn unknown_field_names_its_path() {
        let bad = GOOD.replace("negative_ttl", "negative_tll");
        let e = Config::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "tenant[0].cache.negative_tll", "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn bad_size_names_its_path() {
        let bad = GOOD.replace("\"256M\"", "\"lots\"");
        let e = Config::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "store.ram_bytes", "{e}");
    }

    #[test]
    fn bad_origin_names_its_index() {
        let bad = GOOD.replace("http://127.0.0.1:9001/", "ftp://x");
        let e = Config::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "tenant[0].origins[1]", "{e}");
    }

    #[test]
    fn duplicate_hostname_rejected() {
        let bad = format!(
            "{GOOD}\n[[tenant]]\nname = \"b\"\nhostnames = [\"SHOP.example\"]\norigins = [\"http://127.0.0.1:1\"]\n"
        );
        let e = Config::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "tenant[1].hostnames[0]", "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(ByteSize::parse("10G").unwrap().0, 10 << 30);
        assert_eq!(ByteSize::parse("1.5K").unwrap().0, 1536);
        assert_eq!(ByteSize::parse("42").unwrap().0, 42);
        assert!(ByteSize::parse("x").is_err());
        assert!(ByteSize::parse("-1M").is_err());
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur::parse("5m").unwrap().0, Duration::from_secs(300));
        assert!(Dur::parse("5y").is_err());
    }

    #[test]
    fn zero_timeouts_are_refused_naming_the_field() {
        let e = Config::from_toml(
            &GOOD.replace("grace = \"1h\"", "grace = \"1h\"\norigin_timeout = 0"),
        )
        .unwrap_err();
        assert_eq!(e.path, "tenant[0].cache.origin_timeout", "{e}");
        assert!(e.message.contains("more than zero"), "{e}");
        let e = Config::from_toml(&GOOD.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\nheader_read_timeout = \"0s\"",
        ))
        .unwrap_err();
        assert_eq!(e.path, "node.header_read_timeout", "{e}");
        let e = Config::from_toml(&GOOD.replace(
            "grace = \"1h\"",
            "grace = \"1h\"\nconnect_timeout = \"0ms\"",
        ))
        .unwrap_err();
        assert_eq!(e.path, "tenant[0].cache.connect_timeout", "{e}");
    }

    #[test]
    fn ssd_read_threads_are_bounded_and_the_fast_path_can_be_turned_off() {
        let with = |extra: &str| {
            GOOD.replace(
                "ram_bytes = \"256M\"",
                &format!("ram_bytes = \"256M\"\ndir = \"/tmp/x\"\n{extra}"),
            )
        };
        let c = Config::from_toml(&with("")).unwrap();
        assert_eq!((c.store.read_threads, c.store.fast_reads), (4, true));
        let c = Config::from_toml(&with("read_threads = 2\nfast_reads = false")).unwrap();
        assert_eq!((c.store.read_threads, c.store.fast_reads), (2, false));
        for bad in ["read_threads = 0", "read_threads = 65"] {
            let e = Config::from_toml(&with(bad)).unwrap_err();
            assert_eq!(e.path, "store.read_threads", "{e}");
            assert!(e.message.contains("1 to 64"), "{e}");
        }
    }

    #[test]
    fn negative_values_say_what_was_expected() {
        let e = Config::from_toml(&GOOD.replace("\"256M\"", "-5")).unwrap_err();
        assert_eq!(e.path, "store.ram_bytes", "{e}");
        assert!(
            e.message.contains("0 or more bytes") && e.message.contains("-5"),
            "{e}"
        );
        let e = Config::from_toml(&GOOD.replace("\"256M\"", "\"-1M\"")).unwrap_err();
        assert!(e.message.contains("0 or more bytes"), "{e}");
        let e = Config::from_toml(&GOOD.replace("\"30s\"", "-30")).unwrap_err();
        assert_eq!(e.path, "tenant[0].cache.negative_ttl", "{e}");
        assert!(e.message.contains("duration of 0 or more"), "{e}");
        let e = Config::from_toml(&GOOD.replace("\"30s\"", "\"-30s\"")).unwrap_err();
        assert!(e.message.contains("duration of 0 or more"), "{e}");
        let e = Config::from_toml(&GOOD.replace("\"256M\"", "true")).unwrap_err();
        assert!(e.message.contains("a size of 0 or more bytes"), "{e}");
        // Fractional seconds stay accepted where a duration is expected.
        let c = Config::from_toml(&GOOD.replace("\"30s\"", "1.5")).unwrap();
        assert_eq!(
            c.tenants[0].cache.negative_ttl.0,
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn single_origin_errors_name_the_flag() {
        let e = Config::single_origin("127.0.0.1:8080", "nope").unwrap_err();
        assert_eq!(e.path, "--origin");
        assert!(Config::single_origin("127.0.0.1:8080", "http://127.0.0.1:8000").is_ok());
        let e = Config::single_origin("localhost", "http://127.0.0.1:8000").unwrap_err();
        assert_eq!(e.path, "--listen");
    }

    #[test]
    fn origin_parsing() {
        let o = parse_origin("http://127.0.0.1:8000").unwrap();
        assert_eq!(o.authority, "127.0.0.1:8000");
        let o = parse_origin("http://origin.test").unwrap();
        assert_eq!(o.port, 80);
        assert!(parse_origin("http://a/b").is_err());
        assert!(parse_origin("http://a:99999").is_err());
    }
}
