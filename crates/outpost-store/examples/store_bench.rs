//! Storage engine micro-benchmark (single thread): RAM and SSD hit throughput for 1 KiB and
//! 1 MiB objects (whole, and chunk by chunk as the edge serves large objects), SSD fill
//! throughput (whole records, and 1 MiB fills streamed in 16 KiB pieces
//! with and without a follower reading each piece back), the SSD tier's RAM bytes per object (computed from struct
//! sizes) at 1M and 10M objects, and recovery time of N small objects.
//!
//! `cargo run --release -p outpost-store --example store_bench -- [SMALL_OBJECTS] [DIR]`
//! (default 1 000 000 objects in a fresh directory under the system temp dir, removed at the
//! end). SSD reads are served from the page cache right after the fill, so they measure the
//! engine (pread + checksum + decode), not the device.
//!
//! `... store_bench -- ram [OBJECTS]` times RAM hits only: the RAM tier alone, and through a
//! hybrid store with an SSD tier behind it (the edge's store), where a RAM hit must cost no more.
//!
//! `... store_bench -- reclaim[-async] [READERS] [SECS] [HOT_KEYS] [DIR]` measures instead the latency of
//! SSD hits (p50/p99/p99.9/max) on a full tier, first quiet, then while one writer inserts fresh
//! keys flat out so that segments are reclaimed (and hot survivors moved) over and over: what a
//! reclamation costs the hits that run beside it (defaults: 2 readers, 5 s per phase, 5 000 hot
//! keys; `reclaim-async` reads through `get_async(..).wait()`, the SSD read threads the edge
//! uses, so the hop to them is in the numbers: with 20 000, more hot bytes sit in each reclaimed segment than the survivor budget of
//! half a segment keeps, so the hot set itself is evicted and the phase measures misses).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use outpost_store::disk::index_footprint;
use outpost_store::{
    CacheKey, DiskConfig, DiskStore, MemoryStore, ObjectMeta, PolicyKind, Store, StoredObject,
    StreamHead,
};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn object(body: Bytes) -> StoredObject {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        "application/octet-stream".parse().unwrap(),
    );
    headers.insert(http::header::ETAG, "\"abcdef0123456789\"".parse().unwrap());
    headers.insert(
        http::header::CACHE_CONTROL,
        "public, max-age=3600".parse().unwrap(),
    );
    StoredObject {
        status: http::StatusCode::OK,
        headers,
        body,
        meta: ObjectMeta {
            request_time: now(),
            response_time: now(),
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(3600),
            keep_until: now() + Duration::from_secs(86_400),
            tags: vec!["bench".into()],
            vary: None,
            derived: None,
        },
    }
}

