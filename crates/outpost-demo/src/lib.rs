//! outpost-demo: the built-in demo origin that `outpost up` starts next to the edge and shield.
//!
//! This crate owns the demo origin's HTTP/1.1 server ([`serve`]), its route table ([`routes`], shown in
//! the start-up banner) and its content: pages and resources chosen to show off what a CDN does —
//! long-lived fingerprinted assets, a short-TTL JSON API with stale-while-revalidate, a 10 MiB download
//! with byte ranges, an HLS playlist and segments, `Vary`-dependent variants, private/no-store
//! bypasses, negative responses and a slow route that demonstrates request coalescing. Every response
//! carries `Date`; resources with validators answer conditional requests with 304.

mod body;
mod conditional;
mod content;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use body::DemoBody;
pub use content::static_body;

use conditional::RangeOutcome;

/// How long `/slow` waits before answering.
pub const SLOW_DELAY: Duration = Duration::from_secs(2);

static ROUTES: &[(&str, &str)] = &[
    (
        "/",
        "HTML home page, max-age=10, Surrogate-Key: page home (refresh to watch the cache)",
    ),
    (
        content::APP_JS_PATH,
        "fingerprinted script, max-age=31536000, immutable",
    ),
    (
        content::STYLE_CSS_PATH,
        "fingerprinted stylesheet, max-age=31536000, immutable",
    ),
    (
        "/api/time",
        "JSON time + origin hit counter, max-age=5, stale-while-revalidate=30",
    ),
    (
        content::LARGE_PATH,
        "10 MiB deterministic download, max-age=3600, byte ranges",
    ),
    (
        "/video/playlist.m3u8",
        "HLS playlist (max-age=2) of /video/seg0.ts..seg4.ts (immutable, 1 day)",
    ),
    (
        "/vary/greeting",
        "Vary: Accept-Encoding, one variant per gzip/identity bucket",
    ),
    (
        "/vary/lang",
        "Vary: Accept-Language: Hello / Bonjour / Hallo",
    ),
    (
        "/private",
        "Cache-Control: private (the edge must not store it)",
    ),
    (
        "/nostore",
        "Cache-Control: no-store with Set-Cookie (always bypasses)",
    ),
    (
        "/slow",
        "answers after 2 s, max-age=60 (concurrent misses are coalesced)",
    ),
    ("/gone", "410 Gone"),
    (
        "/obj/42-1024",
        "/obj/KEY-SIZE: SIZE bytes (up to 64 MiB) for any KEY, max-age=3600 (outpost load)",
    ),
    (
        "/tagged/launch/42-1024",
        "/tagged/TAG/KEY-SIZE: the same, with Surrogate-Key: TAG (outpost purge --tag TAG)",
    ),
    (
        "/missing",
        "404 without Cache-Control (negative caching default applies)",
    ),
];

/// The demo routes as (path, one-line description), for the start-up banner.
pub fn routes() -> &'static [(&'static str, &'static str)] {
    ROUTES
}

/// Per-server counters of how many times the origin produced each dynamic response.
#[derive(Debug, Default)]
struct DemoState {
    api_time: AtomicU64,
    private: AtomicU64,
    nostore: AtomicU64,
    slow: AtomicU64,
}

impl DemoState {
    fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Serves the demo origin on `listener` until the task is dropped: HTTP/1.1 with keep-alive, one task
/// per connection. Accept errors (for example running out of file descriptors) are logged and retried
/// after a short pause, so this only returns if the runtime shuts down.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let state = Arc::new(DemoState::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "demo origin: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "demo origin: set_nodelay failed");
        }
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            if let Err(err) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %err, "demo origin: connection ended with an error");
            }
        });
    }
}

