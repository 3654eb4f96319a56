//! SSD tier and hybrid store behaviour: record format round trips, restart and recovery (index,
//! tags, prefixes, newest sequence, tombstones, torn tails), corruption handling, segment
//! reclamation, refusal of newer formats, and I/O failure modes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::format::{self, SEGMENT_HEADER_LEN};
use super::segment::{segment_path, PURGE_LOG};
use super::*;
use crate::{HybridStore, MemoryStore, ObjectMeta, Store};

mod lanes;
mod reclamation;

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "outpost-store-test-{name}-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        Self(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn object(body: &[u8], tags: &[&str]) -> StoredObject {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
    headers.append(http::header::SET_COOKIE, "a=1".parse().unwrap());
    headers.append(http::header::SET_COOKIE, "b=2".parse().unwrap());
    headers.insert("x-bin", http::HeaderValue::from_bytes(b"\xffok").unwrap());
    StoredObject {
        status: http::StatusCode::OK,
        headers,
        body: Bytes::copy_from_slice(body),
        meta: ObjectMeta {
            request_time: t(1) + Duration::from_nanos(123),
            response_time: t(2),
            initial_age: Duration::from_millis(1500),
            lifetime: Duration::from_secs(600),
            keep_until: t(100_000),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            vary: None,
            derived: None,
        },
    }
}

fn assert_same(a: &StoredObject, b: &StoredObject) {
    assert_eq!(a.status, b.status);
    assert_eq!(a.headers, b.headers);
    assert_eq!(a.body, b.body);
    assert_eq!(a.meta.request_time, b.meta.request_time);
    assert_eq!(a.meta.response_time, b.meta.response_time);
    assert_eq!(a.meta.initial_age, b.meta.initial_age);
    assert_eq!(a.meta.lifetime, b.meta.lifetime);
    assert_eq!(a.meta.keep_until, b.meta.keep_until);
    assert_eq!(a.meta.tags, b.meta.tags);
    assert_eq!(a.meta.vary, b.meta.vary);
    assert!(b.meta.derived.is_none());
}

fn cfg(dir: &Path, disk_bytes: u64, segment_bytes: u64) -> DiskConfig {
    DiskConfig {
        segment_bytes,
        chunk_bytes: 4096,
        ..DiskConfig::new(dir, disk_bytes)
    }
}

fn open(c: &DiskConfig) -> (DiskStore, RecoveryReport) {
    DiskStore::open(c, t(0)).unwrap()
}

