//! Incremental reclamation: hits, purges, replacements, streamed commits and readers while the
//! reclaimer (or a rotation) is parked at each of its points (`reclaim::hooks`), and a kill -9
//! mid-reclamation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::thread;

use super::*;

/// Runs `f` on a thread of its own and fails the test if it has not returned within 2 s (it
/// would wait for a lock the parked reclamation holds).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(2))
        .unwrap_or_else(|_| panic!("{what}: blocked behind the reclamation"))
}

const HOT: &str = "https://a.example/hot";
const COLD: &str = "https://a.example/cold";

/// A tier of four 16 KiB segments (64 KiB budget, admit-all), where segment 1, the oldest,
/// holds a hot record and a cold one and is the segment the next rotation drains: the
/// reclaimer has been woken to prepare it (parked at `park` if given).
struct Scene {
    store: Arc<DiskStore>,
    cfg: DiskConfig,
    next: usize,
    /// A record in another segment.
    other: CacheKey,
    _dir: TempDir,
}

fn hot_obj() -> StoredObject {
    object(&[1u8; 900], &["hot-tag"])
}

fn cold_obj() -> StoredObject {
    object(&[2u8; 900], &["cold-tag"])
}

fn filler(i: usize) -> (CacheKey, StoredObject) {
    (
        key(&format!("https://b.example/fill-{i}")),
        object(&[3u8; 900], &[]),
    )
}

impl Scene {
    fn new(name: &str, park: Option<&'static str>) -> Self {
        let dir = TempDir::new(name);
        let c = DiskConfig {
            policy: PolicyKind::Lru,
            chunk_bytes: 256,
            ..cfg(dir.path(), 64 << 10, 16 << 10)
        };
        let (store, _) = open(&c);
        if let Some(point) = park {
            store.park_reclaim_at(point);
        }
        assert!(store.insert(&key(HOT), &hot_obj(), t(1)).is_admitted());
        assert!(store.get(&key(HOT), t(1)).is_some(), "marks it hot");
        assert!(store.insert(&key(COLD), &cold_obj(), t(1)).is_admitted());
        let mut scene = Self {
            store: Arc::new(store),
            cfg: c,
            next: 0,
            other: key("unset"),
            _dir: dir,
        };
        // Three rotations: segments 1-3 sealed, 4 active; the fourth rotation drains 1.
        while scene.store.stats().segments < 4 {
            scene.fill_one();
        }
        scene.other = filler(scene.next - 1).0;
        assert_eq!(scene.store.stats().reclaimed_segments, 0);
        scene
    }

    fn fill_one(&mut self) {
        let (k, obj) = filler(self.next);
        self.next += 1;
        assert!(self.store.insert(&k, &obj, t(1)).is_admitted());
    }

    /// Fills until the oldest segment has been drained.
    fn drain_oldest(&mut self) {
        let before = self.store.stats().reclaimed_segments;
        while self.store.stats().reclaimed_segments == before {
            self.fill_one();
        }
    }

    /// Starts a thread that fills until a rotation drains the oldest segment (it parks inside
    /// that rotation when `after_unlink` is armed).
    fn drain_on_thread(&mut self) -> thread::JoinHandle<()> {
        let store = self.store.clone();
        let start = self.next + 10_000;
        thread::spawn(move || {
            let before = store.stats().reclaimed_segments;
            for i in start.. {
                let (k, obj) = filler(i);
                store.insert(&k, &obj, t(1));
                if store.stats().reclaimed_segments > before {
                    break;
                }
            }
        })
    }

    /// Drops the store (the caller holds no other handle) and opens the directory again.
    fn reopen(&mut self) {
        assert_eq!(Arc::strong_count(&self.store), 1, "no other holder");
        // The directory lock goes with the old store: swap in the new one only once it is gone.
        let old = std::mem::replace(&mut self.store, Arc::new(Self::detached()));
        drop(old);
        self.store = Arc::new(open(&self.cfg).0);
    }

    /// A throwaway store in a directory of its own, held while the real one is reopened.
    fn detached() -> DiskStore {
        let dir = TempDir::new("reclaim-detached");
        let store = open(&cfg(dir.path(), 64 << 10, 16 << 10)).0;
        drop(dir);
        store
    }
}

