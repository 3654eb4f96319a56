//! Purges and the sequence that stops in-flight fills from undoing them.
//!
//! A purge names what it removes ([`Purge`]: one URL with all its variants, a path prefix, a host,
//! a surrogate-key tag, or a whole tenant). [`PurgeLog::apply`] bumps the purge sequence, records
//! what the purge matches and removes it from the store, all under one write lock. A fill notes
//! the sequence when it starts ([`PurgeLog::seq`]) and stores its object through
//! [`PurgeLog::commit_unless_purged`], which takes the same lock for reading: if any purge since
//! the fill started matches its key or tags, the object is not stored. So a fill that started
//! before a purge never stores what the purge removed, whichever of the two finishes first.
//! Matching in-flight fills are also poisoned in the registry, so requests that arrive after the
//! purge start a fresh fill instead of following the old one.
//!
//! The control plane will deliver purges through its log; unsafe requests (RFC 9111 §4.4) and
//! the node's admin endpoint (`POST /purge`) use the same path today.

use crate::objects;
use crate::tenant::Tenant;
use crate::Node;
use outpost_cache::CanonicalUrl;
use outpost_store::{CacheKey, Completion};
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
    fn matches(&self, key: &str, tags: &[String]) -> bool {
        match self {
            PurgeMatch::Prefix(p) => key.starts_with(p.as_str()),
            PurgeMatch::Tag(t) => tags.iter().any(|x| x == t),
        }
    }
}

/// One purge, for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One URL: every cookie bucket and every Vary variant of it.
    Url(CanonicalUrl),
    /// Every URL of `host` whose path starts with `path_prefix`.
    Prefix {
        /// Canonical host.
        host: String,
        /// Path prefix (starts with `/`).
        path_prefix: String,
    },
    /// Every URL of a host.
    Host(String),
    /// Every object tagged with this surrogate key (`Surrogate-Key` / `Cache-Tag`).
    Tag(String),
    /// Everything the tenant has stored.
    Everything,
}

impl Purge {
    /// Name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Purge::Url(_) => "url",
            Purge::Prefix { .. } => "prefix",
            Purge::Host(_) => "host",
            Purge::Tag(_) => "tag",
            Purge::Everything => "everything",
        }
    }

    /// What it matches for `tenant`.
    fn matcher(&self, tenant: &str) -> PurgeMatch {
        match self {
            Purge::Url(u) => PurgeMatch::Prefix(url_prefix(tenant, u)),
            Purge::Prefix { host, path_prefix } => {
                PurgeMatch::Prefix(format!("{tenant}|{host}{path_prefix}"))
            }
            Purge::Host(host) => PurgeMatch::Prefix(format!("{tenant}|{host}/")),
            Purge::Tag(t) => PurgeMatch::Tag(tag_key(tenant, t)),
            Purge::Everything => PurgeMatch::Prefix(format!("{tenant}|")),
        }
    }
}

/// The key-text prefix shared by every key of one URL (any cookie bucket, any variant).
fn url_prefix(tenant: &str, u: &CanonicalUrl) -> String {
    u.key_text(tenant, "")
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

/// A store removal submitted by a purge.
enum Removal {
    /// One key: whether it was stored.
    Key(Completion<bool>),
    /// A tag or prefix: how many objects went.
    Many(Completion<usize>),
}

/// Apply `purge` for `tenant` on `node`: sequence, store removal, in-flight fills. Returns how
/// many stored objects it removed.
///
/// The store removals are *submitted* under the purge log's write lock (they run in submission
/// order on the store's append thread, after any fill commit submitted before them, and before
/// any submitted after) and awaited once the lock is released: no lock is held across an await
/// and no worker waits for the disk. What a URL purge needs to read (the Vary marker listing its
/// variants) is read before the lock is taken; a variant that appears in between belongs to a
/// fill the purge log refuses.
pub async fn apply(node: &Node, tenant: &Tenant, purge: &Purge) -> usize {
    let m = purge.matcher(&tenant.name);
    let marker = match purge {
        Purge::Url(u) => {
            let primary = CacheKey::new(u.key_text(&tenant.name, ""));
            objects::vary_marker(node, &primary, std::time::SystemTime::UNIX_EPOCH).await
        }
        _ => None,
    };
    let (seq, pending) = node.purges.apply(m.clone(), |m| -> Vec<Removal> {
        match (purge, m) {
            // One URL: its primary key and variants directly; other cookie buckets only when the
            // tenant keys on cookies (a prefix scan of the RAM tier otherwise).
            (Purge::Url(u), PurgeMatch::Prefix(p)) => {
                let primary = CacheKey::new(u.key_text(&tenant.name, ""));
                let mut out: Vec<Removal> =
                    objects::remove_listed(node, &primary, marker.as_deref())
                        .into_iter()
                        .map(Removal::Key)
                        .collect();
                if tenant.keys_on_cookies() {
                    out.push(Removal::Many(node.store.remove_prefix_async(p)));
                }
                out
            }
            (_, PurgeMatch::Prefix(p)) => vec![Removal::Many(node.store.remove_prefix_async(p))],
            (_, PurgeMatch::Tag(t)) => vec![Removal::Many(node.store.remove_tag_async(t))],
        }
    });
    let mut removed = 0;
    for done in pending {
        removed += match done {
            Removal::Key(c) => usize::from(c.await),
            Removal::Many(c) => c.await,
        };
    }
    let poisoned = node.fills.poison_where(|key: &CacheKey, head| match &m {
        PurgeMatch::Prefix(_) => m.matches(key.text(), &[]),
        // A fill whose head has not arrived cannot show its tags: it is poisoned (not stored,
        // and new requests start a fresh fill) to be safe.
        PurgeMatch::Tag(_) => head.is_none_or(|h| m.matches(key.text(), h.tags())),
    });
    node.metrics.purged(removed as u64);
    tracing::info!(
        tenant = %tenant.name,
        kind = purge.kind(),
        seq,
        removed,
        fills_stopped = poisoned,
        "purge applied"
    );
    removed
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