fn key(s: &str) -> CacheKey {
    CacheKey::new(s)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(segment::parse_segment_name)
                .is_some()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn record_format_round_trip_with_chunks_vary_and_len() {
    let k = key("https://a.example/big");
    let body: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let mut obj = object(&body, &["t1", "t2"]);
    obj.meta.vary = Some(Arc::from(vec![
        http::header::ACCEPT_ENCODING,
        http::HeaderName::from_static("x-device"),
    ]));
    obj.meta.derived = Some(crate::Derived(Arc::new(5u32)));
    let record = format::encode_object(42, &k, &obj, 4096).unwrap();
    assert_eq!(
        record.len() as u64,
        format::object_record_len(&k, &obj, 4096)
    );
    let (header, view, chunks) = format::parse_prefix(&record).unwrap();
    assert_eq!(header.seq, 42);
    assert_eq!(header.key_hash, k.hash64());
    assert_eq!(header.version, FORMAT_VERSION);
    assert_eq!(chunks.len(), 3, "10 000 bytes in 4 KiB chunks");
    assert_eq!(
        chunks.iter().map(|c| c.len).collect::<Vec<_>>(),
        vec![4096, 4096, 1808]
    );
    assert_eq!(view.key, k.text());
    let back = format::decode_object(Bytes::from(record.clone()), k.text()).unwrap();
    assert_same(&obj, &back);
    assert!(matches!(
        format::decode_object(Bytes::from(record.clone()), "other"),
        Err(format::DecodeError::KeyMismatch)
    ));
    // Resequencing keeps it valid; any flipped byte does not.
    let mut moved = record.clone();
    format::set_sequence(&mut moved, 77).unwrap();
    assert_eq!(format::parse_prefix(&moved).unwrap().0.seq, 77);
    assert!(format::verify_record(&moved).is_ok());
    for pos in [0, 5, 9, 30, 41, 80, record.len() / 2, record.len() - 1] {
        let mut bad = record.clone();
        bad[pos] ^= 0x20;
        assert!(
            format::decode_object(Bytes::from(bad), k.text()).is_err(),
            "flip at {pos} detected"
        );
    }
    // Empty body: no chunks.
    let empty = object(b"", &[]);
    let record = format::encode_object(1, &k, &empty, 4096).unwrap();
    assert_eq!(format::parse_prefix(&record).unwrap().2.len(), 0);
    assert_same(
        &empty,
        &format::decode_object(Bytes::from(record), k.text()).unwrap(),
    );
}

#[test]
fn purge_records_and_segment_header_round_trip() {
    let rec = format::encode_purge(format::RecordKind::PurgeTag, 9, "tag-x").unwrap();
    let header = format::RecordHeader::parse(&rec).unwrap();
    header
        .verify(&rec[..40], &rec[40..header.prefix_len() as usize])
        .unwrap();
    assert_eq!(header.kind, format::RecordKind::PurgeTag);
    assert_eq!(format::decode_purge(&header, &rec[40..]).unwrap(), "tag-x");
    let sh = format::SegmentHeader::encode(7, 99);
    assert_eq!(
        format::SegmentHeader::decode(&sh).unwrap(),
        format::SegmentHeader {
            version: FORMAT_VERSION,
            id: 7,
            base_seq: 99
        }
    );
    let mut future = sh;
    future[8] = 3;
    assert_eq!(
        format::SegmentHeader::decode(&future),
        Err(FormatError::FutureVersion { found: 3 })
    );
    assert_eq!(
        format::parse_format_file(&format::format_file_text()),
        Ok(2)
    );
    assert!(format::parse_format_file("something else").is_err());
}

#[test]
fn disk_round_trip_collision_and_stats() {
    let dir = TempDir::new("roundtrip");
    let (store, report) = open(&cfg(dir.path(), 1 << 20, 64 << 10));
    assert_eq!(report.indexed, 0);
    let k = key("https://a.example/x");
    let obj = object(b"hello world", &["t"]);
    assert!(store.get(&k, t(3)).is_none());
    assert_eq!(store.insert(&k, &obj, t(3)), Admission::Admitted);
    let back = store.get(&k, t(4)).unwrap();
    assert_same(&obj, &back);
    // A key whose hash collides never sees another key's object.
    let collider = CacheKey::with_forced_hash("https://evil.example/", k.hash64());
    assert!(store.get(&collider, t(4)).is_none());
    let stats = store.stats();
    assert_eq!(stats.objects, 1);
    assert_eq!(stats.hits, 1);
    assert_eq!(stats.misses, 2);
    assert_eq!(stats.inserts, 1);
    assert_eq!(stats.live_bytes, store.record_len(&k, &obj));
    store.check_invariants();
    // Expiry: now >= keep_until is a miss.
    assert!(store.get(&k, obj.meta.keep_until).is_none());
    assert_eq!(store.stats().expired, 1);
    assert_eq!(store.stats().objects, 0);
    store.check_invariants();
}

#[test]
fn restart_rebuilds_index_tags_prefix_and_serves_identical_bytes() {
    let dir = TempDir::new("restart");
    let c = cfg(dir.path(), 4 << 20, 64 << 10);
    let mut originals = Vec::new();
    {
        let (store, _) = open(&c);
        for i in 0..200u32 {
            let body: Vec<u8> = (0..(i * 97 % 9000)).map(|b| (b ^ i) as u8).collect();
            let tags: Vec<String> = vec![format!("group-{}", i % 5)];
            let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
            let k = key(&format!("https://site-{}.example/item/{i}", i % 3));
            let obj = object(&body, &tag_refs);
            assert_eq!(store.insert(&k, &obj, t(5)), Admission::Admitted);
            originals.push((k, obj));
        }
        store.check_invariants();
        assert!(store.stats().segments > 2, "spans several segments");
    }
    let (store, report) = open(&c);
    assert_eq!(report.indexed, 200);
    assert_eq!(report.records, 200);
    assert_eq!(report.torn, 0);
    assert_eq!(report.corrupt, 0);
    store.check_invariants();
    for (k, obj) in &originals {
        assert_same(obj, &store.get(k, t(6)).unwrap());
    }
    // Tag index rebuilt: group-0 holds every fifth object.
    let removed = store.remove_tag("group-0");
    assert_eq!(removed.len(), 40);
    // Prefix index rebuilt.
    let removed = store.remove_prefix("https://site-1.example/");
    let expected = (0..200u32).filter(|i| i % 3 == 1 && i % 5 != 0).count();
    assert_eq!(removed.len(), expected);
    assert!(store.get(&originals[0].0, t(7)).is_none());
    assert!(store.get(&originals[2].0, t(7)).is_some());
    store.check_invariants();
}

#[test]
fn newest_sequence_wins_across_restart() {
    let dir = TempDir::new("newest");
    let c = cfg(dir.path(), 4 << 20, 8 << 10);
    let k = key("https://a.example/v");
    {
        let (store, _) = open(&c);
        for v in 0..20u32 {
            let obj = object(format!("version {v} {}", "x".repeat(600)).as_bytes(), &[]);
            store.insert(&k, &obj, t(1));
            // Spread versions over segments with filler.
            store.insert(&key(&format!("filler-{v}")), &object(&[1; 700], &[]), t(1));
        }
        assert!(store.stats().segments > 2);
    }
    let (store, report) = open(&c);
    assert_eq!(report.superseded, 19);
    let got = store.get(&k, t(2)).unwrap();
    assert!(got.body.starts_with(b"version 19 "));
    store.check_invariants();
}

#[test]
fn tombstones_survive_restart_and_later_fills_win() {
    let dir = TempDir::new("tombstone");
    let c = cfg(dir.path(), 4 << 20, 16 << 10);
    let a = key("https://a.example/a");
    let b = key("https://a.example/b");
    let p1 = key("https://a.example/p/1");
    let p2 = key("https://a.example/p/2");
    let keep = key("https://a.example/keep");
    let again = key("https://a.example/again");
    {
        let (store, _) = open(&c);
        store.insert(&a, &object(b"a", &[]), t(1));
        store.insert(&b, &object(b"b", &["purge-me"]), t(1));
        store.insert(&p1, &object(b"p1", &[]), t(1));
        store.insert(&p2, &object(b"p2", &[]), t(1));
        store.insert(&keep, &object(b"keep", &["other"]), t(1));
        store.insert(&again, &object(b"old", &[]), t(1));
        assert!(store.remove(&a));
        assert_eq!(store.remove_tag("purge-me").len(), 1);
        assert_eq!(store.remove_prefix("https://a.example/p/").len(), 2);
        assert!(store.remove(&again));
        store.insert(&again, &object(b"new", &[]), t(2));
        assert_eq!(store.stats().tombstones, 4);
    }
    for _ in 0..2 {
        let (store, report) = open(&c);
        assert_eq!(report.tombstones, 4);
        assert_eq!(report.purged, 5, "a, b, p1, p2 and the old `again`");
        for k in [&a, &b, &p1, &p2] {
            assert!(store.get(k, t(3)).is_none(), "{k} resurrected");
        }
        assert_eq!(
            store.get(&keep, t(3)).unwrap().body,
            Bytes::from_static(b"keep")
        );
        assert_eq!(
            store.get(&again, t(3)).unwrap().body,
            Bytes::from_static(b"new")
        );
        store.check_invariants();
    }
}

#[test]
fn torn_tail_is_ignored_and_later_segments_still_count() {
    let dir = TempDir::new("torn");
    let c = cfg(dir.path(), 4 << 20, 8 << 10);
    let keys: Vec<CacheKey> = (0..30).map(|i| key(&format!("k{i}"))).collect();
    {
        let (store, _) = open(&c);
        for (i, k) in keys.iter().enumerate() {
            store.insert(k, &object(&vec![i as u8; 1500], &[]), t(1));
        }
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    // Tear the last record of the first segment (as a crash mid-write would) and the last
    // record of the newest segment.
    let tear = |path: &Path| {
        let len = fs::metadata(path).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(len - 700).unwrap();
    };
    tear(&files[0]);
    let newest = files
        .iter()
        .rev()
        .find(|p| fs::metadata(p).unwrap().len() > SEGMENT_HEADER_LEN as u64)
        .unwrap()
        .clone();
    tear(&newest);
    let (store, report) = open(&c);
    assert_eq!(report.torn, 2);
    assert_eq!(report.indexed, 28);
    let missing: Vec<usize> = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| store.get(k, t(2)).is_none())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(missing.len(), 2);
    assert_eq!(*missing.last().unwrap(), 29, "the last fill was torn");
    for (i, k) in keys.iter().enumerate() {
        if !missing.contains(&i) {
            assert_eq!(
                store.get(k, t(2)).unwrap().body,
                Bytes::from(vec![i as u8; 1500])
            );
        }
    }
    // The torn tail was cut; a second restart sees a clean directory, and new fills work.
    store.insert(&keys[29], &object(b"refilled", &[]), t(3));
    drop(store);
    let (store, report) = open(&c);
    assert_eq!(report.torn, 0);
    assert_eq!(
        store.get(&keys[29], t(4)).unwrap().body,
        Bytes::from_static(b"refilled")
    );
    store.check_invariants();
}

#[test]
fn partial_header_and_garbage_tail_are_ignored() {
    let dir = TempDir::new("garbage");
    let c = cfg(dir.path(), 4 << 20, 64 << 10);
    {
        let (store, _) = open(&c);
        store.insert(&key("a"), &object(b"aaa", &[]), t(1));
    }
    let file = segment_files(dir.path()).into_iter().next().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(b"OPRC\x01\x00", len).unwrap(); // 6 bytes of a header
    let (store, report) = open(&c);
    assert_eq!(report.torn, 1);
    assert_eq!(
        store.get(&key("a"), t(2)).unwrap().body,
        Bytes::from_static(b"aaa")
    );
    drop(store);
    // A segment that is only a partial segment header (crash while creating it) is dropped.
    fs::write(segment_path(dir.path(), 999), b"OUTP").unwrap();
    let (store, report) = open(&c);
    assert_eq!(report.dropped_segments, 1);
    assert!(store.get(&key("a"), t(2)).is_some());
}

#[test]
fn flipped_byte_is_a_counted_miss_and_retires_the_segment() {
    let dir = TempDir::new("flip");
    let c = cfg(dir.path(), 4 << 20, 8 << 10);
    let (store, _) = open(&c);
    let victim = key("https://a.example/victim");
    store.insert(&victim, &object(&[7u8; 3000], &[]), t(1));
    let neighbour = key("https://a.example/neighbour");
    store.insert(&neighbour, &object(&[8u8; 100], &[]), t(1));
    // Fill more segments so that another segment holds other objects.
    for i in 0..10 {
        store.insert(
            &key(&format!("later-{i}")),
            &object(&[9u8; 2000], &[]),
            t(1),
        );
    }
    let files = segment_files(dir.path());
    let first = files[0].clone();
    // Flip one body byte of the victim (its record starts right after the segment header).
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&first)
        .unwrap();
    let pos = SEGMENT_HEADER_LEN as u64 + 400;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    f.write_all_at(&[b[0] ^ 1], pos).unwrap();
    assert!(store.get(&victim, t(2)).is_none());
    let stats = store.stats();
    assert_eq!(stats.checksum_failures, 1);
    assert_eq!(stats.retired_segments, 1);
    assert!(!first.exists(), "retired segment deleted");
    assert!(
        store.get(&neighbour, t(2)).is_none(),
        "same segment: retired"
    );
    assert!(
        store.get(&key("later-9"), t(2)).is_some(),
        "other segments unaffected"
    );
    store.check_invariants();
    // The node keeps filling.
    assert_eq!(
        store.insert(&victim, &object(b"refetched", &[]), t(3)),
        Admission::Admitted
    );
    assert_eq!(
        store.get(&victim, t(3)).unwrap().body,
        Bytes::from_static(b"refetched")
    );
}

