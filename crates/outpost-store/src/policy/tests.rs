//! Policy unit tests, invariant properties and synthetic hit-ratio comparisons.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Structural self-checks, per policy type.
trait Checked: EvictionPolicy {
    fn check_all(&self);
}
impl Checked for Lru {
    fn check_all(&self) {
        self.check();
    }
}
impl Checked for S3Fifo {
    fn check_all(&self) {
        self.check();
    }
}
impl Checked for WTinyLfu {
    fn check_all(&self) {
        self.check();
    }
}
impl Checked for SizeAware {
    fn check_all(&self) {
        self.check();
    }
}

#[test]
fn policy_kind_names_round_trip() {
    for kind in PolicyKind::ALL {
        assert_eq!(kind.as_str().parse::<PolicyKind>().unwrap(), kind);
        assert_eq!(kind.build(100).kind(), kind);
    }
    assert_eq!(PolicyKind::default(), PolicyKind::S3TinyLfu);
    assert_eq!("gdsf".parse::<PolicyKind>().unwrap(), PolicyKind::SizeAware);
    assert!("arc".parse::<PolicyKind>().is_err());
}

#[test]
fn lru_evicts_least_recently_used() {
    let mut lru = Lru::new(3);
    for h in 1..=3 {
        assert!(lru.on_insert(h, 1).admitted);
    }
    lru.on_hit(1);
    assert_eq!(lru.order(), vec![1, 3, 2]);
    let out = lru.on_insert(4, 1);
    assert_eq!(
        out,
        InsertOutcome {
            admitted: true,
            evicted: vec![2]
        }
    );
    assert_eq!(lru.order(), vec![4, 1, 3]);
    // A heavy insert evicts from the tail until it fits.
    let out = lru.on_insert(5, 2);
    assert_eq!(out.evicted, vec![3, 1]);
    assert_eq!(lru.order(), vec![5, 4]);
    assert_eq!(lru.bytes(), 3);
    // Bigger than everything: refused, nothing evicted.
    assert!(!lru.on_insert(6, 4).admitted);
    assert_eq!(lru.order(), vec![5, 4]);
    lru.check();
}

#[test]
fn lru_update_changes_weight_and_keeps_key() {
    let mut lru = Lru::new(10);
    lru.on_insert(1, 3);
    lru.on_insert(2, 3);
    lru.on_insert(3, 3);
    let out = lru.on_insert(1, 7);
    assert!(out.admitted);
    assert_eq!(out.evicted, vec![2]);
    assert_eq!(lru.order(), vec![1, 3]);
    assert_eq!(lru.bytes(), 10);
    assert!(lru.on_remove(1));
    assert!(!lru.on_remove(1));
    assert_eq!(lru.bytes(), 3);
    lru.check();
}

#[test]
fn s3fifo_filters_one_hit_wonders_and_promotes_from_ghost() {
    // Budget 10: small FIFO 1, main 9.
    let mut s3 = S3Fifo::new(10);
    for h in 1..=10 {
        assert!(s3.on_insert(h, 1).admitted);
    }
    s3.on_hit(2);
    // Cache full: the small FIFO's tail (1, never hit) goes to the ghost; 2 (hit) moves to main.
    let out = s3.on_insert(11, 1);
    assert!(out.admitted);
    assert_eq!(out.evicted, vec![1]);
    let (small, main, ghost) = s3.queues();
    assert_eq!(ghost, vec![1]);
    assert!(main.is_empty() && small.len() == 10);
    let out = s3.on_insert(12, 1);
    assert_eq!(
        out.evicted,
        vec![3],
        "2 was accessed, so it is kept and moved to main"
    );
    let (_, main, ghost) = s3.queues();
    assert_eq!(main, vec![2]);
    assert_eq!(ghost, vec![3, 1]);
    // 1 comes back while in the ghost: it goes straight to main.
    let out = s3.on_insert(1, 1);
    assert!(out.admitted);
    let (small, main, ghost) = s3.queues();
    assert_eq!(main, vec![1, 2]);
    assert_eq!(
        ghost,
        vec![4, 3],
        "the insert pushed small's tail (4) to the ghost"
    );
    assert!(!small.contains(&1));
    assert!(s3.contains(1) && !s3.contains(3));
    s3.check();
}

