//! The SSD I/O threads and their queues: shedding when full without blocking the caller,
//! purges applied in submission order after queued inserts, cancelled reads, async hits; and
//! the page-cache fast path in front of the read threads (reads served on the caller's thread,
//! counted, with identical bytes; a read that would wait falls back to the threads).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;

use super::*;

/// Occupies the thread of `lane` until the returned sender is dropped (or sent to); returns
/// once the job runs. (Its completion is kept: a dropped one would cancel a read.)
fn block(store: &DiskStore, lane: LaneKind) -> (mpsc::Sender<()>, Completion<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let (started, running) = mpsc::channel::<()>();
    let c = store
        .submit(lane, (), move |_| {
            started.send(()).unwrap();
            let _ = wait.recv();
        })
        .expect("queued");
    running
        .recv_timeout(Duration::from_secs(5))
        .expect("the blocker runs");
    (release, c)
}

fn tiny_queues(dir: &Path) -> DiskConfig {
    DiskConfig {
        read_threads: 1,
        read_queue: 1,
        append_queue: 1,
        policy: PolicyKind::Lru,
        ..cfg(dir, 1 << 20, 64 << 10)
    }
}

#[test]
fn full_queues_shed_without_blocking() {
    let dir = TempDir::new("lanes-full");
    let (store, _) = open(&tiny_queues(dir.path()));
    // Every read goes to the threads (as if nothing were in the page cache).
    store.force_read_eagain(true);
    let (a, b) = (key("https://a.example/a"), key("https://a.example/b"));
    store.insert(&a, &object(b"a", &[]), t(1));
    store.insert(&b, &object(b"b", &[]), t(1));

    // Reads: one thread busy, one lookup queued, the next one is a miss at once.
    let release_read = block(&store, LaneKind::Read);
    let queued = store.get_async(&a, t(2));
    assert!(!queued.is_ready());
    let shed = store.get_async(&b, t(2));
    assert!(shed.is_ready(), "a full read queue answers at once");
    assert!(shed.wait().is_none());
    assert_eq!(store.stats().read_queue_full, 1);

    // Appends: the thread busy, one insert queued, the next one is not stored.
    let release_append = block(&store, LaneKind::Append);
    let (c, d) = (key("https://a.example/c"), key("https://a.example/d"));
    let inserted = store.insert_async(c.clone(), Arc::new(object(b"c", &[])), t(2));
    let turned_away = store.insert_async(d.clone(), Arc::new(object(b"d", &[])), t(2));
    assert!(turned_away.is_ready());
    assert_eq!(turned_away.wait(), Admission::Rejected);
    assert_eq!(store.stats().append_queue_full, 1);
    // A purge is queued whatever the queue's length, and applies after the insert before it.
    let purged = store.remove_async(c.clone());
    assert!(!purged.is_ready());

    drop(release_read);
    drop(release_append);
    assert_eq!(&queued.wait().unwrap().body[..], b"a");
    assert_eq!(inserted.wait(), Admission::Admitted);
    assert!(purged.wait(), "the purge found the insert queued before it");
    assert!(store.get(&c, t(3)).is_none());
    assert!(store.get(&d, t(3)).is_none());
    store.check_invariants();
}

#[test]
fn dropping_a_completion_cancels_the_read() {
    let dir = TempDir::new("lanes-cancel");
    let (store, _) = open(&tiny_queues(dir.path()));
    store.force_read_eagain(true);
    let a = key("https://a.example/a");
    store.insert(&a, &object(b"a", &[]), t(1));
    let release = block(&store, LaneKind::Read);
    let before = store.stats();
    drop(store.get_async(&a, t(2)));
    drop(release);
    // The read thread is FIFO: once a later job ran, the cancelled one was passed over. The
    // queue holds one job, so the later one is queued once the thread took the cancelled one.
    let later = (0..5_000)
        .find_map(|_| {
            let queued = store.submit(LaneKind::Read, (), |_| ());
            if queued.is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            queued
        })
        .expect("queued");
    later.wait();
    let after = store.stats();
    assert_eq!((after.hits, after.misses), (before.hits, before.misses));
}

