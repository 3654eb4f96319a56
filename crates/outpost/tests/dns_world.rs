//! GeoDNS end to end with real processes and a real DNS client: four PoPs on three continents
//! (`outpost node` edge processes), `outpost dns` with the CC0 GeoIP database, and Debian's
//! `dig` (scripts/test.sh installs dnsutils and runs scripts/install-geoip.sh).
//!
//! - Client subnets from eleven countries on five continents get their expected PoP, with the ECS
//!   scope prefix set; an explicit country → region entry beats distance.
//! - End to end: the answer for a UK subnet is the PoP whose edge `curl --resolve` then reaches,
//!   and `Cache-Status` names that edge.
//! - Failover: both edges of the Frankfurt PoP are killed; the UK answer moves to the next nearest
//!   PoP within one probe interval (measured); restarted, the answer comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_testkit::{free_port, wait_port, Proc, RouteSpec, ScratchDir, TestOrigin};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn geoip() -> PathBuf {
    let p = std::env::var("OUTPOST_GEOIP")
        .ok()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".outpost/geoip/country.mmdb")
        });
    assert!(
        p.exists(),
        "GeoIP database {} missing: run scripts/install-geoip.sh",
        p.display()
    );
    p
}

fn dig_available() -> bool {
    Command::new("dig").arg("-v").output().is_ok()
}