fn key(prefix: &str, i: u64) -> CacheKey {
    CacheKey::new(format!("https://bench.example/{prefix}/{i}"))
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn mib(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// Fills `n` objects of `size` bytes, then times `reads` random SSD and RAM hits.
fn run_size(dir: &std::path::Path, label: &str, size: usize, n: u64, reads: u64) -> DiskConfig {
    let bodies: Vec<Bytes> = (0..16u8)
        .map(|b| Bytes::from(vec![b.wrapping_mul(31); size]))
        .collect();
    let probe = object(bodies[0].clone());
    let record = size as u64 + 400;
    let segment_bytes = 256u64 << 20;
    let cfg = DiskConfig {
        segment_bytes,
        policy: PolicyKind::Lru,
        ..DiskConfig::new(dir.join(label), n * record + 4 * segment_bytes)
    };
    let _ = std::fs::remove_dir_all(&cfg.dir);
    let (disk, _) = DiskStore::open(&cfg, now()).unwrap();
    println!(
        "[{label}] record bytes: {}",
        disk.record_len(&key(label, 0), &probe)
    );

    let started = Instant::now();
    for i in 0..n {
        let obj = object(bodies[(i % 16) as usize].clone());
        let adm = disk.insert(&key(label, i), &obj, now());
        assert!(adm.is_admitted(), "{adm}");
    }
    let fill = started.elapsed();
    println!(
        "[{label}] SSD fill: {n} objects in {:.2} s = {:.0} fills/s, {:.0} MiB/s",
        fill.as_secs_f64(),
        rate(n, fill),
        mib(n * size as u64, fill)
    );

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let keys: Vec<CacheKey> = (0..reads).map(|_| key(label, rng.below(n))).collect();
    let started = Instant::now();
    let mut bytes = 0u64;
    for k in &keys {
        bytes += disk.get(k, now()).unwrap().body.len() as u64;
    }
    let hit = started.elapsed();
    println!(
        "[{label}] SSD hits (page cache, verified): {reads} in {:.2} s = {:.0} hits/s, {:.0} MiB/s",
        hit.as_secs_f64(),
        rate(reads, hit),
        mib(bytes, hit)
    );
    if size >= 1 << 20 {
        // The edge's path for objects too large for RAM: head first, then one chunk at a time.
        let started = Instant::now();
        let mut bytes = 0u64;
        for k in &keys {
            let hit = disk.get_chunked(k, 0, now()).unwrap();
            let mut reader = hit.reader(0..hit.body_len);
            while let Some(piece) = reader.next_chunk() {
                bytes += piece.unwrap().len() as u64;
            }
        }
        let hit = started.elapsed();
        println!(
            "[{label}] SSD chunk-by-chunk hits (page cache, verified): {reads} in {:.2} s = {:.0} hits/s, {:.0} MiB/s",
            hit.as_secs_f64(),
            rate(reads, hit),
            mib(bytes, hit)
        );
    }
    let stats = disk.stats();
    assert_eq!(stats.checksum_failures, 0);

    // RAM tier: as many objects as fit 1 GiB (at most n).
    let ram_objects = n.min((1u64 << 30) / (size as u64 + 512)).max(1);
    let ram = MemoryStore::new(4u64 << 30, PolicyKind::WTinyLfu);
    for i in 0..ram_objects {
        let obj = Arc::new(object(bodies[(i % 16) as usize].clone()));
        ram.insert(key(label, i), obj, now());
    }
    let ram_keys: Vec<CacheKey> = (0..reads)
        .map(|_| key(label, rng.below(ram_objects)))
        .collect();
    let started = Instant::now();
    let mut found = 0u64;
    for k in &ram_keys {
        found += u64::from(ram.get(k, now()).is_some());
    }
    let hit = started.elapsed();
    println!(
        "[{label}] RAM hits: {reads} gets over {ram_objects} objects ({found} hits) in {:.3} s = {:.0} gets/s",
        hit.as_secs_f64(),
        rate(reads, hit)
    );
    drop(disk);
    cfg
}

/// Streams `n` 1 MiB fills in 16 KiB pieces (as an origin body arrives), with `follow` one reader
/// drains what each piece made readable, then commits each.
fn run_stream(dir: &std::path::Path, n: u64, follow: bool) {
    let size = 1usize << 20;
    let body = vec![7u8; size];
    let label = if follow { "stream+follower" } else { "stream" };
    let cfg = DiskConfig {
        segment_bytes: 256 << 20,
        policy: PolicyKind::Lru,
        ..DiskConfig::new(dir.join(label), n * (size as u64 + 4096) + (1 << 30))
    };
    let _ = std::fs::remove_dir_all(&cfg.dir);
    let (disk, _) = DiskStore::open(&cfg, now()).unwrap();
    let proto = object(Bytes::new());
    let head = StreamHead {
        status: proto.status,
        headers: proto.headers.clone(),
        meta: proto.meta.clone(),
        body_len: size as u64,
    };
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut followed = 0u64;
    let started = Instant::now();
    for i in 0..n {
        let mut fill = disk.begin_stream(&key(label, i), &head, now()).unwrap();
        let mut reader = follow.then(|| fill.tap().reader(0));
        for piece in body.chunks(16 << 10) {
            fill.write(piece).unwrap();
            if let Some(r) = reader.as_mut() {
                while let std::task::Poll::Ready(Some(b)) = r.poll_next(&mut cx) {
                    followed += b.unwrap().len() as u64;
                }
            }
        }
        assert!(fill.commit(now()).is_admitted());
    }
    let elapsed = started.elapsed();
    println!(
        "[{label}] SSD streamed fills: {n} x 1 MiB in {:.2} s = {:.0} fills/s, {:.0} MiB/s written{}",
        elapsed.as_secs_f64(),
        rate(n, elapsed),
        mib(n * size as u64, elapsed),
        if follow {
            format!(", {:.0} MiB/s read back by the follower", mib(followed, elapsed))
        } else {
            String::new()
        }
    );
    assert!(!follow || followed == n * size as u64);
    assert_eq!(disk.stats().stream_commits, n);
}

/// Latency percentiles of a sample of nanosecond timings.
fn percentiles(label: &str, mut ns: Vec<u32>) {
    ns.sort_unstable();
    let at = |q: f64| -> f64 {
        if ns.is_empty() {
            return 0.0;
        }
        let i = ((ns.len() as f64 * q) as usize).min(ns.len() - 1);
        f64::from(ns[i]) / 1000.0
    };
    println!(
        "{label}: {} samples, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        ns.len(),
        at(0.50),
        at(0.99),
        at(0.999),
        ns.last().map_or(0.0, |m| f64::from(*m) / 1000.0)
    );
}

/// What one reader thread measured.
struct ReaderRun {
    latencies: Vec<u32>,
    hits: u64,
}

/// `readers` threads doing random gets of `hot` keys until `stop` is set; each get is timed.
fn spawn_readers(
    disk: &Arc<DiskStore>,
    hot: &Arc<Vec<CacheKey>>,
    readers: usize,
    stop: &Arc<AtomicBool>,
    via_threads: bool,
) -> Vec<std::thread::JoinHandle<ReaderRun>> {
    (0..readers)
        .map(|r| {
            let (disk, hot, stop) = (disk.clone(), hot.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (r as u64 + 1));
                let mut run = ReaderRun {
                    latencies: Vec::with_capacity(1 << 22),
                    hits: 0,
                };
                while !stop.load(Ordering::Relaxed) {
                    let k = &hot[rng.below(hot.len() as u64) as usize];
                    let started = Instant::now();
                    let found = if via_threads {
                        disk.get_async(k, now()).wait().is_some()
                    } else {
                        disk.get(k, now()).is_some()
                    };
                    let ns = started.elapsed().as_nanos();
                    run.latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
                    run.hits += u64::from(found);
                }
                run
            })
        })
        .collect()
}

