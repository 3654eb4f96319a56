//! The scriptable test origin: an HTTP/1.1 server on 127.0.0.1 whose responses are configured per
//! path ([`RouteSpec`]), which records every request it receives ([`SeenRequest`], hit counts) and
//! which can be stopped and restarted on the same port to simulate an origin outage.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Sleep;

/// One request as the origin received it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// Protocol version of the request line.
    pub version: Version,
    /// The request body, fully read.
    pub body: Bytes,
}

/// How the origin answers one path. Build with [`RouteSpec::ok`] and the builder methods.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    pub status: u16,
    /// Response headers, sent in this order (repeated names are sent as separate lines).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Delay before sending response headers.
    pub delay: Duration,
    /// If `Some((chunk_size, pause))`: stream the body in chunks with a pause between them.
    pub trickle: Option<(usize, Duration)>,
    /// Add a `Date` header automatically unless `headers` has one (default true).
    pub add_date: bool,
    /// Send the number of times this route was served in `X-Origin-Count` and, when `body` is empty,
    /// as the body (default true).
    pub count_header: bool,
    /// If `Some(etag)`: send it as `ETag` (unless `headers` has one) and answer a GET/HEAD whose
    /// `If-None-Match` matches it (weak comparison, or `*`) with 304, same headers, no body.
    pub etag: Option<String>,
    /// If true the body is `"variant:"` followed by the request's values of the headers named in this
    /// route's `Vary` header, joined with `|` (a missing header contributes an empty string; repeated
    /// header lines are joined with `", "`).
    pub echo_vary: bool,
}

impl Default for RouteSpec {
    fn default() -> Self {
        RouteSpec {
            status: 200,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
            trickle: None,
            add_date: true,
            count_header: true,
            etag: None,
            echo_vary: false,
        }
    }
}

impl RouteSpec {
    /// 200 with `body` and, unless `cache_control` is empty, that `Cache-Control`.
    pub fn ok(body: &str, cache_control: &str) -> Self {
        let spec = RouteSpec {
            body: Bytes::copy_from_slice(body.as_bytes()),
            ..RouteSpec::default()
        };
        if cache_control.is_empty() {
            spec
        } else {
            spec.header("Cache-Control", cache_control)
        }
    }

    /// Adds a response header (appended; existing headers of the same name are kept).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the status code.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Waits `delay` before sending the response headers.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Streams the body `chunk` bytes at a time with `pause` between chunks.
    pub fn trickle(mut self, chunk: usize, pause: Duration) -> Self {
        self.trickle = Some((chunk.max(1), pause));
        self
    }

    /// Validator: sends `ETag: etag` and answers a matching `If-None-Match` with 304.
    pub fn etag(mut self, etag: &str) -> Self {
        self.etag = Some(etag.to_string());
        self
    }

    /// Makes the body depend on the request headers named in `Vary`.
    pub fn echo_vary(mut self) -> Self {
        self.echo_vary = true;
        self
    }

    /// Whether to add `Date` automatically.
    pub fn add_date(mut self, on: bool) -> Self {
        self.add_date = on;
        self
    }

    /// Whether to add `X-Origin-Count` (and use the count as an empty body).
    pub fn count_header(mut self, on: bool) -> Self {
        self.count_header = on;
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }
}

/// What the origin has seen and how it is configured; shared with every connection task.
#[derive(Default)]
struct State {
    hits: HashMap<String, usize>,
    total: usize,
    requests: Vec<SeenRequest>,
    routes: HashMap<String, RouteSpec>,
    /// Times each path (routed or not) was answered, for `X-Origin-Count`.
    served: HashMap<String, u64>,
    /// The clock `Date` is read from (the system clock when unset).
    clock: Option<crate::FakeClock>,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running accept loop; dropping `stop` (or sending on it) ends it.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Control {
    addr: SocketAddr,
    running: tokio::sync::Mutex<Option<Running>>,
}

/// A test origin on 127.0.0.1. Clones share the same server. When the last clone is dropped the
/// server stops.
#[derive(Clone)]
pub struct TestOrigin {
    shared: Arc<Shared>,
    control: Arc<Control>,
}

impl std::fmt::Debug for TestOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestOrigin")
            .field("addr", &self.control.addr)
            .finish_non_exhaustive()
    }
}

