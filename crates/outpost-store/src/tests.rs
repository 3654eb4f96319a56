//! MemoryStore behaviour: round trips, expiry, collisions, tag and prefix purges, budgets, and a
//! property test over random operation sequences for every policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use proptest::prelude::*;

use crate::*;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn object(body: &[u8], tags: &[&str], keep_until: SystemTime) -> Arc<StoredObject> {
    Arc::new(StoredObject {
        status: http::StatusCode::OK,
        headers: http::HeaderMap::new(),
        body: Bytes::copy_from_slice(body),
        meta: ObjectMeta {
            request_time: t(0),
            response_time: t(0),
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(60),
            keep_until,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            vary: None,
            derived: None,
        },
    })
}

fn key(s: &str) -> CacheKey {
    CacheKey::new(s)
}

#[test]
fn insert_get_round_trip_and_stats() {
    let store = MemoryStore::new(1 << 20, PolicyKind::default());
    assert_eq!(store.shard_count(), 1);
    let k = key("https://a.example/x");
    assert!(store.get(&k, t(1)).is_none());
    assert_eq!(
        store.insert(k.clone(), object(b"hello", &[], t(100)), t(1)),
        Admission::Admitted
    );
    let got = store.get(&k, t(2)).unwrap();
    assert_eq!(got.body, Bytes::from_static(b"hello"));
    let stats = store.stats();
    assert_eq!(stats.objects, 1);
    assert_eq!(stats.hits, 1);
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.inserts, 1);
    assert_eq!(stats.capacity_bytes, 1 << 20);
    assert_eq!(stats.bytes, MemoryStore::charge(&k, &got));
    assert!(store.remove(&k));
    assert!(!store.remove(&k));
    assert_eq!(store.stats().objects, 0);
    assert_eq!(store.stats().bytes, 0);
    store.check_invariants();
}

#[test]
fn expired_objects_are_dropped_on_get() {
    let store = MemoryStore::new(1 << 20, PolicyKind::S3Fifo);
    let k = key("k");
    store.insert(k.clone(), object(b"v", &["tag"], t(10)), t(0));
    assert!(store.get(&k, t(9)).is_some());
    assert!(
        store.get(&k, t(10)).is_none(),
        "now == keep_until is expired"
    );
    let stats = store.stats();
    assert_eq!(stats.expired, 1);
    assert_eq!(stats.objects, 0);
    assert_eq!(store.remove_tag("tag"), 0, "tag index cleaned up");
    store.check_invariants();

    store.insert(key("a"), object(b"v", &[], t(10)), t(0));
    store.insert(key("b"), object(b"v", &[], t(20)), t(0));
    assert_eq!(store.remove_expired(t(15)), 1);
    assert!(store.contains(&key("b")) && !store.contains(&key("a")));
    store.check_invariants();
}

#[test]
fn colliding_hashes_never_return_the_wrong_object() {
    let store = MemoryStore::new(1 << 20, PolicyKind::WTinyLfu);
    let a = CacheKey::with_forced_hash("https://a.example/one", 42);
    let b = CacheKey::with_forced_hash("https://b.example/two", 42);
    store.insert(a.clone(), object(b"one", &["ta"], t(100)), t(0));
    assert!(
        store.get(&b, t(1)).is_none(),
        "same hash, other text: a miss"
    );
    assert!(!store.remove(&b), "cannot remove a different key");
    assert!(store.get(&a, t(1)).is_some());
    // The colliding key displaces the first one.
    assert_eq!(
        store.insert(b.clone(), object(b"two", &["tb"], t(100)), t(1)),
        Admission::Admitted
    );
    assert!(store.get(&a, t(2)).is_none());
    assert_eq!(
        store.get(&b, t(2)).unwrap().body,
        Bytes::from_static(b"two")
    );
    assert_eq!(store.remove_tag("ta"), 0);
    assert_eq!(store.stats().evictions, 1);
    store.check_invariants();
    assert_eq!(store.remove_tag("tb"), 1);
    store.check_invariants();
}