fn join_readers(label: &str, handles: Vec<std::thread::JoinHandle<ReaderRun>>) {
    let mut all = Vec::new();
    let mut hits = 0u64;
    for h in handles {
        let run = h.join().unwrap();
        hits += run.hits;
        all.extend(run.latencies);
    }
    let gets = all.len() as u64;
    percentiles(
        &format!(
            "[reclaim] {label} SSD hit latency ({:.1}% hits)",
            100.0 * hits as f64 / gets.max(1) as f64
        ),
        all,
    );
}

/// Hit latency on a full SSD tier (16 MiB segments, a budget of 8, 4 KiB objects, W-TinyLFU),
/// quiet and then while a writer forces a reclamation about every 3 700 inserts.
fn run_reclaim_p99(
    dir: &std::path::Path,
    readers: usize,
    secs: u64,
    hot_keys: u64,
    via_threads: bool,
) {
    let segment_bytes = 16u64 << 20;
    let cfg = DiskConfig {
        segment_bytes,
        policy: PolicyKind::WTinyLfu,
        ..DiskConfig::new(dir.join("reclaim"), 8 * segment_bytes)
    };
    let _ = std::fs::remove_dir_all(&cfg.dir);
    let (disk, _) = DiskStore::open(&cfg, now()).unwrap();
    let disk = Arc::new(disk);
    let body = Bytes::from(vec![0x5a; 4096]);

    // Fill until the tier is full and has reclaimed once (near the end TinyLFU turns away
    // some of these one-hit keys; that is fine).
    let mut filled = 0u64;
    while disk.stats().reclaimed_segments == 0 {
        disk.insert(&key("fill", filled), &object(body.clone()), now());
        filled += 1;
    }
    // The hot set: keys spread over every live segment, read twice so they are survivors.
    let live: Vec<u64> = (0..filled)
        .filter(|i| disk.contains(&key("fill", *i)))
        .collect();
    let step = (live.len() as u64 / hot_keys.max(1)).max(1) as usize;
    let hot: Vec<CacheKey> = live
        .iter()
        .step_by(step)
        .take(hot_keys as usize)
        .map(|i| key("fill", *i))
        .collect();
    for _ in 0..2 {
        for k in &hot {
            disk.get(k, now());
        }
    }
    let before = disk.stats();
    println!(
        "[reclaim] tier full: {} objects in {} segments ({} MiB of {} MiB), {} hot keys, {readers} readers{}, {secs} s per phase",
        before.objects,
        before.segments,
        before.used_bytes >> 20,
        before.capacity_bytes >> 20,
        hot.len(),
        if via_threads {
            " (get_async on the SSD read threads)"
        } else {
            ""
        }
    );
    let hot = Arc::new(hot);

    // Phase 1: quiet.
    let stop = Arc::new(AtomicBool::new(false));
    let handles = spawn_readers(&disk, &hot, readers, &stop, via_threads);
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    join_readers("quiet     ", handles);

    // Phase 2: the same readers beside a writer that inserts fresh keys flat out.
    let stop = Arc::new(AtomicBool::new(false));
    let handles = spawn_readers(&disk, &hot, readers, &stop, via_threads);
    let writer = {
        let (disk, stop, body) = (disk.clone(), stop.clone(), body.clone());
        std::thread::spawn(move || {
            let mut latencies = Vec::with_capacity(1 << 20);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let obj = object(body.clone());
                let started = Instant::now();
                disk.insert(&key("churn", i), &obj, now());
                let ns = started.elapsed().as_nanos();
                latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
                i += 1;
            }
            latencies
        })
    };
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let inserts = writer.join().unwrap();
    let elapsed = started.elapsed();
    join_readers("reclaiming", handles);
    let after = disk.stats();
    println!(
        "[reclaim] writer: {} inserts = {:.0} inserts/s; {} segments reclaimed, {} survivors re-appended, {} evictions",
        inserts.len(),
        rate(inserts.len() as u64, elapsed),
        after.reclaimed_segments - before.reclaimed_segments,
        after.reappended - before.reappended,
        after.evictions - before.evictions
    );
    percentiles("[reclaim] writer insert latency", inserts);
    assert_eq!(after.checksum_failures, 0);
    drop(disk);
    let _ = std::fs::remove_dir_all(&cfg.dir);
}