#[test]
fn s3fifo_main_reinserts_accessed_objects() {
    let mut s3 = S3Fifo::new(10);
    for h in 1..=19 {
        s3.on_insert(h, 1); // 1..=9 pass through small into the ghost
    }
    for h in 1..=9 {
        assert!(s3.on_insert(h, 1).admitted); // back from the ghost: into main
    }
    let (_, main, _) = s3.queues();
    assert_eq!(main, (1..=9).rev().collect::<Vec<_>>());
    s3.on_hit(1); // the oldest in main, but accessed
    for h in 200..=203 {
        // Accessed while in small, so each is promoted to main when small overflows, which
        // makes main evict.
        s3.on_insert(h, 1);
        s3.on_hit(h);
    }
    assert!(s3.contains(1), "accessed main object is reinserted");
    assert!(
        !s3.contains(2) && !s3.contains(3),
        "unaccessed main objects are evicted"
    );
    s3.check();
}

#[test]
fn s3fifo_large_object_needs_a_second_request() {
    let mut s3 = S3Fifo::new(100); // small FIFO 10
    let out = s3.on_insert(1, 30);
    assert!(
        !out.admitted,
        "bigger than the small FIFO: remembered in the ghost only"
    );
    assert!(
        s3.on_insert(1, 30).admitted,
        "second request: straight to main"
    );
    s3.check();
}

#[test]
fn wtinylfu_admits_by_frequency() {
    // 100 units: window 1, main 99.
    let mut w = WTinyLfu::new(100);
    for h in 0..100 {
        w.on_insert(h, 1);
    }
    assert_eq!(w.len(), 100);
    // A brand-new key passes the window, then loses against the main victim: rejected.
    let before: HashSet<u64> = (0..100).filter(|h| w.contains(*h)).collect();
    w.on_insert(1000, 1);
    w.on_insert(1001, 1); // pushes 1000 out of the window: contest
    assert!(!w.contains(1000), "one-hit candidate rejected");
    assert!(w.contains(1001), "the newest key sits in the window");
    assert_eq!(before.iter().filter(|h| w.contains(**h)).count(), 99);
    // A key requested often enough beats the victim.
    for _ in 0..5 {
        w.on_insert(2000, 1);
        w.on_remove(2000); // simulate rejected-then-requested-again without residency
    }
    w.on_insert(2000, 1);
    w.on_insert(2001, 1);
    assert!(
        w.contains(2000),
        "frequent candidate admitted; {:?}",
        w.segments()
    );
    w.check();
}

#[test]
fn wtinylfu_promotes_on_hit_and_demotes_overflow() {
    let mut w = WTinyLfu::new(100);
    for h in 0..100 {
        w.on_insert(h, 1);
    }
    let (_, probation, protected) = w.segments();
    assert!(protected.is_empty());
    let h = probation[probation.len() - 1];
    w.on_hit(h);
    let (_, _, protected) = w.segments();
    assert_eq!(protected, vec![h]);
    // Fill protected past its 90% share of main: the LRU ones drop back to probation.
    for h in 0..100 {
        w.on_hit(h);
    }
    let (_, _, protected) = w.segments();
    assert!(protected.len() <= 89);
    w.check();
}

/// Get-then-fill one request.
fn request(policy: &mut dyn EvictionPolicy, h: u64) {
    if policy.contains(h) {
        policy.on_hit(h);
    } else {
        policy.on_insert(h, 1);
    }
}

#[test]
fn wtinylfu_window_adapts_to_recency_and_back_to_frequency() {
    let mut w = WTinyLfu::new(1000);
    let floor = w.window_capacity();
    // A frequent hot set fills main.
    for _ in 0..5 {
        for h in 0..1000 {
            request(&mut w, h);
        }
    }
    assert_eq!(w.window_capacity(), floor);
    // New content turning hot: each new key is asked for again soon after it left the window
    // and lost its admission contest, so the window must grow to keep such keys.
    for round in 0..50u64 {
        let batch: Vec<u64> = (0..40).map(|i| 1_000_000 + round * 40 + i).collect();
        for _ in 0..2 {
            for &h in &batch {
                request(&mut w, h);
            }
        }
    }
    let grown = w.window_capacity();
    assert!(grown > floor * 3, "window {floor} -> {grown}");
    w.check();
    // Back to the old hot set: main's victims return, and the window gives room back to main.
    let mut smallest = grown;
    for h in 0..1000 {
        request(&mut w, h);
        smallest = smallest.min(w.window_capacity());
    }
    assert!(smallest < grown, "window stayed at {grown}");
    w.check();
}

