//! TLS and HTTP/2 at the edge, with real clients: curl (`--http2`, `--http1.1`,
//! `--http2-prior-knowledge`) and `openssl s_client` (SNI per tenant, unknown SNI, resumption with
//! `-reconnect`), certificate reload without a restart, the HTTPS redirect and HSTS, and two h2
//! abuse clients written here (rapid reset, CONTINUATION flood) that must lose their connection
//! while other clients are served at normal latency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_config::{Config, Dur, TenantConfig, TenantTlsConfig};
use outpost_testkit::{http_get, RouteSpec, ScratchDir, TestOrigin};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    ca: PathBuf,
}

/// A CA, and certificates it signs for `names` written as `<file>.pem` / `<file>.key`.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(dir: &Path) -> (Self, Pki) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        (Self { cert, key }, Pki { ca })
    }

    fn issue(&self, dir: &Path, file: &str, names: &[&str], cn: &str) -> (String, String) {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let c = dir.join(format!("{file}.pem"));
        let k = dir.join(format!("{file}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }
}

fn tempdir(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("outpost-tls-{name}-{}", std::process::id())).unwrap()
}

fn tenant(base: &TenantConfig, name: &str, hosts: &[&str], tls: (String, String)) -> TenantConfig {
    TenantConfig {
        name: name.into(),
        hostnames: hosts.iter().map(|h| h.to_string()).collect(),
        tls: Some(TenantTlsConfig {
            cert: tls.0,
            key: tls.1,
            ..Default::default()
        }),
        ..base.clone()
    }
}

struct Edge {
    http: SocketAddr,
    https: SocketAddr,
    _node: outpost_proxy::RunningNode,
    origin: TestOrigin,
    ca: PathBuf,
    dir: ScratchDir,
    ca_issuer: Ca,
}

/// Tenants: "a" (a.test, TLS redirect + HSTS) with its own certificate, "shop" (*.shop.test)
/// with a wildcard certificate; no default certificate unless `default`.
async fn edge(name: &str, default: bool) -> Edge {
    edge_with(name, default, |_| {}).await
}

async fn edge_with(name: &str, default: bool, tweak: impl FnOnce(&mut Config)) -> Edge {
    let dir = tempdir(name);
    let (ca_issuer, pki) = Ca::new(&dir);
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/page", RouteSpec::ok("hello over tls", "max-age=60"));
    let mut cfg = Config::single_origin("127.0.0.1:0", &origin.url()).unwrap();
    cfg.node.metrics = String::new();
    cfg.node.tls_listen = "127.0.0.1:0".into();
    let base = cfg.tenants[0].clone();
    let mut a = tenant(
        &base,
        "a",
        &["a.test"],
        ca_issuer.issue(&dir, "a", &["a.test"], "a.test"),
    );
    if let Some(t) = a.tls.as_mut() {
        t.redirect_http = true;
        t.hsts_max_age = Dur(Duration::from_secs(31_536_000));
    }
    let shop = tenant(
        &base,
        "shop",
        &["www.shop.test", "img.shop.test"],
        ca_issuer.issue(&dir, "shop", &["*.shop.test"], "*.shop.test"),
    );
    cfg.tenants = vec![a, shop];
    if default {
        let (c, k) = ca_issuer.issue(&dir, "default", &["default.test"], "default.test");
        cfg.node.tls_default_cert = c;
        cfg.node.tls_default_key = k;
    }
    tweak(&mut cfg);
    cfg.validate().unwrap();
    let node = outpost_proxy::start(&cfg).await.unwrap();
    Edge {
        http: node.addr,
        https: node.tls_addr.unwrap(),
        _node: node,
        origin,
        ca: pki.ca,
        dir,
        ca_issuer,
    }
}

/// curl against the HTTPS listener: `host` resolves to it; returns (status line + headers).
fn curl(e: &Edge, host: &str, path: &str, extra: &[&str]) -> String {
    let port = e.https.port();
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(&e.ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
}

fn s_client(e: &Edge, sni: &str, extra: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(e.https.to_string())
        .args(["-servername", sni, "-CAfile"])
        .arg(&e.ca)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_sni_per_tenant_h2_and_http1_resumption_redirect_hsts() {
    let e = edge("main", false).await;
    // HTTP/2 by ALPN, verified against the test CA.
    let h = curl(&e, "a.test", "/page", &["--http2"]);
    assert!(h.starts_with("http/2 200"), "{h}");
    assert!(
        h.contains("strict-transport-security: max-age=31536000"),
        "{h}"
    );
    // HTTP/1.1 over TLS.
    let h = curl(&e, "a.test", "/page", &["--http1.1"]);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(
        h.contains("cache-status:") && h.contains("hit"),
        "second request hits: {h}"
    );
    // The wildcard certificate covers the shop tenant's names; no HSTS there.
    let h = curl(&e, "www.shop.test", "/page", &["--http2"]);
    assert!(h.starts_with("http/2 200"), "{h}");
    assert!(!h.contains("strict-transport-security"), "{h}");
    // The SNI names tenant a, the Host names shop: 421, on h2 and HTTP/1.1.
    for v in ["--http2", "--http1.1"] {
        let h = curl(&e, "a.test", "/page", &[v, "-H", "Host: www.shop.test"]);
        assert!(h.contains(" 421"), "{v}: {h}");
    }
    // openssl: the right certificate per SNI, verified; unknown SNI without a default
    // certificate is refused in the handshake.
    let o = s_client(&e, "a.test", &[]);
    assert!(o.contains("Verify return code: 0 (ok)"), "{o}");
    assert!(o.contains("CN = a.test") || o.contains("CN=a.test"), "{o}");
    let o = s_client(&e, "img.shop.test", &[]);
    assert!(o.contains("Verify return code: 0 (ok)"), "{o}");
    let o = s_client(&e, "nobody.test", &[]);
    assert!(
        o.contains("alert") && o.contains("no peer certificate available"),
        "{o}"
    );
    // Session resumption. TLS 1.2: `-reconnect` reuses the session (session cache / ticket).
    let o = s_client(&e, "a.test", &["-reconnect", "-tls1_2"]);
    assert!(o.matches("Reused,").count() >= 4, "TLS 1.2: {o}");
    // TLS 1.3: tickets arrive after the handshake, which `-reconnect` does not wait for
    // (an s_client limitation), so save the session and offer it again.
    let sess = e.dir.join("sess.pem");
    let first = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "sleep 1 | timeout 10 openssl s_client -connect {} -servername a.test -CAfile {} -tls1_3 -sess_out {}",
            e.https,
            e.ca.display(),
            sess.display()
        ))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&first.stdout).contains("New, TLSv1.3"));
    let o = s_client(
        &e,
        "a.test",
        &["-tls1_3", "-sess_in", sess.to_str().unwrap()],
    );
    assert!(o.contains("Reused, TLSv1.3"), "TLS 1.3: {o}");
    // Old protocols are refused.
    let o = s_client(&e, "a.test", &["-tls1_1"]);
    assert!(o.contains("no peer certificate available"), "{o}");
    // Plain HTTP for tenant a: 308 to HTTPS, same path; shop (no redirect) is served.
    let r = http_get(e.http, "a.test", "/page?x=1", &[]).await.unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").unwrap(),
        format!("https://a.test:{}/page?x=1", e.https.port())
    );
    let r = http_get(e.http, "www.shop.test", "/page", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // h2c with prior knowledge on the plain listener.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--http2-prior-knowledge",
        ])
        .args([
            "--resolve",
            &format!("www.shop.test:{}:127.0.0.1", e.http.port()),
        ])
        .arg(format!("http://www.shop.test:{}/page", e.http.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
}

/// `openssl s_client` on a TLS 1.3 session: `-sess_in` to resume, `-early_data` to send a file
/// as 0-RTT data, `-sess_out` to keep the session it gets. A GET of /page follows on stdin
/// (after the handshake), and s_client reads until the server closes.
fn s_client_early(
    e: &Edge,
    sess_in: Option<&Path>,
    early: Option<&Path>,
    sess_out: &Path,
) -> String {
    let mut cmd = format!(
        "printf 'GET /page HTTP/1.1\\r\\nHost: a.test\\r\\nConnection: close\\r\\n\\r\\n' | timeout 10 openssl s_client -connect {} -servername a.test -CAfile {} -tls1_3 -ign_eof -sess_out {}",
        e.https,
        e.ca.display(),
        sess_out.display()
    );
    if let Some(p) = sess_in {
        cmd += &format!(" -sess_in {}", p.display());
    }
    if let Some(p) = early {
        cmd += &format!(" -early_data {}", p.display());
    }
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// TLS 1.3 0-RTT (RFC 8446 §2.3, RFC 8470) with openssl s_client: a resumed client's GET sent
/// as early data is answered and reaches the origin marked `Early-Data: 1` (so it was served
/// before the handshake completed); a POST in early data gets 425 and never reaches the
/// origin; a replayed session's early data is refused (single-use resumption); without
/// `tls_early_data` no early data is accepted at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rtt_serves_safe_methods_early_and_refuses_the_rest_with_425() {
    let e = edge_with("0rtt", false, |c| {
        c.node.tls_early_data = outpost_config::ByteSize(16 * 1024);
    })
    .await;
    e.origin
        .route("/early", RouteSpec::ok("early bird", "max-age=60"));
    e.origin.route("/form", RouteSpec::ok("posted", "no-store"));
    let d = &e.dir;
    let get = d.join("get.txt");
    std::fs::write(
        &get,
        "GET /early HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let post = d.join("post.txt");
    std::fs::write(
        &post,
        "POST /form HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .unwrap();
    let (s0, s1, s2) = (d.join("s0.pem"), d.join("s1.pem"), d.join("s2.pem"));

    // A full handshake gives a session that allows early data.
    let o = s_client_early(&e, None, None, &s0);
    assert!(o.contains("New, TLSv1.3"), "{o}");
    assert!(o.contains("Max Early Data: 16384"), "{o}");

    // The GET as early data: accepted, answered, and the origin sees Early-Data: 1.
    let o = s_client_early(&e, Some(&s0), Some(&get), &s1);
    assert!(o.contains("Reused, TLSv1.3"), "{o}");
    assert!(o.contains("Early data was accepted"), "{o}");
    assert!(
        o.contains("HTTP/1.1 200") && o.contains("early bird"),
        "{o}"
    );
    let seen: Vec<_> = e
        .origin
        .requests()
        .into_iter()
        .filter(|r| r.uri.path() == "/early")
        .collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("early-data").map(|v| v.as_bytes()),
        Some(b"1".as_slice()),
        "forwarded before the handshake completed, so marked (RFC 8470 §5.1)"
    );

    // The same session again (a replay of its early data): the session was single-use, so
    // no resumption and no early data.
    let o = s_client_early(&e, Some(&s0), Some(&get), &s2);
    assert!(!o.contains("Early data was accepted"), "{o}");
    assert!(o.contains("New, TLSv1.3"), "{o}");
    assert_eq!(e.origin.hits("/early"), 1, "the replay reached nobody");

    // A POST as early data, on a fresh session (the early connection above may close before
    // its tickets are sent): 425, not forwarded.
    let s3 = d.join("s3.pem");
    let o = s_client_early(&e, None, None, &s3);
    assert!(o.contains("New, TLSv1.3"), "{o}");
    let o = s_client_early(&e, Some(&s3), Some(&post), &s0);
    assert!(o.contains("Early data was accepted"), "{o}");
    assert!(o.contains("HTTP/1.1 425"), "{o}");
    assert_eq!(e.origin.hits("/form"), 0);
    // After the handshake the same POST is served (curl: no early data).
    let h = curl(&e, "a.test", "/form", &["--http1.1", "-d", "abc"]);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert_eq!(e.origin.hits("/form"), 1);
    assert!(e
        .origin
        .requests()
        .iter()
        .filter(|r| r.uri.path() == "/form")
        .all(|r| !r.headers.contains_key("early-data")));

    // Everything else goes through the same stream: h2 and HTTP/1.1 with a 4 MiB body (the
    // writer waits on a full socket), several at once, byte-exact.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    e.origin
        .route("/big", RouteSpec::ok("", "max-age=60").body(big.clone()));
    let mut runs = Vec::new();
    for i in 0..6 {
        let out = d.join(format!("big{i}"));
        let v = if i % 2 == 0 { "--http2" } else { "--http1.1" };
        let child = Command::new("curl")
            .args(["-s", "--max-time", "20", v, "-o"])
            .arg(&out)
            .arg("--cacert")
            .arg(&e.ca)
            .args(["--resolve", &format!("a.test:{}:127.0.0.1", e.https.port())])
            .arg(format!("https://a.test:{}/big", e.https.port()))
            .spawn()
            .unwrap();
        runs.push((child, out));
    }
    for (mut c, out) in runs {
        assert!(c.wait().unwrap().success());
        assert!(std::fs::read(&out).unwrap() == big, "{}", out.display());
    }

    // Without tls_early_data, sessions allow no early data.
    let plain = edge("no-0rtt", false).await;
    let o = s_client_early(&plain, None, None, &s0);
    assert!(
        o.contains("New, TLSv1.3") && !o.contains("Max Early Data: 16384"),
        "{o}"
    );
    let o = s_client_early(&plain, Some(&s0), Some(&get), &s1);
    assert!(!o.contains("Early data was accepted"), "{o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_certificate_and_a_renewed_certificate_without_restart() {
    let e = edge("reload", true).await;
    let o = s_client(&e, "unknown.test", &[]);
    assert!(
        o.contains("CN = default.test") || o.contains("CN=default.test"),
        "{o}"
    );
    // Replace a.test's files: the new certificate is served within a few seconds.
    let before = s_client(&e, "a.test", &[]);
    assert!(before.contains("CN = a.test") || before.contains("CN=a.test"));
    e.ca_issuer
        .issue(&e.dir, "a", &["a.test"], "a.test renewed");
    let t = Instant::now();
    loop {
        let o = s_client(&e, "a.test", &[]);
        if o.contains("a.test renewed") {
            assert!(o.contains("Verify return code: 0 (ok)"), "{o}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "not reloaded: {o}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken file keeps the last good certificate.
    std::fs::write(e.dir.join("a.pem"), "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let o = s_client(&e, "a.test", &[]);
    assert!(
        o.contains("a.test renewed") && o.contains("Verify return code: 0 (ok)"),
        "{o}"
    );
}

// --- h2 abuse (h2c on the plain listener: the same driver serves h2 over TLS) ---------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A HEADERS block for GET /page on `host` (HPACK: static-table indices and literals).
fn get_block(host: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.push(0x04); // :path, literal without indexing, name index 4
    b.push(5);
    b.extend_from_slice(b"/page");
    b.push(0x01); // :authority, literal without indexing, name index 1
    b.push(host.len() as u8);
    b.extend_from_slice(host.as_bytes());
    b
}

/// Read until EOF or `limit`; true when the server closed the connection (or sent GOAWAY and
/// closed).
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// p50 of 20 sequential normal requests.
async fn normal_latency(addr: SocketAddr) -> Duration {
    let mut v = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = http_get(addr, "www.shop.test", "/page", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        v.push(t.elapsed());
    }
    v.sort();
    v[10]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_and_continuation_floods_lose_their_connection_not_the_node() {
    let e = edge("abuse", false).await;
    let baseline = normal_latency(e.http).await;

    // Rapid reset (CVE-2023-44487): open a stream and reset it at once, 10,000 times.
    let mut s = tokio::net::TcpStream::connect(e.http).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(4, 0, 0, &[])).await.unwrap(); // SETTINGS
    let block = get_block("www.shop.test");
    let mut burst = Vec::new();
    let mut sent = 0u32;
    let mut id = 1u32;
    let attack = async {
        while sent < 10_000 {
            burst.clear();
            for _ in 0..100 {
                burst.extend(frame(1, 0x04 | 0x01, id, &block)); // HEADERS, END_HEADERS|END_STREAM
                burst.extend(frame(3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
                id += 2;
                sent += 1;
            }
            if s.write_all(&burst).await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), attack)
        .await
        .unwrap();
    let during = normal_latency(e.http).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "the rapid-reset client keeps its connection"
    );
    eprintln!(
        "rapid reset: {sent} streams reset; normal p50 {baseline:?} before, {during:?} after"
    );

    // CONTINUATION flood: a HEADERS frame without END_HEADERS, then CONTINUATION frames that
    // never end (each 16 KiB of header bytes).
    let mut s = tokio::net::TcpStream::connect(e.http).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    s.write_all(&frame(1, 0, 1, &block)).await.unwrap(); // HEADERS, no END_HEADERS
    let mut junk = Vec::new();
    for i in 0..16_000u32 {
        // literal header without indexing, new name: x-<i> = 100 bytes of 'a'
        let name = format!("x-{i}");
        junk.push(0x00);
        junk.push(name.len() as u8);
        junk.extend_from_slice(name.as_bytes());
        junk.push(100);
        junk.extend(std::iter::repeat_n(b'a', 100));
        if junk.len() > 16_000 {
            break;
        }
    }
    let cont = frame(9, 0, 1, &junk);
    let flood = async {
        for _ in 0..2_000 {
            if s.write_all(&cont).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), flood).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "the CONTINUATION flooder keeps its connection"
    );
    let after = normal_latency(e.http).await;
    eprintln!("continuation flood: normal p50 {after:?} after (baseline {baseline:?})");
    // "Normal latency": well under a human-visible delay, and not an order of magnitude worse.
    assert!(after < Duration::from_millis(200) && during < Duration::from_millis(200));
}

// --- origins over HTTPS ----------------------------------------------------------------------

/// An HTTPS origin: an Outpost node with a certificate for `localhost` from `ca`, in front of a
/// test origin.
async fn tls_origin(ca: &Ca, dir: &Path) -> (outpost_proxy::RunningNode, TestOrigin) {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/o", RouteSpec::ok("from the https origin", "max-age=60"));
    let mut cfg = Config::single_origin("127.0.0.1:0", &origin.url()).unwrap();
    cfg.node.name = "https-origin".into();
    cfg.node.metrics = String::new();
    cfg.node.tls_listen = "127.0.0.1:0".into();
    let base = cfg.tenants[0].clone();
    cfg.tenants = vec![tenant(
        &base,
        "o",
        &["localhost", "site.test"],
        ca.issue(dir, "origin", &["localhost"], "localhost"),
    )];
    // No SNI (an IP address): the default certificate, for another name.
    let (c, k) = ca.issue(dir, "origin-default", &["other.test"], "other.test");
    cfg.node.tls_default_cert = c;
    cfg.node.tls_default_key = k;
    cfg.validate().unwrap();
    (outpost_proxy::start(&cfg).await.unwrap(), origin)
}

async fn edge_to(origin: &str, ca_file: &str) -> outpost_proxy::RunningNode {
    let mut cfg = Config::single_origin("127.0.0.1:0", origin).unwrap();
    cfg.node.metrics = String::new();
    cfg.tenants[0].hostnames = vec!["site.test".into()];
    cfg.tenants[0].origin_pool.ca_file = ca_file.into();
    cfg.validate().unwrap();
    outpost_proxy::start(&cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origins_are_verified_and_a_failure_is_a_502_naming_the_cause() {
    let dir = tempdir("origin");
    let (ca, pki) = Ca::new(&dir);
    let (o, _backend) = tls_origin(&ca, &dir).await;
    let port = o.tls_addr.unwrap().port();
    // Verified against the configured CA bundle, SNI "localhost".
    let good = edge_to(
        &format!("https://localhost:{port}"),
        pki.ca.to_str().unwrap(),
    )
    .await;
    let r = http_get(good.addr, "site.test", "/o", &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "from the https origin");
    // The system's roots do not know the test CA: 502, and the body says why.
    let untrusted = edge_to(&format!("https://localhost:{port}"), "").await;
    let r = http_get(untrusted.addr, "site.test", "/o", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    let t = r.text();
    assert!(
        t.contains("upstream-tls-error") && t.contains("UnknownIssuer"),
        "{t}"
    );
    // The right CA but the wrong name (no SNI for an IP: the default certificate, other.test).
    let wrong = edge_to(
        &format!("https://127.0.0.1:{port}"),
        pki.ca.to_str().unwrap(),
    )
    .await;
    let r = http_get(wrong.addr, "site.test", "/o", &[]).await.unwrap();
    assert_eq!(r.status, 502);
    let t = r.text();
    assert!(
        t.contains("upstream-tls-error") && t.contains("not valid for name"),
        "{t}"
    );
    // A missing CA bundle is a config error naming the field.
    let mut cfg = Config::single_origin("127.0.0.1:0", "https://localhost:1").unwrap();
    cfg.tenants[0].origin_pool.ca_file = "/nonexistent/ca.pem".into();
    let e = cfg.validate().unwrap_err();
    assert_eq!(e.path, "tenant[0].origin_pool.ca_file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_h2_requests_coalesce_and_range_and_conditionals_work() {
    let e = edge("h2-flow", false).await;
    // A slow object: 20 concurrent requests on one h2 connection make one origin fetch.
    e.origin.route(
        "/slow",
        RouteSpec::ok(&"x".repeat(100_000), "max-age=60").delay(Duration::from_millis(400)),
    );
    let port = e.https.port();
    let url = format!("https://a.test:{port}/slow");
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--http2",
        "--parallel",
        "--parallel-max",
        "20",
        "--cacert",
    ])
    .arg(&e.ca)
    .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
    .args([
        "-w",
        "%{http_version} %{http_code} %{size_download}\n",
        "-o",
        "/dev/null",
    ]);
    for _ in 0..20 {
        cmd.arg(&url).args(["-o", "/dev/null"]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20, "{text}");
    assert!(lines.iter().all(|l| *l == "2 200 100000"), "{text}");
    let fetches = e
        .origin
        .requests()
        .iter()
        .filter(|r| r.uri.path() == "/slow")
        .count();
    assert_eq!(fetches, 1, "coalesced into one origin fetch");
    // Range over h2, from the cached object.
    let h = curl(&e, "a.test", "/slow", &["--http2", "-r", "10-19"]);
    assert!(h.starts_with("http/2 206"), "{h}");
    assert!(h.contains("content-range: bytes 10-19/100000"), "{h}");
    // A conditional request over h2: 304 from the cache.
    e.origin.route(
        "/tagged",
        RouteSpec::ok("tagged", "max-age=60").etag("\"v1\""),
    );
    let h = curl(&e, "a.test", "/tagged", &["--http2"]);
    assert!(h.starts_with("http/2 200"), "{h}");
    let h = curl(
        &e,
        "a.test",
        "/tagged",
        &["--http2", "-H", "If-None-Match: \"v1\""],
    );
    assert!(h.starts_with("http/2 304"), "{h}");
}

/// A minimal h2 client loop: acknowledges the server's PINGs (hyper's graceful shutdown waits
/// for one) and reads until EOF or `limit`; returns when GOAWAY arrived and whether the server
/// closed the connection.
async fn h2_wait_for_close(
    s: &mut tokio::net::TcpStream,
    limit: Duration,
) -> (Option<Instant>, bool) {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut goaway = None;
    let mut chunk = vec![0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (goaway, true),
            Ok(Ok(n)) => n,
            Err(_) => return (goaway, false),
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            if kind == 7 && goaway.is_none() {
                goaway = Some(Instant::now());
            }
            if kind == 6 && flags & 1 == 0 {
                let _ = s.write_all(&frame(6, 1, 0, &payload)).await;
            }
        }
    }
}

/// An HTTP/2 client connection with no request for the idle timeout is closed (GOAWAY), while
/// one whose request waits on a slow origin for longer than that is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_client_connection_is_closed_and_a_busy_one_is_not() {
    let e = edge_with("h2-idle", false, |c| {
        c.node.idle_timeout = Dur(Duration::from_secs(1));
    })
    .await;
    e.origin.route(
        "/slow",
        RouteSpec::ok("slow", "max-age=60").delay(Duration::from_millis(2500)),
    );
    // Idle: preface and SETTINGS, then nothing.
    let mut s = tokio::net::TcpStream::connect(e.http).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let t = Instant::now();
    let (goaway, closed) = h2_wait_for_close(&mut s, Duration::from_secs(5)).await;
    assert!(goaway.is_some() && closed, "{goaway:?} {closed}");
    let waited = goaway.unwrap() - t;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Busy for longer than the idle timeout, over TLS and h2c: answered.
    for (url, extra) in [
        (
            format!("https://a.test:{}/slow", e.https.port()),
            vec![
                "--http2".to_string(),
                "--cacert".into(),
                e.ca.display().to_string(),
            ],
        ),
        (
            format!("http://www.shop.test:{}/slow", e.http.port()),
            vec!["--http2-prior-knowledge".to_string()],
        ),
    ] {
        let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
        let host = if url.starts_with("https") {
            "a.test"
        } else {
            "www.shop.test"
        };
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .args([
                "--max-time",
                "10",
                "--resolve",
                &format!("{host}:{port}:127.0.0.1"),
            ])
            .args(&extra)
            .arg(&url)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{url}");
    }
}