#[test]
fn full_tier_turns_away_a_one_pass_scan_with_tinylfu() {
    let dir = TempDir::new("admission");
    let c = cfg(dir.path(), 64 << 10, 16 << 10);
    let (store, _) = open(&c);
    // Warm objects, each read a few times: the sketch knows them.
    let warm: Vec<CacheKey> = (0..30).map(|i| key(&format!("warm-{i}"))).collect();
    for k in &warm {
        assert_eq!(
            store.insert(k, &object(&[3u8; 900], &[]), t(1)),
            Admission::Admitted
        );
    }
    for _ in 0..3 {
        for k in &warm {
            assert!(store.get(k, t(1)).is_some());
        }
    }
    // A crawler: 400 never-seen keys, once each. While the tier has room they are appended;
    // once reclamation would drop live records, one-hit keys lose to the warm victims.
    for i in 0..400 {
        store.insert(&key(&format!("scan-{i}")), &object(&[4u8; 900], &[]), t(2));
    }
    let stats = store.stats();
    assert!(stats.rejected > 100, "{stats:?}");
    assert!(stats.used_bytes <= 64 << 10, "{stats:?}");
    store.check_invariants();
    // LRU (admit-all) takes every scan key in the same situation.
    let dir2 = TempDir::new("admission-lru");
    let c2 = DiskConfig {
        policy: PolicyKind::Lru,
        ..cfg(dir2.path(), 64 << 10, 16 << 10)
    };
    let (lru, _) = open(&c2);
    for i in 0..400 {
        lru.insert(&key(&format!("scan-{i}")), &object(&[4u8; 900], &[]), t(2));
    }
    assert_eq!(lru.stats().rejected, 0);
}

#[test]
fn reclamation_stays_in_budget_and_keeps_hot_objects() {
    for policy in PolicyKind::ALL {
        let dir = TempDir::new("reclaim");
        let c = DiskConfig {
            policy,
            ..cfg(dir.path(), 64 << 10, 16 << 10)
        };
        let (store, _) = open(&c);
        let hot = key("https://a.example/hot");
        let hot_obj = object(&[1u8; 1000], &["hot-tag"]);
        assert_eq!(store.insert(&hot, &hot_obj, t(1)), Admission::Admitted);
        let cold0 = key("cold-0");
        for i in 0..600 {
            // Twice: a second access is what gets a new key past TinyLFU's admission.
            let cold = key(&format!("cold-{i}"));
            store.insert(&cold, &object(&[2u8; 900], &[]), t(1));
            store.insert(&cold, &object(&[2u8; 900], &[]), t(1));
            if i % 3 == 0 {
                assert!(store.get(&hot, t(2)).is_some(), "{policy}: hot lost at {i}");
            }
            let s = store.stats();
            assert!(
                s.used_bytes <= 64 << 10,
                "{policy}: over budget {}",
                s.used_bytes
            );
        }
        let stats = store.stats();
        assert!(stats.reclaimed_segments > 5, "{policy}: {stats:?}");
        assert!(stats.reappended > 0, "{policy}: {stats:?}");
        assert!(
            store.get(&cold0, t(3)).is_none(),
            "{policy}: cold object gone"
        );
        store.check_invariants();
        // The moved hot object keeps its tag and survives a restart.
        drop(store);
        let (store, _) = open(&c);
        assert_same(&hot_obj, &store.get(&hot, t(4)).unwrap());
        assert_eq!(store.remove_tag("hot-tag").len(), 1);
        store.check_invariants();
    }
}

#[test]
fn future_format_version_is_refused_with_a_clear_message() {
    let dir = TempDir::new("future");
    fs::create_dir_all(dir.path()).unwrap();
    fs::write(dir.path().join("FORMAT"), "outpost-store format 3\n").unwrap();
    let err = DiskStore::open(&cfg(dir.path(), 1 << 20, 64 << 10), t(0)).unwrap_err();
    assert!(matches!(
        err,
        OpenError::FutureFormat {
            found: 3,
            supported: 2,
            ..
        }
    ));
    assert!(!err.fallback_to_ram());
    let msg = err.to_string();
    assert!(msg.contains("format version 3"), "{msg}");
    assert!(msg.contains("refusing"), "{msg}");
    assert!(
        fs::read_to_string(dir.path().join("FORMAT"))
            .unwrap()
            .contains('3'),
        "untouched"
    );

    // A segment written by a newer version, in a current directory.
    let dir = TempDir::new("future-seg");
    let c = cfg(dir.path(), 1 << 20, 64 << 10);
    {
        let (store, _) = open(&c);
        store.insert(&key("a"), &object(b"a", &[]), t(1));
    }
    let file = segment_files(dir.path()).into_iter().next().unwrap();
    let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(&3u16.to_le_bytes(), 8).unwrap();
    let err = DiskStore::open(&c, t(0)).unwrap_err();
    assert!(
        matches!(err, OpenError::FutureFormat { found: 3, .. }),
        "{err}"
    );
    assert!(segment_files(dir.path()).contains(&file), "never deleted");

    // A FORMAT file that is not ours.
    let dir = TempDir::new("foreign");
    fs::create_dir_all(dir.path()).unwrap();
    fs::write(dir.path().join("FORMAT"), "mysql 8\n").unwrap();
    let err = DiskStore::open(&cfg(dir.path(), 1 << 20, 64 << 10), t(0)).unwrap_err();
    assert!(matches!(err, OpenError::NotAStore { .. }));
    assert!(!err.fallback_to_ram());
}

#[test]
fn unusable_directory_is_an_error_to_fall_back_on() {
    let dir = TempDir::new("unwritable");
    fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let err = DiskStore::open(&cfg(&file.join("store"), 1 << 20, 64 << 10), t(0)).unwrap_err();
    assert!(err.fallback_to_ram(), "{err}");
    assert_eq!(err.as_str(), "io");
    assert!(err.to_string().contains("a-file"), "{err}");
    let err =
        HybridStore::open(&file, 1 << 20, 1 << 20, PolicyKind::default(), 64 << 10).unwrap_err();
    assert!(err.fallback_to_ram(), "{err}");
    // Fallback: RAM only still serves.
    let store = HybridStore::ram_only(1 << 20, PolicyKind::default());
    let k = key("k");
    assert!(store
        .insert(k.clone(), Arc::new(object(b"v", &[])), t(1))
        .is_admitted());
    assert!(store.get(&k, t(2)).is_some());
    assert!(store.stats_disk().is_none());
}

#[test]
fn tiny_disk_budget_never_panics() {
    for disk_bytes in [0u64, 100, 5_000, 20_000] {
        let dir = TempDir::new("tiny");
        let c = DiskConfig {
            policy: PolicyKind::Lru,
            ..cfg(dir.path(), disk_bytes, 4096)
        };
        let (store, _) = open(&c);
        for i in 0..200usize {
            let body = vec![i as u8; (i * 37) % 6000];
            let k = key(&format!("k{}", i % 50));
            let _ = store.insert(&k, &object(&body, &["t"]), t(1));
            let _ = store.get(&key(&format!("k{}", (i * 7) % 50)), t(1));
            if i % 40 == 0 {
                store.remove_tag("t");
            }
        }
        store.check_invariants();
        let stats = store.stats();
        assert!(
            stats.used_bytes <= disk_bytes.max(2 * SEGMENT_HEADER_LEN as u64),
            "{disk_bytes}: {stats:?}"
        );
        drop(store);
        let (store, _) = open(&c);
        store.check_invariants();
    }
}

