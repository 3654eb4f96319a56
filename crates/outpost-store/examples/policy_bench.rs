//! Nanoseconds per policy operation, per policy: `on_hit` of a resident key (the part of a cache
//! hit the policy adds) and a miss (`on_insert` of a new key, evictions included), on one core.
//!
//!     cargo run --release -p outpost-store --example policy_bench [OBJECTS] [ROUNDS]
//!
//! Keys are 64-bit hashes; the cache holds OBJECTS objects of weight 1 (default 1,000,000),
//! hits walk the resident keys in a shuffled order (so each touches cold memory, as a big cache
//! does), misses insert fresh keys. Best of ROUNDS (default 5) per figure.

use std::hint::black_box;
use std::time::Instant;

use outpost_store::policy::S3Fifo;
use outpost_store::{EvictionPolicy, PolicyKind};

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let objects: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    println!("policy        ns/hit  ns/miss   ({objects} objects, best of {rounds})");
    for kind in PolicyKind::ALL {
        let mut policy = kind.build(objects);
        for k in 0..objects {
            policy.on_insert(mix(k), 1);
        }
        // Resident keys in a scattered order.
        let mut resident: Vec<u64> = (0..objects * 2)
            .map(mix)
            .filter(|h| policy.contains(*h))
            .collect();
        let n = resident.len();
        for i in (1..n).rev() {
            let j = (mix(i as u64 ^ 0x5eed) % (i as u64 + 1)) as usize;
            resident.swap(i, j);
        }
        let mut best_hit = f64::MAX;
        let mut best_miss = f64::MAX;
        let mut next_new = objects * 4;
        for _ in 0..rounds {
            let t = Instant::now();
            for h in &resident {
                policy.on_hit(black_box(*h));
            }
            best_hit = best_hit.min(t.elapsed().as_nanos() as f64 / n.max(1) as f64);
            let misses = (objects / 4).max(1);
            let t = Instant::now();
            for _ in 0..misses {
                next_new += 1;
                black_box(policy.on_insert(mix(next_new), 1));
            }
            best_miss = best_miss.min(t.elapsed().as_nanos() as f64 / misses as f64);
            // Refresh the resident list (misses changed it).
            resident.retain(|h| policy.contains(*h));
        }
        println!("{:<12} {best_hit:>7.1} {best_miss:>8.1}", kind.as_str());
    }
    hot_key(objects, rounds);
}

/// ns per hit of one key hit `HOT_HITS` times in a row, in and out of the shadow sample.
fn hot_key(objects: u64, rounds: usize) {
    const HOT_HITS: u32 = 1_000_000;
    let mut policy = PolicyKind::S3TinyLfu.build(objects);
    for k in 0..objects {
        policy.on_insert(mix(k), 1);
    }
    let resident = |policy: &dyn EvictionPolicy, sampled: bool| {
        (0..objects * 2)
            .map(mix)
            .find(|h| policy.contains(*h) && S3Fifo::in_shadow_sample(*h) == sampled)
    };
    println!("s3-tinylfu, one hot key, ns/hit (best of {rounds}):");
    for (label, sampled) in [
        ("outside the shadow sample", false),
        ("in the shadow sample", true),
    ] {
        let Some(hot) = resident(policy.as_ref(), sampled) else {
            println!("  {label}: no resident key");
            continue;
        };
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..HOT_HITS {
                policy.on_hit(black_box(hot));
            }
            best = best.min(t.elapsed().as_nanos() as f64 / f64::from(HOT_HITS));
        }
        println!("  {label:<26} {best:>7.1}");
    }
}
