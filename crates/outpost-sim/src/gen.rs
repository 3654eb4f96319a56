//! Seeded synthetic trace generator.
//!
//! A trace mixes three kinds of request:
//!
//! - **Zipf** requests over a catalogue of `keys` objects (ids `0..keys`, id 0 the most popular),
//!   drawn with probability ∝ 1/rank^α by rejection-inversion sampling (Hörmann & Derflinger,
//!   1996), which is exact and needs no table;
//! - **one-hit wonders**: a fraction of requests for fresh ids that are never requested again,
//!   spread uniformly through the trace;
//! - **scan bursts**: exactly `round(scan_fraction × requests)` requests arriving in bursts of
//!   `scan_burst` consecutive requests (the last one shorter if needed), each for a fresh id
//!   requested only once (a crawler or a cache-warming sweep over cold objects). Bursts start at
//!   uniformly random positions among the other requests.
//!
//! **Churn** (optional): every `churn_every` requests the popularity ranking moves `churn_step`
//! ranks colder, and `churn_step` new objects take the top ranks — new content arrives hot and
//! decays, as on a real site. Rank `r` in churn epoch `e` (of `E` in the trace) is id
//! `r + (E − e) × churn_step`; without churn, id = rank.
//!
//! **Video** (optional, `video_titles` > 0): the Zipf part picks *titles*, not objects. Each of
//! `viewers` concurrent sessions watches one title from its first segment on, in order, for a
//! geometric number of segments (mean a third of the title's `segments`: most viewers leave
//! early), then starts another title; requests interleave across sessions at random. Segment
//! `s` of title rank `t` is id `t × segments + s`.
//!
//! **Loop** (optional, `loop_fraction` > 0): that share of requests walks `loop_keys` objects
//! in a fixed cycle, over and over (a periodic job or a playlist slightly larger than a cache:
//! the case where LRU gets nothing), spread uniformly through the trace.
//!
//! Fresh ids (one-hit and scan) count up from the first id above the catalogue (and its churn
//! range, or the video catalogue) and the loop's ids. Each id's size is a pure function of the id
//! and the seed ([`SizeProfile`]), so an object has one size for the whole trace. Timestamps are
//! `request index / rate` in whole seconds.

use std::str::FromStr;

use crate::error::SimError;
use crate::rng::{mix64, Rng};
use crate::trace::{Request, Trace};

/// Object size distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeProfile {
    /// Every object is 1 byte (object and byte hit ratios coincide).
    Unit,
    /// Web assets: log-normal, median 12 KiB, σ = 1.2, clamped to 200 B ..= 2 MiB.
    #[default]
    Small,
    /// Video segments: 4 s at a bitrate ladder of 0.4/1.2/2.5/4.5/8 Mbit/s (200 KB – 4 MB), ±10%.
    Video,
    /// 85% of objects small assets, 15% video segments.
    Mixed,
}

impl SizeProfile {
    /// The CLI name.
    pub fn as_str(&self) -> &'static str {
        match self {
            SizeProfile::Unit => "unit",
            SizeProfile::Small => "small",
            SizeProfile::Video => "video",
            SizeProfile::Mixed => "mixed",
        }
    }

    /// The size of object `key` under generator seed `seed`.
    pub fn size_of(&self, key: u64, seed: u64) -> u64 {
        let h = mix64(key ^ mix64(seed ^ 0x5123_5eed_0b1e_c751));
        match self {
            SizeProfile::Unit => 1,
            SizeProfile::Small => small_asset(h),
            SizeProfile::Video => video_segment(h),
            SizeProfile::Mixed => {
                if h % 100 < 85 {
                    small_asset(mix64(h))
                } else {
                    video_segment(mix64(h))
                }
            }
        }
    }
}

impl FromStr for SizeProfile {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "unit" | "one" | "1" => Ok(SizeProfile::Unit),
            "small" => Ok(SizeProfile::Small),
            "video" => Ok(SizeProfile::Video),
            "mixed" => Ok(SizeProfile::Mixed),
            other => Err(SimError::invalid(
                "size profile",
                format!("{other:?} (expected unit, small, video or mixed)"),
            )),
        }
    }
}

/// Two uniforms in (0, 1) from one hash.
fn uniforms(h: u64) -> (f64, f64) {
    let a = ((h >> 32) as f64 + 0.5) / 4_294_967_296.0;
    let b = ((h & 0xffff_ffff) as f64 + 0.5) / 4_294_967_296.0;
    (a, b)
}