/// A response before conditional/range/HEAD processing.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    cache_control: Option<&'static str>,
    etag: Option<String>,
    last_modified: Option<SystemTime>,
    /// Whether byte ranges are advertised and honoured.
    ranges: bool,
    extra: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Reply {
    fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Reply {
            status,
            content_type,
            cache_control: None,
            etag: None,
            last_modified: None,
            ranges: false,
            extra: Vec::new(),
            body: body.into(),
        }
    }

    fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Reply::new(StatusCode::OK, content_type, body)
    }

    fn cache(mut self, cache_control: &'static str) -> Self {
        self.cache_control = Some(cache_control);
        self
    }

    fn etag(mut self, etag: String) -> Self {
        self.etag = Some(etag);
        self
    }

    fn last_modified(mut self, at: SystemTime) -> Self {
        self.last_modified = Some(at);
        self
    }

    fn ranges(mut self) -> Self {
        self.ranges = true;
        self
    }

    fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.extra.push((name, value));
        }
        self
    }

    /// Applies conditional requests, ranges and HEAD, and builds the response.
    fn into_response(self, request: &HeaderMap, head: bool) -> Response<DemoBody> {
        let mut headers = HeaderMap::new();
        headers.insert(header::DATE, http_date(SystemTime::now()));
        headers.insert(
            header::SERVER,
            HeaderValue::from_static("outpost-demo-origin"),
        );
        if let Some(cc) = self.cache_control {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
        }
        if let Some(etag) = self
            .etag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
        {
            headers.insert(header::ETAG, etag);
        }
        if let Some(lm) = self.last_modified {
            headers.insert(header::LAST_MODIFIED, http_date(lm));
        }
        if self.ranges {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        for (name, value) in self.extra {
            headers.append(name, value);
        }

        let len = self.body.len() as u64;
        let mut status = self.status;
        let mut body = self.body;
        if status == StatusCode::OK {
            if conditional::not_modified(request, self.etag.as_deref(), self.last_modified) {
                // RFC 9110 §15.4.5: the 304 carries the validators and caching headers, no content.
                return build(StatusCode::NOT_MODIFIED, headers, DemoBody::empty());
            }
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            if self.ranges && !head {
                match conditional::evaluate_range(
                    request,
                    len,
                    self.etag.as_deref(),
                    self.last_modified,
                ) {
                    RangeOutcome::Full => {}
                    RangeOutcome::Partial { start, end } => {
                        status = StatusCode::PARTIAL_CONTENT;
                        set_str(
                            &mut headers,
                            header::CONTENT_RANGE,
                            &format!("bytes {start}-{end}/{len}"),
                        );
                        body = body.slice(start as usize..=end as usize);
                    }
                    RangeOutcome::Unsatisfiable => {
                        let mut h = HeaderMap::new();
                        h.insert(header::DATE, http_date(SystemTime::now()));
                        h.insert(
                            header::SERVER,
                            HeaderValue::from_static("outpost-demo-origin"),
                        );
                        set_str(&mut h, header::CONTENT_RANGE, &format!("bytes */{len}"));
                        return build(StatusCode::RANGE_NOT_SATISFIABLE, h, DemoBody::empty());
                    }
                }
            }
        } else {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
        }
        if head {
            // HEAD: same headers as GET, including the length the GET body would have.
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
            return build(status, headers, DemoBody::empty());
        }
        build(status, headers, DemoBody::new(body))
    }
}

fn build(status: StatusCode, headers: HeaderMap, body: DemoBody) -> Response<DemoBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn set_str(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn http_date(at: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(at))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

async fn handle(state: &DemoState, req: Request<Incoming>) -> Response<DemoBody> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut reply = Reply::new(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "the demo origin only answers GET and HEAD\n",
        );
        reply = reply.header(header::ALLOW, "GET, HEAD");
        return reply.into_response(req.headers(), false);
    }
    let reply = route(state, req.uri().path(), req.headers()).await;
    reply.into_response(req.headers(), head)
}