/// RAM hit throughput of `n` 1 KiB objects: the RAM tier alone, then a hybrid store (RAM in
/// front of an SSD tier) whose RAM holds every object.
fn run_ram(dir: &std::path::Path, n: u64) {
    use outpost_store::HybridStore;
    let bodies: Vec<Bytes> = (0..16u8)
        .map(|b| Bytes::from(vec![b.wrapping_mul(31); 1024]))
        .collect();
    let reads = 4_000_000u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let keys: Vec<CacheKey> = (0..reads).map(|_| key("ram", rng.below(n))).collect();
    let time = |label: &str, get: &dyn Fn(&CacheKey) -> bool| {
        let started = Instant::now();
        let mut found = 0u64;
        for k in &keys {
            found += u64::from(get(k));
        }
        let hit = started.elapsed();
        assert_eq!(found, reads, "{label}: every get hits");
        println!(
            "[ram] {label}: {reads} gets over {n} objects in {:.3} s = {:.0} gets/s",
            hit.as_secs_f64(),
            rate(reads, hit)
        );
    };
    let ram = MemoryStore::new(4u64 << 30, PolicyKind::WTinyLfu);
    for i in 0..n {
        let obj = Arc::new(object(bodies[(i % 16) as usize].clone()));
        ram.insert(key("ram", i), obj, now());
    }
    time("MemoryStore::get", &|k| ram.get(k, now()).is_some());
    drop(ram);
    let cfg = DiskConfig {
        segment_bytes: 64 << 20,
        policy: PolicyKind::Lru,
        ..DiskConfig::new(dir.join("ram"), n * 2048 + (256 << 20))
    };
    let _ = std::fs::remove_dir_all(&cfg.dir);
    let (hybrid, _) = HybridStore::open_with(
        MemoryStore::new(4u64 << 30, PolicyKind::WTinyLfu),
        &cfg,
        now(),
    )
    .unwrap();
    for i in 0..n {
        let obj = Arc::new(object(bodies[(i % 16) as usize].clone()));
        assert!(hybrid.insert(key("ram", i), obj, now()).is_admitted());
    }
    time("HybridStore::get (RAM hits)", &|k| {
        hybrid.get(k, now()).is_some()
    });
    // The edge's path: answered on the caller's thread, no queue, no allocation.
    time("HybridStore::get_async (RAM hits)", &|k| {
        let hit = hybrid.get_async(k, now());
        hit.is_ready() && hit.wait().is_some()
    });
    drop(hybrid);
    let _ = std::fs::remove_dir_all(&cfg.dir);
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("ram") {
        args.next();
        let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
        let dir = std::env::temp_dir().join(format!("outpost-store-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        run_ram(&dir, n);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let mode = args.peek().cloned().unwrap_or_default();
    if mode == "reclaim" || mode == "reclaim-async" {
        args.next();
        let readers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
        let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
        let hot: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
        let dir: PathBuf = args.next().map(PathBuf::from).unwrap_or_else(|| {
            std::env::temp_dir().join(format!("outpost-store-bench-{}", std::process::id()))
        });
        std::fs::create_dir_all(&dir).unwrap();
        run_reclaim_p99(&dir, readers, secs, hot, mode == "reclaim-async");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir: PathBuf = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("outpost-store-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).unwrap();

    let small = run_size(&dir, "1KiB", 1024, n, 500_000.min(n * 2));
    let large_n = 512u64;
    let large = run_size(&dir, "1MiB", 1 << 20, large_n, 2_000);
    run_stream(&dir, large_n, false);
    run_stream(&dir, large_n, true);

    // Recovery of the small objects.
    let started = Instant::now();
    let (disk, report) = DiskStore::open(&small, now()).unwrap();
    let elapsed = started.elapsed();
    println!(
        "[recovery] {} objects, {} segments, {:.0} MiB scanned: open took {:.2} s (scan {:.2} s); torn {}, corrupt {}",
        report.indexed,
        report.segments,
        report.segment_bytes as f64 / (1024.0 * 1024.0),
        elapsed.as_secs_f64(),
        report.elapsed.as_secs_f64(),
        report.torn,
        report.corrupt
    );
    assert_eq!(report.indexed, n);
    drop(disk);
    let started = Instant::now();
    let (_disk, report) = DiskStore::open(&large, now()).unwrap();
    println!(
        "[recovery] {} x 1 MiB objects: open took {:.3} s",
        report.indexed,
        started.elapsed().as_secs_f64()
    );

    for objects in [1_000_000u64, 10_000_000] {
        let f = index_footprint(objects);
        println!(
            "[index] {objects} objects (measured): slot {} B (hash + {} B entry), main index {:.1} B/object, \
             admission sketch {:.1} B/object, together {:.1} B/object; prefix index ~{:.0} B/object + key text",
            f.slot_bytes,
            f.entry_bytes,
            f.index_bytes_per_object,
            f.admission_bytes_per_object,
            f.per_object(),
            f.prefix_bytes_per_object_plus_key
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
