//! The wall clock a node reads, as an injectable trait: [`SystemClock`] in production, a settable
//! fake in tests (`outpost_testkit::FakeClock`), so that expiry, revalidation and purge timing are
//! tested by moving time rather than sleeping. Pure code never reads a clock; it takes `now`.

use std::time::SystemTime;

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
