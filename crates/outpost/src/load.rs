//! `outpost load`: replay a trace (`outpost sim` CSV) or a synthetic Zipf workload against a
//! running CDN (the `--addr-file` of `outpost up`, with clients in each region sending to their
//! region's edges) or any URL base, and report per region and per tier: requests, hit ratios,
//! origin requests, p50/p99 latency and errors, with a live progress line and a final table
//! (`--json` for scripts).
//!
//! Request `i` of the workload goes to region `i mod R` (and, within it, to the next edge in
//! turn) as `GET /obj/KEY-SIZE`, which the demo origin answers with SIZE bytes. The tier that
//! served each request is read from its `Cache-Status` (RFC 9211: the member nearest the origin
//! first): the first member, from the origin's side, that is a `hit` (or `collapsed` onto a fill
//! there) served it; none means the origin did. Members are told apart by the node names and
//! roles of the address file.

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use outpost_sim::gen::{generate, GenConfig};
use outpost_sim::trace::Trace;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run (the flags of `outpost load`).
#[derive(clap::Args)]
pub struct LoadOptions {
    /// The JSON `outpost up --addr-file` wrote.
    #[arg(long, conflicts_with = "url")]
    pub addr_file: Option<PathBuf>,
    /// Or one base URL (http://host:port).
    #[arg(long)]
    pub url: Option<String>,
    /// Trace CSV (`outpost sim gen`); default: a synthetic Zipf workload.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Synthetic workload: Zipf exponent.
    #[arg(long, default_value_t = 0.8)]
    pub zipf: f64,
    /// Synthetic workload: catalogue size.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Synthetic workload: requests.
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// Synthetic workload: seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Concurrent clients per region.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Host header of the requests.
    #[arg(long, default_value = "demo.localhost")]
    pub host: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where one region's clients send their requests.
struct Region {
    name: String,
    edges: Vec<SocketAddr>,
}

/// Node name → role, from the address file.
type Roles = HashMap<String, String>;

/// Which tier served a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    Edge,
    Shield,
    Origin,
}

#[derive(Default)]
struct RegionStats {
    requests: u64,
    errors: u64,
    edge_hits: u64,
    shield_requests: u64,
    shield_hits: u64,
    origin: u64,
    latencies_us: Vec<u32>,
}

/// The tier that served a response, from its `Cache-Status` members (origin side first).
fn served_by(cache_status: &str, roles: &Roles) -> (Served, bool) {
    let mut reached_shield = false;
    for member in cache_status.split(',') {
        let mut params = member.split(';').map(str::trim);
        let name = params.next().unwrap_or("").trim_matches('"');
        let role = roles.get(name).map_or("edge", String::as_str);
        if role == "shield" {
            reached_shield = true;
        }
        let served = params.any(|p| p == "hit" || p == "collapsed");
        if served {
            return (
                if role == "shield" {
                    Served::Shield
                } else {
                    Served::Edge
                },
                reached_shield,
            );
        }
    }
    (Served::Origin, reached_shield)
}

fn read_addr_file(path: &PathBuf) -> Result<(Vec<Region>, Roles), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--addr-file {}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("--addr-file {}: {e}", path.display()))?;
    let nodes = v["nodes"]
        .as_array()
        .ok_or_else(|| format!("--addr-file {}: no \"nodes\" list", path.display()))?;
    let mut roles = Roles::new();
    let mut regions: Vec<Region> = Vec::new();
    for n in nodes {
        let (Some(name), Some(role), Some(region), Some(http)) = (
            n["name"].as_str(),
            n["role"].as_str(),
            n["region"].as_str(),
            n["http"].as_str(),
        ) else {
            return Err(format!(
                "--addr-file {}: a node lacks name, role, region or http",
                path.display()
            ));
        };
        roles.insert(name.to_string(), role.to_string());
        if role != "edge" {
            continue;
        }
        let addr: SocketAddr = http
            .parse()
            .map_err(|_| format!("--addr-file: node {name}: bad http address {http:?}"))?;
        match regions.iter_mut().find(|r| r.name == region) {
            Some(r) => r.edges.push(addr),
            None => regions.push(Region {
                name: region.to_string(),
                edges: vec![addr],
            }),
        }
    }
    if regions.is_empty() {
        return Err(format!("--addr-file {}: no edge nodes", path.display()));
    }
    Ok((regions, roles))
}