#[test]
fn wtinylfu_fixed_shape_does_not_adapt() {
    let mut w = WTinyLfu::with_shape(1000, 1, 80);
    let floor = w.window_capacity();
    for round in 0..50u64 {
        for _ in 0..2 {
            for i in 0..40 {
                request(&mut w, 1_000_000 + round * 40 + i);
            }
        }
    }
    assert_eq!(w.window_capacity(), floor);
}

/// Runs `trace` through `policy` in get-then-fill style; returns the hit ratio.
fn replay(policy: &mut dyn EvictionPolicy, trace: &[(u64, u64)]) -> f64 {
    let mut hits = 0u64;
    for &(h, weight) in trace {
        if policy.contains(h) {
            policy.on_hit(h);
            hits += 1;
        } else {
            policy.on_insert(h, weight);
        }
        assert!(policy.bytes() <= policy.capacity());
    }
    hits as f64 / trace.len() as f64
}

#[test]
fn wtinylfu_hot_set_survives_a_scan_that_flushes_lru() {
    let capacity = 100;
    let hot: Vec<u64> = (0..50).collect();
    let mut trace = Vec::new();
    for _ in 0..20 {
        trace.extend(hot.iter().map(|&h| (h, 1)));
    }
    // One pass over 1,000 cold keys (10x the cache).
    trace.extend((10_000..11_000).map(|h| (h, 1)));
    for kind in PolicyKind::ALL {
        let mut policy = kind.build(capacity);
        replay(policy.as_mut(), &trace);
        let survivors = hot.iter().filter(|h| policy.contains(**h)).count();
        eprintln!("{kind}: {survivors}/50 hot keys survive the scan");
        match kind {
            PolicyKind::Lru => assert_eq!(survivors, 0, "LRU is flushed by the scan"),
            _ => assert!(survivors >= 45, "{kind} kept only {survivors}/50"),
        }
    }
}

/// Zipf(s) sampler over ranks `0..n` by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for rank in 1..=n {
            acc += 1.0 / (rank as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> u64 {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|&c| c < u) as u64
    }
}

/// Zipf(0.8) over 20,000 keys, 200,000 requests; in the middle third every other request is
/// part of a one-pass scan over 30,000 never-repeated keys.
fn zipf_with_scan_trace(weighted: bool) -> (Vec<(u64, u64)>, usize) {
    let keys = 20_000usize;
    let zipf = Zipf::new(keys, 0.8);
    let mut rng = StdRng::seed_from_u64(0x5eed_0f00_u64);
    // Per-key sizes for the weighted variant: 1..=64 units, skewed small.
    let sizes: Vec<u64> = (0..keys + 100_000)
        .map(|_| {
            if weighted {
                1 + (rng.gen::<f64>().powi(3) * 63.0) as u64
            } else {
                1
            }
        })
        .collect();
    let mut trace = Vec::with_capacity(200_000);
    let mut scan = 0u64;
    let mut unique = HashSet::new();
    for i in 0..200_000 {
        let rank = if (66_000..132_000).contains(&i) && i % 2 == 0 {
            scan += 1;
            keys as u64 + scan
        } else {
            zipf.sample(&mut rng)
        };
        unique.insert(rank);
        // Spread ranks over the hash space like real key hashes.
        trace.push((crate::hashing::mix64(rank), sizes[rank as usize]));
    }
    (trace, unique.len())
}

