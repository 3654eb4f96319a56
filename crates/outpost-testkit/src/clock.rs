//! A manually advanced wall clock for tests of time-dependent logic (freshness, TTLs, purges): pure
//! tests read it directly, and a node started with it (`outpost_proxy::NodeOptions::clock`) reads
//! it through [`outpost_cache::Clock`], so tests move time instead of sleeping.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A shared, settable `SystemTime`. Clones share the same instant.
#[derive(Clone, Debug)]
pub struct FakeClock(Arc<Mutex<SystemTime>>);

impl FakeClock {
    /// A clock reading `start`.
    pub fn new(start: SystemTime) -> Self {
        FakeClock(Arc::new(Mutex::new(start)))
    }

    /// The current fake time.
    pub fn now(&self) -> SystemTime {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }

    /// Sets the clock to `to` (may move backwards, for clock-skew tests).
    pub fn set(&self, to: SystemTime) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = to;
    }
}

impl outpost_cache::Clock for FakeClock {
    fn now(&self) -> SystemTime {
        FakeClock::now(self)
    }
}

impl Default for FakeClock {
    /// Starts at 2023-11-14T22:13:20Z (unix 1 700 000 000), a whole second, so HTTP-dates round-trip.
    fn default() -> Self {
        FakeClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_is_shared_between_clones() {
        let a = FakeClock::default();
        let b = a.clone();
        let t0 = a.now();
        b.advance(Duration::from_secs(5));
        assert_eq!(a.now(), t0 + Duration::from_secs(5));
        a.set(t0);
        assert_eq!(b.now(), t0);
    }
}