#[test]
fn async_reads_follow_the_sync_ones_and_chunks_arrive_through_the_waker() {
    let dir = TempDir::new("lanes-async");
    let c = DiskConfig {
        chunk_bytes: 1000,
        ..cfg(dir.path(), 4 << 20, 1 << 20)
    };
    let (store, _) = open(&c);
    let k = key("https://a.example/big");
    let body = patterned(10_500);
    assert!(store
        .insert_async(k.clone(), Arc::new(object(&body, &["t"])), t(1))
        .wait()
        .is_admitted());
    assert_eq!(
        &store.get_async(&k, t(2)).wait().unwrap().body[..],
        &body[..]
    );
    let hit = store.get_chunked_async(&k, 0, t(2)).wait().unwrap();
    let mut reader = hit.reader(0..hit.body_len);
    let mut out = Vec::new();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    loop {
        match reader.poll_next_chunk(&mut cx) {
            std::task::Poll::Ready(Some(piece)) => out.extend_from_slice(&piece.unwrap()),
            std::task::Poll::Ready(None) => break,
            std::task::Poll::Pending => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    assert_eq!(out, body);
    assert_eq!(store.remove_tag_async("t".into()).wait().len(), 1);
    assert!(store.get_async(&k, t(3)).wait().is_none());
}

#[test]
fn hybrid_ram_hits_answer_at_once_and_a_stale_promotion_is_undone() {
    let dir = TempDir::new("lanes-hybrid");
    let (hybrid, _) = HybridStore::open_with(
        MemoryStore::new(1 << 20, PolicyKind::Lru),
        &cfg(dir.path(), 4 << 20, 1 << 20),
        t(0),
    )
    .unwrap();
    let k = key("https://a.example/x");
    assert!(hybrid
        .insert_async(k.clone(), Arc::new(object(b"x", &[])), t(1))
        .wait()
        .is_admitted());
    let hit = hybrid.get_async(&k, t(2));
    assert!(hit.is_ready(), "a RAM hit needs no I/O thread");
    assert!(hit.wait().is_some());
    // An SSD hit is promoted on the read thread.
    hybrid.ram().remove(&k);
    assert!(hybrid.get_async(&k, t(2)).wait().is_some());
    assert!(hybrid.ram().contains(&k));
    // A promotion that raced a purge (the epoch moved since its read began) undoes itself.
    hybrid.ram().remove(&k);
    let obj = hybrid.disk().unwrap().get(&k, t(2));
    let epoch = hybrid.purge_epoch();
    hybrid.bump_purge_epoch();
    assert!(hybrid.promote_for_test(&k, obj, t(2), epoch).is_some());
    assert!(
        !hybrid.ram().contains(&k),
        "no RAM copy left by a stale promotion"
    );
    // Purges clear both tiers.
    assert!(hybrid.remove_async(&k).wait());
    assert!(hybrid.get_async(&k, t(3)).wait().is_none());
}

/// Polls `f` with a no-op waker until it is ready, counting the `Pending`s.
fn poll_until<T>(mut f: impl FnMut(&mut std::task::Context<'_>) -> std::task::Poll<T>) -> (T, u32) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut pending = 0;
    loop {
        match f(&mut cx) {
            std::task::Poll::Ready(v) => return (v, pending),
            std::task::Poll::Pending => {
                pending += 1;
                assert!(pending < 5_000, "never ready");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Reads a chunked hit whole through `poll_next_chunk`; the bytes and the `Pending`s met.
fn read_chunks(hit: &ChunkedHit) -> (Vec<u8>, u32) {
    let mut reader = hit.reader(0..hit.body_len);
    let mut out = Vec::new();
    let mut pendings = 0;
    loop {
        let (next, p) = poll_until(|cx| reader.poll_next_chunk(cx));
        pendings += p;
        match next {
            Some(piece) => out.extend_from_slice(&piece.unwrap()),
            None => return (out, pendings),
        }
    }
}

/// A store with 1000-byte chunks, holding a small object and a 10 500-byte one (11 chunks).
fn fast_store(dir: &TempDir) -> (DiskStore, CacheKey, StoredObject, CacheKey, Vec<u8>) {
    let c = DiskConfig {
        chunk_bytes: 1000,
        ..cfg(dir.path(), 4 << 20, 1 << 20)
    };
    let (store, _) = open(&c);
    let small = key("https://a.example/small");
    let small_obj = object(b"small body", &["t"]);
    store.insert(&small, &small_obj, t(1));
    let big = key("https://a.example/big");
    let body = patterned(10_500);
    store.insert(&big, &object(&body, &["t"]), t(1));
    (store, small, small_obj, big, body)
}

#[test]
fn cached_reads_are_served_on_the_callers_thread_with_identical_bytes() {
    let dir = TempDir::new("fast-path");
    let (store, small, small_obj, big, body) = fast_store(&dir);
    if !store.tier.io.fast.enabled() {
        eprintln!("the temp dir's file system has no RWF_NOWAIT: nothing to test here");
        return;
    }
    let before = store.stats();

    // A lookup: answered at once, the same object as the blocking read.
    let hit = store.get_async(&small, t(2));
    assert!(hit.is_ready(), "a cached record needs no read thread");
    assert_same(&hit.wait().unwrap(), &small_obj);
    assert_same(&store.get(&small, t(2)).unwrap(), &small_obj);
    // A miss is answered at once too (nothing to read).
    let miss = store.get_async(&key("https://a.example/absent"), t(2));
    assert!(miss.is_ready());
    assert!(miss.wait().is_none());

    // A chunked hit: the head at once, then every chunk without a `Pending`.
    let opened = store.get_chunked_async(&big, 0, t(2));
    assert!(opened.is_ready());
    let hit = opened.wait().unwrap();
    let (out, pendings) = read_chunks(&hit);
    assert_eq!(out, body);
    assert_eq!(pendings, 0, "every chunk read on the caller's thread");
    assert_eq!(
        hit.reader(0..hit.body_len).read_all().unwrap(),
        Bytes::from(body.clone()),
        "the blocking reader agrees"
    );

    let after = store.stats();
    // 1 lookup + 1 head + 11 chunks.
    assert_eq!(after.fast_reads - before.fast_reads, 13);
    assert_eq!(after.queued_reads, before.queued_reads, "nothing queued");
    assert_eq!(
        after.hits - before.hits,
        2,
        "the async and the blocking lookup"
    );
    assert_eq!(after.misses - before.misses, 1);

    // A follower of a streamed fill reads what was written, at once.
    let k = key("https://a.example/streamed");
    let sbody = patterned(2_500);
    let obj = object(&sbody, &[]);
    let mut fill = store.begin_stream(&k, &stream_head(&obj), t(1)).unwrap();
    let mut reader = fill.tap().reader(0);
    fill.write(&sbody).unwrap();
    let mut got = Vec::new();
    loop {
        let (next, pendings) = poll_until(|cx| reader.poll_read(cx));
        assert_eq!(pendings, 0);
        match next {
            Some(piece) => got.extend_from_slice(&piece.unwrap()),
            None => break,
        }
    }
    assert_eq!(got, sbody);
    assert_eq!(fill.commit(t(2)), Admission::Admitted);
    let last = store.stats();
    assert!(
        last.fast_reads - after.fast_reads >= 3,
        "one read per chunk"
    );
    assert_eq!(last.queued_reads, before.queued_reads);
    assert_eq!(last.stream_tap_bytes, 2_500);
    store.check_invariants();
}

#[test]
fn a_read_that_would_wait_falls_back_to_the_read_threads() {
    let dir = TempDir::new("fast-path-fallback");
    let (store, small, small_obj, big, body) = fast_store(&dir);
    // As if the page cache held nothing: every try reports EAGAIN.
    store.force_read_eagain(true);
    let before = store.stats();

    assert_same(&store.get_async(&small, t(2)).wait().unwrap(), &small_obj);
    let hit = store.get_chunked_async(&big, 0, t(2)).wait().unwrap();
    let (out, _) = read_chunks(&hit);
    assert_eq!(out, body);

    let k = key("https://a.example/streamed");
    let sbody = patterned(2_500);
    let obj = object(&sbody, &[]);
    let mut fill = store.begin_stream(&k, &stream_head(&obj), t(1)).unwrap();
    let mut reader = fill.tap().reader(0);
    fill.write(&sbody).unwrap();
    let mut got = Vec::new();
    while let (Some(piece), _) = poll_until(|cx| reader.poll_read(cx)) {
        got.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(got, sbody);
    drop(fill);

    let after = store.stats();
    assert_eq!(
        after.fast_reads, before.fast_reads,
        "nothing served by the fast path"
    );
    // 1 lookup + 1 head + 11 chunks + at least one tap read.
    assert!(after.queued_reads - before.queued_reads >= 14);
    assert_eq!(after.hits - before.hits, 1);
    assert_eq!((after.misses, after.checksum_failures), (before.misses, 0));

    // Back to the page cache: served on the caller's thread again (where supported).
    store.force_read_eagain(false);
    let again = store.get_async(&small, t(2));
    if store.tier.io.fast.enabled() {
        assert!(again.is_ready());
        assert_eq!(store.stats().fast_reads, after.fast_reads + 1);
    }
    assert_same(&again.wait().unwrap(), &small_obj);
}

#[test]
fn a_file_system_without_nowait_sends_every_read_to_the_threads() {
    let dir = TempDir::new("fast-path-unsupported");
    let (store, small, small_obj, _, _) = fast_store(&dir);
    store
        .tier
        .io
        .fast
        .force_errno(Some(rustix::io::Errno::OPNOTSUPP));
    assert_same(&store.get_async(&small, t(2)).wait().unwrap(), &small_obj);
    store.tier.io.fast.force_errno(None);
    assert!(!store.tier.io.fast.enabled(), "EOPNOTSUPP is remembered");
    let before = store.stats();
    assert_same(&store.get_async(&small, t(2)).wait().unwrap(), &small_obj);
    let after = store.stats();
    assert_eq!(after.fast_reads, before.fast_reads);
    assert_eq!(after.queued_reads, before.queued_reads + 1);
    // So does `fast_reads = false`.
    drop(store);
    let c = DiskConfig {
        fast_reads: false,
        chunk_bytes: 1000,
        ..cfg(dir.path(), 4 << 20, 1 << 20)
    };
    let (store, _) = open(&c);
    assert_same(&store.get_async(&small, t(2)).wait().unwrap(), &small_obj);
    let s = store.stats();
    assert_eq!((s.fast_reads, s.queued_reads), (0, 1));
}

#[test]
fn hybrid_ssd_hits_in_the_page_cache_are_promoted_at_once() {
    let dir = TempDir::new("fast-path-hybrid");
    let (hybrid, _) = HybridStore::open_with(
        MemoryStore::new(1 << 20, PolicyKind::Lru),
        &cfg(dir.path(), 4 << 20, 1 << 20),
        t(0),
    )
    .unwrap();
    let k = key("https://a.example/x");
    let obj = object(b"x body", &[]);
    assert!(hybrid
        .insert_async(k.clone(), Arc::new(obj.clone()), t(1))
        .wait()
        .is_admitted());
    hybrid.ram().remove(&k);
    let disk = hybrid.disk().unwrap();
    let fast = disk.tier.io.fast.enabled();
    let hit = hybrid.get_async(&k, t(2));
    assert_eq!(
        hit.is_ready(),
        fast,
        "ready at once when served from the page cache"
    );
    assert_same(&hit.wait().unwrap(), &obj);
    assert!(hybrid.ram().contains(&k), "promoted");
    assert_eq!(hybrid.stats_hybrid().disk_hits, 1);
    // Through the read threads: the same answer, promoted there.
    hybrid.ram().remove(&k);
    disk.force_read_eagain(true);
    assert_same(&hybrid.get_async(&k, t(2)).wait().unwrap(), &obj);
    assert!(hybrid.ram().contains(&k));
    let s = disk.stats();
    assert_eq!((s.fast_reads, s.queued_reads), (u64::from(fast), 1));
}
