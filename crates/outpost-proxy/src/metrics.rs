//! Node metrics: lock-free counters indexed by tenant, cache outcome and status class, a latency
//! histogram, origin fetch counts, and store gauges (with the SSD tier's own, see
//! [`render_disk`]), rendered in the Prometheus text format.
//!
//! The counters every request touches are sharded: each thread adds to its own shard (its own
//! cache lines), and rendering sums the shards, so serving threads never contend on a counter.

use outpost_store::{DiskStats, StoreStats};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How a request was answered, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fresh hit.
    Hit,
    /// Stale hit (max-stale or stale-while-revalidate).
    HitStale,
    /// Stale copy served because the origin failed.
    StaleOnError,
    /// Revalidated with the origin (304) and served from cache.
    Revalidated,
    /// Fetched from the origin and stored.
    Miss,
    /// Joined another request's fill.
    Collapsed,
    /// Forwarded without caching (uncacheable, bypass rule, method).
    Pass,
    /// The node generated an error (origin failure, only-if-cached miss).
    Error,
    /// Rejected before any cache work (bad request, unknown host).
    Rejected,
}

impl Outcome {
    /// All outcomes, in index order.
    pub const ALL: [Outcome; 9] = [
        Outcome::Hit,
        Outcome::HitStale,
        Outcome::StaleOnError,
        Outcome::Revalidated,
        Outcome::Miss,
        Outcome::Collapsed,
        Outcome::Pass,
        Outcome::Error,
        Outcome::Rejected,
    ];

    /// Label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::HitStale => "hit-stale",
            Outcome::StaleOnError => "stale-on-error",
            Outcome::Revalidated => "revalidated",
            Outcome::Miss => "miss",
            Outcome::Collapsed => "collapsed",
            Outcome::Pass => "pass",
            Outcome::Error => "error",
            Outcome::Rejected => "rejected",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Name, help text and reader of one per-tenant counter.
type CounterDef = (&'static str, &'static str, fn(&TenantCounters) -> u64);

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

struct TenantCounters {
    name: String,
    origin_fetches: AtomicU64,
    origin_errors: AtomicU64,
    origin_bytes_in: AtomicU64,
}

impl TenantCounters {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            origin_fetches: AtomicU64::new(0),
            origin_errors: AtomicU64::new(0),
            origin_bytes_in: AtomicU64::new(0),
        }
    }
}

/// Per-request counters of one shard: requests by (tenant, outcome, status class), then bytes out
/// by tenant, then the latency buckets, their sum and their count, in one allocation padded with
/// 128 bytes at its end, so a shard's busy cells never share a cache line with the next one's.
struct Shard {
    cells: Box<[AtomicU64]>,
}

/// Requests per tenant in a shard (outcomes × status classes).
const PER_TENANT: usize = Outcome::ALL.len() * CLASSES.len();
/// Latency cells: one per bucket plus +Inf, then sum, then count.
const LATENCY_CELLS: usize = LATENCY_BUCKETS_US.len() + 3;
/// Shards (a power of two; threads beyond it share).
const SHARDS: usize = 16;

/// The shard of the calling thread.
fn shard_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// All counters of a node. Tenant index `n` (one past the last tenant) counts unknown hosts.
pub struct Metrics {
    tenants: Vec<TenantCounters>,
    shards: Vec<Shard>,
    collapsed_waiters: AtomicU64,
    revalidations: AtomicU64,
}