#[test]
fn remove_tag_removes_every_tagged_object_across_shards() {
    let store = MemoryStore::with_shards(64 << 20, PolicyKind::WTinyLfu, 16);
    assert_eq!(store.shard_count(), 16);
    for i in 0..200 {
        let tags: &[&str] = if i % 3 == 0 {
            &["product-1", "all"]
        } else {
            &["all"]
        };
        store.insert(
            key(&format!("https://s.example/{i}")),
            object(b"x", tags, t(100)),
            t(0),
        );
    }
    store.check_invariants();
    assert_eq!(store.remove_tag("product-1"), 67);
    assert_eq!(store.remove_tag("product-1"), 0);
    assert!(store.get(&key("https://s.example/0"), t(1)).is_none());
    assert!(store.get(&key("https://s.example/1"), t(1)).is_some());
    store.check_invariants();
    assert_eq!(store.remove_tag("all"), 133);
    assert_eq!(store.stats().objects, 0);
    store.check_invariants();
}

#[test]
fn replacing_an_object_updates_its_tags() {
    let store = MemoryStore::new(1 << 20, PolicyKind::Lru);
    let k = key("k");
    store.insert(k.clone(), object(b"v1", &["old", "both"], t(100)), t(0));
    assert_eq!(
        store.insert(
            k.clone(),
            object(b"v2-longer", &["new", "both"], t(100)),
            t(1)
        ),
        Admission::Admitted
    );
    store.check_invariants();
    assert_eq!(store.remove_tag("old"), 0);
    assert_eq!(
        store.get(&k, t(2)).unwrap().body,
        Bytes::from_static(b"v2-longer")
    );
    assert_eq!(store.remove_tag("both"), 1);
    assert_eq!(store.remove_tag("new"), 0);
    store.check_invariants();
}

#[test]
fn remove_prefix_matches_key_text() {
    let store = MemoryStore::with_shards(64 << 20, PolicyKind::S3Fifo, 4);
    for path in ["/a/1", "/a/2", "/a/b/3", "/ab", "/b/1"] {
        store.insert(
            key(&format!("https://h.example{path}")),
            object(b"x", &["t"], t(100)),
            t(0),
        );
    }
    assert_eq!(store.remove_prefix("https://h.example/a/"), 3);
    assert!(store.contains(&key("https://h.example/ab")));
    assert!(store.contains(&key("https://h.example/b/1")));
    assert_eq!(store.remove_tag("t"), 2);
    store.check_invariants();
}

#[test]
fn too_large_objects_are_not_stored_and_supersede_the_old_version() {
    let store = MemoryStore::new(80_000, PolicyKind::WTinyLfu);
    assert_eq!(store.max_object_bytes(), 10_000);
    let k = key("big");
    assert_eq!(
        store.insert(k.clone(), object(&[0; 1000], &[], t(100)), t(0)),
        Admission::Admitted
    );
    let big = vec![0u8; 10_000];
    assert_eq!(
        store.insert(k.clone(), object(&big, &[], t(100)), t(1)),
        Admission::TooLarge
    );
    assert!(store.get(&k, t(2)).is_none());
    assert_eq!(store.stats().too_large, 1);
    assert_eq!(Admission::TooLarge.as_str(), "too_large");
    store.check_invariants();
}