#[test]
fn write_errors_are_counted_and_the_insert_rejected() {
    let dir = TempDir::new("ioerr");
    let c = cfg(dir.path(), 1 << 20, 8 << 10);
    let (store, _) = open(&c);
    store.insert(&key("before"), &object(b"ok", &[]), t(1));
    // Replace the directory by a file: every new segment fails to be created.
    for f in segment_files(dir.path()) {
        fs::remove_file(f).unwrap();
    }
    fs::remove_file(dir.path().join(PURGE_LOG)).unwrap();
    fs::remove_file(dir.path().join("FORMAT")).unwrap();
    fs::remove_file(dir.path().join("LOCK")).unwrap();
    fs::remove_dir(dir.path()).unwrap();
    fs::write(dir.path(), b"not a dir").unwrap();
    let mut rejected = 0;
    for i in 0..20 {
        let adm = store.insert(&key(&format!("k{i}")), &object(&[0u8; 3000], &[]), t(1));
        if adm == Admission::Rejected {
            rejected += 1;
        }
    }
    assert!(rejected > 0);
    assert!(store.stats().io_errors > 0);
    store.remove(&key("k1"));
    store.check_invariants();
    fs::remove_file(dir.path()).unwrap();
}

#[test]
fn purge_log_is_compacted_once_tombstones_are_obsolete() {
    let dir = TempDir::new("compact");
    let c = DiskConfig {
        policy: PolicyKind::Lru,
        ..cfg(dir.path(), 64 << 10, 8 << 10)
    };
    let (store, _) = open(&c);
    for i in 0..200 {
        let k = key(&format!("gone-{i}"));
        store.insert(&k, &object(b"x", &[]), t(1));
        store.remove(&k);
    }
    assert_eq!(store.stats().tombstones, 200);
    // Churn until every segment that predates the purges is reclaimed.
    for i in 0..400 {
        store.insert(&key(&format!("new-{i}")), &object(&[3u8; 500], &[]), t(1));
    }
    let tombstones = store.stats().tombstones;
    assert!(tombstones < 200, "compacted: {tombstones}");
    drop(store);
    let (store, report) = open(&c);
    assert_eq!(report.tombstones, tombstones);
    for i in 0..200 {
        assert!(store.get(&key(&format!("gone-{i}")), t(2)).is_none());
    }
    store.check_invariants();
}

#[test]
fn expired_records_are_dropped_at_recovery() {
    let dir = TempDir::new("expired");
    let c = cfg(dir.path(), 1 << 20, 64 << 10);
    {
        let (store, _) = open(&c);
        let mut short = object(b"short", &[]);
        short.meta.keep_until = t(10);
        store.insert(&key("short"), &short, t(1));
        store.insert(&key("long"), &object(b"long", &[]), t(1));
    }
    let (store, report) = DiskStore::open(&c, t(20)).unwrap();
    assert_eq!(report.expired, 1);
    assert_eq!(report.indexed, 1);
    assert!(store.get(&key("short"), t(5)).is_none());
    assert!(store.get(&key("long"), t(21)).is_some());
}

#[test]
fn hybrid_promotes_ssd_hits_and_purges_both_tiers() {
    let dir = TempDir::new("hybrid");
    let k = key("https://a.example/p");
    let marker = key("https://a.example/vary-marker");
    let mut vary_obj = object(b"accept-encoding", &["t"]);
    vary_obj.meta.vary = Some(Arc::from(vec![http::header::ACCEPT_ENCODING]));
    let obj = object(&[5u8; 5000], &["t", "u"]);
    {
        let (store, _) = HybridStore::open(
            dir.path(),
            1 << 20,
            1 << 20,
            PolicyKind::default(),
            64 << 10,
        )
        .unwrap();
        assert!(store
            .insert(k.clone(), Arc::new(obj.clone()), t(1))
            .is_admitted());
        assert!(store
            .insert(marker.clone(), Arc::new(vary_obj.clone()), t(1))
            .is_admitted());
        assert!(store.get(&k, t(2)).is_some());
        assert_eq!(store.stats_hybrid().disk_hits, 0, "RAM hit");
        store.flush().unwrap();
    }
    let (store, report) = HybridStore::open(
        dir.path(),
        1 << 20,
        1 << 20,
        PolicyKind::default(),
        64 << 10,
    )
    .unwrap();
    assert_eq!(report.indexed, 2);
    assert!(!store.ram().contains(&k));
    let got = store.get(&k, t(3)).unwrap();
    assert_same(&obj, &got);
    assert_same(&vary_obj, &store.get(&marker, t(3)).unwrap());
    let h = store.stats_hybrid();
    assert_eq!(h.disk_hits, 2);
    assert_eq!(h.promotions, 2);
    assert!(store.ram().contains(&k), "promoted through the RAM policy");
    store.get(&k, t(4)).unwrap();
    assert_eq!(store.stats_hybrid().disk_hits, 2, "second hit from RAM");
    let stats = store.stats();
    assert_eq!(stats.hits, 3);
    // Union count across tiers: two objects tagged `t`, in both tiers.
    assert_eq!(store.remove_tag("t"), 2);
    assert!(store.get(&k, t(5)).is_none());
    assert_eq!(store.remove_tag("u"), 0);
    drop(store);
    let (store, _) = HybridStore::open(
        dir.path(),
        1 << 20,
        1 << 20,
        PolicyKind::default(),
        64 << 10,
    )
    .unwrap();
    assert!(store.get(&k, t(6)).is_none(), "purge persisted");
    assert!(store.get(&marker, t(6)).is_none());
}

#[test]
fn hybrid_insert_outcomes_and_prefix_purge() {
    let dir = TempDir::new("hybrid2");
    let ram = MemoryStore::new(64 << 10, PolicyKind::default());
    let c = cfg(dir.path(), 1 << 20, 256 << 10);
    let (store, _) = HybridStore::open_with(ram, &c, t(0)).unwrap();
    // Too large for RAM (1/8 of 64 KiB) but fine on SSD: admitted, served from SSD.
    let big = key("https://a.example/big");
    let big_obj = object(&[1u8; 20_000], &[]);
    assert_eq!(
        store.insert(big.clone(), Arc::new(big_obj.clone()), t(1)),
        Admission::Admitted
    );
    assert!(!store.ram().contains(&big));
    assert_same(&big_obj, &store.get(&big, t(2)).unwrap());
    // Too large for both.
    let huge = object(&vec![0u8; 300 << 10], &[]);
    assert_eq!(
        store.insert(key("huge"), Arc::new(huge), t(1)),
        Admission::TooLarge
    );
    for i in 0..10 {
        store.insert(
            key(&format!("https://a.example/dir/{i}")),
            Arc::new(object(b"x", &[])),
            t(1),
        );
    }
    assert_eq!(store.remove_prefix("https://a.example/dir/"), 10);
    assert!(store.remove(&big));
    assert!(!store.remove(&big));
    let s = store.stats();
    assert_eq!(s.objects, 0, "{s:?}");
}

#[test]
fn index_footprint_is_within_budget() {
    // The budget: at most 64 bytes of RAM index per SSD object (main index + admission).
    for objects in [1_000, 150_000, 300_000] {
        let f = index_footprint(objects);
        assert_eq!(f.entry_bytes, 20);
        assert_eq!(f.slot_bytes, 28);
        assert!(f.per_object() <= 64.0, "{objects}: {f:?}");
    }
}

