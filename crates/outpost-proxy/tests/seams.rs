//! End-to-end tests of the request path's seams and of the defects the foundation issue found:
//! the injected clock (expiry without sleeping), purges that stop in-flight fills, config
//! snapshots swapped at run time, the filter chain, typed failures (a timed-out fill is a 504 for
//! every request on it), CONNECT and HTTP/1.0 admission, one descriptor per connection, a full
//! disk during a streamed fill, and the Set-Cookie default. Real sockets on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_config::{Config, Dur, SetCookieMode, TenantConfig};
use outpost_proxy::body::full;
use outpost_proxy::filters::{FilterChain, FilterRequest, RequestFilter, Verdict};
use outpost_proxy::purge::Purge;
use outpost_proxy::{NodeOptions, RunningNode};
use outpost_testkit::{http_get, http_request, raw_request, FakeClock, RouteSpec, TestOrigin};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn config_for(origin: &TestOrigin) -> Config {
    let mut cfg = Config::single_origin("127.0.0.1:0", &origin.url()).unwrap();
    cfg.node.metrics = "127.0.0.1:0".into();
    cfg.node.name = "edge1".into();
    cfg.tenants[0].name = "site".into();
    cfg.tenants[0].cache.origin_timeout = Dur(Duration::from_millis(1500));
    cfg
}

async fn node_with(cfg: &Config, clock: &FakeClock) -> RunningNode {
    let opts = NodeOptions {
        clock: Arc::new(clock.clone()),
        ..NodeOptions::default()
    };
    outpost_proxy::start_with(cfg, opts).await.unwrap()
}

fn clock() -> FakeClock {
    FakeClock::new(SystemTime::now())
}

async fn get(addr: SocketAddr, path: &str) -> outpost_testkit::SimpleResponse {
    http_get(addr, "site.test", path, &[]).await.unwrap()
}

