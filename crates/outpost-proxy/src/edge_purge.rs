//! `PURGE` on the edge, the Varnish and Fastly habit: `PURGE /path` with `Host` purges that URL
//! (every variant) on every node; with `Surrogate-Key: a b` it purges those tags of the host's
//! tenant instead; `Fastly-Soft-Purge: 1` (or `Outpost-Soft-Purge: 1`) marks stale rather than
//! removes. The node does not decide on its own: it hands the purge, with the client's
//! `Authorization: Bearer <key>`, to the control plane's API (`POST /api/v1/purge`), which
//! checks the key (a tenant key acts on its own tenant only) and propagates it, and relays the
//! API's answer (202 with the purge id, or its error). Without a control plane: 501.

use crate::body::{full, RespBody};
use crate::log::RequestLog;
use crate::metrics::Outcome;
use crate::tenant::Tenant;
use crate::Node;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Largest control-plane answer relayed.
const MAX_ANSWER: usize = 64 * 1024;

fn answer(status: StatusCode, body: Bytes) -> Response<RespBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<RespBody> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    answer(status, Bytes::from(body))
}

/// The purge the request asks for, as the control API's JSON body.
pub fn purge_body(
    tenant: &str,
    host: &str,
    target: &str,
    headers: &HeaderMap,
) -> serde_json::Value {
    let flag = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true"))
    };
    let soft = flag("fastly-soft-purge") || flag("outpost-soft-purge");
    let tags: Vec<String> = headers
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split_ascii_whitespace())
        .map(str::to_string)
        .collect();
    if tags.is_empty() {
        serde_json::json!({"tenant": tenant, "urls": [format!("http://{host}{target}")], "soft": soft})
    } else {
        serde_json::json!({"tenant": tenant, "tags": tags, "soft": soft})
    }
}

/// Relay a `PURGE` to the control plane.
pub async fn handle(
    node: &Node,
    tenant: &Tenant,
    headers: &HeaderMap,
    host: &str,
    target: &str,
    log: &mut RequestLog,
) -> Response<RespBody> {
    log.outcome = Outcome::Pass;
    let Some(api) = node.control_api.get() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "no-control-plane",
            "PURGE needs a control plane; this node has none",
        );
    };
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("Bearer "))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "PURGE needs Authorization: Bearer <tenant key>",
        );
    };
    let body = purge_body(&tenant.name, host, target, headers).to_string();
    match tokio::time::timeout(Duration::from_secs(10), post(api, auth, &body)).await {
        Ok(Ok((status, body))) => answer(status, body),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "PURGE: the control plane did not answer");
            error(
                StatusCode::BAD_GATEWAY,
                "control-plane-unreachable",
                "the control plane did not answer",
            )
        }
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "control-plane-timeout",
            "the control plane did not answer in time",
        ),
    }
}

/// `POST {api}/api/v1/purge` over HTTP/1.1 (`api` is `http://host:port`), with hyper's client.
async fn post(api: &str, auth: &str, body: &str) -> Result<(StatusCode, Bytes), String> {
    let authority = api
        .strip_prefix("http://")
        .ok_or("the control API must be http://")?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::post("/api/v1/purge")
        .header(header::HOST, authority)
        .header(header::AUTHORIZATION, auth)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_request_becomes_a_url_or_tag_purge() {
        let mut h = HeaderMap::new();
        let b = purge_body("shop", "shop.test", "/a?x=1", &h);
        assert_eq!(b["urls"][0], "http://shop.test/a?x=1");
        assert_eq!(b["soft"], false);
        h.insert("surrogate-key", HeaderValue::from_static("home  launch"));
        h.insert("fastly-soft-purge", HeaderValue::from_static("1"));
        let b = purge_body("shop", "shop.test", "/", &h);
        assert_eq!(b["tags"], serde_json::json!(["home", "launch"]));
        assert_eq!(b["tenant"], "shop");
        assert_eq!(b["soft"], true);
        assert!(b.get("urls").is_none());
    }
}