fn small_asset(h: u64) -> u64 {
    let (u1, u2) = uniforms(h);
    // Box–Muller: a standard normal from two uniforms.
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let size = (12.0 * 1024.0) * (1.2 * z).exp();
    size.clamp(200.0, 2.0 * 1024.0 * 1024.0) as u64
}

fn video_segment(h: u64) -> u64 {
    const LADDER_KBPS: [f64; 5] = [400.0, 1200.0, 2500.0, 4500.0, 8000.0];
    const SEGMENT_SECONDS: f64 = 4.0;
    let (u1, u2) = uniforms(h);
    let rung = ((u1 * LADDER_KBPS.len() as f64) as usize).min(LADDER_KBPS.len() - 1);
    let bytes = LADDER_KBPS[rung] * 1000.0 / 8.0 * SEGMENT_SECONDS;
    (bytes * (0.9 + 0.2 * u2)) as u64
}

/// Generator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Zipf exponent α (> 0).
    pub zipf: f64,
    /// Catalogue size for the Zipf part.
    pub keys: u64,
    /// Requests to generate.
    pub requests: u64,
    /// Share of requests in scan bursts (0 ≤ x < 1).
    pub scan_fraction: f64,
    /// Requests per scan burst.
    pub scan_burst: u64,
    /// Share of requests for one-hit wonders (0 ≤ x; with the scan share < 1).
    pub one_hit_fraction: f64,
    /// Object sizes.
    pub sizes: SizeProfile,
    /// Seed: the same config and seed give the same trace.
    pub seed: u64,
    /// Requests per second of trace time (for the `time` column).
    pub rate: f64,
    /// Shift the popularity ranking every this many requests (0: static popularity).
    pub churn_every: u64,
    /// Ranks the popularity ranking moves per shift (new objects entering at the top).
    pub churn_step: u64,
    /// Video: titles in the catalogue (0: objects are requested directly).
    pub video_titles: u64,
    /// Video: segments per title.
    pub segments: u64,
    /// Video: concurrent viewing sessions.
    pub viewers: u64,
    /// Share of requests walking the loop (0: none).
    pub loop_fraction: f64,
    /// Objects in the loop.
    pub loop_keys: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            zipf: 0.8,
            keys: 100_000,
            requests: 1_000_000,
            scan_fraction: 0.0,
            scan_burst: 1_000,
            one_hit_fraction: 0.0,
            sizes: SizeProfile::Small,
            seed: 1,
            rate: 1_000.0,
            churn_every: 0,
            churn_step: 0,
            video_titles: 0,
            segments: 150,
            viewers: 100,
            loop_fraction: 0.0,
            loop_keys: 0,
        }
    }
}

impl GenConfig {
    /// Checks the ranges of every field.
    pub fn validate(&self) -> Result<(), SimError> {
        if !(self.zipf.is_finite() && self.zipf > 0.0) {
            return Err(SimError::invalid("--zipf", "α must be a positive number"));
        }
        if self.keys == 0 {
            return Err(SimError::invalid("--keys", "at least one key"));
        }
        for (what, v) in [
            ("--scan-fraction", self.scan_fraction),
            ("--one-hit", self.one_hit_fraction),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(SimError::invalid(what, format!("{v} is not in [0, 1)")));
            }
        }
        if !(0.0..1.0).contains(&self.loop_fraction) {
            return Err(SimError::invalid(
                "--loop-fraction",
                format!("{} is not in [0, 1)", self.loop_fraction),
            ));
        }
        if self.scan_fraction + self.one_hit_fraction + self.loop_fraction >= 1.0 {
            return Err(SimError::invalid(
                "--scan-fraction/--one-hit/--loop-fraction",
                "scan, one-hit and loop shares must leave room for Zipf requests (sum < 1)",
            ));
        }
        if self.loop_fraction > 0.0 && self.loop_keys == 0 {
            return Err(SimError::invalid(
                "--loop-keys",
                "a loop needs at least 1 key",
            ));
        }
        if self.video_titles > 0 && (self.segments == 0 || self.viewers == 0) {
            return Err(SimError::invalid(
                "--segments/--viewers",
                "video needs at least 1 segment per title and 1 viewer",
            ));
        }
        if self.video_titles > 0 && self.churn_every > 0 {
            return Err(SimError::invalid(
                "--churn-every",
                "churn and video titles do not combine (yet)",
            ));
        }
        if self.scan_burst == 0 {
            return Err(SimError::invalid("--scan-burst", "at least 1"));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(SimError::invalid("--rate", "must be positive"));
        }
        Ok(())
    }
}

