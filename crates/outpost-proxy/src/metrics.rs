//! Node metrics: lock-free counters by tenant *name* ([`TenantStats`], so a new config snapshot
//! never renumbers them), cache outcome and status class, a latency histogram, origin fetch
//! counts, purges, and store gauges (with the SSD tier's own, see [`render_disk`]), rendered in
//! the Prometheus text format with label values escaped ([`label`]).
//!
//! The counters every request touches are sharded: each thread adds to its own shard (its own
//! cache lines), and rendering sums the shards, so serving threads never contend on a counter.

use outpost_store::{DiskStats, StoreStats};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

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
    /// Forwarded to the key's owner box in the PoP and relayed (not stored here).
    Forwarded,
}

impl Outcome {
    /// All outcomes, in index order.
    pub const ALL: [Outcome; 10] = [
        Outcome::Hit,
        Outcome::HitStale,
        Outcome::StaleOnError,
        Outcome::Revalidated,
        Outcome::Miss,
        Outcome::Collapsed,
        Outcome::Pass,
        Outcome::Error,
        Outcome::Rejected,
        Outcome::Forwarded,
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
            Outcome::Forwarded => "forwarded",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Answered from this node's cache (fresh, stale, revalidated, or a fill it joined).
    pub fn is_cache_hit(self) -> bool {
        matches!(
            self,
            Outcome::Hit
                | Outcome::HitStale
                | Outcome::StaleOnError
                | Outcome::Revalidated
                | Outcome::Collapsed
        )
    }
}

/// Name, help text and reader of one per-tenant counter.
type CounterDef = (&'static str, &'static str, fn(&TenantStats) -> u64);

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// Requests per tenant in a shard (outcomes × status classes), then bytes out.
const PER_TENANT: usize = Outcome::ALL.len() * CLASSES.len();
const BYTES_CELL: usize = PER_TENANT;
/// Cells of one tenant shard, rounded up to whole 128-byte pairs of lines (16 counters) so
/// neighbouring shards never share one.
const TENANT_SHARD_CELLS: usize = (PER_TENANT + 1).div_ceil(16) * 16;
/// Latency cells: one per bucket plus +Inf, then sum, then count, padded the same way.
const LATENCY_CELLS: usize = LATENCY_BUCKETS_US.len() + 3;
const LATENCY_SHARD_CELLS: usize = LATENCY_CELLS.div_ceil(16) * 16;
/// Shards (a power of two; threads beyond it share).
const SHARDS: usize = 16;
/// Analytics cells of a tenant shard: what requests from other tiers added to the `requests`
/// cells (subtracted to get the clients' share), client requests answered by another tier's
/// cache, then the clients' latency histogram. A client hit touches only its histogram cell.
const INTERNAL_REQUESTS: usize = 0;
const INTERNAL_HITS: usize = 1;
const INTERNAL_CLASSES: usize = 2;
const INTERNAL_BYTES: usize = INTERNAL_CLASSES + CLASSES.len();
const CLIENT_UPSTREAM_HITS: usize = INTERNAL_BYTES + 1;
const CLIENT_HIST: usize = CLIENT_UPSTREAM_HITS + 1;
const CLIENT_SHARD_CELLS: usize = (CLIENT_HIST + crate::latency::BUCKETS).div_ceil(16) * 16;

/// Who a finished request was for, for analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facing {
    /// A client; `upstream_hit`: a miss or forward here that another tier answered from cache.
    Client {
        /// Answered from another tier's cache.
        upstream_hit: bool,
    },
    /// Another tier of this CDN (counted where the client was faced).
    Internal,
}

/// A tenant's client-facing totals since the node started (the agent sends differences).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTotals {
    /// Tenant name.
    pub tenant: String,
    /// Requests from clients.
    pub requests: u64,
    /// Of those, answered without the origin (from this node's cache or another tier's).
    pub hits: u64,
    /// By status class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub classes: [u64; 6],
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Body bytes this node received from its upstream for the tenant.
    pub upstream_bytes: u64,
    /// Requests sent upstream for the tenant.
    pub upstream_fetches: u64,
    /// Of those, failures.
    pub upstream_errors: u64,
    /// Latency histogram (bucket counts, `latency.rs`).
    pub latency: Vec<u64>,
}

