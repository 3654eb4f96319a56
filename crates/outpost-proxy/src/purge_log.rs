//! The purge sequence and the recent purges a committing fill is checked against
//! ([`PurgeLog`]), in cache-key terms ([`PurgeMatch`]): a purge bumps the sequence and records what
//! it matches under the log's write lock; a fill notes the sequence when it starts and stores its
//! object through [`PurgeLog::commit_unless_purged`] under the read lock, so a fill that started
//! before a purge never stores what the purge removed, whichever finishes first. State only: the
//! purges themselves are `purge.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// How many recent purges a committing fill can be checked against. A fill older than that
/// (more purges since it started) is conservatively not stored.
const RECENT: usize = 4096;

/// What a purge matches, in cache-key terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeMatch {
    /// Every key whose text starts with this.
    Prefix(String),
    /// Every object carrying this (tenant-namespaced) tag.
    Tag(String),
}

impl PurgeMatch {
    /// Whether a key (with its tags) is covered.
    pub fn matches(&self, key: &str, tags: &[String]) -> bool {
        match self {
            PurgeMatch::Prefix(p) => key.starts_with(p.as_str()),
            PurgeMatch::Tag(t) => tags.iter().any(|x| x == t),
        }
    }
}

/// A surrogate-key tag as stored: namespaced by tenant so one tenant's tag purge never touches
/// another's objects.
pub fn tag_key(tenant: &str, tag: &str) -> String {
    format!("{tenant}|{tag}")
}

/// The purge sequence and the recent purges a committing fill is checked against.
#[derive(Debug, Default)]
pub struct PurgeLog {
    seq: AtomicU64,
    recent: RwLock<VecDeque<(u64, PurgeMatch)>>,
}

impl PurgeLog {
    /// The sequence of the last purge applied (a fill notes it when it starts).
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    fn read(&self) -> RwLockReadGuard<'_, VecDeque<(u64, PurgeMatch)>> {
        self.recent.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, VecDeque<(u64, PurgeMatch)>> {
        self.recent.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a purge matching `m` and run `remove` (the store removal) before any fill can
    /// commit again; returns the purge's sequence and what `remove` returned.
    pub fn apply<R>(&self, m: PurgeMatch, remove: impl FnOnce(&PurgeMatch) -> R) -> (u64, R) {
        let mut recent = self.write();
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        self.seq.store(seq, Ordering::Release);
        let r = remove(&m);
        recent.push_back((seq, m));
        while recent.len() > RECENT {
            recent.pop_front();
        }
        (seq, r)
    }

    /// Run `store` for a fill of `key` (with `tags`) that started at sequence `since`, unless a
    /// purge applied since then matches it; atomic with respect to [`PurgeLog::apply`].
    pub fn commit_unless_purged<R>(
        &self,
        since: u64,
        key: &str,
        tags: &[String],
        store: impl FnOnce() -> R,
    ) -> Option<R> {
        let recent = self.read();
        if self.seq.load(Ordering::Acquire) != since && purged_since(&recent, since, key, tags) {
            return None;
        }
        Some(store())
    }

    /// Whether a purge since `since` matches `key` / `tags` (no lock held afterwards).
    pub fn purged_since(&self, since: u64, key: &str, tags: &[String]) -> bool {
        self.seq.load(Ordering::Acquire) != since && purged_since(&self.read(), since, key, tags)
    }
}

fn purged_since(
    recent: &VecDeque<(u64, PurgeMatch)>,
    since: u64,
    key: &str,
    tags: &[String],
) -> bool {
    // History no longer reaches back to `since`: be safe, do not store.
    if recent.front().is_some_and(|(s, _)| *s > since + 1) {
        return true;
    }
    recent
        .iter()
        .rev()
        .take_while(|(s, _)| *s > since)
        .any(|(_, m)| m.matches(key, tags))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_fill_that_started_before_a_matching_purge_is_not_stored() {
        let log = PurgeLog::default();
        let since = log.seq();
        log.apply(PurgeMatch::Prefix("t|h/a|".into()), |_| ());
        assert!(log
            .commit_unless_purged(since, "t|h/a|", &[], || ())
            .is_none());
        // A variant and another cookie bucket of the same URL are covered too.
        assert!(log.purged_since(since, "t|h/a|#vary:gzip", &[]));
        // Other keys still commit.
        assert!(log
            .commit_unless_purged(since, "t|h/b|", &[], || ())
            .is_some());
        // A fill that started after the purge commits.
        assert!(log
            .commit_unless_purged(log.seq(), "t|h/a|", &[], || ())
            .is_some());
    }

    #[test]
    fn tags_match_namespaced() {
        let log = PurgeLog::default();
        let since = log.seq();
        log.apply(PurgeMatch::Tag(tag_key("t", "home")), |_| ());
        assert!(log.purged_since(since, "t|h/x|", &[tag_key("t", "home")]));
        assert!(!log.purged_since(since, "u|h/x|", &[tag_key("u", "home")]));
    }

    #[test]
    fn lost_history_is_conservative() {
        let log = PurgeLog::default();
        let since = log.seq();
        for i in 0..(RECENT + 5) {
            log.apply(PurgeMatch::Prefix(format!("t|h/{i}|")), |_| ());
        }
        assert!(log.purged_since(since, "t|h/unrelated|", &[]));
        assert!(!log.purged_since(log.seq() - 1, "t|h/unrelated|", &[]));
    }
}
