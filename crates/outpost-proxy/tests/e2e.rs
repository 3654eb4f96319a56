//! End-to-end tests: a real node on 127.0.0.1 in front of a counting test origin, driven by a raw
//! HTTP/1.1 client. Assertions are on what a client sees and on what the origin saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_config::{Config, Dur, TenantConfig};
use outpost_proxy::NodeOptions;
use outpost_testkit::{http_get, http_request, raw_request, FakeClock, RouteSpec, TestOrigin};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

async fn node_for(origin: &TestOrigin) -> SocketAddr {
    node_clocked(origin).await.0
}

/// A node reading time from a fake clock the test moves (expiry without sleeping).
async fn node_clocked(origin: &TestOrigin) -> (SocketAddr, FakeClock) {
    let mut cfg = Config::single_origin("127.0.0.1:0", &origin.url()).unwrap();
    cfg.node.metrics = String::new();
    cfg.node.name = "edge1".into();
    cfg.node.header_read_timeout = Dur(Duration::from_millis(800));
    cfg.tenants[0].cache.origin_timeout = Dur(Duration::from_millis(1500));
    let clock = FakeClock::new(std::time::SystemTime::now());
    let opts = NodeOptions {
        clock: Arc::new(clock.clone()),
        ..NodeOptions::default()
    };
    let addr = outpost_proxy::start_with(&cfg, opts).await.unwrap().addr;
    origin.use_clock(&clock);
    (addr, clock)
}

async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> outpost_testkit::SimpleResponse {
    http_get(addr, "site.test", path, headers).await.unwrap()
}

