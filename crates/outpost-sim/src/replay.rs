//! Replaying a trace through a policy: object and byte hit ratios at one cache size, and sweeps
//! over policies × sizes.
//!
//! The online policies are the storage engine's own types, built with
//! [`PolicyKind::build`](outpost_store::policy::PolicyKind::build) and driven exactly as the RAM
//! tier drives them: a lookup of a resident key is a hit (`on_hit`), anything else is a miss
//! followed by a fill (`on_insert`, which may refuse admission). Keys go through the SplitMix64
//! finalizer first so the policies see well-spread hashes, as they do in the store.
//!
//! Sizes: in [`Mode::Objects`] every object weighs 1 and the capacity is a number of objects
//! (how count-based simulators such as libCacheSim with `ignore_obj_size` measure); in
//! [`Mode::Bytes`] an object weighs its size in bytes (at least 1) and the capacity is bytes.
//! Both hit ratios are reported in either mode.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use outpost_store::policy::PolicyKind;

use crate::belady::{next_uses, Belady};
use crate::error::SimError;
use crate::rng::mix64;
use crate::size::SizeSpec;
use crate::trace::Trace;

/// How objects are weighed against the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Weight 1 per object; capacity in objects.
    #[default]
    Objects,
    /// Weight = size in bytes; capacity in bytes.
    Bytes,
}

impl Mode {
    /// `objects` or `bytes`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Objects => "objects",
            Mode::Bytes => "bytes",
        }
    }

    /// The weight of an object of `size` bytes.
    #[inline]
    pub fn weight(&self, size: u64) -> u64 {
        match self {
            Mode::Objects => 1,
            Mode::Bytes => size.max(1),
        }
    }
}

/// A policy the simulator can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimPolicy {
    /// One of the store's own policies.
    Online(PolicyKind),
    /// Belady's optimum with bypass (`belady`).
    Belady,
    /// Belady that admits every miss (`belady-admit`, libCacheSim's semantics).
    BeladyAdmitAll,
}

impl SimPolicy {
    /// The CLI name.
    pub fn as_str(&self) -> &'static str {
        match self {
            SimPolicy::Online(kind) => kind.as_str(),
            SimPolicy::Belady => "belady",
            SimPolicy::BeladyAdmitAll => "belady-admit",
        }
    }

    /// Whether this is an offline (clairvoyant) policy.
    pub fn is_offline(&self) -> bool {
        !matches!(self, SimPolicy::Online(_))
    }

    /// Parses a comma-separated list (`lru,s3-fifo,w-tinylfu,belady`).
    pub fn parse_list(text: &str) -> Result<Vec<SimPolicy>, SimError> {
        let policies = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<SimPolicy>, SimError>>()?;
        if policies.is_empty() {
            return Err(SimError::invalid("--policies", "no policy given"));
        }
        Ok(policies)
    }
}

impl fmt::Display for SimPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SimPolicy {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "belady" | "opt" | "min" => Ok(SimPolicy::Belady),
            "belady-admit" | "belady-admit-all" => Ok(SimPolicy::BeladyAdmitAll),
            other => {
                other
                    .parse::<PolicyKind>()
                    .map(SimPolicy::Online)
                    .map_err(|_| {
                        SimError::invalid(
                    "policy",
                    format!("{other:?} (expected lru, s3-fifo, s3-tinylfu, w-tinylfu, size-aware, belady or belady-admit)"),
                )
                    })
            }
        }
    }
}

/// A cache size resolved against a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSize {
    /// As written (`1%`, `64M`).
    pub label: String,
    /// Objects or bytes, per the mode.
    pub capacity: u64,
}

/// Hit counts of one policy at one size.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// The policy.
    pub policy: SimPolicy,
    /// The size's label.
    pub size_label: String,
    /// Capacity in objects or bytes.
    pub capacity: u64,
    /// The weighing mode.
    pub mode: Mode,
    /// Requests replayed.
    pub requests: u64,
    /// Requests that hit.
    pub hits: u64,
    /// Bytes requested.
    pub bytes_requested: u64,
    /// Bytes served from cache.
    pub bytes_hit: u64,
}

impl RunResult {
    /// Hits / requests.
    pub fn object_hit_ratio(&self) -> f64 {
        ratio(self.hits, self.requests)
    }