#[test]
fn scan_is_rejected_once_the_store_is_full_and_updates_are_always_admitted() {
    let store = MemoryStore::new(200_000, PolicyKind::WTinyLfu);
    // 150 hot objects of ~1.3 KB nearly fill the 200 KB store.
    let hot: Vec<CacheKey> = (0..150).map(|i| key(&format!("hot/{i}"))).collect();
    for round in 0..5 {
        for k in &hot {
            if store.get(k, t(round)).is_none() {
                store.insert(k.clone(), object(&[1; 1000], &[], t(1000)), t(round));
            }
        }
    }
    let scan: Vec<CacheKey> = (0..2000).map(|i| key(&format!("scan/{i}"))).collect();
    for k in &scan {
        // Small objects enter the window (admitted) and lose their contest on the way out.
        store.insert(k.clone(), object(&[2; 1000], &[], t(1000)), t(10));
    }
    let survivors = hot.iter().filter(|k| store.contains(k)).count();
    assert!(survivors >= 140, "{survivors} hot objects survived");
    let scan_resident = scan.iter().filter(|k| store.contains(k)).count();
    assert!(scan_resident <= 10, "{scan_resident} scan objects resident");
    // Objects bigger than the window contest at the door and are reported as rejected.
    let mut rejected = 0;
    for i in 0..100 {
        let k = key(&format!("big-scan/{i}"));
        if store.insert(k, object(&[2; 5000], &[], t(1000)), t(10)) == Admission::Rejected {
            rejected += 1;
        }
    }
    assert!(rejected >= 95, "{rejected} rejected");
    assert_eq!(store.stats().rejected, rejected);
    // Updating a hot object (bigger body) is admitted even though the store is full.
    assert_eq!(
        store.insert(hot[0].clone(), object(&[3; 1500], &[], t(1000)), t(11)),
        Admission::Admitted
    );
    assert_eq!(store.get(&hot[0], t(12)).unwrap().body.len(), 1500);
    store.check_invariants();
}

#[test]
fn shard_count_follows_capacity() {
    assert_eq!(default_shard_count(0), 1);
    assert_eq!(default_shard_count(64 << 20), 1);
    assert_eq!(default_shard_count(256 << 20), 4);
    assert_eq!(default_shard_count(1000 << 20), 8);
    assert_eq!(default_shard_count(1 << 40), 64);
    assert_eq!(
        MemoryStore::with_shards(1 << 30, PolicyKind::Lru, 5).shard_count(),
        8
    );
}

#[test]
fn concurrent_use_keeps_invariants() {
    let store = Arc::new(MemoryStore::with_shards(2 << 20, PolicyKind::WTinyLfu, 8));
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    let k = key(&format!("k/{}", (i * 7 + n) % 500));
                    if store.get(&k, t(i)).is_none() {
                        store.insert(k, object(&[0; 3000], &["x"], t(i + 100)), t(i));
                    }
                    if i % 500 == 0 {
                        store.remove_tag("x");
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    store.check_invariants();
}

#[derive(Debug, Clone)]
enum StoreOp {
    Insert {
        key: u8,
        len: usize,
        tag: u8,
        ttl: u64,
    },
    Get {
        key: u8,
    },
    Remove {
        key: u8,
    },
    RemoveTag {
        tag: u8,
    },
    RemovePrefix {
        group: u8,
    },
    Tick {
        secs: u64,
    },
}

fn store_op() -> impl Strategy<Value = StoreOp> {
    prop_oneof![
        6 => (0u8..40, 0usize..6000, 0u8..4, 1u64..50)
            .prop_map(|(key, len, tag, ttl)| StoreOp::Insert { key, len, tag, ttl }),
        5 => (0u8..40).prop_map(|key| StoreOp::Get { key }),
        1 => (0u8..40).prop_map(|key| StoreOp::Remove { key }),
        1 => (0u8..4).prop_map(|tag| StoreOp::RemoveTag { tag }),
        1 => (0u8..4).prop_map(|group| StoreOp::RemovePrefix { group }),
        1 => (1u64..20).prop_map(|secs| StoreOp::Tick { secs }),
    ]
}

fn op_key(k: u8) -> CacheKey {
    key(&format!("https://p.example/g{}/{k}", k % 4))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_operations_keep_budget_and_indexes(
        kind in prop_oneof![Just(PolicyKind::WTinyLfu), Just(PolicyKind::S3Fifo), Just(PolicyKind::Lru)],
        shards in prop_oneof![Just(1usize), Just(2), Just(4)],
        capacity in 20_000u64..200_000,
        ops in proptest::collection::vec(store_op(), 1..200),
    ) {
        let store = MemoryStore::with_shards(capacity, kind, shards);
        let mut now = 0u64;
        for op in &ops {
            match *op {
                StoreOp::Insert { key, len, tag, ttl } => {
                    let k = op_key(key);
                    let body: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_add(key)).collect();
                    let tag = format!("tag{tag}");
                    let obj = object(&body, &[tag.as_str()], t(now + ttl));
                    let charge = MemoryStore::charge(&k, &obj);
                    let outcome = store.insert(k.clone(), obj, t(now));
                    prop_assert_eq!(outcome == Admission::TooLarge, charge > store.max_object_bytes());
                    if outcome == Admission::Admitted {
                        let got = store.get(&k, t(now));
                        prop_assert!(got.is_some());
                        prop_assert_eq!(&got.unwrap().body[..], &body[..]);
                    } else {
                        prop_assert!(!store.contains(&k));
                    }
                }
                StoreOp::Get { key } => {
                    let k = op_key(key);
                    if let Some(obj) = store.get(&k, t(now)) {
                        prop_assert!(t(now) < obj.meta.keep_until);
                        prop_assert!(obj.body.iter().enumerate().all(|(i, b)| *b == (i as u8).wrapping_add(key)));
                    }
                }
                StoreOp::Remove { key } => {
                    let k = op_key(key);
                    let was = store.contains(&k);
                    prop_assert_eq!(store.remove(&k), was);
                    prop_assert!(!store.contains(&k));
                }
                StoreOp::RemoveTag { tag } => {
                    let tag = format!("tag{tag}");
                    let before = store.stats().objects;
                    let n = store.remove_tag(&tag);
                    prop_assert_eq!(store.stats().objects, before - n as u64);
                    prop_assert_eq!(store.remove_tag(&tag), 0);
                }
                StoreOp::RemovePrefix { group } => {
                    let prefix = format!("https://p.example/g{group}/");
                    store.remove_prefix(&prefix);
                    for k in 0..40u8 {
                        if k % 4 == group {
                            prop_assert!(!store.contains(&op_key(k)));
                        }
                    }
                }
                StoreOp::Tick { secs } => now += secs,
            }
            let stats = store.stats();
            prop_assert!(stats.bytes <= stats.capacity_bytes);
            store.check_invariants();
        }
    }
}