fn cs(r: &outpost_testkit::SimpleResponse) -> String {
    r.header("cache-status").unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_with_cache_status_and_age() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/a", RouteSpec::ok("hello", "max-age=60"));
    let edge = node_for(&origin).await;
    let r1 = get(edge, "/a", &[]).await;
    assert_eq!(r1.status, 200);
    assert_eq!(r1.body, b"hello");
    assert!(
        cs(&r1).contains("edge1; fwd=uri-miss; fwd-status=200; stored"),
        "{}",
        cs(&r1)
    );
    let r2 = get(edge, "/a", &[]).await;
    assert_eq!(r2.body, b"hello");
    assert!(cs(&r2).starts_with("edge1; hit"), "{}", cs(&r2));
    assert!(r2.header("age").is_some());
    assert_eq!(origin.hits("/a"), 1);
    // Equivalent URLs share the key; tracking params are not forwarded.
    let r3 = get(edge, "/./a?utm_source=x", &[]).await;
    assert!(cs(&r3).contains("hit"), "{}", cs(&r3));
    assert_eq!(origin.hits("/a"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_cold_requests_make_one_origin_request() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/cold",
        RouteSpec::ok(&"x".repeat(50_000), "max-age=60")
            .delay(Duration::from_millis(300))
            .trickle(5_000, Duration::from_millis(20)),
    );
    let edge = node_for(&origin).await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        tasks.push(tokio::spawn(async move { get(edge, "/cold", &[]).await }));
    }
    let (mut collapsed, mut hits, mut stored) = (0, 0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 50_000);
        let c = cs(&r);
        if c.contains("collapsed") {
            collapsed += 1;
        } else if c.contains("hit") {
            hits += 1;
        } else if c.contains("stored") {
            stored += 1;
        }
    }
    assert_eq!(origin.hits("/cold"), 1, "exactly one origin request");
    assert_eq!(stored, 1, "one leader");
    assert_eq!(
        collapsed + hits,
        199,
        "everyone else joined the fill or hit its result"
    );
    assert!(collapsed > 0, "requests during the fill were collapsed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_stream_a_slow_fill_before_it_completes() {
    let origin = TestOrigin::start().await.unwrap();
    // 20 chunks x 100 ms = ~2 s for the whole body.
    origin.route(
        "/slow",
        RouteSpec::ok(&"y".repeat(20_000), "max-age=60").trickle(1_000, Duration::from_millis(100)),
    );
    let edge = node_for(&origin).await;
    let leader = tokio::spawn(async move { get(edge, "/slow", &[]).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A raw follower, cut off at 700 ms of a ~2 s fill, has body bytes already.
    let first = raw_request(
        edge,
        b"GET /slow HTTP/1.1\r\nHost: site.test\r\n\r\n",
        Duration::from_millis(700),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&first);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("yyyy"),
        "body bytes arrive while the fill is in progress"
    );
    assert_eq!(leader.await.unwrap().body.len(), 20_000);
    assert_eq!(origin.hits("/slow"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_stale_on_arrival_is_not_shared_with_followers() {
    let origin = TestOrigin::start().await.unwrap();
    // An Expires in the past (http-cache-tests' stale template): storable, and stored for
    // revalidation, but stale from the start; about 1 s of body.
    origin.route(
        "/zero",
        RouteSpec::ok(&"z".repeat(10_000), "")
            .header("Expires", "Thu, 01 Jan 2015 00:00:00 GMT")
            .header("Last-Modified", "Thu, 01 Jan 2015 00:00:00 GMT")
            .trickle(1_000, Duration::from_millis(100)),
    );
    let edge = node_for(&origin).await;
    let leader = tokio::spawn(async move { get(edge, "/zero", &[]).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let follower = get(edge, "/zero", &[]).await;
    assert_eq!(follower.status, 200);
    assert_eq!(follower.body.len(), 10_000);
    assert!(!cs(&follower).contains("collapsed"), "{}", cs(&follower));
    assert!(
        cs(&follower).contains(r#"detail="stale-fill""#),
        "{}",
        cs(&follower)
    );
    assert_eq!(leader.await.unwrap().body.len(), 10_000);
    assert_eq!(
        origin.hits("/zero"),
        2,
        "the follower asked the origin itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_then_refreshes_once() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/swr",
        RouteSpec::ok("", "max-age=1, stale-while-revalidate=30"),
    );
    let (edge, clock) = node_clocked(&origin).await;
    let r = get(edge, "/swr", &[]).await;
    assert_eq!(r.text(), "1");
    clock.advance(Duration::from_secs(2));
    // Stale: served at once from cache, one background refresh.
    let mut stale_seen = 0;
    for _ in 0..5 {
        let r = get(edge, "/swr", &[]).await;
        assert_eq!(r.status, 200);
        if r.text() == "1" {
            stale_seen += 1;
            assert!(cs(&r).contains("stale-while-revalidate"), "{}", cs(&r));
        }
    }
    assert!(stale_seen >= 1);
    for _ in 0..50 {
        if origin.hits("/swr") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.hits("/swr"), 2, "exactly one background refresh");
    // The refresh commits a moment after the origin counts it; poll rather than guess a sleep.
    let mut r = get(edge, "/swr", &[]).await;
    for _ in 0..200 {
        if r.text() == "2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        r = get(edge, "/swr", &[]).await;
    }
    assert_eq!(r.text(), "2", "the refreshed copy is served");
    assert!(cs(&r).contains("hit"));
    assert_eq!(origin.hits("/swr"), 2, "still one background refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_with_origin_stopped() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/sie",
        RouteSpec::ok("precious", "max-age=1, stale-if-error=60"),
    );
    origin.route("/nosie", RouteSpec::ok("fragile", "max-age=1"));
    let (edge, clock) = node_clocked(&origin).await;
    assert_eq!(get(edge, "/sie", &[]).await.body, b"precious");
    assert_eq!(get(edge, "/nosie", &[]).await.body, b"fragile");
    origin.stop().await;
    clock.advance(Duration::from_secs(2));
    let r = get(edge, "/sie", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"precious");
    assert!(cs(&r).contains("stale-if-error"), "{}", cs(&r));
    let r = get(edge, "/nosie", &[]).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("upstream-unreachable"), "{}", r.text());
    // Origin back: the next request refreshes.
    origin.restart().await.unwrap();
    let r = get(edge, "/nosie", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_variants_are_kept_apart() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/v",
        RouteSpec::ok("", "max-age=60")
            .header("vary", "Accept-Language")
            .echo_vary(),
    );
    let edge = node_for(&origin).await;
    let en = get(edge, "/v", &[("accept-language", "en-US,en;q=0.9")]).await;
    let fr = get(edge, "/v", &[("accept-language", "fr")]).await;
    assert_ne!(en.body, fr.body);
    let en2 = get(edge, "/v", &[("accept-language", "en-GB")]).await;
    assert_eq!(en2.body, en.body, "en-GB normalises to the en variant");
    assert!(cs(&en2).contains("hit"), "{}", cs(&en2));
    let fr2 = get(edge, "/v", &[("accept-language", "fr")]).await;
    assert_eq!(fr2.body, fr.body);
    assert_eq!(origin.hits("/v"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_on_the_ssd_tier_read_only_the_chunks_they_need() {
    let origin = TestOrigin::start().await.unwrap();
    // 3 MiB: too large for a 1 MiB RAM tier, so it lives on SSD only, in three 1 MiB chunks.
    let body: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    origin.route("/big", RouteSpec::ok("", "max-age=600").body(body.clone()));
    let dir = std::env::temp_dir().join(format!("outpost-e2e-range-{}", std::process::id()));
    // Also the dedicated-worker mode: connections are served on two threads of their own.
    let running = ssd_node_with(&origin, &dir, 2).await;
    let edge = running.addr;
    let r = get(edge, "/big", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    // The fill is stored when its last byte arrived; wait for it.
    for _ in 0..100 {
        if running
            .node
            .store
            .stats_disk()
            .is_some_and(|d| d.objects == 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let disk = || running.node.store.stats_disk().unwrap();
    assert_eq!(disk().objects, 1, "{:?}", disk());

    let r = get(edge, "/big", &[("range", "bytes=1048576-1048675")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[1048576..=1048675]);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 1048576-1048675/3145728")
    );
    assert!(cs(&r).contains("hit"), "{}", cs(&r));
    assert_eq!(disk().range_reads, 1);
    assert_eq!(disk().range_chunks_read, 1, "one chunk of three");

    // Across a chunk boundary: two chunks; open-ended: from there to the end.
    let r = get(edge, "/big", &[("range", "bytes=2097000-2097300")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[2097000..=2097300]);
    assert_eq!(disk().range_chunks_read, 3);
    let r = get(edge, "/big", &[("range", "bytes=3145000-")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[3145000..]);
    assert_eq!(disk().range_chunks_read, 4);
    // A suffix range reads the last chunk only.
    let r = get(edge, "/big", &[("range", "bytes=-10")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[body.len() - 10..]);
    assert_eq!(disk().range_chunks_read, 5);

    // Whole-body hits on an object too large for RAM are read chunk by chunk as sent; HEAD and
    // a conditional 304 read no body chunk at all.
    let served = disk().chunks_served;
    let r = get(edge, "/big", &[]).await;
    assert!(r.body == body, "chunked hit body differs");
    assert!(cs(&r).contains("hit"), "{}", cs(&r));
    assert_eq!(r.header("content-length"), Some("3145728"));
    assert_eq!(disk().chunks_served, served + 3);
    let r = http_request(edge, "HEAD", "site.test", "/big", &[], b"")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("3145728"))
    );
    let etag_less = get(
        edge,
        "/big",
        &[("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")],
    )
    .await;
    assert_eq!(etag_less.status, 304);
    assert_eq!(
        disk().chunks_served,
        served + 3,
        "HEAD and 304 read no chunk"
    );
    assert_eq!(origin.hits("/big"), 1);

    // A damaged first chunk is found before the response starts: a miss, fetched again, never
    // a cut or wrong body.
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "dat"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[4000] ^= 0xff; // inside the body's first chunk (the record head is < 1 KiB)
    std::fs::write(&seg, bytes).unwrap();
    let r = get(edge, "/big", &[("range", "bytes=5000-5099")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[5000..5100]);
    assert!(!cs(&r).contains("hit"), "{}", cs(&r));
    assert_eq!(origin.hits("/big"), 2);
    assert_eq!(disk().checksum_failures, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_are_served_from_the_cached_object() {
    let origin = TestOrigin::start().await.unwrap();
    let body: String = (0..1000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    origin.route("/r", RouteSpec::ok(&body, "max-age=60"));
    let edge = node_for(&origin).await;
    let r = get(edge, "/r", &[("range", "bytes=0-9")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body.as_bytes()[0..10]);
    assert_eq!(r.header("content-range"), Some("bytes 0-9/1000"));
    let r = get(edge, "/r", &[("range", "bytes=990-")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body.as_bytes()[990..]);
    let r = get(edge, "/r", &[("range", "bytes=5000-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(origin.hits("/r"), 1, "one whole-object fetch");
    assert!(origin
        .requests()
        .iter()
        .all(|q| !q.headers.contains_key("range")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_and_head_from_cache() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/c", RouteSpec::ok("body", "max-age=60").etag("\"v1\""));
    let edge = node_for(&origin).await;
    get(edge, "/c", &[]).await;
    let r = get(edge, "/c", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = http_request(edge, "HEAD", "site.test", "/c", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("4"));
    assert_eq!(origin.hits("/c"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_with_304_refreshes_without_body() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/e", RouteSpec::ok("etagged", "max-age=1").etag("\"e1\""));
    let (edge, clock) = node_clocked(&origin).await;
    get(edge, "/e", &[]).await;
    clock.advance(Duration::from_secs(2));
    let r = get(edge, "/e", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"etagged");
    assert!(cs(&r).contains("fwd=stale; fwd-status=304"), "{}", cs(&r));
    let seen = origin.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers.get("if-none-match").unwrap(), "\"e1\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_responses_pass_and_do_not_block() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/ns",
        RouteSpec::ok("", "no-store").header("set-cookie", "s=1"),
    );
    let edge = node_for(&origin).await;
    let r1 = get(edge, "/ns", &[]).await;
    let r2 = get(edge, "/ns", &[]).await;
    assert_eq!(r1.text(), "1");
    assert_eq!(r2.text(), "2");
    assert!(
        cs(&r2).contains("detail=no-store") || cs(&r2).contains("hit-for-pass"),
        "{}",
        cs(&r2)
    );
    assert_eq!(r1.header("set-cookie"), Some("s=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/item", RouteSpec::ok("", "max-age=600"));
    let edge = node_for(&origin).await;
    assert_eq!(get(edge, "/item", &[]).await.text(), "1");
    assert_eq!(get(edge, "/item", &[]).await.text(), "1");
    let p = http_request(edge, "POST", "site.test", "/item", &[], b"x=1")
        .await
        .unwrap();
    assert_eq!(p.status, 200);
    assert_eq!(
        get(edge, "/item", &[]).await.text(),
        "3",
        "POST invalidated the stored copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_origin_whole_kept_or_streamed() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/upload", RouteSpec::ok("stored", ""));
    let edge = node_for(&origin).await;
    // A small body is kept by the origin pool (so it can be sent again), a large one streams.
    let small = b"name=outpost".to_vec();
    let large: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
    for (method, body) in [("PUT", &small), ("POST", &large)] {
        let r = http_request(edge, method, "site.test", "/upload", &[], body)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{method}");
        let seen = origin.requests();
        let last = seen.last().unwrap();
        assert_eq!(last.method, method);
        assert_eq!(last.body.len(), body.len(), "{method}");
        assert!(
            last.body[..] == body[..],
            "{method}: the body arrived intact"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_responses_are_cached_with_the_tenant_default() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/missing", RouteSpec::ok("", "").status(404));
    let edge = node_for(&origin).await;
    assert_eq!(get(edge, "/missing", &[]).await.status, 404);
    let r = get(edge, "/missing", &[]).await;
    assert_eq!(r.status, 404);
    assert!(cs(&r).contains("hit"), "{}", cs(&r));
    assert_eq!(origin.hits("/missing"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let origin = TestOrigin::start().await.unwrap();
    let edge = node_for(&origin).await;
    // Smuggling: both framings.
    let r = raw_request(
        edge,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&r).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    // Garbage.
    let r = raw_request(edge, b"NOT HTTP AT ALL\r\n\r\n", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&r).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    // Oversized headers.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "z".repeat(64 * 1024)
    );
    let r = raw_request(edge, big.as_bytes(), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&r).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed() {
    let origin = TestOrigin::start().await.unwrap();
    let edge = node_for(&origin).await;
    // Headers never finish: the node must hang up after its header read timeout (800 ms here);
    // the client gives up after 5 s, so only the node closing ends the read early.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the node closed the connection");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_failures_are_502_and_504() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/hang",
        RouteSpec::ok("late", "max-age=60").delay(Duration::from_secs(5)),
    );
    let edge = node_for(&origin).await;
    let r = get(edge, "/hang", &[]).await;
    assert_eq!(r.status, 504);
    assert!(r.text().contains("upstream-timeout"), "{}", r.text());
    origin.stop().await;
    let r = get(edge, "/x", &[]).await;
    assert_eq!(r.status, 502);
    // The class and the request id; never the origin's address or the HTTP library's errors.
    let text = r.text();
    assert!(text.contains("upstream-unreachable"), "{text}");
    assert!(text.contains("request-id="), "{text}");
    let port = origin.url().rsplit(':').next().unwrap().to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains(&port),
        "{text}"
    );
    assert!(!text.to_lowercase().contains("connect"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_in_tenant_mode_is_421() {
    let origin = TestOrigin::start().await.unwrap();
    let mut cfg = Config::single_origin("127.0.0.1:0", &origin.url()).unwrap();
    cfg.node.metrics = "127.0.0.1:0".into();
    cfg.tenants = vec![TenantConfig {
        name: "shop".into(),
        hostnames: vec!["shop.test".into()],
        ..cfg.tenants.remove(0)
    }];
    let running = outpost_proxy::start(&cfg).await.unwrap();
    let r = http_get(running.addr, "evil.test", "/", &[]).await.unwrap();
    assert_eq!(r.status, 421);
    let r = http_get(running.addr, "SHOP.test:80", "/", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(origin.total_hits(), 1);
    let m = http_get(running.metrics_addr.unwrap(), "x", "/metrics", &[])
        .await
        .unwrap();
    let text = m.text();
    assert!(
        text.contains("outcome=\"rejected\",status=\"4xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tenant=\"shop\",outcome=\"miss\",status=\"2xx\"} 1"),
        "{text}"
    );
    assert!(text.contains("outpost_store_objects"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoning_headers_are_not_forwarded_on_fills() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/p", RouteSpec::ok("page", "max-age=60"));
    let edge = node_for(&origin).await;
    get(
        edge,
        "/p",
        &[("x-forwarded-host", "evil.com"), ("cookie", "session=1")],
    )
    .await;
    let seen = origin.requests();
    assert!(!seen[0].headers.contains_key("x-forwarded-host"));
    assert!(!seen[0].headers.contains_key("cookie"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_completes_after_its_client_leaves() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/leave",
        RouteSpec::ok(&"z".repeat(10_000), "max-age=60")
            .header("content-length", "10000")
            .trickle(1_000, Duration::from_millis(50)),
    );
    let edge = node_for(&origin).await;
    // The leader's client hangs up after ~100 ms, mid-body.
    let partial = raw_request(
        edge,
        b"GET /leave HTTP/1.1\r\nHost: site.test\r\n\r\n",
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    assert!(partial.len() < 10_000);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = get(edge, "/leave", &[]).await;
    assert_eq!(r.body.len(), 10_000);
    assert!(cs(&r).contains("hit"), "{}", cs(&r));
    assert_eq!(origin.hits("/leave"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_do_not_extend_the_header_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = TestOrigin::start().await.unwrap();
    let edge = node_for(&origin).await;
    let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    // One header byte at a time: always "active", never complete. A deadline that each byte
    // extended would never end the connection in these 40 rounds.
    let mut closed_in_round = None;
    for round in 0..40 {
        if s.write_all(b"x").await.is_err() {
            closed_in_round = Some(round);
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_in_round = Some(round);
                break;
            }
            _ => {}
        }
    }
    closed_in_round.expect("the node must close a connection whose head never completes");
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_per_url_are_capped() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route(
        "/lang",
        RouteSpec::ok("", "max-age=60")
            .header("vary", "Accept-Language")
            .echo_vary(),
    );
    let mut cfg = Config::single_origin("127.0.0.1:0", &origin.url()).unwrap();
    cfg.node.metrics = String::new();
    cfg.tenants[0].cache.max_variants = 2;
    let edge = outpost_proxy::start(&cfg).await.unwrap().addr;
    for lang in ["en", "fr", "de"] {
        get(edge, "/lang", &[("accept-language", lang)]).await;
    }
    assert_eq!(origin.hits("/lang"), 3);
    // de and fr are kept; en (the oldest) was evicted by the cap.
    let fr = get(edge, "/lang", &[("accept-language", "fr")]).await;
    assert!(cs(&fr).contains("hit"), "{}", cs(&fr));
    let en = get(edge, "/lang", &[("accept-language", "en")]).await;
    assert!(cs(&en).contains("vary-miss"), "{}", cs(&en));
    assert_eq!(origin.hits("/lang"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_star_is_never_stored() {
    let origin = TestOrigin::start().await.unwrap();
    origin.route("/star", RouteSpec::ok("", "max-age=60").header("vary", "*"));
    let edge = node_for(&origin).await;
    get(edge, "/star", &[]).await;
    let r = get(edge, "/star", &[]).await;
    assert!(cs(&r).contains("vary-star"), "{}", cs(&r));
    assert_eq!(origin.hits("/star"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_right_after_a_fill_is_never_overtaken_by_it() {
    let origin = TestOrigin::start().await.unwrap();
    let edge = node_for(&origin).await;
    for i in 0..30 {
        let path = format!("/race/{i}");
        origin.route(&path, RouteSpec::ok("", "max-age=600"));
        assert_eq!(get(edge, &path, &[]).await.text(), "1");
        // Immediately invalidate: the fill's store insert must not land after the removal.
        let p = http_request(edge, "POST", "site.test", &path, &[], b"x")
            .await
            .unwrap();
        assert_eq!(p.status, 200);
        assert_eq!(
            get(edge, &path, &[]).await.text(),
            "3",
            "iteration {i}: stale object resurrected"
        );
    }
}

/// A node with a 1 MiB RAM tier and an SSD tier in `dir`.
async fn ssd_node(origin: &TestOrigin, dir: &std::path::Path) -> outpost_proxy::RunningNode {
    ssd_node_with(origin, dir, 0).await
}

/// [`ssd_node`] with `workers` dedicated serving threads (0: the shared runtime).
async fn ssd_node_with(
    origin: &TestOrigin,
    dir: &std::path::Path,
    workers: usize,
) -> outpost_proxy::RunningNode {
    let _ = std::fs::remove_dir_all(dir);
    let mut cfg = Config::single_origin("127.0.0.1:0", &origin.url()).unwrap();
    cfg.node.metrics = String::new();
    cfg.node.name = "edge1".into();
    cfg.store.ram_bytes = outpost_config::ByteSize(1 << 20);
    cfg.store.dir = dir.to_string_lossy().into_owned();
    cfg.store.disk_bytes = outpost_config::ByteSize(64 << 20);
    cfg.store.segment_bytes = outpost_config::ByteSize(16 << 20);
    cfg.node.workers = workers;
    outpost_proxy::start(&cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_fills_stream_onto_ssd_and_followers_read_them_while_written() {
    let origin = TestOrigin::start().await.unwrap();
    // 3 MiB in 12 pieces 100 ms apart: the fill takes ~1.2 s.
    let body: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    origin.route(
        "/video.ts",
        RouteSpec::ok("", "max-age=600")
            .body(body.clone())
            .trickle(256 << 10, Duration::from_millis(100)),
    );
    let dir = std::env::temp_dir().join(format!("outpost-e2e-stream-{}", std::process::id()));
    let running = ssd_node(&origin, &dir).await;
    let edge = running.addr;
    let disk = || running.node.store.stats_disk().unwrap();

    let leader = tokio::spawn(async move { get(edge, "/video.ts", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A follower joining mid-fill gets the bytes written so far at once, from SSD, while the
    // fill is still running.
    let partial = raw_request(
        edge,
        b"GET /video.ts HTTP/1.1\r\nHost: site.test\r\n\r\n",
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert!(partial.starts_with(b"HTTP/1.1 200"));
    assert!(partial.len() > 256 << 10, "got {} bytes", partial.len());
    assert_eq!(disk().stream_commits, 0, "still filling: {:?}", disk());
    assert_eq!(disk().stream_fills, 1);
    // Whole and ranged followers, one of them waiting for bytes not yet written.
    let whole = tokio::spawn(async move { get(edge, "/video.ts", &[]).await });
    let early =
        tokio::spawn(async move { get(edge, "/video.ts", &[("range", "bytes=100-199")]).await });
    let late =
        tokio::spawn(
            async move { get(edge, "/video.ts", &[("range", "bytes=3000000-3000099")]).await },
        );
    let r = leader.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == body, "leader body differs");
    let r = whole.await.unwrap();
    assert!(r.body == body, "follower body differs");
    assert!(cs(&r).contains("collapsed"), "{}", cs(&r));
    let r = early.await.unwrap();
    assert_eq!((r.status, &r.body[..]), (206, &body[100..200]));
    let r = late.await.unwrap();
    assert_eq!((r.status, &r.body[..]), (206, &body[3_000_000..3_000_100]));
    assert_eq!(origin.hits("/video.ts"), 1);
    for _ in 0..100 {
        if disk().stream_commits == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = disk();
    assert_eq!(
        (d.stream_commits, d.stream_aborts, d.objects),
        (1, 0, 1),
        "{d:?}"
    );
    // Leader and whole follower read the body from SSD.
    assert!(d.stream_tap_bytes >= 2 * body.len() as u64, "{d:?}");
    let metrics = running.node.render_metrics();
    assert!(
        metrics.contains("outpost_disk_stream_commits_total{node=\"edge1\"} 1"),
        "{metrics}"
    );
    // Now a plain SSD hit.
    let r = get(edge, "/video.ts", &[]).await;
    assert!(r.body == body);
    assert!(cs(&r).contains("hit"), "{}", cs(&r));
    assert_eq!(origin.hits("/video.ts"), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_fill_cut_by_the_origin_is_never_stored() {
    let origin = TestOrigin::start().await.unwrap();
    let body: Vec<u8> = (0..2u32 << 20).map(|i| (i % 249) as u8).collect();
    origin.route(
        "/cut.ts",
        RouteSpec::ok("", "max-age=600")
            .body(body.clone())
            .trickle(128 << 10, Duration::from_millis(100)),
    );
    let dir = std::env::temp_dir().join(format!("outpost-e2e-stream-cut-{}", std::process::id()));
    let running = ssd_node(&origin, &dir).await;
    let edge = running.addr;
    let leader = tokio::spawn(async move { http_get(edge, "site.test", "/cut.ts", &[]).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    origin.stop().await;
    // The client sees the body cut short (an early end of the announced length), never a
    // complete one.
    match leader.await.unwrap() {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
        Ok(r) => assert!(r.body.len() < body.len(), "complete body from a cut fill"),
    }
    let disk = running.node.store.stats_disk().unwrap();
    assert_eq!((disk.stream_fills, disk.stream_commits), (1, 0), "{disk:?}");
    assert_eq!(disk.stream_aborts, 1, "{disk:?}");
    assert_eq!(disk.objects, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
