//! The `outpost` binary: `up` (a local CDN in front of a demo origin, zero config), `node` (an edge
//! from flags or a TOML file), and `explain` (what key and decision a node would use for a URL).

use clap::{Parser, Subcommand};

mod ctl;
mod dns;
mod load;
mod local_tls;
mod world;
use outpost_cache::cookie::{self, CookieDecision};
use outpost_config::{ByteSize, Config};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// mimalloc instead of glibc malloc: the hit path allocates a few small buffers per request and
/// glibc's malloc/free showed up as ~7% of node CPU under load (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "outpost", version, about = "Outpost: an HTTP caching CDN node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a complete local CDN in one process: two regions with a PoP of two edge boxes each
    /// (the first on 127.0.0.1:8080), a shield set of two shields, a built-in demo origin.
    Up {
        /// Put the CDN in front of this origin (http://host:port) instead of the demo origin.
        #[arg(long)]
        origin: Option<String>,
        /// Run this topology (TOML: [topology] with PoPs and shield sets, [[tenant]]s) instead of
        /// the default world.
        #[arg(long, conflicts_with = "origin")]
        topology: Option<PathBuf>,
        /// Write JSON listing every node (name, role, region, pop, http and metrics addresses)
        /// and origin to this file once all are up.
        #[arg(long)]
        addr_file: Option<PathBuf>,
        /// Run a single edge instead of the multi-region world.
        #[arg(long, conflicts_with = "topology")]
        single: bool,
        /// First edge's listen address (the default world's other nodes take the next ports:
        /// edges +1..+3, shields +10, +11).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// First metrics listen address (the other nodes take the next ports).
        #[arg(long, default_value = "127.0.0.1:9100")]
        metrics: String,
        /// Demo origin listen address.
        #[arg(long, default_value = "127.0.0.1:8000")]
        demo_listen: String,
        /// RAM cache budget (e.g. 512M, 2G).
        #[arg(long, default_value = "512M")]
        ram_bytes: String,
        /// Write one JSON access-log line per request to stdout.
        #[arg(long)]
        access_log: bool,
        /// Control API listen address (tenants, purge, versions: `outpost purge`, `outpost tenant`).
        #[arg(long, default_value = "127.0.0.1:9000")]
        api: String,
        /// New config versions go to the first PoP and are watched this long before they go
        /// everywhere (or are rolled back); 0 sends them everywhere at once.
        #[arg(long, default_value = "30s")]
        canary_watch: String,
        /// HTTPS on the first edge (TLS 1.3/1.2, h2 and HTTP/1.1), with a certificate for the
        /// demo tenant from a local CA made at start ("" disables it).
        #[arg(long, default_value = "127.0.0.1:8443")]
        tls: String,
        /// The GeoDNS node's UDP+TCP address ("" disables it).
        #[arg(long, default_value = "127.0.0.1:5353")]
        dns: String,
        /// The GeoDNS node's admin listener (/metrics, /explain).
        #[arg(long, default_value = "127.0.0.1:9153")]
        dns_admin: String,
    },
    /// Run an edge node from flags (`--listen ADDR --origin URL`, every Host goes to that origin)
    /// or from a TOML file (`--config FILE`).
    Node {
        /// TOML config file (tenants, origins, rules). Flags below override its node settings.
        #[arg(long, conflicts_with = "origin")]
        config: Option<PathBuf>,
        /// Single-tenant mode: forward every Host to this origin.
        #[arg(long)]
        origin: Option<String>,
        /// Listen address.
        #[arg(long)]
        listen: Option<String>,
        /// Metrics listen address ("" disables).
        #[arg(long)]
        metrics: Option<String>,
        /// Node name shown in Cache-Status.
        #[arg(long)]
        name: Option<String>,
        /// RAM cache budget (e.g. 512M, 2G).
        #[arg(long)]
        ram_bytes: Option<String>,
        /// SSD tier directory (segment files); objects survive restarts.
        #[arg(long)]
        store_dir: Option<String>,
        /// SSD tier budget (e.g. 10G).
        #[arg(long)]
        disk_bytes: Option<String>,
        /// Cache policy of both tiers: s3-tinylfu (default), w-tinylfu, s3-fifo, size-aware, lru.
        #[arg(long)]
        policy: Option<String>,
        /// Dedicated serving threads, each with its own event loop (default 0: the shared
        /// work-stealing runtime, one thread per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Write one JSON access-log line per request to stdout.
        #[arg(long)]
        access_log: bool,
        /// Follow the control plane's log on these NATS servers (nats://host:port, comma
        /// separated): config versions and purges, applied in order (default: OUTPOST_BUS).
        #[arg(long)]
        bus: Option<String>,
        /// The control plane's API (http://host:port): `PURGE` requests are relayed there with
        /// the client's key (default: OUTPOST_API).
        #[arg(long)]
        control_api: Option<String>,
    },
    /// The control role: the REST API (tenants, versions, purge) over NATS JetStream.
    Control(ctl::ControlArgs),
    /// Purge URLs, prefixes, tags, hosts or a whole tenant on every node, and wait until all
    /// have applied it (the API and key come from `outpost up`'s address file by default).
    Purge(ctl::PurgeArgs),
    /// Warm URLs before a launch: the edges of the regions fetch them through their normal
    /// path (shield first, coalesced); shows progress until every edge is done.
    Warm(ctl::WarmArgs),
    /// Tenants through the control API: list, get, create, update, delete, key.
    Tenant {
        #[command(subcommand)]
        cmd: ctl::TenantCmd,
    },
    /// Traffic by tenant from the nodes' rollups: requests, hit ratio, bytes, origin bytes,
    /// latency p50/p99, by region and PoP.
    Stats(ctl::StatsArgs),
    /// Every node's position in the control log.
    Nodes(ctl::ApiFlags),
    /// Hit-ratio simulator: generate traces, replay them through the store's own policies (and
    /// Belady's optimum), and model an edge/shield hierarchy.
    Sim {
        #[command(subcommand)]
        cmd: outpost_sim::cli::SimCommand,
    },
    /// Replay a trace or a synthetic Zipf workload against a running CDN (`--addr-file` of
    /// `outpost up`: clients in each region use their region's edges) or any URL base; report per
    /// region and tier: requests, hit ratios, origin requests, p50/p99 latency, errors.
    Load(load::LoadOptions),
    /// The dns role: authoritative GeoDNS for the CDN's zone, answering each client with the
    /// nearest healthy PoP (EDNS Client Subnet, GeoIP, health probes, weights, drain).
    Dns(dns::DnsArgs),
    /// Print the canonical cache key of a URL and the decision a node would take for it; with
    /// `--dns NAME`, the GeoDNS answer for a client subnet and why.
    Explain {
        /// The URL, e.g. http://demo.localhost:8080/assets/app.js?utm_source=x
        #[arg(required_unless_present = "dns")]
        url: Option<String>,
        /// Explain the GeoDNS answer for this name instead of a URL.
        #[arg(long)]
        dns: Option<String>,
        /// Client subnet for `--dns` (e.g. 81.2.69.0/24); default: a resolver on 127.0.0.1.
        #[arg(long, requires = "dns")]
        subnet: Option<String>,
        /// Ask this running dns node's admin listener (live health) instead of deciding from the
        /// config (default with `--dns`: the `outpost up` dns node, if its address file says so).
        #[arg(long, requires = "dns")]
        server: Option<String>,
        /// GeoIP database for an offline `--dns` explanation.
        #[arg(long, requires = "dns")]
        geoip: Option<PathBuf>,
        /// Print the `--dns` explanation as JSON.
        #[arg(long, requires = "dns")]
        json: bool,
        /// Request headers, `-H 'Name: value'` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Config file to explain against (default: the `outpost up` world).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also ask a running node (HEAD with `Cache-Control: only-if-cached`, never reaching the
        /// origin) whether it holds the object.
        #[arg(long)]
        probe: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.cmd {
        // Pure computation: no runtime, no logging set-up needed.
        Cmd::Sim { cmd } => {
            return match outpost_sim::cli::run(cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => {
                    eprintln!("outpost sim: {msg}");
                    ExitCode::from(2)
                }
            };
        }
        other => other,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("outpost: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match command {
            Cmd::Sim { .. } => Ok(()),
            Cmd::Up {
                origin,
                topology,
                addr_file,
                single,
                listen,
                metrics,
                demo_listen,
                ram_bytes,
                access_log,
                api,
                canary_watch,
                dns,
                dns_admin,
                tls,
            } => {
                let opts = UpOptions {
                    tls,
                    api,
                    canary_watch,
                    dns,
                    dns_admin,
                    origin,
                    topology,
                    addr_file,
                    single,
                    listen,
                    metrics,
                    demo_listen,
                    ram: ram_bytes,
                    access_log,
                };
                up(opts).await
            }
            Cmd::Node {
                config,
                origin,
                listen,
                metrics,
                name,
                ram_bytes,
                store_dir,
                disk_bytes,
                policy,
                workers,
                access_log,
                bus,
                control_api,
            } => {
                let store = NodeFlags {
                    control_api: control_api
                        .or_else(|| std::env::var("OUTPOST_API").ok().filter(|a| !a.is_empty())),
                    bus: bus
                        .or_else(|| std::env::var("OUTPOST_BUS").ok().filter(|b| !b.is_empty())),
                    ram: ram_bytes,
                    dir: store_dir,
                    disk: disk_bytes,
                    policy,
                    workers,
                };
                node(config, origin, listen, metrics, name, store, access_log).await
            }
            Cmd::Explain {
                url,
                dns: Some(name),
                subnet,
                server,
                config,
                geoip,
                json,
                ..
            } if url.is_none() => {
                let server = server.or_else(ctl::up_dns_admin);
                dns::explain(
                    &name,
                    subnet.as_deref(),
                    server.as_deref(),
                    config.as_deref(),
                    geoip.as_deref(),
                    json,
                )
                .await
            }
            Cmd::Explain {
                url,
                headers,
                config,
                probe,
                ..
            } => match url {
                Some(url) => explain(&url, &headers, config, probe).await,
                None => Err("explain: give a URL or --dns NAME".into()),
            },
            Cmd::Dns(a) => dns::run(a).await,
            Cmd::Load(opts) => load::run(opts).await,
            #[cfg(feature = "nats")]
            Cmd::Control(a) => ctl::control(a).await,
            #[cfg(not(feature = "nats"))]
            Cmd::Control(_) => Err("this outpost was built without the nats feature".into()),
            Cmd::Purge(a) => ctl::purge(a).await,
            Cmd::Warm(a) => ctl::warm(a).await,
            Cmd::Stats(a) => ctl::stats(a).await,
            Cmd::Tenant { cmd } => ctl::tenant(cmd).await,
            Cmd::Nodes(a) => ctl::nodes(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("outpost: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Flags of `outpost up`.
struct UpOptions {
    tls: String,
    api: String,
    dns: String,
    dns_admin: String,
    canary_watch: String,
    origin: Option<String>,
    topology: Option<PathBuf>,
    addr_file: Option<PathBuf>,
    single: bool,
    listen: String,
    metrics: String,
    demo_listen: String,
    ram: String,
    access_log: bool,
}

/// Start the demo origin on `listen`; its base URL.
async fn start_demo(listen: &str) -> Result<String, String> {
    let l = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("--demo-listen {listen}: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = outpost_demo::serve(l).await {
            tracing::error!(error = %e, "demo origin stopped");
        }
    });
    Ok(format!("http://{addr}"))
}

async fn up(o: UpOptions) -> Result<(), String> {
    if o.single {
        return up_single(o).await;
    }
    let demo_url = format!("http://{}", o.demo_listen);
    let world = match &o.topology {
        Some(path) => world::read_topology(path)?,
        None => world::default_world(
            o.origin.as_deref().unwrap_or(&demo_url),
            &o.listen,
            &o.metrics,
            &o.ram,
        )?,
    };
    let uses_demo = world.tenants.iter().any(|t| {
        t.origins
            .iter()
            .any(|u| u.trim_end_matches('/') == demo_url)
    });
    if uses_demo {
        start_demo(&o.demo_listen).await?;
    }
    // HTTPS for the default world's demo tenant: a local CA next to the address file.
    let addr_file = o.addr_file.clone().unwrap_or_else(ctl::default_addr_file);
    let mut world = world;
    let local_tls = if o.tls.is_empty() || o.topology.is_some() {
        None
    } else {
        let dir = addr_file
            .parent()
            .map(|d| d.join("tls"))
            .unwrap_or_else(local_tls::default_dir);
        let names = world
            .tenants
            .first()
            .map(|t| t.hostnames.clone())
            .unwrap_or_default();
        let files = local_tls::make(&dir, &names)?;
        if let Some(t) = world.tenants.first_mut() {
            t.tls = Some(outpost_config::TenantTlsConfig {
                cert: files.cert.display().to_string(),
                key: files.key.display().to_string(),
                ..Default::default()
            });
        }
        Some(files)
    };
    let tls_listen = local_tls.as_ref().map(|_| o.tls.as_str());
    let nodes = world::start(&world, o.access_log, tls_listen).await?;
    let watch = outpost_config::Dur::parse(&o.canary_watch)
        .map_err(|e| format!("--canary-watch: {e}"))?
        .0;
    let canary = world
        .topology
        .as_ref()
        .and_then(|t| t.pops.first())
        .filter(|_| !watch.is_zero())
        .map(|p| outpost_control::CanaryOptions::new(&p.name, watch));
    let control = world::start_control(&world, &nodes, &o.api, canary.clone()).await?;
    let admin_key = control
        .new_admin_key
        .clone()
        .or_else(|| std::env::var("OUTPOST_ADMIN_KEY").ok());
    let mut doc: serde_json::Value = serde_json::from_str(&world::addr_json(&world, &nodes))
        .map_err(|e| format!("address file: {e}"))?;
    doc["control"] = serde_json::json!({
        "api": format!("http://{}", control.addr),
        "admin_key": admin_key,
    });
    let dns_node = if o.dns.is_empty() {
        None
    } else {
        let watch = admin_key.clone().map(|key| outpost_dns::ControlWatch {
            api: format!("http://{}", control.addr),
            key,
            stale: Duration::from_secs(5),
            every: Duration::from_secs(1),
        });
        dns::start_in_up(&world, &o.dns, &o.dns_admin, watch).await
    };
    if let Some(d) = &dns_node {
        doc["dns"] = serde_json::json!({
            "addr": d.addr.to_string(),
            "admin": d.admin.map(|a| a.to_string()),
            "zone": d.node().zone.zone,
        });
    }
    if let (Some(files), Some(a)) = (&local_tls, nodes.iter().find_map(|n| n.running.tls_addr)) {
        doc["tls"] =
            serde_json::json!({"addr": a.to_string(), "ca": files.ca.display().to_string()});
    }
    ctl::write_private(&addr_file, &format!("{doc}\n")).map_err(|e| format!("--addr-file: {e}"))?;
    eprintln!("Outpost is up: a CDN of {} nodes.", nodes.len());
    eprint!("{}", world::banner(&world, &nodes));
    eprintln!(
        "  control API http://{}  (in-process log; address and admin key in {}, mode 0600)",
        control.addr,
        addr_file.display()
    );
    if let Some(k) = &control.new_admin_key {
        eprintln!("  admin key   {k}  (shown once; only its hash is kept)");
    }
    if let Some(c) = &canary {
        eprintln!(
            "  config rollout: new versions go to PoP {} first, everywhere after {:?} unless it regresses (--canary-watch)",
            c.pop, c.watch
        );
    }
    if uses_demo {
        eprintln!("  demo origin {demo_url}");
    }
    if let (Some(files), Some(first)) = (&local_tls, nodes.iter().find_map(|n| n.running.tls_addr))
    {
        let host = world
            .tenants
            .first()
            .and_then(|t| t.hostnames.first())
            .cloned()
            .unwrap_or_else(|| "localhost".into());
        eprintln!(
            "  HTTPS       https://{host}:{}/ (TLS 1.3/1.2, h2) with a local CA: curl --cacert {} https://{host}:{}/",
            first.port(),
            files.ca.display(),
            first.port()
        );
    }
    if let Some(d) = &dns_node {
        let node = d.node();
        let geo = node
            .zone
            .geo
            .as_ref()
            .map(|g| g.describe())
            .unwrap_or_else(|| "no GeoIP database (scripts/install-geoip.sh): every client goes to the default region".into());
        eprintln!(
            "  GeoDNS      {} udp+tcp, zone {}; geoip {geo}",
            d.addr, node.zone.zone
        );
    }
    let edges: Vec<&world::WorldNode> = nodes
        .iter()
        .filter(|n| n.role == outpost_config::Role::Edge)
        .collect();
    if let (Some(first), Some(other)) = (
        edges.first(),
        edges
            .iter()
            .find(|n| Some(&n.region) != edges.first().map(|f| &f.region)),
    ) {
        let host = world
            .tenants
            .first()
            .and_then(|t| t.hostnames.iter().find(|h| *h != "*"))
            .cloned()
            .unwrap_or_else(|| "localhost".into());
        let a = format!("http://{host}:{}", first.running.addr.port());
        let b = format!("http://{host}:{}", other.running.addr.port());
        eprintln!();
        eprintln!("Try (Cache-Status lists every tier, nearest the origin first):");
        eprintln!(
            "  curl -sI {a}/ | grep -i cache-status    # region {}: a miss through the shield",
            first.region
        );
        eprintln!(
            "  curl -sI {b}/ | grep -i cache-status    # region {}: a shield hit",
            other.region
        );
        eprintln!("  curl -sI {a}/ | grep -i cache-status    # again: an edge hit");
        if let Some(m) = first.running.metrics_addr {
            eprintln!("  curl -s http://{m}/metrics | grep outpost_tier");
        }
        eprintln!(
            "  outpost explain '{a}/?utm_source=x&b=2&a=1' --probe {}",
            first.running.addr
        );
        eprintln!("  outpost purge --url {a}/      # every node drops it; prints per-node times");
        eprintln!("  outpost tenant list; outpost nodes");
        if let Some(d) = &dns_node {
            let host = world
                .tenants
                .first()
                .and_then(|t| t.hostnames.iter().find(|h| *h != "*"))
                .cloned()
                .unwrap_or_else(|| "localhost".into());
            eprintln!(
                "  dig @{} -p {} {host} +subnet=81.2.69.0/24    # GeoDNS: a UK client gets the eu PoP",
                d.addr.ip(),
                d.addr.port()
            );
            eprintln!("  outpost explain --dns {host} --subnet 8.8.8.0/24    # why: location, ranking, health");
        }
        match &o.addr_file {
            Some(f) => eprintln!(
                "  outpost load --addr-file {} --requests 20000   # per-region, per-tier hit ratios",
                f.display()
            ),
            None => eprintln!(
                "  (start with --addr-file FILE, then: outpost load --addr-file FILE  # load from every region)"
            ),
        }
    }
    eprintln!();
    eprintln!("Ctrl-C to stop (in-flight responses finish first; twice to exit at once).");
    let running: Vec<&outpost_proxy::RunningNode> = nodes.iter().map(|n| &n.running).collect();
    serve_until_signal(&running, world.node.drain_timeout.0, None).await;
    Ok(())
}

/// `outpost up --single`: one edge in front of the origin.
async fn up_single(o: UpOptions) -> Result<(), String> {
    let origin_url = match &o.origin {
        Some(url) => url.clone(),
        None => start_demo(&o.demo_listen).await?,
    };
    let mut cfg = world::single_edge(&origin_url, &o.listen, &o.metrics, &o.ram)?;
    cfg.node.access_log = o.access_log;
    let running = outpost_proxy::start(&cfg)
        .await
        .map_err(|e| e.to_string())?;
    let port = running.addr.port();
    let base = format!("http://demo.localhost:{port}");
    eprintln!("Outpost is up.");
    eprintln!(
        "  edge     {}  (tenant \"demo\": demo.localhost, localhost)",
        running.addr
    );
    eprintln!(
        "  origin   {origin_url}{}",
        if o.origin.is_some() {
            ""
        } else {
            "  (built-in demo origin)"
        }
    );
    if let Some(m) = running.metrics_addr {
        eprintln!("  metrics  http://{m}/metrics");
        eprintln!("  purge    curl -X POST http://{m}/purge -d '{{\"urls\":[\"{base}/\"]}}'");
    }
    eprintln!();
    eprintln!("Try:");
    eprintln!("  curl -i {base}/                  # run it twice: Cache-Status turns into a hit");
    if o.origin.is_none() {
        for (path, what) in outpost_demo::routes().iter().skip(1) {
            eprintln!("  curl -i {base}{path:<26} # {what}");
        }
    }
    eprintln!("  outpost explain '{base}/?utm_source=x&b=2&a=1'");
    eprintln!();
    eprintln!("Ctrl-C to stop (in-flight responses finish first; twice to exit at once).");
    serve_until_signal(&[&running], cfg.node.drain_timeout.0, None).await;
    Ok(())
}

/// Storage and thread flags of `outpost node`.
struct NodeFlags {
    bus: Option<String>,
    control_api: Option<String>,
    ram: Option<String>,
    dir: Option<String>,
    disk: Option<String>,
    policy: Option<String>,
    workers: Option<usize>,
}

async fn node(
    config: Option<PathBuf>,
    origin: Option<String>,
    listen: Option<String>,
    metrics: Option<String>,
    name: Option<String>,
    store: NodeFlags,
    access_log: bool,
) -> Result<(), String> {
    let mut cfg = match (&config, &origin) {
        // Validated below, once the flags (`--name` picks a topology member) are applied.
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("config: cannot read {}: {e}", path.display()))?;
            Config::parse_toml(&text).map_err(|e| e.to_string())?
        }
        (None, Some(o)) => {
            let l = listen.clone().unwrap_or_else(|| "127.0.0.1:8080".into());
            let mut c = Config::single_origin(&l, o).map_err(|e| e.to_string())?;
            c.node.metrics = String::new();
            c
        }
        (None, None) => return Err("node needs --origin URL or --config FILE".into()),
    };
    if let Some(l) = listen {
        cfg.node.listen = l;
    }
    if let Some(m) = metrics {
        cfg.node.metrics = m;
    }
    if let Some(n) = name {
        cfg.node.name = n;
    }
    // In a topology the node's listeners are its entry's (`--name` picks the entry).
    if cfg.topology.is_some() {
        cfg = cfg.for_member(&cfg.node.name).map_err(|e| e.to_string())?;
    }
    if let Some(r) = store.ram {
        cfg.store.ram_bytes = ByteSize::parse(&r).map_err(|e| format!("--ram-bytes: {e}"))?;
    }
    if let Some(d) = store.dir {
        cfg.store.dir = d;
    }
    if let Some(d) = store.disk {
        cfg.store.disk_bytes = ByteSize::parse(&d).map_err(|e| format!("--disk-bytes: {e}"))?;
    }
    if let Some(p) = store.policy {
        // Checked by `cfg.validate()` below, with the list of known policies.
        cfg.store.policy = p;
    }
    if let Some(w) = store.workers {
        cfg.node.workers = w;
    }
    cfg.node.access_log |= access_log;
    cfg.validate().map_err(|e| e.to_string())?;
    // Following a control log with a cache that survives restarts: apply what was missed
    // (purges above all) before serving from it.
    let opts = outpost_proxy::NodeOptions {
        catching_up: store.bus.is_some() && !cfg.store.dir.is_empty(),
        ..outpost_proxy::NodeOptions::default()
    };
    let running = outpost_proxy::start_with(&cfg, opts)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(urls) = &store.bus {
        follow_bus(&running, &cfg, urls).await?;
    }
    if let Some(api) = store.control_api {
        let _ = running
            .node
            .control_api
            .set(api.trim_end_matches('/').to_string());
    }
    tracing::info!(
        listen = %running.addr,
        metrics = ?running.metrics_addr,
        tenants = cfg.tenants.len(),
        node = %cfg.node.name,
        "outpost node serving"
    );
    let reload = config.as_deref().map(|path| Reload {
        path,
        name: Some(cfg.node.name.clone()),
    });
    serve_until_signal(&[&running], cfg.node.drain_timeout.0, reload).await;
    Ok(())
}

/// Follow the control plane's log on the NATS servers `urls` (the agent retries in the
/// background while they are away; the node serves meanwhile).
#[cfg(feature = "nats")]
async fn follow_bus(
    running: &outpost_proxy::RunningNode,
    cfg: &Config,
    urls: &str,
) -> Result<(), String> {
    let bus = outpost_control::nats::NatsBus::connect(urls, 1)
        .await
        .map_err(|e| format!("--bus {urls}: {e}"))?;
    outpost_control::agent::spawn(running, cfg.clone(), std::sync::Arc::new(bus));
    tracing::info!(bus = urls, "following the control log");
    Ok(())
}

#[cfg(not(feature = "nats"))]
async fn follow_bus(_: &outpost_proxy::RunningNode, _: &Config, urls: &str) -> Result<(), String> {
    Err(format!(
        "--bus {urls}: this outpost was built without the nats feature"
    ))
}

/// What SIGHUP re-reads: the `--config` file, as this node (`--name`) sees it.
struct Reload<'a> {
    path: &'a std::path::Path,
    name: Option<String>,
}