impl TestOrigin {
    /// Binds 127.0.0.1:0 and serves in a background tokio task.
    pub async fn start() -> std::io::Result<TestOrigin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
        });
        let running = spawn_server(listener, Arc::clone(&shared));
        Ok(TestOrigin {
            shared,
            control: Arc::new(Control {
                addr,
                running: tokio::sync::Mutex::new(Some(running)),
            }),
        })
    }

    /// Re-binds the same port after [`stop`](Self::stop), retrying for up to 5 s while the port is
    /// still busy. A no-op when already running. Counters, recorded requests and routes are kept.
    pub async fn restart(&self) -> std::io::Result<()> {
        let mut running = self.control.running.lock().await;
        if running.is_some() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.control.addr).await {
                Ok(listener) => break listener,
                Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        *running = Some(spawn_server(listener, Arc::clone(&self.shared)));
        Ok(())
    }

    /// Stops accepting, closes the listener and every open connection (in-flight responses are cut
    /// off). When this returns, new connections to [`addr`](Self::addr) are refused.
    pub async fn stop(&self) {
        let mut running = self.control.running.lock().await;
        if let Some(Running { stop, task }) = running.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// The bound address (stable across stop/restart).
    pub fn addr(&self) -> SocketAddr {
        self.control.addr
    }

    /// `"http://127.0.0.1:PORT"`.
    pub fn url(&self) -> String {
        format!("http://{}", self.control.addr)
    }

    /// Requests received for `path_and_query` exactly as received (e.g. `"/a?x=1"`).
    pub fn hits(&self, path_and_query: &str) -> usize {
        self.shared
            .lock()
            .hits
            .get(path_and_query)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received in total.
    pub fn total_hits(&self) -> usize {
        self.shared.lock().total
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.lock().requests.clone()
    }

    /// Responses for `path` (exact path; the query is ignored for matching) come from `spec` from now
    /// on. Replaces an earlier spec for the same path; the served counter continues.
    pub fn route(&self, path: &str, spec: RouteSpec) {
        self.shared.lock().routes.insert(path.to_string(), spec);
    }

    /// Reads `Date` from `clock` from now on, so an origin and a node on the same fake clock
    /// agree on the time (a node's `Age` then comes from its clock alone).
    pub fn use_clock(&self, clock: &crate::FakeClock) {
        self.shared.lock().clock = Some(clock.clone());
    }

    /// Forgets recorded requests and hit counts (routes and served counters are kept).
    pub fn clear_hits(&self) {
        let mut state = self.shared.lock();
        state.hits.clear();
        state.total = 0;
        state.requests.clear();
    }
}

fn spawn_server(listener: TcpListener, shared: Arc<Shared>) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, shared, stop_rx));
    Running { stop, task }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Stop requested, or every TestOrigin handle dropped.
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting the connection tasks drops their sockets: clients see the connection close.
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let _ = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<OriginBody> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let path = parts.uri.path().to_string();
    let (spec, served, now) = {
        let mut state = shared.lock();
        *state.hits.entry(path_and_query.clone()).or_insert(0) += 1;
        state.total += 1;
        state.requests.push(SeenRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            version: parts.version,
            body,
        });
        let served = {
            let n = state.served.entry(path.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let now = state
            .clock
            .as_ref()
            .map_or_else(SystemTime::now, |c| c.now());
        (state.routes.get(&path).cloned(), served, now)
    };
    let head = parts.method == Method::HEAD;
    let spec = match spec {
        Some(spec) => spec,
        None => {
            let spec = RouteSpec::ok(&format!("path:{path_and_query}"), "max-age=60");
            return respond(&spec, &parts.headers, head, served, now);
        }
    };
    if !spec.delay.is_zero() {
        tokio::time::sleep(spec.delay).await;
    }
    respond(&spec, &parts.headers, head, served, now)
}

