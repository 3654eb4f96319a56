//! A log-linear latency histogram over microseconds ([`bucket`], [`Histogram`]): values below 16
//! have a bucket each; above, each power of two is split into 16 buckets, so a bucket's width is
//! at most 1/16 of its values (a percentile read from it is within ~6%). Histograms of several
//! nodes merge by adding bucket counts, which is how the control plane's analytics get
//! percentiles across nodes (never by averaging per-node percentiles).

/// Number of buckets (values up to 2^37 µs, about 38 hours; larger ones go in the last).
pub const BUCKETS: usize = 35 * 16;

/// The bucket of a latency in microseconds.
pub fn bucket(micros: u64) -> usize {
    if micros < 16 {
        return micros as usize;
    }
    let p = 63 - micros.leading_zeros() as usize; // 4..=63
    let m = (micros >> (p - 4)) as usize; // 16..=31
    ((p - 4) * 16 + m).min(BUCKETS - 1)
}

/// The smallest and largest value of bucket `i`.
pub fn bounds(i: usize) -> (u64, u64) {
    if i < 16 {
        return (i as u64, i as u64);
    }
    let p = i / 16 + 3;
    let m = (i % 16 + 16) as u64;
    (m << (p - 4), ((m + 1) << (p - 4)) - 1)
}

/// Bucket counts (sparse on the wire: `(bucket, count)` pairs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
        }
    }
}

impl Histogram {
    /// Count one value.
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket(micros)] += 1;
    }

    /// Add `n` to bucket `i` (ignored when out of range).
    pub fn add(&mut self, i: usize, n: u64) {
        if let Some(c) = self.counts.get_mut(i) {
            *c += n;
        }
    }

    /// Add another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Values counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The non-empty buckets as `(bucket, count)`.
    pub fn sparse(&self) -> Vec<(usize, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i, *c))
            .collect()
    }

    /// From `(bucket, count)` pairs.
    pub fn from_sparse(pairs: &[(usize, u64)]) -> Self {
        let mut h = Self::default();
        for (i, n) in pairs {
            h.add(*i, *n);
        }
        h
    }

    /// The `q` quantile (0..=1) in microseconds: the midpoint of the bucket holding the value
    /// of rank ceil(q * total); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(i);
                return Some(lo + (hi - lo) / 2);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bounds(i);
            assert!(lo <= hi);
            if i > 0 {
                assert_eq!(lo, last + 1, "bucket {i} starts where {} ended", i - 1);
            }
            assert_eq!(bucket(lo), i);
            assert_eq!(bucket(hi), i);
            last = hi;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    proptest! {
        #[test]
        fn a_bucket_is_at_most_a_sixteenth_of_its_values(v in 16u64..(1u64 << 37)) {
            let (lo, hi) = bounds(bucket(v));
            prop_assert!(lo <= v && v <= hi);
            prop_assert!((hi - lo) as f64 <= lo as f64 / 16.0 + 1.0);
        }

        #[test]
        fn merged_quantiles_match_the_raw_values(
            nodes in proptest::collection::vec(proptest::collection::vec(1u64..5_000_000, 1..200), 1..8),
            q in 0.01f64..1.0,
        ) {
            let mut merged = Histogram::default();
            let mut raw: Vec<u64> = Vec::new();
            for values in &nodes {
                let mut h = Histogram::default();
                for v in values {
                    h.record(*v);
                }
                merged.merge(&Histogram::from_sparse(&h.sparse()));
                raw.extend(values);
            }
            raw.sort_unstable();
            let rank = ((q * raw.len() as f64).ceil() as usize).max(1);
            let exact = raw[rank - 1] as f64;
            let got = merged.quantile(q).unwrap() as f64;
            prop_assert!((got - exact).abs() <= exact / 16.0 + 1.0, "q {} exact {} got {}", q, exact, got);
        }
    }
}
