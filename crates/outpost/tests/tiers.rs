//! The CDN hierarchy with real processes on 127.0.0.1: every node is its own `outpost node
//! --config topology.toml --name NAME` process, the origin is the test kit's, and the tests
//! assert on what clients got and what the origin saw.
//!
//! - a stampede over 3 PoPs × 2 boxes and 2 shields reaches the origin once;
//! - `kill -9` of a shield under load: its sibling takes over, the origin sees at most the dead
//!   shield's keys again, and the restarted shield rejoins ramping up;
//! - `kill -9` of one of 4 boxes in a PoP: the PoP keeps serving, and only the dead box's keys
//!   are fetched again (no key moves between surviving boxes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_testkit::{http_get, RouteSpec, TestOrigin};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free port below the ephemeral range (32768 and up), so that no outgoing connection of
/// another node takes it between now and the moment its node binds it. Ports are handed out
/// from a counter, so the tests of this file (run in parallel) never pick the same one.
fn free_addr() -> SocketAddr {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = 20_000 + (u64::from(std::process::id()) % 400) * 25;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (port - 20_000) % 12_000;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().unwrap();
        }
    }
}

struct Member {
    name: String,
    http: SocketAddr,
    metrics: SocketAddr,
}

impl Member {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            http: free_addr(),
            metrics: free_addr(),
        }
    }
}

/// A topology of PoPs and one shield set, written to a file, with one process per node.
struct World {
    dir: PathBuf,
    config: PathBuf,
    pops: Vec<Vec<Member>>,
    shields: Vec<Member>,
    procs: Vec<(String, Child)>,
}

impl World {
    fn new(test: &str, pops: &[usize], shields: usize, origin: &str) -> World {
        Self::with_hot(test, pops, shields, origin, 0)
    }