/// One edge box: a single-origin `outpost node`.
fn edge(dir: &Path, name: &str, port: u16, metrics: u16, origin: &str) -> Proc {
    let p = Proc(
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args([
                "node",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics",
                &format!("127.0.0.1:{metrics}"),
                "--origin",
                origin,
                "--name",
                name,
                "--ram-bytes",
                "16M",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    wait_port(metrics);
    p
}

#[derive(Debug)]
struct Dig {
    status: String,
    addrs: Vec<String>,
    scope: Option<u8>,
    aa: bool,
}

fn dig(port: u16, name: &str, qtype: &str, subnet: Option<&str>) -> Dig {
    let mut cmd = Command::new("dig");
    cmd.args([
        "@127.0.0.1",
        "-p",
        &port.to_string(),
        name,
        qtype,
        "+time=2",
        "+tries=2",
        "+noall",
        "+comments",
        "+answer",
    ]);
    if let Some(s) = subnet {
        cmd.arg(format!("+subnet={s}"));
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none")
        .to_string();
    let aa = text
        .lines()
        .any(|l| l.starts_with(";; flags:") && l.contains(" aa"));
    // "; CLIENT-SUBNET: 81.2.69.0/24/18"
    let scope = text
        .lines()
        .find(|l| l.contains("CLIENT-SUBNET:"))
        .and_then(|l| l.trim().rsplit('/').next())
        .and_then(|s| s.trim().parse().ok());
    let addrs = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5 && (f[3] == "A" || f[3] == "AAAA")).then(|| f[4].to_string())
        })
        .collect();
    Dig {
        status,
        addrs,
        scope,
        aa,
    }
}

const TOPOLOGY: &str = r#"
[[tenant]]
name = "site"
hostnames = ["www.example.com"]
origins = ["http://127.0.0.1:9"]

[topology]
[[topology.region]]
name = "eu"
lat = 50.1
lon = 8.7
countries = ["ZA"]
[[topology.region]]
name = "us"
lat = 39.0
lon = -77.5
[[topology.region]]
name = "ap"
lat = 1.35
lon = 103.8
[[topology.region]]
name = "sa"
lat = -23.5
lon = -46.6
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geodns_steers_by_client_subnet_fails_over_and_reaches_the_answered_pop() {
    if !dig_available() {
        panic!("dig is missing: scripts/test.sh installs dnsutils");
    }
    let geo = geoip();
    let dir = tempdir();
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/page",
        RouteSpec::ok("hello from the origin", "max-age=60"),
    );

    // PoPs: fra (two boxes) answers 127.0.0.1, where its edges listen; the others answer
    // TEST-NET addresses (never contacted: only their health endpoints are probed).
    let pops = [
        ("fra", "eu", "127.0.0.1", vec!["fra-a", "fra-b"]),
        ("iad", "us", "192.0.2.2", vec!["iad-a"]),
        ("sin", "ap", "192.0.2.3", vec!["sin-a"]),
        ("gru", "sa", "192.0.2.4", vec!["gru-a"]),
    ];
    let mut cfg = TOPOLOGY.to_string();
    let mut procs: Vec<(String, u16, u16, Proc)> = Vec::new();
    for (pop, region, addr, boxes) in &pops {
        cfg.push_str(&format!(
            "\n[[topology.pop]]\nname = \"{pop}\"\nregion = \"{region}\"\naddresses = [\"{addr}\"{}]\n",
            if *pop == "iad" { ", \"2001:db8::2\"" } else { "" }
        ));
        for b in boxes {
            let (port, metrics) = (free_port(), free_port());
            cfg.push_str(&format!(
                "[[topology.pop.box]]\nname = \"{b}\"\nlisten = \"127.0.0.1:{port}\"\nmetrics = \"127.0.0.1:{metrics}\"\n"
            ));
            let p = edge(&dir, b, port, metrics, &origin.url());
            procs.push((b.to_string(), port, metrics, p));
        }
    }
    let (dns_port, admin_port) = (free_port(), free_port());
    cfg.push_str(&format!(
        "\n[dns]\nlisten = \"127.0.0.1:{dns_port}\"\nadmin = \"127.0.0.1:{admin_port}\"\nzone = \"cdn.test\"\nprobe_interval = \"500ms\"\nprobe_timeout = \"300ms\"\nprobe_rise = 2\n"
    ));
    let cfg_path = dir.join("dns.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let _dns = Proc(
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["dns", "--config"])
            .arg(&cfg_path)
            .arg("--geoip")
            .arg(&geo)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dns.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_port(dns_port);

    // 1. Eleven countries, five continents.
    let cases = [
        ("81.2.69.0/24", "GB", "127.0.0.1"),
        ("5.9.0.0/24", "DE", "127.0.0.1"),
        ("193.0.0.0/24", "NL", "127.0.0.1"),
        ("8.8.8.0/24", "US", "192.0.2.2"),
        ("24.48.0.0/24", "CA", "192.0.2.2"),
        ("1.0.16.0/24", "JP", "192.0.2.3"),
        ("49.44.0.0/24", "IN", "192.0.2.3"),
        ("1.1.1.0/24", "AU", "192.0.2.3"),
        ("200.160.0.0/24", "BR", "192.0.2.4"),
        // Nearer São Paulo than Frankfurt, but the eu region lists ZA.
        ("196.25.1.0/24", "ZA", "127.0.0.1"),
    ];
    for (subnet, country, want) in cases {
        let d = dig(dns_port, "www.example.com", "A", Some(subnet));
        assert_eq!(d.status, "NOERROR", "{country} {subnet}: {d:?}");
        assert!(d.aa, "authoritative: {d:?}");
        assert_eq!(d.addrs, vec![want.to_string()], "{country} {subnet}: {d:?}");
        let scope = d.scope.expect("the ECS option is echoed");
        assert!(scope > 0 && scope <= 32, "{country}: scope /{scope}");
        eprintln!("{country:<3} {subnet:<16} -> {want:<10} scope /{scope}");
    }
    // IPv6 subnet (US) asking AAAA; and the CNAME target form.
    let d = dig(dns_port, "www.example.com", "AAAA", Some("2001:4860::/32"));
    assert_eq!(d.addrs, vec!["2001:db8::2".to_string()], "{d:?}");
    assert!(d.scope.unwrap() > 0);
    let d = dig(
        dns_port,
        "www.example.com.cdn.test",
        "A",
        Some("81.2.69.0/24"),
    );
    assert_eq!(d.addrs, vec!["127.0.0.1".to_string()], "{d:?}");
    // Without ECS: the resolver (127.0.0.1) has no location: the default region (eu, the first).
    let d = dig(dns_port, "www.example.com", "A", None);
    assert_eq!(d.addrs, vec!["127.0.0.1".to_string()], "{d:?}");
    assert_eq!(d.scope, None);

    // 4. End to end: resolve, then request from the answered PoP.
    let d = dig(dns_port, "www.example.com", "A", Some("81.2.69.0/24"));
    let answered = d.addrs[0].clone();
    let (_, fra_a_port, _, _) = procs.iter().find(|p| p.0 == "fra-a").unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "--resolve",
            &format!("www.example.com:{fra_a_port}:{answered}"),
            &format!("http://www.example.com:{fra_a_port}/page"),
        ])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let cs = head
        .lines()
        .find(|l| l.starts_with("cache-status:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        cs.contains("fra-a"),
        "Cache-Status names the answered PoP's edge: {cs}"
    );

    // 2. Failover: kill both fra edges; the UK answer moves to the next nearest (iad).
    let mut fra: Vec<(String, u16, u16, Proc)> = Vec::new();
    let mut rest = Vec::new();
    for p in procs {
        if p.0.starts_with("fra") {
            fra.push(p);
        } else {
            rest.push(p);
        }
    }
    let killed_at = Instant::now();
    let mut relaunch = Vec::new();
    for (name, port, metrics, p) in fra {
        drop(p);
        relaunch.push((name, port, metrics));
    }
    let moved = loop {
        let d = dig(dns_port, "www.example.com", "A", Some("81.2.69.0/24"));
        if d.addrs == vec!["192.0.2.2".to_string()] {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "the answer never moved: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    eprintln!(
        "failover: UK answer moved fra -> iad {moved:?} after the kill (probe interval 500ms)"
    );
    // One probe interval (500 ms) plus the dig round trip and scheduling slack.
    assert!(moved < Duration::from_millis(1500), "{moved:?}");

    // Restart: the answer comes back after probe_rise (2) good probes.
    let back_at = Instant::now();
    let mut _restarted = Vec::new();
    for (name, port, metrics) in &relaunch {
        _restarted.push(edge(&dir, name, *port, *metrics, &origin.url()));
    }
    let back = loop {
        let d = dig(dns_port, "www.example.com", "A", Some("81.2.69.0/24"));
        if d.addrs == vec!["127.0.0.1".to_string()] {
            break back_at.elapsed();
        }
        assert!(
            back_at.elapsed() < Duration::from_secs(15),
            "the answer never came back: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    eprintln!("restore: UK answer back at fra {back:?} after the restart began");

    // Maintenance: drain fra in the file and SIGHUP: its clients move at once, health aside.
    let drained = cfg.replace("name = \"fra\"\n", "name = \"fra\"\ndrain = true\n");
    assert_ne!(drained, cfg);
    std::fs::write(&cfg_path, &drained).unwrap();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &_dns.id().to_string()])
            .status()
            .unwrap()
    };
    hup();
    let t = Instant::now();
    loop {
        let d = dig(dns_port, "www.example.com", "A", Some("81.2.69.0/24"));
        if d.addrs == vec!["192.0.2.2".to_string()] {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "drain never applied: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("drain: applied {:?} after SIGHUP", t.elapsed());
    // A broken file is refused; the running config stays.
    std::fs::write(&cfg_path, "[topology\n").unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = dig(dns_port, "www.example.com", "A", Some("81.2.69.0/24"));
    assert_eq!(d.addrs, vec!["192.0.2.2".to_string()], "{d:?}");
    std::fs::write(&cfg_path, &cfg).unwrap();
    hup();
    let t = Instant::now();
    loop {
        let d = dig(dns_port, "www.example.com", "A", Some("81.2.69.0/24"));
        if d.addrs == vec!["127.0.0.1".to_string()] {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "undrain never applied: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Metrics: answers by PoP and source, health changes (kept across reloads).
    let m = http_text(admin_port, "/metrics").await;
    assert!(
        metric(&m, "outpost_dns_answers_total{pop=\"fra\",source=\"ecs\"}") >= 5.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "outpost_dns_answers_total{pop=\"fra\",source=\"resolver\"}"
        ) >= 1.0
    );
    assert!(
        metric(&m, "outpost_dns_health_changes_total{pop=\"fra\"}") >= 2.0,
        "{m}"
    );
    assert_eq!(metric(&m, "outpost_dns_pop_up{pop=\"fra\"}"), 1.0);

    // `outpost explain --dns` against the running node.
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args([
            "explain",
            "--dns",
            "www.example.com",
            "--subnet",
            "81.2.69.0/24",
            "--server",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("GB"), "{text}");
    assert!(text.contains("1. fra"), "{text}");
    assert!(text.contains("chosen"), "{text}");
    drop(rest);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

async fn http_text(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut b = Vec::new();
    s.read_to_end(&mut b).await.unwrap();
    String::from_utf8_lossy(&b).to_string()
}

fn tempdir() -> ScratchDir {
    ScratchDir::new(&format!(
        "outpost-dns-world-{}-{}",
        std::process::id(),
        free_port()
    ))
    .unwrap()
}
