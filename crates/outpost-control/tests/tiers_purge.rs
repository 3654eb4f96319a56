//! Purges across tiers. A tag purge reaches the copies every tier stored (a shield hands its
//! surrogate keys to the edge that stores the object, never to clients). And an edge that has applied a purge never re-fills the purged object from
//! a shield that has not (the shield is cut off the bus): the edge's request carries its log
//! position (`Outpost-Log`), the shield waits for its own log, then revalidates instead of
//! answering from its copy. Real nodes on 127.0.0.1 in one process, in-process bus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_config::Config;
use outpost_control::{agent, ControlOptions, InProcessBus};
use outpost_testkit::{free_port, http_get, http_request, RouteSpec, TestOrigin};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An edge (`e1`) and a shield (`s1`) for tenant `site` in front of `origin`, following the log
/// of a control plane on an in-process bus.
struct World {
    nodes: Vec<outpost_proxy::RunningNode>,
    bus: Arc<InProcessBus>,
    control: outpost_control::RunningControl,
    auth: String,
}

impl World {
    async fn start(origin: &TestOrigin) -> World {
        let (e, s) = (free_port(), free_port());
        let toml = format!(
            "[[topology.pop]]\nname = \"p1\"\nregion = \"r\"\n\
             [[topology.pop.box]]\nname = \"e1\"\nlisten = \"127.0.0.1:{e}\"\nmetrics = \"\"\n\
             [[topology.shield_set]]\nname = \"s\"\nregion = \"r\"\n\
             [[topology.shield_set.box]]\nname = \"s1\"\nlisten = \"127.0.0.1:{s}\"\nmetrics = \"\"\n\
             [[tenant]]\nname = \"site\"\nhostnames = [\"site.test\"]\norigins = [\"{}\"]\nshield = \"s\"\n",
            origin.url()
        );
        let world = Config::parse_toml(&toml).unwrap();
        let bus = Arc::new(InProcessBus::new());
        let mut nodes = Vec::new();
        for name in ["s1", "e1"] {
            let cfg = world.for_member(name).unwrap();
            let n = outpost_proxy::start(&cfg).await.unwrap();
            agent::spawn(&n, cfg, bus.clone());
            nodes.push(n);
        }
        let mut opts = ControlOptions::new("127.0.0.1:0", world);
        opts.rate = 1000.0;
        let control = outpost_control::start(opts, bus.clone()).await.unwrap();
        let auth = format!("Bearer {}", control.new_admin_key.clone().unwrap());
        for n in &nodes {
            let _ = n.node.control_api.set(format!("http://{}", control.addr));
        }
        World {
            nodes,
            bus,
            control,
            auth,
        }
    }

    fn edge(&self) -> std::net::SocketAddr {
        self.nodes[1].addr
    }

    /// Call the API with the admin key.
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let b = body.map(|b| b.to_string()).unwrap_or_default();
        let r = http_request(
            self.control.addr,
            method,
            "c",
            path,
            &[("Authorization", &self.auth)],
            b.as_bytes(),
        )
        .await
        .unwrap();
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    /// POST a purge; its id.
    async fn purge(&self, body: Value) -> String {
        let (s, v) = self.api("POST", "/api/v1/purge", Some(body)).await;
        assert_eq!(s, 202, "{v}");
        v["purge_id"].as_str().unwrap().to_string()
    }

