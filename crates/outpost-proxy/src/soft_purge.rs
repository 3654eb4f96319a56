//! Soft purges: what they mark stale ([`SoftPurges`]: recent soft purges with their time) and
//! how a covered object is then reused ([`mark_stale`]). A soft purge removes nothing; a stored
//! object whose response arrived before a matching soft purge counts as having expired at the
//! purge. A client is served it stale while one background revalidation refreshes it (for up to
//! [`SOFT_STALE`] after the purge, unless the object forbids serving stale); another tier of
//! the CDN is never served it stale (the revalidation happens first), so a tier below does not
//! store the old copy as a new one (reference 003 §6, the soft-purge and shielding trap).

use crate::purge_log::PurgeMatch;
use outpost_cache::decide::{ReuseFacts, StoredTiming};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after a soft purge a client may still be served the old copy while it refreshes.
pub const SOFT_STALE: Duration = Duration::from_secs(60);

/// Recent soft purges kept; an object older than the oldest one kept is no longer matched
/// against the ones dropped (it counts as fresh again: bounded memory over perfect recall).
const RECENT: usize = 4096;

/// The recent soft purges of a node.
#[derive(Debug, Default)]
pub struct SoftPurges {
    /// Time of the latest soft purge (ns since the epoch; 0: none), for the common "no soft
    /// purge since this object was stored" answer without a lock.
    latest: AtomicU64,
    recent: RwLock<VecDeque<(SystemTime, PurgeMatch)>>,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl SoftPurges {
    fn read(&self) -> RwLockReadGuard<'_, VecDeque<(SystemTime, PurgeMatch)>> {
        self.recent.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a soft purge matching `m` at `at`.
    pub fn record(&self, at: SystemTime, m: PurgeMatch) {
        let mut recent = self.recent.write().unwrap_or_else(|p| p.into_inner());
        recent.push_back((at, m));
        while recent.len() > RECENT {
            recent.pop_front();
        }
        self.latest.fetch_max(nanos(at), Ordering::AcqRel);
    }

    /// When the first soft purge after `stored_at` that covers `key` (with `tags`) happened.
    pub fn covers(&self, key: &str, tags: &[String], stored_at: SystemTime) -> Option<SystemTime> {
        let latest = self.latest.load(Ordering::Acquire);
        if latest == 0 || nanos(stored_at) >= latest {
            return None;
        }
        self.read()
            .iter()
            .filter(|(at, m)| *at > stored_at && m.matches(key, tags))
            .map(|(at, _)| *at)
            .min()
    }
}

/// Make a stored object covered by a soft purge at `purged_at` stale from that moment: its
/// lifetime ends at the purge; a client may be served it during [`SOFT_STALE`] after the purge
/// (one background revalidation refreshes it), another tier never.
pub fn mark_stale(
    facts: &mut ReuseFacts,
    timing: &mut StoredTiming,
    purged_at: SystemTime,
    for_member: bool,
) {
    let before_purge = purged_at
        .duration_since(timing.response_time)
        .unwrap_or_default();
    timing.lifetime = timing.lifetime.min(timing.initial_age + before_purge);
    if for_member {
        facts.stale_while_revalidate = None;
    } else {
        let soft = SOFT_STALE.as_secs();
        facts.stale_while_revalidate = Some(facts.stale_while_revalidate.unwrap_or(0).max(soft));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::purge_log::tag_key;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn only_objects_stored_before_a_matching_soft_purge_are_covered() {
        let p = SoftPurges::default();
        assert_eq!(p.covers("t|h/a|", &[], at(0)), None);
        p.record(at(10), PurgeMatch::Prefix("t|h/a".into()));
        p.record(at(20), PurgeMatch::Tag(tag_key("t", "x")));
        assert_eq!(p.covers("t|h/a|", &[], at(5)), Some(at(10)));
        assert_eq!(
            p.covers("t|h/a|", &[], at(10)),
            None,
            "stored at the purge: new"
        );
        assert_eq!(p.covers("t|h/b|", &[], at(5)), None);
        assert_eq!(
            p.covers("t|h/b|", &[tag_key("t", "x")], at(15)),
            Some(at(20))
        );
        assert_eq!(p.covers("u|h/b|", &[tag_key("u", "x")], at(15)), None);
    }

    #[test]
    fn a_covered_object_expires_at_the_purge() {
        let timing = StoredTiming {
            request_time: at(0),
            response_time: at(0),
            initial_age: Duration::from_secs(5),
            lifetime: Duration::from_secs(600),
        };
        let facts = ReuseFacts {
            no_stale: false,
            always_revalidate: false,
            stale_while_revalidate: Some(10),
            stale_if_error: None,
            immutable: false,
        };
        let (mut f, mut t) = (facts, timing);
        mark_stale(&mut f, &mut t, at(100), false);
        assert_eq!(t.lifetime, Duration::from_secs(105), "age at the purge");
        assert_eq!(
            f.stale_while_revalidate,
            Some(60),
            "clients: served stale while it refreshes"
        );
        let (mut f, mut t) = (facts, timing);
        mark_stale(&mut f, &mut t, at(100), true);
        assert_eq!(
            f.stale_while_revalidate, None,
            "other tiers: revalidated first"
        );
        assert_eq!(t.lifetime, Duration::from_secs(105));
        // Already expired before the purge: unchanged lifetime.
        let (mut f, mut t) = (facts, timing);
        mark_stale(&mut f, &mut t, at(1000), false);
        assert_eq!(t.lifetime, Duration::from_secs(600));
        assert_eq!(f.stale_while_revalidate, Some(60));
    }
}
