//! The node's admin listener (`node.metrics`, loopback by default): `GET /metrics` (Prometheus
//! text), `GET /healthz` (`503 draining` once the node drains, so load balancers stop sending),
//! and `POST /purge`, the node-local purge the control plane's log will drive:
//!
//! ```json
//! {"tenant": "shop", "urls": ["http://shop.example/a"], "prefixes": ["http://shop.example/img/"],
//!  "hosts": ["shop.example"], "tags": ["home"], "everything": false}
//! ```
//!
//! → `200 {"removed": N, "purges": K}`; `"soft": true` marks stale instead of removing. URLs and prefixes name their tenant by host; tags, hosts
//! and `everything` need `tenant`. Admin requests are accepted from loopback clients, or with
//! `Authorization: Bearer <node.admin_token>` when one is configured. Errors are
//! `{"error":{"code":...,"message":...}}` with 400/401/404/405/413.

use crate::body::{full, RespBody};
use crate::purge::Purge;
use crate::Node;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_cache::canonicalize;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Largest admin request body.
const MAX_BODY: usize = 1 << 20;

/// Serve the admin listener until the runtime stops.
pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(answer(&node, req, peer).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(node: &Node, req: Request<Incoming>, peer: SocketAddr) -> Response<RespBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            node.render_metrics(),
        ),
        (&Method::GET, "/healthz") => {
            if node.catching_up.load(Ordering::Relaxed) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "catching up with the control log\n".into(),
                )
            } else if node.draining.load(Ordering::Relaxed) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "draining\n".into(),
                )
            } else {
                text(StatusCode::OK, "text/plain", "ok\n".into())
            }
        }
        (&Method::POST, "/purge") => {
            if let Err(e) = authorize(node, &req, peer) {
                return e.response();
            }
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too-large",
                        "request body over 1 MiB",
                    )
                }
            };
            match purge(node, &body).await {
                Ok(r) => r,
                Err(e) => e.response(),
            }
        }
        (_, "/purge") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "use POST",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not-found",
            "try /metrics, /healthz or POST /purge",
        ),
    }
}

/// An admin request (or a purge the control plane delivered) that cannot be carried out.
#[derive(Debug, Clone)]
pub struct AdminError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl AdminError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn response(&self) -> Response<RespBody> {
        error(self.status, self.code, &self.message)
    }
}

fn authorize(node: &Node, req: &Request<Incoming>, peer: SocketAddr) -> Result<(), AdminError> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token_ok = match (&node.admin_token, bearer) {
        (Some(t), Some(b)) => constant_time_eq(t.as_bytes(), b.as_bytes()),
        _ => false,
    };
    if token_ok || (peer.ip().is_loopback() && bearer.is_none()) {
        return Ok(());
    }
    Err(AdminError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "admin requests need a loopback client or Authorization: Bearer <node.admin_token>",
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /purge` body, and what the control plane's log delivers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PurgeRequest {
    /// The tenant (required for hosts, tags and everything).
    pub tenant: Option<String>,
    /// Absolute URLs.
    pub urls: Vec<String>,
    /// Absolute URL prefixes.
    pub prefixes: Vec<String>,
    /// Hostnames.
    pub hosts: Vec<String>,
    /// Surrogate-key tags.
    pub tags: Vec<String>,
    /// The whole tenant.
    pub everything: bool,
    /// Mark stale instead of removing (served stale while one revalidation refreshes it).
    pub soft: bool,
}

/// What a purge request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Stored objects removed.
    pub removed: usize,
    /// Purges applied (one per URL, prefix, host, tag...).
    pub purges: usize,
}

async fn purge(node: &Node, body: &[u8]) -> Result<Response<RespBody>, AdminError> {
    let req: PurgeRequest =
        serde_json::from_slice(body).map_err(|e| AdminError::bad("bad-json", e.to_string()))?;
    let done = purge_request(node, &req).await?;
    let body = serde_json::json!({ "removed": done.removed, "purges": done.purges }).to_string();
    Ok(text(StatusCode::OK, "application/json", body))
}

/// Apply a purge request on `node`: every URL, prefix, host, tag (and `everything`) of it.
pub async fn purge_request(node: &Node, req: &PurgeRequest) -> Result<PurgeOutcome, AdminError> {
    let named = |field: &str| -> Result<String, AdminError> {
        req.tenant
            .clone()
            .ok_or_else(|| AdminError::bad("missing-tenant", format!("{field} need \"tenant\"")))
    };
    let mut todo: Vec<(String, Purge)> = Vec::new();
    for (i, u) in req.urls.iter().enumerate() {
        let (tenant, url) = locate(node, req.tenant.as_deref(), u)
            .map_err(|m| AdminError::bad("bad-url", format!("urls[{i}]: {m}")))?;
        todo.push((tenant, Purge::Url(url)));
    }
    for (i, p) in req.prefixes.iter().enumerate() {
        let (tenant, url) = locate(node, req.tenant.as_deref(), p)
            .map_err(|m| AdminError::bad("bad-url", format!("prefixes[{i}]: {m}")))?;
        todo.push((
            tenant,
            Purge::Prefix {
                host: url.host,
                path_prefix: url.path,
            },
        ));
    }
    if !req.hosts.is_empty() {
        let tenant = named("hosts")?;
        for (i, h) in req.hosts.iter().enumerate() {
            let host = outpost_cache::key::canonical_host(h)
                .map_err(|e| AdminError::bad("bad-host", format!("hosts[{i}]: {e}")))?;
            todo.push((tenant.clone(), Purge::Host(host)));
        }
    }
    if !req.tags.is_empty() {
        let tenant = named("tags")?;
        for t in &req.tags {
            todo.push((tenant.clone(), Purge::Tag(t.clone())));
        }
    }
    if req.everything {
        todo.push((named("everything")?, Purge::Everything));
    }
    if todo.is_empty() {
        return Err(AdminError::bad(
            "empty-purge",
            "name urls, prefixes, hosts, tags or everything",
        ));
    }
    let mut removed = 0;
    for (tenant, p) in &todo {
        if req.soft {
            node.soft_purge(tenant, p).ok_or_else(|| {
                AdminError::new(
                    StatusCode::NOT_FOUND,
                    "unknown-tenant",
                    format!("no tenant {tenant:?}"),
                )
            })?;
            continue;
        }
        removed += node.purge(tenant, p).await.ok_or_else(|| {
            AdminError::new(
                StatusCode::NOT_FOUND,
                "unknown-tenant",
                format!("no tenant {tenant:?}"),
            )
        })?;
    }
    Ok(PurgeOutcome {
        removed,
        purges: todo.len(),
    })
}

/// The tenant and canonical URL of an absolute `http://host/path` for a purge.
fn locate(
    node: &Node,
    tenant: Option<&str>,
    raw: &str,
) -> Result<(String, outpost_cache::CanonicalUrl), String> {
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
        .ok_or("must be an absolute http:// or https:// URL")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let snapshot = node.config();
    let t = match tenant {
        Some(name) => snapshot
            .tenants
            .by_name(name)
            .ok_or_else(|| format!("no tenant {name:?}"))?,
        None => {
            let h = outpost_cache::key::canonical_host(host).map_err(|e| e.to_string())?;
            snapshot
                .tenants
                .find(&h)
                .ok_or_else(|| format!("no tenant serves host {h}"))?
        }
    };
    let url = canonicalize(host, path, &t.query).map_err(|e| e.to_string())?;
    Ok((t.name.clone(), url))
}

fn text(status: StatusCode, ctype: &'static str, body: String) -> Response<RespBody> {
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<RespBody> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    text(status, "application/json", body)
}
