//! Tests of the test origin and the hand-written client against each other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use outpost_testkit::{http_get, http_request, raw_request, RouteSpec, TestOrigin};

#[tokio::test]
async fn unrouted_paths_echo_and_are_counted() {
    let o = TestOrigin::start().await.unwrap();
    assert!(o.url().starts_with("http://127.0.0.1:"));
    let r = http_get(o.addr(), "example.test", "/a?x=1", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "path:/a?x=1");
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert!(r.header("Date").is_some());
    http_get(o.addr(), "example.test", "/a?x=1", &[])
        .await
        .unwrap();
    http_get(o.addr(), "example.test", "/a", &[("X-Test", "yes")])
        .await
        .unwrap();
    assert_eq!(o.hits("/a?x=1"), 2);
    assert_eq!(o.hits("/a"), 1);
    assert_eq!(o.hits("/b"), 0);
    assert_eq!(o.total_hits(), 3);
    let seen = o.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].uri.path(), "/a");
    assert_eq!(seen[2].headers.get("x-test").unwrap(), "yes");
    assert_eq!(seen[0].headers.get("host").unwrap(), "example.test");
    assert_eq!(seen[0].method, http::Method::GET);
}

#[tokio::test]
async fn routes_count_and_match_on_path_only() {
    let o = TestOrigin::start().await.unwrap();
    o.route(
        "/r",
        RouteSpec::ok("hello", "public, max-age=5").header("X-One", "1"),
    );
    o.route("/empty", RouteSpec::ok("", "no-store").status(404));
    let a = http_get(o.addr(), "h", "/r?q=1", &[]).await.unwrap();
    let b = http_get(o.addr(), "h", "/r", &[]).await.unwrap();
    assert_eq!(a.text(), "hello");
    assert_eq!(a.header("cache-control"), Some("public, max-age=5"));
    assert_eq!(a.header("x-one"), Some("1"));
    assert_eq!(a.header("x-origin-count"), Some("1"));
    assert_eq!(b.header("x-origin-count"), Some("2"));
    assert_eq!(o.hits("/r?q=1"), 1);
    assert_eq!(o.hits("/r"), 1);
    let e1 = http_get(o.addr(), "h", "/empty", &[]).await.unwrap();
    let e2 = http_get(o.addr(), "h", "/empty", &[]).await.unwrap();
    assert_eq!(e1.status, 404);
    assert_eq!(e1.text(), "1");
    assert_eq!(e2.text(), "2");

    o.route(
        "/nodate",
        RouteSpec::ok("x", "").add_date(false).count_header(false),
    );
    let n = http_get(o.addr(), "h", "/nodate", &[]).await.unwrap();
    assert!(n.header("x-origin-count").is_none());
    assert!(n.header("cache-control").is_none());
    // hyper adds a Date of its own when the route does not; what matters is ours is not forced.
    assert_eq!(n.text(), "x");
}

#[tokio::test]
async fn etag_answers_304_and_head_has_no_body() {
    let o = TestOrigin::start().await.unwrap();
    o.route("/e", RouteSpec::ok("body", "max-age=1").etag("\"v1\""));
    let full = http_get(o.addr(), "h", "/e", &[]).await.unwrap();
    assert_eq!(full.header("etag"), Some("\"v1\""));
    let nm = http_get(o.addr(), "h", "/e", &[("If-None-Match", "W/\"v1\"")])
        .await
        .unwrap();
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());
    assert_eq!(nm.header("etag"), Some("\"v1\""));
    assert_eq!(nm.header("cache-control"), Some("max-age=1"));
    let other = http_get(o.addr(), "h", "/e", &[("If-None-Match", "\"v2\"")])
        .await
        .unwrap();
    assert_eq!(other.status, 200);
    let head = http_request(o.addr(), "HEAD", "h", "/e", &[], b"")
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("4"));
}

#[tokio::test]
async fn echo_vary_reflects_request_headers() {
    let o = TestOrigin::start().await.unwrap();
    o.route(
        "/v",
        RouteSpec::ok("", "max-age=60")
            .header("Vary", "Accept-Encoding, Accept-Language")
            .echo_vary(),
    );
    let r = http_get(
        o.addr(),
        "h",
        "/v",
        &[("Accept-Encoding", "gzip"), ("Accept-Language", "fr")],
    )
    .await
    .unwrap();
    assert_eq!(r.text(), "variant:gzip|fr");
    let r = http_get(o.addr(), "h", "/v", &[("Accept-Language", "de")])
        .await
        .unwrap();
    assert_eq!(r.text(), "variant:|de");
}