impl Reload<'_> {
    /// The file's config for this node: `--name` applied, and in a topology its own entry.
    fn read(&self) -> Result<Config, String> {
        let text = std::fs::read_to_string(self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let mut cfg = Config::parse_toml(&text).map_err(|e| e.to_string())?;
        if let Some(n) = &self.name {
            cfg.node.name = n.clone();
        }
        if cfg.topology.is_some() {
            cfg = cfg.for_member(&cfg.node.name).map_err(|e| e.to_string())?;
        }
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }
}

/// Serve until SIGTERM or SIGINT, then drain: stop accepting, finish responses and fills in
/// flight up to `drain_timeout`, and return (the process exits). A second signal exits at once.
/// SIGHUP re-reads `reload` (the `--config` file) and applies its tenants (and, in a topology,
/// its peers) without a restart.
async fn serve_until_signal(
    running: &[&outpost_proxy::RunningNode],
    drain_timeout: Duration,
    reload: Option<Reload<'_>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; serving until killed");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match &reload {
                Some(r) => match r.read() {
                    Ok(cfg) => match running
                        .iter()
                        .map(|r| r.node.apply_config(&cfg))
                        .collect::<Result<Vec<u64>, _>>()
                        .map(|v| v.into_iter().max().unwrap_or(0))
                    {
                        Ok(v) => tracing::info!(version = v, file = %r.path.display(), "config reloaded"),
                        Err(e) => tracing::error!(error = %e, "config reload refused; keeping the config in force"),
                    },
                    Err(e) => tracing::error!(error = %e, "config reload refused; keeping the config in force"),
                },
                None => tracing::info!("SIGHUP ignored: no --config file to reload"),
            },
        }
    }
    tracing::info!(
        deadline_secs = drain_timeout.as_secs_f64(),
        "shutdown signal: draining (send it again to exit at once)"
    );
    let drains = async {
        // Edges first (they were started last and may still be filling from shields, which
        // keep serving them meanwhile), all within one deadline.
        let deadline = std::time::Instant::now() + drain_timeout;
        let mut reports = Vec::new();
        for r in running.iter().rev() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            reports.push(r.drain(left).await);
        }
        reports
    };
    tokio::select! {
        report = drains => {
            tracing::info!(?report, "exiting");
        }
        _ = term.recv() => tracing::warn!("second signal: exiting now"),
        _ = int.recv() => tracing::warn!("second signal: exiting now"),
    }
}

