//! Upstream connections: consistent hashing ([`ring`]), peer sets chosen by key with health and
//! failover ([`peers`]: a PoP's boxes, a shield set), and an origin pool with keep-alive connection reuse, connect and first-byte
//! timeouts, failover to the next origin on connection failure, and passive health (an origin that
//! refused a connection is skipped for a few seconds). Errors are typed ([`UpstreamError`]: a
//! class, the origin, the cause as its source) so the proxy can answer 502 (refused,
//! unreachable, protocol) or 504 (timeout), or serve stale instead, and log the cause.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod limit;
pub mod peers;
pub mod pipe;
pub mod replay;
pub mod ring;

/// Boxed error for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request body type sent upstream.
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// An empty request body.
pub fn empty_body() -> ReqBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// The class of an upstream failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Connection refused or reset while connecting.
    Refused,
    /// The connection could not be made for another reason (the name did not resolve, no
    /// route, no origin configured).
    Unreachable,
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// Connected, but no response head within the origin timeout.
    Timeout,
    /// The origin broke the protocol or closed the connection mid-response.
    Protocol,
    /// The TLS handshake with an HTTPS origin failed (its certificate did not verify, or no
    /// common protocol); nothing was sent.
    Tls,
}

impl UpstreamErrorKind {
    /// Name for logs, metrics and error bodies.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpstreamErrorKind::Refused => "origin-refused",
            UpstreamErrorKind::Unreachable => "origin-unreachable",
            UpstreamErrorKind::ConnectTimeout => "origin-connect-timeout",
            UpstreamErrorKind::Timeout => "origin-timeout",
            UpstreamErrorKind::Protocol => "origin-protocol-error",
            UpstreamErrorKind::Tls => "origin-tls-error",
        }
    }

    /// The status a client gets when nothing stale can be served.
    pub fn status(&self) -> http::StatusCode {
        if self.is_timeout() {
            http::StatusCode::GATEWAY_TIMEOUT
        } else {
            http::StatusCode::BAD_GATEWAY
        }
    }

    /// Whether the failure is a timeout (504 rather than 502).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            UpstreamErrorKind::ConnectTimeout | UpstreamErrorKind::Timeout
        )
    }

    /// Whether nothing reached the origin, so the same request may be retried elsewhere.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamErrorKind::Refused
                | UpstreamErrorKind::Unreachable
                | UpstreamErrorKind::ConnectTimeout
                | UpstreamErrorKind::Tls
        )
    }
}

/// An upstream failure: its class, the origin it concerned, and the underlying error as its
/// source (for logs: clients only ever see the class).
#[derive(Debug, thiserror::Error)]
#[error("{} at {origin}", kind.as_str())]
pub struct UpstreamError {
    /// Class.
    pub kind: UpstreamErrorKind,
    /// `host:port` of the origin.
    pub origin: String,
    #[source]
    source: Option<BoxError>,
}

impl UpstreamError {
    /// An error of `kind` at `origin` caused by `source`.
    pub fn new(
        kind: UpstreamErrorKind,
        origin: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Self {
            kind,
            origin: origin.into(),
            source,
        }
    }

    /// The whole chain, `kind at origin: cause: cause`, for logs.
    pub fn detail(&self) -> String {
        error_chain(self)
    }

    /// For a TLS failure, what rustls said (e.g. `invalid peer certificate: UnknownIssuer`):
    /// safe to show a client, it names no address.
    pub fn tls_cause(&self) -> Option<String> {
        if self.kind != UpstreamErrorKind::Tls {
            return None;
        }
        std::error::Error::source(self)
            .and_then(find_tls)
            .map(|t| t.to_string())
    }
}

struct Origin {
    /// `host:port`.
    authority: String,
    /// Reached over HTTPS (given as `https://host:port`).
    tls: bool,
    /// Passive only: skipped until then after a connection failure.
    down_until_ms: AtomicU64,
    /// With active checks: down until probes bring it back.
    down: AtomicBool,
    fails: AtomicU32,
    oks: AtomicU32,
    limit: Option<Arc<limit::OriginLimit>>,
}

/// Timeouts for an origin pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
}

/// Active health checks of an origin pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveHealth {
    /// Path probed with GET (a 2xx or 3xx answer is healthy).
    pub path: String,
    /// Host header of the probes.
    pub host: String,
    /// Interval, timeout and thresholds.
    pub policy: peers::HealthPolicy,
}