    /// Bytes hit / bytes requested.
    pub fn byte_hit_ratio(&self) -> f64 {
        ratio(self.bytes_hit, self.bytes_requested)
    }

    /// The headline metric of the mode: object hit ratio in object mode, byte hit ratio in byte
    /// mode.
    pub fn primary_hit_ratio(&self) -> f64 {
        match self.mode {
            Mode::Objects => self.object_hit_ratio(),
            Mode::Bytes => self.byte_hit_ratio(),
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Replays `trace` through `policy` at `size`. `next` must be the trace's
/// [`next_uses`] for the Belady policies (computed here when `None`).
pub fn replay(
    trace: &Trace,
    policy: SimPolicy,
    mode: Mode,
    size: &CacheSize,
    next: Option<&[u64]>,
) -> RunResult {
    let mut result = RunResult {
        policy,
        size_label: size.label.clone(),
        capacity: size.capacity,
        mode,
        requests: trace.len() as u64,
        hits: 0,
        bytes_requested: 0,
        bytes_hit: 0,
    };
    match policy {
        SimPolicy::Online(kind) => {
            let mut p = kind.build(size.capacity);
            for r in &trace.requests {
                let hash = mix64(r.key);
                result.bytes_requested += r.size;
                if p.contains(hash) {
                    p.on_hit(hash);
                    result.hits += 1;
                    result.bytes_hit += r.size;
                } else {
                    p.on_insert(hash, mode.weight(r.size));
                }
            }
        }
        SimPolicy::Belady | SimPolicy::BeladyAdmitAll => {
            let owned;
            let next: &[u64] = match next {
                Some(n) if n.len() == trace.len() => n,
                _ => {
                    owned = next_uses(trace.requests.iter().map(|r| r.key));
                    owned.as_slice()
                }
            };
            let mut b = Belady::new(size.capacity, policy == SimPolicy::Belady);
            for (r, &n) in trace.requests.iter().zip(next) {
                result.bytes_requested += r.size;
                if b.access(r.key, mode.weight(r.size), n) {
                    result.hits += 1;
                    result.bytes_hit += r.size;
                }
            }
        }
    }
    result
}

/// Resolves size specs against the trace's working set (unique keys in object mode, unique bytes
/// in byte mode).
pub fn resolve_sizes(trace: &Trace, mode: Mode, specs: &[SizeSpec]) -> Vec<CacheSize> {
    let stats = trace.stats();
    let base = match mode {
        Mode::Objects => stats.unique_keys,
        Mode::Bytes => stats.unique_bytes,
    };
    specs
        .iter()
        .map(|s| CacheSize {
            label: s.label.clone(),
            capacity: s.resolve(base),
        })
        .collect()
}

/// Runs every policy at every size, on up to `jobs` threads; results are ordered policy-major
/// (as given), then by size.
pub fn sweep(
    trace: &Trace,
    policies: &[SimPolicy],
    sizes: &[CacheSize],
    mode: Mode,
    jobs: usize,
) -> Result<Vec<RunResult>, SimError> {
    if trace.is_empty() {
        return Err(SimError::EmptyTrace);
    }
    let next = policies
        .iter()
        .any(SimPolicy::is_offline)
        .then(|| next_uses(trace.requests.iter().map(|r| r.key)));
    let tasks: Vec<(SimPolicy, &CacheSize)> = policies
        .iter()
        .flat_map(|&p| sizes.iter().map(move |s| (p, s)))
        .collect();
    let slots: Vec<Mutex<Option<RunResult>>> = tasks.iter().map(|_| Mutex::new(None)).collect();
    let cursor = AtomicUsize::new(0);
    let worker = || loop {
        let i = cursor.fetch_add(1, Ordering::Relaxed);
        let Some(&(policy, size)) = tasks.get(i) else {
            break;
        };
        let r = replay(trace, policy, mode, size, next.as_deref());
        if let Ok(mut slot) = slots[i].lock() {
            *slot = Some(r);
        }
    };
    let jobs = jobs.clamp(1, tasks.len().max(1));
    std::thread::scope(|scope| {
        for _ in 1..jobs {
            scope.spawn(worker);
        }
        worker();
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .ok()
                .flatten()
                .ok_or_else(|| SimError::invalid("simulation", "a worker thread failed"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::gen::{generate, GenConfig, SizeProfile};

    fn zipf_scan_trace(sizes: SizeProfile) -> Trace {
        generate(&GenConfig {
            zipf: 0.8,
            keys: 5_000,
            requests: 60_000,
            scan_fraction: 0.2,
            scan_burst: 500,
            one_hit_fraction: 0.05,
            sizes,
            seed: 11,
            ..GenConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn belady_beats_every_online_policy() {
        let trace = zipf_scan_trace(SizeProfile::Unit);
        let specs = SizeSpec::parse_list("0.1%,1%,10%").unwrap();
        let sizes = resolve_sizes(&trace, Mode::Objects, &specs);
        let policies = SimPolicy::parse_list("lru,s3-fifo,w-tinylfu,belady,belady-admit").unwrap();
        let results = sweep(&trace, &policies, &sizes, Mode::Objects, 2).unwrap();
        assert_eq!(results.len(), 15);
        for size in &sizes {
            let at: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.capacity == size.capacity)
                .collect();
            let opt = at
                .iter()
                .find(|r| r.policy == SimPolicy::Belady)
                .unwrap()
                .hits;
            for r in &at {
                assert!(r.hits <= opt, "{} {} > belady {opt}", r.policy, r.hits);
                eprintln!("{} {}: {:.4}", size.label, r.policy, r.object_hit_ratio());
            }
        }
    }

    #[test]
    fn object_mode_matches_a_plain_lru_model() {
        // An independent LRU over a Vec, to check the replay loop's accounting.
        let trace = zipf_scan_trace(SizeProfile::Small);
        let trace = Trace::new(trace.requests[..5_000].to_vec());
        let capacity = 50usize;
        let mut model: Vec<u64> = Vec::new();
        let (mut hits, mut bytes_hit) = (0u64, 0u64);
        for r in &trace.requests {
            if let Some(pos) = model.iter().position(|&k| k == r.key) {
                model.remove(pos);
                hits += 1;
                bytes_hit += r.size;
            } else if model.len() == capacity {
                model.remove(0);
            }
            model.push(r.key);
        }
        let size = CacheSize {
            label: "50".into(),
            capacity: 50,
        };
        let got = replay(
            &trace,
            SimPolicy::Online(PolicyKind::Lru),
            Mode::Objects,
            &size,
            None,
        );
        assert_eq!((got.hits, got.bytes_hit), (hits, bytes_hit));
        assert_eq!(got.requests, 5_000);
    }

    #[test]
    fn byte_mode_weighs_sizes() {
        let trace = zipf_scan_trace(SizeProfile::Mixed);
        let specs = SizeSpec::parse_list("1%,10%").unwrap();
        let sizes = resolve_sizes(&trace, Mode::Bytes, &specs);
        let stats = trace.stats();
        assert_eq!(
            sizes[1].capacity,
            (stats.unique_bytes as f64 * 0.1).round() as u64
        );
        let results = sweep(
            &trace,
            &[SimPolicy::Online(PolicyKind::WTinyLfu), SimPolicy::Belady],
            &sizes,
            Mode::Bytes,
            1,
        )
        .unwrap();
        for r in &results {
            assert!(r.byte_hit_ratio() > 0.0 && r.byte_hit_ratio() < 1.0);
            assert_eq!(r.bytes_requested, stats.requested_bytes);
        }
        // More cache never hurts these policies on this trace.
        assert!(results[1].hits >= results[0].hits);
        assert!(results[3].hits >= results[2].hits);
    }

    #[test]
    fn policy_names_parse() {
        let p = SimPolicy::parse_list("LRU, s3fifo,w-tinylfu,belady,belady-admit").unwrap();
        assert_eq!(
            p,
            vec![
                SimPolicy::Online(PolicyKind::Lru),
                SimPolicy::Online(PolicyKind::S3Fifo),
                SimPolicy::Online(PolicyKind::WTinyLfu),
                SimPolicy::Belady,
                SimPolicy::BeladyAdmitAll
            ]
        );
        assert!(SimPolicy::parse_list("arc").is_err());
        assert!(SimPolicy::parse_list("").is_err());
        assert!(sweep(&Trace::default(), &p, &[], Mode::Objects, 1).is_err());
    }
}
