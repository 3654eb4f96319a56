//! The control plane as processes: `outpost control` and `outpost node --bus` over a real
//! nats-server (127.0.0.1). The control process is killed with SIGKILL right after it accepted
//! a purge: restarted on the same store, it shows the purge done once the node has applied it.
//! The node, killed too while the purge was issued, restarts on its SSD cache (with the bus
//! away) and answers 503 until it has caught up with the log, then never serves the purged
//! object.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_testkit::{free_port, http_get, http_request, wait_port, Proc, RouteSpec, TestOrigin};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn outpost(args: &[&str], log: &Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn control(dir: &Path, api: u16, nats: &str, key: &str) -> Proc {
    let p = Proc(
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args([
                "control",
                "--listen",
                &format!("127.0.0.1:{api}"),
                "--bus",
                nats,
                "--db",
            ])
            .arg(dir.join("control.db"))
            .arg("--config")
            .arg(dir.join("node.toml"))
            .env("OUTPOST_ADMIN_KEY", key)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("control-{}.log", api))).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_port(api);
    p
}

async fn api(port: u16, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let b = body.map(|b| b.to_string()).unwrap_or_default();
    let r = http_request(
        format!("127.0.0.1:{port}").parse().unwrap(),
        method,
        "c",
        path,
        &[("Authorization", &auth)],
        b.as_bytes(),
    )
    .await
    .unwrap();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_control_plane_and_a_restarted_node_lose_no_purge() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("outpost-control-proc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("ssd")).unwrap();
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/x", RouteSpec::ok("old", "max-age=600"));
    let (nats_port, api_port, node_port) = (free_port(), free_port(), free_port());
    let nats_bin = if Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    };
    let start_nats = || {
        let p = Proc(
            Command::new(nats_bin)
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &nats_port.to_string(),
                    "-sd",
                ])
                .arg(dir.join("js"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server"),
        );
        wait_port(nats_port);
        p
    };
    let nats_proc = start_nats();
    let nats = format!("nats://127.0.0.1:{nats_port}");
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "[node]\nname = \"n1\"\nlisten = \"127.0.0.1:{node_port}\"\nmetrics = \"\"\n\
             [store]\ndir = \"{}\"\ndisk_bytes = \"64M\"\nsegment_bytes = \"4M\"\n\
             [[tenant]]\nname = \"site\"\nhostnames = [\"site.test\"]\norigins = [\"{}\"]\n",
            dir.join("ssd").display(),
            origin.url()
        ),
    )
    .unwrap();
    let key = "opk_test01.0123456789abcdef0123456789abcdef";
    let ctl = control(&dir, api_port, &nats, key);
    let node_args = |log: &str| -> Proc {
        let cfg = dir.join("node.toml");
        let p = outpost(
            &["node", "--config", cfg.to_str().unwrap(), "--bus", &nats],
            &dir.join(log),
        );
        wait_port(node_port);
        p
    };
    let node = node_args("node-1.log");
    let addr = format!("127.0.0.1:{node_port}").parse().unwrap();
    // Serving once caught up (the seed config version); /x goes to the SSD tier.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http_get(addr, "site.test", "/x", &[]).await.unwrap();
        if r.status == 200 {
            assert_eq!(r.text(), "old");
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hit = http_get(addr, "site.test", "/x", &[]).await.unwrap();
    assert!(hit.header("cache-status").unwrap().contains("hit"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The node goes down; the purge is accepted and the control process is killed at once.
    node.kill9();
    origin.route("/x", RouteSpec::ok("new", "max-age=600"));
    let (s, v) = api(
        api_port,
        key,
        "POST",
        "/api/v1/purge",
        Some(json!({"urls": ["http://site.test/x"]})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let id = v["purge_id"].as_str().unwrap().to_string();
    ctl.kill9();
    let _ctl = control(&dir, api_port, &nats, key);
    let (s, v) = api(api_port, key, "GET", &format!("/api/v1/purge/{id}"), None).await;
    assert_eq!(s, 200, "the purge survived the kill: {v}");

    // The node restarts on its SSD cache while the bus is away: it answers 503 (it cannot know
    // what it missed), and once the bus is back it applies the purge before serving.
    nats_proc.kill9();
    let _node = node_args("node-2.log");
    for _ in 0..5 {
        let r = http_get(addr, "site.test", "/x", &[]).await.unwrap();
        assert_eq!(r.status, 503, "not before catching up: {}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _nats = start_nats();
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = http_get(addr, "site.test", "/x", &[]).await.unwrap();
        if r.status != 503 {
            break r;
        }
        assert!(Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r.text(), "new", "{:?}", r.header("cache-status"));
    assert_eq!(origin.hits("/x"), 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = api(api_port, key, "GET", &format!("/api/v1/purge/{id}"), None).await;
        if v["status"] == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