async fn route(state: &DemoState, path: &str, headers: &HeaderMap) -> Reply {
    match path {
        "/" => home(),
        content::APP_JS_PATH | content::STYLE_CSS_PATH => {
            let (content_type, tag) = if path == content::APP_JS_PATH {
                ("text/javascript; charset=utf-8", "3f9a2c")
            } else {
                ("text/css; charset=utf-8", "8d1e4b")
            };
            let body = static_body(path).unwrap_or_default();
            Reply::ok(content_type, body)
                .cache("public, max-age=31536000, immutable")
                .etag(format!("\"{tag}\""))
                .last_modified(content::static_last_modified())
                .ranges()
        }
        "/api/time" => {
            let served = DemoState::bump(&state.api_time);
            let now = SystemTime::now();
            let body = format!(
                "{{\"unix_time\":{},\"date\":\"{}\",\"served\":{}}}\n",
                unix_secs(now),
                httpdate::fmt_http_date(now),
                served
            );
            Reply::ok("application/json", body).cache("max-age=5, stale-while-revalidate=30")
        }
        content::LARGE_PATH => Reply::ok("application/octet-stream", content::large_body())
            .cache("public, max-age=3600")
            .etag("\"large-10mb-v1\"".to_string())
            .last_modified(content::static_last_modified())
            .ranges(),
        "/video/playlist.m3u8" => Reply::ok("application/vnd.apple.mpegurl", content::playlist())
            .cache("public, max-age=2")
            .etag(format!("\"playlist-v{}\"", content::SEGMENT_COUNT))
            .last_modified(content::static_last_modified()),
        "/vary/greeting" => {
            let gzip = accepts_gzip(headers);
            let (variant, body) = if gzip {
                (
                    "gzip",
                    "Hello from the gzip bucket: this client sent Accept-Encoding with gzip.\n",
                )
            } else {
                (
                    "identity",
                    "Hello from the identity bucket: this client did not accept gzip.\n",
                )
            };
            Reply::ok(TEXT, body)
                .cache("public, max-age=60")
                .etag(format!("\"greeting-{variant}\""))
                .header(header::VARY, "Accept-Encoding")
                .header(HeaderName::from_static("x-demo-variant"), variant)
        }
        "/vary/lang" => {
            let lang = preferred_language(headers);
            let body = match lang {
                "fr" => "Bonjour\n",
                "de" => "Hallo\n",
                _ => "Hello\n",
            };
            Reply::ok(TEXT, body)
                .cache("public, max-age=60")
                .etag(format!("\"lang-{lang}\""))
                .header(header::VARY, "Accept-Language")
                .header(header::CONTENT_LANGUAGE, lang)
        }
        "/private" => {
            let n = DemoState::bump(&state.private);
            Reply::ok(
                TEXT,
                format!(
                    "This response is private to you; the origin has served /private {n} times.\n"
                ),
            )
            .cache("private")
        }
        "/nostore" => {
            let n = DemoState::bump(&state.nostore);
            Reply::ok(
                TEXT,
                format!(
                    "no-store: never cached anywhere; the origin has served /nostore {n} times.\n"
                ),
            )
            .cache("no-store")
            .header(
                header::SET_COOKIE,
                &format!("demo_session={n}; Path=/; HttpOnly; SameSite=Lax"),
            )
        }
        "/slow" => {
            tokio::time::sleep(SLOW_DELAY).await;
            let n = DemoState::bump(&state.slow);
            Reply::ok(
                TEXT,
                format!(
                    "slow response #{n}: the origin took {} s; concurrent misses share one fetch.\n",
                    SLOW_DELAY.as_secs()
                ),
            )
            .cache("public, max-age=60")
        }
        "/gone" => Reply::new(
            StatusCode::GONE,
            TEXT,
            "410 Gone: this resource was removed.\n",
        ),
        p if p.starts_with("/tagged/") => {
            // /tagged/TAG/KEY-SIZE: an /obj/ object carrying `Surrogate-Key: TAG`.
            let rest = &p["/tagged/".len()..];
            match rest.split_once('/').and_then(|(tag, obj)| {
                let obj = format!("/obj/{obj}");
                let ok =
                    !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                ok.then_some(())
                    .and_then(|_| object_size(&obj))
                    .map(|size| (tag, obj, size))
            }) {
                Some((tag, obj, size)) => {
                    Reply::ok("application/octet-stream", object_body(&obj, size))
                        .cache("public, max-age=3600")
                        .header(HeaderName::from_static("surrogate-key"), tag)
                        .ranges()
                }
                None => Reply::new(
                    StatusCode::NOT_FOUND,
                    TEXT,
                    "404 Not Found: expected /tagged/TAG/KEY-SIZE\n",
                ),
            }
        }
        p if p.starts_with("/obj/") => match object_size(p) {
            Some(size) => Reply::ok("application/octet-stream", object_body(p, size))
                .cache("public, max-age=3600")
                .etag(format!("\"{}\"", p.trim_start_matches("/obj/")))
                .ranges(),
            None => Reply::new(
                StatusCode::NOT_FOUND,
                TEXT,
                "404 Not Found: expected /obj/KEY-SIZE with SIZE at most 64 MiB\n",
            ),
        },
        _ => match content::segment_index(path).and_then(content::segment_body) {
            Some(segment) => Reply::ok("video/mp2t", segment)
                .cache("public, max-age=86400, immutable")
                .etag(format!("\"{}\"", path.trim_start_matches("/video/")))
                .last_modified(content::static_last_modified())
                .ranges(),
            None => Reply::new(
                StatusCode::NOT_FOUND,
                TEXT,
                format!("404 Not Found: {path}\n"),
            ),
        },
    }
}

/// Largest `/obj/KEY-SIZE` body.
const MAX_OBJECT: u64 = 64 << 20;

/// SIZE of `/obj/KEY-SIZE`.
fn object_size(path: &str) -> Option<u64> {
    let rest = path.strip_prefix("/obj/")?;
    let (key, size) = rest.rsplit_once('-')?;
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    size.parse().ok().filter(|s| *s <= MAX_OBJECT)
}

/// A deterministic body for an object: its path repeated to `size` bytes.
fn object_body(path: &str, size: u64) -> Bytes {
    let pattern = format!("{path}\n");
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let need = (size as usize - out.len()).min(pattern.len());
        out.extend_from_slice(&pattern.as_bytes()[..need]);
    }
    Bytes::from(out)
}

