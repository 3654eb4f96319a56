//! The canary decision ([`judge`]). Error shares (5xx answers, upstream failures) of the canary
//! PoP on the new config version are compared with every other edge's (still on the previous
//! version) over the same watch window, so an origin-wide failure does not blame the version.
//! The hit ratio is compared with the canary's own before the version went out (as long a
//! window), since PoPs see different traffic and different cache warmth. A regression beyond
//! the configured margins rolls the version back; otherwise it is promoted. Pure.

use crate::control::CanaryOptions;
use crate::log::Rollup;

/// Client traffic summed over rollups.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Client requests.
    pub requests: u64,
    /// Of those, answered without the origin.
    pub hits: u64,
    /// Of those, 5xx answers.
    pub errors: u64,
    /// Requests sent upstream.
    pub upstream: u64,
    /// Of those, failures.
    pub upstream_errors: u64,
}

impl Traffic {
    /// Add one rollup.
    pub fn add(&mut self, r: &Rollup) {
        self.requests += r.requests;
        self.hits += r.hits;
        self.errors += r.classes[4];
        self.upstream += r.upstream_fetches;
        self.upstream_errors += r.upstream_errors;
    }

    fn share(part: u64, whole: u64) -> f64 {
        if whole == 0 {
            0.0
        } else {
            part as f64 / whole as f64
        }
    }

    fn error_rate(&self) -> f64 {
        Self::share(self.errors, self.requests)
    }

    fn upstream_error_rate(&self) -> f64 {
        Self::share(self.upstream_errors, self.upstream)
    }

    fn hit_ratio(&self) -> f64 {
        Self::share(self.hits, self.requests)
    }
}

/// `Ok(why promoted)` or `Err(why rolled back)`: `canary` and `rest` over the watch window,
/// `before` the canary over as long a window before the version.
pub fn judge(
    o: &CanaryOptions,
    canary: &Traffic,
    rest: &Traffic,
    before: &Traffic,
) -> Result<String, String> {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    if canary.requests < o.min_requests {
        return Ok(format!(
            "promoted unjudged: {} client requests at the canary during the watch (fewer than {})",
            canary.requests, o.min_requests
        ));
    }
    if canary.error_rate() - rest.error_rate() > o.max_error_increase {
        return Err(format!(
            "5xx share {} at the canary vs {} elsewhere",
            pct(canary.error_rate()),
            pct(rest.error_rate())
        ));
    }
    if canary.upstream_error_rate() - rest.upstream_error_rate() > o.max_error_increase {
        return Err(format!(
            "upstream error share {} at the canary vs {} elsewhere",
            pct(canary.upstream_error_rate()),
            pct(rest.upstream_error_rate())
        ));
    }
    if before.requests >= o.min_requests
        && before.hit_ratio() - canary.hit_ratio() > o.max_hit_ratio_drop
    {
        return Err(format!(
            "hit ratio {} at the canary vs {} there before the version",
            pct(canary.hit_ratio()),
            pct(before.hit_ratio())
        ));
    }
    Ok(format!(
        "promoted: canary 5xx {}, upstream errors {}, hit ratio {} over {} requests (elsewhere {}, {}, {})",
        pct(canary.error_rate()),
        pct(canary.upstream_error_rate()),
        pct(canary.hit_ratio()),
        canary.requests,
        pct(rest.error_rate()),
        pct(rest.upstream_error_rate()),
        pct(rest.hit_ratio()),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn t(requests: u64, hits: u64, errors: u64, upstream: u64, upstream_errors: u64) -> Traffic {
        Traffic {
            requests,
            hits,
            errors,
            upstream,
            upstream_errors,
        }
    }

    #[test]
    fn regressions_roll_back_and_the_rest_is_promoted() {
        let o = CanaryOptions::new("p1", Duration::from_secs(1));
        let good = t(100, 80, 0, 20, 0);
        assert!(judge(&o, &good, &good, &good).is_ok());
        // Five points more 5xx is tolerated, more is not.
        assert!(judge(&o, &t(100, 80, 5, 20, 0), &good, &good).is_ok());
        let e = judge(&o, &t(100, 80, 30, 20, 0), &good, &good).unwrap_err();
        assert!(e.contains("5xx share 30.0%"), "{e}");
        // Upstream failures the clients did not see (stale served) still count.
        let e = judge(&o, &t(100, 80, 0, 20, 10), &good, &good).unwrap_err();
        assert!(e.contains("upstream error share 50.0%"), "{e}");
        // A hit ratio collapse (a cache rule broken), against the canary's own past.
        let e = judge(&o, &t(100, 10, 0, 90, 0), &good, &good).unwrap_err();
        assert!(e.contains("hit ratio 10.0%"), "{e}");
        // Other PoPs warmer than the canary (their traffic, a shield nearer): not a regression.
        let cold = t(100, 5, 0, 95, 0);
        assert!(judge(&o, &cold, &t(100, 100, 0, 0, 0), &cold).is_ok());
        // No traffic before the version: the hit ratio is not judged.
        assert!(judge(&o, &cold, &good, &Traffic::default()).is_ok());
        // Too little traffic to judge.
        let why = judge(&o, &t(3, 0, 3, 3, 3), &good, &good).unwrap();
        assert!(why.contains("unjudged"), "{why}");
    }
}
