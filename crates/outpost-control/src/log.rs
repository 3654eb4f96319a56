//! The entries of the control plane's one sequenced log ([`Entry`]): config versions and purges,
//! in the order every node applies them, and the acknowledgements nodes send back ([`Ack`]).
//! Plain data (serde JSON on the wire); sequence numbers come from the control store.

use serde::{Deserialize, Serialize};

/// One log entry: the control store's sequence, when it was issued, and what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log (1, 2, ...): nodes apply entries in this order, each once.
    pub seq: u64,
    /// When the control plane accepted it (ms since the Unix epoch).
    pub issued_ms: u64,
    /// What to do.
    pub op: Op,
}

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Config version `version`: the complete tenant list (JSON tenant documents, the same shape
    /// as a `[[tenant]]` table) that replaces the node's tenants.
    Config {
        /// Config version number.
        version: u64,
        /// Every tenant.
        tenants: Vec<serde_json::Value>,
        /// Only the nodes of these PoPs apply it (a canary rollout); empty: every node.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        only: Vec<String>,
    },
    /// A purge.
    Purge(PurgeOp),
    /// A warm job: edges in `regions` fetch `urls` through their normal path.
    Warm(WarmOp),
}

/// A warm job as accepted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WarmOp {
    /// Job id (`wm_...`).
    pub id: String,
    /// Absolute URLs to fetch.
    pub urls: Vec<String>,
    /// Regions whose edges fetch them (empty: every region).
    pub regions: Vec<String>,
}

/// A purge as the control plane accepted it: its id and what the node's purge path takes
/// (`outpost_proxy::admin::PurgeRequest`, the body of `POST /api/v1/purge` too).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PurgeOp {
    /// Purge id (`pg_...`) the API reports status under.
    pub id: String,
    /// What to remove (or mark stale), for which tenant.
    pub purge: outpost_proxy::admin::PurgeRequest,
}

/// A node's report about one entry (`seq`) or, with `seq == applied` and no error, a heartbeat
/// saying how far it has applied the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// Node name.
    pub node: String,
    /// The entry this is about.
    pub seq: u64,
    /// Every entry up to this one has been handled (applied or refused).
    pub applied: u64,
    /// When the node finished with the entry (ms since the Unix epoch).
    pub at_ms: u64,
    /// Why the node refused it (an invalid config); none: applied.
    pub error: Option<String>,
    /// Progress of a long-running entry (a warm job's `{"done", "failed", "total",
    /// "finished"}`); later reports replace earlier ones.
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
    /// With a heartbeat: what the node served for clients since its last heartbeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollups: Vec<Rollup>,
}

/// One tenant's client-facing traffic on one node over one heartbeat interval.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Rollup {
    /// Tenant name.
    pub tenant: String,
    /// Requests from clients.
    pub requests: u64,
    /// Of those, answered without the origin.
    pub hits: u64,
    /// By status class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub classes: [u64; 6],
    /// Body bytes sent to clients.
    pub bytes_out: u64,
    /// Body bytes received from the node's upstream (the origin, for a node that fetches from it).
    pub upstream_bytes: u64,
    /// Latency histogram as `(bucket, count)` pairs (`outpost_proxy::latency`).
    pub latency: Vec<(usize, u64)>,
    /// Requests this node sent upstream (origin or next tier) for the tenant.
    pub upstream_fetches: u64,
    /// Of those, failures (connection, timeout, 5xx-class errors the node saw).
    pub upstream_errors: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_round_trip_as_json() {
        let e = Entry {
            seq: 7,
            issued_ms: 1,
            op: Op::Purge(PurgeOp {
                id: "pg_1".into(),
                purge: outpost_proxy::admin::PurgeRequest {
                    tags: vec!["a".into()],
                    ..Default::default()
                },
            }),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"type\":\"purge\""), "{text}");
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), e);
        let c = Entry {
            seq: 8,
            issued_ms: 2,
            op: Op::Config {
                version: 3,
                tenants: vec![serde_json::json!({"name": "t"})],
                only: vec!["p1".into()],
            },
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), c);
    }
}