/// Reads `k` three ways (get, chunk by chunk, contains), each within 2 s, and checks the body.
fn reads_ok(store: &Arc<DiskStore>, k: &CacheKey, body: &[u8], when: &str) {
    let (s, kk) = (store.clone(), k.clone());
    let got = within(&format!("{when}: get {}", k.text()), move || {
        s.get(&kk, t(2)).map(|o| o.body)
    });
    assert_eq!(got.as_deref(), Some(body), "{when}: get {}", k.text());
    let (s, kk) = (store.clone(), k.clone());
    let chunked = within(&format!("{when}: get_chunked {}", k.text()), move || {
        let hit = s.get_chunked(&kk, 0, t(2))?;
        hit.reader(0..hit.body_len).read_all().ok()
    });
    assert_eq!(
        chunked.as_deref(),
        Some(body),
        "{when}: chunked {}",
        k.text()
    );
    let (s, kk) = (store.clone(), k.clone());
    assert!(
        within(&format!("{when}: contains"), move || s.contains(&kk)),
        "{when}: contains {}",
        k.text()
    );
}

#[test]
fn a_get_proceeds_while_reclamation_is_in_progress() {
    for point in [
        "after_scan",
        "inside_move_holding_writer",
        "between_steps",
        "after_unlink",
    ] {
        let rotation = point == "after_unlink";
        let mut scene = Scene::new("reclaim-get", (!rotation).then_some(point));
        let store = scene.store.clone();
        let mut drainer = None;
        if rotation {
            // The reclaimer has prepared segment 1 (moved the hot record ahead); the rotation
            // that drains it parks after unlinking it, holding the reclaim and writer locks.
            assert!(store.wait_reclaimer_idle());
            store.park_reclaim_at(point);
            drainer = Some(scene.drain_on_thread());
        }
        assert!(store.wait_reclaim_parked(point), "{point}: parked");
        let moved = store.stats().reappended;
        match point {
            "after_scan" | "inside_move_holding_writer" => assert_eq!(moved, 0, "{point}"),
            _ => assert_eq!(moved, 1, "{point}: the hot record moved"),
        }
        // A hot record (moved or not), a cold one still in the drained segment, and a record
        // in another segment.
        reads_ok(&store, &key(HOT), &hot_obj().body, point);
        reads_ok(&store, &key(COLD), &cold_obj().body, point);
        let other = scene.other.clone();
        reads_ok(&store, &other, &filler(0).1.body, point);
        let s = store.clone();
        within(&format!("{point}: stats"), move || s.stats());
        store.release_reclaim();
        if let Some(d) = drainer {
            d.join().unwrap();
        }
        assert!(store.wait_reclaimer_idle());
        scene.drain_oldest();
        assert!(
            store.get(&key(HOT), t(3)).is_some(),
            "{point}: hot survives"
        );
        store.check_invariants();
    }
}

#[derive(Debug, Clone, Copy)]
enum PurgeBy {
    Key,
    Tag,
    Prefix,
}

fn purge(store: &DiskStore, by: PurgeBy) {
    match by {
        PurgeBy::Key => assert!(store.remove(&key(HOT))),
        PurgeBy::Tag => assert_eq!(store.remove_tag("hot-tag").len(), 1),
        PurgeBy::Prefix => assert_eq!(store.remove_prefix("https://a.example/h").len(), 1),
    }
}

#[test]
fn a_purge_during_incremental_reclamation_is_honoured() {
    for by in [PurgeBy::Key, PurgeBy::Tag, PurgeBy::Prefix] {
        // Before the move (classified, not copied) and after it (copied, entry relocated).
        for point in ["after_scan", "between_steps"] {
            let mut scene = Scene::new("reclaim-purge", Some(point));
            let store = scene.store.clone();
            assert!(store.wait_reclaim_parked(point));
            let moved_before = store.stats().reappended;
            purge(&store, by);
            assert!(store.get(&key(HOT), t(2)).is_none(), "{by:?}/{point}");
            store.release_reclaim();
            assert!(store.wait_reclaimer_idle());
            let s = store.stats();
            assert_eq!(
                s.reappended, moved_before,
                "{by:?}/{point}: a purged record is not moved: {s:?}"
            );
            drop(store);
            // Restart with both the original and any copy on disk, then after the drain.
            scene.reopen();
            assert!(scene.store.get(&key(HOT), t(2)).is_none(), "{by:?}/{point}");
            scene.drain_oldest();
            assert!(scene.store.get(&key(HOT), t(2)).is_none(), "{by:?}/{point}");
            scene.store.check_invariants();
            scene.reopen();
            assert!(scene.store.get(&key(HOT), t(2)).is_none(), "{by:?}/{point}");
            scene.store.check_invariants();
        }
    }
}

