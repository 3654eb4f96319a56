//! Upstream connections: consistent hashing ([`ring`]), peer sets chosen by key with health and
//! failover ([`peers`]: a PoP's boxes, a shield set), and an origin pool with keep-alive connection reuse, connect and first-byte
//! timeouts, failover to the next origin on connection failure, and passive health (an origin that
//! refused a connection is skipped for a few seconds). Errors are typed ([`UpstreamError`]: a
//! class, the origin, the cause as its source) so the proxy can answer 502 (refused,
//! unreachable, protocol) or 504 (timeout), or serve stale instead, and log the cause.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body::Body as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod peers;
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
}

struct Origin {
    authority: String,
    down_until_ms: AtomicU64,
}

/// Timeouts for an origin pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
}

/// The origins of one tenant, tried in order, with a shared connection pool.
#[derive(Clone)]
pub struct OriginPool {
    origins: Arc<Vec<Origin>>,
    client: Client<HttpConnector, ReqBody>,
    timeouts: Timeouts,
    epoch: Instant,
}

/// How long an origin that refused a connection is skipped.
const DOWN_FOR: Duration = Duration::from_secs(3);

impl OriginPool {
    /// A pool for `authorities` (`host:port`).
    pub fn new(authorities: Vec<String>, timeouts: Timeouts) -> Self {
        let client = client(timeouts);
        Self {
            origins: Arc::new(
                authorities
                    .into_iter()
                    .map(|authority| Origin {
                        authority,
                        down_until_ms: AtomicU64::new(0),
                    })
                    .collect(),
            ),
            client,
            timeouts,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Each origin and whether it is up now (passive health).
    pub fn health(&self) -> Vec<(String, bool)> {
        let now = self.now_ms();
        self.origins
            .iter()
            .map(|o| {
                (
                    o.authority.clone(),
                    o.down_until_ms.load(Ordering::Relaxed) <= now,
                )
            })
            .collect()
    }

    /// Origins in the order to try: healthy ones first, then the rest.
    fn order(&self) -> Vec<usize> {
        let now = self.now_ms();
        let (mut up, down): (Vec<usize>, Vec<usize>) = (0..self.origins.len())
            .partition(|&i| self.origins[i].down_until_ms.load(Ordering::Relaxed) <= now);
        up.extend(down);
        up
    }

    /// Send a request. `body` is `None` for bodiless requests, which are retried on the next origin
    /// when a connection cannot be made; a request with a body goes to one origin only.
    pub async fn send(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<ReqBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let order = self.order();
        let mut body = body;
        let mut last_err = None;
        for idx in &order {
            let origin = &self.origins[*idx];
            let b = body.take().unwrap_or_else(empty_body);
            let had_body = !b.is_end_stream();
            let req =
                build(method, &origin.authority, path_and_query, headers, b).map_err(|e| {
                    UpstreamError::new(
                        UpstreamErrorKind::Protocol,
                        origin.authority.clone(),
                        Some(Box::new(e)),
                    )
                })?;
            match tokio::time::timeout(self.timeouts.first_byte, self.client.request(req)).await {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(e)) => {
                    let err = classify(e, &origin.authority);
                    let connect = err.kind.is_connect();
                    let retryable = connect && !had_body;
                    if connect {
                        origin.down_until_ms.store(
                            self.now_ms() + DOWN_FOR.as_millis() as u64,
                            Ordering::Relaxed,
                        );
                    }
                    tracing::debug!(origin = %origin.authority, error = %err, "upstream request failed");
                    if !retryable {
                        return Err(err);
                    }
                    last_err = Some(err);
                }
                Err(_) => {
                    return Err(UpstreamError::new(
                        UpstreamErrorKind::Timeout,
                        origin.authority.clone(),
                        Some(format!("no response within {:?}", self.timeouts.first_byte).into()),
                    ))
                }
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

/// A keep-alive HTTP/1.1 client with the connect timeout of `timeouts`.
fn client(timeouts: Timeouts) -> Client<HttpConnector, ReqBody> {
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

fn build(
    method: &Method,
    authority: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: ReqBody,
) -> Result<Request<ReqBody>, http::uri::InvalidUri> {
    let uri: Uri = format!("http://{authority}{path_and_query}").parse()?;
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
    let kind = if e.is_connect() {
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

/// The kind of the first `io::Error` in an error's source chain.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
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
            .send(&Method::GET, "/", &HeaderMap::new(), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, UpstreamErrorKind::Refused, "{e}");
        assert_eq!(e.kind.status(), 502);

        let pool = OriginPool::new(vec![dead.to_string(), live_addr.to_string()], t);
        let r = pool
            .send(&Method::GET, "/", &HeaderMap::new(), None)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The dead origin is now marked down and skipped first.
        assert_eq!(pool.order()[0], 1);
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
            .send(&Method::GET, "/", &HeaderMap::new(), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, UpstreamErrorKind::Timeout);
        assert_eq!(e.kind.status(), 504);
    }
}
