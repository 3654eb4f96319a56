//! Canary rollouts of config versions (the "bad config push" incident): a new version goes to
//! the canary PoP only; after the watch, a version that does no worse than the PoPs still on
//! the previous one is promoted everywhere, and one that makes the canary's 5xx share jump is
//! rolled back automatically, with the reason in the API; the other PoP never applies it. And
//! a version nodes refuse (node-side validation) leaves every node serving its last good config.
//! Real nodes on 127.0.0.1, in-process bus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_config::Config;
use outpost_control::agent::{self, AgentState};
use outpost_control::{CanaryOptions, ControlOptions, InProcessBus, RunningControl};
use outpost_proxy::RunningNode;
use outpost_testkit::{free_port, http_get, http_request, TestOrigin};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct World {
    nodes: Vec<(RunningNode, Arc<AgentState>)>,
    control: RunningControl,
    auth: String,
}

impl World {
    async fn start(origin: &TestOrigin, watch: Duration) -> World {
        let (a, b) = (free_port(), free_port());
        let toml = format!(
            "[[topology.pop]]\nname = \"p1\"\nregion = \"r1\"\n\
             [[topology.pop.box]]\nname = \"e1\"\nlisten = \"127.0.0.1:{a}\"\nmetrics = \"\"\n\
             [[topology.pop]]\nname = \"p2\"\nregion = \"r2\"\n\
             [[topology.pop.box]]\nname = \"e2\"\nlisten = \"127.0.0.1:{b}\"\nmetrics = \"\"\n\
             [[tenant]]\nname = \"site\"\nhostnames = [\"site.test\"]\norigins = [\"{}\"]\n",
            origin.url()
        );
        let world = Config::parse_toml(&toml).unwrap();
        let bus = Arc::new(InProcessBus::new());
        let mut nodes = Vec::new();
        for name in ["e1", "e2"] {
            let cfg = world.for_member(name).unwrap();
            let n = outpost_proxy::start(&cfg).await.unwrap();
            let st = agent::spawn(&n, cfg, bus.clone());
            nodes.push((n, st));
        }
        let mut opts = ControlOptions::new("127.0.0.1:0", world);
        opts.rate = 10_000.0;
        let mut canary = CanaryOptions::new("p1", watch);
        canary.min_requests = 10;
        opts.canary = Some(canary);
        let control = outpost_control::start(opts, bus).await.unwrap();
        let auth = format!("Bearer {}", control.new_admin_key.clone().unwrap());
        let w = World {
            nodes,
            control,
            auth,
        };
        w.wait(
            |w| w.version(0) == 1 && w.version(1) == 1,
            "the seed version",
        )
        .await;
        w
    }

    fn version(&self, i: usize) -> u64 {
        self.nodes[i].1.config_version.load(Ordering::Acquire)
    }

    async fn wait(&self, ok: impl Fn(&World) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ok(self) {
            assert!(Instant::now() < deadline, "waited for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

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

    /// Send client traffic to both PoPs until version `v`'s rollout is decided; its rollout.
    async fn drive_until_decided(&self, v: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = v * 100_000;
        loop {
            for (n, _) in &self.nodes {
                for _ in 0..5 {
                    i += 1;
                    let _ = http_get(n.addr, "site.test", &format!("/r/{i}"), &[]).await;
                }
            }
            let (_, got) = self
                .api("GET", &format!("/api/v1/versions/{v}"), None)
                .await;
            if got["rollout"]["state"] != "canary" {
                return got["rollout"].clone();
            }
            assert!(Instant::now() < deadline, "never decided: {got}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn tenant(origin: &str, grace: &str) -> Value {
    json!({"name": "site", "hostnames": ["site.test"], "origins": [origin], "cache": {"grace": grace}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_version_is_promoted_and_a_bad_one_rolled_back_from_the_canary() {
    let origin = TestOrigin::start().await.unwrap();
    let w = World::start(&origin, Duration::from_millis(1500)).await;

    // A harmless change: the canary PoP only, then everywhere.
    let (s, v) = w
        .api(
            "PUT",
            "/api/v1/tenants/site",
            Some(tenant(&origin.url(), "5s")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let good = v["version"].as_u64().unwrap();
    w.wait(|w| w.version(0) == good, "the canary applies it")
        .await;
    assert_eq!(w.version(1), 1, "the other PoP waits");
    let rollout = w.drive_until_decided(good).await;
    assert_eq!(rollout["state"], "promoted", "{rollout}");
    w.wait(|w| w.version(1) == good, "promotion reaches the other PoP")
        .await;

    // A bad change: the origin moves to an address nothing listens on.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (s, v) = w
        .api("PUT", "/api/v1/tenants/site", Some(tenant(&dead, "5s")))
        .await;
    assert_eq!(s, 200, "{v}");
    let bad = v["version"].as_u64().unwrap();
    w.wait(|w| w.version(0) == bad, "the canary applies it")
        .await;
    let rollout = w.drive_until_decided(bad).await;
    assert_eq!(rollout["state"], "rolled_back", "{rollout}");
    assert!(
        rollout["reason"].as_str().unwrap().contains("5xx share"),
        "{rollout}"
    );
    assert_eq!(rollout["previous"], good);
    // The canary is back on the good config (as a new version); the other PoP never left it.
    w.wait(|w| w.version(0) > bad, "the rollback reaches the canary")
        .await;
    assert_eq!(w.version(1), good);
    let r = http_get(w.nodes[0].0.addr, "site.test", "/after", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let (_, list) = w.api("GET", "/api/v1/versions", None).await;
    let newest = &list["versions"][0];
    assert!(
        newest["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("automatic rollback of version {bad} to {good}")),
        "{list}"
    );
    let (_, t) = w.api("GET", "/api/v1/tenants/site", None).await;
    assert_eq!(
        t["origins"][0],
        origin.url(),
        "the stored tenant is the good one again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_every_node_refuses_leaves_them_serving_the_last_good_one() {
    let origin = TestOrigin::start().await.unwrap();
    let w = World::start(&origin, Duration::from_secs(60)).await;
    // As if written by a control plane whose validation differs from the nodes' (another
    // release): an entry nodes cannot apply, published to everyone.
    let seq = w
        .control
        .control
        .store
        .tx(|t| {
            t.append(
                outpost_control::log::Op::Config {
                    version: 99,
                    tenants: vec![json!({"name": "site", "hostnames": ["site.test"], "origins": ["ftp://nope"]})],
                    only: Vec::new(),
                },
                outpost_control::log::now_ms(),
            )
        })
        .unwrap()
        .seq;
    w.control.control.flush().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let acks = w.control.control.store.tx(|t| t.acks_of(seq)).unwrap();
        if acks.len() == 2 {
            for (node, _, err) in &acks {
                let e = err.as_deref().unwrap_or("");
                assert!(
                    e.contains("origins"),
                    "{node} refused it naming the field: {e}"
                );
            }
            break;
        }
        assert!(Instant::now() < deadline, "{acks:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (n, st) in &w.nodes {
        assert_eq!(st.refused.load(Ordering::Relaxed), 1);
        assert_eq!(st.config_version.load(Ordering::Relaxed), 1);
        let r = http_get(n.addr, "site.test", "/still", &[]).await.unwrap();
        assert_eq!(r.status, 200, "{} keeps serving", n.node.name);
    }
}