#[test]
fn concurrent_readers_and_writers_do_not_corrupt() {
    let dir = TempDir::new("concurrent");
    let c = cfg(dir.path(), 256 << 10, 32 << 10);
    let (store, _) = open(&c);
    let store = Arc::new(store);
    let threads: Vec<_> = (0..4)
        .map(|tid| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    let k = key(&format!("k{}", (i * 7 + tid) % 60));
                    if i % 2 == 0 {
                        store.insert(&k, &object(&vec![(i % 251) as u8; 700], &[]), t(1));
                    } else if let Some(obj) = store.get(&k, t(1)) {
                        let first = obj.body[0];
                        assert!(obj.body.iter().all(|b| *b == first));
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    store.check_invariants();
    assert_eq!(store.stats().checksum_failures, 0);
}

#[test]
fn range_reads_touch_only_the_chunks_they_need() {
    let dir = TempDir::new("range");
    let c = cfg(dir.path(), 1 << 20, 256 << 10);
    let (store, _) = open(&c);
    let k = key("https://a.example/video.ts");
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    store.insert(&k, &object(&body, &[]), t(1));
    let r = store.get_range(&k, 5000..5100, t(2)).unwrap();
    assert_eq!(r.bytes, Bytes::copy_from_slice(&body[5000..5100]));
    assert_eq!(r.chunks_read, 1);
    assert_eq!(r.body_len, 10_000);
    assert_eq!(r.start, 5000);
    let r = store.get_range(&k, 4000..9000, t(2)).unwrap();
    assert_eq!(r.bytes, Bytes::copy_from_slice(&body[4000..9000]));
    assert_eq!(r.chunks_read, 3);
    let r = store.get_range(&k, 9990..20_000, t(2)).unwrap();
    assert_eq!(r.bytes, Bytes::copy_from_slice(&body[9990..]));
    let r = store.get_range(&k, 20_000..30_000, t(2)).unwrap();
    assert!(r.bytes.is_empty());
    // Damage chunk 0: a range in chunk 2 still verifies (chunk 0 is never read), the whole
    // object does not.
    let file = segment_files(dir.path()).into_iter().next().unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let record_start = SEGMENT_HEADER_LEN as u64;
    let prefix = store.record_len(&k, &object(&body, &[])) - 10_000;
    let pos = record_start + prefix + 10;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], pos).unwrap();
    let r = store.get_range(&k, 8192..8300, t(3)).unwrap();
    assert_eq!(r.bytes, Bytes::copy_from_slice(&body[8192..8300]));
    assert!(store.get(&k, t(3)).is_none());
    assert_eq!(store.stats().checksum_failures, 1);
}

#[test]
fn random_operations_with_restarts_match_a_model() {
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;
    for seed in 0..4u64 {
        let dir = TempDir::new("model");
        // Budget large enough that nothing is evicted: the model is exact.
        let c = cfg(dir.path(), 16 << 20, 32 << 10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut model: HashMap<String, (Vec<u8>, Vec<String>)> = HashMap::new();
        let (mut store, _) = open(&c);
        for step in 0..600u32 {
            let k = format!(
                "https://h{}.example/p{}/{}",
                rng.gen_range(0..2),
                rng.gen_range(0..3),
                rng.gen_range(0..12)
            );
            match rng.gen_range(0..100) {
                0..=54 => {
                    let body = vec![step as u8; rng.gen_range(0..3000)];
                    let tags: Vec<String> = (0..rng.gen_range(0..3))
                        .map(|_| format!("tag{}", rng.gen_range(0..4)))
                        .collect();
                    let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
                    assert!(store
                        .insert(&key(&k), &object(&body, &tag_refs), t(1))
                        .is_admitted());
                    model.insert(k, (body, tags));
                }
                55..=69 => {
                    assert_eq!(
                        store.remove(&key(&k)),
                        model.remove(&k).is_some(),
                        "{seed}/{step}"
                    );
                }
                70..=77 => {
                    let tag = format!("tag{}", rng.gen_range(0..4));
                    let before = model.len();
                    model.retain(|_, (_, tags)| !tags.contains(&tag));
                    assert_eq!(
                        store.remove_tag(&tag).len(),
                        before - model.len(),
                        "{seed}/{step}"
                    );
                }
                78..=83 => {
                    let prefix = format!(
                        "https://h{}.example/p{}",
                        rng.gen_range(0..2),
                        rng.gen_range(0..3)
                    );
                    let before = model.len();
                    model.retain(|key, _| !key.starts_with(&prefix));
                    assert_eq!(
                        store.remove_prefix(&prefix).len(),
                        before - model.len(),
                        "{seed}/{step}"
                    );
                }
                84..=91 => {
                    drop(store);
                    let (reopened, report) = open(&c);
                    assert_eq!(report.indexed, model.len() as u64, "{seed}/{step}");
                    store = reopened;
                }
                _ => {
                    let got = store.get(&key(&k), t(2));
                    match model.get(&k) {
                        Some((body, tags)) => {
                            let got = got.expect("present");
                            assert_eq!(&got.body[..], &body[..], "{seed}/{step}");
                            assert_eq!(&got.meta.tags, tags);
                        }
                        None => assert!(got.is_none(), "{seed}/{step}: {k} resurrected"),
                    }
                }
            }
        }
        store.check_invariants();
        assert_eq!(store.stats().objects, model.len() as u64);
        for (k, (body, _)) in &model {
            assert_eq!(&store.get(&key(k), t(3)).unwrap().body[..], &body[..]);
        }
    }
}

#[test]
fn format_v2_bytes_are_stable() {
    // Golden values: a change here is a format change and needs a new FORMAT_VERSION.
    let mut obj = object(b"golden body", &["g1", "g2"]);
    obj.meta.vary = Some(Arc::from(vec![http::header::ACCEPT_ENCODING]));
    let record = format::encode_object(7, &key("https://golden.example/x"), &obj, 4).unwrap();
    assert_eq!(record.len(), 299);
    assert_eq!(crc32fast::hash(&record), GOLDEN_OBJECT_CRC);
    let purge = format::encode_purge(
        format::RecordKind::PurgePrefix,
        9,
        "https://golden.example/",
    )
    .unwrap();
    assert_eq!(crc32fast::hash(&purge), GOLDEN_PURGE_CRC);
    // Bytes 0..24 only: a CRC over data followed by its own CRC is a constant.
    assert_eq!(
        crc32fast::hash(&format::SegmentHeader::encode(3, 11)[..24]),
        GOLDEN_SEGMENT_CRC
    );
    // A streamed fill's reservation and commit of the same object: the committed record is
    // byte for byte the one `encode_object` makes (with the commit's sequence).
    let k = key("https://golden.example/x");
    let meta = format::encode_meta(&k, obj.status, &obj.headers, &obj.meta, 11, 4).unwrap();
    let layout = format::StreamLayout::new(meta.len(), 11, 4);
    let pending = format::encode_pending(5, k.hash64(), &meta, layout).unwrap();
    assert_eq!(crc32fast::hash(&pending), GOLDEN_PENDING_CRC);
    let crcs: Vec<(u32, u32)> = obj
        .body
        .chunks(4)
        .map(|c| (c.len() as u32, crc32fast::hash(c)))
        .collect();
    let (header, table) = format::encode_commit(7, k.hash64(), &meta, layout, &crcs).unwrap();
    let mut committed = header.to_vec();
    committed.extend_from_slice(&meta);
    committed.extend_from_slice(&table);
    committed.extend_from_slice(&obj.body);
    assert_eq!(committed, record);
}
const GOLDEN_OBJECT_CRC: u32 = 0xef7f_29d6;
const GOLDEN_PURGE_CRC: u32 = 0x1d73_eb82;
const GOLDEN_SEGMENT_CRC: u32 = 0x8660_fc56;
const GOLDEN_PENDING_CRC: u32 = 0xa30c_f31e;

/// Child side of [`kill9_during_fills_keeps_every_committed_fill`]: fills until killed, printing
/// each committed fill.
#[test]
#[ignore = "run as a child process by kill9_during_fills_keeps_every_committed_fill"]
fn kill9_child_writer() {
    use std::io::Write;
    let Ok(dir) = std::env::var("OUTPOST_STORE_KILL9_DIR") else {
        return;
    };
    let (store, _) = open(&cfg(Path::new(&dir), 256 << 20, 1 << 20));
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let body = vec![(i % 251) as u8; 1000 + (i as usize * 131) % 20_000];
        let adm = store.insert(&key(&format!("fill-{i}")), &object(&body, &["k9"]), t(1));
        assert!(adm.is_admitted());
        writeln!(out, "committed {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill9_during_fills_keeps_every_committed_fill() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = TempDir::new("kill9");
    fs::create_dir_all(dir.path()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "disk::tests::kill9_child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OUTPOST_STORE_KILL9_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut last = None;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(n) = line.trim().strip_prefix("committed ") {
            let n: u64 = n.parse().unwrap();
            last = Some(n);
            if n >= 400 {
                break;
            }
        }
        line.clear();
    }
    child.kill().unwrap(); // SIGKILL, while the child is still filling
    child.wait().unwrap();
    drop(reader);
    let last = last.expect("the child committed fills");
    let (store, report) = open(&cfg(dir.path(), 256 << 20, 1 << 20));
    assert!(report.indexed > last, "{report:?}");
    eprintln!("kill9: last committed {last}, recovered {report:?}");
    for i in 0..=last {
        let body = vec![(i % 251) as u8; 1000 + (i as usize * 131) % 20_000];
        let got = store
            .get(&key(&format!("fill-{i}")), t(2))
            .unwrap_or_else(|| panic!("committed fill {i} lost ({report:?})"));
        assert_eq!(&got.body[..], &body[..]);
    }
    store.check_invariants();
}

#[test]
fn a_directory_in_use_is_refused() {
    let dir = TempDir::new("lock");
    let cfg = DiskConfig::new(dir.path(), 64 << 20);
    let (first, _) = DiskStore::open(&cfg, SystemTime::UNIX_EPOCH).unwrap();
    match DiskStore::open(&cfg, SystemTime::UNIX_EPOCH) {
        Err(e @ OpenError::InUse { .. }) => {
            assert!(!e.fallback_to_ram());
            assert!(e.to_string().contains("in use by another process"), "{e}");
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    drop(first);
    // Released on drop: the directory opens again.
    assert!(DiskStore::open(&cfg, SystemTime::UNIX_EPOCH).is_ok());
}

// ---- Streamed fills (stream.rs) ----

fn stream_head(obj: &StoredObject) -> StreamHead {
    StreamHead {
        status: obj.status,
        headers: obj.headers.clone(),
        meta: obj.meta.clone(),
        body_len: obj.body.len() as u64,
    }
}

/// Polls a reader once with a no-op waker.
fn poll_once(r: &mut TapReader) -> std::task::Poll<Option<Result<Bytes, TapError>>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    r.poll_next(&mut cx)
}

/// Reads everything available now; `true` when the reader reached the end.
fn drain(r: &mut TapReader, out: &mut Vec<u8>) -> bool {
    loop {
        match poll_once(r) {
            std::task::Poll::Ready(Some(Ok(b))) => out.extend_from_slice(&b),
            std::task::Poll::Ready(None) => return true,
            std::task::Poll::Ready(Some(Err(e))) => panic!("reader failed: {e}"),
            std::task::Poll::Pending => return false,
        }
    }
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i % 253) as u8).collect()
}

