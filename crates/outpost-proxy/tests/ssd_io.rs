//! The SSD tier off the async workers, end to end: an SSD hit is served while the store's
//! reclamation is parked holding its writer lock, and a purge racing SSD hits never leaves a
//! promoted RAM copy behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use outpost_config::Config;
use outpost_testkit::{http_get, http_request, RouteSpec, TestOrigin};
use std::net::SocketAddr;
use std::time::Duration;

/// A node with a `ram` RAM tier (LRU) and a 4 MiB SSD tier of 1 MiB segments in `dir`.
async fn node(origin: &TestOrigin, dir: &std::path::Path, ram: u64) -> outpost_proxy::RunningNode {
    let _ = std::fs::remove_dir_all(dir);
    let mut cfg = Config::single_origin("127.0.0.1:0", &origin.url()).unwrap();
    cfg.node.metrics = String::new();
    cfg.node.name = "edge1".into();
    cfg.store.ram_bytes = outpost_config::ByteSize(ram);
    cfg.store.policy = "lru".into();
    cfg.store.dir = dir.to_string_lossy().into_owned();
    cfg.store.disk_bytes = outpost_config::ByteSize(4 << 20);
    cfg.store.segment_bytes = outpost_config::ByteSize(1 << 20);
    outpost_proxy::start(&cfg).await.unwrap()
}

async fn get(edge: SocketAddr, path: &str) -> outpost_testkit::SimpleResponse {
    http_get(edge, "site.test", path, &[]).await.unwrap()
}

fn cs(r: &outpost_testkit::SimpleResponse) -> String {
    r.header("cache-status").unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssd_hit_is_served_while_reclamation_holds_the_writer_lock() {
    let origin = TestOrigin::start().await.unwrap();
    // 20 KiB objects: larger than the 64 KiB RAM tier keeps (1/8 of it), so on SSD only.
    let body = vec![b'x'; 20 << 10];
    for i in 0..400 {
        origin.route(
            &format!("/o/{i}"),
            RouteSpec::ok("", "max-age=600").body(body.clone()),
        );
    }
    let dir = std::env::temp_dir().join(format!("outpost-ssd-io-park-{}", std::process::id()));
    let running = node(&origin, &dir, 64 << 10).await;
    let edge = running.addr;
    let store = running.node.store.clone();
    let disk = store.disk_tier().expect("an SSD tier");
    // The first move of the reclaimer parks with the reclaim and writer locks held.
    disk.park_reclaim_at("inside_move_holding_writer");
    // /o/0 lands in the oldest segment and is hit from SSD (so it is a survivor).
    assert_eq!(get(edge, "/o/0").await.body.len(), body.len());
    let hit = get(edge, "/o/0").await;
    assert!(cs(&hit).contains("hit"), "{}", cs(&hit));
    let mut i = 1;
    while disk.stats().segments < 4 {
        assert_eq!(get(edge, &format!("/o/{i}")).await.body.len(), body.len());
        i += 1;
    }
    let parked = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            store
                .disk_tier()
                .unwrap()
                .wait_reclaim_parked("inside_move_holding_writer")
        })
        .await
        .unwrap()
    };
    assert!(parked, "the reclaimer parked inside a move");
    // Hits on SSD (the survivor being moved, another record) are served meanwhile.
    for path in ["/o/0", "/o/1", &format!("/o/{}", i - 1)] {
        let r = tokio::time::timeout(Duration::from_secs(2), get(edge, path))
            .await
            .unwrap_or_else(|_| panic!("{path}: an SSD hit waited for the reclamation"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len(), "{path}");
        assert!(cs(&r).contains("hit"), "{path}: {}", cs(&r));
    }
    let hits_before = origin.total_hits();
    disk.release_reclaim();
    // The node goes on filling and reclaiming.
    for j in i..i + 100 {
        assert_eq!(get(edge, &format!("/o/{j}")).await.body.len(), body.len());
    }
    assert!(origin.total_hits() > hits_before);
    assert!(disk.stats().reclaimed_segments > 0, "{:?}", disk.stats());
    assert!(disk.stats().reappended > 0, "{:?}", disk.stats());
    // Every SSD read the edge made went one of the two async paths (page cache or threads).
    let s = disk.stats();
    assert!(s.fast_reads + s.queued_reads >= s.hits, "{s:?}");
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_racing_ssd_hits_leaves_no_promoted_ram_copy() {
    let origin = TestOrigin::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("outpost-ssd-io-race-{}", std::process::id()));
    // A 64 KiB RAM tier (LRU): 4 KiB objects are promoted into it, and pushed out again by a
    // few others.
    let running = node(&origin, &dir, 64 << 10).await;
    let edge = running.addr;
    let body = vec![b'y'; 4 << 10];
    for i in 0..40 {
        origin.route(
            &format!("/filler/{i}"),
            RouteSpec::ok("", "max-age=600").body(body.clone()),
        );
    }
    for round in 0..20 {
        let path = format!("/race/{round}");
        // The body is the origin's count for the path: which response a copy is.
        origin.route(&path, RouteSpec::ok("", "max-age=600").count_header(true));
        let purged: u64 = get(edge, &path).await.text().parse().unwrap();
        // Push it out of RAM: it is on SSD only now.
        for i in 0..40 {
            get(edge, &format!("/filler/{i}")).await;
        }
        // SSD hits (each promotes it into RAM) racing an invalidation of the URL.
        let hits: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { get(edge, &path).await })
            })
            .collect();
        let purge = http_request(edge, "POST", "site.test", &path, &[], b"x")
            .await
            .unwrap();
        assert_eq!(purge.status, 200);
        for h in hits {
            assert_eq!(h.await.unwrap().status, 200);
        }
        // Whatever the racing hits did, the copy the purge removed is never served again.
        for _ in 0..2 {
            let after = get(edge, &path).await;
            let n: u64 = after.text().parse().unwrap();
            assert!(
                n > purged,
                "round {round}: served response {n} the purge removed ({})",
                cs(&after)
            );
        }
    }
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
}
