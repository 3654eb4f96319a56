//! The control API end to end, with real nodes following the log over the in-process bus: every
//! error class (401, 403, 400, 404, 405, 409, 413, 422 naming the field, 429 with Retry-After),
//! idempotent writes, tenant isolation (keys, purges, cache entries), config versions applied on
//! every node (create, update, diff, rollback), purges with per-node status, a node cut off the
//! bus catching up in order, and every route of the OpenAPI document exercised. 127.0.0.1 only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_config::Config;
use outpost_control::{agent, ControlOptions, InProcessBus, RunningControl};
use outpost_proxy::RunningNode;
use outpost_testkit::{http_get, http_request, RouteSpec, TestOrigin};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Cdn {
    control: RunningControl,
    nodes: Vec<RunningNode>,
    bus: Arc<InProcessBus>,
    admin: String,
    origin: TestOrigin,
    /// (method, OpenAPI path) pairs the test has called.
    seen: Mutex<BTreeSet<(String, String)>>,
}

fn site(origin: &TestOrigin) -> Config {
    let mut cfg = Config::single_origin("127.0.0.1:0", &origin.url()).unwrap();
    cfg.node.metrics = String::new();
    cfg.tenants[0].name = "site".into();
    cfg.tenants[0].hostnames = vec!["site.test".into()];
    cfg
}

async fn cdn(nodes: usize, rate: f64) -> Cdn {
    let origin = TestOrigin::start().await.unwrap();
    let template = site(&origin);
    let bus = Arc::new(InProcessBus::new());
    let mut opts = ControlOptions::new("127.0.0.1:0", template.clone());
    opts.rate = rate;
    opts.burst = rate;
    let control = outpost_control::start(opts, bus.clone()).await.unwrap();
    let admin = control.new_admin_key.clone().unwrap();
    let mut running = Vec::new();
    for i in 0..nodes {
        let mut cfg = template.clone();
        cfg.node.name = format!("n{i}");
        // An HTTPS listener with no certificate yet (certificates come through the API).
        cfg.node.tls_listen = "127.0.0.1:0".into();
        let node = outpost_proxy::start(&cfg).await.unwrap();
        agent::spawn(&node, cfg, bus.clone());
        running.push(node);
    }
    Cdn {
        control,
        nodes: running,
        bus,
        admin,
        origin,
        seen: Mutex::new(BTreeSet::new()),
    }
}

impl Cdn {
    /// Call the API; `route` is the OpenAPI path the call exercises.
    async fn call(
        &self,
        method: &str,
        path: &str,
        route: &str,
        key: Option<&str>,
        body: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (u16, Value, outpost_testkit::SimpleResponse) {
        self.seen
            .lock()
            .unwrap()
            .insert((method.to_ascii_lowercase(), route.to_string()));
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        headers.push(("Content-Type", "application/json"));
        let r = http_request(
            self.control.addr,
            method,
            "control",
            path,
            &headers,
            body.unwrap_or("").as_bytes(),
        )
        .await
        .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v, r)
    }

    async fn admin(
        &self,
        method: &str,
        path: &str,
        route: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let b = body.map(|b| b.to_string());
        let (s, v, _) = self
            .call(method, path, route, Some(&self.admin), b.as_deref(), &[])
            .await;
        (s, v)
    }