#[test]
fn a_replacement_during_reclamation_wins() {
    for point in ["after_scan", "inside_move_holding_writer", "between_steps"] {
        let mut scene = Scene::new("reclaim-replace", Some(point));
        let store = scene.store.clone();
        assert!(store.wait_reclaim_parked(point));
        let newer = object(b"the new version", &["hot-tag"]);
        let insert = {
            let (s, n) = (store.clone(), newer.clone());
            thread::spawn(move || s.insert(&key(HOT), &n, t(2)))
        };
        if point == "inside_move_holding_writer" {
            // The insert waits for the move (writer lock) and replaces the moved copy.
            thread::sleep(Duration::from_millis(50));
            store.release_reclaim();
            assert!(insert.join().unwrap().is_admitted());
        } else {
            // Replaced while the reclamation is parked without a lock.
            assert!(insert.join().unwrap().is_admitted());
            store.release_reclaim();
        }
        assert!(store.wait_reclaimer_idle());
        assert_same(&newer, &store.get(&key(HOT), t(3)).unwrap());
        drop(store);
        scene.reopen();
        assert_same(&newer, &scene.store.get(&key(HOT), t(3)).unwrap());
        scene.drain_oldest();
        assert_same(&newer, &scene.store.get(&key(HOT), t(3)).unwrap());
        scene.reopen();
        assert_same(&newer, &scene.store.get(&key(HOT), t(3)).unwrap());
        scene.store.check_invariants();
    }
}

#[test]
fn a_stream_commit_into_a_draining_segment_is_refused_and_leaves_no_dangling_entry() {
    for while_draining in [false, true] {
        let dir = TempDir::new("reclaim-stream");
        let c = DiskConfig {
            policy: PolicyKind::Lru,
            ..cfg(dir.path(), 64 << 10, 16 << 10)
        };
        let (store, _) = open(&c);
        let store = Arc::new(store);
        let obj = object(&patterned(3000), &[]);
        let sk = key("https://a.example/streamed");
        // Reserved in segment 1, written whole, not committed yet.
        let mut fill = store.begin_stream(&sk, &stream_head(&obj), t(1)).unwrap();
        fill.write(&obj.body).unwrap();
        let mut next = 0;
        while store.stats().segments < 4 {
            let (k, o) = filler(next);
            next += 1;
            store.insert(&k, &o, t(1));
        }
        assert!(store.wait_reclaimer_idle());
        let admitted = if while_draining {
            // The rotation draining segment 1 is parked after unlinking it; the commit waits
            // for it and finds the segment gone.
            store.park_reclaim_at("after_unlink");
            let s = store.clone();
            let drainer = thread::spawn(move || {
                for i in 10_000.. {
                    let (k, o) = filler(i);
                    s.insert(&k, &o, t(1));
                    if s.stats().reclaimed_segments > 0 {
                        break;
                    }
                }
            });
            assert!(store.wait_reclaim_parked("after_unlink"));
            let commit = thread::spawn(move || fill.commit(t(1)));
            thread::sleep(Duration::from_millis(50));
            store.release_reclaim();
            drainer.join().unwrap();
            commit.join().unwrap()
        } else {
            // Committed into the sealed segment the reclaimer has scanned (the reservation is
            // in its plan): indexed now, dropped with the segment.
            let admitted = fill.commit(t(1));
            // (`contains`, not `get`: a hit would make it a survivor.)
            assert!(store.contains(&sk));
            while store.stats().reclaimed_segments == 0 {
                let (k, o) = filler(next);
                next += 1;
                store.insert(&k, &o, t(1));
            }
            admitted
        };
        assert_eq!(
            admitted.is_admitted(),
            !while_draining,
            "refused only while draining"
        );
        assert!(store.get(&sk, t(2)).is_none(), "dropped with its segment");
        store.check_invariants();
        assert!(store.stats().objects > 0);
    }
}

#[test]
fn readers_of_an_unlinked_segment_finish() {
    let dir = TempDir::new("reclaim-readers");
    let c = DiskConfig {
        policy: PolicyKind::Lru,
        chunk_bytes: 256,
        ..cfg(dir.path(), 64 << 10, 16 << 10)
    };
    let (store, _) = open(&c);
    let body = patterned(5000);
    let rk = key("https://a.example/read");
    assert!(store.insert(&rk, &object(&body, &[]), t(1)).is_admitted());
    let hit = store.get_chunked(&rk, 0, t(1)).unwrap();
    let reader = hit.reader(0..hit.body_len);
    let streamed = object(&patterned(3000), &[]);
    let mut fill = store
        .begin_stream(&key("https://a.example/tap"), &stream_head(&streamed), t(1))
        .unwrap();
    fill.write(&streamed.body).unwrap();
    let mut tap = fill.tap().reader(0);
    assert!(fill.commit(t(1)).is_admitted());
    let first = segment_files(dir.path())[0].clone();
    let mut next = 0;
    while store.stats().reclaimed_segments == 0 {
        let (k, o) = filler(next);
        next += 1;
        store.insert(&k, &o, t(1));
    }
    assert!(!first.exists(), "segment 1 unlinked");
    assert!(store.get(&rk, t(2)).is_none(), "dropped from the index");
    assert_eq!(&reader.read_all().unwrap()[..], &body[..]);
    let mut out = Vec::new();
    assert!(drain(&mut tap, &mut out));
    assert_eq!(out, streamed.body);
    store.check_invariants();
}

