//! The control plane from the command line: `outpost control` (the control role as its own
//! process, over NATS JetStream) and the API clients `outpost purge`, `outpost tenant` and
//! `outpost nodes`. The clients find the API and key in `--api`/`--key`, in `OUTPOST_API` /
//! `OUTPOST_KEY`, or in the address file `outpost up` writes (`--addr-file`, `OUTPOST_ADDR_FILE`,
//! default `~/.outpost/up.json`), so they work against `outpost up` with no flags.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the API is and which key to use.
#[derive(clap::Args, Clone)]
pub struct ApiFlags {
    /// Control API base URL (default: OUTPOST_API, else the address file's).
    #[arg(long)]
    pub api: Option<String>,
    /// API key (default: OUTPOST_KEY, else the address file's admin key).
    #[arg(long)]
    pub key: Option<String>,
    /// The address file `outpost up` wrote (default: OUTPOST_ADDR_FILE, else ~/.outpost/up.json).
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
}

/// The default address file of `outpost up`.
pub fn default_addr_file() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".outpost").join("up.json"),
        _ => std::env::temp_dir().join("outpost-up.json"),
    }
}

/// The admin address of `outpost up`'s dns node, from its address file, if it runs one.
pub fn up_dns_admin() -> Option<String> {
    let path = std::env::var_os("OUTPOST_ADDR_FILE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_addr_file);
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["dns"]["admin"].as_str().map(str::to_string)
}

/// Write `text` to `path` readable by the owner only (it holds the admin key).
pub fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // An existing file keeps its mode on open: set it.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A client of the control API.
pub struct Api {
    base: String,
    key: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    /// Resolve the API and key from flags, environment and the address file.
    pub fn from_flags(f: &ApiFlags) -> Result<Self, String> {
        let file = f
            .addr_file
            .clone()
            .or_else(|| std::env::var_os("OUTPOST_ADDR_FILE").map(PathBuf::from))
            .unwrap_or_else(default_addr_file);
        let from_file = || -> Result<Value, String> {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                format!(
                    "no control API given (--api, OUTPOST_API) and cannot read {}: {e} (is `outpost up` running?)",
                    file.display()
                )
            })?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut doc: Option<Value> = None;
        let mut field = |name: &str| -> Result<String, String> {
            if doc.is_none() {
                doc = Some(from_file()?);
            }
            doc.as_ref()
                .and_then(|d| d["control"][name].as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("{} has no control.{name}", file.display()))
        };
        let base = match f.api.clone().or_else(|| env("OUTPOST_API")) {
            Some(b) => b,
            None => field("api")?,
        };
        let key = match f.key.clone().or_else(|| env("OUTPOST_KEY")) {
            Some(k) => k,
            None => field("admin_key")?,
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            key,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Send a request; the status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let uri = format!("{}{path}", self.base);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(&uri)
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| format!("{uri}: {e}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| format!("{uri}: timed out"))?
            .map_err(|e| format!("{uri}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{uri}: {e}"))?
            .to_bytes();
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// Like [`Api::call`], an error unless 2xx.
    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let (status, v) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(format!(
                "{status}: {}",
                v["error"]["message"].as_str().unwrap_or("(no message)")
            ))
        }
    }
}

/// Flags of `outpost purge`.
#[derive(clap::Args)]
pub struct PurgeArgs {
    /// Purge this URL with all its variants (repeatable).
    #[arg(long)]
    pub url: Vec<String>,
    /// Purge every URL under this prefix, e.g. http://shop.example/img/ (repeatable).
    #[arg(long)]
    pub prefix: Vec<String>,
    /// Purge every object with this surrogate-key tag (repeatable; needs --tenant with the admin key).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Purge a whole hostname (repeatable).
    #[arg(long)]
    pub host: Vec<String>,
    /// Purge everything of the tenant.
    #[arg(long)]
    pub everything: bool,
    /// The tenant (default: a tenant key's own; `outpost up`'s tenant is "demo").
    #[arg(long)]
    pub tenant: Option<String>,
    /// Mark stale instead of removing: clients get the old copy while one revalidation
    /// refreshes it.
    #[arg(long)]
    pub soft: bool,
    /// Return once accepted instead of waiting for every node.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub api: ApiFlags,
}

/// `outpost purge`.
pub async fn purge(a: PurgeArgs) -> Result<(), String> {
    let api = Api::from_flags(&a.api)?;
    let mut body = json!({
        "urls": a.url, "prefixes": a.prefix, "tags": a.tag, "hosts": a.host,
        "everything": a.everything, "soft": a.soft,
    });
    let needs_tenant = !a.tag.is_empty() || !a.host.is_empty() || a.everything;
    match &a.tenant {
        Some(t) => body["tenant"] = json!(t),
        // With one tenant (as `outpost up` has), it is the one meant.
        None if needs_tenant => {
            let list = api.ok(Method::GET, "/api/v1/tenants", None).await?;
            if let [only] = list["tenants"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                body["tenant"] = only["name"].clone();
            }
        }
        None => {}
    }
    let started = Instant::now();
    let accepted = api.ok(Method::POST, "/api/v1/purge", Some(&body)).await?;
    let id = accepted["purge_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("purge {id} accepted (log seq {})", accepted["seq"]);
    if a.no_wait {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = api
            .ok(Method::GET, &format!("/api/v1/purge/{id}"), None)
            .await?;
        if s["status"] == "done" || Instant::now() > deadline {
            for n in s["nodes"].as_array().into_iter().flatten() {
                println!(
                    "  {:<16} {:<10} {}",
                    n["node"].as_str().unwrap_or("?"),
                    if n["applied"] == true {
                        "applied"
                    } else {
                        "pending"
                    },
                    n["ms_after_issue"]
                        .as_u64()
                        .map(|m| format!("{m} ms"))
                        .unwrap_or_default()
                );
            }
            if s["status"] == "done" {
                println!(
                    "done on {} nodes; last node {} ms after the purge was accepted",
                    s["nodes_applied"], s["time_to_last_node_ms"]
                );
                return Ok(());
            }
            return Err(format!(
                "not applied everywhere after {:.0} s ({} of {} nodes)",
                started.elapsed().as_secs_f64(),
                s["nodes_applied"],
                s["nodes_total"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `outpost tenant ...`.
#[derive(clap::Subcommand)]
pub enum TenantCmd {
    /// List tenants.
    List {
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Show one tenant's config (JSON).
    Get {
        /// Tenant name.
        name: String,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Create a tenant from a JSON document (`-` for stdin).
    Create {
        /// JSON file: {"name":..., "hostnames":[...], "origins":[...], "cache":{...}, "rule":[...]}.
        file: PathBuf,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Replace a tenant's config with a JSON document (`-` for stdin).
    Update {
        /// Tenant name.
        name: String,
        /// JSON file.
        file: PathBuf,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Delete a tenant.
    Delete {
        /// Tenant name.
        name: String,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Upload a tenant's TLS certificate chain and key (PEM files); every edge's HTTPS
    /// listener serves it within seconds. The key is never shown again.
    Cert {
        /// Tenant name.
        name: String,
        /// Certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Private key (PEM).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Config versions, newest first, with their rollout state.
    Versions {
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Create an API key for a tenant (printed once).
    Key {
        /// Tenant name.
        name: String,
        #[command(flatten)]
        api: ApiFlags,
    },
}

/// How a new version will roll out, from the API's answer.
fn rollout_note(v: &Value) -> String {
    match v["rollout"]["canary"].as_str() {
        Some(pop) => format!(
            " (PoP {pop} first; everywhere after {} s unless it regresses: outpost tenant versions)",
            v["rollout"]["watch_ms"].as_u64().unwrap_or(0) / 1000
        ),
        None => String::new(),
    }
}

fn read_doc(path: &Path) -> Result<Value, String> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| e.to_string())?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
    };
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `outpost tenant`.
pub async fn tenant(cmd: TenantCmd) -> Result<(), String> {
    match cmd {
        TenantCmd::List { api } => {
            let v = Api::from_flags(&api)?
                .ok(Method::GET, "/api/v1/tenants", None)
                .await?;
            println!("{:<16} {:<40} origins", "tenant", "hostnames");
            for t in v["tenants"].as_array().into_iter().flatten() {
                let list = |k: &str| {
                    t[k].as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                };
                println!(
                    "{:<16} {:<40} {}",
                    t["name"].as_str().unwrap_or(""),
                    list("hostnames"),
                    list("origins")
                );
            }
        }
        TenantCmd::Get { name, api } => {
            let v = Api::from_flags(&api)?
                .ok(Method::GET, &format!("/api/v1/tenants/{name}"), None)
                .await?;
            println!("{}", pretty(&v));
        }
        TenantCmd::Create { file, api } => {
            let doc = read_doc(&file)?;
            let v = Api::from_flags(&api)?
                .ok(Method::POST, "/api/v1/tenants", Some(&doc))
                .await?;
            println!(
                "created; config version {}{}",
                v["version"],
                rollout_note(&v)
            );
        }
        TenantCmd::Update { name, file, api } => {
            let doc = read_doc(&file)?;
            let v = Api::from_flags(&api)?
                .ok(Method::PUT, &format!("/api/v1/tenants/{name}"), Some(&doc))
                .await?;
            println!(
                "updated; config version {}{}",
                v["version"],
                rollout_note(&v)
            );
        }
        TenantCmd::Delete { name, api } => {
            let v = Api::from_flags(&api)?
                .ok(Method::DELETE, &format!("/api/v1/tenants/{name}"), None)
                .await?;
            println!(
                "deleted; config version {}{}",
                v["version"],
                rollout_note(&v)
            );
        }
        TenantCmd::Versions { api } => {
            let v = Api::from_flags(&api)?
                .ok(Method::GET, "/api/v1/versions", None)
                .await?;
            println!("{:>7}  {:<12} reason", "version", "rollout");
            for x in v["versions"].as_array().into_iter().flatten() {
                let state = x["rollout"]["state"].as_str().unwrap_or("everywhere");
                println!(
                    "{:>7}  {:<12} {}{}",
                    x["version"].as_u64().unwrap_or(0),
                    state,
                    x["reason"].as_str().unwrap_or(""),
                    x["rollout"]["reason"]
                        .as_str()
                        .map(|r| format!(" — {r}"))
                        .unwrap_or_default()
                );
            }
        }
        TenantCmd::Cert {
            name,
            cert,
            key,
            api,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
            };
            let body = serde_json::json!({"cert_pem": read(&cert)?, "key_pem": read(&key)?});
            let v = Api::from_flags(&api)?
                .ok(
                    Method::PUT,
                    &format!("/api/v1/tenants/{name}/certificate"),
                    Some(&body),
                )
                .await?;
            println!(
                "certificate stored; config version {}{}",
                v["version"],
                rollout_note(&v)
            );
        }
        TenantCmd::Key { name, api } => {
            let v = Api::from_flags(&api)?
                .ok(Method::POST, &format!("/api/v1/tenants/{name}/keys"), None)
                .await?;
            println!("{}", v["key"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

/// `outpost nodes`: every node's log position.
pub async fn nodes(api: ApiFlags) -> Result<(), String> {
    let v = Api::from_flags(&api)?
        .ok(Method::GET, "/api/v1/nodes", None)
        .await?;
    println!("log at seq {}", v["log_seq"]);
    println!(
        "{:<16} {:>8} {:>7} {:>10}",
        "node", "applied", "behind", "seen"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let num = |k: &str| n[k].as_u64().unwrap_or(0);
        println!(
            "{:<16} {:>8} {:>7} {:>8}ms{}",
            n["node"].as_str().unwrap_or(""),
            num("applied"),
            num("behind"),
            num("seen_ms_ago"),
            if n["live"] == true { "" } else { "  (down?)" }
        );
    }
    Ok(())
}

/// Flags of `outpost control`.
#[derive(clap::Args)]
pub struct ControlArgs {
    /// API listen address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Control store file (SQLite).
    #[arg(long, default_value = "outpost-control.db")]
    pub db: PathBuf,
    /// NATS servers (comma-separated nats://host:port of one cluster).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub bus: String,
    /// Copies of the log stream (3 on a 3-server JetStream cluster).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// A node config or topology (TOML) tenants are validated against and, on first start,
    /// seeded from.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write {"control":{"api":..., "admin_key":...}} here (mode 0600) once listening.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Print the API's OpenAPI document and exit.
    #[arg(long)]
    pub openapi: bool,
    /// Roll new config versions out to this PoP first (none: everywhere at once).
    #[arg(long)]
    pub canary_pop: Option<String>,
    /// How long the canary PoP is watched before promotion or rollback.
    #[arg(long, default_value = "60s")]
    pub canary_watch: String,
}

/// `outpost control`: the control role over NATS JetStream.
#[cfg(feature = "nats")]
pub async fn control(a: ControlArgs) -> Result<(), String> {
    if a.openapi {
        println!("{}", pretty(&outpost_control::openapi::document()));
        return Ok(());
    }
    let template = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            outpost_config::Config::parse_toml(&text).map_err(|e| e.to_string())?
        }
        None => outpost_config::Config::default(),
    };
    let bus = outpost_control::nats::NatsBus::connect(&a.bus, a.replicas)
        .await
        .map_err(|e| e.to_string())?;
    let watch = outpost_config::Dur::parse(&a.canary_watch)
        .map_err(|e| format!("--canary-watch: {e}"))?
        .0;
    let mut opts = outpost_control::ControlOptions::new(&a.listen, template);
    opts.db = Some(a.db.clone());
    opts.canary = a
        .canary_pop
        .as_deref()
        .map(|p| outpost_control::CanaryOptions::new(p, watch));
    opts.admin_key = std::env::var("OUTPOST_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let running = outpost_control::start(opts, std::sync::Arc::new(bus)).await?;
    let key = running
        .new_admin_key
        .clone()
        .or_else(|| std::env::var("OUTPOST_ADMIN_KEY").ok());
    eprintln!(
        "outpost control: API http://{} (bus {}, store {})",
        running.addr,
        a.bus,
        a.db.display()
    );
    match &key {
        Some(k) if running.new_admin_key.is_some() => eprintln!("  admin key (shown once): {k}"),
        _ => eprintln!("  admin key: the one created on first start (or OUTPOST_ADMIN_KEY)"),
    }
    if let Some(f) = &a.addr_file {
        let doc = json!({"control": {"api": format!("http://{}", running.addr), "admin_key": key}});
        write_private(f, &doc.to_string())?;
    }
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

/// Flags of `outpost warm`.
#[derive(clap::Args)]
pub struct WarmArgs {
    /// A URL to fetch (repeatable).
    #[arg(long, required = true)]
    pub url: Vec<String>,
    /// A region whose edges fetch them (repeatable; default: every region).
    #[arg(long)]
    pub region: Vec<String>,
    #[command(flatten)]
    pub api: ApiFlags,
}

/// `outpost warm`: start a warm job and show its progress until every edge is done.
pub async fn warm(a: WarmArgs) -> Result<(), String> {
    use std::io::{IsTerminal, Write};
    let api = Api::from_flags(&a.api)?;
    let body = json!({"urls": a.url, "regions": a.region});
    let accepted = api.ok(Method::POST, "/api/v1/warm", Some(&body)).await?;
    let id = accepted["warm_id"].as_str().unwrap_or_default().to_string();
    eprintln!("warm {id} accepted");
    let tty = std::io::stderr().is_terminal();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = api
            .ok(Method::GET, &format!("/api/v1/warm/{id}"), None)
            .await?;
        let (done, failed, total) = (
            s["fetched"].as_u64().unwrap_or(0),
            s["failed"].as_u64().unwrap_or(0),
            s["to_fetch"].as_u64().unwrap_or(0),
        );
        if tty {
            let width = 30;
            let filled = ((done + failed) * width)
                .checked_div(total)
                .unwrap_or(0)
                .min(width) as usize;
            eprint!(
                "\r  [{}{}] {}/{} fetched, {} failed",
                "#".repeat(filled),
                ".".repeat(width as usize - filled.min(width as usize)),
                done,
                total,
                failed
            );
            let _ = std::io::stderr().flush();
        }
        if s["status"] == "done" {
            if tty {
                eprintln!();
            }
            for n in s["nodes"].as_array().into_iter().flatten() {
                println!(
                    "  {:<16} {:<8} {} fetched, {} failed",
                    n["node"].as_str().unwrap_or("?"),
                    n["region"].as_str().unwrap_or(""),
                    n["done"].as_u64().unwrap_or(0),
                    n["failed"].as_u64().unwrap_or(0)
                );
            }
            println!("done: {done} of {total} fetched, {failed} failed");
            return if failed == 0 {
                Ok(())
            } else {
                Err(format!("{failed} fetches failed"))
            };
        }
        if Instant::now() > deadline {
            return Err(format!("not done after 10 minutes ({done}/{total})"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Flags of `outpost stats`.
#[derive(clap::Args)]
pub struct StatsArgs {
    /// The tenant (default: every tenant; a tenant key's own).
    #[arg(long)]
    pub tenant: Option<String>,
    /// 1h or 24h.
    #[arg(long, default_value = "1h")]
    pub period: String,
    /// Print the API's JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiFlags,
}

/// `outpost stats`: requests, hit ratio, bytes and latency by PoP, region and time.
pub async fn stats(a: StatsArgs) -> Result<(), String> {
    let api = Api::from_flags(&a.api)?;
    let mut path = format!("/api/v1/analytics?period={}", a.period);
    if let Some(t) = &a.tenant {
        path.push_str(&format!("&tenant={t}"));
    }
    let v = api.ok(Method::GET, &path, None).await?;
    if a.json {
        println!("{}", pretty(&v));
        return Ok(());
    }
    let row = |label: &str, x: &Value| {
        let ratio = x["hit_ratio"]
            .as_f64()
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "-".into());
        let ms = |k: &str| {
            x["latency_ms"][k]
                .as_f64()
                .map(|m| format!("{m:.2}"))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<22} {:>9} {:>7} {:>12} {:>12} {:>8} {:>8} {:>6} {:>6}",
            label,
            x["requests"].as_u64().unwrap_or(0),
            ratio,
            x["bytes_out"].as_u64().unwrap_or(0),
            x["origin_bytes"].as_u64().unwrap_or(0),
            ms("p50"),
            ms("p99"),
            x["status"]["4xx"].as_u64().unwrap_or(0),
            x["status"]["5xx"].as_u64().unwrap_or(0),
        );
    };
    println!(
        "tenant {} over the last {}",
        v["tenant"].as_str().unwrap_or("(all)"),
        a.period
    );
    println!(
        "{:<22} {:>9} {:>7} {:>12} {:>12} {:>8} {:>8} {:>6} {:>6}",
        "", "requests", "hits", "bytes out", "origin bytes", "p50 ms", "p99 ms", "4xx", "5xx"
    );
    row("total", &v);
    for r in v["by_region"].as_array().into_iter().flatten() {
        row(&format!("region {}", r["region"].as_str().unwrap_or("")), r);
    }
    for p in v["by_pop"].as_array().into_iter().flatten() {
        row(&format!("  pop {}", p["pop"].as_str().unwrap_or("")), p);
    }
    Ok(())
}