    fn with_hot(test: &str, pops: &[usize], shields: usize, origin: &str, hot: u32) -> World {
        let dir = std::env::temp_dir().join(format!("outpost-tiers-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pops: Vec<Vec<Member>> = pops
            .iter()
            .enumerate()
            .map(|(p, n)| {
                (0..*n)
                    .map(|b| Member::new(&format!("pop{p}-box{b}")))
                    .collect()
            })
            .collect();
        let shields: Vec<Member> = (0..shields)
            .map(|i| Member::new(&format!("shield-{i}")))
            .collect();
        let member = |m: &Member| {
            format!(
                "[[topology.{{}}.box]]\nname = \"{}\"\nlisten = \"{}\"\nmetrics = \"{}\"\n",
                m.name, m.http, m.metrics
            )
        };
        let toml = String::from(
            "[node]\nname = \"pop0-box0\"\ndrain_timeout = \"1s\"\n\n[store]\nram_bytes = \"64M\"\n\n\
             [topology]\nramp_up = \"3s\"\nhot_key_rps = HOT\nhealth_interval = \"200ms\"\n\
             health_timeout = \"500ms\"\nhealth_fall = 2\nhealth_rise = 2\n\n",
        );
        let mut toml = toml.replace("HOT", &hot.to_string());
        for (p, boxes) in pops.iter().enumerate() {
            toml.push_str(&format!(
                "[[topology.pop]]\nname = \"pop{p}\"\nregion = \"r{p}\"\n"
            ));
            for b in boxes {
                toml.push_str(&member(b).replace("{}", "pop"));
            }
            toml.push('\n');
        }
        if !shields.is_empty() {
            toml.push_str("[[topology.shield_set]]\nname = \"shields\"\nregion = \"r0\"\n");
            for s in &shields {
                toml.push_str(&member(s).replace("{}", "shield_set"));
            }
            toml.push('\n');
        }
        toml.push_str(&format!(
            "[[tenant]]\nname = \"site\"\nhostnames = [\"site.test\"]\norigins = [\"{origin}\"]\n{}\n",
            if shields.is_empty() {
                ""
            } else {
                "shield = \"shields\"\n"
            }
        ));
        let config = dir.join("topology.toml");
        std::fs::write(&config, toml).unwrap();
        World {
            dir,
            config,
            pops,
            shields,
            procs: Vec::new(),
        }
    }

    /// Add `line` to the `[topology]` table (before any node starts).
    fn topology_setting(&self, line: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replacen("[topology]\n", &format!("[topology]\n{line}\n"), 1);
        std::fs::write(&self.config, text).unwrap();
    }

    fn all(&self) -> impl Iterator<Item = &Member> {
        self.shields.iter().chain(self.pops.iter().flatten())
    }

    fn member(&self, name: &str) -> &Member {
        self.all().find(|m| m.name == name).unwrap()
    }

    /// Start `name`'s process and wait for its listener.
    async fn start(&mut self, name: &str) {
        let m = self.member(name);
        let (http, log) = (m.http, self.dir.join(format!("{name}.log")));
        let child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["node", "--config"])
            .arg(&self.config)
            .args(["--name", name])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.procs.push((name.to_string(), child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(http).await.is_err() {
            assert!(Instant::now() < deadline, "{name} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shields first, then boxes.
    async fn start_all(&mut self) {
        let names: Vec<String> = self.all().map(|m| m.name.clone()).collect();
        for n in names {
            self.start(&n).await;
        }
    }

    fn kill9(&mut self, name: &str) {
        let i = self.procs.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut child) = self.procs.remove(i);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn boxes(&self) -> Vec<SocketAddr> {
        self.pops.iter().flatten().map(|m| m.http).collect()
    }

    async fn metrics(&self, name: &str) -> String {
        http_get(self.member(name).metrics, "localhost", "/metrics", &[])
            .await
            .unwrap()
            .text()
    }

    /// The value of the first series of `metric` whose labels contain `labels`.
    async fn metric(&self, name: &str, metric: &str, labels: &str) -> Option<f64> {
        let text = self.metrics(name).await;
        text.lines()
            .filter(|l| l.starts_with(metric) && l.contains(labels))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pseudo_random_body(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_over_three_pops_reaches_the_origin_once() {
    stampede("http2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_over_http1_between_tiers_reaches_the_origin_once() {
    stampede("http1").await;
}

async fn stampede(protocol: &str) {
    let origin = TestOrigin::start().await.unwrap();
    let body = pseudo_random_body(64 * 1024);
    origin.route(
        "/cold",
        RouteSpec::ok("", "max-age=600")
            .body(body.clone())
            .count_header(false)
            .delay(Duration::from_millis(300)),
    );
    let mut world = World::new(
        &format!("stampede-{protocol}"),
        &[2, 2, 2],
        2,
        &origin.url(),
    );
    world.topology_setting(&format!("peer_protocol = \"{protocol}\""));
    world.start_all().await;
    let boxes = world.boxes();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let addr = boxes[i % boxes.len()];
        tasks.push(tokio::spawn(async move {
            http_get(addr, "site.test", "/cold", &[]).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap().expect("every request is answered");
        assert_eq!(r.status, 200, "{:?}", r.headers);
        assert!(r.body == body, "a body differs from the origin's");
        ok += 1;
    }
    assert_eq!(ok, 1000);
    assert_eq!(
        origin.hits("/cold"),
        1,
        "1,000 concurrent requests over 6 boxes in 3 PoPs and 2 shields: one origin fetch"
    );
}

/// Per request: seconds since the start and whether it succeeded.
type Results = Arc<Mutex<Vec<(f64, bool)>>>;

/// Load from `workers` tasks over `boxes` until `stop`: (seconds since `t0`, ok) per request.
fn steady_load(
    boxes: Vec<SocketAddr>,
    keys: usize,
    workers: usize,
    headers: &'static [(&'static str, &'static str)],
    stop: Arc<AtomicBool>,
    t0: Instant,
) -> (Results, Vec<tokio::task::JoinHandle<()>>) {
    let results = Arc::new(Mutex::new(Vec::new()));
    let n = Arc::new(AtomicU64::new(0));
    let tasks = (0..workers)
        .map(|_| {
            let (boxes, stop, results, n) =
                (boxes.clone(), stop.clone(), results.clone(), n.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = n.fetch_add(1, Ordering::Relaxed) as usize;
                    let addr = boxes[i % boxes.len()];
                    let path = format!("/k?n={}", (i * 7) % keys);
                    let ok = matches!(
                        http_get(addr, "site.test", &path, headers).await,
                        Ok(r) if r.status == 200
                    );
                    results
                        .lock()
                        .unwrap()
                        .push((t0.elapsed().as_secs_f64(), ok));
                }
            })
        })
        .collect();
    (results, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shield_is_replaced_by_its_sibling_and_rejoins_ramping_up() {
    const KEYS: usize = 60;
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/k",
        RouteSpec::ok("key", "max-age=600").count_header(false),
    );
    let mut world = World::new("shield", &[2], 2, &origin.url());
    world.start_all().await;
    let boxes = world.boxes();
    for k in 0..KEYS {
        let r = http_get(boxes[0], "site.test", &format!("/k?n={k}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(origin.total_hits(), KEYS);
    // Keys only the shield about to die holds: those it fetched from the origin.
    let owned = world
        .metric(
            "shield-1",
            "outpost_origin_fetches_total",
            "tenant=\"site\"",
        )
        .await
        .unwrap() as usize;
    assert!(owned > 0 && owned < KEYS, "both shields hold keys: {owned}");

    // Steady load; every request makes the edge go to its shield again (no-cache).
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let (results, tasks) = steady_load(
        boxes.clone(),
        KEYS,
        8,
        &[("cache-control", "no-cache")],
        stop.clone(),
        t0,
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_at = t0.elapsed().as_secs_f64();
    world.kill9("shield-1");
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let results = results.lock().unwrap().clone();
    let errors = results.iter().filter(|(_, ok)| !ok).count();
    let late_errors = results
        .iter()
        .filter(|(t, ok)| !ok && *t > killed_at + 2.0)
        .count();
    assert!(results.len() > 200, "load ran: {} requests", results.len());
    assert!(
        errors * 100 <= results.len(),
        "{errors} errors in {} requests",
        results.len()
    );
    assert_eq!(late_errors, 0, "no errors 2 s after the kill");
    let extra = origin.total_hits() - KEYS;
    assert!(
        extra <= owned,
        "the origin saw {extra} extra fetches; the dead shield held {owned} keys"
    );
    assert!(
        world
            .metric("pop0-box0", "outpost_peer_up", "peer=\"shield-1\"")
            .await
            == Some(0.0)
    );

    // Restart: it comes back and ramps up.
    world.start("shield-1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut shares = Vec::new();
    loop {
        let share = world
            .metric("pop0-box0", "outpost_peer_share", "peer=\"shield-1\"")
            .await
            .unwrap();
        shares.push(share);
        if share >= 1.0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        shares.last(),
        Some(&1.0),
        "back to a full share: {shares:?}"
    );
    assert!(
        shares.iter().any(|s| *s > 0.0 && *s < 1.0),
        "it ramped up rather than taking its whole share at once: {shares:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_box_moves_only_its_own_keys() {
    const KEYS: usize = 200;
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/k",
        RouteSpec::ok("key", "max-age=600").count_header(false),
    );
    let mut world = World::new("box", &[4], 0, &origin.url());
    world.start_all().await;
    let boxes = world.boxes();
    for k in 0..KEYS {
        let addr = boxes[k % 4];
        let r = http_get(addr, "site.test", &format!("/k?n={k}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(origin.total_hits(), KEYS, "each key has one owner");
    let owned = world
        .metric(
            "pop0-box3",
            "outpost_origin_fetches_total",
            "tenant=\"site\"",
        )
        .await
        .unwrap() as usize;
    world.kill9("pop0-box3");
    // Every key through every surviving box, twice: the PoP keeps serving.
    for round in 0..2 {
        for k in 0..KEYS {
            let addr = boxes[(k + round) % 3];
            let r = http_get(addr, "site.test", &format!("/k?n={k}"), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "key {k} via box {}", (k + round) % 3);
        }
    }
    let moved = origin.total_hits() - KEYS;
    let fraction = moved as f64 / KEYS as f64;
    eprintln!("keys that changed owner: {moved} of {KEYS} ({fraction:.3}); box3 held {owned}");
    assert_eq!(
        moved, owned,
        "exactly the dead box's keys are fetched again: none moved between survivors"
    );
    assert!(
        (0.1..0.4).contains(&fraction),
        "about a quarter: {fraction}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_is_replicated_on_the_box_that_receives_it() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/hot",
        RouteSpec::ok("hot", "max-age=600").count_header(false),
    );
    let mut world = World::with_hot("hot", &[2], 0, &origin.url(), 10);
    world.start_all().await;
    let boxes = world.boxes();
    // Find the box that does not own /hot: its first answer is forwarded to the owner.
    let first = http_get(boxes[0], "site.test", "/hot", &[]).await.unwrap();
    let cs = first.header("cache-status").unwrap_or("").to_string();
    let (other, other_name) = if cs.contains("detail=\"owner") {
        (boxes[0], "pop0-box0")
    } else {
        (boxes[1], "pop0-box1")
    };
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let r = http_get(other, "site.test", "/hot", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        statuses.push(r.header("cache-status").unwrap_or("").to_string());
    }
    let last = statuses.last().unwrap();
    assert!(
        last.starts_with(&format!("{other_name}; hit")),
        "once hot, the receiving box answers from its own copy: {last}"
    );
    assert!(
        statuses[0].contains("detail=\"owner"),
        "before that it forwards: {}",
        statuses[0]
    );
    assert_eq!(
        origin.hits("/hot"),
        1,
        "the replica filled from the owner, not the origin"
    );
    let replica = world
        .metric(other_name, "outpost_tier_hot_replica_total", "")
        .await
        .unwrap();
    assert!(replica > 0.0);
    let owner_name = if other_name == "pop0-box0" {
        "pop0-box1"
    } else {
        "pop0-box0"
    };
    let served = world
        .metric(owner_name, "outpost_tier_served_as_owner_total", "")
        .await
        .unwrap();
    assert!(
        served >= 1.0,
        "the owner counted the forwarded requests: {served}"
    );
    let forwarded = world
        .metric(other_name, "outpost_tier_forwarded_to_owner_total", "")
        .await
        .unwrap();
    assert!(forwarded >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_keeps_the_shields_age_and_revalidates_against_it() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/aged",
        RouteSpec::ok("aged", "max-age=600")
            .header("age", "100")
            .etag("\"v1\"")
            .count_header(false),
    );
    let mut world = World::new("rfc", &[1], 1, &origin.url());
    world.start_all().await;
    let edge = world.boxes()[0];
    let first = http_get(edge, "site.test", "/aged", &[]).await.unwrap();
    assert_eq!(first.status, 200);
    let age: u64 = first.header("age").unwrap().parse().unwrap();
    assert!(
        age >= 100,
        "the edge counts the age the shield reported: {age}"
    );
    let cs = first.header("cache-status").unwrap().to_string();
    assert!(cs.starts_with("shield-0; fwd=uri-miss"), "{cs}");
    // The edge's copy is never fresher than the origin allowed: ttl = 600 - age.
    let hit = http_get(edge, "site.test", "/aged", &[]).await.unwrap();
    let cs = hit.header("cache-status").unwrap().to_string();
    let ttl: i64 = cs
        .split(';')
        .find_map(|p| p.trim().strip_prefix("ttl="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl <= 500, "{cs}");
    // A client's no-cache makes the edge revalidate: it sends its validator to the shield,
    // which answers 304 from its own fresh copy (the origin is not asked again).
    let revalidated = http_get(edge, "site.test", "/aged", &[("cache-control", "no-cache")])
        .await
        .unwrap();
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "aged");
    let cs = revalidated.header("cache-status").unwrap().to_string();
    assert!(cs.contains("fwd-status=304"), "{cs}");
    assert_eq!(origin.hits("/aged"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regional_mid_tier_sits_between_the_edges_and_the_shield() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/m", RouteSpec::ok("m", "max-age=600").count_header(false));
    let mut world = World::new("mid", &[1, 1], 1, &origin.url());
    // PoP 0 goes through a mid-tier set "mid"; PoP 1 straight to the shield set.
    let mid = Member::new("mid-0");
    let text = std::fs::read_to_string(&world.config).unwrap();
    let text = text.replacen(
        "name = \"pop0\"\nregion = \"r0\"\n",
        "name = \"pop0\"\nregion = \"r0\"\nmid_tier = \"mid\"\n",
        1,
    ) + &format!(
        "[[topology.shield_set]]\nname = \"mid\"\nregion = \"r0\"\n[[topology.shield_set.box]]\n\
         name = \"{}\"\nlisten = \"{}\"\nmetrics = \"{}\"\n",
        mid.name, mid.http, mid.metrics
    );
    std::fs::write(&world.config, text).unwrap();
    world.shields.push(mid);
    world.start_all().await;
    let boxes = world.boxes();
    let via_mid = http_get(boxes[0], "site.test", "/m", &[]).await.unwrap();
    let cs = via_mid.header("cache-status").unwrap().to_string();
    let members: Vec<&str> = cs
        .split(',')
        .map(|m| m.split(';').next().unwrap().trim())
        .collect();
    assert_eq!(members, ["shield-0", "mid-0", "pop0-box0"], "{cs}");
    let direct = http_get(boxes[1], "site.test", "/m", &[]).await.unwrap();
    let cs = direct.header("cache-status").unwrap().to_string();
    assert!(cs.starts_with("shield-0; hit"), "{cs}");
    assert!(!cs.contains("mid-0"), "{cs}");
    assert_eq!(origin.hits("/m"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_variants_work_through_every_tier() {
    let origin = TestOrigin::start().await.unwrap();
    let body: String = (0..1000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    origin.route(
        "/r",
        RouteSpec::ok(&body, "max-age=600").count_header(false),
    );
    origin.route(
        "/v",
        RouteSpec::ok("", "max-age=600")
            .header("vary", "accept-language")
            .echo_vary()
            .count_header(false),
    );
    let mut world = World::new("rv", &[2], 2, &origin.url());
    world.start_all().await;
    let boxes = world.boxes();
    // Through both boxes (one of them forwards): 206 with the right bytes, one origin fetch.
    for (i, addr) in boxes.iter().enumerate() {
        let r = http_get(*addr, "site.test", "/r", &[("range", "bytes=10-19")])
            .await
            .unwrap();
        assert_eq!(r.status, 206, "box {i}: {:?}", r.headers);
        assert_eq!(r.text(), &body[10..20]);
        assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
    }
    assert_eq!(
        origin.hits("/r"),
        1,
        "the tiers fetch whole objects and slice them"
    );
    // Variants: each language is its own object at every tier.
    for (lang, want) in [("fr", "fr"), ("de", "de"), ("fr", "fr")] {
        for addr in &boxes {
            let r = http_get(*addr, "site.test", "/v", &[("accept-language", lang)])
                .await
                .unwrap();
            assert_eq!(r.status, 200);
            assert!(r.text().contains(want), "{lang}: {}", r.text());
        }
    }
    assert_eq!(origin.hits("/v"), 2, "one fetch per variant across the CDN");
}

/// Across processes no fake clock can move time, so this one waits 1.5 s of real time for a
/// 1-second max-age to pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_works_at_every_tier() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/swr",
        RouteSpec::ok("", "max-age=1, stale-while-revalidate=60"),
    );
    let mut world = World::new("swr", &[1], 1, &origin.url());
    world.start_all().await;
    let edge = world.boxes()[0];
    let first = http_get(edge, "site.test", "/swr", &[]).await.unwrap();
    assert_eq!(first.text(), "1");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Stale at the edge: served at once from its copy while it refreshes from the shield,
    // which is stale too and refreshes from the origin in the background.
    let stale = http_get(edge, "site.test", "/swr", &[]).await.unwrap();
    assert_eq!(stale.text(), "1");
    let cs = stale.header("cache-status").unwrap_or("").to_string();
    assert!(cs.contains("stale-while-revalidate"), "{cs}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.hits("/swr") < 2 {
        assert!(
            Instant::now() < deadline,
            "the shield refreshed from the origin"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.hits("/swr"), 2, "one refresh reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_joins_a_running_pop_takes_its_share_gradually() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/k",
        RouteSpec::ok("key", "max-age=600").count_header(false),
    );
    let mut world = World::new("join", &[2], 0, &origin.url());
    world.start_all().await;
    // A third box joins: the file gains it, it starts, the running boxes reload on SIGHUP.
    let joined = Member::new("pop0-box2");
    let text = std::fs::read_to_string(&world.config).unwrap();
    let text = text.replacen(
        "[[tenant]]",
        &format!(
            "[[topology.pop.box]]\nname = \"{}\"\nlisten = \"{}\"\nmetrics = \"{}\"\n\n[[tenant]]",
            joined.name, joined.http, joined.metrics
        ),
        1,
    );
    std::fs::write(&world.config, text).unwrap();
    world.pops[0].push(joined);
    world.start("pop0-box2").await;
    for (name, child) in &world.procs {
        if name != "pop0-box2" {
            let ok = Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut shares = Vec::new();
    loop {
        if let Some(share) = world
            .metric("pop0-box0", "outpost_peer_share", "peer=\"pop0-box2\"")
            .await
        {
            shares.push(share);
            if share >= 1.0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the new box reached its share: {shares:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shares.iter().any(|s| *s > 0.0 && *s < 1.0),
        "it ramped up: {shares:?}"
    );
    // The PoP serves through all three boxes, each key from one owner.
    let boxes = world.boxes();
    for k in 0..60 {
        let r = http_get(boxes[k % 3], "site.test", &format!("/k?n={k}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(origin.total_hits(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_whose_owner_died_is_filled_from_the_origin() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/k",
        RouteSpec::ok("key", "max-age=600").count_header(false),
    );
    // Every key is hot at once (threshold 1): a box fills its own copy through the owner.
    let mut world = World::with_hot("hotdead", &[2], 0, &origin.url(), 1);
    world.start_all().await;
    let boxes = world.boxes();
    // Keys the second box owns, asked of the first after the second is killed (the first box
    // did not keep them: no-store): it finds the owner unreachable and fills from the origin;
    // no client sees an error.
    let mut keys = Vec::new();
    for k in 0..40 {
        let r = http_get(
            boxes[0],
            "site.test",
            &format!("/k?n={k}"),
            &[("cache-control", "no-store")],
        )
        .await
        .unwrap();
        if r.header("cache-status").unwrap_or("").contains("pop0-box1") {
            keys.push(k);
        }
    }
    assert!(!keys.is_empty(), "box1 owns some keys");
    world.kill9("pop0-box1");
    for k in keys {
        let r = http_get(boxes[0], "site.test", &format!("/k?n={k}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "key {k}: {:?}", r.headers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_to_a_topology_node_is_closed_after_the_header_timeout() {
    let origin = TestOrigin::start().await.unwrap();
    let mut world = World::new("silent", &[1], 0, &origin.url());
    let text = std::fs::read_to_string(&world.config).unwrap();
    let text = text.replacen("[node]\n", "[node]\nheader_read_timeout = \"500ms\"\n", 1);
    std::fs::write(&world.config, text).unwrap();
    world.start_all().await;
    // Nodes of a topology peek at the first bytes (HTTP/2 preface or not): that wait is
    // bounded like any other first read.
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(world.boxes()[0])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut s, &mut buf),
    )
    .await
    .expect("closed by the node, not by the test's timeout");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(t0.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_waits_for_a_hung_shield_only_as_long_as_the_tenant_allows() {
    let origin = TestOrigin::start().await.unwrap();
    let mut world = World::new("hung", &[1], 1, &origin.url());
    let text = std::fs::read_to_string(&world.config).unwrap();
    std::fs::write(
        &world.config,
        text + "[tenant.cache]\norigin_timeout = \"1s\"\n",
    )
    .unwrap();
    // The shield accepts connections and never answers (its probes hang too).
    let mut held = Vec::new();
    for addr in [world.shields[0].http, world.shields[0].metrics] {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        held.push(tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                conns.push(s);
            }
        }));
    }
    let edge = world.pops[0][0].name.clone();
    world.start(&edge).await;
    let t0 = Instant::now();
    let r = http_get(world.boxes()[0], "site.test", "/x", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 504, "{:?}", r.headers);
    // origin_timeout (1 s) plus one tier's margin (5 s), not the 60 s fallback.
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    for h in held {
        h.abort();
    }
}

/// A box that does not own a key asks the owner over the pipelined connection first
/// (`topology.forward_pipeline`): cached answers up to 256 KiB come back that way (200, HEAD,
/// 304, 206, byte-exact); a miss, an object too large for the pipe and an uncacheable answer
/// take the ordinary path, and the client gets the same answer either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_hits_take_the_pipelined_ask_and_the_rest_the_ordinary_path() {
    let origin = TestOrigin::start().await.unwrap();
    let small = pseudo_random_body(1024);
    let big = pseudo_random_body(600 * 1024);
    for i in 0..8 {
        origin.route(
            &format!("/small{i}"),
            RouteSpec::ok("", "max-age=600")
                .body(small.clone())
                .etag("\"s1\"")
                .count_header(false),
        );
        origin.route(
            &format!("/big{i}"),
            RouteSpec::ok("", "max-age=600")
                .body(big.clone())
                .count_header(false),
        );
        origin.route(
            &format!("/private{i}"),
            RouteSpec::ok("fresh each time", "no-store").count_header(false),
        );
    }
    let mut world = World::new("pipe", &[2], 0, &origin.url());
    world.start_all().await;
    let boxes = world.boxes();
    let names = ["pop0-box0", "pop0-box1"];
    // The box that forwards `path` (its answer names the owner), and its name.
    let forwarder = |r: &outpost_testkit::SimpleResponse| {
        r.header("cache-status")
            .is_some_and(|c| c.contains("detail=\"owner "))
    };
    let mut checked = 0;
    for i in 0..8 {
        let path = format!("/small{i}");
        // A miss through box 0: whoever owns it fetches it once.
        let r = http_get(boxes[0], "site.test", &path, &[]).await.unwrap();
        assert_eq!(r.status, 200);
        let fwd = if forwarder(&r) { 0 } else { 1 };
        let (addr, name) = (boxes[fwd], names[fwd]);
        let before = world
            .metric(name, "outpost_tier_forwarded_pipelined_total", "")
            .await
            .unwrap();
        // A hit through the forwarding box: pipelined.
        let r = http_get(addr, "site.test", &path, &[]).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &small[..]));
        assert!(forwarder(&r), "{:?}", r.header("cache-status"));
        let h = outpost_testkit::http_request(addr, "HEAD", "site.test", &path, &[], b"")
            .await
            .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.header("content-length"), Some("1024"));
        assert!(h.body.is_empty());
        let c = http_get(addr, "site.test", &path, &[("if-none-match", "\"s1\"")])
            .await
            .unwrap();
        assert_eq!(c.status, 304);
        let p = http_get(addr, "site.test", &path, &[("range", "bytes=100-199")])
            .await
            .unwrap();
        assert_eq!((p.status, &p.body[..]), (206, &small[100..200]));
        let after = world
            .metric(name, "outpost_tier_forwarded_pipelined_total", "")
            .await
            .unwrap();
        assert_eq!(after - before, 4.0, "200, HEAD, 304 and 206 were pipelined");

        // Too large for the pipe: the ordinary path, byte-exact, still one origin fetch.
        let bpath = format!("/big{i}");
        for _ in 0..2 {
            for a in &boxes {
                let r = http_get(*a, "site.test", &bpath, &[]).await.unwrap();
                assert_eq!(r.status, 200);
                assert!(r.body == big, "{bpath}");
            }
        }
        assert_eq!(origin.hits(&bpath), 1);
        // Never cached: forwarded on the ordinary path every time.
        let ppath = format!("/private{i}");
        for _ in 0..2 {
            for a in &boxes {
                let r = http_get(*a, "site.test", &ppath, &[]).await.unwrap();
                assert_eq!(r.text(), "fresh each time");
            }
        }
        assert_eq!(origin.hits(&ppath), 4);
        let end = world
            .metric(name, "outpost_tier_forwarded_pipelined_total", "")
            .await
            .unwrap();
        assert_eq!(
            end, after,
            "large and uncacheable answers were not pipelined"
        );
        checked += 1;
    }
    assert_eq!(checked, 8);
    assert_eq!(origin.hits("/small0"), 1);
    // A node of a topology tells a pipelined connection by its first field; anything else is
    // ordinary HTTP/1.1, where garbage still gets its 400.
    let r =
        outpost_testkit::raw_request(boxes[0], b"NOT HTTP AT ALL\r\n\r\n", Duration::from_secs(2))
            .await
            .unwrap();
    assert!(
        String::from_utf8_lossy(&r).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    // Declined asks (misses, large objects) are not requests of their own: no box counts a
    // 5xx, and nothing else was an error either.
    for name in names {
        let text = world.metrics(name).await;
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("outpost_requests_total") && l.contains("status=\"5xx\""))
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}