#[test]
fn streamed_fill_is_followed_while_written_and_survives_restart() {
    let dir = TempDir::new("stream");
    let c = cfg(dir.path(), 4 << 20, 1 << 20);
    let (store, _) = open(&c);
    let k = key("https://a.example/big.mp4");
    let body = patterned(10_000);
    let obj = object(&body, &["vid"]);
    let mut fill = store.begin_stream(&k, &stream_head(&obj), t(1)).unwrap();
    let tap = fill.tap();
    let mut early = tap.reader(0);
    let mut got = Vec::new();
    assert!(!drain(&mut early, &mut got), "nothing written yet");
    assert!(got.is_empty());
    // Not indexed until the commit.
    assert!(store.get(&k, t(1)).is_none());

    fill.write(&body[..5000]).unwrap();
    assert!(!drain(&mut early, &mut got));
    assert_eq!(got, &body[..5000], "bytes are readable as soon as written");
    // A late reader starting mid-way, inside the completed first chunk (verified read).
    let mut late = tap.reader(1000);
    let mut late_got = Vec::new();
    assert!(!drain(&mut late, &mut late_got));
    assert_eq!(late_got, &body[1000..5000]);

    fill.write(&body[5000..9000]).unwrap();
    fill.write(&body[9000..]).unwrap();
    assert_eq!(fill.written(), 10_000);
    // The whole body is there: readers end even before the commit.
    assert!(drain(&mut early, &mut got));
    assert_eq!(got, body);
    assert!(drain(&mut late, &mut late_got));
    assert_eq!(late_got, &body[1000..]);

    assert_eq!(fill.commit(t(2)), Admission::Admitted);
    assert_same(&store.get(&k, t(3)).unwrap(), &obj);
    let r = store.get_range(&k, 8192..8200, t(3)).unwrap();
    assert_eq!(r.bytes, Bytes::copy_from_slice(&body[8192..8200]));
    let s = store.stats();
    assert_eq!(
        (s.stream_fills, s.stream_commits, s.stream_aborts),
        (1, 1, 0)
    );
    assert_eq!(s.stream_tap_bytes, 10_000 + 9000);
    store.check_invariants();
    drop(store);

    let (store, report) = open(&c);
    assert_eq!(report.abandoned, 0);
    assert_eq!(report.corrupt, 0);
    assert_same(&store.get(&k, t(3)).unwrap(), &obj);
    assert_eq!(store.remove_tag("vid").len(), 1);
}

#[test]
fn abandoned_stream_fails_its_readers_and_is_skipped_at_recovery() {
    let dir = TempDir::new("stream-abandon");
    let c = cfg(dir.path(), 4 << 20, 1 << 20);
    let (store, _) = open(&c);
    let before = object(b"written before", &[]);
    store.insert(&key("before"), &before, t(1));
    let body = patterned(20_000);
    let obj = object(&body, &[]);
    let mut fill = store
        .begin_stream(&key("big"), &stream_head(&obj), t(1))
        .unwrap();
    let mut reader = fill.tap().reader(0);
    fill.write(&body[..7000]).unwrap();
    // Appended after the reservation, in the same segment.
    let after = object(b"written after", &[]);
    store.insert(&key("after"), &after, t(1));
    let mut got = Vec::new();
    assert!(!drain(&mut reader, &mut got));
    drop(fill); // the origin went away mid-body
    assert!(matches!(
        poll_once(&mut reader),
        std::task::Poll::Ready(Some(Err(TapError::Failed(_))))
    ));
    assert!(store.get(&key("big"), t(2)).is_none());
    assert_eq!(store.stats().stream_aborts, 1);
    drop(store);

    let (store, report) = open(&c);
    assert_eq!(report.abandoned, 1, "{report:?}");
    assert_eq!(report.corrupt, 0, "{report:?}");
    assert!(store.get(&key("big"), t(2)).is_none());
    assert_same(&store.get(&key("before"), t(2)).unwrap(), &before);
    assert_same(&store.get(&key("after"), t(2)).unwrap(), &after);
    // The segment is reused for appending and stays consistent.
    store.insert(&key("later"), &object(b"later", &[]), t(2));
    store.check_invariants();
}

/// Child side of the streamed-fill kill tests: begins a fill of "big", writes part of it (with
/// `after`, then fills "after" behind the reservation), says "ready" and blocks on stdin until
/// the parent kills it.
#[test]
#[ignore = "run as a child process by the streamed-fill kill -9 tests"]
fn stream_kill9_child() {
    use std::io::Write;
    let Ok(dir) = std::env::var("OUTPOST_STREAM_KILL9_DIR") else {
        return;
    };
    let after = std::env::var("OUTPOST_STREAM_KILL9_AFTER").is_ok();
    let (store, _) = open(&cfg(Path::new(&dir), 4 << 20, 1 << 20));
    store.insert(&key("first"), &object(b"first", &[]), t(1));
    let obj = object(&patterned(50_000), &[]);
    let mut fill = store
        .begin_stream(&key("big"), &stream_head(&obj), t(1))
        .unwrap();
    fill.write(&obj.body[..30_000]).unwrap();
    if after {
        store.insert(&key("after"), &object(b"after", &[]), t(1));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    // Block until the parent kills this process (it holds our stdin open until then).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    panic!("stdin closed before the kill");
}

/// Runs [`stream_kill9_child`] in `dir` and SIGKILLs it mid-fill.
fn kill_mid_stream(dir: &Path, after: bool) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "disk::tests::stream_kill9_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("OUTPOST_STREAM_KILL9_DIR", dir)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if after {
        cmd.env("OUTPOST_STREAM_KILL9_AFTER", "1");
    }
    let mut child = cmd.spawn().unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && !line.contains("ready") {
        line.clear();
    }
    assert!(line.contains("ready"), "child did not start its fill");
    child.kill().unwrap(); // SIGKILL, mid-fill
    child.wait().unwrap();
}