#[test]
fn wtinylfu_beats_lru_on_zipf_with_scan() {
    let (trace, unique) = zipf_with_scan_trace(false);
    let capacity = (unique / 100) as u64;
    let mut ratios = Vec::new();
    for kind in PolicyKind::ALL {
        let mut policy = kind.build(capacity);
        let ratio = replay(policy.as_mut(), &trace);
        eprintln!(
            "unit weights, {unique} unique keys, capacity {capacity}: {kind} hit ratio {ratio:.4}"
        );
        ratios.push((kind, ratio));
    }
    let ratio = |k: PolicyKind| {
        ratios
            .iter()
            .find(|(kind, _)| *kind == k)
            .map(|(_, r)| *r)
            .unwrap()
    };
    let (tinylfu, s3, lru) = (
        ratio(PolicyKind::WTinyLfu),
        ratio(PolicyKind::S3Fifo),
        ratio(PolicyKind::Lru),
    );
    assert!(
        tinylfu > lru + 0.05,
        "w-tinylfu {tinylfu:.4} vs lru {lru:.4}"
    );
    assert!(s3 > lru, "s3-fifo {s3:.4} vs lru {lru:.4}");
}

#[test]
fn wtinylfu_beats_lru_on_weighted_zipf_with_scan() {
    let (trace, unique) = zipf_with_scan_trace(true);
    let mean_weight = trace.iter().map(|(_, w)| *w).sum::<u64>() / trace.len() as u64;
    let capacity = unique as u64 * mean_weight / 100;
    let mut results = Vec::new();
    for kind in PolicyKind::ALL {
        let mut policy = kind.build(capacity);
        let ratio = replay(policy.as_mut(), &trace);
        eprintln!("weighted, capacity {capacity} units: {kind} hit ratio {ratio:.4}");
        results.push((kind, ratio));
    }
    let ratio = |k: PolicyKind| results.iter().find(|(kind, _)| *kind == k).unwrap().1;
    let lru = ratio(PolicyKind::Lru);
    for kind in [
        PolicyKind::S3TinyLfu,
        PolicyKind::WTinyLfu,
        PolicyKind::SizeAware,
    ] {
        assert!(ratio(kind) > lru + 0.03, "{kind} vs lru: {results:?}");
    }
}

/// A loop over `loop_keys` keys (larger than the cache) mixed with Zipf traffic over `keys`.
fn zipf_with_loop_trace() -> Vec<(u64, u64)> {
    let mut rng = StdRng::seed_from_u64(11);
    let zipf = Zipf::new(20_000, 0.8);
    let mut trace = Vec::new();
    let mut next_loop = 0u64;
    for _ in 0..200_000 {
        if rng.gen_bool(0.5) {
            trace.push((crate::hashing::mix64(1_000_000 + next_loop), 1));
            next_loop = (next_loop + 1) % 3_000;
        } else {
            trace.push((crate::hashing::mix64(zipf.sample(&mut rng)), 1));
        }
    }
    trace
}

#[test]
fn s3tinylfu_keeps_part_of_a_loop_larger_than_the_cache() {
    // Cache 1,000 objects; the loop has 3,000. Plain S3-FIFO (FIFO order) cycles the loop through
    // and keeps none of it; the TinyLFU second chance keeps a stable part.
    let trace = zipf_with_loop_trace();
    let plain = replay(&mut S3Fifo::new(1_000), &trace);
    let mut tinylfu = S3Fifo::tinylfu(1_000);
    let ratio = replay(&mut tinylfu, &trace);
    tinylfu.check();
    eprintln!("loop: s3-fifo {plain:.4}, s3-tinylfu {ratio:.4}");
    assert!(
        ratio > plain + 0.02,
        "s3-tinylfu {ratio:.4} vs s3-fifo {plain:.4}"
    );
}

#[test]
fn s3tinylfu_frequency_mode_fills_main_from_a_second_sighting() {
    // Budget 100 (small 10 in Recency, 1 in Frequency), a loop of 250 keys. Pass 1: every key is
    // seen once and leaves small without a hit, below either mode's second-chance frequency: main
    // stays empty and the ghost keeps 70 keys (70 per 100 resident objects), too few to bridge
    // the loop. Pass 2: each key leaves small seen twice, which in Frequency mode is enough to
    // contest main, and main has room: main fills from the loop's second pass. In Recency mode
    // they need a third sighting, and main stays empty.
    let mut recency = S3Fifo::tinylfu_fixed(100, Mode::Recency);
    let mut frequency = S3Fifo::tinylfu_fixed(100, Mode::Frequency);
    for policy in [&mut recency, &mut frequency] {
        for h in 1..=250 {
            policy.on_insert(h, 1);
        }
        let (_, main, ghost) = policy.queues();
        assert!(main.is_empty());
        assert_eq!(ghost.len(), 70, "70 keys per 100 resident objects");
        for h in 1..=250 {
            if policy.contains(h) {
                policy.on_hit(h);
            } else {
                policy.on_insert(h, 1);
            }
        }
        policy.check();
    }
    let (recency_main, frequency_main) = (recency.queues().1.len(), frequency.queues().1.len());
    assert_eq!(frequency_main, 99, "main (99) full");
    assert_eq!(recency_main, 0);
}