/// How an origin pool picks and protects its origins.
#[derive(Clone, Default)]
pub struct PoolOptions {
    /// Weights, one per origin: keys are spread over the healthy origins by weighted consistent
    /// hashing. `None`: the first healthy origin in order takes everything (primary, then
    /// secondaries).
    pub weights: Option<Vec<f64>>,
    /// Active health checks (without them, an origin that refused a connection is skipped for
    /// a few seconds).
    pub health: Option<ActiveHealth>,
    /// The tenant this pool belongs to and each origin's shared concurrency limit.
    pub limits: Option<(String, Vec<Arc<limit::OriginLimit>>)>,
    /// Simulated latency added before every request.
    pub delay: Duration,
    /// How `https` origins are verified (default: the system's roots).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The origins of one tenant, with a shared connection pool.
#[derive(Clone)]
pub struct OriginPool {
    origins: Arc<Vec<Origin>>,
    client: OriginClient,
    timeouts: Timeouts,
    epoch: Instant,
    ring: Option<Arc<ring::Ring>>,
    health: Option<Arc<ActiveHealth>>,
    tenant: Arc<str>,
    delay: Duration,
}

/// How long an origin that refused a connection is skipped (without active checks).
const DOWN_FOR: Duration = Duration::from_secs(3);

impl OriginPool {
    /// A pool for `authorities` (`host:port`), tried in order.
    pub fn new(authorities: Vec<String>, timeouts: Timeouts) -> Self {
        Self::with_options(authorities, timeouts, PoolOptions::default())
    }

