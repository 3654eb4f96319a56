//! `outpost dns` (the GeoDNS role), the dns node inside `outpost up`, and
//! `outpost explain --dns NAME --subnet CIDR`.

use clap::Args;
use outpost_config::Config;
use outpost_dns::geo::Geo;
use outpost_dns::{ControlWatch, DnsNode, RunningDns};
use std::path::{Path, PathBuf};

/// Flags of `outpost dns`.
#[derive(Args, Debug)]
pub struct DnsArgs {
    /// Topology file: `[topology]` with `[[topology.region]]` coordinates and PoPs, `[[tenant]]`
    /// hostnames, and an optional `[dns]` section.
    #[arg(long)]
    pub config: PathBuf,
    /// GeoIP database (MaxMind DB format with country codes); default: `dns.geoip`, then
    /// OUTPOST_GEOIP, then ~/.outpost/geoip/country.mmdb (scripts/install-geoip.sh puts the CC0
    /// ip-location-db database there).
    #[arg(long)]
    pub geoip: Option<PathBuf>,
    /// UDP+TCP listen address (overrides `dns.listen`).
    #[arg(long)]
    pub listen: Option<String>,
    /// Admin listener for /metrics, /healthz, /explain (overrides `dns.admin`; "" disables).
    #[arg(long)]
    pub admin: Option<String>,
}

/// Where the default GeoIP database lives.
pub fn default_geoip() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("OUTPOST_GEOIP") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    let home = std::env::var("HOME").ok().filter(|h| !h.is_empty())?;
    let p = Path::new(&home)
        .join(".outpost")
        .join("geoip")
        .join("country.mmdb");
    p.exists().then_some(p)
}

/// The GeoIP database to use: the flag, the config's, or the default one.
fn open_geo(flag: Option<&Path>, cfg: &Config) -> Result<Option<Geo>, String> {
    let from_cfg = cfg
        .dns
        .as_ref()
        .map(|d| d.geoip.clone())
        .filter(|g| !g.is_empty())
        .map(PathBuf::from);
    let path = flag
        .map(Path::to_path_buf)
        .or(from_cfg)
        .or_else(default_geoip);
    match path {
        Some(p) => Geo::open(&p).map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

fn read_config(path: &Path) -> Result<Config, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let cfg = Config::parse_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    cfg.validate_dns()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(cfg)
}

/// `outpost dns`.
pub async fn run(a: DnsArgs) -> Result<(), String> {
    let cfg = read_config(&a.config)?;
    let dns = cfg.validate_dns().map_err(|e| e.to_string())?;
    let geo = open_geo(a.geoip.as_deref(), &cfg)?;
    let geo_text = geo
        .as_ref()
        .map(|g| g.describe())
        .unwrap_or_else(|| "none: every client is in the default region".into());
    let node = DnsNode::from_config(&cfg, geo).map_err(|e| e.to_string())?;
    let listen = a.listen.unwrap_or(dns.listen.clone());
    let admin = a.admin.unwrap_or(dns.admin.clone());
    let control = (!dns.control_api.is_empty()).then(|| ControlWatch {
        api: dns.control_api.clone(),
        key: if dns.control_key.is_empty() {
            std::env::var("OUTPOST_DNS_API_KEY").unwrap_or_default()
        } else {
            dns.control_key.clone()
        },
        stale: dns.heartbeat_stale.0,
        every: dns.probe_interval.0,
    });
    let mut running = outpost_dns::start(node, &listen, Some(&admin), control)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "outpost dns: zone {} on {} (udp+tcp), admin {}, geoip {geo_text}; SIGHUP reloads the config",
        running.node().zone.zone,
        running.addr,
        running
            .admin
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into())
    );
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("SIGHUP handler: {e}"))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    loop {
        tokio::select! {
            _ = running.wait() => return Ok(()),
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                // Weights, drains, PoPs, tenants and TTL change without a restart; the
                // listeners stay (a new `dns.listen` needs one). A bad file keeps the old config.
                match read_config(&a.config).and_then(|cfg| {
                    let geo = open_geo(a.geoip.as_deref(), &cfg)?;
                    DnsNode::from_config(&cfg, geo).map_err(|e| e.to_string())
                }) {
                    Ok(node) => {
                        running.reload(node).await;
                        eprintln!("outpost dns: config reloaded from {}", a.config.display());
                    }
                    Err(e) => eprintln!("outpost dns: reload refused, keeping the running config: {e}"),
                }
            }
        }
    }
    running.stop().await;
    Ok(())
}

/// The dns node of `outpost up`: the world's zone on `listen`, admin on `admin`, with the
/// in-process control plane's heartbeats as a passive health signal when `control` is given. A
/// port that is taken (5353 is also mDNS's) is a warning, not a failure of the whole world.
pub async fn start_in_up(
    world: &Config,
    listen: &str,
    admin: &str,
    control: Option<ControlWatch>,
) -> Option<RunningDns> {
    let mut cfg = world.clone();
    let mut dns = cfg.dns.clone().unwrap_or_default();
    dns.listen = listen.to_string();
    dns.admin = admin.to_string();
    cfg.dns = Some(dns);
    let geo = match open_geo(None, &cfg) {
        Ok(g) => g,
        Err(e) => {
            eprintln!(
                "  dns: GeoIP database unreadable ({e}); every client goes to the default region"
            );
            None
        }
    };
    let node = match DnsNode::from_config(&cfg, geo) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("  dns: not started: {e}");
            return None;
        }
    };
    match outpost_dns::start(node, listen, Some(admin), control).await {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("  dns: not started: {e} (choose another with --dns ADDR)");
            None
        }
    }
}

