//! Purges: what one removes ([`Purge`]: one URL with all its variants, a path prefix, a host, a
//! surrogate-key tag, or a whole tenant) and how it is applied ([`apply`], [`Node::purge`]): the
//! purge log's sequence is bumped and the store removals submitted under its write lock
//! (`purge_log.rs`), so a fill that started before the purge never stores what it removed;
//! matching in-flight fills are poisoned in the registry, so requests that arrive after the purge
//! start a fresh fill instead of following the old one.
//!
//! The control plane will deliver purges through its log; unsafe requests (RFC 9111 §4.4) and
//! the node's admin endpoint (`POST /purge`) use the same path today.

use crate::objects;
use crate::purge_log::{tag_key, PurgeMatch};
use crate::tenant::Tenant;
use crate::Node;
use outpost_cache::CanonicalUrl;
use outpost_store::{CacheKey, Completion};

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

/// Apply a soft purge: nothing is removed; what it matches that was stored before now counts
/// as expired now (`soft_purge.rs`): served stale to clients while one revalidation refreshes
/// it, revalidated first for other tiers.
pub fn apply_soft(node: &Node, tenant: &Tenant, purge: &Purge) {
    let now = node.clock.now();
    node.soft_purges.record(now, purge.matcher(&tenant.name));
    tracing::info!(tenant = %tenant.name, kind = purge.kind(), "soft purge applied");
}

impl Node {
    /// Apply a purge for the tenant called `tenant`; returns the objects removed, or `None`
    /// when no such tenant exists.
    pub async fn purge(&self, tenant: &str, p: &Purge) -> Option<usize> {
        let t = {
            let snapshot = self.config();
            snapshot.tenants.by_name(tenant)?.clone()
        };
        Some(apply(self, &t, p).await)
    }

    /// Apply a soft purge for the tenant called `tenant`; `None` when no such tenant exists.
    pub fn soft_purge(&self, tenant: &str, p: &Purge) -> Option<()> {
        let t = {
            let snapshot = self.config();
            snapshot.tenants.by_name(tenant)?.clone()
        };
        apply_soft(self, &t, p);
        Some(())
    }
}