    /// A pool for `authorities` with weights, active health checks and limits.
    pub fn with_options(authorities: Vec<String>, timeouts: Timeouts, opts: PoolOptions) -> Self {
        let client = client(timeouts, opts.tls.clone());
        let ring = opts.weights.as_ref().map(|w| {
            Arc::new(ring::Ring::new(
                authorities
                    .iter()
                    .zip(w.iter().copied().chain(std::iter::repeat(1.0)))
                    .map(|(a, w)| (a.as_str(), w)),
            ))
        });
        let (tenant, limits) = match opts.limits {
            Some((t, l)) => (t, l),
            None => (String::new(), Vec::new()),
        };
        Self {
            origins: Arc::new(
                authorities
                    .into_iter()
                    .enumerate()
                    .map(|(i, given)| Origin {
                        tls: given.starts_with("https://"),
                        authority: given.strip_prefix("https://").unwrap_or(&given).to_string(),
                        down_until_ms: AtomicU64::new(0),
                        down: AtomicBool::new(false),
                        fails: AtomicU32::new(0),
                        oks: AtomicU32::new(0),
                        limit: limits.get(i).cloned(),
                    })
                    .collect(),
            ),
            client,
            timeouts,
            epoch: Instant::now(),
            ring,
            health: opts.health.map(Arc::new),
            tenant: tenant.into(),
            delay: opts.delay,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn is_up(&self, o: &Origin) -> bool {
        if self.health.is_some() {
            !o.down.load(Ordering::Relaxed)
        } else {
            o.down_until_ms.load(Ordering::Relaxed) <= self.now_ms()
        }
    }

    /// Each origin and whether it is up now.
    pub fn health(&self) -> Vec<(String, bool)> {
        self.origins
            .iter()
            .map(|o| (o.authority.clone(), self.is_up(o)))
            .collect()
    }

    /// Origins in the order to try for `key`: healthy ones first (by weight and key, or in
    /// configured order), then the rest.
    fn order(&self, key: u64) -> Vec<usize> {
        match &self.ring {
            Some(r) => r.order_with(key, |i| {
                if self.is_up(&self.origins[i]) {
                    ring::Eligibility::Up
                } else {
                    ring::Eligibility::Down
                }
            }),
            None => {
                let (mut up, down): (Vec<usize>, Vec<usize>) =
                    (0..self.origins.len()).partition(|&i| self.is_up(&self.origins[i]));
                up.extend(down);
                up
            }
        }
    }

    fn failed(&self, o: &Origin) {
        match &self.health {
            Some(h) => {
                o.oks.store(0, Ordering::Relaxed);
                let f = o.fails.fetch_add(1, Ordering::Relaxed) + 1;
                if f >= h.policy.fall && !o.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(origin = %o.authority, "origin down");
                }
            }
            None => o.down_until_ms.store(
                self.now_ms() + DOWN_FOR.as_millis() as u64,
                Ordering::Relaxed,
            ),
        }
    }

    /// Start the active health checks (when configured) until the pool is dropped.
    pub fn spawn_probes(&self) {
        let Some(h) = self.health.clone() else {
            return;
        };
        let origins = Arc::downgrade(&self.origins);
        let client = self.client.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(h.policy.interval).await;
                let Some(origins) = origins.upgrade() else {
                    return;
                };
                for o in origins.iter() {
                    let ok = match build_uri(
                        o.scheme(),
                        &Method::GET,
                        &o.authority,
                        &h.path,
                        &probe_headers(&h.host),
                        empty_body(),
                    ) {
                        Ok(req) => matches!(
                            tokio::time::timeout(h.policy.timeout, client.request(req)).await,
                            Ok(Ok(r)) if r.status().is_success() || r.status().is_redirection()
                        ),
                        Err(_) => false,
                    };
                    if ok {
                        o.fails.store(0, Ordering::Relaxed);
                        let oks = o.oks.fetch_add(1, Ordering::Relaxed) + 1;
                        if oks >= h.policy.rise && o.down.swap(false, Ordering::Relaxed) {
                            tracing::info!(origin = %o.authority, "origin up");
                        }
                    } else {
                        o.oks.store(0, Ordering::Relaxed);
                        let f = o.fails.fetch_add(1, Ordering::Relaxed) + 1;
                        if f >= h.policy.fall && !o.down.swap(true, Ordering::Relaxed) {
                            tracing::warn!(origin = %o.authority, "origin down (health check)");
                        }
                    }
                }
            }
        });
    }

    /// Send a request. `key` picks the origin when the pool is weighted. A request whose body
    /// can be sent again ([`replay::Payload`]: bodiless, or small with a declared length) goes
    /// to the next origin when a connection cannot be made; an idempotent one is also sent
    /// again, on a new connection to the same origin, when the connection closed before a
    /// response (a keep-alive connection the origin closed as it was reused: RFC 9110 §9.2.2).
    /// A larger body streams to one attempt only. Each attempt first takes a slot of the
    /// origin's concurrency limit (waiting for one within the first-byte timeout).
    pub async fn send(
        &self,
        key: u64,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<ReqBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let order = self.order(key);
        let authority = order
            .first()
            .map(|&i| self.origins[i].authority.as_str())
            .unwrap_or_default();
        let mut payload =
            replay::Payload::read_within(body, self.timeouts.first_byte, authority).await?;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let idempotent = replay::idempotent(method);
        let mut last_err = None;
        let deadline = tokio::time::Instant::now() + self.timeouts.first_byte;
        'origins: for idx in &order {
            let origin = &self.origins[*idx];
            for attempt in 0..=STALE_RETRIES {
                let replayable = payload.replayable();
                let req = build_uri(
                    origin.scheme(),
                    method,
                    &origin.authority,
                    path_and_query,
                    headers,
                    payload.attempt_body(),
                )
                .map_err(|e| {
                    UpstreamError::new(
                        UpstreamErrorKind::Protocol,
                        origin.authority.clone(),
                        Some(Box::new(e)),
                    )
                })?;
                let sent = async {
                    let _slot = match &origin.limit {
                        Some(l) => Some(l.acquire(&self.tenant).await),
                        None => None,
                    };
                    self.client.request(req).await
                };
                let err = match tokio::time::timeout_at(deadline, sent).await {
                    Ok(Ok(resp)) => {
                        origin.fails.store(0, Ordering::Relaxed);
                        return Ok(resp);
                    }
                    Ok(Err(e)) => classify(e, &origin.authority),
                    Err(_) => {
                        return Err(first_byte_timeout(
                            &origin.authority,
                            self.timeouts.first_byte,
                        ))
                    }
                };
                tracing::debug!(origin = %origin.authority, error = %err.detail(), attempt, "upstream request failed");
                if err.kind.is_connect() {
                    self.failed(origin);
                    if !replayable {
                        return Err(err);
                    }
                    last_err = Some(err);
                    continue 'origins;
                }
                let again = replayable
                    && idempotent
                    && attempt < STALE_RETRIES
                    && replay::closed_before_response(&err);
                if !again {
                    return Err(err);
                }
                last_err = Some(err);
            }
        }
        Err(last_err.unwrap_or_else(|| {
            UpstreamError::new(
                UpstreamErrorKind::Unreachable,
                "",
                Some("no origins configured".into()),
            )
        }))
    }
}