/// The home page: rendered per request, so the render time shows whether a refresh hit the cache.
fn home() -> Reply {
    let now = SystemTime::now();
    let secs = unix_secs(now);
    let mut rows = String::new();
    for (path, description) in ROUTES.iter().skip(1) {
        rows.push_str(&format!(
            "<tr><td><a href=\"{path}\"><code>{path}</code></a></td><td>{description}</td></tr>\n"
        ));
    }
    let body = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Outpost demo origin</title>
<link rel="stylesheet" href="{css}">
</head>
<body>
<h1>Outpost demo origin</h1>
<p>This page was generated by the origin at <span class="stamp">{date}</span> (unix {secs}).
It is cacheable for 10 seconds: refresh and the time stays the same until the edge's copy expires.</p>
<p>Live from <code>/api/time</code> (max-age=5, stale-while-revalidate=30): <code id="api-time">loading…</code></p>
<table>
{rows}</table>
<p>Try <code>curl -sI</code> on any link and look at <code>Age</code>, <code>Cache-Status</code> and <code>ETag</code>.</p>
<script src="{js}"></script>
</body>
</html>
"#,
        css = content::STYLE_CSS_PATH,
        js = content::APP_JS_PATH,
        date = httpdate::fmt_http_date(now),
    );
    Reply::ok(HTML, body)
        .cache("public, max-age=10")
        .etag(format!("\"home-{secs}\""))
        .last_modified(now)
        .header(HeaderName::from_static("surrogate-key"), "page home")
}

/// Splits a list header into (token, q) pairs (RFC 9110 §12.4.2 weights; malformed q counts as 1).
fn weighted(headers: &HeaderMap, name: HeaderName) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if token.is_empty() {
                continue;
            }
            let mut q = 1.0_f32;
            for param in parts {
                if let Some((k, v)) = param.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = v.trim().parse().unwrap_or(1.0);
                    }
                }
            }
            out.push((token, q));
        }
    }
    out
}

/// Whether the request accepts gzip (explicitly, or via `*` with gzip not refused).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let codings = weighted(headers, header::ACCEPT_ENCODING);
    if let Some((_, q)) = codings.iter().find(|(t, _)| t == "gzip" || t == "x-gzip") {
        return *q > 0.0;
    }
    codings.iter().any(|(t, q)| t == "*" && *q > 0.0)
}

/// The best of en/fr/de by the request's Accept-Language (default en).
fn preferred_language(headers: &HeaderMap) -> &'static str {
    let mut ranges = weighted(headers, header::ACCEPT_LANGUAGE);
    // Stable sort keeps the client's order among equal weights.
    ranges.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    for (range, q) in ranges {
        if q <= 0.0 {
            continue;
        }
        let primary = range.split('-').next().unwrap_or("");
        match primary {
            "en" | "*" => return "en",
            "fr" => return "fr",
            "de" => return "de",
            _ => {}
        }
    }
    "en"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: HeaderName, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn gzip_buckets() {
        assert!(accepts_gzip(&with(
            header::ACCEPT_ENCODING,
            "gzip, deflate, br"
        )));
        assert!(accepts_gzip(&with(
            header::ACCEPT_ENCODING,
            "br;q=1.0, GZIP;q=0.5"
        )));
        assert!(accepts_gzip(&with(header::ACCEPT_ENCODING, "*")));
        assert!(!accepts_gzip(&with(header::ACCEPT_ENCODING, "gzip;q=0")));
        assert!(!accepts_gzip(&with(header::ACCEPT_ENCODING, "*, gzip;q=0")));
        assert!(!accepts_gzip(&with(header::ACCEPT_ENCODING, "identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn language_choice() {
        assert_eq!(
            preferred_language(&with(header::ACCEPT_LANGUAGE, "fr-CH, fr;q=0.9, en;q=0.8")),
            "fr"
        );
        assert_eq!(
            preferred_language(&with(header::ACCEPT_LANGUAGE, "ja, de-DE;q=0.5")),
            "de"
        );
        assert_eq!(
            preferred_language(&with(header::ACCEPT_LANGUAGE, "en;q=0.1, de")),
            "de"
        );
        assert_eq!(
            preferred_language(&with(header::ACCEPT_LANGUAGE, "ja")),
            "en"
        );
        assert_eq!(preferred_language(&HeaderMap::new()), "en");
    }

    #[test]
    fn routes_are_listed_once_and_start_with_home() {
        let r = routes();
        assert_eq!(r[0].0, "/");
        let mut paths: Vec<_> = r.iter().map(|(p, _)| *p).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), r.len());
    }
}
