//! The SSD I/O threads and their queues: shedding when full without blocking the caller,
//! purges applied in submission order after queued inserts, cancelled reads, async hits.
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
    let a = key("https://a.example/a");
    store.insert(&a, &object(b"a", &[]), t(1));
    let release = block(&store, LaneKind::Read);
    let before = store.stats();
    drop(store.get_async(&a, t(2)));
    drop(release);
    // The read thread is FIFO: once a later job ran, the cancelled one was passed over.
    store
        .submit(LaneKind::Read, (), |_| ())
        .expect("queued")
        .wait();
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
