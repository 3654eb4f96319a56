//! `outpost up`: a whole CDN in one process. With no topology it is the default world (two
//! regions, a PoP of two edge boxes in each, a shield set of two shields in the region nearest
//! the origin, the built-in demo origin); with `--topology FILE` any topology of the same TOML
//! shape `outpost node --config` reads. Every node is a separate `outpost_proxy` node on its own
//! 127.0.0.1 port that talks to the others over HTTP only, so the same topology runs as
//! separate processes unchanged.

use outpost_config::{
    ByteSize, Config, MemberConfig, PopConfig, RegionConfig, Role, ShieldSetConfig, TenantConfig,
    TopologyConfig,
};
use outpost_proxy::RunningNode;
use std::net::SocketAddr;
use std::path::Path;

/// One started node of the world.
pub struct WorldNode {
    /// Node name.
    pub name: String,
    /// Edge or shield.
    pub role: Role,
    /// Region.
    pub region: String,
    /// PoP or shield set.
    pub group: String,
    /// The running node.
    pub running: RunningNode,
}

/// `host:port` with the port moved by `by` (for laying out default addresses).
fn shift(addr: &str, by: u16) -> Result<String, String> {
    let sa: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?}: expected IP:port"))?;
    let port = sa
        .port()
        .checked_add(by)
        .ok_or_else(|| format!("{addr}: no room for {by} more ports after it"))?;
    Ok(SocketAddr::new(sa.ip(), port).to_string())
}

/// The default world: edges eu-1a/eu-1b (PoP eu-1, region eu) and us-1a/us-1b (PoP us-1, region
/// us) on `listen` and the next three ports; shields shield-us-a/b on the ports 10 above
/// `listen`; metrics on `metrics` and the next five ports. One tenant, `demo`, whose misses go
/// to the us shield set.
pub fn default_world(
    origin: &str,
    listen: &str,
    metrics: &str,
    ram: &str,
) -> Result<Config, String> {
    let member = |name: &str, i: u16, shield: bool| -> Result<MemberConfig, String> {
        Ok(MemberConfig {
            name: name.to_string(),
            listen: shift(listen, if shield { 10 + i } else { i })?,
            metrics: shift(metrics, if shield { 4 + i } else { i })?,
        })
    };
    let mut cfg = single_edge(origin, listen, metrics, ram)?;
    cfg.tenants[0].shield = Some("us-shields".into());
    cfg.topology = Some(TopologyConfig {
        // Frankfurt and Ashburn: where the GeoDNS measures distances from.
        regions: vec![
            RegionConfig {
                name: "eu".into(),
                lat: 50.1,
                lon: 8.7,
                countries: Vec::new(),
            },
            RegionConfig {
                name: "us".into(),
                lat: 39.0,
                lon: -77.5,
                countries: Vec::new(),
            },
        ],
        pops: vec![
            PopConfig {
                name: "eu-1".into(),
                region: "eu".into(),
                mid_tier: None,
                boxes: vec![member("eu-1a", 0, false)?, member("eu-1b", 1, false)?],
                addresses: Vec::new(),
                weight: 100,
                drain: false,
            },
            PopConfig {
                name: "us-1".into(),
                region: "us".into(),
                mid_tier: None,
                boxes: vec![member("us-1a", 2, false)?, member("us-1b", 3, false)?],
                addresses: Vec::new(),
                weight: 100,
                drain: false,
            },
        ],
        shield_sets: vec![ShieldSetConfig {
            name: "us-shields".into(),
            region: "us".into(),
            boxes: vec![
                member("shield-us-a", 0, true)?,
                member("shield-us-b", 1, true)?,
            ],
        }],
        ..TopologyConfig::default()
    });
    cfg.node.name = "eu-1a".into();
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// `outpost up --single`: one edge, one tenant `demo` for demo.localhost (and localhost).
pub fn single_edge(origin: &str, listen: &str, metrics: &str, ram: &str) -> Result<Config, String> {
    let mut cfg = Config::single_origin(listen, origin).map_err(|e| e.to_string())?;
    cfg.node.name = "edge".into();
    cfg.node.metrics = metrics.to_string();
    cfg.store.ram_bytes = ByteSize::parse(ram).map_err(|e| format!("--ram-bytes: {e}"))?;
    cfg.tenants = vec![TenantConfig {
        name: "demo".into(),
        hostnames: vec![
            "demo.localhost".into(),
            "localhost".into(),
            "127.0.0.1".into(),
        ],
        ..cfg.tenants.remove(0)
    }];
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Read a topology file for `outpost up --topology`.
pub fn read_topology(path: &Path) -> Result<Config, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--topology {}: {e}", path.display()))?;
    let cfg = Config::parse_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if cfg.topology.is_none() {
        return Err(format!("{}: no [topology] section", path.display()));
    }
    Ok(cfg)
}

/// Start every node of `world`: shields first, so edges find them up.
/// With `tls_listen`, the first box of the first PoP also serves HTTPS there.
pub async fn start(
    world: &Config,
    access_log: bool,
    tls_listen: Option<&str>,
) -> Result<Vec<WorldNode>, String> {
    let topo = world
        .topology
        .as_ref()
        .ok_or_else(|| "the config has no [topology]".to_string())?;
    let first_edge = topo
        .pops
        .first()
        .and_then(|p| p.boxes.first())
        .map(|b| b.name.clone());
    let mut members = topo.members();
    members.sort_by_key(|m| m.0 == Role::Edge);
    let mut nodes = Vec::new();
    for (role, region, group, m) in members {
        let mut cfg = world.for_member(&m.name).map_err(|e| e.to_string())?;
        cfg.node.access_log = access_log;
        if let (Some(addr), true) = (tls_listen, first_edge.as_deref() == Some(m.name.as_str())) {
            cfg.node.tls_listen = addr.to_string();
        }
        let running = outpost_proxy::start(&cfg)
            .await
            .map_err(|e| format!("{}: {e}", m.name))?;
        nodes.push(WorldNode {
            name: m.name.clone(),
            role,
            region: region.to_string(),
            group: group.to_string(),
            running,
        });
    }
    Ok(nodes)
}

/// The control plane of the world: the API on `api`, an in-process bus, and an agent on every
/// node following the log (tenants are seeded from the world's config as version 1).
pub async fn start_control(
    world: &Config,
    nodes: &[WorldNode],
    api: &str,
    canary: Option<outpost_control::CanaryOptions>,
) -> Result<outpost_control::RunningControl, String> {
    let bus: std::sync::Arc<dyn outpost_control::Bus> =
        std::sync::Arc::new(outpost_control::InProcessBus::new());
    let mut opts = outpost_control::ControlOptions::new(api, world.clone());
    opts.canary = canary;
    // A fixed admin key for scripts; otherwise a new one is made and printed once.
    opts.admin_key = std::env::var("OUTPOST_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let control = outpost_control::start(opts, bus.clone()).await?;
    let api_url = format!("http://{}", control.addr);
    for n in nodes {
        let base = world.for_member(&n.name).map_err(|e| e.to_string())?;
        outpost_control::agent::spawn(&n.running, base, bus.clone());
        let _ = n.running.node.control_api.set(api_url.clone());
    }
    Ok(control)
}

/// JSON listing every node and origin (`--addr-file`).
pub fn addr_json(world: &Config, nodes: &[WorldNode]) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from("{\"nodes\":[");
    for (i, n) in nodes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"name\":\"{}\",\"role\":\"{}\",\"region\":\"{}\",\"pop\":\"{}\",\"http\":\"{}\",\"metrics\":{}}}",
            esc(&n.name),
            n.role.as_str(),
            esc(&n.region),
            esc(&n.group),
            n.running.addr,
            n.running
                .metrics_addr
                .map_or("null".to_string(), |m| format!("\"{m}\""))
        ));
    }
    out.push_str("],\"origins\":[");
    let mut first = true;
    for t in &world.tenants {
        for o in &t.origins {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&format!(
                "{{\"tenant\":\"{}\",\"url\":\"{}\",\"shield\":{}}}",
                esc(&t.name),
                esc(o),
                t.shield
                    .as_ref()
                    .map_or("null".to_string(), |s| format!("\"{}\"", esc(s)))
            ));
        }
    }
    out.push_str("]}\n");
    out
}