/// `outpost explain --dns NAME [--subnet CIDR]`: ask a running dns node's `/explain` (live
/// health), or decide offline from `--config` (every PoP counted up).
pub async fn explain(
    name: &str,
    subnet: Option<&str>,
    server: Option<&str>,
    config: Option<&Path>,
    geoip: Option<&Path>,
    json_out: bool,
) -> Result<(), String> {
    let v: serde_json::Value = match (server, config) {
        (Some(s), _) => {
            let mut q = format!("/explain?name={name}");
            if let Some(sn) = subnet {
                q.push_str(&format!("&subnet={}", sn.replace('/', "%2F")));
            }
            let body = http_get(s, &q).await?;
            serde_json::from_slice(&body).map_err(|e| format!("{s}: not JSON: {e}"))?
        }
        (None, cfg_path) => {
            let cfg = match cfg_path {
                Some(p) => read_config(p)?,
                None => crate::world::default_world(
                    "http://127.0.0.1:8000",
                    "127.0.0.1:8080",
                    "127.0.0.1:9100",
                    "64M",
                )?,
            };
            let geo = open_geo(geoip, &cfg)?;
            let node = DnsNode::from_config(&cfg, geo).map_err(|e| e.to_string())?;
            let client = match subnet {
                Some(s) => {
                    let (a, p) =
                        outpost_dns::parse_subnet(s).map_err(|e| format!("--subnet {e}"))?;
                    outpost_dns::answer::client_of(a, Some((a, p)))
                }
                None => outpost_dns::answer::client_of([127, 0, 0, 1].into(), None),
            };
            let mut v = node.explain(name, &client, false);
            v["note"] = "offline: decided from the config; every PoP counted up (ask a running node with --server ADMIN_ADDR for live health)".into();
            v
        }
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    if let Some(e) = v.get("error") {
        return Err(e.to_string());
    }
    println!(
        "name      {}  ({})",
        v["name"].as_str().unwrap_or(""),
        v["target"].as_str().unwrap_or("")
    );
    println!(
        "client    {}/{} from the {}",
        v["client"]["address"].as_str().unwrap_or(""),
        v["client"]["prefix"],
        if v["client"]["source"] == "ecs" {
            "EDNS client subnet"
        } else {
            "resolver address"
        }
    );
    match v["location"].as_object() {
        Some(l) if !l["country"].is_null() => println!(
            "location  {} ({}), ~{:.1},{:.1}; GeoIP network /{}",
            l["country"].as_str().unwrap_or(""),
            l["continent"].as_str().unwrap_or(""),
            l["lat"].as_f64().unwrap_or(0.0),
            l["lon"].as_f64().unwrap_or(0.0),
            l["network_prefix"]
        ),
        Some(_) => println!(
            "location  unknown: default region {}",
            v["default_region"].as_str().unwrap_or("")
        ),
        None => {}
    }
    if let Some(r) = v["ranking"].as_array() {
        println!("ranking   (nearest first)");
        for (i, p) in r.iter().enumerate() {
            println!(
                "  {}. {:<10} region {:<8} {:>6} km{}  {:<4} weight {:>3}{}  {}{}",
                i + 1,
                p["pop"].as_str().unwrap_or(""),
                p["region"].as_str().unwrap_or(""),
                p["km"].as_f64().unwrap_or(0.0),
                if p["country_listed"] == true {
                    " (listed)"
                } else {
                    ""
                },
                if p["up"] == true { "up" } else { "DOWN" },
                p["weight"],
                if p["drain"] == true { " drained" } else { "" },
                p["verdict"].as_str().unwrap_or(""),
                match p["why"].as_str() {
                    Some(w) if !w.is_empty() => format!(": {w}"),
                    _ => String::new(),
                }
            );
        }
    }
    println!(
        "answer    {} {} -> {}  (ttl {}s, ECS scope /{}){}",
        v["rcode"].as_str().unwrap_or(""),
        v["pop"].as_str().unwrap_or("-"),
        v["answer"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        v["ttl"],
        v["ecs_scope"],
        if v["fail_open"] == true {
            "  FAIL-OPEN: no PoP qualified"
        } else {
            ""
        }
    );
    if let Some(n) = v["note"].as_str() {
        println!("note      {n}");
    }
    Ok(())
}

async fn http_get(addr: &str, path: &str) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let at = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("{addr}: not HTTP"))?;
        Ok::<_, String>(buf[at + 4..].to_vec())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), go)
        .await
        .map_err(|_| format!("{addr}: timed out"))?
}
