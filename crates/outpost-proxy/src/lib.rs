//! The edge/shield node: listeners, the per-connection HTTP/1.1 server with its limits (header read
//! timeout, header size), the request driver ([`driver`]), metrics and access logs.
//!
//! [`start`] binds the listeners of a validated [`Config`] and serves until the runtime stops;
//! it returns the bound addresses so tests can use port 0.

pub mod body;
pub mod conn;
pub mod driver;
pub mod fill;
pub mod metrics;
pub mod tenant;

use crate::metrics::Metrics;
use crate::tenant::Tenants;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_config::Config;
use outpost_fill::FillRegistry;
use outpost_store::{CacheKey, HybridStore, MemoryStore, PolicyKind, Store};
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Shared state of a running node.
pub struct Node {
    /// Name in `Cache-Status` and metrics.
    pub name: String,
    /// Tenants by host.
    pub tenants: Tenants,
    /// The object store.
    pub store: Arc<dyn Store>,
    /// Whether the store has an SSD tier (hits that read SSD chunks are only tried then).
    pub has_disk: bool,
    /// In-flight fills.
    pub fills: FillRegistry<CacheKey, driver::FillHead>,
    /// Counters.
    pub metrics: Metrics,
    /// Whether to write JSON access log lines to stdout.
    pub access_log: bool,
    /// This node's `Cache-Status` hit member, pre-rendered.
    pub hit_status: outpost_http::cache_status::HitStatus,
    next_id: AtomicU64,
    log_out: Mutex<std::io::Stdout>,
}

impl Node {
    /// Build a node from a validated config.
    pub fn new(cfg: &Config) -> Result<Self, String> {
        let store = open_store(cfg)?;
        let tenants = Tenants::from_config(cfg);
        let names: Vec<String> = tenants.all().iter().map(|t| t.name.clone()).collect();
        Ok(Node {
            name: cfg.node.name.clone(),
            metrics: Metrics::new(&names),
            tenants,
            has_disk: store.stats_disk().is_some(),
            store,
            fills: FillRegistry::new(),
            access_log: cfg.node.access_log,
            hit_status: outpost_http::cache_status::HitStatus::new(&cfg.node.name),
            next_id: AtomicU64::new(1),
            log_out: Mutex::new(std::io::stdout()),
        })
    }

    /// A fresh request id.
    pub fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Write one access-log line.
    pub fn write_access_log(&self, line: &str) {
        let mut out = self.log_out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
    }

    /// Metrics text.
    pub fn render_metrics(&self) -> String {
        let mut text = self
            .metrics
            .render(&self.name, &self.store.stats(), self.fills.in_flight());
        if let Some(disk) = self.store.stats_disk() {
            text.push_str(&metrics::render_disk(&self.name, &disk));
        }
        text
    }
}

/// The object store a config asks for: RAM only, or RAM + SSD when `store.dir` is set. An SSD
/// directory that cannot be used (missing, unwritable, I/O errors) is logged and the node serves
/// from RAM and origin; one written by a newer on-disk format is refused (never misread).
fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, String> {
    let policy: PolicyKind = cfg.store.policy.parse().unwrap_or_default();
    let cap = cfg.store.ram_bytes.0;
    // Shards of ~128 MiB (power of two, 1..=64): objects up to 1/8 of a shard are storable, so
    // the default 512 MiB keeps 16 MiB objects, and 2-4 shards are plenty for a few cores.
    let shards = ((cap / (128 << 20)).clamp(1, 64) as usize)
        .next_power_of_two()
        .min(64);
    let ram = || Arc::new(MemoryStore::with_shards(cap, policy, shards)) as Arc<dyn Store>;
    if cfg.store.dir.is_empty() {
        return Ok(ram());
    }
    let dir = std::path::Path::new(&cfg.store.dir);
    match HybridStore::open(
        dir,
        cap,
        cfg.store.disk_bytes.0,
        policy,
        cfg.store.segment_bytes.0.min(cfg.store.disk_bytes.0 / 4),
    ) {
        Ok((store, report)) => {
            tracing::info!(dir = %dir.display(), ?report, "SSD tier opened");
            Ok(Arc::new(store))
        }
        Err(e) if e.fallback_to_ram() => {
            tracing::error!(error = %e, "SSD tier unavailable: serving from RAM and origin only");
            Ok(ram())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A started node.
pub struct RunningNode {
    /// Shared state.
    pub node: Arc<Node>,
    /// HTTP listener address.
    pub addr: SocketAddr,
    /// Metrics listener address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
}

/// Bind and serve a node.
///
/// By default (`node.workers = 0`) connections are served on the calling runtime (the binary's
/// work-stealing runtime, one thread per core). With `node.workers = N` each of N threads runs its
/// own single-threaded event loop: the listener hands each accepted connection to the next worker
/// in turn, and the connection is read, answered and closed on that one thread, with no work
/// stealing. That was ~3% cheaper per hit in A/B runs, but when the cores are shared (a load
/// generator on the same machine) a descheduled loop stalls all its connections and the p99 tail
/// was wider (docs/benchmarks.md), so it is opt-in. Shared state (store, fills, metrics) is the
/// same `Node`.
/// Workers stop when the calling runtime does.
pub async fn start(cfg: &Config) -> std::io::Result<RunningNode> {
    let node = Arc::new(Node::new(cfg).map_err(std::io::Error::other)?);
    let listener = TcpListener::bind(&cfg.node.listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", cfg.node.listen),
        )
    })?;
    let addr = listener.local_addr()?;
    let metrics_addr = if cfg.node.metrics.is_empty() {
        None
    } else {
        let ml = TcpListener::bind(&cfg.node.metrics).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", cfg.node.metrics),
            )
        })?;
        let a = ml.local_addr()?;
        tokio::spawn(serve_metrics(ml, node.clone()));
        Some(a)
    };
    let limits = Limits {
        max_header_bytes: cfg.node.max_header_bytes.0 as usize,
    };
    let dog = conn::Watchdog::new(cfg.node.header_read_timeout.0, cfg.node.idle_timeout.0);
    tokio::spawn(dog.clone().run());
    let handles = match cfg.node.workers {
        0 => Vec::new(),
        n => spawn_workers(n)?,
    };
    tokio::spawn(accept_loop(listener, node.clone(), limits, dog, handles));
    Ok(RunningNode {
        node,
        addr,
        metrics_addr,
    })
}