#[test]
fn s3tinylfu_size_filter_holds_back_objects_far_above_the_mean() {
    let mut s = S3Fifo::tinylfu(1_000_000); // small FIFO 100,000
    for h in 0..20 {
        assert!(s.on_insert(h, 100).admitted, "small objects enter small");
    }
    // Mean 100: 1,000 is 10x the mean, 0.1% of the budget (above the 0.02% floor, below the
    // 0.5% large-object bound).
    assert!(
        !s.on_insert(999, 1_000).admitted,
        "first request: ghost only"
    );
    assert!(s.on_insert(999, 1_000).admitted, "it returned: admitted");
    // At or below the floor (200 = 0.02%) the filter leaves even a 2x-mean object alone.
    assert!(s.on_insert(998, 200).admitted);
    // Plain S3-FIFO admits it at once (it fits the small FIFO).
    let mut plain = S3Fifo::new(1_000_000);
    for h in 0..20 {
        plain.on_insert(h, 100);
    }
    assert!(plain.on_insert(999, 1_000).admitted);
    s.check();
    // With equal weights the filter never fires.
    let mut unit = S3Fifo::tinylfu(100);
    for h in 0..200 {
        unit.on_insert(h, 1);
        assert!(unit.contains(h) || h < 10, "key {h}");
    }
}

#[test]
fn s3tinylfu_survives_empty_budgets_and_weightless_objects() {
    for mode in [Mode::Recency, Mode::Frequency] {
        for capacity in 0..4 {
            let mut s = S3Fifo::tinylfu_fixed(capacity, mode);
            for round in 0..3 {
                for h in 0..40 {
                    s.on_insert(h, round % 2);
                    s.on_hit(h);
                }
            }
            s.check();
        }
    }
    // The shadows of a tiny cache have a budget of 0.
    let mut s = S3Fifo::tinylfu(5);
    for h in 0..10_000u64 {
        s.on_insert(crate::hashing::mix64(h % 300), h % 2);
    }
    s.check();
    assert_eq!(s.mode(), Mode::Recency, "too small to decide");
}

#[test]
fn s3tinylfu_large_objects_need_more_requests_the_larger_their_share() {
    // (weight, share of the 100,000 budget, requests the sketch must have seen)
    for (key, weight, needed) in [
        (901, 1_000, 3),  // 1%: above 0.5%, below the first step at 2%
        (902, 3_000, 4),  // 3%: one step
        (903, 5_000, 5),  // 5%: above 2% and 4%
        (904, 20_000, 7), // 20%: above 2%, 4%, 8% and 16%
    ] {
        let mut s = S3Fifo::tinylfu(100_000); // small FIFO 10,000
        for h in 0..20 {
            assert!(s.on_insert(h, 100).admitted);
        }
        for request in 1..needed {
            assert!(
                !s.on_insert(key, weight).admitted,
                "{weight}: request {request} of {needed}"
            );
        }
        assert!(
            s.on_insert(key, weight).admitted,
            "{weight}: request {needed}"
        );
        assert!(s.contains(key));
        s.check();
    }
}

#[test]
fn s3tinylfu_large_objects_must_come_back_while_the_ghost_remembers_them() {
    // 12% of the 100,000 budget: the sketch must have seen it 6 times, and it must have come
    // back through the ghost twice in a row (once per 5% of the budget).
    const BIG: u64 = 999;
    let mut s = S3Fifo::tinylfu(100_000);
    for h in 0..20 {
        assert!(s.on_insert(h, 100).admitted);
    }
    // Requested 8 times, each time after 20 other large one-off objects have pushed it out of
    // the ghost (14 keys for 20 resident objects): its sketch count passes 6, its returns do not.
    let mut other = 10_000;
    for round in 0..8 {
        assert!(!s.on_insert(BIG, 12_000).admitted, "round {round}");
        for _ in 0..20 {
            other += 1;
            assert!(!s.on_insert(other, 12_000).admitted);
        }
    }
    assert!(s.frequency(BIG) >= 6);
    // Now it comes back twice in a row: admitted on the second return (with the sketch alone it
    // would have been on the first).
    assert!(!s.on_insert(BIG, 12_000).admitted);
    assert!(!s.on_insert(BIG, 12_000).admitted);
    assert!(s.on_insert(BIG, 12_000).admitted);
    assert!(s.contains(BIG));
    s.check();
}

