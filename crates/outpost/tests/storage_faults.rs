//! Fault tests for the SSD tier with real processes: fill through `outpost node --store-dir`, kill
//! it with SIGKILL (also mid-fill), corrupt segment bytes, purge then kill, and check after each
//! restart what a client gets and what the origin saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_testkit::{http_get, http_request, RouteSpec, TestOrigin};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    async fn start(origin: &TestOrigin, dir: &Path) -> Node {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args([
                "node",
                "--listen",
                &addr.to_string(),
                "--origin",
                &origin.url(),
            ])
            .args(["--store-dir", dir.to_str().unwrap()])
            .args([
                "--ram-bytes",
                "32M",
                "--disk-bytes",
                "256M",
                "--name",
                "edge",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "node did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Node { child, addr }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("outpost-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn body_for(i: usize) -> String {
    format!("object {i} ").repeat(1 + i % 50)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_fills_survive_kill_9_and_torn_fills_do_not() {
    let dir = temp_dir("kill");
    let origin = TestOrigin::start().await.unwrap();
    for i in 0..2100 {
        origin.route(
            &format!("/o/{i}"),
            RouteSpec::ok(&body_for(i), "max-age=3600").count_header(false),
        );
    }
    let big: String = "B".repeat(4 << 20);
    origin.route(
        "/big",
        RouteSpec::ok(&big, "max-age=3600")
            .count_header(false)
            .trickle(64 << 10, Duration::from_millis(100)),
    );
    let node = Node::start(&origin, &dir).await;
    for i in 0..2000 {
        let r = http_get(node.addr, "site.test", &format!("/o/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    // A large fill in progress when the node dies.
    let addr = node.addr;
    let partial = tokio::spawn(async move { http_get(addr, "site.test", "/big", &[]).await });
    // The large fill streams into a reservation on SSD; these fills land after it in the same
    // segment, so after the kill recovery must skip the dead reservation to find them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 2000..2100 {
        let r = http_get(node.addr, "site.test", &format!("/o/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.kill9();
    let _ = partial.await;
    assert_eq!(origin.total_hits(), 2101);
    origin.clear_hits();

    let node = Node::start(&origin, &dir).await;
    for i in 0..2100 {
        let r = http_get(node.addr, "site.test", &format!("/o/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            body_for(i),
            "object {i} differs from the origin's bytes"
        );
        let cs = r.header("cache-status").unwrap_or("");
        assert!(cs.contains("hit"), "object {i} after restart: {cs}");
    }
    assert_eq!(
        origin.total_hits(),
        0,
        "no origin request for committed objects"
    );
    let r = http_get(node.addr, "site.test", "/big", &[]).await.unwrap();
    assert_eq!(r.body.len(), big.len());
    assert!(
        r.header("cache-status").unwrap_or("").contains("miss"),
        "the torn fill is a miss"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_segment_bytes_are_misses_never_served() {
    let dir = temp_dir("corrupt");
    let origin = TestOrigin::start().await.unwrap();
    for i in 0..300 {
        origin.route(
            &format!("/c/{i}"),
            RouteSpec::ok(&body_for(i), "max-age=3600").count_header(false),
        );
    }
    let node = Node::start(&origin, &dir).await;
    for i in 0..300 {
        http_get(node.addr, "site.test", &format!("/c/{i}"), &[])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.kill9();
    // Flip bytes all over every segment file.
    let mut flipped = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("dat") {
            let mut bytes = std::fs::read(&p).unwrap();
            let mut i = 4096;
            while i < bytes.len() {
                bytes[i] ^= 0xA5;
                flipped += 1;
                i += 1499;
            }
            std::fs::write(&p, bytes).unwrap();
        }
    }
    assert!(flipped > 0, "expected segment files in {}", dir.display());
    origin.clear_hits();
    let node = Node::start(&origin, &dir).await;
    let mut misses = 0;
    for i in 0..300 {
        let r = http_get(node.addr, "site.test", &format!("/c/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            body_for(i),
            "object {i}: corrupt bytes were served"
        );
        if !r.header("cache-status").unwrap_or("").contains("hit") {
            misses += 1;
        }
    }
    assert!(misses > 0, "corruption must turn some objects into misses");
    assert_eq!(origin.total_hits(), misses);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_objects_stay_gone_after_kill_9() {
    let dir = temp_dir("purge");
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/keep",
        RouteSpec::ok("kept", "max-age=3600").count_header(false),
    );
    origin.route("/gone", RouteSpec::ok("", "max-age=3600"));
    let node = Node::start(&origin, &dir).await;
    http_get(node.addr, "site.test", "/keep", &[])
        .await
        .unwrap();
    assert_eq!(
        http_get(node.addr, "site.test", "/gone", &[])
            .await
            .unwrap()
            .text(),
        "1"
    );
    // An unsafe method invalidates the URL (RFC 9111 §4.4): the store removes it and persists a
    // tombstone.
    let p = http_request(node.addr, "POST", "site.test", "/gone", &[], b"x")
        .await
        .unwrap();
    assert_eq!(p.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.kill9();
    let node = Node::start(&origin, &dir).await;
    let r = http_get(node.addr, "site.test", "/gone", &[])
        .await
        .unwrap();
    assert_eq!(
        r.text(),
        "3",
        "the purged object must not come back after a restart"
    );
    let k = http_get(node.addr, "site.test", "/keep", &[])
        .await
        .unwrap();
    assert!(k.header("cache-status").unwrap_or("").contains("hit"));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_store_dir_falls_back_to_ram_and_keeps_serving() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/r", RouteSpec::ok("ram", "max-age=3600"));
    // A regular file where the directory should be: the SSD tier cannot open.
    let file = temp_dir("notadir");
    std::fs::write(&file, b"not a directory").unwrap();
    let node = Node::start(&origin, &file).await;
    let first = http_get(node.addr, "site.test", "/r", &[]).await.unwrap();
    assert_eq!(first.status, 200);
    let second = http_get(node.addr, "site.test", "/r", &[]).await.unwrap();
    assert!(
        second.header("cache-status").unwrap_or("").contains("hit"),
        "served from RAM"
    );
    assert_eq!(origin.hits("/r"), 1);
    drop(node);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_store_dir_of_a_future_format_is_refused() {
    let dir = temp_dir("future");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("FORMAT"), "outpost-store format 99\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args([
            "node",
            "--listen",
            "127.0.0.1:0",
            "--origin",
            "http://127.0.0.1:9",
        ])
        .args(["--store-dir", dir.to_str().unwrap(), "--metrics", ""])
        .output()
        .unwrap();
    assert!(!out.status.success(), "must refuse to start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("format version 99"),
        "clear message expected, got: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