/// Weak comparison of an `If-None-Match` list against `etag` (RFC 9110 §13.1.2).
fn none_match(if_none_match: &str, etag: &str) -> bool {
    let opaque = |t: &str| {
        let t = t.trim();
        t.strip_prefix("W/").unwrap_or(t).to_string()
    };
    let want = opaque(etag);
    if_none_match
        .split(',')
        .any(|c| c.trim() == "*" || (!c.trim().is_empty() && opaque(c) == want))
}

fn respond(
    spec: &RouteSpec,
    request: &HeaderMap,
    head: bool,
    served: u64,
    now: SystemTime,
) -> Response<OriginBody> {
    let mut status = StatusCode::from_u16(spec.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    for (name, value) in &spec.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => eprintln!("outpost-testkit: skipping invalid route header {name:?}: {value:?}"),
        }
    }
    if spec.add_date && !spec.has_header("date") {
        if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
            headers.insert(header::DATE, date);
        }
    }
    if spec.count_header {
        headers.insert(
            HeaderName::from_static("x-origin-count"),
            HeaderValue::from(served),
        );
    }
    if let Some(etag) = &spec.etag {
        if !spec.has_header("etag") {
            if let Ok(value) = HeaderValue::from_str(etag) {
                headers.insert(header::ETAG, value);
            }
        }
    }

    let user_framing = spec.has_header("content-length") || spec.has_header("transfer-encoding");
    let inm = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let not_modified = spec
        .etag
        .as_deref()
        .is_some_and(|etag| !inm.is_empty() && none_match(&inm, etag));
    if not_modified {
        status = StatusCode::NOT_MODIFIED;
    }
    let no_body_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;

    let body = if no_body_status {
        Bytes::new()
    } else if spec.echo_vary {
        Bytes::from(echo_variant(spec, request))
    } else if spec.body.is_empty() && spec.count_header {
        Bytes::from(served.to_string())
    } else {
        spec.body.clone()
    };

    if head {
        if !user_framing && !no_body_status {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        return build(status, headers, OriginBody::full(Bytes::new(), true));
    }
    let body = match spec.trickle {
        Some((chunk, pause)) if !body.is_empty() => {
            OriginBody::trickle(body, chunk, pause, !user_framing)
        }
        _ => OriginBody::full(body, !user_framing),
    };
    build(status, headers, body)
}

fn echo_variant(spec: &RouteSpec, request: &HeaderMap) -> String {
    let names: Vec<String> = spec
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("vary"))
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|n| n.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|n| !n.is_empty())
        .collect();
    let values: Vec<String> = names
        .iter()
        .map(|name| {
            request
                .get_all(name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    format!("variant:{}", values.join("|"))
}

fn build(status: StatusCode, headers: HeaderMap, body: OriginBody) -> Response<OriginBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Response body of the test origin: the whole payload at once, or trickled in chunks with pauses.
struct OriginBody {
    data: Bytes,
    chunk: usize,
    pause: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether to report an exact size (hyper then writes Content-Length itself). False when the
    /// route sets its own framing headers, so a deliberately wrong Content-Length reaches the wire.
    exact: bool,
}

impl OriginBody {
    fn full(data: Bytes, exact: bool) -> Self {
        OriginBody {
            chunk: data.len().max(1),
            data,
            pause: Duration::ZERO,
            sleep: None,
            exact,
        }
    }

    fn trickle(data: Bytes, chunk: usize, pause: Duration, exact: bool) -> Self {
        OriginBody {
            data,
            chunk: chunk.max(1),
            pause,
            sleep: None,
            exact,
        }
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let n = this.data.len().min(this.chunk);
        let frame = this.data.split_to(n);
        if !this.data.is_empty() && !this.pause.is_zero() {
            this.sleep = Some(Box::pin(tokio::time::sleep(this.pause)));
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.data.len() as u64)
        } else {
            SizeHint::new()
        }
    }
}
