//! Origin pools end to end (a node and test origins on 127.0.0.1): failover from the primary to
//! the secondary and back by active health checks, stale-if-error while every origin is down,
//! weighted spreading of keys, and one tenant's hanging origin requests not starving another
//! tenant of the same origin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_config::{Config, Dur, OriginPoolConfig, TenantConfig};
use outpost_proxy::{NodeOptions, RunningNode};
use outpost_testkit::{http_get, FakeClock, RouteSpec, TestOrigin};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

fn tenant(name: &str, host: &str, origins: &[&TestOrigin]) -> TenantConfig {
    let base = Config::single_origin("127.0.0.1:0", &origins[0].url()).unwrap();
    TenantConfig {
        name: name.into(),
        hostnames: vec![host.into()],
        origins: origins.iter().map(|o| o.url()).collect(),
        ..base.tenants[0].clone()
    }
}

async fn start(tenants: Vec<TenantConfig>, concurrency: usize, clock: &FakeClock) -> RunningNode {
    let mut cfg = Config::single_origin("127.0.0.1:0", "http://127.0.0.1:1").unwrap();
    cfg.node.metrics = String::new();
    cfg.node.origin_concurrency = concurrency;
    cfg.tenants = tenants;
    cfg.validate().unwrap();
    let opts = NodeOptions {
        clock: Arc::new(clock.clone()),
        ..NodeOptions::default()
    };
    outpost_proxy::start_with(&cfg, opts).await.unwrap()
}

fn health(path: &str) -> OriginPoolConfig {
    OriginPoolConfig {
        health_path: path.into(),
        health_interval: Dur(Duration::from_millis(100)),
        health_timeout: Dur(Duration::from_millis(300)),
        health_fall: 2,
        health_rise: 2,
        ..OriginPoolConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secondary_takes_over_and_the_primary_gets_its_traffic_back() {
    let (primary, secondary) = (
        TestOrigin::start().await.unwrap(),
        TestOrigin::start().await.unwrap(),
    );
    for o in [&primary, &secondary] {
        o.route("/health", RouteSpec::ok("ok", "no-store"));
        o.route("/x", RouteSpec::ok("x", "no-store"));
        o.route(
            "/s",
            RouteSpec::ok("stale me", "max-age=10, stale-if-error=3600"),
        );
    }
    let mut t = tenant("site", "site.test", &[&primary, &secondary]);
    t.origin_pool = health("/health");
    let clock = FakeClock::new(SystemTime::now());
    let node = start(vec![t], 64, &clock).await;
    let get = |path: &'static str| async move {
        http_get(node.addr, "site.test", path, &[]).await.unwrap()
    };
    assert_eq!(get("/s").await.status, 200);
    for _ in 0..5 {
        assert_eq!(get("/x").await.status, 200);
    }
    assert_eq!(primary.hits("/x"), 5);

    primary.stop().await;
    // No request fails: the first ones fail over on the refused connection, then the health
    // checks mark the primary down.
    for _ in 0..20 {
        assert_eq!(get("/x").await.status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(secondary.hits("/x"), 20);

    // Everything down: the expired object is served under stale-if-error.
    secondary.stop().await;
    clock.advance(Duration::from_secs(60));
    let stale = get("/s").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "stale me");
    assert!(
        stale
            .header("cache-status")
            .unwrap_or("")
            .contains("stale-if-error"),
        "{:?}",
        stale.header("cache-status")
    );

    // The primary comes back: within a few health intervals it takes the traffic again.
    secondary.restart().await.unwrap();
    primary.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = primary.hits("/x");
    while primary.hits("/x") == before {
        assert!(Instant::now() < deadline, "traffic returned to the primary");
        assert_eq!(get("/x").await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = primary.hits("/x");
    for _ in 0..5 {
        get("/x").await;
    }
    assert_eq!(primary.hits("/x"), back + 5, "and keeps it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_spread_keys_over_the_origins() {
    let (a, b) = (
        TestOrigin::start().await.unwrap(),
        TestOrigin::start().await.unwrap(),
    );
    for o in [&a, &b] {
        o.route("/k", RouteSpec::ok("k", "max-age=600"));
    }
    let mut t = tenant("site", "site.test", &[&a, &b]);
    t.origin_pool.weights = vec![3.0, 1.0];
    let clock = FakeClock::new(SystemTime::now());
    let node = start(vec![t], 64, &clock).await;
    for k in 0..400 {
        let r = http_get(node.addr, "site.test", &format!("/k?n={k}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let share = a.total_hits() as f64 / 400.0;
    assert_eq!(a.total_hits() + b.total_hits(), 400);
    assert!((0.65..0.85).contains(&share), "weight 3 of 4: {share}");
    // The same key always goes to the same origin (its cache stays warm).
    let before = (a.total_hits(), b.total_hits());
    clock.advance(Duration::from_secs(3600));
    for k in 0..40 {
        http_get(node.addr, "site.test", &format!("/k?n={k}"), &[])
            .await
            .unwrap();
    }
    let again = (a.total_hits() - before.0, b.total_hits() - before.1);
    assert_eq!(again.0 + again.1, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_requests_hang_does_not_starve_another_on_the_same_origin() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/slow",
        RouteSpec::ok("slow", "max-age=600").delay(Duration::from_secs(20)),
    );
    origin.route("/fast", RouteSpec::ok("fast", "max-age=600"));
    let mut a = tenant("a", "a.test", &[&origin]);
    a.cache.origin_timeout = Dur(Duration::from_secs(30));
    let b = tenant("b", "b.test", &[&origin]);
    let clock = FakeClock::new(SystemTime::now());
    let node = start(vec![a, b], 20, &clock).await;
    let addr = node.addr;
    // 500 of tenant a's requests waiting on its hanging path.
    let hung: Vec<_> = (0..500)
        .map(|i| {
            tokio::spawn(
                async move { http_get(addr, "a.test", &format!("/slow?n={i}"), &[]).await },
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slow_at_origin: usize = origin
        .requests()
        .iter()
        .filter(|r| r.uri.path() == "/slow")
        .count();
    assert!(
        slow_at_origin <= 15,
        "tenant a holds at most its guarantee plus the shared half: {slow_at_origin}"
    );
    for i in 0..10 {
        let t0 = Instant::now();
        let r = http_get(addr, "b.test", &format!("/fast?n={i}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "tenant b's miss took {:?}",
            t0.elapsed()
        );
    }
    for h in hung {
        h.abort();
    }
}