/// The shard of the calling thread.
fn shard_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// Counters in `SHARDS` per-thread shards of `width` cells each (one allocation).
struct Sharded {
    cells: Box<[AtomicU64]>,
    width: usize,
}

impl Sharded {
    fn new(width: usize) -> Self {
        Self {
            cells: (0..width * SHARDS).map(|_| AtomicU64::new(0)).collect(),
            width,
        }
    }

    /// The calling thread's cells.
    fn at(&self, shard: usize) -> &[AtomicU64] {
        let i = shard * self.width;
        &self.cells[i..i + self.width]
    }

    /// A cell summed over the shards.
    fn sum(&self, cell: usize) -> u64 {
        (0..SHARDS)
            .map(|s| self.cells[s * self.width + cell].load(Relaxed))
            .sum()
    }
}

/// One tenant's counters, found by name: a config snapshot that renames, adds or reorders
/// tenants keeps every counter where it was. They live as long as the process (Prometheus
/// counters never go backwards, and a tenant that comes back finds its counts): the registry
/// hands out `&'static` references, so a request counts itself without touching a shared
/// reference count.
pub struct TenantStats {
    name: String,
    requests: Sharded,
    /// Client-facing requests only (not those from other tiers of the CDN), for the control
    /// plane's analytics: [`CLIENT_REQUESTS`], [`CLIENT_HITS`], status classes, bytes out,
    /// then the latency histogram (`latency.rs`).
    client: Sharded,
    origin_fetches: AtomicU64,
    origin_errors: AtomicU64,
    origin_bytes_in: AtomicU64,
}

impl TenantStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            requests: Sharded::new(TENANT_SHARD_CELLS),
            client: Sharded::new(CLIENT_SHARD_CELLS),
            origin_fetches: AtomicU64::new(0),
            origin_errors: AtomicU64::new(0),
            origin_bytes_in: AtomicU64::new(0),
        }
    }

    /// The tenant name these counters are labelled with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Count an origin fetch (and whether it failed).
    pub fn origin_fetch(&self, failed: bool) {
        self.origin_fetches.fetch_add(1, Relaxed);
        if failed {
            self.origin_errors.fetch_add(1, Relaxed);
        }
    }

    /// Count body bytes received from an origin.
    pub fn origin_bytes(&self, n: u64) {
        self.origin_bytes_in.fetch_add(n, Relaxed);
    }
}

