//! Purge propagation benchmark (issue 10, proof 1): a topology of N nodes (PoPs of 4 edge boxes
//! and one shield set of 4), the demo origin, and the control plane; each round fills 1,000
//! objects tagged `rR` (through one box of every PoP, so owners and shields store them), purges
//! the tag through the API, and measures the time until every node has applied it (client side:
//! from sending the purge to the API reporting `done`; server side: the last node's ack time
//! minus the acceptance time). Then it checks, through every PoP, that no purged object is
//! served from any cache (the first request after the purge reaches the origin).
//!
//!   cargo run --release -p outpost-control --example purge_bench -- inprocess 20 1000 10
//!   cargo run --release -p outpost-control --example purge_bench -- nats 20 1000 10 target/release/outpost
//!
//! `nats` runs every node as its own `outpost node --bus` process and needs `nats-server`.
//! Everything listens on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use outpost_config::Config;
use outpost_control::{agent, Bus, ControlOptions, InProcessBus};
use outpost_testkit::{free_port, http_request};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_else(|| "inprocess".into());
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let objects: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(10);
    let bin = args
        .get(5)
        .cloned()
        .unwrap_or_else(|| "target/release/outpost".into());
    let shields = 4.min(n / 5).max(1);
    let edges = n - shields;
    let pops = edges.div_ceil(4);

    // The demo origin.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    tokio::spawn(async move { outpost_demo::serve(l).await });

    // The topology.
    let mut toml = String::from("[store]\nram_bytes = \"64M\"\n[topology]\n");
    let mut members = Vec::new();
    for p in 0..pops {
        toml.push_str(&format!(
            "[[topology.pop]]\nname = \"p{p}\"\nregion = \"r{p}\"\n"
        ));
        for b in 0..4 {
            let i = p * 4 + b;
            if i >= edges {
                break;
            }
            let name = format!("e{p}{}", (b'a' + b as u8) as char);
            let port = free_port();
            toml.push_str(&format!(
                "[[topology.pop.box]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nmetrics = \"\"\n"
            ));
            members.push((name, port, Some(p)));
        }
    }
    toml.push_str("[[topology.shield_set]]\nname = \"shields\"\nregion = \"r0\"\n");
    for s in 0..shields {
        let name = format!("s{s}");
        let port = free_port();
        toml.push_str(&format!(
            "[[topology.shield_set.box]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nmetrics = \"\"\n"
        ));
        members.push((name, port, None));
    }
    toml.push_str(&format!(
        "[[tenant]]\nname = \"demo\"\nhostnames = [\"demo.localhost\"]\norigins = [\"http://{origin}\"]\nshield = \"shields\"\n"
    ));
    let world = Config::parse_toml(&toml).unwrap();
    let dir = std::env::temp_dir().join(format!("outpost-purge-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let world_file = dir.join("world.toml");
    std::fs::write(&world_file, &toml).unwrap();

    let mut children = Kill(Vec::new());
    let mut in_process = Vec::new();
    let bus: Arc<dyn Bus> = if mode == "nats" {
        let port = free_port();
        children.0.push(
            Command::new(if std::path::Path::new("/usr/sbin/nats-server").exists() {
                "/usr/sbin/nats-server"
            } else {
                "nats-server"
            })
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server"),
        );
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        for (name, _, _) in &members {
            children.0.push(
                Command::new(&bin)
                    .args(["node", "--config"])
                    .arg(&world_file)
                    .args(["--name", name, "--bus", &url])
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("outpost node"),
            );
        }
        Arc::new(
            outpost_control::nats::NatsBus::connect(&url, 1)
                .await
                .unwrap(),
        )
    } else {
        let bus = Arc::new(InProcessBus::new());
        for (name, _, _) in &members {
            let cfg = world.for_member(name).unwrap();
            let running = outpost_proxy::start(&cfg).await.unwrap();
            agent::spawn(&running, cfg, bus.clone());
            in_process.push(running);
        }
        bus
    };
    for (_, port, _) in &members {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(Instant::now() < deadline, "node on {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut opts = ControlOptions::new("127.0.0.1:0", world.clone());
    opts.rate = 1e6;
    opts.burst = 1e6;
    let control = outpost_control::start(opts, bus).await.unwrap();
    let auth = format!("Bearer {}", control.new_admin_key.clone().unwrap());
    let api = |method: &'static str, path: String, body: Option<Value>| {
        let auth = auth.clone();
        let addr = control.addr;
        async move {
            let b = body.map(|b| b.to_string()).unwrap_or_default();
            let r = http_request(
                addr,
                method,
                "c",
                &path,
                &[("Authorization", &auth)],
                b.as_bytes(),
            )
            .await
            .unwrap();
            serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null)
        }
    };
    // Every node has applied the seed config and been heard from.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = api("GET", "/api/v1/nodes".into(), None).await;
        let ok = v["nodes"].as_array().is_some_and(|a| {
            a.len() == members.len() && a.iter().all(|n| n["behind"] == 0 && n["live"] == true)
        });
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "nodes not ready: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let entry_boxes: Vec<SocketAddr> = (0..pops)
        .filter_map(|p| members.iter().find(|m| m.2 == Some(p)))
        .map(|m| SocketAddr::from(([127, 0, 0, 1], m.1)))
        .collect();
    // GET every object through every entry box, 64 at a time; the Cache-Status of each.
    let sweep = |tag: String, boxes: Vec<SocketAddr>| {
        let client = client.clone();
        async move {
            let jobs: Vec<(SocketAddr, usize)> = boxes
                .iter()
                .flat_map(|b| (0..objects).map(move |i| (*b, i)))
                .collect();
            let jobs = Arc::new(std::sync::Mutex::new(jobs));
            let mut tasks = Vec::new();
            for _ in 0..64 {
                let (jobs, client, tag) = (jobs.clone(), client.clone(), tag.clone());
                tasks.push(tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    loop {
                        let Some((addr, i)) = jobs.lock().unwrap().pop() else {
                            return statuses;
                        };
                        let req =
                            http::Request::get(format!("http://{addr}/tagged/{tag}/k{i}-200"))
                                .header("host", "demo.localhost")
                                .body(Empty::new())
                                .unwrap();
                        let resp = client.request(req).await.unwrap();
                        let cs = resp
                            .headers()
                            .get("cache-status")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let status = resp.status().as_u16();
                        let _ = resp.into_body().collect().await;
                        statuses.push((status, cs));
                    }
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        }
    };

    let (mut client_ms, mut server_ms) = (Vec::new(), Vec::new());
    let mut served_stale = 0usize;
    for r in 0..rounds {
        let tag = format!("r{r}");
        let filled = sweep(tag.clone(), entry_boxes.clone()).await;
        assert!(filled.iter().all(|(s, _)| *s == 200));
        let t0 = Instant::now();
        let v = api(
            "POST",
            "/api/v1/purge".into(),
            Some(json!({"tenant": "demo", "tags": [tag]})),
        )
        .await;
        let id = v["purge_id"].as_str().expect("purge accepted").to_string();
        let status = loop {
            let s = api("GET", format!("/api/v1/purge/{id}"), None).await;
            if s["status"] == "done" {
                break s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "purge not done: {s}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let c_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let s_ms = status["time_to_last_node_ms"].as_f64().unwrap_or(f64::NAN);
        client_ms.push(c_ms);
        server_ms.push(s_ms);
        // Every object's first request after the purge, PoP by PoP: no tier may answer it from a
        // copy made before the purge. The first PoP's requests reach the origin (no member of
        // Cache-Status is a hit); later PoPs may hit the shield's new copy, never an edge's.
        let mut stale = 0;
        for (p, b) in entry_boxes.iter().enumerate() {
            for (_, cs) in sweep(tag.clone(), vec![*b]).await {
                stale += cs
                    .split(", ")
                    .filter(|m| p == 0 || m.starts_with('e'))
                    .filter(|m| m.contains("; hit"))
                    .count()
                    .min(1);
            }
        }
        served_stale += stale;
        eprintln!(
            "round {r}: {} objects tagged, purge done on {} nodes in {c_ms:.1} ms (last ack {s_ms} ms after acceptance); {stale} served from a pre-purge copy",
            filled.len(),
            status["nodes_applied"]
        );
    }
    let result = format!(
        "| {mode} | {} nodes | {objects} objects/tag | {rounds} rounds | client p50 {:.1} ms, p99 {:.1} ms | last-ack p50 {:.1} ms, p99 {:.1} ms | pre-purge copies served: {served_stale} |",
        members.len(),
        pct(&mut client_ms.clone(), 0.5),
        pct(&mut client_ms, 0.99),
        pct(&mut server_ms.clone(), 0.5),
        pct(&mut server_ms, 0.99),
    );
    println!("{result}");
    drop(children);
    drop(in_process);
    let _ = std::fs::remove_dir_all(&dir);
    if served_stale > 0 {
        std::process::exit(1);
    }
}
