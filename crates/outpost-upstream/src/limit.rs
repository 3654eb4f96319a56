//! A concurrency limit per origin, shared fairly between the tenants that use it, so one
//! tenant's slow origin paths or flood cannot take every connection a shared origin allows.
//!
//! Of the limit `L`, half is guaranteed: each of the `n` tenants of the origin may always have
//! `L / 2n` requests in flight. The other half is shared first come, first served. So a tenant
//! whose requests hang can hold at most `L / 2n + L / 2`, and every other tenant still finds
//! its guaranteed slots free. A request that finds no slot waits (up to the caller's timeout)
//! for one to be released. A slot is held until the origin's response head arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The limit of one origin.
pub struct OriginLimit {
    limit: usize,
    state: Mutex<LimitState>,
    released: Notify,
}

#[derive(Default)]
struct LimitState {
    /// Tenants that use the origin (the guarantee is split between them).
    tenants: usize,
    in_flight: HashMap<String, usize>,
}

impl LimitState {
    fn guaranteed(&self, limit: usize) -> usize {
        (limit / (2 * self.tenants.max(1))).max(1)
    }

    fn shared_used(&self, g: usize) -> usize {
        self.in_flight.values().map(|n| n.saturating_sub(g)).sum()
    }
}

/// A held slot; dropping it releases the slot.
pub struct Slot {
    limit: Arc<OriginLimit>,
    tenant: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut s = self.limit.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = s.in_flight.get_mut(&self.tenant) {
                *n = n.saturating_sub(1);
            }
        }
        self.limit.released.notify_waiters();
    }
}

impl OriginLimit {
    /// A limit of `limit` requests in flight (at least 2).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(2),
            state: Mutex::new(LimitState::default()),
            released: Notify::new(),
        })
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Set how many tenants use the origin.
    pub fn set_tenants(&self, n: usize) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).tenants = n;
    }

    /// Requests of `tenant` in flight.
    pub fn in_flight(&self, tenant: &str) -> usize {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.in_flight.get(tenant).copied().unwrap_or(0)
    }

    fn try_take(self: &Arc<Self>, tenant: &str) -> Option<Slot> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let g = s.guaranteed(self.limit);
        let shared = self.limit - (self.limit / 2);
        let mine = s.in_flight.get(tenant).copied().unwrap_or(0);
        let ok = mine < g || s.shared_used(g) < shared;
        if !ok {
            return None;
        }
        *s.in_flight.entry(tenant.to_string()).or_insert(0) += 1;
        Some(Slot {
            limit: self.clone(),
            tenant: tenant.to_string(),
        })
    }

    /// Take a slot for `tenant`, waiting for one to be released if needed (cancel by dropping
    /// the future; callers bound it with their timeout).
    pub async fn acquire(self: &Arc<Self>, tenant: &str) -> Slot {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before checking, so a release between the check and the wait is seen.
            released.as_mut().enable();
            if let Some(slot) = self.try_take(tenant) {
                return slot;
            }
            released.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_flooding_tenant_leaves_the_others_their_guarantee() {
        let l = OriginLimit::new(20);
        l.set_tenants(2);
        // Tenant a floods: it gets its guarantee (5) plus the shared half (10).
        let mut held = Vec::new();
        while let Some(s) = l.try_take("a") {
            held.push(s);
        }
        assert_eq!(held.len(), 15);
        // Tenant b still has its 5.
        let mut b = Vec::new();
        for _ in 0..5 {
            b.push(
                tokio::time::timeout(Duration::from_millis(100), l.acquire("b"))
                    .await
                    .expect("b's guaranteed slots are free"),
            );
        }
        assert!(l.try_take("b").is_none(), "the shared half is a's now");
        // A waiting request gets a slot when one is released.
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire("b").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(held.pop());
        let got = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(got.is_ok(), "a released slot wakes the waiter");
        assert_eq!(l.in_flight("a"), 14);
        assert_eq!(l.in_flight("b"), 6);
    }

    #[tokio::test]
    async fn one_tenant_alone_may_use_the_whole_limit() {
        let l = OriginLimit::new(10);
        l.set_tenants(1);
        let held: Vec<_> = std::iter::from_fn(|| l.try_take("a")).collect();
        assert_eq!(held.len(), 10);
    }
}