/// How many times an idempotent request is sent again to the same origin after its connection
/// closed before a response (each time on another connection: a stale keep-alive one, or new).
const STALE_RETRIES: usize = 2;

/// No response head within the first-byte timeout.
fn first_byte_timeout(authority: &str, after: Duration) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::Timeout,
        authority,
        Some(format!("no response within {after:?}").into()),
    )
}

fn probe_headers(host: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(host) {
        h.insert(http::header::HOST, v);
    }
    h.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("outpost-health-check"),
    );
    h
}

impl Origin {
    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// The client an origin pool connects with: plain TCP, or TLS for `https` origins.
type OriginClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, ReqBody>;

/// A rustls client config verifying origins against `ca_file` (PEM bundle) or, when empty,
/// the system's trust store; TLS 1.3 and 1.2.
pub fn origin_tls(ca_file: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_file.is_empty() {
        roots = system_roots();
    } else {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("{ca_file}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{ca_file}: {e}"))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("{ca_file}: no CA certificate in the file"));
        }
    }
    Ok(client_config(roots))
}

/// The system's trust store (read once per process).
fn system_roots() -> rustls::RootCertStore {
    static SYSTEM: std::sync::OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> =
        std::sync::OnceLock::new();
    let certs = SYSTEM.get_or_init(|| rustls_native_certs::load_native_certs().certs);
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(certs.iter().cloned());
    roots
}

/// TLS 1.3 and 1.2 with the ring provider, verifying against `roots`.
#[allow(clippy::expect_used)] // ring implements both versions: the builder cannot refuse them.
fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .expect("ring supports TLS 1.3 and 1.2")
    .with_root_certificates(roots)
    .with_no_client_auth();
    // ALPN is set by the connector (enable_http1: http/1.1).
    cfg.alpn_protocols = Vec::new();
    Arc::new(cfg)
}

/// A keep-alive plain HTTP/1.1 client (between the nodes of a CDN) with the connect timeout of
/// `timeouts`.
fn plain_client(timeouts: Timeouts) -> Client<HttpConnector, ReqBody> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeouts.connect));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .retry_canceled_requests(true)
        .build(connector)
}

/// A keep-alive HTTP/1.1 client with the connect timeout of `timeouts`; `https` origins are
/// verified with `tls` (the system roots when none is given), SNI = the origin's host.
fn client(timeouts: Timeouts, tls: Option<Arc<rustls::ClientConfig>>) -> OriginClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeouts.connect));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let tls = tls.unwrap_or_else(|| {
        static DEFAULT: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| client_config(system_roots()))
            .clone()
    });
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .retry_canceled_requests(true)
        .build(https)
}

fn build(
    method: &Method,
    authority: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: ReqBody,
) -> Result<Request<ReqBody>, http::uri::InvalidUri> {
    build_uri("http", method, authority, path_and_query, headers, body)
}

fn build_uri(
    scheme: &str,
    method: &Method,
    authority: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: ReqBody,
) -> Result<Request<ReqBody>, http::uri::InvalidUri> {
    let uri: Uri = format!("{scheme}://{authority}{path_and_query}").parse()?;
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers.clone();
    if !req.headers().contains_key(http::header::HOST) {
        if let Ok(v) = HeaderValue::from_str(authority) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    Ok(req)
}

/// The class of a client error, from its type and the I/O error kinds in its source chain (never
/// from message text).
fn classify(e: hyper_util::client::legacy::Error, origin: &str) -> UpstreamError {
    let kind = if e.is_connect() && is_tls(&e) {
        UpstreamErrorKind::Tls
    } else if e.is_connect() {
        match io_kind(&e) {
            Some(std::io::ErrorKind::TimedOut) => UpstreamErrorKind::ConnectTimeout,
            Some(
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted,
            ) => UpstreamErrorKind::Refused,
            _ => UpstreamErrorKind::Unreachable,
        }
    } else {
        UpstreamErrorKind::Protocol
    };
    UpstreamError::new(kind, origin, Some(Box::new(e)))
}

/// The rustls error in the chain, if any (a failed handshake with an HTTPS origin). An
/// `io::Error` wrapping one hides it from `source()`: look inside with `get_ref`.
fn find_tls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // io::Error's source() skips the error it wraps; step into it instead.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    find_tls(e).is_some()
}

/// An error and its sources, outermost first.
fn sources<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |err| err.source())
}