/// All counters of a node. Requests that match no tenant are counted under `_none`.
pub struct Metrics {
    tenants: Mutex<HashMap<String, &'static TenantStats>>,
    unknown: &'static TenantStats,
    latency: Sharded,
    collapsed_waiters: AtomicU64,
    revalidations: AtomicU64,
    purges: AtomicU64,
    purged_objects: AtomicU64,
    config_version: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            tenants: Mutex::new(HashMap::new()),
            unknown: Box::leak(Box::new(TenantStats::new("_none"))),
            latency: Sharded::new(LATENCY_SHARD_CELLS),
            collapsed_waiters: AtomicU64::new(0),
            revalidations: AtomicU64::new(0),
            purges: AtomicU64::new(0),
            purged_objects: AtomicU64::new(0),
            config_version: AtomicU64::new(0),
        }
    }

    /// The counters of the tenant called `name` (created on first use, then the same ones for
    /// every later config snapshot).
    pub fn tenant(&self, name: &str) -> &'static TenantStats {
        let mut map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| Box::leak(Box::new(TenantStats::new(name))))
    }

    /// Count one finished request (`tenant` is `None` when no tenant matched), and for the
    /// control plane's analytics whether it faced a client.
    pub fn record(
        &self,
        tenant: Option<&TenantStats>,
        outcome: Outcome,
        status: u16,
        bytes_out: u64,
        micros: u64,
        facing: Facing,
    ) {
        let t = tenant.unwrap_or(self.unknown);
        let shard = shard_index();
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
        let cells = t.requests.at(shard);
        cells[outcome.index() * CLASSES.len() + class].fetch_add(1, Relaxed);
        cells[BYTES_CELL].fetch_add(bytes_out, Relaxed);
        let lat = self.latency.at(shard);
        lat[b].fetch_add(1, Relaxed);
        lat[LATENCY_BUCKETS_US.len() + 1].fetch_add(micros, Relaxed);
        lat[LATENCY_BUCKETS_US.len() + 2].fetch_add(1, Relaxed);
        let ext = t.client.at(shard);
        match facing {
            Facing::Client { upstream_hit } => {
                ext[CLIENT_HIST + crate::latency::bucket(micros)].fetch_add(1, Relaxed);
                if upstream_hit {
                    ext[CLIENT_UPSTREAM_HITS].fetch_add(1, Relaxed);
                }
            }
            Facing::Internal => {
                ext[INTERNAL_REQUESTS].fetch_add(1, Relaxed);
                if outcome.is_cache_hit() {
                    ext[INTERNAL_HITS].fetch_add(1, Relaxed);
                }
                ext[INTERNAL_CLASSES + class].fetch_add(1, Relaxed);
                ext[INTERNAL_BYTES].fetch_add(bytes_out, Relaxed);
            }
        }
    }

    /// Every tenant's client-facing totals.
    pub fn client_totals(&self) -> Vec<ClientTotals> {
        self.all_tenants()
            .into_iter()
            .filter(|t| t.name != "_none")
            .map(|t| {
                // Everything counted, less what other tiers asked for.
                let (r, c) = (&t.requests, &t.client);
                let mut classes = [0u64; 6];
                let (mut requests, mut hits) = (0u64, 0u64);
                for o in Outcome::ALL {
                    for (ci, v) in classes.iter_mut().enumerate() {
                        let n = r.sum(o.index() * CLASSES.len() + ci);
                        *v += n;
                        requests += n;
                        if o.is_cache_hit() {
                            hits += n;
                        }
                    }
                }
                for (ci, v) in classes.iter_mut().enumerate() {
                    *v = v.saturating_sub(c.sum(INTERNAL_CLASSES + ci));
                }
                ClientTotals {
                    tenant: t.name.clone(),
                    requests: requests.saturating_sub(c.sum(INTERNAL_REQUESTS)),
                    hits: (hits + c.sum(CLIENT_UPSTREAM_HITS)).saturating_sub(c.sum(INTERNAL_HITS)),
                    classes,
                    bytes_out: r.sum(BYTES_CELL).saturating_sub(c.sum(INTERNAL_BYTES)),
                    upstream_bytes: t.origin_bytes_in.load(Relaxed),
                    upstream_fetches: t.origin_fetches.load(Relaxed),
                    upstream_errors: t.origin_errors.load(Relaxed),
                    latency: (0..crate::latency::BUCKETS)
                        .map(|i| c.sum(CLIENT_HIST + i))
                        .collect(),
                }
            })
            .collect()
    }

    /// Count a request that waited on another's fill.
    pub fn collapsed(&self) {
        self.collapsed_waiters.fetch_add(1, Relaxed);
    }

    /// Count a background or foreground revalidation.
    pub fn revalidation(&self) {
        self.revalidations.fetch_add(1, Relaxed);
    }

    /// Count one purge and the objects it removed.
    pub fn purged(&self, objects: u64) {
        self.purges.fetch_add(1, Relaxed);
        self.purged_objects.fetch_add(objects, Relaxed);
    }

    /// The config version now in force.
    pub fn set_config_version(&self, v: u64) {
        self.config_version.store(v, Relaxed);
    }

    /// Every tenant's counters, sorted by name, then `_none`.
    fn all_tenants(&self) -> Vec<&'static TenantStats> {
        let map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<&'static TenantStats> = map.values().copied().collect();
        drop(map);
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.push(self.unknown);
        v
    }

    /// Render everything in the Prometheus text exposition format.
    pub fn render(&self, node: &str, store: &StoreStats, fills_in_flight: usize) -> String {
        let mut s = String::with_capacity(8192);
        let node = label(node);
        let tenants = self.all_tenants();
        let _ = writeln!(s, "# HELP outpost_requests_total Requests answered, by tenant, cache outcome and status class.");
        let _ = writeln!(s, "# TYPE outpost_requests_total counter");
        for t in &tenants {
            let tname = label(&t.name);
            for o in Outcome::ALL {
                for (ci, c) in CLASSES.iter().enumerate() {
                    let v = t.requests.sum(o.index() * CLASSES.len() + ci);
                    if v > 0 {
                        let _ = writeln!(
                            s,
                            "outpost_requests_total{{node=\"{node}\",tenant=\"{tname}\",outcome=\"{}\",status=\"{c}\"}} {v}",
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
        for t in &tenants {
            let _ = writeln!(
                s,
                "outpost_response_bytes_total{{node=\"{node}\",tenant=\"{}\"}} {}",
                label(&t.name),
                t.requests.sum(BYTES_CELL)
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
            for t in &tenants {
                let _ = writeln!(
                    s,
                    "{name}{{node=\"{node}\",tenant=\"{}\"}} {}",
                    label(&t.name),
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
            cum += self.latency.sum(i);
            let _ = writeln!(
                s,
                "outpost_request_duration_seconds_bucket{{node=\"{node}\",le=\"{}\"}} {cum}",
                *le as f64 / 1e6
            );
        }
        cum += self.latency.sum(LATENCY_BUCKETS_US.len());
        let _ = writeln!(
            s,
            "outpost_request_duration_seconds_bucket{{node=\"{node}\",le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            s,
            "outpost_request_duration_seconds_sum{{node=\"{node}\"}} {}",
            self.latency.sum(LATENCY_BUCKETS_US.len() + 1) as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "outpost_request_duration_seconds_count{{node=\"{node}\"}} {}",
            self.latency.sum(LATENCY_BUCKETS_US.len() + 2)
        );
        let counters: [(&str, &str, u64); 8] = [
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
                "outpost_purges_total",
                "Purges applied (URL, prefix, tag, tenant).",
                self.purges.load(Relaxed),
            ),
            (
                "outpost_purged_objects_total",
                "Objects removed by purges.",
                self.purged_objects.load(Relaxed),
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
        write_singles(&mut s, "counter", &node, &counters);
        let gauges: [(&str, &str, u64); 5] = [
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
            (
                "outpost_config_version",
                "Version of the config snapshot in force.",
                self.config_version.load(Relaxed),
            ),
        ];
        write_singles(&mut s, "gauge", &node, &gauges);
        s
    }
}

/// A Prometheus label value with `\`, `"` and newlines escaped (text format 0.0.4).
pub fn label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
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
    let gauges: [(&str, &str, u64); 5] = [
        ("outpost_disk_objects", "Objects indexed on SSD.", d.objects),
        (
            "outpost_disk_admit_every_fill",
            "1 while the SSD admission admits every fill (s3-tinylfu's shadows chose recency), 0 while fills contest the next victims by frequency.",
            u64::from(d.admit_every_fill),
        ),
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
    let counters: [(&str, &str, u64); 12] = [
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
        (
            "outpost_disk_admission_switches_total",
            "Times s3-tinylfu's shadows switched the SSD admission between every fill and the frequency contest.",
            d.admission_switches,
        ),
    ];
    write_singles(&mut s, "counter", node, &counters);
    let io: [(&str, &str, u64); 5] = [
        (
            "outpost_disk_fast_reads_total",
            "SSD reads served from the page cache on the worker thread (RWF_NOWAIT).",
            d.fast_reads,
        ),
        (
            "outpost_disk_queued_reads_total",
            "SSD reads handed to the ssd-read threads (would have waited for the device).",
            d.queued_reads,
        ),
        (
            "outpost_disk_read_queue_full_total",
            "SSD lookups answered as misses because the read queue was full.",
            d.read_queue_full,
        ),
        (
            "outpost_disk_append_queue_full_total",
            "SSD inserts refused because the append queue was full.",
            d.append_queue_full,
        ),
        (
            "outpost_disk_reappended_total",
            "Hot SSD records moved out of a segment before it was reclaimed.",
            d.reappended,
        ),
    ];
    write_singles(&mut s, "counter", node, &io);
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const CLIENT: Facing = Facing::Client {
        upstream_hit: false,
    };

    #[test]
    fn renders_the_ssd_read_paths() {
        let d = DiskStats {
            fast_reads: 7,
            queued_reads: 3,
            read_queue_full: 1,
            ..DiskStats::default()
        };
        let text = render_disk("edge1", &d);
        assert!(text.contains("outpost_disk_fast_reads_total{node=\"edge1\"} 7"));
        assert!(text.contains("outpost_disk_queued_reads_total{node=\"edge1\"} 3"));
        assert!(text.contains("outpost_disk_read_queue_full_total{node=\"edge1\"} 1"));
        assert!(text.contains("# TYPE outpost_disk_fast_reads_total counter"));
    }

    #[test]
    fn renders_counts() {
        let m = Metrics::new();
        let shop = m.tenant("shop");
        m.record(Some(shop), Outcome::Hit, 200, 10, 50, CLIENT);
        m.record(Some(m.tenant("shop")), Outcome::Hit, 200, 10, 50, CLIENT);
        m.record(None, Outcome::Rejected, 421, 0, 5, CLIENT);
        let text = m.render("edge1", &StoreStats::default(), 0);
        assert!(text.contains(
            "outpost_requests_total{node=\"edge1\",tenant=\"shop\",outcome=\"hit\",status=\"2xx\"} 2"
        ));
        assert!(text.contains("tenant=\"_none\",outcome=\"rejected\",status=\"4xx\"} 1"));
        assert!(text.contains("outpost_request_duration_seconds_count{node=\"edge1\"} 3"));
    }

    #[test]
    fn counters_follow_names_not_positions() {
        let m = Metrics::new();
        let a = m.tenant("a");
        m.record(Some(a), Outcome::Miss, 200, 1, 1, CLIENT);
        // A new snapshot adds "0first" before "a": "a" keeps its count.
        let first = m.tenant("0first");
        m.record(Some(first), Outcome::Hit, 200, 1, 1, CLIENT);
        m.record(Some(m.tenant("a")), Outcome::Miss, 200, 1, 1, CLIENT);
        let text = m.render("n", &StoreStats::default(), 0);
        assert!(
            text.contains("tenant=\"a\",outcome=\"miss\",status=\"2xx\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tenant=\"0first\",outcome=\"hit\",status=\"2xx\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("plain"), "plain");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let m = Metrics::new();
        m.record(Some(m.tenant("we\"ird")), Outcome::Hit, 200, 1, 1, CLIENT);
        let text = m.render("node\"x", &StoreStats::default(), 0);
        assert!(
            text.contains("node=\"node\\\"x\",tenant=\"we\\\"ird\""),
            "{text}"
        );
    }

    #[test]
    fn client_totals_leave_out_what_other_tiers_asked_for() {
        let m = Metrics::new();
        let t = m.tenant("shop");
        m.record(Some(t), Outcome::Hit, 200, 10, 50, CLIENT);
        m.record(Some(t), Outcome::Miss, 200, 10, 900, CLIENT);
        m.record(
            Some(t),
            Outcome::Forwarded,
            200,
            10,
            300,
            Facing::Client { upstream_hit: true },
        );
        m.record(Some(t), Outcome::Hit, 200, 10, 40, Facing::Internal);
        m.record(Some(t), Outcome::Miss, 502, 0, 40, Facing::Internal);
        let c = &m.client_totals()[0];
        assert_eq!((c.requests, c.hits, c.bytes_out), (3, 2, 30));
        assert_eq!(c.classes, [0, 3, 0, 0, 0, 0]);
        assert_eq!(c.latency.iter().sum::<u64>(), 3, "client latencies only");
    }
}
