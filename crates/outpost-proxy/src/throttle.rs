//! Warnings about failures that can come in floods (origin down, descriptors exhausted, a full
//! disk), written at most once a second per kind with a count of what was suppressed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// At most one log line per second for one kind of event, with how many were suppressed.
#[derive(Debug)]
pub struct Throttle {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last line written (`u64::MAX`: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl Throttle {
    /// `Some(n)` when a line may be written now (`n` events were suppressed since the last
    /// one), `None` when this event is to be suppressed.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(self.epoch.elapsed().as_millis() as u64)
    }

    /// [`Throttle::allow`] at `now` milliseconds since the throttle was made.
    fn allow_at(&self, now: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != u64::MAX && now < last.saturating_add(1000) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// The throttles of one node.
#[derive(Debug, Default)]
pub struct Warnings {
    /// Upstream failures answered with 502/504.
    pub upstream: Throttle,
    /// Accept failures (descriptor exhaustion).
    pub accept: Throttle,
    /// SSD write failures that a fill carried on through.
    pub disk: Throttle,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn throttle_writes_once_a_second_then_counts() {
        let t = Throttle::default();
        assert_eq!(t.allow_at(5), Some(0));
        for ms in [6, 500, 1004] {
            assert_eq!(t.allow_at(ms), None);
        }
        assert_eq!(t.allow_at(1005), Some(3));
        assert_eq!(t.allow_at(1006), None);
    }
}