    /// Wait until both nodes have applied the log up to `seq`.
    async fn applied(&self, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.nodes.iter().any(|n| n.node.log_position.get() < seq) {
            assert!(Instant::now() < deadline, "the log did not reach {seq}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_never_refills_a_purged_object_from_a_shield_that_has_not_purged_it() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/obj", RouteSpec::ok("v1", "max-age=600"));
    let w = World::start(&origin).await;
    // Both tiers store v1.
    assert_eq!(
        http_get(w.edge(), "site.test", "/obj", &[])
            .await
            .unwrap()
            .text(),
        "v1"
    );
    assert_eq!(
        http_get(w.edge(), "site.test", "/obj", &[])
            .await
            .unwrap()
            .text(),
        "v1"
    );
    assert_eq!(origin.hits("/obj"), 1);
    // The origin changes; the shield is cut off the bus; the purge reaches the edge only.
    origin.route("/obj", RouteSpec::ok("v2", "max-age=600"));
    w.bus.set_cut("s1", true);
    let id = w.purge(json!({"urls": ["http://site.test/obj"]})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = w.api("GET", &format!("/api/v1/purge/{id}"), None).await;
        let e1 = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == "e1")
            .cloned();
        if e1.is_some_and(|n| n["applied"] == true) {
            assert_eq!(
                v["status"], "propagating",
                "the shield has not applied it: {v}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The edge misses and asks the shield, which is behind: it revalidates, so the client gets
    // v2 and never the copy from before the purge.
    let r = http_get(w.edge(), "site.test", "/obj", &[]).await.unwrap();
    assert_eq!(r.text(), "v2", "{:?}", r.header("cache-status"));
    assert_eq!(origin.hits("/obj"), 2);
    // A client asking the shield directly is not a peer: it is answered from the shield's cache
    // as before (its purge is still on its way).
    let direct = http_get(w.nodes[0].addr, "site.test", "/obj", &[])
        .await
        .unwrap();
    assert_eq!(direct.status, 200);
    // Reconnected, the shield applies the purge and the edge's copy stays v2.
    w.bus.set_cut("s1", false);
    w.applied(w.nodes[1].node.log_position.get()).await;
    assert_eq!(
        http_get(w.edge(), "site.test", "/obj", &[])
            .await
            .unwrap()
            .text(),
        "v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_purge_removes_the_copies_of_every_tier() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/t",
        RouteSpec::ok("v1", "max-age=600").header("surrogate-key", "launch"),
    );
    let w = World::start(&origin).await;
    let first = http_get(w.edge(), "site.test", "/t", &[]).await.unwrap();
    assert_eq!(
        first.header("surrogate-key"),
        None,
        "surrogate keys never reach clients"
    );
    let hit = http_get(w.edge(), "site.test", "/t", &[]).await.unwrap();
    assert!(hit.header("cache-status").unwrap().starts_with("e1; hit"));
    assert_eq!(hit.header("surrogate-key"), None);
    origin.route(
        "/t",
        RouteSpec::ok("v2", "max-age=600").header("surrogate-key", "launch"),
    );
    w.purge(json!({"tenant": "site", "tags": ["launch"]})).await;
    w.applied(2).await;
    // Neither the edge's copy nor the shield's answers: the origin does.
    let after = http_get(w.edge(), "site.test", "/t", &[]).await.unwrap();
    assert_eq!(after.text(), "v2", "{:?}", after.header("cache-status"));
    assert_eq!(origin.hits("/t"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_serves_stale_then_fresh_with_one_revalidation_at_the_origin() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/s",
        RouteSpec::ok("v1", "max-age=600")
            .etag("\"1\"")
            .header("surrogate-key", "news"),
    );
    let w = World::start(&origin).await;
    assert_eq!(
        http_get(w.edge(), "site.test", "/s", &[])
            .await
            .unwrap()
            .text(),
        "v1"
    );
    origin.route(
        "/s",
        RouteSpec::ok("v2", "max-age=600")
            .etag("\"2\"")
            .header("surrogate-key", "news"),
    );
    w.purge(json!({"tenant": "site", "tags": ["news"], "soft": true}))
        .await;
    w.applied(2).await;
    // The client gets the old copy at once, marked stale; one refresh runs behind it.
    let stale = http_get(w.edge(), "site.test", "/s", &[]).await.unwrap();
    assert_eq!(stale.text(), "v1");
    let cs = stale.header("cache-status").unwrap_or("").to_string();
    assert!(cs.contains("stale-while-revalidate"), "{cs}");
    // Then the new copy, fetched once: the shield revalidated for the edge rather than hand it
    // its own soft-purged copy.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let r = http_get(w.edge(), "site.test", "/s", &[]).await.unwrap();
        seen.push(r.text());
        if r.text() == "v2" {
            break;
        }
        assert!(Instant::now() < deadline, "never fresh: {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..5 {
        let r = http_get(w.edge(), "site.test", "/s", &[]).await.unwrap();
        assert_eq!(r.text(), "v2");
        assert!(r.header("cache-status").unwrap().starts_with("e1; hit"));
    }
    let requests = origin.requests();
    let at_origin: Vec<_> = requests.iter().filter(|r| r.uri.path() == "/s").collect();
    assert_eq!(at_origin.len(), 2, "the fill and exactly one revalidation");
    assert_eq!(
        at_origin[1]
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap()),
        Some("\"1\""),
        "a revalidation of the stored copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_job_fills_the_region_through_the_shield_once_per_url() {
    let origin = TestOrigin::start().await.unwrap();
    let urls: Vec<String> = (0..20).map(|i| format!("http://site.test/w/{i}")).collect();
    for i in 0..20 {
        origin.route(&format!("/w/{i}"), RouteSpec::ok("warm", "max-age=600"));
    }
    let w = World::start(&origin).await;
    let (s, v) = w
        .api(
            "POST",
            "/api/v1/warm",
            Some(json!({"urls": urls, "regions": ["nowhere"]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("regions[0]")),
        "{v}"
    );
    let (s, v) = w
        .api(
            "POST",
            "/api/v1/warm",
            Some(json!({"urls": urls, "regions": ["r"]})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let id = v["warm_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let (_, v) = w.api("GET", &format!("/api/v1/warm/{id}"), None).await;
        if v["status"] == "done" {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["fetched"], 20, "{status}");
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(
        status["nodes"].as_array().unwrap().len(),
        1,
        "the region's edge: {status}"
    );
    assert_eq!(
        origin.total_hits(),
        20,
        "each URL fetched from the origin once"
    );
    for i in 0..20 {
        let r = http_get(w.edge(), "site.test", &format!("/w/{i}"), &[])
            .await
            .unwrap();
        assert!(
            r.header("cache-status").unwrap().starts_with("e1; hit"),
            "{:?}",
            r.header("cache-status")
        );
    }
    assert_eq!(origin.total_hits(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_requests_on_the_edge_go_through_the_control_plane_with_a_tenant_key() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/p", RouteSpec::ok("v1", "max-age=600"));
    origin.route(
        "/q",
        RouteSpec::ok("q1", "max-age=600").header("surrogate-key", "qq"),
    );
    let w = World::start(&origin).await;
    let (_, k) = w.api("POST", "/api/v1/tenants/site/keys", None).await;
    let key = format!("Bearer {}", k["key"].as_str().unwrap());
    for p in ["/p", "/q"] {
        http_get(w.edge(), "site.test", p, &[]).await.unwrap();
    }
    origin.route("/p", RouteSpec::ok("v2", "max-age=600"));
    origin.route(
        "/q",
        RouteSpec::ok("q2", "max-age=600").header("surrogate-key", "qq"),
    );
    // No key, a wrong key: refused, nothing purged.
    let r = http_request(w.edge(), "PURGE", "site.test", "/p", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let r = http_request(
        w.edge(),
        "PURGE",
        "site.test",
        "/p",
        &[("Authorization", "Bearer opk_x.y")],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        http_get(w.edge(), "site.test", "/p", &[])
            .await
            .unwrap()
            .text(),
        "v1"
    );
    // The tenant's key: the URL is purged on every tier.
    let r = http_request(
        w.edge(),
        "PURGE",
        "site.test",
        "/p",
        &[("Authorization", &key)],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    w.applied(2).await;
    assert_eq!(
        http_get(w.edge(), "site.test", "/p", &[])
            .await
            .unwrap()
            .text(),
        "v2"
    );
    // Surrogate-Key: a tag purge of the host's tenant.
    let r = http_request(
        w.edge(),
        "PURGE",
        "site.test",
        "/",
        &[("Authorization", &key), ("Surrogate-Key", "qq")],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    w.applied(3).await;
    assert_eq!(
        http_get(w.edge(), "site.test", "/q", &[])
            .await
            .unwrap()
            .text(),
        "q2"
    );
}
