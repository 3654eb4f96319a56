//! ACME end to end against Debian's pebble on 127.0.0.1, validating for real (no
//! PEBBLE_VA_ALWAYS_VALID): pebble resolves the tenant's name through pebble-challtestsrv's DNS
//! (every name → 127.0.0.1) and fetches the HTTP-01 token from the edge's own HTTP listener.
//!
//! A tenant with no certificate gets one issued and served; with pebble's certificate lifetime
//! shortened to 20 s it is renewed at two thirds of it; then pebble is stopped, the renewal fails,
//! and the last certificate keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_config::{AcmeChallenge, AcmeConfig, Config, Dur, TenantTlsConfig};
use outpost_testkit::{free_port, wait_port, Proc, RouteSpec, ScratchDir, TestOrigin};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn tempdir(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("outpost-acme-{name}-{}", std::process::id())).unwrap()
}

/// A CA and pebble's HTTPS certificate (localhost, 127.0.0.1) signed by it.
fn pebble_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "test CA for pebble");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    let (c, k, capath) = (
        dir.join("pebble.pem"),
        dir.join("pebble.key"),
        dir.join("ca.pem"),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    std::fs::write(&capath, ca.pem()).unwrap();
    (c, k, capath)
}

/// The leaf certificate the edge serves for `sni` (PEM), if the handshake succeeds.
fn served(tls: std::net::SocketAddr, sni: &str) -> Option<String> {
    let out = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(tls.to_string())
        .args(["-servername", sni])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start + 25;
    Some(text[start..end].to_string())
}

fn first_pem(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start + 25;
    Some(text[start..end].to_string())
}