/// Replays a trace of ids through `store` as a cache does (a get, and an insert on a miss) with
/// equal 64-byte bodies; returns the hit ratio.
fn replay_ids(store: &MemoryStore, trace: &[(u64, u64)]) -> f64 {
    let mut hits = 0usize;
    for &(id, _) in trace {
        let k = key(&format!("https://t.example/{id:016x}"));
        if store.get(&k, t(1)).is_some() {
            hits += 1;
        } else {
            store.insert(k, object(&[0; 64], &[], t(1_000_000)), t(1));
        }
    }
    hits as f64 / trace.len().max(1) as f64
}

#[test]
fn sharded_ram_tier_picks_its_mode_from_one_sample_across_its_shards() {
    use crate::policy::tests::{churn_trace, loop_trace};
    use crate::policy::Mode;
    let charge = MemoryStore::charge(
        &key("https://t.example/0123456789abcdef"),
        &object(&[0; 64], &[], t(0)),
    );
    // A loop of 12,000 objects in 8,000 objects' room over 16 shards: a shard's own shadows
    // (1/64 of 500 objects) could never decide; the tier's (125 objects) pick Frequency.
    let looped = MemoryStore::with_shards(8_000 * charge, PolicyKind::S3TinyLfu, 16);
    assert_eq!(looped.mode(), Some(Mode::Recency));
    let ratio = replay_ids(&looped, &loop_trace(100_000, 12_000, 600_000));
    assert_eq!(looped.mode(), Some(Mode::Frequency), "hit ratio {ratio:.3}");
    assert!(looped.mode_switches() >= 1);
    // Popularity churn keeps Recency.
    let churn = MemoryStore::with_shards(4_000 * charge, PolicyKind::S3TinyLfu, 16);
    replay_ids(&churn, &churn_trace(50_000, 20_000, 1_000, 400_000));
    assert_eq!(churn.mode(), Some(Mode::Recency));
    // Other policies have no mode.
    assert_eq!(MemoryStore::new(1 << 20, PolicyKind::WTinyLfu).mode(), None);
}
