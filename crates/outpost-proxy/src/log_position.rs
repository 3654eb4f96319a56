//! How far this node has applied the control plane's log ([`LogPosition`]), and the
//! `Outpost-Log` request header that carries it between tiers. A node that has applied a purge
//! sends its position with every request to a peer (PoP owner, shield, mid-tier); a peer that
//! is behind waits briefly for its own log to catch up and, if it cannot, revalidates instead of
//! answering from its cache, so a purged object is never re-filled from a tier that has not
//! purged it yet (reference 003 §6: the soft-purge and shielding trap). Honoured only from
//! topology members (`tier::Tier::from_member`).

use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// The request header: the sender's applied log position.
pub static OUTPOST_LOG: HeaderName = HeaderName::from_static("outpost-log");

/// How long a request from a peer that is ahead waits for this node's log to catch up.
pub const CATCH_UP_WAIT: Duration = Duration::from_millis(1000);

/// The applied log position, with wake-ups for requests waiting on it.
#[derive(Debug, Default)]
pub struct LogPosition {
    seq: AtomicU64,
    changed: Notify,
}

impl LogPosition {
    /// The highest log sequence applied (0: none, or no control plane).
    pub fn get(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Entries up to `seq` are applied (never moves back).
    pub fn advance(&self, seq: u64) {
        self.seq.fetch_max(seq, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Wait up to `max` for the position to reach `seq`; whether it did.
    pub async fn wait_for(&self, seq: u64, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.changed.notified();
            if self.get() >= seq {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.get() >= seq;
            }
        }
    }

    /// Add this position to a request going to a peer (nothing before the first entry).
    pub fn stamp(&self, headers: &mut HeaderMap) {
        let seq = self.get();
        if seq > 0 {
            let mut buf = itoa::Buffer::new();
            if let Ok(v) = HeaderValue::from_str(buf.format(seq)) {
                headers.insert(OUTPOST_LOG.clone(), v);
            }
        }
    }
}

/// The position a request's sender had applied.
pub fn wanted(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(&OUTPOST_LOG)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiting_ends_when_the_log_catches_up_or_the_time_is_up() {
        let p = Arc::new(LogPosition::default());
        assert!(p.wait_for(0, Duration::ZERO).await);
        assert!(!p.wait_for(3, Duration::from_millis(20)).await);
        let q = p.clone();
        let t = tokio::spawn(async move { q.wait_for(3, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        p.advance(2);
        p.advance(3);
        assert!(t.await.unwrap());
        p.advance(1);
        assert_eq!(p.get(), 3, "never moves back");
        let mut h = HeaderMap::new();
        p.stamp(&mut h);
        assert_eq!(wanted(&h), Some(3));
    }
}