fn url_region(url: &str) -> Result<Region, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {url:?}: must start with http://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .map_err(|e| format!("--url {url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url:?}: no address"))?;
    Ok(Region {
        name: "all".into(),
        edges: vec![addr],
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

/// Run the load and print the report.
pub async fn run(o: LoadOptions) -> Result<(), String> {
    let (regions, roles) = match (&o.addr_file, &o.url) {
        (Some(p), _) => read_addr_file(p)?,
        (None, Some(u)) => (vec![url_region(u)?], Roles::new()),
        (None, None) => return Err("load needs --addr-file PATH or --url URL".into()),
    };
    if o.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let trace = match &o.trace {
        Some(p) => Trace::read_csv(p).map_err(|e| format!("--trace {}: {e}", p.display()))?,
        None => generate(&GenConfig {
            zipf: o.zipf,
            keys: o.keys,
            requests: o.requests,
            seed: o.seed,
            ..GenConfig::default()
        })
        .map_err(|e| e.to_string())?,
    };
    let total = trace.requests.len();
    if total == 0 {
        return Err("the workload has no requests".into());
    }
    let trace = Arc::new(trace);
    let roles = Arc::new(roles);
    let r_count = regions.len();
    let stats: Arc<Vec<Mutex<RegionStats>>> = Arc::new(
        (0..r_count)
            .map(|_| Mutex::new(RegionStats::default()))
            .collect(),
    );
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (ri, region) in regions.iter().enumerate() {
        // This region's requests: i ≡ ri (mod R), taken in order by its clients.
        let next = Arc::new(AtomicUsize::new(0));
        let mine = (total + r_count - 1 - ri) / r_count;
        for _ in 0..o.concurrency {
            let (trace, roles, stats, done, errors, next, client) = (
                trace.clone(),
                roles.clone(),
                stats.clone(),
                done.clone(),
                errors.clone(),
                next.clone(),
                client.clone(),
            );
            let edges = region.edges.clone();
            let host = o.host.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let j = next.fetch_add(1, Relaxed);
                    if j >= mine {
                        return;
                    }
                    let req = trace.requests[j * r_count + ri];
                    let edge = edges[j % edges.len()];
                    let uri: Uri =
                        match format!("http://{edge}/obj/{}-{}", req.key, req.size).parse() {
                            Ok(u) => u,
                            Err(_) => continue,
                        };
                    let mut r = Request::new(Empty::<Bytes>::new());
                    *r.uri_mut() = uri;
                    if let Ok(h) = http::HeaderValue::from_str(&host) {
                        r.headers_mut().insert(http::header::HOST, h);
                    }
                    let t0 = Instant::now();
                    let result = tokio::time::timeout(Duration::from_secs(30), async {
                        let resp = client.request(r).await?;
                        let cs = resp
                            .headers()
                            .get_all("cache-status")
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .collect::<Vec<_>>()
                            .join(",");
                        let ok = resp.status().is_success();
                        let body = resp.into_body().collect().await;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((ok && body.is_ok(), cs))
                    })
                    .await;
                    let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    let mut s = stats[ri].lock().unwrap_or_else(|p| p.into_inner());
                    s.requests += 1;
                    s.latencies_us.push(us);
                    match result {
                        Ok(Ok((true, cs))) => {
                            let (served, reached_shield) = served_by(&cs, &roles);
                            match served {
                                Served::Edge => s.edge_hits += 1,
                                Served::Shield => {
                                    s.shield_requests += 1;
                                    s.shield_hits += 1;
                                }
                                Served::Origin => {
                                    if reached_shield {
                                        s.shield_requests += 1;
                                    }
                                    s.origin += 1;
                                }
                            }
                        }
                        _ => {
                            s.errors += 1;
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                    drop(s);
                    done.fetch_add(1, Relaxed);
                }
            }));
        }
    }
    let progress = {
        let (done, errors) = (done.clone(), errors.clone());
        let tty = std::io::stderr().is_terminal();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(if tty { 200 } else { 2000 })).await;
                let d = done.load(Relaxed);
                let rate = d as f64 / started.elapsed().as_secs_f64().max(1e-3);
                let width = 30;
                let filled = (d as usize * width / total).min(width);
                let line = format!(
                    "[{}{}] {d}/{total} {:.0} req/s, {} errors",
                    "#".repeat(filled),
                    ".".repeat(width - filled),
                    rate,
                    errors.load(Relaxed)
                );
                if tty {
                    eprint!("\r{line}");
                } else if d != last {
                    eprintln!("{line}");
                }
                last = d;
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    let mut all = RegionStats::default();
    for (region, s) in regions.iter().zip(stats.iter()) {
        let mut s = std::mem::take(&mut *s.lock().unwrap_or_else(|p| p.into_inner()));
        s.latencies_us.sort_unstable();
        all.requests += s.requests;
        all.errors += s.errors;
        all.edge_hits += s.edge_hits;
        all.shield_requests += s.shield_requests;
        all.shield_hits += s.shield_hits;
        all.origin += s.origin;
        all.latencies_us.extend_from_slice(&s.latencies_us);
        rows.push((region.name.clone(), s));
    }
    all.latencies_us.sort_unstable();
    rows.push(("total".into(), all));
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    if o.json {
        let regions: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, s)| {
                serde_json::json!({
                    "region": name,
                    "requests": s.requests,
                    "errors": s.errors,
                    "edge_hit_ratio": ratio(s.edge_hits, s.requests - s.errors),
                    "shield_requests": s.shield_requests,
                    "shield_hit_ratio": ratio(s.shield_hits, s.shield_requests),
                    "origin_requests": s.origin,
                    "origin_fraction": ratio(s.origin, s.requests - s.errors),
                    "p50_ms": percentile(&s.latencies_us, 0.5),
                    "p99_ms": percentile(&s.latencies_us, 0.99),
                })
            })
            .collect();
        let out = serde_json::json!({
            "seconds": elapsed,
            "requests_per_second": total as f64 / elapsed.max(1e-9),
            "regions": regions,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{total} requests in {elapsed:.1} s ({:.0} req/s), {} clients per region",
        total as f64 / elapsed.max(1e-9),
        o.concurrency
    );
    println!(
        "{:<8} {:>9} {:>7} {:>10} {:>10} {:>12} {:>10} {:>8} {:>8}",
        "region",
        "requests",
        "errors",
        "edge hit",
        "shield req",
        "shield hit",
        "origin req",
        "p50 ms",
        "p99 ms"
    );
    for (name, s) in &rows {
        println!(
            "{:<8} {:>9} {:>7} {:>9.1}% {:>10} {:>11.1}% {:>10} {:>8.2} {:>8.2}",
            name,
            s.requests,
            s.errors,
            100.0 * ratio(s.edge_hits, s.requests - s.errors),
            s.shield_requests,
            100.0 * ratio(s.shield_hits, s.shield_requests),
            s.origin,
            percentile(&s.latencies_us, 0.5),
            percentile(&s.latencies_us, 0.99),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_nearest_the_origin_that_hit_served_it() {
        let roles: Roles = [("s1", "shield"), ("e1", "edge"), ("e2", "edge")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let cs = "s1; hit; ttl=10, e1; fwd=uri-miss; stored, e2; fwd=miss; detail=\"owner e1\"";
        assert!(served_by(cs, &roles) == (Served::Shield, true));
        let cs = "s1; fwd=uri-miss; stored, e1; hit";
        assert!(served_by(cs, &roles) == (Served::Edge, true));
        let cs = "s1; fwd=uri-miss; stored, e1; fwd=uri-miss";
        assert!(served_by(cs, &roles) == (Served::Origin, true));
        assert!(served_by("e1; fwd=uri-miss", &roles) == (Served::Origin, false));
        assert!(served_by("e1; fwd=uri-miss; collapsed", &roles) == (Served::Edge, false));
    }
}