/// Zipf sampler over ranks `1..=n` by rejection-inversion (no table, exact distribution).
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    threshold: f64,
}

impl Zipf {
    /// Ranks `1..=n` (`n ≥ 1`) with exponent `s > 0`.
    pub fn new(n: u64, s: f64) -> Self {
        let n = n.max(1) as f64;
        let mut z = Self {
            n,
            s,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            threshold: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n + 0.5);
        z.threshold = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// A rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.threshold || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, continuous at 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x − 1) / x`, continuous at 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))
    }
}

/// Generates a trace.
pub fn generate(cfg: &GenConfig) -> Result<Trace, SimError> {
    cfg.validate()?;
    let mut rng = Rng::new(cfg.seed);
    let video = cfg.video_titles > 0;
    let zipf = Zipf::new(if video { cfg.video_titles } else { cfg.keys }, cfg.zipf);
    let f = cfg.scan_fraction;
    let scan_total = ((f * cfg.requests as f64).round() as u64).min(cfg.requests);
    let others = cfg.requests - scan_total;
    // Burst k starts once `starts[k]` non-scan requests have been emitted.
    let mut starts: Vec<u64> = (0..scan_total.div_ceil(cfg.scan_burst))
        .map(|_| rng.below(others + 1))
        .collect();
    starts.sort_unstable();
    let mut next_burst = 0usize;
    let mut scan_left = scan_total;
    let mut emitted_others = 0u64;
    // Among non-scan requests, these shares are loop steps and one-hit wonders.
    let p_loop = cfg.loop_fraction / (1.0 - f);
    let p_one_hit = cfg.one_hit_fraction / (1.0 - f);
    let capacity = usize::try_from(cfg.requests).unwrap_or(0);
    let mut requests = Vec::with_capacity(capacity);
    // Churn epochs: rank r in epoch e is id r + (epochs − e) × step.
    let epochs = cfg
        .requests
        .saturating_sub(1)
        .checked_div(cfg.churn_every)
        .unwrap_or(0);
    let churn_span = epochs.saturating_mul(cfg.churn_step);
    let catalogue = if video {
        cfg.video_titles.saturating_mul(cfg.segments)
    } else {
        cfg.keys.saturating_add(churn_span)
    };
    let loop_base = catalogue;
    let mut loop_pos = 0u64;
    let mut fresh = catalogue.saturating_add(if p_loop > 0.0 { cfg.loop_keys } else { 0 });
    // Video sessions: (title rank, next segment, segments left to watch); 0 left: idle.
    let mut sessions: Vec<(u64, u64, u64)> = if video {
        vec![(0, 0, 0); usize::try_from(cfg.viewers).unwrap_or(1)]
    } else {
        Vec::new()
    };
    let watch_mean = (cfg.segments as f64 / 3.0).max(1.0);
    let mut burst_left = 0u64;
    for i in 0..cfg.requests {
        while burst_left == 0 && starts.get(next_burst) == Some(&emitted_others) {
            burst_left = cfg.scan_burst.min(scan_left);
            scan_left -= burst_left;
            next_burst += 1;
        }
        let key = if burst_left > 0 {
            burst_left -= 1;
            fresh += 1;
            fresh - 1
        } else {
            emitted_others += 1;
            let u = if p_loop > 0.0 || p_one_hit > 0.0 {
                rng.next_f64()
            } else {
                1.0
            };
            if u < p_loop {
                loop_pos += 1;
                loop_base + (loop_pos - 1) % cfg.loop_keys
            } else if u < p_loop + p_one_hit {
                fresh += 1;
                fresh - 1
            } else if video {
                let s = &mut sessions[rng.below(cfg.viewers) as usize];
                if s.2 == 0 {
                    // A new viewer: a title by popularity, from its first segment, for a
                    // geometric number of segments.
                    let title = zipf.sample(&mut rng) - 1;
                    let watch = (-watch_mean * (1.0 - rng.next_f64()).ln()).ceil() as u64;
                    *s = (title, 0, watch.clamp(1, cfg.segments));
                }
                let key = s.0 * cfg.segments + s.1;
                s.1 += 1;
                s.2 -= 1;
                key
            } else {
                let epoch = i.checked_div(cfg.churn_every).unwrap_or(0);
                zipf.sample(&mut rng) - 1 + (epochs - epoch) * cfg.churn_step
            }
        };
        let time = (i as f64 / cfg.rate) as u64;
        requests.push(Request {
            time,
            key,
            size: cfg.sizes.size_of(key, cfg.seed),
        });
    }
    Ok(Trace::new(requests))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn small_cfg(seed: u64) -> GenConfig {
        GenConfig {
            keys: 2_000,
            requests: 50_000,
            scan_fraction: 0.2,
            scan_burst: 200,
            one_hit_fraction: 0.1,
            sizes: SizeProfile::Mixed,
            seed,
            ..GenConfig::default()
        }
    }

    #[test]
    fn generator_is_deterministic_by_seed() {
        let a = generate(&small_cfg(1)).unwrap();
        let b = generate(&small_cfg(1)).unwrap();
        let c = generate(&small_cfg(2)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 50_000);
    }

    #[test]
    fn shares_of_scan_one_hit_and_zipf_match_the_config() {
        let cfg = GenConfig {
            requests: 400_000,
            scan_burst: 50,
            ..small_cfg(3)
        };
        let t = generate(&cfg).unwrap();
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for r in &t.requests {
            *counts.entry(r.key).or_default() += 1;
        }
        let fresh = t.requests.iter().filter(|r| r.key >= cfg.keys).count() as f64;
        let share = fresh / t.len() as f64;
        assert!((share - 0.3).abs() < 0.005, "fresh share {share}");
        // Fresh ids are requested exactly once.
        assert!(counts
            .iter()
            .filter(|(k, _)| **k >= cfg.keys)
            .all(|(_, c)| *c == 1));
        // Scan bursts: runs of consecutive fresh ids at least a burst long make up ~20%.
        let mut in_runs = 0usize;
        let mut run = 1usize;
        for w in t.requests.windows(2) {
            if w[0].key >= cfg.keys && w[1].key == w[0].key + 1 {
                run += 1;
            } else {
                if run >= cfg.scan_burst as usize {
                    in_runs += run;
                }
                run = 1;
            }
        }
        let scan_share = in_runs as f64 / t.len() as f64;
        assert!((scan_share - 0.2).abs() < 0.002, "scan share {scan_share}");
        // The same object always has the same size.
        let mut sizes: HashMap<u64, u64> = HashMap::new();
        for r in &t.requests {
            assert_eq!(*sizes.entry(r.key).or_insert(r.size), r.size);
        }
    }

    #[test]
    fn churn_brings_new_objects_in_at_the_top() {
        let cfg = GenConfig {
            keys: 1_000,
            requests: 30_000,
            churn_every: 10_000,
            churn_step: 100,
            scan_fraction: 0.1,
            scan_burst: 10,
            sizes: SizeProfile::Unit,
            ..GenConfig::default()
        };
        let t = generate(&cfg).unwrap();
        // Three epochs: the most popular id is 200 + 0, then 100 + 0, then 0 + 0.
        let top = |range: std::ops::Range<usize>| {
            let mut counts: HashMap<u64, u64> = HashMap::new();
            for r in &t.requests[range] {
                *counts.entry(r.key).or_default() += 1;
            }
            counts
                .into_iter()
                .max_by_key(|(_, c)| *c)
                .map(|(k, _)| k)
                .unwrap()
        };
        assert_eq!(top(0..10_000), 200);
        assert_eq!(top(10_000..20_000), 100);
        assert_eq!(top(20_000..30_000), 0);
        // Fresh (scan) ids stay clear of the churned catalogue: ids < 1_200 are Zipf only.
        let fresh: Vec<u64> = t
            .requests
            .iter()
            .map(|r| r.key)
            .filter(|&k| k >= 1_200)
            .collect();
        assert_eq!(fresh.len(), 3_000);
        let distinct: std::collections::HashSet<u64> = fresh.iter().copied().collect();
        assert_eq!(distinct.len(), 3_000);
        // Static popularity is the default and keeps id = rank.
        assert_eq!(GenConfig::default().churn_every, 0);
    }

    #[test]
    fn zipf_sampler_matches_the_distribution() {
        for &s in &[0.6, 0.8, 1.0, 1.2] {
            let n = 50u64;
            let z = Zipf::new(n, s);
            let mut rng = Rng::new(9);
            let draws = 200_000;
            let mut counts = vec![0u64; n as usize + 1];
            for _ in 0..draws {
                let k = z.sample(&mut rng);
                assert!((1..=n).contains(&k));
                counts[k as usize] += 1;
            }
            let norm: f64 = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).sum();
            for k in [1u64, 2, 5, 20, 50] {
                let expected = draws as f64 / (k as f64).powf(s) / norm;
                let got = counts[k as usize] as f64;
                let tolerance = 5.0 * expected.sqrt() + 1.0;
                assert!(
                    (got - expected).abs() < tolerance,
                    "s {s} rank {k}: got {got} expected {expected}"
                );
            }
        }
    }

    #[test]
    fn size_profiles_stay_in_their_ranges() {
        for key in 0..10_000u64 {
            assert_eq!(SizeProfile::Unit.size_of(key, 1), 1);
            let s = SizeProfile::Small.size_of(key, 1);
            assert!((200..=2 * 1024 * 1024).contains(&s), "{s}");
            let v = SizeProfile::Video.size_of(key, 1);
            assert!((180_000..=4_400_000).contains(&v), "{v}");
        }
        let mut small: Vec<u64> = (0..10_001u64)
            .map(|k| SizeProfile::Small.size_of(k, 1))
            .collect();
        small.sort_unstable();
        let median = small[5_000];
        assert!((10_000..15_000).contains(&median), "median {median}");
        let video_share = (0..10_000u64)
            .filter(|&k| SizeProfile::Mixed.size_of(k, 1) >= 180_000)
            .count();
        // 15% video plus the few small assets clamped above 180 kB.
        assert!((1_400..2_100).contains(&video_share), "{video_share}");
        assert_eq!("video".parse::<SizeProfile>().unwrap(), SizeProfile::Video);
        assert!("huge".parse::<SizeProfile>().is_err());
    }

    #[test]
    fn rejects_bad_configs() {
        let bad = [
            GenConfig {
                zipf: 0.0,
                ..GenConfig::default()
            },
            GenConfig {
                keys: 0,
                ..GenConfig::default()
            },
            GenConfig {
                scan_fraction: 0.6,
                one_hit_fraction: 0.5,
                ..GenConfig::default()
            },
            GenConfig {
                scan_burst: 0,
                ..GenConfig::default()
            },
        ];
        for cfg in bad {
            assert!(generate(&cfg).is_err(), "{cfg:?}");
        }
    }

    #[test]
    fn video_viewers_watch_titles_in_order_and_popular_titles_most() {
        let cfg = GenConfig {
            zipf: 0.9,
            video_titles: 200,
            segments: 60,
            viewers: 20,
            requests: 200_000,
            sizes: SizeProfile::Video,
            ..GenConfig::default()
        };
        let t = generate(&cfg).unwrap();
        let mut per_segment = vec![0u64; 60];
        let mut per_title = vec![0u64; 200];
        for r in &t.requests {
            assert!(r.key < 200 * 60, "only segments: {}", r.key);
            per_title[(r.key / 60) as usize] += 1;
            per_segment[(r.key % 60) as usize] += 1;
        }
        // Viewers start at the first segment and leave along the way.
        assert!(per_segment[0] > per_segment[10] && per_segment[10] > per_segment[40]);
        assert!(per_segment[0] as f64 > 2.5 * per_segment[40] as f64);
        // Title popularity follows the Zipf ranking.
        assert!(per_title[0] > per_title[10] && per_title[10] > per_title[150]);
        // Segments of one session come in order: each request for segment s > 0 of a title
        // follows an earlier request for segment s - 1 of that title.
        let mut seen = std::collections::HashSet::new();
        for r in &t.requests {
            if r.key % 60 > 0 {
                assert!(
                    seen.contains(&(r.key - 1)),
                    "segment {} before its predecessor",
                    r.key
                );
            }
            seen.insert(r.key);
        }
    }

    #[test]
    fn the_loop_walks_its_keys_in_a_fixed_cycle() {
        let cfg = GenConfig {
            keys: 1_000,
            requests: 100_000,
            loop_fraction: 0.5,
            loop_keys: 300,
            sizes: SizeProfile::Unit,
            ..GenConfig::default()
        };
        let t = generate(&cfg).unwrap();
        let looped: Vec<u64> = t
            .requests
            .iter()
            .filter(|r| (1_000..1_300).contains(&r.key))
            .map(|r| r.key - 1_000)
            .collect();
        let share = looped.len() as f64 / t.len() as f64;
        assert!((share - 0.5).abs() < 0.01, "{share}");
        for (i, k) in looped.iter().enumerate() {
            assert_eq!(*k, i as u64 % 300);
        }
    }
}