#[test]
fn a_process_killed_mid_stream_leaves_a_skippable_reservation() {
    let dir = TempDir::new("stream-crash");
    kill_mid_stream(dir.path(), true);
    let c = cfg(dir.path(), 4 << 20, 1 << 20);
    let (store, report) = open(&c);
    assert_eq!((report.abandoned, report.corrupt), (1, 0), "{report:?}");
    assert!(store.get(&key("big"), t(2)).is_none());
    assert_same(
        &store.get(&key("first"), t(2)).unwrap(),
        &object(b"first", &[]),
    );
    assert_same(
        &store.get(&key("after"), t(2)).unwrap(),
        &object(b"after", &[]),
    );
}

#[test]
fn a_reservation_cut_at_the_tail_is_torn_and_cut() {
    let dir = TempDir::new("stream-tail");
    kill_mid_stream(dir.path(), false);
    let c = cfg(dir.path(), 4 << 20, 1 << 20);
    let (store, report) = open(&c);
    assert_eq!(report.torn, 1, "{report:?}");
    assert!(store.get(&key("first"), t(2)).is_some());
    assert!(store.get(&key("big"), t(2)).is_none());
    store.insert(&key("next"), &object(b"next", &[]), t(2));
    drop(store);
    let (store, report) = open(&c);
    assert_eq!(report.corrupt + report.torn, 0, "{report:?}");
    assert!(store.get(&key("next"), t(2)).is_some());
}

#[test]
fn purges_during_a_stream_keep_it_out_of_the_index_across_restarts() {
    let dir = TempDir::new("stream-purge");
    let c = cfg(dir.path(), 4 << 20, 1 << 20);
    let (store, _) = open(&c);
    let body = patterned(9000);
    type Case = (&'static str, &'static [&'static str], fn(&DiskStore));
    let cases: [Case; 3] = [
        ("https://p.example/key", &[], |s| {
            s.remove(&key("https://p.example/key"));
        }),
        ("https://p.example/tag", &["t1"], |s| {
            s.remove_tag("t1");
        }),
        ("https://p.example/dir/x", &[], |s| {
            s.remove_prefix("https://p.example/dir/");
        }),
    ];
    for (k, tags, purge) in cases {
        let obj = object(&body, tags);
        let mut fill = store
            .begin_stream(&key(k), &stream_head(&obj), t(1))
            .unwrap();
        let mut reader = fill.tap().reader(0);
        fill.write(&body).unwrap();
        purge(&store);
        assert_eq!(fill.commit(t(2)), Admission::Rejected, "{k}");
        assert!(store.get(&key(k), t(2)).is_none(), "{k}");
        // Followers still get the whole body.
        let mut got = Vec::new();
        assert!(drain(&mut reader, &mut got));
        assert_eq!(got, body);
    }
    assert_eq!(store.stats().stream_dropped, 3);
    // A purge before the stream began does not block it.
    let obj = object(&body, &["t1"]);
    let mut fill = store
        .begin_stream(&key("https://p.example/tag"), &stream_head(&obj), t(3))
        .unwrap();
    fill.write(&body).unwrap();
    assert_eq!(fill.commit(t(3)), Admission::Admitted);
    drop(store);
    let (store, _) = open(&c);
    assert!(store.get(&key("https://p.example/key"), t(4)).is_none());
    assert!(store.get(&key("https://p.example/dir/x"), t(4)).is_none());
    assert!(store.get(&key("https://p.example/tag"), t(4)).is_some());
}

#[test]
fn a_stream_replaces_the_stored_version_only_at_commit() {
    let dir = TempDir::new("stream-replace");
    let c = cfg(dir.path(), 4 << 20, 1 << 20);
    let (store, _) = open(&c);
    let k = key("k");
    let v1 = object(b"version one", &[]);
    store.insert(&k, &v1, t(1));
    let v2 = object(&patterned(6000), &[]);
    let mut fill = store.begin_stream(&k, &stream_head(&v2), t(1)).unwrap();
    fill.write(&v2.body[..3000]).unwrap();
    assert_same(&store.get(&k, t(2)).unwrap(), &v1);
    fill.write(&v2.body[3000..]).unwrap();
    assert_eq!(fill.commit(t(2)), Admission::Admitted);
    assert_same(&store.get(&k, t(2)).unwrap(), &v2);
    drop(store);
    let (store, _) = open(&c);
    assert_same(&store.get(&k, t(2)).unwrap(), &v2);
}

#[test]
fn stream_length_mismatches_and_oversize_fail_cleanly() {
    let dir = TempDir::new("stream-len");
    let c = cfg(dir.path(), 1 << 20, 256 << 10);
    let (store, _) = open(&c);
    let obj = object(&patterned(5000), &[]);
    // Too long.
    let mut fill = store
        .begin_stream(&key("a"), &stream_head(&obj), t(1))
        .unwrap();
    let mut reader = fill.tap().reader(0);
    assert!(fill.write(&patterned(6000)).is_err());
    assert!(fill.write(b"x").is_err());
    assert!(matches!(
        poll_once(&mut reader),
        std::task::Poll::Ready(Some(Err(_)))
    ));
    assert_eq!(fill.commit(t(1)), Admission::Rejected);
    // Too short.
    let mut fill = store
        .begin_stream(&key("b"), &stream_head(&obj), t(1))
        .unwrap();
    fill.write(&obj.body[..100]).unwrap();
    assert_eq!(fill.commit(t(1)), Admission::Rejected);
    assert!(store.get(&key("b"), t(1)).is_none());
    // Larger than a segment.
    let mut head = stream_head(&obj);
    head.body_len = 10 << 20;
    assert_eq!(
        store.begin_stream(&key("c"), &head, t(1)).err(),
        Some(Admission::TooLarge)
    );
    assert_eq!(store.stats().stream_aborts, 2);
    drop(store);
    // The first reservation is skipped; the second, at the end of the file and never written
    // to its end, is a torn tail.
    let (_, report) = open(&c);
    assert_eq!(
        (report.abandoned, report.torn, report.corrupt),
        (1, 1, 0),
        "{report:?}"
    );
}

#[test]
fn a_reader_refuses_a_damaged_completed_chunk() {
    let dir = TempDir::new("stream-damage");
    let c = cfg(dir.path(), 4 << 20, 1 << 20);
    let (store, _) = open(&c);
    let obj = object(&patterned(12_000), &[]);
    let mut fill = store
        .begin_stream(&key("v"), &stream_head(&obj), t(1))
        .unwrap();
    fill.write(&obj.body[..9000]).unwrap();
    // Flip a byte of chunk 0 (4096-byte chunks) on disk.
    let file = segment_files(dir.path()).into_iter().last().unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let pos = len - 9000 + 10;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], pos).unwrap();
    let mut reader = fill.tap().reader(0);
    assert!(matches!(
        poll_once(&mut reader),
        std::task::Poll::Ready(Some(Err(TapError::Checksum(0))))
    ));
    // The fill is never indexed; the failure is counted and the segment retired, like a read.
    fill.write(&obj.body[9000..]).unwrap();
    assert_eq!(fill.commit(t(1)), Admission::Rejected);
    assert!(store.get(&key("v"), t(1)).is_none());
    let s = store.stats();
    assert_eq!((s.checksum_failures, s.retired_segments), (1, 1), "{s:?}");
}

#[test]
fn concurrent_followers_on_threads_read_identical_bytes() {
    let dir = TempDir::new("stream-threads");
    let c = cfg(dir.path(), 8 << 20, 2 << 20);
    let (store, _) = open(&c);
    let body = patterned(300_000);
    let obj = object(&body, &[]);
    let mut fill = store
        .begin_stream(&key("v"), &stream_head(&obj), t(1))
        .unwrap();
    let tap = fill.tap();
    let readers: Vec<_> = (0..4u64)
        .map(|i| {
            let mut r = tap.reader(i * 1000);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..100_000 {
                    if drain(&mut r, &mut got) {
                        return got;
                    }
                    std::thread::yield_now();
                }
                panic!("reader never finished");
            })
        })
        .collect();
    for piece in body.chunks(7777) {
        fill.write(piece).unwrap();
    }
    assert_eq!(fill.commit(t(1)), Admission::Admitted);
    for (i, h) in readers.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), &body[i * 1000..]);
    }
}

