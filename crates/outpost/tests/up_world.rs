//! `outpost up` as a user runs it: the default two-region world in one process (the README's
//! first command, on other ports), driven by `outpost load` through its `--addr-file`; and a
//! `--topology` file whose simulated client latency shows in timings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_testkit::http_get;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A base port below the ephemeral range with `span` free ports after it. Calls in this process
/// never overlap (the tests run in parallel and bind their ports only later).
fn free_base(span: u16) -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = 21_000 + (std::process::id() % 200) as u16 * 50;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let b = 21_000 + (start - 21_000 + n.wrapping_mul(50)) % 10_000;
        if (0..span).all(|i| std::net::TcpListener::bind(("127.0.0.1", b + i)).is_ok()) {
            return b;
        }
    }
}

struct Up {
    child: Child,
    dir: PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("outpost-up-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn up(dir: PathBuf, args: &[String]) -> Up {
    let addr_file = dir.join("addr.json");
    let child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .arg("up")
        .args(args)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("up.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !addr_file.exists() {
        assert!(Instant::now() < deadline, "outpost up did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Written once every node listens.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Up { child, dir }
}

fn nodes(addr_file: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(addr_file).unwrap()).unwrap()
}

fn cache_status(r: &outpost_testkit::SimpleResponse) -> String {
    r.header("cache-status").unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_world_serves_both_regions_and_outpost_load_drives_it() {
    // Edges on base..base+3, shields on base+10 and +11, metrics on base+20.., demo on base+30,
    // the control API on base+31, the dns node on base+32 (admin base+33), HTTPS on base+34.
    let base = free_base(35);
    let d = dir("world");
    let args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{base}"),
        "--metrics".into(),
        format!("127.0.0.1:{}", base + 20),
        "--demo-listen".into(),
        format!("127.0.0.1:{}", base + 30),
        "--ram-bytes".into(),
        "32M".into(),
        "--api".into(),
        format!("127.0.0.1:{}", base + 31),
        "--dns".into(),
        format!("127.0.0.1:{}", base + 32),
        "--dns-admin".into(),
        format!("127.0.0.1:{}", base + 33),
        "--tls".into(),
        format!("127.0.0.1:{}", base + 34),
    ];
    let world = up(d.clone(), &args).await;
    let addr_file = world.dir.join("addr.json");
    let v = nodes(&addr_file);
    let list = v["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 6, "{v}");
    let edge = |region: &str| -> SocketAddr {
        list.iter()
            .find(|n| n["role"] == "edge" && n["region"] == region)
            .unwrap()["http"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(edge("eu"), format!("127.0.0.1:{base}").parse().unwrap());
    // The same URL through both regions: the second region's first request is a shield hit.
    let eu = http_get(edge("eu"), "demo.localhost", "/obj/abc-2000", &[])
        .await
        .unwrap();
    assert_eq!(eu.status, 200);
    assert_eq!(eu.body.len(), 2000);
    assert!(
        cache_status(&eu).starts_with("shield-us-"),
        "{}",
        cache_status(&eu)
    );
    let us = http_get(edge("us"), "demo.localhost", "/obj/abc-2000", &[])
        .await
        .unwrap();
    assert!(
        cache_status(&us).contains("; hit") && cache_status(&us).starts_with("shield-us-"),
        "{}",
        cache_status(&us)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["load", "--addr-file"])
        .arg(&addr_file)
        .args([
            "--keys",
            "300",
            "--requests",
            "3000",
            "--concurrency",
            "8",
            "--json",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let regions = report["regions"].as_array().unwrap();
    let total = regions.iter().find(|r| r["region"] == "total").unwrap();
    assert_eq!(total["requests"], 3000, "{report}");
    assert_eq!(total["errors"], 0, "{report}");
    let edge_hits = total["edge_hit_ratio"].as_f64().unwrap();
    assert!(edge_hits > 0.5, "a Zipf workload hits the edges: {report}");
    for r in ["eu", "us"] {
        assert!(regions.iter().any(|x| x["region"] == r), "{report}");
    }

    // The control plane: the address file holds the API and the admin key (owner-only), and
    // `outpost purge` reaches every node before it returns.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&addr_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the address file holds the admin key");
    assert!(v["control"]["admin_key"]
        .as_str()
        .unwrap()
        .starts_with("opk_"));
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args([
            "purge",
            "--url",
            "http://demo.localhost/obj/abc-2000",
            "--addr-file",
        ])
        .arg(&addr_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("done on 6 nodes"), "{text}");
    let after = http_get(edge("us"), "demo.localhost", "/obj/abc-2000", &[])
        .await
        .unwrap();
    assert!(
        !cache_status(&after).contains("; hit"),
        "purged on every tier: {}",
        cache_status(&after)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["tenant", "list", "--addr-file"])
        .arg(&addr_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo.localhost"));
    // HTTPS on the first edge, verified against the local CA the banner names, over h2.
    let ca = v["tls"]["ca"].as_str().unwrap().to_string();
    assert_eq!(v["tls"]["addr"], format!("127.0.0.1:{}", base + 34), "{v}");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--cacert",
            &ca,
        ])
        .args([
            "--resolve",
            &format!("demo.localhost:{}:127.0.0.1", base + 34),
        ])
        .arg(format!("https://demo.localhost:{}/", base + 34))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    // The GeoDNS node of the world answers the demo tenant, and a tenant created through the
    // API (no file, no restart) within a few seconds.
    let v = nodes(&addr_file);
    assert_eq!(v["dns"]["addr"], format!("127.0.0.1:{}", base + 32), "{v}");
    if Command::new("dig").arg("-v").output().is_ok() {
        let dig = |name: &str| -> String {
            let out = Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &(base + 32).to_string(),
                    name,
                    "A",
                    "+time=2",
                    "+tries=2",
                    "+noall",
                    "+comments",
                    "+answer",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let a = dig("demo.localhost");
        assert!(
            a.contains("status: NOERROR") && a.contains("127.0.0.1"),
            "{a}"
        );
        assert!(dig("shop.example.net").contains("status: REFUSED"));
        let tenant = d.join("shop.json");
        std::fs::write(
            &tenant,
            format!(
                r#"{{"name":"shop","hostnames":["shop.example.net"],"origins":["http://127.0.0.1:{}"]}}"#,
                base + 30
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["tenant", "create"])
            .arg(&tenant)
            .arg("--addr-file")
            .arg(&addr_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = Instant::now();
        loop {
            let a = dig("shop.example.net");
            if a.contains("status: NOERROR") && a.contains("127.0.0.1") {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "{a}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Warm two URLs in eu: both eu edges report, and the objects are then hits there.
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args([
            "warm",
            "--url",
            "http://demo.localhost/obj/warm1-100",
            "--url",
            "http://demo.localhost/obj/warm2-100",
            "--region",
            "eu",
            "--addr-file",
        ])
        .arg(&addr_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("done: 4 of 4 fetched"), "{text}");
    let warmed = http_get(edge("eu"), "demo.localhost", "/obj/warm1-100", &[])
        .await
        .unwrap();
    assert!(
        cache_status(&warmed).contains("; hit"),
        "{}",
        cache_status(&warmed)
    );
    // The load above shows in the analytics (rollups arrive with heartbeats, every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["stats", "--json", "--addr-file"])
            .arg(&addr_file)
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["requests"].as_u64().unwrap_or(0) >= 3002 {
            assert_eq!(v["by_region"].as_array().unwrap().len(), 2, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_client_latency_shows_in_timings() {
    let base = free_base(5);
    let d = dir("latency");
    let demo = base + 3;
    let toml = format!(
        "[topology]\n[topology.latency]\nclient = \"300ms\"\n\
         [[topology.pop]]\nname = \"p\"\nregion = \"r\"\n\
         [[topology.pop.box]]\nname = \"b1\"\nlisten = \"127.0.0.1:{}\"\n\
         [[tenant]]\nname = \"demo\"\nhostnames = [\"demo.localhost\"]\norigins = [\"http://127.0.0.1:{demo}\"]\n",
        base
    );
    let path = d.join("world.toml");
    std::fs::write(&path, toml).unwrap();
    let args = vec![
        "--topology".to_string(),
        path.display().to_string(),
        "--demo-listen".into(),
        format!("127.0.0.1:{demo}"),
        "--api".into(),
        format!("127.0.0.1:{}", base + 4),
        "--dns".into(),
        String::new(),
    ];
    let _world = up(d, &args).await;
    let edge: SocketAddr = format!("127.0.0.1:{base}").parse().unwrap();
    http_get(edge, "demo.localhost", "/obj/x-10", &[])
        .await
        .unwrap();
    let t0 = Instant::now();
    let r = http_get(edge, "demo.localhost", "/obj/x-10", &[])
        .await
        .unwrap();
    assert!(cache_status(&r).contains("hit"), "{}", cache_status(&r));
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "a hit still pays the client link: {:?}",
        t0.elapsed()
    );
}