fn cs(r: &outpost_testkit::SimpleResponse) -> String {
    r.header("cache-status").unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_stale_windows_follow_the_injected_clock() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/a", RouteSpec::ok("", "max-age=60"));
    origin.route(
        "/swr",
        RouteSpec::ok("", "max-age=60, stale-while-revalidate=600"),
    );
    let clock = clock();
    origin.use_clock(&clock);
    let node = node_with(&config_for(&origin), &clock).await;
    assert_eq!(get(node.addr, "/a").await.text(), "1");
    assert_eq!(get(node.addr, "/swr").await.text(), "1");
    clock.advance(Duration::from_secs(30));
    let r = get(node.addr, "/a").await;
    assert_eq!(r.text(), "1");
    assert_eq!(r.header("age"), Some("30"));
    // An hour later, without sleeping: /a is refetched, /swr is served stale once and refreshed.
    clock.advance(Duration::from_secs(61));
    assert_eq!(get(node.addr, "/a").await.text(), "2");
    let stale = get(node.addr, "/swr").await;
    assert_eq!(stale.text(), "1");
    assert!(
        cs(&stale).contains("stale-while-revalidate"),
        "{}",
        cs(&stale)
    );
    for _ in 0..100 {
        if origin.hits("/swr") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.hits("/swr"), 2, "one background refresh");
    // The origin has counted the refresh; its store commits a moment later. Until then the
    // stale copy is served again, without starting a second refresh.
    let mut text = String::new();
    for _ in 0..200 {
        text = get(node.addr, "/swr").await.text();
        if text == "2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(text, "2", "the refreshed copy replaces the stale one");
    assert_eq!(
        origin.hits("/swr"),
        2,
        "no second refresh while one is running"
    );
}

/// Starts a slow fill of `path` and returns once the origin is sending its body.
async fn slow_fill(
    node: SocketAddr,
    origin: &TestOrigin,
    path: &str,
) -> tokio::task::JoinHandle<outpost_testkit::SimpleResponse> {
    let p = path.to_string();
    let fill = tokio::spawn(async move { get(node, &p).await });
    for _ in 0..200 {
        if origin.hits(path) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(origin.hits(path), 1, "the fill started");
    // The head has been sent; the body trickles for about a second.
    tokio::time::sleep(Duration::from_millis(100)).await;
    fill
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_during_a_fill_keeps_the_fill_out_of_the_cache() {
    let origin = TestOrigin::start().await.unwrap();
    let body = "z".repeat(20_000);
    for path in ["/url", "/tagged", "/dir/x", "/control"] {
        origin.route(
            path,
            RouteSpec::ok(&body, "max-age=600")
                .header("surrogate-key", "launch home")
                .count_header(false)
                .trickle(2_000, Duration::from_millis(100)),
        );
    }
    let node = node_with(&config_for(&origin), &clock()).await;
    let url = outpost_cache::canonicalize("site.test", "/url", &Default::default()).unwrap();
    let purges = [
        ("/url", Purge::Url(url)),
        ("/tagged", Purge::Tag("launch".into())),
        (
            "/dir/x",
            Purge::Prefix {
                host: "site.test".into(),
                path_prefix: "/dir/".into(),
            },
        ),
    ];
    for (path, purge) in purges {
        let fill = slow_fill(node.addr, &origin, path).await;
        node.node.purge("site", &purge).await.unwrap();
        let r = fill.await.unwrap();
        assert_eq!(
            r.body.len(),
            20_000,
            "{path}: the client still gets the whole body"
        );
        let again = get(node.addr, path).await;
        assert_eq!(again.body.len(), 20_000);
        assert!(!cs(&again).contains("hit"), "{path}: {}", cs(&again));
        assert_eq!(
            origin.hits(path),
            2,
            "{path}: the purged fill was not stored"
        );
    }
    // Control: the same fill with no purge is stored.
    let fill = slow_fill(node.addr, &origin, "/control").await;
    fill.await.unwrap();
    assert!(cs(&get(node.addr, "/control").await).contains("hit"));
    assert_eq!(origin.hits("/control"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_purge_api() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/t",
        RouteSpec::ok("", "max-age=600").header("cache-tag", "news"),
    );
    let node = node_with(&config_for(&origin), &clock()).await;
    let admin = node.metrics_addr.unwrap();
    let post = |body: &'static str| async move {
        http_request(admin, "POST", "localhost", "/purge", &[], body.as_bytes())
            .await
            .unwrap()
    };
    for p in ["/a", "/b", "/t"] {
        get(node.addr, p).await;
    }
    let r = post(r#"{"urls":["http://site.test/a"]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"removed\":1"), "{}", r.text());
    let r = post(r#"{"tenant":"site","tags":["news"]}"#).await;
    assert!(r.text().contains("\"removed\":1"), "{}", r.text());
    assert!(!cs(&get(node.addr, "/a").await).contains("hit"));
    assert!(!cs(&get(node.addr, "/t").await).contains("hit"));
    assert!(cs(&get(node.addr, "/b").await).contains("hit"));
    let r = post(r#"{"tenant":"site","everything":true}"#).await;
    assert_eq!(r.status, 200);
    assert!(!cs(&get(node.addr, "/b").await).contains("hit"));
    // Errors are JSON naming what is wrong.
    let r = post("{nope").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("\"code\":\"bad-json\""), "{}", r.text());
    let r = post(r#"{"tags":["x"]}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("missing-tenant"), "{}", r.text());
    let r = post(r#"{"tenant":"nobody","everything":true}"#).await;
    assert_eq!(r.status, 404);
    let r = post(r#"{"urls":["ftp://x/"]}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("urls[0]"), "{}", r.text());
    let text = http_get(admin, "localhost", "/metrics", &[])
        .await
        .unwrap()
        .text();
    assert!(
        text.contains("outpost_purges_total{node=\"edge1\"} 3"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_snapshots_swap_at_run_time_and_keep_counters_by_name() {
    let origin = TestOrigin::start().await.unwrap();
    let other = TestOrigin::start().await.unwrap();
    other.route("/", RouteSpec::ok("from other", "max-age=60"));
    let mut cfg = config_for(&origin);
    cfg.tenants[0].hostnames = vec!["site.test".into()];
    let node = node_with(&cfg, &clock()).await;
    assert_eq!(get(node.addr, "/x").await.status, 200);
    let r = http_get(node.addr, "new.test", "/", &[]).await.unwrap();
    assert_eq!(r.status, 421);
    // A new snapshot: a tenant before "site" in the list, for a new host.
    let mut next = cfg.clone();
    next.tenants.insert(
        0,
        TenantConfig {
            name: "another".into(),
            hostnames: vec!["new.test".into()],
            origins: vec![other.url()],
            ..cfg.tenants[0].clone()
        },
    );
    assert_eq!(node.node.apply_config(&next).unwrap(), 2);
    let r = http_get(node.addr, "new.test", "/", &[]).await.unwrap();
    assert_eq!(r.text(), "from other");
    // "site" kept its cache and its counters.
    assert!(cs(&get(node.addr, "/x").await).contains("hit"));
    let metrics = http_get(node.metrics_addr.unwrap(), "localhost", "/metrics", &[])
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("tenant=\"site\",outcome=\"hit\",status=\"2xx\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tenant=\"site\",outcome=\"miss\",status=\"2xx\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tenant=\"another\",outcome=\"miss\""),
        "{metrics}"
    );
    assert!(metrics.contains("outpost_config_version{node=\"edge1\"} 2"));
    // An invalid config is refused and the one in force stays.
    let mut bad = next.clone();
    bad.tenants[0].origins = vec!["ftp://nope".into()];
    let e = node.node.apply_config(&bad).unwrap_err();
    assert_eq!(e.path, "tenant[0].origins[0]");
    let r = http_get(node.addr, "new.test", "/", &[]).await.unwrap();
    assert_eq!(r.text(), "from other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_a_timed_out_fill_get_504_like_their_leader() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/slow",
        RouteSpec::ok("late", "max-age=60").delay(Duration::from_secs(4)),
    );
    let node = node_with(&config_for(&origin), &clock()).await;
    let mut all = Vec::new();
    for _ in 0..5 {
        let addr = node.addr;
        all.push(tokio::spawn(async move { get(addr, "/slow").await }));
    }
    for t in all {
        let r = t.await.unwrap();
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(r.text().contains("upstream-timeout"), "{}", r.text());
    }
    assert_eq!(origin.hits("/slow"), 1, "one fill, coalesced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_and_http10_without_host_uses_the_wildcard_tenant() {
    let origin = TestOrigin::start().await.unwrap();
    let node = node_with(&config_for(&origin), &clock()).await;
    let raw = raw_request(
        node.addr,
        format!(
            "CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.addr(),
            origin.addr()
        )
        .as_bytes(),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert_eq!(origin.total_hits(), 0, "the origin is never contacted");
    let raw = raw_request(
        node.addr,
        b"GET /old HTTP/1.0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(text.contains("path:/old"), "{text}");
    // HTTP/1.1 still needs Host, and a node without a `*` tenant refuses both.
    let raw = raw_request(
        node.addr,
        b"GET /old HTTP/1.1\r\n\r\n",
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 400"));
    let mut cfg = config_for(&origin);
    cfg.tenants[0].hostnames = vec!["site.test".into()];
    let strict = node_with(&cfg, &clock()).await;
    let raw = raw_request(
        strict.addr,
        b"GET /old HTTP/1.0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.0 400"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_already_passed_this_node_is_a_loop() {
    let origin = TestOrigin::start().await.unwrap();
    let node = node_with(&config_for(&origin), &clock()).await;
    let r = http_get(
        node.addr,
        "site.test",
        "/x",
        &[("cdn-loop", "cdn-a, edge1; v=2")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 508);
    assert_eq!(origin.total_hits(), 0);
    // The origin sees this node in CDN-Loop (RFC 8586).
    get(node.addr, "/y").await;
    let seen = origin.requests();
    assert_eq!(seen[0].headers.get("cdn-loop").unwrap(), "edge1");
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_connection_holds_one_descriptor() {
    let origin = TestOrigin::start().await.unwrap();
    let node = node_with(&config_for(&origin), &clock()).await;
    get(node.addr, "/warm").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = open_descriptors();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /warm HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        clients.push(s);
    }
    let during = open_descriptors();
    // This process holds both ends: 100 client sockets + 100 server connections (was 200).
    let per_connection = (during - before) as f64 / 100.0;
    assert!(
        per_connection <= 2.05,
        "{per_connection} descriptors per connection (client + server)"
    );
}

struct Blocker;

impl RequestFilter for Blocker {
    fn name(&self) -> &str {
        "blocker"
    }
    fn check(&self, req: &FilterRequest<'_>) -> Verdict {
        if req.uri.path().starts_with("/blocked") {
            let mut r = http::Response::new(full(bytes::Bytes::from_static(b"no\n")));
            *r.status_mut() = http::StatusCode::FORBIDDEN;
            return Verdict::Respond(r);
        }
        Verdict::Continue
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_answer_before_the_cache() {
    let origin = TestOrigin::start().await.unwrap();
    let opts = NodeOptions {
        filters: FilterChain::new(vec![Arc::new(Blocker)]),
        ..NodeOptions::default()
    };
    let node = outpost_proxy::start_with(&config_for(&origin), opts)
        .await
        .unwrap();
    let r = get(node.addr, "/blocked/x").await;
    assert_eq!(r.status, 403);
    assert_eq!(origin.total_hits(), 0);
    assert_eq!(get(node.addr, "/open").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_is_not_shared_by_default() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/private-ish",
        RouteSpec::ok("", "max-age=60").header("set-cookie", "session=alice"),
    );
    origin.route(
        "/shared",
        RouteSpec::ok("", "public, max-age=60").header("set-cookie", "session=alice"),
    );
    let node = node_with(&config_for(&origin), &clock()).await;
    // Not explicitly shared: not stored.
    get(node.addr, "/private-ish").await;
    let r = get(node.addr, "/private-ish").await;
    assert_eq!(r.header("set-cookie"), Some("session=alice"));
    assert_eq!(origin.hits("/private-ish"), 2);
    // Explicitly shared: stored, but only the filling client gets the cookie.
    let first = get(node.addr, "/shared").await;
    assert_eq!(first.header("set-cookie"), Some("session=alice"));
    let second = get(node.addr, "/shared").await;
    assert!(cs(&second).contains("hit"), "{}", cs(&second));
    assert_eq!(second.header("set-cookie"), None);
    assert_eq!(origin.hits("/shared"), 1);
    // The RFC 9111 mode, as a tenant option, stores and replays it.
    let mut cfg = config_for(&origin);
    cfg.tenants[0].cache.set_cookie = SetCookieMode::Store;
    let rfc = node_with(&cfg, &clock()).await;
    get(rfc.addr, "/private-ish").await;
    let r = get(rfc.addr, "/private-ish").await;
    assert!(cs(&r).contains("hit"), "{}", cs(&r));
    assert_eq!(r.header("set-cookie"), Some("session=alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_fields_are_used_and_only_cdn_cache_control_is_passed_on() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/t",
        RouteSpec::ok("", "no-store")
            .header("cdn-cache-control", "max-age=600")
            .header("outpost-cache-control", "max-age=60")
            .header("surrogate-control", "max-age=30")
            .header("surrogate-key", "a b"),
    );
    origin.route(
        "/bad",
        RouteSpec::ok("", "no-store").header("cdn-cache-control", "max-age=600, &&&"),
    );
    let clock = clock();
    origin.use_clock(&clock);
    let node = node_with(&config_for(&origin), &clock).await;
    for _ in 0..2 {
        let r = get(node.addr, "/t").await;
        // Forwarded downstream for a CDN behind this one (RFC 9213 §3) ...
        assert_eq!(r.header("cdn-cache-control"), Some("max-age=600"));
        // ... while the fields addressed to Outpost alone are used and removed.
        assert_eq!(r.header("outpost-cache-control"), None);
        assert_eq!(r.header("surrogate-control"), None);
        assert_eq!(r.header("surrogate-key"), None);
    }
    assert_eq!(
        origin.hits("/t"),
        1,
        "stored despite Cache-Control: no-store"
    );
    // Outpost-Cache-Control (60 s) governs, not CDN-Cache-Control (600 s).
    clock.advance(Duration::from_secs(61));
    get(node.addr, "/t").await;
    assert_eq!(origin.hits("/t"), 2);
    // An invalid CDN-Cache-Control is ignored as a whole: Cache-Control: no-store governs.
    get(node.addr, "/bad").await;
    get(node.addr, "/bad").await;
    assert_eq!(origin.hits("/bad"), 2);
}

/// A small tmpfs mounted for one test (needs root; CI runs as root).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("outpost-tmpfs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ssd_config(origin: &TestOrigin, dir: &std::path::Path) -> Config {
    let mut cfg = config_for(origin);
    cfg.store.dir = dir.to_str().unwrap().to_string();
    cfg.store.ram_bytes = outpost_config::ByteSize(8 << 20);
    // The budget says 64 MiB; the disk holds 3.
    cfg.store.disk_bytes = outpost_config::ByteSize(64 << 20);
    cfg.store.segment_bytes = outpost_config::ByteSize(16 << 20);
    cfg
}

fn big_body() -> String {
    (0..6_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_during_a_streamed_fill_does_not_cut_responses() {
    let Some(fs) = Tmpfs::mount("fill", "3m") else {
        return;
    };
    let origin = TestOrigin::start().await.unwrap();
    let body = big_body();
    origin.route(
        "/big",
        RouteSpec::ok(&body, "max-age=600")
            .count_header(false)
            .trickle(256 << 10, Duration::from_millis(20)),
    );
    let node = node_with(&ssd_config(&origin, &fs.0), &clock()).await;
    // A leader and four followers, all reading while the fill streams and the disk fills.
    let mut all = Vec::new();
    for _ in 0..5 {
        let addr = node.addr;
        all.push(tokio::spawn(async move { get(addr, "/big").await }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for t in all {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len(), "no truncated body");
        assert!(r.body == body.as_bytes(), "no corrupted body");
    }
    assert_eq!(origin.hits("/big"), 1, "one fill");
    let disk = node.node.store.stats_disk().unwrap();
    assert!(disk.io_errors > 0, "the disk did fill: {disk:?}");
    // Nothing half-written is served later: the next request is a full, correct body.
    let r = get(node.addr, "/big").await;
    assert!(r.body == body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_on_a_full_disk_serves_whole_bodies() {
    let Some(fs) = Tmpfs::mount("full", "4m") else {
        return;
    };
    // Fill the disk, leaving a few KiB.
    let junk = fs.0.join("junk");
    let block = vec![0u8; 16 << 10];
    let mut f = std::fs::File::create(&junk).unwrap();
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    drop(f);
    let store_dir = fs.0.join("store");
    let _ = std::fs::create_dir_all(&store_dir);
    let origin = TestOrigin::start().await.unwrap();
    let body = big_body();
    origin.route(
        "/big",
        RouteSpec::ok(&body, "max-age=600")
            .count_header(false)
            .trickle(512 << 10, Duration::from_millis(10)),
    );
    origin.route("/small", RouteSpec::ok("small", "max-age=600"));
    let node = node_with(&ssd_config(&origin, &store_dir), &clock()).await;
    let mut all = Vec::new();
    for _ in 0..3 {
        let addr = node.addr;
        all.push(tokio::spawn(async move { get(addr, "/big").await }));
    }
    for t in all {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == body.as_bytes(), "whole, correct body");
    }
    assert_eq!(get(node.addr, "/small").await.text(), "small");
    assert!(cs(&get(node.addr, "/small").await).contains("hit"));
}