/// Start `n` worker threads, each running a single-threaded runtime until the calling runtime
/// stops (a task of it holds the stop signal), and return handles to spawn connections on them.
fn spawn_workers(n: usize) -> std::io::Result<Vec<tokio::runtime::Handle>> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(rt.handle().clone());
        let mut stop = stop_rx.clone();
        std::thread::Builder::new()
            .name(format!("outpost-w{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    let _ = stop.changed().await;
                })
            })?;
    }
    tokio::spawn(async move {
        let _held = stop_tx;
        std::future::pending::<()>().await
    });
    Ok(handles)
}

#[derive(Clone, Copy)]
struct Limits {
    max_header_bytes: usize,
}

/// Accept connections and serve each one on the next worker (or here, without workers).
async fn accept_loop(
    listener: TcpListener,
    node: Arc<Node>,
    limits: Limits,
    dog: Arc<conn::Watchdog>,
    workers: Vec<tokio::runtime::Handle>,
) {
    let mut next = 0usize;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The stream leaves this runtime's reactor (it is registered again where it is served),
        // and a duplicate handle lets the watchdog shut it down.
        let (stream, closer) = match stream
            .into_std()
            .and_then(|s| s.try_clone().map(|c| (s, c)))
        {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up a connection");
                continue;
            }
        };
        let watch = dog.watch(closer);
        let conn = serve_connection(stream, peer, node.clone(), limits, watch);
        if workers.is_empty() {
            tokio::spawn(conn);
        } else {
            workers[next % workers.len()].spawn(conn);
            next = next.wrapping_add(1);
        }
    }
}

/// One client connection: HTTP/1.1 with keep-alive until the client, an error or the watchdog
/// (header and idle timeouts, conn.rs) ends it.
async fn serve_connection(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    node: Arc<Node>,
    limits: Limits,
    watch: Arc<conn::ConnWatch>,
) {
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, %peer, "cannot register a connection");
            return;
        }
    };
    let ambiguous = Arc::new(AtomicBool::new(false));
    let stream = conn::SniffStream::new(stream, ambiguous.clone(), Some(watch));
    let svc = service_fn(move |req| {
        let node = node.clone();
        let flagged = ambiguous.load(Ordering::Relaxed);
        async move { Ok::<_, Infallible>(driver::handle(node, req, peer, flagged).await) }
    });
    let mut b = http1::Builder::new();
    b.max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    if let Err(e) = b.serve_connection(TokioIo::new(stream), svc).await {
        tracing::debug!(error = %e, %peer, "connection ended with error");
    }
}

async fn serve_metrics(listener: TcpListener, node: Arc<Node>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let node = node.clone();
                async move {
                    let (status, ctype, text) = match req.uri().path() {
                        "/metrics" => (200, "text/plain; version=0.0.4", node.render_metrics()),
                        "/healthz" => (200, "text/plain", "ok\n".to_string()),
                        _ => (404, "text/plain", "not found: try /metrics\n".to_string()),
                    };
                    let mut resp = hyper::Response::new(body::full(bytes::Bytes::from(text)));
                    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(ctype),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