fn issuer(tls: std::net::SocketAddr, sni: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "timeout 10 openssl s_client -connect {tls} -servername {sni} </dev/null 2>/dev/null | openssl x509 -noout -issuer"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// An edge with one ACME tenant (shop.test, no certificate yet), pebble-challtestsrv's DNS
/// (every name → 127.0.0.1) and pebble validating against the edge's listeners.
struct World {
    dir: ScratchDir,
    edge: outpost_proxy::RunningNode,
    tls: std::net::SocketAddr,
    _origin: TestOrigin,
    _dns: Proc,
    pebble: Option<Proc>,
}

async fn world(name: &str, challenge: AcmeChallenge) -> World {
    assert!(
        Command::new("pebble").arg("-h").output().is_ok(),
        "pebble is missing: scripts/test.sh installs it"
    );
    let dir = tempdir(name);
    let (pcert, pkey, ca) = pebble_pki(&dir);
    let (acme_port, mgmt_port, dns_port, chall_mgmt) =
        (free_port(), free_port(), free_port(), free_port());

    // The edge first: pebble must know its ports.
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/", RouteSpec::ok("shop home", "max-age=60"));
    let mut cfg = Config::single_origin("127.0.0.1:0", &origin.url()).unwrap();
    cfg.node.metrics = String::new();
    cfg.node.tls_listen = "127.0.0.1:0".into();
    cfg.node.acme = Some(AcmeConfig {
        directory: format!("https://127.0.0.1:{acme_port}/dir"),
        contact: vec!["mailto:ops@shop.test".into()],
        ca_file: ca.display().to_string(),
        state_dir: dir.join("acme").display().to_string(),
        min_backoff: Dur(Duration::from_millis(500)),
        max_backoff: Dur(Duration::from_secs(2)),
        challenge,
        ..AcmeConfig::default()
    });
    cfg.tenants[0].name = "shop".into();
    cfg.tenants[0].hostnames = vec!["shop.test".into()];
    cfg.tenants[0].tls = Some(TenantTlsConfig {
        cert: dir.join("shop.pem").display().to_string(),
        key: dir.join("shop.key").display().to_string(),
        acme: true,
        ..Default::default()
    });
    cfg.validate().unwrap();
    let edge = outpost_proxy::start(&cfg).await.unwrap();
    let tls = edge.tls_addr.unwrap();
    // No certificate yet: the handshake for shop.test fails.
    assert!(served(tls, "shop.test").is_none());

    let dns = Proc(
        Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{chall_mgmt}"),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("challtestsrv.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_port(chall_mgmt);
    let pebble_cfg = dir.join("pebble.json");
    std::fs::write(
        &pebble_cfg,
        serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": pcert,
            "privateKey": pkey,
            // With TLS-ALPN-01 pebble's HTTP validation port is a closed one: only the
            // HTTPS listener can prove the name.
            "httpPort": if challenge == AcmeChallenge::Http01 { edge.addr.port() } else { free_port() },
            "tlsPort": tls.port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": 20,
        }})
        .to_string(),
    )
    .unwrap();
    let pebble = Proc(
        Command::new("pebble")
            .arg("-config")
            .arg(&pebble_cfg)
            .args([
                "-dnsserver",
                &format!("127.0.0.1:{dns_port}"),
                "-strict=false",
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(std::fs::File::create(dir.join("pebble.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(acme_port);
    World {
        dir,
        edge,
        tls,
        _origin: origin,
        _dns: dns,
        pebble: Some(pebble),
    }
}

/// Wait for shop.test to be served with a certificate from pebble; returns its PEM.
async fn issued(w: &World) -> String {
    let t = Instant::now();
    let first = loop {
        if let Some(c) = served(w.tls, "shop.test") {
            break c;
        }
        assert!(
            t.elapsed() < Duration::from_secs(45),
            "no certificate issued; pebble log: {}",
            std::fs::read_to_string(w.dir.join("pebble.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("issued after {:?}", t.elapsed());
    assert!(
        issuer(w.tls, "shop.test").contains("Pebble"),
        "{}",
        issuer(w.tls, "shop.test")
    );
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_issued_renewed_and_kept_when_the_ca_is_gone() {
    let mut w = world("http01", AcmeChallenge::Http01).await;
    let (dir, tls) = (w.dir.to_path_buf(), w.tls);
    // 1. Issued (HTTP-01 on the edge's HTTP listener) and served.
    let first = issued(&w).await;
    assert_eq!(
        first_pem(&dir.join("shop.pem")).as_deref(),
        Some(first.as_str())
    );
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("shop.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    let cert_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("shop.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(cert_mode & 0o777, 0o600);
    let acct_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("acme/account.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(acct_mode & 0o777, 0o600);

    // 2. Renewed at two thirds of its 20 s lifetime.
    let t = Instant::now();
    let second = loop {
        if let Some(c) = served(tls, "shop.test") {
            if c != first {
                break c;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(40), "never renewed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("renewed {:?} after the first was served", t.elapsed());
    assert!(w.edge.node.acme.issued.load(Ordering::Relaxed) >= 2);

    // 3. The CA goes away: the next renewal fails and the last certificate keeps serving.
    drop(w.pebble.take());
    let failed_before = w.edge.node.acme.failed.load(Ordering::Relaxed);
    let t = Instant::now();
    while w.edge.node.acme.failed.load(Ordering::Relaxed) == failed_before {
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "no renewal was attempted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(served(tls, "shop.test").as_deref(), Some(second.as_str()));
    eprintln!(
        "renewal failed {:?} after the CA stopped; the last certificate still serves",
        t.elapsed()
    );
    // And the edge still answers over HTTPS with it (verification aside: pebble's roots are
    // per run).
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
        .arg(format!("shop.test:{}:127.0.0.1", tls.port()))
        .arg(format!("https://shop.test:{}/", tls.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

/// TLS-ALPN-01 (RFC 8737): pebble connects to the edge's HTTPS listener offering only
/// `acme-tls/1` and checks the validation certificate; the tenant's certificate is then issued
/// and served. Outside a pending order, an `acme-tls/1` connection gets no certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_is_answered_by_the_https_listener() {
    let w = world("alpn", AcmeChallenge::TlsAlpn01).await;
    let first = issued(&w).await;
    assert_eq!(
        first_pem(&w.dir.join("shop.pem")).as_deref(),
        Some(first.as_str())
    );
    assert!(w.edge.node.acme.issued.load(Ordering::Relaxed) >= 1);
    // No order pending: acme-tls/1 gets no certificate (never the tenant's).
    let out = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(w.tls.to_string())
        .args(["-servername", "shop.test", "-alpn", "acme-tls/1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
}
