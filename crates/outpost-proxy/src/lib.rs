//! The edge/shield node: listeners, the per-connection HTTP/1.1 server with its limits (header read
//! timeout, header size, one descriptor per connection), the request path ([`request::handle`]
//! and the modules it reads through), the admin listener (metrics, health, purge), and draining
//! on shutdown.
//!
//! [`start`] binds the listeners of a validated [`Config`] and serves until the runtime stops or
//! [`RunningNode::drain`] is called; it returns the bound addresses so tests can use port 0.

pub mod acme;
pub mod admin;
pub mod admit;
pub mod body;
pub mod conn;
pub mod early;
pub mod edge_purge;
pub mod error;
pub mod fill;
pub mod fill_head;
pub mod fill_stream;
pub mod filters;
pub mod flow;
pub mod hop;
pub mod key;
pub mod latency;
pub mod log;
pub mod log_position;
pub mod metrics;
pub mod node;
pub mod objects;
pub mod owner;
pub mod pass;
pub mod purge;
pub mod purge_log;
pub mod request;
pub mod respond;
pub mod soft_purge;
pub mod tenant;
pub mod throttle;
pub mod tier;
pub mod tls;

pub use node::{ConfigSnapshot, Node, NodeOptions};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_config::Config;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A started node.
pub struct RunningNode {
    /// Shared state.
    pub node: Arc<Node>,
    /// HTTP listener address.
    pub addr: SocketAddr,
    /// Admin (metrics, health, purge) listener address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The HTTPS listener's address, when `node.tls_listen` is set.
    pub tls_addr: Option<SocketAddr>,
    dog: Arc<conn::Watchdog>,
    stop_accepting: watch::Sender<bool>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Time taken.
    pub elapsed: Duration,
    /// Connections still open at the end (0 unless the deadline passed).
    pub connections_left: usize,
    /// Fills still running at the end (0 unless the deadline passed).
    pub fills_left: usize,
}

impl DrainReport {
    /// Whether everything in flight finished before the deadline.
    pub fn complete(&self) -> bool {
        self.connections_left == 0 && self.fills_left == 0
    }
}