/// `HEAD target` with `Cache-Control: only-if-cached` to one node (never reaching the origin):
/// its status, `Age` and `Cache-Status`.
async fn probe_node(
    label: &str,
    sa: SocketAddr,
    authority: &str,
    target: &str,
) -> Result<(), String> {
    let req = format!(
        "HEAD {target} HTTP/1.1\r\nHost: {authority}\r\nCache-Control: only-if-cached\r\nConnection: close\r\n\r\n"
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(sa).await?;
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(|_| format!("--probe {sa}: timed out"))?
    .map_err(|e| format!("--probe {sa}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or("");
    println!("{label:<14} {sa}: {status}");
    for line in text.lines().skip(1) {
        let l = line.to_ascii_lowercase();
        if l.starts_with("cache-status:") || l.starts_with("age:") {
            println!("               {line}");
        }
    }
    if status.contains(" 504") {
        println!("               not cached there (only-if-cached miss)");
    }
    Ok(())
}

/// Where a key lives in a topology (every member up): its owner box in each PoP and its shield.
fn print_path(topo: &outpost_config::TopologyConfig, shield: Option<&str>, key: &str) {
    use outpost_upstream::ring::Ring;
    let hash = outpost_store::CacheKey::new(key).hash64();
    let order = |boxes: &[outpost_config::MemberConfig]| -> Vec<String> {
        let ring = Ring::equal(boxes.iter().map(|b| b.name.as_str()));
        ring.order(hash)
            .into_iter()
            .map(|i| boxes[i].name.clone())
            .collect()
    };
    for p in &topo.pops {
        println!(
            "owner box      PoP {}: {} (the next ones if it is down)",
            p.name,
            order(&p.boxes).join(", then ")
        );
    }
    if let Some(set) = shield.and_then(|s| topo.shield_sets.iter().find(|x| x.name == s)) {
        println!(
            "shield         set {}: {}",
            set.name,
            order(&set.boxes).join(", then ")
        );
    }
}

async fn explain(
    url: &str,
    headers: &[String],
    config: Option<PathBuf>,
    probe: Option<String>,
) -> Result<(), String> {
    let cfg = match config {
        Some(p) => Config::from_file(&p).map_err(|e| e.to_string())?,
        None => world::default_world(
            "http://127.0.0.1:8000",
            "127.0.0.1:8080",
            "127.0.0.1:9100",
            "512M",
        )?,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("url {url:?} must start with http://"))?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut hm = http::HeaderMap::new();
    for h in headers {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| format!("-H {h:?}: expected 'Name: value'"))?;
        let name: http::HeaderName = n
            .trim()
            .parse()
            .map_err(|_| format!("-H {h:?}: bad header name"))?;
        let value: http::HeaderValue = v
            .trim()
            .parse()
            .map_err(|_| format!("-H {h:?}: bad header value"))?;
        hm.append(name, value);
    }
    let metrics = outpost_proxy::metrics::Metrics::new();
    let limits = outpost_proxy::tenant::OriginLimits::default();
    let env = outpost_proxy::tenant::Env {
        metrics: &metrics,
        tier: None,
        limits: &limits,
        origin_concurrency: cfg.node.origin_concurrency,
    };
    let tenants = outpost_proxy::tenant::Tenants::from_config(&cfg, &env, None);
    let host = outpost_cache::key::canonical_host(authority).map_err(|e| e.to_string())?;
    println!("url            {url}");
    let Some(tenant) = tenants.find(&host) else {
        println!("tenant         none: the node answers 421 Misdirected Request (no cache lookup)");
        return Ok(());
    };
    // In a topology the key's host has no port (as the nodes compute it).
    let key_host = if cfg.topology.is_some() {
        outpost_proxy::tier::without_port(host.clone())
    } else {
        host.clone()
    };
    let canon =
        outpost_cache::canonicalize(&key_host, target, &tenant.query).map_err(|e| e.to_string())?;
    println!("tenant         {}", tenant.name);
    println!("canonical url  {canon}");
    println!("forwarded as   GET {}", canon.path_and_query());
    let rule = tenant.rule_for(&canon.path);
    if !rule.path_prefix.is_empty() {
        println!("rule           path_prefix {}", rule.path_prefix);
    }
    let mut path_key: Option<String> = None;
    let decision = if rule.bypass {
        "bypass (rule): forwarded to the origin, never cached".to_string()
    } else {
        match cookie::decide(&rule.cookie, &hm) {
            CookieDecision::Bypass(c) => format!("bypass: cookie {c} is present"),
            CookieDecision::Key(extra) => {
                let key = canon.key_text(&tenant.name, &extra);
                println!("cache key      {key}");
                if let Some(topo) = &cfg.topology {
                    print_path(topo, tenant.shield_name(), &key);
                }
                path_key = Some(key.clone());
                if hm.contains_key(http::header::COOKIE) && extra.is_empty() {
                    println!(
                        "cookies        ignored (not keyed, not forwarded on cacheable requests)"
                    );
                }
                let rcc = outpost_http::cache_control::RequestCacheControl::from_headers(&hm);
                if rcc.no_store {
                    "cacheable lookup; the response will not be stored (request no-store)".into()
                } else if rcc.no_cache {
                    "cacheable lookup; a stored copy is revalidated first (request no-cache)".into()
                } else {
                    "cacheable: lookup, then fill from the origin on a miss (coalesced); storing follows the response's Cache-Control".into()
                }
            }
        }
    };
    println!("decision       {decision}");
    if let Some(addr) = probe {
        let sa: SocketAddr = addr
            .parse()
            .map_err(|_| format!("--probe {addr:?}: expected IP:port"))?;
        probe_node("probe", sa, authority, target).await?;
        // In a topology, follow the key's path: its owner box in every PoP and its shield.
        if let (Some(topo), Some(key)) = (&cfg.topology, path_key) {
            let hash = outpost_store::CacheKey::new(key).hash64();
            let mut path: Vec<&outpost_config::MemberConfig> = Vec::new();
            for p in &topo.pops {
                let ring =
                    outpost_upstream::ring::Ring::equal(p.boxes.iter().map(|b| b.name.as_str()));
                path.extend(ring.owner(hash).map(|i| &p.boxes[i]));
            }
            if let Some(set) = tenant
                .shield_name()
                .and_then(|s| topo.shield_sets.iter().find(|x| x.name == s))
            {
                let ring =
                    outpost_upstream::ring::Ring::equal(set.boxes.iter().map(|b| b.name.as_str()));
                path.extend(ring.owner(hash).map(|i| &set.boxes[i]));
            }
            for m in path {
                let Ok(a) = m.listen.parse::<SocketAddr>() else {
                    continue;
                };
                if a != sa {
                    probe_node(&m.name, a, authority, target).await?;
                }
            }
        }
    }
    Ok(())
}