impl Metrics {
    /// Counters for these tenant names (plus one slot for requests matching no tenant).
    pub fn new(tenant_names: &[String]) -> Self {
        let mut tenants: Vec<TenantCounters> = tenant_names
            .iter()
            .map(|n| TenantCounters::new(n))
            .collect();
        tenants.push(TenantCounters::new("_none"));
        // Whole 128-byte pairs of lines per shard (16 counters), so neighbours never share one.
        let cells = (tenants.len() * (PER_TENANT + 1) + LATENCY_CELLS).div_ceil(16) * 16 + 16;
        let shards = (0..SHARDS)
            .map(|_| Shard {
                cells: (0..cells).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        Self {
            tenants,
            shards,
            collapsed_waiters: AtomicU64::new(0),
            revalidations: AtomicU64::new(0),
        }
    }

    fn tenant_index(&self, idx: Option<usize>) -> usize {
        let last = self.tenants.len() - 1;
        idx.unwrap_or(last).min(last)
    }

    fn tenant(&self, idx: Option<usize>) -> &TenantCounters {
        &self.tenants[self.tenant_index(idx)]
    }

    /// Offsets of a shard's cells.
    fn bytes_cell(&self, tenant: usize) -> usize {
        self.tenants.len() * PER_TENANT + tenant
    }
    fn latency_cell(&self, i: usize) -> usize {
        self.tenants.len() * (PER_TENANT + 1) + i
    }

    /// A cell summed over the shards.
    fn sum(&self, cell: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.cells[cell].load(Relaxed))
            .sum()
    }

    /// Count one finished request.
    pub fn record(
        &self,
        tenant: Option<usize>,
        outcome: Outcome,
        status: u16,
        bytes_out: u64,
        micros: u64,
    ) {
        let t = self.tenant_index(tenant);
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        let b = LATENCY_BUCKETS_US
            .iter()
            .position(|&le| micros <= le)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        let cells = &self.shards[shard_index()].cells;
        cells[t * PER_TENANT + outcome.index() * CLASSES.len() + class].fetch_add(1, Relaxed);
        cells[self.bytes_cell(t)].fetch_add(bytes_out, Relaxed);
        cells[self.latency_cell(b)].fetch_add(1, Relaxed);
        cells[self.latency_cell(LATENCY_BUCKETS_US.len() + 1)].fetch_add(micros, Relaxed);
        cells[self.latency_cell(LATENCY_BUCKETS_US.len() + 2)].fetch_add(1, Relaxed);
    }

    /// Count an origin fetch (and whether it failed).
    pub fn origin_fetch(&self, tenant: usize, failed: bool) {
        let t = self.tenant(Some(tenant));
        t.origin_fetches.fetch_add(1, Relaxed);
        if failed {
            t.origin_errors.fetch_add(1, Relaxed);
        }
    }

    /// Count body bytes received from an origin.
    pub fn origin_bytes(&self, tenant: usize, n: u64) {
        self.tenant(Some(tenant))
            .origin_bytes_in
            .fetch_add(n, Relaxed);
    }

    /// Count a request that waited on another's fill.
    pub fn collapsed(&self) {
        self.collapsed_waiters.fetch_add(1, Relaxed);
    }

    /// Count a background or foreground revalidation.
    pub fn revalidation(&self) {
        self.revalidations.fetch_add(1, Relaxed);
    }

    /// Render everything in the Prometheus text exposition format.
    pub fn render(&self, node: &str, store: &StoreStats, fills_in_flight: usize) -> String {
        let mut s = String::with_capacity(8192);
        let _ = writeln!(s, "# HELP outpost_requests_total Requests answered, by tenant, cache outcome and status class.");
        let _ = writeln!(s, "# TYPE outpost_requests_total counter");
        for (ti, t) in self.tenants.iter().enumerate() {
            for o in Outcome::ALL {
                for (ci, c) in CLASSES.iter().enumerate() {
                    let v = self.sum(ti * PER_TENANT + o.index() * CLASSES.len() + ci);
                    if v > 0 {
                        let _ = writeln!(
                            s,
                            "outpost_requests_total{{node=\"{node}\",tenant=\"{}\",outcome=\"{}\",status=\"{c}\"}} {v}",
                            t.name,
                            o.as_str()
                        );
                    }
                }
            }
        }
        let _ = writeln!(
            s,
            "# HELP outpost_response_bytes_total Body bytes sent to clients.\n# TYPE outpost_response_bytes_total counter"
        );
        for (ti, t) in self.tenants.iter().enumerate() {
            let _ = writeln!(
                s,
                "outpost_response_bytes_total{{node=\"{node}\",tenant=\"{}\"}} {}",
                t.name,
                self.sum(self.bytes_cell(ti))
            );
        }
        let per_tenant: [CounterDef; 3] = [
            (
                "outpost_origin_fetches_total",
                "Requests sent to origins.",
                |t| t.origin_fetches.load(Relaxed),
            ),
            (
                "outpost_origin_errors_total",
                "Origin requests that failed (refused, timeout, protocol).",
                |t| t.origin_errors.load(Relaxed),
            ),
            (
                "outpost_origin_bytes_total",
                "Body bytes received from origins.",
                |t| t.origin_bytes_in.load(Relaxed),
            ),
        ];
        for (name, help, get) in per_tenant {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for t in &self.tenants {
                let _ = writeln!(
                    s,
                    "{name}{{node=\"{node}\",tenant=\"{}\"}} {}",
                    t.name,
                    get(t)
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP outpost_request_duration_seconds Time from request head to response head."
        );
        let _ = writeln!(s, "# TYPE outpost_request_duration_seconds histogram");
        let mut cum = 0;
        for (i, le) in LATENCY_BUCKETS_US.iter().enumerate() {
            cum += self.sum(self.latency_cell(i));
            let _ = writeln!(
                s,
                "outpost_request_duration_seconds_bucket{{node=\"{node}\",le=\"{}\"}} {cum}",
                *le as f64 / 1e6
            );
        }
        cum += self.sum(self.latency_cell(LATENCY_BUCKETS_US.len()));
        let _ = writeln!(
            s,
            "outpost_request_duration_seconds_bucket{{node=\"{node}\",le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            s,
            "outpost_request_duration_seconds_sum{{node=\"{node}\"}} {}",
            self.sum(self.latency_cell(LATENCY_BUCKETS_US.len() + 1)) as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "outpost_request_duration_seconds_count{{node=\"{node}\"}} {}",
            self.sum(self.latency_cell(LATENCY_BUCKETS_US.len() + 2))
        );
        let counters: [(&str, &str, u64); 6] = [
            (
                "outpost_collapsed_waiters_total",
                "Requests that joined another request's origin fetch.",
                self.collapsed_waiters.load(Relaxed),
            ),
            (
                "outpost_revalidations_total",
                "Conditional revalidations sent to origins.",
                self.revalidations.load(Relaxed),
            ),
            (
                "outpost_store_evictions_total",
                "Objects evicted by the admission/eviction policy.",
                store.evictions,
            ),
            (
                "outpost_store_rejected_total",
                "Objects refused by the admission policy.",
                store.rejected,
            ),
            (
                "outpost_store_hits_total",
                "Store lookups that found an object.",
                store.hits,
            ),
            (
                "outpost_store_misses_total",
                "Store lookups that found nothing.",
                store.misses,
            ),
        ];
        write_singles(&mut s, "counter", node, &counters);
        let gauges: [(&str, &str, u64); 4] = [
            (
                "outpost_store_bytes",
                "Bytes held by the store.",
                store.bytes,
            ),
            (
                "outpost_store_capacity_bytes",
                "Store byte budget.",
                store.capacity_bytes,
            ),
            (
                "outpost_store_objects",
                "Objects held by the store.",
                store.objects,
            ),
            (
                "outpost_fills_in_flight",
                "Origin fills in progress.",
                fills_in_flight as u64,
            ),
        ];
        write_singles(&mut s, "gauge", node, &gauges);
        s
    }
}

/// Writes one-sample metric families (`kind` is `counter` or `gauge`) labelled with the node.
fn write_singles(s: &mut String, kind: &str, node: &str, rows: &[(&str, &str, u64)]) {
    for (name, help, v) in rows {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {v}"
        );
    }
}

/// The SSD tier's gauges and counters in the Prometheus text format.
pub fn render_disk(node: &str, d: &DiskStats) -> String {
    let mut s = String::with_capacity(2048);
    let gauges: [(&str, &str, u64); 4] = [
        ("outpost_disk_objects", "Objects indexed on SSD.", d.objects),
        (
            "outpost_disk_live_bytes",
            "Bytes of indexed SSD records.",
            d.live_bytes,
        ),
        (
            "outpost_disk_used_bytes",
            "Bytes of SSD segment files.",
            d.used_bytes,
        ),
        (
            "outpost_disk_capacity_bytes",
            "SSD byte budget.",
            d.capacity_bytes,
        ),
    ];
    write_singles(&mut s, "gauge", node, &gauges);
    let counters: [(&str, &str, u64); 11] = [
        (
            "outpost_disk_hits_total",
            "SSD reads that returned an object.",
            d.hits,
        ),
        (
            "outpost_disk_misses_total",
            "SSD lookups that returned nothing.",
            d.misses,
        ),
        (
            "outpost_disk_checksum_failures_total",
            "SSD reads that failed verification (served as misses).",
            d.checksum_failures,
        ),
        (
            "outpost_disk_retired_segments_total",
            "SSD segments retired after a checksum failure or read error.",
            d.retired_segments,
        ),
        (
            "outpost_disk_io_errors_total",
            "SSD I/O errors.",
            d.io_errors,
        ),
        (
            "outpost_disk_reclaimed_segments_total",
            "SSD segments reclaimed to stay within the budget.",
            d.reclaimed_segments,
        ),
        (
            "outpost_disk_stream_fills_total",
            "Fills streamed onto SSD as they arrived.",
            d.stream_fills,
        ),
        (
            "outpost_disk_stream_commits_total",
            "Streamed fills committed.",
            d.stream_commits,
        ),
        (
            "outpost_disk_stream_aborts_total",
            "Streamed fills that ended before their body was whole.",
            d.stream_aborts,
        ),
        (
            "outpost_disk_stream_dropped_total",
            "Streamed fills written whole but not indexed (purged meanwhile, segment gone).",
            d.stream_dropped,
        ),
        (
            "outpost_disk_stream_follower_bytes_total",
            "Bytes clients read from fills while they were written to SSD.",
            d.stream_tap_bytes,
        ),
    ];
    write_singles(&mut s, "counter", node, &counters);
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn renders_counts() {
        let m = Metrics::new(&["shop".to_string()]);
        m.record(Some(0), Outcome::Hit, 200, 10, 50);
        m.record(Some(0), Outcome::Hit, 200, 10, 50);
        m.record(None, Outcome::Rejected, 421, 0, 5);
        let text = m.render("edge1", &StoreStats::default(), 0);
        assert!(text.contains(
            "outpost_requests_total{node=\"edge1\",tenant=\"shop\",outcome=\"hit\",status=\"2xx\"} 2"
        ));
        assert!(text.contains("tenant=\"_none\",outcome=\"rejected\",status=\"4xx\"} 1"));
        assert!(text.contains("outpost_request_duration_seconds_count{node=\"edge1\"} 3"));
    }
}