impl RunningNode {
    /// Drain: stop accepting, let every connection finish the request in flight (new requests
    /// on kept-alive connections are not read) and every fill complete, up to `deadline`.
    pub async fn drain(&self, deadline: Duration) -> DrainReport {
        let started = Instant::now();
        self.node.draining.store(true, Ordering::Relaxed);
        let _ = self.stop_accepting.send(true);
        self.dog.drain();
        tracing::info!(
            connections = self.dog.live(),
            fills = self.node.fills.in_flight(),
            deadline_secs = deadline.as_secs_f64(),
            "draining: no new connections; finishing responses and fills in flight"
        );
        loop {
            let (conns, fills) = (self.dog.live(), self.node.fills.in_flight());
            if (conns == 0 && fills == 0) || started.elapsed() >= deadline {
                let report = DrainReport {
                    elapsed: started.elapsed(),
                    connections_left: conns,
                    fills_left: fills,
                };
                if report.complete() {
                    tracing::info!(elapsed_ms = report.elapsed.as_millis() as u64, "drained");
                } else {
                    tracing::warn!(
                        connections = conns,
                        fills = fills,
                        "drain deadline passed; exiting with work in flight"
                    );
                }
                return report;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Bind and serve a node with the default options (system clock, no filters).
pub async fn start(cfg: &Config) -> std::io::Result<RunningNode> {
    start_with(cfg, NodeOptions::default()).await
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
/// same `Node`. Workers stop when the calling runtime does.
pub async fn start_with(cfg: &Config, opts: NodeOptions) -> std::io::Result<RunningNode> {
    let node = Arc::new(Node::new(cfg, opts).map_err(std::io::Error::other)?);
    let listener = bind(&cfg.node.listen).await?;
    let addr = listener.local_addr()?;
    let metrics_addr = if cfg.node.metrics.is_empty() {
        None
    } else {
        let ml = bind(&cfg.node.metrics).await?;
        let a = ml.local_addr()?;
        tokio::spawn(admin::serve(ml, node.clone()));
        Some(a)
    };
    let limits = Limits {
        max_header_bytes: cfg.node.max_header_bytes.0 as usize,
    };
    let dog = conn::Watchdog::new(cfg.node.header_read_timeout.0, cfg.node.idle_timeout.0);
    tokio::spawn(dog.clone().run());
    let workers = match cfg.node.workers {
        0 => Vec::new(),
        n => spawn_workers(n)?,
    };
    let (stop_accepting, stop_rx) = watch::channel(false);
    let tls_addr = if cfg.node.tls_listen.is_empty() {
        None
    } else {
        let store = tls::CertStore::new(cfg).map_err(std::io::Error::other)?;
        let early_data = u32::try_from(cfg.node.tls_early_data.0).unwrap_or(u32::MAX);
        let alpn_acme = cfg
            .node
            .acme
            .as_ref()
            .is_some_and(|a| a.challenge == outpost_config::AcmeChallenge::TlsAlpn01)
            .then(|| node.acme.clone());
        let server_cfg = store
            .server_config(early_data, alpn_acme)
            .map_err(std::io::Error::other)?;
        spawn_cert_reload(&store, Arc::downgrade(&node));
        if let Some(acme_cfg) = cfg.node.acme.clone() {
            let weak = Arc::downgrade(&node);
            let challenges = node.acme.clone();
            tokio::spawn(acme::run(acme_cfg, challenges, move || {
                let node = weak.upgrade()?;
                let (tenants, _) = node.config().tls_sources.clone();
                Some(
                    tenants
                        .into_iter()
                        .filter(|t| t.acme)
                        .map(|t| acme::Wanted {
                            names: t
                                .names
                                .into_iter()
                                .filter(|n| !n.starts_with("*."))
                                .collect(),
                            cert: t.cert,
                            key: t.key,
                        })
                        .collect(),
                )
            }));
        }
        let l = bind(&cfg.node.tls_listen).await?;
        let a = l.local_addr()?;
        let _ = node.tls_port.set(a.port());
        let accept = TlsAccept {
            listener: l,
            acceptor: if early_data == 0 {
                Handshake::Complete(tokio_rustls::TlsAcceptor::from(server_cfg))
            } else {
                Handshake::Early(server_cfg)
            },
            _store: store,
            node: node.clone(),
            limits,
            dog: dog.clone(),
            stop: stop_rx.clone(),
        };
        tokio::spawn(accept.run());
        Some(a)
    };
    let accept = Accept {
        listener,
        node: node.clone(),
        limits,
        dog: dog.clone(),
        workers,
        stop: stop_rx,
    };
    tokio::spawn(accept.run());
    Ok(RunningNode {
        node,
        addr,
        metrics_addr,
        tls_addr,
        dog,
        stop_accepting,
    })
}

async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Start `n` worker threads, each running a single-threaded runtime until the calling runtime
/// stops (a task of it holds the stop signal), and return handles to spawn connections on them.
fn spawn_workers(n: usize) -> std::io::Result<Vec<tokio::runtime::Handle>> {
    let (stop_tx, stop_rx) = watch::channel(());
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

/// The accept loop of the client listener.
struct Accept {
    listener: TcpListener,
    node: Arc<Node>,
    limits: Limits,
    dog: Arc<conn::Watchdog>,
    workers: Vec<tokio::runtime::Handle>,
    stop: watch::Receiver<bool>,
}

/// Accept connections on `listener` (TCP_NODELAY set) and hand each to `serve`, until the node
/// drains. A dropped `RunningNode` (tests keep only the address) is not a drain. Accept errors
/// (out of descriptors: EMFILE/ENFILE, or transient) are logged once a second at most, with a
/// short pause so the loop does not spin.
async fn accept_until_drain(
    listener: &TcpListener,
    node: &Node,
    mut stop: watch::Receiver<bool>,
    mut serve: impl FnMut(tokio::net::TcpStream, SocketAddr),
) {
    let stopped = async move {
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut stopped => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                serve(stream, peer);
            }
            Err(e) => {
                if let Some(suppressed) = node.warnings.accept.allow() {
                    tracing::warn!(error = %e, suppressed, "accept failed; refusing connections");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Accept {
    /// Accept connections and serve each one on the next worker (or here, without workers),
    /// until the node drains (the listener is then closed).
    async fn run(self) {
        let mut next = 0usize;
        let Self {
            listener,
            node,
            limits,
            dog,
            workers,
            stop,
        } = self;
        accept_until_drain(&listener, &node, stop, |stream, peer| {
            // The stream leaves this runtime's reactor (it is registered again where it is
            // served).
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set up a connection");
                    return;
                }
            };
            let conn = serve_connection(stream, peer, node.clone(), limits, dog.watch());
            if workers.is_empty() {
                tokio::spawn(conn);
            } else {
                workers[next % workers.len()].spawn(conn);
                next = next.wrapping_add(1);
            }
        })
        .await;
    }
}

/// Re-check certificate files and the node's TLS settings every 2 s, while the store and the
/// node live: a renewed file or a tenant's new certificate is served without a restart.
fn spawn_cert_reload(store: &Arc<tls::CertStore>, node: std::sync::Weak<Node>) {
    let weak = Arc::downgrade(store);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (Some(store), Some(node)) = (weak.upgrade(), node.upgrade()) else {
                return;
            };
            let (tenants, default) = node.config().tls_sources.clone();
            let _ = store.rebuild(&tenants, default.as_ref(), false);
        }
    });
}

/// How HTTPS connections are accepted.
#[derive(Clone)]
enum Handshake {
    /// tokio-rustls: HTTP starts once the handshake is complete (no 0-RTT).
    Complete(tokio_rustls::TlsAcceptor),
    /// 0-RTT on: HTTP starts on the client's early data (`early.rs`).
    Early(Arc<rustls::ServerConfig>),
}

/// The accept loop of the HTTPS listener.
struct TlsAccept {
    listener: TcpListener,
    acceptor: Handshake,
    /// Kept alive with the listener (its reload task stops when it is dropped).
    _store: Arc<tls::CertStore>,
    node: Arc<Node>,
    limits: Limits,
    dog: Arc<conn::Watchdog>,
    stop: watch::Receiver<bool>,
}

impl TlsAccept {
    async fn run(self) {
        let Self {
            listener,
            acceptor,
            _store,
            node,
            limits,
            dog,
            stop,
        } = self;
        accept_until_drain(&listener, &node, stop, |stream, peer| {
            let conn = serve_tls(
                stream,
                peer,
                acceptor.clone(),
                node.clone(),
                limits,
                dog.watch(),
            );
            tokio::spawn(conn);
        })
        .await;
    }
}

/// One HTTPS connection: the handshake (bounded by the header read timeout), then h2 or
/// HTTP/1.1 as ALPN chose, with the SNI name (and, with 0-RTT, whether the handshake is still
/// incomplete) on every request.
async fn serve_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Handshake,
    node: Arc<Node>,
    limits: Limits,
    watch: Arc<conn::ConnWatch>,
) {
    let deadline = watch.header_timeout();
    match acceptor {
        Handshake::Complete(acceptor) => {
            let tls = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return handshake_failed(peer, Some(e)),
                Err(_) => return handshake_failed(peer, None),
            };
            let conn = tls.get_ref().1;
            let (h2, info) = negotiated(conn, None);
            serve_negotiated(tls, h2, info, peer, node, limits, watch).await;
        }
        Handshake::Early(cfg) => {
            let tls =
                match tokio::time::timeout(deadline, early::EarlyTls::accept(stream, cfg)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return handshake_failed(peer, Some(e)),
                    Err(_) => return handshake_failed(peer, None),
                };
            let (h2, info) = negotiated(tls.connection(), Some(tls.flag()));
            serve_negotiated(tls, h2, info, peer, node, limits, watch).await;
        }
    }
}

/// What the handshake settled: whether ALPN chose h2, and what the request path learns (the
/// SNI name, and with 0-RTT the early-data flag). `None` for a TLS-ALPN-01 validation
/// connection, which ends with its handshake (RFC 8737 §3).
fn negotiated(
    conn: &rustls::ServerConnection,
    early: Option<Arc<AtomicBool>>,
) -> (bool, Option<tls::TlsInfo>) {
    let alpn = conn.alpn_protocol();
    if alpn == Some(acme::ACME_TLS_ALPN) {
        return (false, None);
    }
    let info = tls::TlsInfo {
        sni: conn
            .server_name()
            .map(|s| Arc::<str>::from(s.to_ascii_lowercase())),
        early,
    };
    (alpn == Some(b"h2".as_slice()), Some(info))
}

/// Serve a TLS connection with the protocol ALPN chose (nothing for a validation connection).
async fn serve_negotiated<S>(
    stream: S,
    h2: bool,
    info: Option<tls::TlsInfo>,
    peer: SocketAddr,
    node: Arc<Node>,
    limits: Limits,
    watch: Arc<conn::ConnWatch>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some(info) = info else { return };
    if h2 {
        serve_h2(stream, peer, node, limits, watch, Some(info)).await;
    } else {
        serve_h1(stream, peer, node, limits, watch, Some(info), false).await;
    }
}

fn handshake_failed(peer: SocketAddr, error: Option<std::io::Error>) {
    match error {
        Some(e) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
        None => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// How a plain connection opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// The HTTP/2 preface ("PRI "): a peer node, or a client with prior knowledge (h2c).
    H2,
    /// HTTP/1.1 whose first field is `outpost-pipe`: a PoP peer's pipelined asks (owner.rs),
    /// answered with aggregated writes.
    PeerPipe,
    /// Any other HTTP/1.1 (or garbage, which HTTP/1.1 answers with 400).
    Http1,
}

/// How the connection opens (waits for its first bytes; the caller bounds the wait by the
/// header read timeout). Only a node in a topology looks for pipelined asks.
async fn opening(stream: &tokio::net::TcpStream, topology: bool) -> Opening {
    const PIPE: &[u8] = b"outpost-pipe:";
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return Opening::Http1,
            Ok(n) => n,
        };
        let seen = &buf[..n];
        if n >= 4 && seen.starts_with(b"PRI ") {
            return Opening::H2;
        }
        if !b"PRI ".starts_with(&seen[..n.min(4)]) && !topology {
            return Opening::Http1;
        }
        if let Some(eol) = seen.windows(2).position(|w| w == b"\r\n") {
            let rest = &seen[eol + 2..];
            if rest.len() >= PIPE.len() || n == buf.len() {
                return if rest.starts_with(PIPE) {
                    Opening::PeerPipe
                } else {
                    Opening::Http1
                };
            }
        } else if n == buf.len() {
            return Opening::Http1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Opening::Http1
}

/// An HTTP/2 connection: from a peer node (prior knowledge), a client with prior knowledge
/// (h2c) or a client that chose `h2` by ALPN. A client's connection with no request for the
/// idle timeout gets GOAWAY (`ConnWatch::h2_idle`); a peer's stays open (pings find dead
/// peers); a drain ends either gracefully. Clients get tighter limits than peers: 100 concurrent streams, and hyper's h2
/// bounds on reset streams (rapid reset, CVE-2023-44487) and on header blocks (CONTINUATION
/// floods): a client that trips them loses its connection, not the node.
async fn serve_h2<S>(
    stream: S,
    peer: SocketAddr,
    node: Arc<Node>,
    limits: Limits,
    watch: Arc<conn::ConnWatch>,
    tls: Option<tls::TlsInfo>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let from_peer = tls.is_none() && node.tier.is_some();
    if from_peer {
        watch.disarm();
    } else {
        watch.h2_idle();
    }
    let w = watch.clone();
    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let node = node.clone();
        if let Some(info) = &tls {
            req.extensions_mut().insert(info.clone());
        }
        let busy = (!from_peer).then(|| w.h2_request());
        async move {
            let resp = request::handle(node, req, peer, false).await;
            drop(busy);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut b = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    // The same header budget as HTTP/1.1.
    b.max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    if from_peer {
        b.max_concurrent_streams(1024);
    } else {
        b.max_concurrent_streams(100)
            .max_pending_accept_reset_streams(Some(20))
            .max_local_error_reset_streams(Some(256));
    }
    let conn = b.serve_connection(TokioIo::new(stream), svc);
    match conn::Watched::new(conn, watch).await {
        Some(Err(e)) => tracing::debug!(error = %e, %peer, "HTTP/2 connection ended with error"),
        None => tracing::debug!(%peer, "HTTP/2 connection closed by the watchdog"),
        Some(Ok(())) => {}
    }
}

/// HTTP/1.1 with keep-alive on any stream (plain TCP or TLS), until the client, an error, the
/// watchdog (header and idle timeouts, conn.rs) or a drain ends it.
async fn serve_h1<S>(
    stream: S,
    peer: SocketAddr,
    node: Arc<Node>,
    limits: Limits,
    watch: Arc<conn::ConnWatch>,
    tls: Option<tls::TlsInfo>,
    pipelined: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ambiguous = Arc::new(AtomicBool::new(false));
    let stream = conn::SniffStream::new(stream, ambiguous.clone(), Some(watch.clone()));
    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let node = node.clone();
        let flagged = ambiguous.load(Ordering::Relaxed);
        if let Some(info) = &tls {
            req.extensions_mut().insert(info.clone());
        }
        async move { Ok::<_, Infallible>(request::handle(node, req, peer, flagged).await) }
    });
    let mut b = http1::Builder::new();
    // A PoP peer's pipelined asks (owner.rs): the answers to one batch leave in one write.
    // Only there: with it, hyper does not flush the 400 for a garbage request before closing.
    b.max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true)
        .pipeline_flush(pipelined);
    let conn = b.serve_connection(TokioIo::new(stream), svc);
    match conn::Watched::new(conn, watch).await {
        Some(Err(e)) => tracing::debug!(error = %e, %peer, "connection ended with error"),
        None => tracing::debug!(%peer, "connection closed by the watchdog"),
        Some(Ok(())) => {}
    }
}

/// One client connection: HTTP/1.1 with keep-alive until the client, an error, the watchdog
/// (header and idle timeouts, conn.rs) or a drain ends it.
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
    // HTTP/2 with prior knowledge (the connection preface starts "PRI "): peers of a CDN
    // send every request between two nodes on one such connection; clients may use h2c.
    // Bounded like any first read: a client that sends nothing is closed.
    let topology = node.tier.is_some();
    match tokio::time::timeout(watch.header_timeout(), opening(&stream, topology)).await {
        Ok(Opening::H2) => serve_h2(stream, peer, node, limits, watch, None).await,
        Ok(Opening::PeerPipe) => serve_h1(stream, peer, node, limits, watch, None, true).await,
        Ok(Opening::Http1) => serve_h1(stream, peer, node, limits, watch, None, false).await,
        Err(_) => {}
    }
}
