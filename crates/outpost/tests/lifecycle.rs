//! Process-level tests of a node's life: SIGTERM drains (in-flight downloads finish, new
//! connections are refused, the process exits), a second signal exits at once, SIGHUP reloads
//! the config file, a descriptor limit is survived with rate-limited refusal logs, and upstream
//! failures are logged as rate-limited warnings at the default level. Real `outpost` processes on
//! 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_testkit::{http_get, RouteSpec, TestOrigin};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Proc {
    /// `outpost node` with `args`, under a shell `prefix` (e.g. `ulimit -n 64;`).
    async fn start(name: &str, prefix: &str, args: &[String]) -> Proc {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let stderr = std::env::temp_dir().join(format!(
            "outpost-lifecycle-{name}-{}.log",
            std::process::id()
        ));
        let mut cmd = format!(
            "{prefix} exec '{}' node --listen {addr}",
            env!("CARGO_BIN_EXE_outpost")
        );
        for a in args {
            cmd.push_str(&format!(" '{a}'"));
        }
        let child = Command::new("bash")
            .args(["-c", &cmd])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "node did not start");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Proc {
            child,
            addr,
            stderr,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Wait up to `limit` for the process to exit; its exit time.
    fn wait_exit(&mut self, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn log(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.stderr)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn origin_args(origin: &TestOrigin) -> Vec<String> {
    vec![
        "--origin".into(),
        origin.url(),
        "--name".into(),
        "edge".into(),
    ]
}

/// A download of 400 KB that trickles for about two seconds.
fn slow_route(origin: &TestOrigin) -> String {
    let body = "d".repeat(400_000);
    origin.route(
        "/download",
        RouteSpec::ok(&body, "max-age=600")
            .count_header(false)
            .trickle(20_000, Duration::from_millis(100)),
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_downloads_in_flight_then_exits() {
    let origin = TestOrigin::start().await.unwrap();
    let body = slow_route(&origin);
    let mut node = Proc::start("drain", "", &origin_args(&origin)).await;
    let addr = node.addr;
    let mut downloads = Vec::new();
    for i in 0..3 {
        // Distinct URLs: three fills, three clients reading slowly.
        let path = format!("/download?n={i}");
        downloads.push(tokio::spawn(async move {
            http_get(addr, "site.test", &path, &[]).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let signalled = Instant::now();
    node.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No new connections once draining.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed while draining"
    );
    for d in downloads {
        let r = d.await.unwrap().expect("the download completes");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len(), "not truncated by the shutdown");
    }
    let exited = node
        .wait_exit(Duration::from_secs(10))
        .expect("the node exits once drained");
    assert!(exited.duration_since(signalled) >= Duration::from_millis(1000));
    let log = node.log();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("drained"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let origin = TestOrigin::start().await.unwrap();
    slow_route(&origin);
    let mut node = Proc::start("twice", "", &origin_args(&origin)).await;
    let addr = node.addr;
    let download = tokio::spawn(async move { http_get(addr, "site.test", "/download", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(node.child.try_wait().unwrap().is_none(), "still draining");
    node.signal("-TERM");
    node.wait_exit(Duration::from_millis(1500))
        .expect("exits at once on the second signal");
    let r = download.await.unwrap();
    assert!(
        r.is_err() || r.unwrap().body.len() < 400_000,
        "the download was cut"
    );
    assert!(node.log().contains("second signal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file() {
    let origin = TestOrigin::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("outpost-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("outpost.toml");
    let write = |hosts: &str| {
        std::fs::write(
            &file,
            format!(
                "[node]\nname = \"edge\"\nmetrics = \"\"\n\n[[tenant]]\nname = \"a\"\nhostnames = [{hosts}]\norigins = [\"{}\"]\n",
                origin.url()
            ),
        )
        .unwrap();
    };
    write("\"a.test\"");
    let node = Proc::start(
        "hup",
        "",
        &["--config".into(), file.to_str().unwrap().into()],
    )
    .await;
    assert_eq!(
        http_get(node.addr, "b.test", "/", &[])
            .await
            .unwrap()
            .status,
        421
    );
    write("\"a.test\", \"b.test\"");
    node.signal("-HUP");
    let mut status = 0;
    for _ in 0..100 {
        status = http_get(node.addr, "b.test", "/", &[])
            .await
            .unwrap()
            .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "the new hostname is served without a restart");
    // A broken file is refused; the config in force stays.
    std::fs::write(&file, "[[tenant]]\nname = 1\n").unwrap();
    node.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        http_get(node.addr, "b.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert!(
        node.log().contains("config reload refused"),
        "{}",
        node.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_is_survived_and_logged_rate_limited() {
    let origin = TestOrigin::start().await.unwrap();
    let node = Proc::start("fds", "ulimit -n 64;", &origin_args(&origin)).await;
    // Far more connections than descriptors: the node refuses some, keeps running.
    let mut held = Vec::new();
    for _ in 0..150 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(node.addr),
        )
        .await
        {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http_get(node.addr, "site.test", "/after", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "serving again once descriptors are free");
    let log = node.log();
    let lines = log.matches("accept failed").count();
    assert!(lines >= 1, "the refusal is logged: {log}");
    assert!(lines <= 3, "rate limited ({lines} lines): {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_warned_about_once_a_second() {
    let origin = TestOrigin::start().await.unwrap();
    let node = Proc::start("warn", "", &origin_args(&origin)).await;
    origin.stop().await;
    for i in 0..50 {
        let r = http_get(node.addr, "site.test", &format!("/x{i}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 502);
        assert!(!r.text().contains(&origin.addr().port().to_string()));
    }
    let log = node.log();
    let lines = log.matches("upstream failure").count();
    assert!(lines >= 1, "logged at the default level: {log}");
    assert!(lines <= 3, "rate limited ({lines} lines): {log}");
    // The log has what the client does not: the origin and the cause.
    assert!(log.contains(&origin.addr().to_string()), "{log}");
}