#[test]
fn hybrid_streams_to_ssd_and_drops_the_old_ram_copy_at_commit() {
    let dir = TempDir::new("stream-hybrid");
    let c = cfg(dir.path(), 4 << 20, 1 << 20);
    let (hybrid, _) =
        HybridStore::open_with(MemoryStore::new(1 << 20, Default::default()), &c, t(0)).unwrap();
    let k = key("k");
    let v1 = Arc::new(object(b"old", &[]));
    hybrid.insert(k.clone(), v1, t(1));
    assert!(hybrid.ram().contains(&k));
    let v2 = object(&patterned(5000), &[]);
    let mut fill = Store::begin_stream(&hybrid, &k, &stream_head(&v2), t(1)).unwrap();
    fill.write(&v2.body).unwrap();
    assert_eq!(hybrid.commit_stream(fill, t(2)), Admission::Admitted);
    assert!(!hybrid.ram().contains(&k));
    assert_same(&hybrid.get(&k, t(2)).unwrap(), &v2);
    // RAM-only stores do not stream.
    let ram = HybridStore::ram_only(1 << 20, Default::default());
    assert!(Store::begin_stream(&ram, &k, &stream_head(&v2), t(1)).is_none());
}

/// Rewrites every record and segment header of `dir` as format version 1 wrote them (version 2
/// only added the `PENDING` flag) and marks the directory version 1.
fn downgrade_to_v1(dir: &Path) {
    for file in segment_files(dir) {
        let mut bytes = fs::read(&file).unwrap();
        let header = format::SegmentHeader::decode(&bytes).unwrap();
        let mut seg = format::SegmentHeader::encode(header.id, header.base_seq);
        seg[8..10].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32fast::hash(&seg[0..24]);
        seg[24..28].copy_from_slice(&crc.to_le_bytes());
        bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&seg);
        let mut off = SEGMENT_HEADER_LEN;
        while off < bytes.len() {
            let h = format::RecordHeader::parse(&bytes[off..]).unwrap();
            let end = off + h.total_len as usize;
            bytes[off + 4..off + 6].copy_from_slice(&1u16.to_le_bytes());
            format::set_sequence(&mut bytes[off..end], h.seq).unwrap();
            off = end;
        }
        fs::write(&file, bytes).unwrap();
    }
    fs::write(dir.join("FORMAT"), "outpost-store format 1\n").unwrap();
}

#[test]
fn a_version_1_directory_is_read_and_marked_version_2() {
    let dir = TempDir::new("v1");
    let c = cfg(dir.path(), 1 << 20, 256 << 10);
    let obj = object(&patterned(10_000), &["t"]);
    {
        let (store, _) = open(&c);
        store.insert(&key("a"), &obj, t(1));
    }
    downgrade_to_v1(dir.path());
    let (store, report) = open(&c);
    assert_eq!((report.indexed, report.corrupt), (1, 0), "{report:?}");
    assert_same(&store.get(&key("a"), t(2)).unwrap(), &obj);
    assert_eq!(
        fs::read_to_string(dir.path().join("FORMAT")).unwrap(),
        "outpost-store format 2\n",
        "marked so that version-1 builds refuse it"
    );
    assert_eq!(store.remove_tag("t").len(), 1);
}

// ---- Chunk-by-chunk hits (chunked.rs) ----

#[test]
fn chunked_hits_read_one_verified_chunk_at_a_time() {
    let dir = TempDir::new("chunked");
    let c = cfg(dir.path(), 4 << 20, 1 << 20);
    let (store, _) = open(&c);
    let k = key("https://a.example/big.bin");
    let body = patterned(10_000); // three 4 KiB chunks
    let obj = object(&body, &[]);
    store.insert(&k, &obj, t(1));
    store.insert(&key("small"), &object(b"tiny", &[]), t(1));

    // Records shorter than the minimum are left to `get`, with nothing counted.
    let before = store.stats();
    assert!(store.get_chunked(&key("small"), 1000, t(2)).is_none());
    assert!(store.get_chunked(&key("absent"), 1000, t(2)).is_none());
    assert_eq!(store.stats().hits, before.hits);

    let hit = store.get_chunked(&k, 1000, t(2)).unwrap();
    assert_eq!((hit.status, hit.body_len), (obj.status, 10_000));
    assert_eq!(hit.headers, obj.headers);
    let mut whole = hit.reader(0..u64::MAX);
    assert_eq!((whole.len(), whole.chunks_left()), (10_000, 3));
    let mut pieces = Vec::new();
    while let Some(piece) = whole.next_chunk() {
        pieces.push(piece.unwrap());
    }
    assert_eq!(
        pieces.iter().map(Bytes::len).collect::<Vec<_>>(),
        [4096, 4096, 1808]
    );
    assert_eq!(pieces.concat(), body);
    let s = store.stats();
    assert_eq!((s.chunks_served, s.range_reads), (3, 0));
    // A range reads only what it overlaps, trimmed.
    let r = hit.reader(4000..4200);
    assert_eq!(r.chunks_left(), 2);
    assert_eq!(r.read_all().unwrap(), &body[4000..4200]);
    assert_eq!(hit.reader(9999..20_000).read_all().unwrap(), &body[9999..]);
    assert!(hit.reader(20_000..30_000).read_all().unwrap().is_empty());
    let s = store.stats();
    assert_eq!((s.range_reads, s.range_chunks_read), (3, 3));

    // A damaged chunk ends the reader with an error, counted, and retires the segment; the
    // chunks before it were served.
    let file = segment_files(dir.path()).into_iter().next().unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let prefix = store.record_len(&k, &obj) - 10_000;
    let pos = SEGMENT_HEADER_LEN as u64 + prefix + 5000;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], pos).unwrap();
    let mut r = hit.reader(0..10_000);
    assert!(r.next_chunk().unwrap().is_ok());
    assert!(matches!(r.next_chunk(), Some(Err(ChunkError::Checksum(1)))));
    assert!(r.next_chunk().is_none());
    let s = store.stats();
    assert_eq!((s.checksum_failures, s.retired_segments), (1, 1), "{s:?}");
    assert!(store.get(&k, t(3)).is_none());
}

#[test]
fn hybrid_chunks_only_what_ram_cannot_hold() {
    let dir = TempDir::new("chunked-hybrid");
    let c = cfg(dir.path(), 4 << 20, 1 << 20);
    let ram = MemoryStore::with_shards(64 << 10, Default::default(), 1);
    let max = ram.max_object_bytes();
    let (hybrid, _) = HybridStore::open_with(ram, &c, t(0)).unwrap();
    let small = key("small");
    let big = key("big");
    hybrid.insert(small.clone(), Arc::new(object(&patterned(1000), &[])), t(1));
    hybrid.insert(
        big.clone(),
        Arc::new(object(&patterned(max as usize * 2), &[])),
        t(1),
    );
    assert!(hybrid.ram().contains(&small) && !hybrid.ram().contains(&big));
    // RAM-resident: never chunked, not even for ranges.
    assert!(hybrid.get_chunked(&small, 0, t(2)).is_none());
    // Too large for RAM: chunked for whole-body reads and ranges.
    assert!(hybrid.get_chunked(&big, 1, t(2)).is_some());
    assert!(hybrid.get_chunked(&big, 0, t(2)).is_some());
    // An SSD-only object RAM could hold: whole-body reads take `get` (and promotion).
    hybrid.ram().remove(&small);
    assert!(hybrid.get_chunked(&small, 1, t(2)).is_none());
    assert!(
        hybrid.get_chunked(&small, 0, t(2)).is_some(),
        "ranges still chunk"
    );
    assert!(hybrid.get(&small, t(2)).is_some());
    assert!(hybrid.ram().contains(&small), "promoted");
}