/// Zipf over `keys` ids from `offset`, the offset moving by `step` every `every` requests
/// (popularity churn: new objects take the top), unit weights.
pub(crate) fn churn_trace(
    keys: usize,
    every: usize,
    step: u64,
    requests: usize,
) -> Vec<(u64, u64)> {
    let mut rng = StdRng::seed_from_u64(5);
    let zipf = Zipf::new(keys, 0.8);
    (0..requests)
        .map(|i| {
            let offset = (i / every) as u64 * step;
            let rank = zipf.sample(&mut rng);
            // New objects take the top ranks: rank r maps to id offset + keys - r.
            (crate::hashing::mix64(offset + keys as u64 - rank), 1)
        })
        .collect()
}

/// A loop over `loop_keys` ids (half the requests) mixed with Zipf 0.8 over `keys`, unit weights.
pub(crate) fn loop_trace(keys: usize, loop_keys: u64, requests: usize) -> Vec<(u64, u64)> {
    let mut rng = StdRng::seed_from_u64(3);
    let zipf = Zipf::new(keys, 0.8);
    let mut next = 0;
    (0..requests)
        .map(|_| {
            if rng.gen_bool(0.5) {
                next = (next + 1) % loop_keys;
                (crate::hashing::mix64(10_000_000 + next), 1)
            } else {
                (crate::hashing::mix64(zipf.sample(&mut rng)), 1)
            }
        })
        .collect()
}

/// Replays `trace` through the adaptive `s3-tinylfu` and both fixed modes at `capacity`; checks
/// that the modes differ by 2 points, that the shadows end in the better one, and that the
/// adaptive policy gets at least 60% of the difference.
fn check_shadows_pick(name: &str, trace: &[(u64, u64)], capacity: u64, better: Mode) {
    let mut adaptive = S3Fifo::tinylfu(capacity);
    let ratio = replay(&mut adaptive, trace);
    adaptive.check();
    let recency = replay(&mut S3Fifo::tinylfu_fixed(capacity, Mode::Recency), trace);
    let frequency = replay(&mut S3Fifo::tinylfu_fixed(capacity, Mode::Frequency), trace);
    eprintln!(
        "{name}: adaptive {ratio:.4} ({:?}, {} switches), recency {recency:.4}, frequency {frequency:.4}",
        adaptive.mode(),
        adaptive.mode_switches()
    );
    let (best, worst) = match better {
        Mode::Recency => (recency, frequency),
        Mode::Frequency => (frequency, recency),
    };
    assert!(
        best > worst + 0.02,
        "{name}: the trace must separate the modes"
    );
    assert_eq!(adaptive.mode(), better, "{name}");
    assert!(ratio > worst + 0.6 * (best - worst), "{name}");
}

#[test]
fn s3tinylfu_shadows_pick_frequency_mode_for_a_loop_and_recency_for_churn() {
    // A loop of 12,000 objects, cache 8,000: frequency keeps most of it, recency much less. The
    // shadows (1/64: 125 objects each) must find that.
    check_shadows_pick(
        "loop",
        &loop_trace(100_000, 12_000, 600_000),
        8_000,
        Mode::Frequency,
    );
    // Popularity churn: 1,000 new objects take the top every 20,000 requests. Recency wins.
    check_shadows_pick(
        "churn",
        &churn_trace(50_000, 20_000, 1_000, 400_000),
        4_000,
        Mode::Recency,
    );
}