/// The kind of the first `io::Error` in an error's source chain.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    sources(e).find_map(|err| err.downcast_ref::<std::io::Error>().map(|io| io.kind()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn refused_is_502_and_failover_works() {
        // A port that is closed: bind then drop.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = l.local_addr().unwrap();
        drop(l);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = live.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        });
        let t = Timeouts {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_secs(2),
        };
        let only_dead = OriginPool::new(vec![dead.to_string()], t);
        let e = only_dead
            .send(0, &Method::GET, "/", &HeaderMap::new(), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, UpstreamErrorKind::Refused, "{e}");
        assert_eq!(e.kind.status(), 502);

        let pool = OriginPool::new(vec![dead.to_string(), live_addr.to_string()], t);
        let r = pool
            .send(0, &Method::GET, "/", &HeaderMap::new(), None)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The dead origin is now marked down and skipped first.
        assert_eq!(pool.order(0)[0], 1);
    }

    /// Reads one request (head, then a body of its content-length); `None` at end of stream.
    async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let method = head.split(' ').next().unwrap_or_default().to_string();
        Some((method, buf[head_end..head_end + len].to_vec()))
    }

    /// An origin whose first connection answers one request, then reads the next one and
    /// resets the connection without answering (a keep-alive connection closed as it was
    /// reused); every other connection echoes each request's body. Returns its address and
    /// the bodies it answered.
    async fn resetting_origin() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let answered = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = answered.clone();
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((mut s, _)) = l.accept().await {
                let resets = std::mem::take(&mut first);
                let seen = seen.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let mut served = 0;
                    while let Some((_, body)) = read_request(&mut s).await {
                        if resets && served == 1 {
                            // Linger 0 resets at once (the deprecation is about blocking
                            // on drop with a non-zero linger).
                            #[allow(deprecated)]
                            s.set_linger(Some(Duration::ZERO)).unwrap();
                            return; // dropped with linger 0: RST
                        }
                        let head =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        let _ = s.write_all(head.as_bytes()).await;
                        let _ = s.write_all(&body).await;
                        seen.lock().unwrap().push(body);
                        served += 1;
                    }
                });
            }
        });
        (addr, answered)
    }

    /// A first request through `pool`, read to its end so its connection goes back to the pool.
    async fn warm(pool: &OriginPool) {
        let r = pool
            .send(0, &Method::GET, "/", &HeaderMap::new(), None)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fn body(s: &'static str) -> Option<ReqBody> {
        Some(replay::bytes_body(Bytes::from_static(s.as_bytes())))
    }

    const T: Timeouts = Timeouts {
        connect: Duration::from_secs(1),
        first_byte: Duration::from_secs(5),
    };

    /// A pool in front of a [`resetting_origin`] whose first connection has answered once and
    /// is back in the pool, and the bodies the origin answered.
    async fn warmed_pool() -> (OriginPool, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
        let (addr, answered) = resetting_origin().await;
        let pool = OriginPool::new(vec![addr.to_string()], T);
        warm(&pool).await;
        (pool, answered)
    }

    /// Request headers declaring a body of `len` bytes.
    fn length(len: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        h
    }

    #[tokio::test]
    async fn idempotent_request_is_sent_again_when_a_reused_connection_resets() {
        let (pool, answered) = warmed_pool().await;
        let r = pool
            .send(0, &Method::PUT, "/config", &length(7), body("payload"))
            .await
            .expect("the PUT is sent again on a new connection");
        assert_eq!(r.status(), 200);
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "payload");
        assert_eq!(answered.lock().unwrap().last().unwrap(), b"payload");
    }

    #[tokio::test]
    async fn non_idempotent_request_is_not_sent_again() {
        let (pool, answered) = warmed_pool().await;
        let e = pool
            .send(0, &Method::POST, "/order", &length(5), body("order"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, UpstreamErrorKind::Protocol, "{}", e.detail());
        assert_eq!(e.kind.status(), 502);
        assert_eq!(
            answered.lock().unwrap().len(),
            1,
            "only the warm-up was answered"
        );
    }

    #[tokio::test]
    async fn slow_origin_is_504() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = live.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = live.accept().await {
                held.push(s);
            }
        });
        let pool = OriginPool::new(
            vec![addr.to_string()],
            Timeouts {
                connect: Duration::from_secs(1),
                first_byte: Duration::from_millis(200),
            },
        );
        let e = pool
            .send(0, &Method::GET, "/", &HeaderMap::new(), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, UpstreamErrorKind::Timeout);
        assert_eq!(e.kind.status(), 504);
    }
}