/// Child side of [`kill9_mid_reclamation_keeps_the_newest_and_no_purged_record`]: builds the
/// scene, purges and replaces records the reclamation moves, parks it at the point named by the
/// environment, says `ready` and waits to be killed.
#[test]
#[ignore = "run as a child process by kill9_mid_reclamation_keeps_the_newest_and_no_purged_record"]
fn kill9_reclaim_child() {
    use std::io::Write;
    let (Ok(dir), Ok(point)) = (
        std::env::var("OUTPOST_RECLAIM_KILL9_DIR"),
        std::env::var("OUTPOST_RECLAIM_KILL9_POINT"),
    ) else {
        return;
    };
    let c = DiskConfig {
        policy: PolicyKind::Lru,
        ..cfg(Path::new(&dir), 64 << 10, 16 << 10)
    };
    let (store, _) = open(&c);
    let store = Arc::new(store);
    let between = point == "between_steps";
    if between {
        store.park_reclaim_at("between_steps");
    }
    for (k, body) in [("hot", 1u8), ("purged", 2), ("replaced", 3)] {
        let k = key(&format!("https://a.example/{k}"));
        store.insert(&k, &object(&[body; 900], &[]), t(1));
        assert!(store.get(&k, t(1)).is_some());
    }
    let mut next = 0;
    while store.stats().segments < 4 {
        let (k, o) = filler(next);
        next += 1;
        store.insert(&k, &o, t(1));
    }
    if between {
        assert!(store.wait_reclaim_parked("between_steps"));
    } else {
        assert!(store.wait_reclaimer_idle());
    }
    assert_eq!(store.stats().reappended, 3, "all three moved ahead");
    assert!(store.remove(&key("https://a.example/purged")));
    store.insert(
        &key("https://a.example/replaced"),
        &object(b"v2", &[]),
        t(2),
    );
    let mut drainer = None;
    if !between {
        store.park_reclaim_at("after_unlink");
        let s = store.clone();
        drainer = Some(thread::spawn(move || {
            for i in 10_000.. {
                let (k, o) = filler(i);
                s.insert(&k, &o, t(1));
            }
        }));
        assert!(store.wait_reclaim_parked("after_unlink"));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    // Block until the parent kills this process (it holds our stdin open until then).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(drainer);
    panic!("stdin closed before the kill");
}

#[test]
fn kill9_mid_reclamation_keeps_the_newest_and_no_purged_record() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    for point in ["between_steps", "after_unlink"] {
        let dir = TempDir::new("reclaim-kill9");
        fs::create_dir_all(dir.path()).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "disk::tests::reclamation::kill9_reclaim_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("OUTPOST_RECLAIM_KILL9_DIR", dir.path())
            .env("OUTPOST_RECLAIM_KILL9_POINT", point)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && !line.contains("ready") {
            line.clear();
        }
        assert!(line.contains("ready"), "{point}: child did not get ready");
        child.kill().unwrap(); // SIGKILL, mid-reclamation
        child.wait().unwrap();
        let c = DiskConfig {
            policy: PolicyKind::Lru,
            ..cfg(dir.path(), 64 << 10, 16 << 10)
        };
        let (store, report) = open(&c);
        assert_eq!(
            &store
                .get(&key("https://a.example/hot"), t(3))
                .unwrap_or_else(|| panic!("{point}: hot lost ({report:?})"))
                .body[..],
            &[1u8; 900][..]
        );
        assert!(
            store.get(&key("https://a.example/purged"), t(3)).is_none(),
            "{point}: purged record resurrected"
        );
        assert_eq!(
            &store
                .get(&key("https://a.example/replaced"), t(3))
                .unwrap()
                .body[..],
            b"v2",
            "{point}: the newest version wins"
        );
        store.check_invariants();
    }
}