#[test]
fn size_aware_prefers_small_objects_and_ages_out_idle_ones() {
    let mut g = SizeAware::new(1_000);
    assert!(g.on_insert(1, 600).admitted);
    for h in 10..14 {
        assert!(g.on_insert(h, 100).admitted);
    }
    // Full (1,000). A small newcomer displaces the large object (lowest frequency per byte),
    // not the small ones.
    let out = g.on_insert(20, 100);
    assert!(out.admitted);
    assert_eq!(out.evicted, vec![1]);
    for h in 14..19 {
        assert!(g.on_insert(h, 100).admitted);
    }
    assert_eq!(g.bytes(), 1_000);
    g.check();
    // Hits raise a key's priority: the small key that is never hit leaves before hot ones.
    for _ in 0..5 {
        for h in [11, 12, 13, 20] {
            g.on_hit(h);
        }
    }
    let out = g.on_insert(30, 100);
    assert!(out.admitted);
    assert_eq!(out.evicted, vec![10], "the oldest idle small key");
    // A large one-off outranks only idle keys: it is not admitted, and the hot keys stay.
    let out = g.on_insert(40, 900);
    assert!(!out.admitted, "{out:?}");
    for h in [11, 12, 13, 20, 30] {
        assert!(g.contains(h), "key {h}");
    }
    g.check();
}

#[derive(Debug, Clone)]
enum Op {
    Hit(u64),
    Insert(u64, u64),
    Remove(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..48).prop_map(Op::Hit),
        5 => (0u64..48, 1u64..40).prop_map(|(h, w)| Op::Insert(h, w)),
        1 => (0u64..48).prop_map(Op::Remove),
    ]
}

/// Drives `policy` with `ops`, mirroring residency in a model set.
fn check_against_model<P: Checked>(mut policy: P, ops: &[Op]) {
    let mut resident: HashSet<u64> = HashSet::new();
    for op in ops {
        match *op {
            Op::Hit(h) => policy.on_hit(h),
            Op::Insert(h, w) => {
                let was_resident = resident.contains(&h);
                let out = policy.on_insert(h, w);
                if was_resident && w <= policy.capacity() {
                    assert!(out.admitted, "an update is always admitted");
                }
                assert!(!out.evicted.contains(&h), "{op:?}: {out:?}");
                for e in &out.evicted {
                    assert!(resident.remove(e), "evicted a non-resident key {e}");
                }
                if out.admitted {
                    resident.insert(h);
                } else {
                    resident.remove(&h);
                }
            }
            Op::Remove(h) => {
                assert_eq!(policy.on_remove(h), resident.remove(&h));
            }
        }
        policy.check_all();
        assert!(policy.bytes() <= policy.capacity());
        assert_eq!(policy.len(), resident.len());
        for h in 0..48 {
            assert_eq!(
                policy.contains(h),
                resident.contains(&h),
                "key {h} after {op:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn lru_keeps_invariants(capacity in 1u64..200, ops in proptest::collection::vec(op(), 1..300)) {
        check_against_model(Lru::new(capacity), &ops);
    }

    #[test]
    fn s3fifo_keeps_invariants(capacity in 1u64..200, ops in proptest::collection::vec(op(), 1..300)) {
        check_against_model(S3Fifo::new(capacity), &ops);
    }

    #[test]
    fn s3tinylfu_keeps_invariants(capacity in 1u64..200, ops in proptest::collection::vec(op(), 1..300)) {
        check_against_model(S3Fifo::tinylfu(capacity), &ops);
    }

    #[test]
    fn s3tinylfu_frequency_mode_keeps_invariants(capacity in 1u64..200, ops in proptest::collection::vec(op(), 1..300)) {
        check_against_model(S3Fifo::tinylfu_fixed(capacity, Mode::Frequency), &ops);
    }

    #[test]
    fn size_aware_keeps_invariants(capacity in 1u64..200, ops in proptest::collection::vec(op(), 1..300)) {
        check_against_model(SizeAware::new(capacity), &ops);
    }

    #[test]
    fn wtinylfu_keeps_invariants(capacity in 1u64..200, ops in proptest::collection::vec(op(), 1..300)) {
        check_against_model(WTinyLfu::new(capacity), &ops);
    }

    #[test]
    fn wtinylfu_wide_window_keeps_invariants(capacity in 1u64..200, window in 0u64..=100, protected in 0u64..=100, ops in proptest::collection::vec(op(), 1..300)) {
        check_against_model(WTinyLfu::with_shape(capacity, window, protected), &ops);
    }
}