    /// Wait until every node has handled the log up to its end.
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, v) = self
                .admin("GET", "/api/v1/nodes", "/api/v1/nodes", None)
                .await;
            let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
            if nodes.len() >= self.nodes.len() && nodes.iter().all(|n| n["behind"] == 0) {
                return;
            }
            assert!(Instant::now() < deadline, "nodes did not catch up: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn err_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn tenant_doc(name: &str, host: &str, origin: &TestOrigin) -> Value {
    json!({"name": name, "hostnames": [host], "origins": [origin.url()]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_right_status() {
    let c = cdn(1, 1000.0).await;
    // 401: missing, malformed, unknown.
    for key in [None, Some("nope"), Some("opk_abc.def")] {
        let (s, v, _) = c
            .call("GET", "/api/v1/tenants", "/api/v1/tenants", key, None, &[])
            .await;
        assert_eq!((s, err_code(&v)), (401, "unauthorized"), "{key:?}: {v}");
    }
    // 400: malformed JSON.
    let (s, v, _) = c
        .call(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(&c.admin),
            Some("{nope"),
            &[],
        )
        .await;
    assert_eq!((s, err_code(&v)), (400, "bad-json"), "{v}");
    // 422 naming the field: a bad origin, a wrong type deep inside, an unknown field.
    let cases = [
        (
            json!({"name": "x", "hostnames": ["x.test"], "origins": ["ftp://x"]}),
            "origins[0]",
        ),
        (
            json!({"name": "x", "hostnames": ["x.test"], "origins": [c.origin.url()], "cache": {"grace": "soon"}}),
            "cache.grace",
        ),
        (
            json!({"name": "x", "hostnames": ["x.test"], "origins": [c.origin.url()], "colour": 1}),
            "colour",
        ),
        (
            json!({"hostnames": ["x.test"], "origins": [c.origin.url()]}),
            "name",
        ),
        (json!([1, 2]), ""),
    ];
    for (doc, field) in cases {
        let (s, v) = c
            .admin(
                "POST",
                "/api/v1/tenants",
                "/api/v1/tenants",
                Some(doc.clone()),
            )
            .await;
        assert_eq!(s, 422, "{doc}: {v}");
        assert_eq!(err_code(&v), "invalid");
        assert_eq!(v["error"]["field"], field, "{doc}: {v}");
    }
    // 409: a hostname another tenant has, and an existing name.
    let (s, v) = c
        .admin(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(tenant_doc("other", "SITE.test", &c.origin)),
        )
        .await;
    assert_eq!((s, err_code(&v)), (409, "hostname-taken"), "{v}");
    let (s, v) = c
        .admin(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(tenant_doc("site", "new.test", &c.origin)),
        )
        .await;
    assert_eq!((s, err_code(&v)), (409, "tenant-exists"), "{v}");
    // 404: unknown tenant, version, purge, route.
    for (m, p, route) in [
        ("GET", "/api/v1/tenants/ghost", "/api/v1/tenants/{name}"),
        ("PUT", "/api/v1/tenants/ghost", "/api/v1/tenants/{name}"),
        ("DELETE", "/api/v1/tenants/ghost", "/api/v1/tenants/{name}"),
        (
            "POST",
            "/api/v1/tenants/ghost/keys",
            "/api/v1/tenants/{name}/keys",
        ),
        ("GET", "/api/v1/versions/999", "/api/v1/versions/{version}"),
        (
            "GET",
            "/api/v1/versions/999/diff",
            "/api/v1/versions/{version}/diff",
        ),
        (
            "POST",
            "/api/v1/versions/999/rollback",
            "/api/v1/versions/{version}/rollback",
        ),
        ("GET", "/api/v1/purge/pg_nope", "/api/v1/purge/{id}"),
        ("GET", "/api/v1/nothing", "-"),
    ] {
        let body = (m == "PUT").then(|| tenant_doc("ghost", "g.test", &c.origin));
        let (s, v) = c.admin(m, p, route, body).await;
        assert_eq!((s, err_code(&v)), (404, "not-found"), "{m} {p}: {v}");
    }
    // 405.
    let (s, v) = c.admin("PATCH", "/api/v1/tenants", "-", None).await;
    assert_eq!((s, err_code(&v)), (405, "method-not-allowed"), "{v}");
    // 413.
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(1 << 20));
    let (s, v, _) = c
        .call(
            "POST",
            "/api/v1/tenants",
            "-",
            Some(&c.admin),
            Some(&big),
            &[],
        )
        .await;
    assert_eq!((s, err_code(&v)), (413, "too-large"), "{v}");
    // 422 on purges: a relative URL, a host no tenant serves, a tag without a tenant, nothing.
    for (body, field) in [
        (json!({"urls": ["/relative"]}), "urls[0]"),
        (json!({"urls": ["http://nobody.test/a"]}), "urls[0]"),
        (json!({"tags": ["t"]}), "tenant"),
        (json!({"tags": ["t"], "tenant": "ghost"}), "tenant"),
        (json!({"tags": ["has space"], "tenant": "site"}), "tags[0]"),
        (json!({"urls": "not-a-list"}), "urls"),
        (json!({}), ""),
    ] {
        let (s, v) = c
            .admin("POST", "/api/v1/purge", "/api/v1/purge", Some(body.clone()))
            .await;
        assert_eq!(s, 422, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_rate_limited_per_key() {
    let c = cdn(1, 5.0).await;
    let mut limited = None;
    for _ in 0..20 {
        let (s, v, r) = c
            .call(
                "GET",
                "/api/v1/tenants",
                "/api/v1/tenants",
                Some(&c.admin),
                None,
                &[],
            )
            .await;
        if s == 429 {
            limited = Some((v, r));
            break;
        }
    }
    let (v, r) = limited.expect("20 requests at once exceed a burst of 5");
    assert_eq!(err_code(&v), "rate-limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    // Another key has its own bucket.
    let (_, k) = c
        .admin(
            "POST",
            "/api/v1/tenants/site/keys",
            "/api/v1/tenants/{name}/keys",
            None,
        )
        .await;
    // (The key creation itself may have been limited; wait for a token if so.)
    let key = match k["key"].as_str() {
        Some(k) => k.to_string(),
        None => {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let (_, k) = c
                .admin(
                    "POST",
                    "/api/v1/tenants/site/keys",
                    "/api/v1/tenants/{name}/keys",
                    None,
                )
                .await;
            k["key"].as_str().unwrap().to_string()
        }
    };
    let (s, _, _) = c
        .call(
            "GET",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(&key),
            None,
            &[],
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_with_an_idempotency_key_apply_once() {
    let c = cdn(1, 1000.0).await;
    let doc = tenant_doc("shop", "shop.test", &c.origin).to_string();
    let idem = [("Idempotency-Key", "create-shop-1")];
    let first = c
        .call(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(&c.admin),
            Some(&doc),
            &idem,
        )
        .await;
    let again = c
        .call(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(&c.admin),
            Some(&doc),
            &idem,
        )
        .await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(
        (again.0, &again.1),
        (first.0, &first.1),
        "the retry gets the first answer"
    );
    let (_, versions) = c
        .admin("GET", "/api/v1/versions", "/api/v1/versions", None)
        .await;
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        2,
        "seed + one create: {versions}"
    );
    // The same key for another request is refused.
    let other = tenant_doc("shop2", "shop2.test", &c.origin).to_string();
    let (s, v, _) = c
        .call(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(&c.admin),
            Some(&other),
            &idem,
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["field"], "Idempotency-Key");
    // Purges too: one log entry for two identical requests.
    let purge = json!({"tags": ["t"], "tenant": "shop"}).to_string();
    let p = [("Idempotency-Key", "purge-1")];
    let a = c
        .call(
            "POST",
            "/api/v1/purge",
            "/api/v1/purge",
            Some(&c.admin),
            Some(&purge),
            &p,
        )
        .await;
    let b = c
        .call(
            "POST",
            "/api/v1/purge",
            "/api/v1/purge",
            Some(&c.admin),
            Some(&purge),
            &p,
        )
        .await;
    assert_eq!(a.0, 202);
    assert_eq!(a.1["purge_id"], b.1["purge_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let c = cdn(2, 1000.0).await;
    let other_origin = TestOrigin::start().await.unwrap();
    c.origin.route(
        "/same",
        RouteSpec::ok("from A", "max-age=600").header("surrogate-key", "t"),
    );
    other_origin.route(
        "/same",
        RouteSpec::ok("from B", "max-age=600").header("surrogate-key", "t"),
    );
    let (s, v) = c
        .admin(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(tenant_doc("a", "a.test", &c.origin)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = c
        .admin(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(tenant_doc("b", "b.test", &other_origin)),
        )
        .await;
    assert_eq!(s, 201);
    let (_, ka) = c
        .admin(
            "POST",
            "/api/v1/tenants/a/keys",
            "/api/v1/tenants/{name}/keys",
            None,
        )
        .await;
    let key_a = ka["key"].as_str().unwrap().to_string();
    c.settle().await;
    // Two tenants, the same path: two cache entries.
    let node = c.nodes[0].addr;
    for _ in 0..2 {
        assert_eq!(
            http_get(node, "a.test", "/same", &[]).await.unwrap().text(),
            "from A"
        );
        assert_eq!(
            http_get(node, "b.test", "/same", &[]).await.unwrap().text(),
            "from B"
        );
    }
    assert_eq!((c.origin.hits("/same"), other_origin.hits("/same")), (1, 1));
    // Tenant a's key: its own tenant only.
    let call = |m: &'static str, p: String, route: &'static str, body: Option<Value>| {
        let key = key_a.clone();
        let c = &c;
        async move {
            let b = body.map(|b| b.to_string());
            let (s, v, _) = c.call(m, &p, route, Some(&key), b.as_deref(), &[]).await;
            (s, v)
        }
    };
    let (s, v) = call("GET", "/api/v1/tenants".into(), "/api/v1/tenants", None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a"]);
    for (m, p, route, body) in [
        ("GET", "/api/v1/tenants/b", "/api/v1/tenants/{name}", None),
        (
            "PUT",
            "/api/v1/tenants/b",
            "/api/v1/tenants/{name}",
            Some(tenant_doc("b", "b.test", &other_origin)),
        ),
        (
            "DELETE",
            "/api/v1/tenants/a",
            "/api/v1/tenants/{name}",
            None,
        ),
        (
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(tenant_doc("c", "c.test", &c.origin)),
        ),
        (
            "POST",
            "/api/v1/tenants/a/keys",
            "/api/v1/tenants/{name}/keys",
            None,
        ),
        ("GET", "/api/v1/versions", "/api/v1/versions", None),
        ("GET", "/api/v1/nodes", "/api/v1/nodes", None),
        (
            "POST",
            "/api/v1/purge",
            "/api/v1/purge",
            Some(json!({"tags": ["t"], "tenant": "b"})),
        ),
        (
            "POST",
            "/api/v1/purge",
            "/api/v1/purge",
            Some(json!({"urls": ["http://b.test/same"]})),
        ),
    ] {
        let (s, v) = call(m, p.into(), route, body).await;
        assert_eq!((s, err_code(&v)), (403, "forbidden"), "{m} {p}: {v}");
    }
    // A purge by the admin for b cannot be read with a's key.
    let (_, pb) = c
        .admin(
            "POST",
            "/api/v1/purge",
            "/api/v1/purge",
            Some(json!({"tags": ["nothing"], "tenant": "b"})),
        )
        .await;
    let (s, _) = call(
        "GET",
        format!("/api/v1/purge/{}", pb["purge_id"].as_str().unwrap()),
        "/api/v1/purge/{id}",
        None,
    )
    .await;
    assert_eq!(s, 403);
    // a's tag purge (tenant implied by its key) removes a's object on every node, not b's.
    let (s, v) = call(
        "POST",
        "/api/v1/purge".into(),
        "/api/v1/purge",
        Some(json!({"tags": ["t"]})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let id = v["purge_id"].as_str().unwrap().to_string();
    let status = wait_done(&c, &id, Some(&key_a)).await;
    assert_eq!(status["nodes_total"], 2, "{status}");
    assert_eq!(
        http_get(node, "a.test", "/same", &[]).await.unwrap().text(),
        "from A"
    );
    assert_eq!(
        http_get(node, "b.test", "/same", &[]).await.unwrap().text(),
        "from B"
    );
    assert_eq!((c.origin.hits("/same"), other_origin.hits("/same")), (2, 1));
}

async fn wait_done(c: &Cdn, id: &str, key: Option<&str>) -> Value {
    let key = key.unwrap_or(&c.admin).to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v, _) = c
            .call(
                "GET",
                &format!("/api/v1/purge/{id}"),
                "/api/v1/purge/{id}",
                Some(&key),
                None,
                &[],
            )
            .await;
        assert_eq!(s, 200, "{v}");
        if v["status"] == "done" {
            return v;
        }
        assert!(Instant::now() < deadline, "purge not done: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_versions_reach_every_node_and_roll_back() {
    let c = cdn(3, 1000.0).await;
    c.origin.route("/p", RouteSpec::ok("page", "max-age=600"));
    // A new tenant: every node serves its hostname once the version is applied.
    let (s, v) = c
        .admin(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(tenant_doc("shop", "shop.test", &c.origin)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let created = v["version"].as_u64().unwrap();
    c.settle().await;
    for n in &c.nodes {
        let r = http_get(n.addr, "shop.test", "/p", &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", n.node.name);
    }
    // Update it (a rule), read it back, diff.
    let mut doc = tenant_doc("shop", "shop.test", &c.origin);
    doc["rule"] = json!([{"path_prefix": "/p", "bypass": true}]);
    let (s, v) = c
        .admin(
            "PUT",
            "/api/v1/tenants/shop",
            "/api/v1/tenants/{name}",
            Some(doc),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let updated = v["version"].as_u64().unwrap();
    let (s, got) = c
        .admin(
            "GET",
            "/api/v1/tenants/shop",
            "/api/v1/tenants/{name}",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(got["rule"][0]["bypass"], true, "{got}");
    let (s, d) = c
        .admin(
            "GET",
            &format!("/api/v1/versions/{updated}/diff"),
            "/api/v1/versions/{version}/diff",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(d["changed"][0]["tenant"], "shop", "{d}");
    assert_eq!(d["changed"][0]["fields"], json!(["rule"]), "{d}");
    let (s, one) = c
        .admin(
            "GET",
            &format!("/api/v1/versions/{created}"),
            "/api/v1/versions/{version}",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(one["tenants"].as_array().unwrap().len(), 2);
    // Roll back to before the tenant existed: it is gone from every node.
    let (s, v) = c
        .admin(
            "POST",
            "/api/v1/versions/1/rollback",
            "/api/v1/versions/{version}/rollback",
            None,
        )
        .await;
    assert_eq!(s, 201, "{v}");
    c.settle().await;
    for n in &c.nodes {
        let r = http_get(n.addr, "shop.test", "/p", &[]).await.unwrap();
        assert_ne!(
            r.status, 200,
            "{}: the rolled-back tenant is gone",
            n.node.name
        );
        assert_eq!(
            http_get(n.addr, "site.test", "/p", &[])
                .await
                .unwrap()
                .status,
            200
        );
    }
    // Delete (recreate first, then delete).
    let (s, _) = c
        .admin(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(tenant_doc("shop", "shop.test", &c.origin)),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = c
        .admin(
            "DELETE",
            "/api/v1/tenants/shop",
            "/api/v1/tenants/{name}",
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    c.settle().await;
    let r = http_get(c.nodes[0].addr, "shop.test", "/p", &[])
        .await
        .unwrap();
    assert_ne!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_every_node_and_a_cut_node_catches_up_in_order() {
    let c = cdn(3, 1000.0).await;
    for i in 0..20 {
        c.origin.route(
            &format!("/o/{i}"),
            RouteSpec::ok("x", "max-age=600")
                .header("surrogate-key", if i % 2 == 0 { "even" } else { "odd" }),
        );
    }
    c.settle().await;
    for n in &c.nodes {
        for i in 0..20 {
            http_get(n.addr, "site.test", &format!("/o/{i}"), &[])
                .await
                .unwrap();
        }
    }
    assert_eq!(c.origin.total_hits(), 60);
    let (s, v) = c
        .admin(
            "POST",
            "/api/v1/purge",
            "/api/v1/purge",
            Some(json!({"tags": ["even"], "tenant": "site"})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "propagating");
    let st = wait_done(&c, v["purge_id"].as_str().unwrap(), None).await;
    assert_eq!(st["nodes_applied"], 3, "{st}");
    assert!(st["time_to_last_node_ms"].as_u64().is_some(), "{st}");
    for n in &c.nodes {
        for i in 0..20 {
            http_get(n.addr, "site.test", &format!("/o/{i}"), &[])
                .await
                .unwrap();
        }
    }
    assert_eq!(
        c.origin.total_hits(),
        60 + 30,
        "exactly the even objects refetched"
    );

    // Cut n2 off the bus; purge a URL and then change the config while it is away.
    c.bus.set_cut("n2", true);
    let (_, p1) = c
        .admin(
            "POST",
            "/api/v1/purge",
            "/api/v1/purge",
            Some(json!({"urls": ["http://site.test/o/1"]})),
        )
        .await;
    let (s, _) = c
        .admin(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(tenant_doc("late", "late.test", &c.origin)),
        )
        .await;
    assert_eq!(s, 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, st) = c
        .admin(
            "GET",
            &format!("/api/v1/purge/{}", p1["purge_id"].as_str().unwrap()),
            "/api/v1/purge/{id}",
            None,
        )
        .await;
    assert_eq!(st["status"], "propagating", "n2 has not applied it: {st}");
    assert_eq!(st["nodes_applied"], 2, "{st}");
    // The cut node still serves (its last config, its cache).
    let cut = c.nodes[2].addr;
    let r = http_get(cut, "site.test", "/o/1", &[]).await.unwrap();
    assert!(r.header("cache-status").unwrap_or("").contains("hit"));
    assert_ne!(
        http_get(cut, "late.test", "/o/1", &[])
            .await
            .unwrap()
            .status,
        200
    );
    // Back on the bus: it applies both, in order.
    c.bus.set_cut("n2", false);
    wait_done(&c, p1["purge_id"].as_str().unwrap(), None).await;
    c.settle().await;
    let r = http_get(cut, "site.test", "/o/1", &[]).await.unwrap();
    assert!(
        !r.header("cache-status").unwrap_or("").contains("hit"),
        "purged while away"
    );
    assert_eq!(
        http_get(cut, "late.test", "/o/1", &[])
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_openapi_document_is_exercised() {
    // The routes the other tests call, called here too so this test stands alone.
    let c = cdn(1, 1000.0).await;
    let (s, doc, _) = c
        .call(
            "GET",
            "/api/v1/openapi.json",
            "/api/v1/openapi.json",
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let (s, _) = c
        .admin(
            "POST",
            "/api/v1/tenants",
            "/api/v1/tenants",
            Some(tenant_doc("shop", "shop.test", &c.origin)),
        )
        .await;
    assert_eq!(s, 201);
    let calls: [(&str, &str, &str, Option<Value>, u16); 14] = [
        ("GET", "/api/v1/tenants", "/api/v1/tenants", None, 200),
        (
            "GET",
            "/api/v1/tenants/shop",
            "/api/v1/tenants/{name}",
            None,
            200,
        ),
        (
            "PUT",
            "/api/v1/tenants/shop",
            "/api/v1/tenants/{name}",
            Some(tenant_doc("shop", "shop.test", &c.origin)),
            200,
        ),
        (
            "POST",
            "/api/v1/tenants/shop/keys",
            "/api/v1/tenants/{name}/keys",
            None,
            201,
        ),
        ("GET", "/api/v1/versions", "/api/v1/versions", None, 200),
        (
            "GET",
            "/api/v1/versions/2",
            "/api/v1/versions/{version}",
            None,
            200,
        ),
        (
            "GET",
            "/api/v1/versions/3/diff?from=1",
            "/api/v1/versions/{version}/diff",
            None,
            200,
        ),
        (
            "POST",
            "/api/v1/versions/2/rollback",
            "/api/v1/versions/{version}/rollback",
            None,
            201,
        ),
        (
            "POST",
            "/api/v1/purge",
            "/api/v1/purge",
            Some(json!({"urls": ["http://site.test/x"]})),
            202,
        ),
        ("GET", "/api/v1/nodes", "/api/v1/nodes", None, 200),
        (
            "GET",
            "/api/v1/analytics?period=24h",
            "/api/v1/analytics",
            None,
            200,
        ),
        (
            "POST",
            "/api/v1/warm",
            "/api/v1/warm",
            Some(json!({"urls": ["http://site.test/x"]})),
            202,
        ),
        (
            "DELETE",
            "/api/v1/tenants/shop",
            "/api/v1/tenants/{name}",
            None,
            200,
        ),
        ("GET", "/api/v1/tenants", "/api/v1/tenants", None, 200),
    ];
    let (mut purge_id, mut warm_id) = (String::new(), String::new());
    for (m, p, route, body, want) in calls {
        let (s, v) = c.admin(m, p, route, body).await;
        assert_eq!(s, want, "{m} {p}: {v}");
        if let Some(id) = v["purge_id"].as_str() {
            purge_id = id.to_string();
        }
        if let Some(id) = v["warm_id"].as_str() {
            warm_id = id.to_string();
        }
    }
    let (s, v) = c
        .admin(
            "GET",
            &format!("/api/v1/warm/{warm_id}"),
            "/api/v1/warm/{id}",
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = c
        .admin(
            "GET",
            &format!("/api/v1/purge/{purge_id}"),
            "/api/v1/purge/{id}",
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = c
        .admin(
            "PUT",
            "/api/v1/tenants/site/certificate",
            "/api/v1/tenants/{name}/certificate",
            Some(cert_upload("site.test")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in ["get", "put", "post", "delete"] {
            if item.get(m).is_some() {
                documented.insert((m.to_string(), path.clone()));
            }
        }
    }
    let seen = c.seen.lock().unwrap().clone();
    let missing: Vec<_> = documented.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "documented but not exercised: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_count_client_traffic_and_merge_latency_histograms() {
    use outpost_control::log::{Ack, Rollup};
    use outpost_control::Bus;
    use outpost_proxy::latency::Histogram;
    let c = cdn(1, 1000.0).await;
    c.origin
        .route("/a", RouteSpec::ok("0123456789", "max-age=600"));
    c.settle().await;
    // Real traffic: one miss, nine hits, through the node.
    for _ in 0..10 {
        let r = http_get(c.nodes[0].addr, "site.test", "/a", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let (s, v) = c
            .admin(
                "GET",
                "/api/v1/analytics?tenant=site&period=1h",
                "/api/v1/analytics",
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        if v["requests"] == 10 {
            break v;
        }
        assert!(Instant::now() < deadline, "rollups did not arrive: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["hits"], 9, "{v}");
    assert_eq!(v["status"]["2xx"], 10);
    assert_eq!(v["bytes_out"], 100);
    assert_eq!(v["origin_bytes"], 10, "one fill of 10 bytes");
    assert!(v["latency_ms"]["p99"].as_f64().is_some());
    assert_eq!(v["buckets"].as_array().unwrap().len(), 1);

    // Percentiles across nodes come from the merged histograms: three nodes with very
    // different latencies report through the bus as their heartbeats would.
    let mut raw = Vec::new();
    for (n, (base, spread)) in [(500u64, 300u64), (20_000, 5_000), (2_000, 50_000)]
        .into_iter()
        .enumerate()
    {
        let mut h = Histogram::default();
        let mut x = 12345u64 + n as u64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = base + (x >> 33) % spread;
            h.record(v);
            raw.push(v);
        }
        let ack = Ack {
            node: format!("synthetic-{n}"),
            seq: 0,
            applied: 0,
            at_ms: outpost_control::log::now_ms(),
            error: None,
            detail: None,
            rollups: vec![Rollup {
                tenant: "site".into(),
                requests: 2000,
                hits: 1000,
                classes: [0, 2000, 0, 0, 0, 0],
                latency: h.sparse(),
                ..Rollup::default()
            }],
        };
        c.bus.ack(ack).await.unwrap();
    }
    raw.sort_unstable();
    let exact = |q: f64| raw[((q * raw.len() as f64).ceil() as usize).max(1) - 1] as f64 / 1000.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let (_, v) = c
            .admin(
                "GET",
                "/api/v1/analytics?tenant=site",
                "/api/v1/analytics",
                None,
            )
            .await;
        if v["requests"].as_u64().unwrap_or(0) >= 6010 {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The real requests' latencies are in the histogram too (10 of 6,010 values): compare with
    // a tolerance of one bucket (1/16) plus their share.
    for (q, key) in [(0.5, "p50"), (0.99, "p99")] {
        let got = v["latency_ms"][key].as_f64().unwrap();
        let want = exact(q);
        assert!(
            (got - want).abs() <= want / 16.0 + 0.01,
            "{key}: API {got} ms vs raw {want} ms"
        );
    }
    // Averaging the per-node p99s would be far off: the API does not.
    let (s, v) = c
        .admin(
            "GET",
            "/api/v1/analytics?period=7d",
            "/api/v1/analytics",
            None,
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("period")));
}

/// A self-signed certificate for `host` as an upload body.
fn cert_upload(host: &str) -> Value {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    json!({"cert_pem": ck.cert.pem(), "key_pem": ck.key_pair.serialize_pem()})
}

/// The leaf certificate a node serves for `sni` (PEM), if the handshake succeeds.
fn served_cert(tls: std::net::SocketAddr, sni: &str) -> Option<String> {
    let out = std::process::Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(tls.to_string())
        .args(["-servername", sni])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start + 25;
    Some(text[start..end].replace('\r', ""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_uploaded_through_the_api_is_served_and_its_key_never_shown() {
    let c = cdn(2, 1000.0).await;
    let tls: Vec<_> = c.nodes.iter().map(|n| n.tls_addr.unwrap()).collect();
    assert!(
        served_cert(tls[0], "site.test").is_none(),
        "no certificate yet"
    );
    // A key that does not match: 422 naming key_pem; a missing field; an unknown tenant.
    let good = cert_upload("site.test");
    let other = cert_upload("other.test");
    let (s, v) = c
        .admin(
            "PUT",
            "/api/v1/tenants/site/certificate",
            "/api/v1/tenants/{name}/certificate",
            Some(json!({"cert_pem": good["cert_pem"], "key_pem": other["key_pem"]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("key_pem")),
        "{v}"
    );
    let (s, v) = c
        .admin(
            "PUT",
            "/api/v1/tenants/site/certificate",
            "/api/v1/tenants/{name}/certificate",
            Some(json!({"cert_pem": good["cert_pem"]})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = c
        .admin(
            "PUT",
            "/api/v1/tenants/ghost/certificate",
            "/api/v1/tenants/{name}/certificate",
            Some(good.clone()),
        )
        .await;
    assert_eq!(s, 404);
    // Upload: every node serves it within a reload.
    let (s, v) = c
        .admin(
            "PUT",
            "/api/v1/tenants/site/certificate",
            "/api/v1/tenants/{name}/certificate",
            Some(good.clone()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let version = v["version"].as_u64().unwrap();
    let want = good["cert_pem"].as_str().unwrap().trim().replace('\r', "");
    let t = Instant::now();
    for addr in &tls {
        loop {
            if served_cert(*addr, "site.test").as_deref() == Some(want.as_str()) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "node {addr} never served it"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The key is never shown: not in the answer, the tenant, the version or its diff.
    let key = good["key_pem"].as_str().unwrap();
    let marker = "PRIVATE KEY";
    assert!(!v.to_string().contains(marker), "{v}");
    for (path, route) in [
        ("/api/v1/tenants/site".to_string(), "/api/v1/tenants/{name}"),
        ("/api/v1/tenants".to_string(), "/api/v1/tenants"),
        (
            format!("/api/v1/versions/{version}"),
            "/api/v1/versions/{version}",
        ),
        (
            format!("/api/v1/versions/{version}/diff"),
            "/api/v1/versions/{version}/diff",
        ),
    ] {
        let (s, v) = c.admin("GET", &path, route, None).await;
        assert_eq!(s, 200, "{path}: {v}");
        let text = v.to_string();
        assert!(
            !text.contains(marker) && !text.contains(key.lines().nth(1).unwrap()),
            "{path}: {text}"
        );
    }
    let (_, t) = c
        .admin(
            "GET",
            "/api/v1/tenants/site",
            "/api/v1/tenants/{name}",
            None,
        )
        .await;
    assert_eq!(t["tls"]["key_pem"], "(set; never shown)", "{t}");
    assert!(t["tls"]["cert_pem"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
}