/// The map printed by `outpost up`.
pub fn banner(world: &Config, nodes: &[WorldNode]) -> String {
    let mut out = String::new();
    let Some(topo) = &world.topology else {
        return out;
    };
    let addr = |name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| {
                let m = n
                    .running
                    .metrics_addr
                    .map(|m| format!("  metrics {m}"))
                    .unwrap_or_default();
                format!("{}{m}", n.running.addr)
            })
            .unwrap_or_default()
    };
    let mut regions: Vec<&str> = topo
        .pops
        .iter()
        .map(|p| p.region.as_str())
        .chain(topo.shield_sets.iter().map(|s| s.region.as_str()))
        .collect();
    regions.sort_unstable();
    regions.dedup();
    for r in regions {
        out.push_str(&format!("  region {r}\n"));
        for p in topo.pops.iter().filter(|p| p.region == r) {
            out.push_str(&format!("    PoP {}\n", p.name));
            for b in &p.boxes {
                out.push_str(&format!("      edge   {:<12} {}\n", b.name, addr(&b.name)));
            }
        }
        for s in topo.shield_sets.iter().filter(|s| s.region == r) {
            let kind = if topo.is_mid_tier(&s.name) {
                "mid-tier"
            } else {
                "shield set"
            };
            out.push_str(&format!("    {kind} {}\n", s.name));
            for b in &s.boxes {
                out.push_str(&format!("      shield {:<12} {}\n", b.name, addr(&b.name)));
            }
        }
    }
    for t in &world.tenants {
        out.push_str(&format!(
            "  tenant {} ({}) → {} → origin {}\n",
            t.name,
            t.hostnames.join(", "),
            t.shield.as_deref().unwrap_or("(no shield)"),
            t.origins.join(", ")
        ));
    }
    out
}
