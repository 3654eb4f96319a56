//! Purges across tiers. A tag purge reaches the copies every tier stored (a shield hands its
//! surrogate keys to the edge that stores the object, never to clients). And an edge that has applied a purge never re-fills the purged object from
//! a shield that has not (the shield is cut off the bus): the edge's request carries its log
//! position (`Outpost-Log`), the shield waits for its own log, then revalidates instead of
//! answering from its copy. Real nodes on 127.0.0.1 in one process, in-process bus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_config::Config;
use outpost_control::{agent, ControlOptions, InProcessBus};
use outpost_testkit::{http_get, http_request, RouteSpec, TestOrigin};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_never_refills_a_purged_object_from_a_shield_that_has_not_purged_it() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/obj", RouteSpec::ok("v1", "max-age=600"));
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
        agent::spawn(n.node.clone(), cfg, bus.clone());
        nodes.push(n);
    }
    let edge = nodes[1].addr;
    let mut opts = ControlOptions::new("127.0.0.1:0", world.clone());
    opts.rate = 1000.0;
    let control = outpost_control::start(opts, bus.clone()).await.unwrap();
    let key = control.new_admin_key.clone().unwrap();
    // Both tiers store v1.
    let r = http_get(edge, "site.test", "/obj", &[]).await.unwrap();
    assert_eq!(r.text(), "v1");
    assert_eq!(
        http_get(edge, "site.test", "/obj", &[])
            .await
            .unwrap()
            .text(),
        "v1"
    );
    assert_eq!(origin.hits("/obj"), 1);
    // The origin changes; the shield is cut off the bus; the purge reaches the edge only.
    origin.route("/obj", RouteSpec::ok("v2", "max-age=600"));
    bus.set_cut("s1", true);
    let auth = format!("Bearer {key}");
    let body = json!({"urls": ["http://site.test/obj"]}).to_string();
    let r = http_request(
        control.addr,
        "POST",
        "c",
        "/api/v1/purge",
        &[("Authorization", &auth)],
        body.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 202);
    let id = serde_json::from_slice::<Value>(&r.body).unwrap()["purge_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http_request(
            control.addr,
            "GET",
            "c",
            &format!("/api/v1/purge/{id}"),
            &[("Authorization", &auth)],
            b"",
        )
        .await
        .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
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
    let r = http_get(edge, "site.test", "/obj", &[]).await.unwrap();
    assert_eq!(r.text(), "v2", "{:?}", r.header("cache-status"));
    assert_eq!(origin.hits("/obj"), 2);
    // A client asking the shield directly is not a peer: it is answered from the shield's cache
    // as before (its purge is still on its way).
    let direct = http_get(nodes[0].addr, "site.test", "/obj", &[])
        .await
        .unwrap();
    assert_eq!(direct.status, 200);
    // Reconnected, the shield applies the purge and the edge's copy stays v2.
    bus.set_cut("s1", false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[0].node.log_position.get() < nodes[1].node.log_position.get() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        http_get(edge, "site.test", "/obj", &[])
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
        agent::spawn(n.node.clone(), cfg, bus.clone());
        nodes.push(n);
    }
    let edge = nodes[1].addr;
    let control = outpost_control::start(ControlOptions::new("127.0.0.1:0", world), bus)
        .await
        .unwrap();
    let auth = format!("Bearer {}", control.new_admin_key.clone().unwrap());
    let first = http_get(edge, "site.test", "/t", &[]).await.unwrap();
    assert_eq!(
        first.header("surrogate-key"),
        None,
        "surrogate keys never reach clients"
    );
    let hit = http_get(edge, "site.test", "/t", &[]).await.unwrap();
    assert!(hit.header("cache-status").unwrap().starts_with("e1; hit"));
    assert_eq!(hit.header("surrogate-key"), None);
    origin.route(
        "/t",
        RouteSpec::ok("v2", "max-age=600").header("surrogate-key", "launch"),
    );
    let body = json!({"tenant": "site", "tags": ["launch"]}).to_string();
    let r = http_request(
        control.addr,
        "POST",
        "c",
        "/api/v1/purge",
        &[("Authorization", &auth)],
        body.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes.iter().any(|n| n.node.log_position.get() < 2) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Neither the edge's copy nor the shield's answers: the origin does.
    let after = http_get(edge, "site.test", "/t", &[]).await.unwrap();
    assert_eq!(after.text(), "v2", "{:?}", after.header("cache-status"));
    assert_eq!(origin.hits("/t"), 2);
}