#[tokio::test]
async fn delay_and_trickle() {
    let o = TestOrigin::start().await.unwrap();
    o.route(
        "/slow",
        RouteSpec::ok("late", "").delay(Duration::from_millis(300)),
    );
    let t = Instant::now();
    let r = http_get(o.addr(), "h", "/slow", &[]).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.text(), "late");
    assert_eq!(o.hits("/slow"), 1);

    let body = "abcdefghij".repeat(10); // 100 bytes
    o.route(
        "/t",
        RouteSpec::ok(&body, "max-age=60").trickle(10, Duration::from_millis(50)),
    );
    let t = Instant::now();
    let r = http_get(o.addr(), "h", "/t", &[]).await.unwrap();
    let took = t.elapsed();
    assert_eq!(r.text(), body);
    assert_eq!(r.header("content-length"), Some("100"));
    assert!(
        took >= Duration::from_millis(450),
        "9 pauses of 50 ms, took {took:?}"
    );

    // The bytes really arrive spread out: after 120 ms only the first few chunks are there.
    let raw = raw_request(
        o.addr(),
        b"GET /t HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        Duration::from_millis(120),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let got = text.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(got.len() >= 10 && got.len() < 100, "partial body {got:?}");
}

#[tokio::test]
async fn stop_refuses_then_restart_serves_on_the_same_port() {
    let o = TestOrigin::start().await.unwrap();
    o.route(
        "/x",
        RouteSpec::ok("x", "max-age=60").delay(Duration::from_secs(30)),
    );
    let addr = o.addr();
    assert_eq!(http_get(addr, "h", "/", &[]).await.unwrap().status, 200);

    // An in-flight request is cut off by stop().
    let inflight = tokio::spawn(async move { http_get(addr, "h", "/x", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    o.stop().await;
    let err = inflight.await.unwrap().unwrap_err();
    assert_ne!(err.kind(), std::io::ErrorKind::TimedOut);

    let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(http_get(addr, "h", "/", &[]).await.is_err());
    o.stop().await; // idempotent

    o.restart().await.unwrap();
    o.restart().await.unwrap(); // no-op while running
    assert_eq!(o.addr(), addr);
    let r = http_get(addr, "h", "/", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(o.hits("/"), 2, "counters survive a restart");
    o.clear_hits();
    assert_eq!(o.total_hits(), 0);
}

#[tokio::test]
async fn keep_alive_connection_is_closed_by_stop() {
    let o = TestOrigin::start().await.unwrap();
    let raw = raw_request(
        o.addr(),
        b"GET /k HTTP/1.1\r\nHost: h\r\n\r\n",
        Duration::from_secs(30),
    );
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        o.stop().await;
    };
    let t = Instant::now();
    let (raw, ()) = tokio::join!(raw, stopper);
    let raw = String::from_utf8(raw.unwrap()).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"));
    assert!(raw.ends_with("path:/k"));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "closed by stop, not by the 30 s timeout"
    );
}

#[tokio::test]
async fn client_parses_chunked_bodies_and_trailers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(
            b"HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n\
              5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: t\r\n\r\n",
        )
        .await
        .unwrap();
        // Keep the socket open until the client is done: it must stop at the terminating
        // chunk, not wait for EOF.
        let _ = done_rx.await;
        drop(s);
    });
    let t = Instant::now();
    let r = http_get(addr, "h", "/", &[]).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, world");
    assert_eq!(r.header("X-A"), Some("1"));
    assert_eq!(r.header_all("x-a"), vec!["1", "2"]);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let _ = done_tx.send(());
}

#[tokio::test]
async fn chunked_from_the_origin_and_post_bodies() {
    let o = TestOrigin::start().await.unwrap();
    o.route(
        "/c",
        RouteSpec::ok("chunky body", "")
            .header("Transfer-Encoding", "chunked")
            .trickle(3, Duration::from_millis(1)),
    );
    let r = http_get(o.addr(), "h", "/c", &[]).await.unwrap();
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.header("content-length").is_none());
    assert_eq!(r.text(), "chunky body");

    let r = http_request(o.addr(), "POST", "h", "/p", &[], b"payload")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let seen = o.requests();
    assert_eq!(seen[1].method, http::Method::POST);
    assert_eq!(&seen[1].body[..], b"payload");
}

#[tokio::test]
async fn raw_request_returns_what_the_server_sent() {
    let o = TestOrigin::start().await.unwrap();
    let raw = raw_request(o.addr(), b"GARBAGE\r\n\r\n", Duration::from_secs(2))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(o.total_hits(), 0);
}

#[tokio::test]
async fn lying_content_length_reaches_the_wire_as_a_truncated_body() {
    let o = TestOrigin::start().await.unwrap();
    o.route(
        "/short",
        RouteSpec::ok("short", "max-age=60").header("Content-Length", "100"),
    );
    let err = http_get(o.addr(), "h", "/short", &[]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    let raw = raw_request(
        o.addr(),
        b"GET /short HTTP/1.1\r\nHost: h\r\n\r\n",
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("content-length: 100\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nshort"), "{text}");
}
