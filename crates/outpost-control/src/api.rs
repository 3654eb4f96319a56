//! The control plane's REST API (`/api/v1`, JSON): tenants, API keys, config versions (list,
//! diff, rollback), purges with per-node status, nodes, and the OpenAPI document. Every request
//! but the document needs `Authorization: Bearer <key>`: the admin key acts on everything, a
//! tenant key on its tenant only (401 missing or unknown, 403 another tenant's). Requests are
//! rate limited per key (429 with `Retry-After`). Writes accept `Idempotency-Key`: a retry with
//! the same key and request gets the first answer and changes nothing. Errors are
//! `{"error":{"code":...,"message":...,"field":...}}`: 400 malformed JSON, 404 unknown ids, 409
//! a hostname another tenant has, 422 a field that fails validation (named by its path).

use crate::control::Control;
use crate::log::{now_ms, Op, PurgeOp, WarmOp};
use crate::store::{IdemRecord, Principal, PurgeRecord, StoreError, Tx};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_proxy::admin::PurgeRequest;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::Instrument;

/// Request ids of the API's tracing spans.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Largest request body.
const MAX_BODY: usize = 1 << 20;
/// A node not heard from for this long is not waited for in purge status.
const LIVE_MS: u64 = 10_000;

type Resp = Response<Full<Bytes>>;

/// Serve the API on `listener`.
pub async fn serve(listener: TcpListener, control: Arc<Control>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let c = control.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let c = c.clone();
                let span = tracing::info_span!(
                    "api",
                    id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    method = %req.method(),
                    path = %req.uri().path()
                );
                async move { Ok::<_, Infallible>(handle(&c, req).await) }.instrument(span)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// An API error: status, code, message and the offending field.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            message: if field.is_empty() {
                message
            } else {
                format!("{field}: {message}")
            },
            field: Some(field),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "")
        }
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", what)
    }

    fn forbidden(what: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", what)
    }

    fn response(&self) -> Resp {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(f) = &self.field {
            err["field"] = Value::String(f.clone());
        }
        let mut r = json_response(self.status, &json!({ "error": err }));
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "control store failure");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "control store failure",
        )
    }
}

/// Private keys never leave the control plane through the API: every `key_pem` in an answer
/// (tenants, versions, diffs) is replaced by a marker.
fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "key_pem" {
                    if x.as_str().is_some_and(|s| !s.is_empty()) {
                        *x = Value::String("(set; never shown)".into());
                    }
                } else {
                    redact(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

fn json_response(status: StatusCode, body: &Value) -> Resp {
    let mut body = body.clone();
    redact(&mut body);
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A successful answer: status and JSON body.
type Answer = (StatusCode, Value);

async fn handle(c: &Control, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    if parts.method == Method::GET && path == "/api/v1/openapi.json" {
        return json_response(StatusCode::OK, &crate::openapi::document());
    }
    let who = match authenticate(c, &parts.headers) {
        Ok(p) => p,
        Err(e) => return e.response(),
    };
    if let Err(wait) = c.admit(&who.key_id) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("too many requests for this key; retry in {wait} s"),
        );
        e.retry_after = Some(wait);
        return e.response();
    }
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "request body over 1 MiB",
            )
            .response()
        }
    };
    let idem = parts
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let Some(rest) = segs.strip_prefix(&["api", "v1"]) else {
        return ApiError::not_found(format!("no route {path}")).response();
    };
    let m = &parts.method;
    let sig = format!("{m} {path} {}", digest(&bytes));
    let result = match (m, rest) {
        (&Method::GET, ["tenants"]) => list_tenants(c, &who),
        (&Method::POST, ["tenants"]) => {
            write(c, &who, idem, &sig, |t| create_tenant(c, &who, t, &bytes)).await
        }
        (&Method::GET, ["tenants", name]) => get_tenant(c, &who, name),
        (&Method::PUT, ["tenants", name]) => {
            write(c, &who, idem, &sig, |t| {
                update_tenant(c, &who, t, name, &bytes)
            })
            .await
        }
        (&Method::DELETE, ["tenants", name]) => {
            write(c, &who, idem, &sig, |t| delete_tenant(c, &who, t, name)).await
        }
        (&Method::POST, ["tenants", name, "keys"]) => {
            write(c, &who, idem, &sig, |t| create_key(&who, t, name)).await
        }
        (&Method::PUT, ["tenants", name, "certificate"]) => {
            write(c, &who, idem, &sig, |t| {
                put_certificate(c, &who, t, name, &bytes)
            })
            .await
        }
        (&Method::GET, ["versions"]) => list_versions(c, &who),
        (&Method::GET, ["versions", v]) => get_version(c, &who, v),
        (&Method::GET, ["versions", v, "diff"]) => diff_versions(c, &who, v, &query),
        (&Method::POST, ["versions", v, "rollback"]) => {
            write(c, &who, idem, &sig, |t| rollback(c, &who, t, v)).await
        }
        (&Method::POST, ["purge"]) => {
            write(c, &who, idem, &sig, |t| create_purge(&who, t, &bytes)).await
        }
        (&Method::GET, ["purge", id]) => purge_status(c, &who, id),
        (&Method::POST, ["warm"]) => {
            write(c, &who, idem, &sig, |t| create_warm(c, &who, t, &bytes)).await
        }
        (&Method::GET, ["warm", id]) => warm_status(c, &who, id),
        (&Method::GET, ["nodes"]) => nodes(c, &who),
        (&Method::GET, ["analytics"]) => analytics(c, &who, &query),
        (
            _,
            ["tenants"] | ["tenants", _] | ["tenants", _, "keys" | "certificate"] | ["versions"],
        )
        | (_, ["versions", _] | ["versions", _, "diff" | "rollback"])
        | (_, ["purge"] | ["purge", _] | ["warm"] | ["warm", _] | ["nodes"] | ["analytics"]) => {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{m} is not allowed on {path}"),
            ))
        }
        _ => Err(ApiError::not_found(format!("no route {path}"))),
    };
    match result {
        Ok((status, body)) => json_response(status, &body),
        Err(e) => e.response(),
    }
}

/// A short digest of a request body (idempotency records compare requests by it).
fn digest(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(body)
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn authenticate(c: &Control, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("send Authorization: Bearer <key>"))?;
    c.store
        .tx(|t| t.principal(key.trim()))?
        .ok_or_else(|| unauthorized("unknown API key"))
}

fn admin_only(who: &Principal) -> Result<(), ApiError> {
    match &who.tenant {
        None => Ok(()),
        Some(_) => Err(ApiError::forbidden("this needs the admin key")),
    }
}

fn may_act_on(who: &Principal, tenant: &str) -> Result<(), ApiError> {
    match &who.tenant {
        Some(t) if t != tenant => Err(ApiError::forbidden(format!(
            "this key acts for tenant {t:?} only"
        ))),
        _ => Ok(()),
    }
}

/// Run a write in one transaction with its idempotency record; publish what it logged.
async fn write(
    c: &Control,
    who: &Principal,
    idem: Option<String>,
    sig: &str,
    f: impl FnOnce(&Tx<'_>) -> Result<Answer, ApiError>,
) -> Result<Answer, ApiError> {
    let now = now_ms();
    let answer = c.store.tx(|t| -> Result<Answer, ApiError> {
        if let Some(k) = &idem {
            if let Some(rec) = t.idem(&who.key_id, k)? {
                if rec.request != sig {
                    return Err(ApiError::invalid(
                        "Idempotency-Key",
                        "already used for a different request",
                    ));
                }
                let body = serde_json::from_str(&rec.body).unwrap_or(Value::Null);
                return Ok((
                    StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK),
                    body,
                ));
            }
        }
        let (status, body) = f(t)?;
        if let Some(k) = &idem {
            t.put_idem(
                &who.key_id,
                k,
                &IdemRecord {
                    request: sig.to_string(),
                    status: status.as_u16(),
                    body: body.to_string(),
                },
                now,
            )?;
        }
        Ok((status, body))
    })?;
    c.flush().await;
    Ok(answer)
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-json", e.to_string()))
}

// ----- tenants -----

fn list_tenants(c: &Control, who: &Principal) -> Result<Answer, ApiError> {
    let all = c.store.tx(|t| t.tenants())?;
    let docs: Vec<Value> = all
        .into_iter()
        .filter(|(n, _)| who.tenant.as_ref().is_none_or(|t| t == n))
        .map(|(_, d)| d)
        .collect();
    Ok((StatusCode::OK, json!({ "tenants": docs })))
}

fn get_tenant(c: &Control, who: &Principal, name: &str) -> Result<Answer, ApiError> {
    may_act_on(who, name)?;
    let doc = c
        .store
        .tx(|t| t.tenant(name))?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {name:?}")))?;
    Ok((StatusCode::OK, doc))
}

/// Validate `doc` as the tenant `name` among the others; returns the document to store.
fn checked_tenant(
    c: &Control,
    t: &Tx<'_>,
    mut doc: Value,
    name: Option<&str>,
) -> Result<(String, Value), ApiError> {
    let Some(obj) = doc.as_object_mut() else {
        return Err(ApiError::invalid("", "a tenant is a JSON object"));
    };
    match (name, obj.get("name")) {
        (Some(n), None) => {
            obj.insert("name".into(), Value::String(n.to_string()));
        }
        (Some(n), Some(v)) if v.as_str() != Some(n) => {
            return Err(ApiError::invalid(
                "name",
                format!("does not match the tenant in the path ({n:?}); tenants cannot be renamed"),
            ))
        }
        (None, None) => return Err(ApiError::invalid("name", "missing")),
        _ => {}
    }
    let name = match doc.get("name").and_then(Value::as_str) {
        Some(n) => n.to_string(),
        None => return Err(ApiError::invalid("name", "must be a string")),
    };
    let others: Vec<(String, Value)> = t
        .tenants()?
        .into_iter()
        .filter(|(n, _)| *n != name)
        .collect();
    // Hostnames are unique across tenants.
    let mine: Vec<String> = doc
        .get("hostnames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    for (other, d) in &others {
        let theirs = d.get("hostnames").and_then(Value::as_array);
        for h in theirs.into_iter().flatten().filter_map(Value::as_str) {
            if mine.iter().any(|m| m.eq_ignore_ascii_case(h)) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "hostname-taken",
                    format!("hostname {h:?} belongs to tenant {other:?}"),
                ));
            }
        }
    }
    let mut all: Vec<Value> = others.into_iter().map(|(_, d)| d).collect();
    all.push(doc.clone());
    let idx = all.len() - 1;
    let cfg = c.validate_tenants(&all).map_err(|(i, field, msg)| {
        if i == idx || i == usize::MAX {
            ApiError::invalid(field, msg)
        } else {
            ApiError::invalid(format!("(tenant {i}) {field}"), msg)
        }
    })?;
    // Store the normalised document (every field, defaults filled in).
    let normal = cfg
        .tenants
        .get(idx)
        .map(crate::control::tenant_doc)
        .unwrap_or(doc);
    Ok((name, normal))
}

fn create_tenant(
    c: &Control,
    who: &Principal,
    t: &Tx<'_>,
    body: &[u8],
) -> Result<Answer, ApiError> {
    admin_only(who)?;
    let doc = parse_json(body)?;
    let (name, doc) = checked_tenant(c, t, doc, None)?;
    if t.tenant(&name)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tenant-exists",
            format!("tenant {name:?} exists; PUT /api/v1/tenants/{name} updates it"),
        ));
    }
    let now = now_ms();
    t.put_tenant(&name, &doc, now)?;
    let entry = c.new_version(t, &format!("create tenant {name}"), now)?;
    Ok((
        StatusCode::CREATED,
        json!({ "tenant": doc, "version": version_of(&entry.op), "seq": entry.seq, "rollout": c.rollout_plan() }),
    ))
}

/// `PUT /tenants/{name}/certificate` `{"cert_pem": ..., "key_pem": ...}`: the tenant's TLS
/// certificate, checked (both parse, the key matches), in a new config version; every node with
/// an HTTPS listener serves it within a reload (2 s). Redirect and HSTS settings are kept.
fn put_certificate(
    c: &Control,
    who: &Principal,
    t: &Tx<'_>,
    name: &str,
    body: &[u8],
) -> Result<Answer, ApiError> {
    may_act_on(who, name)?;
    let Some(mut doc) = t.tenant(name)? else {
        return Err(ApiError::not_found(format!("no tenant {name:?}")));
    };
    let req = parse_json(body)?;
    let field = |f: &str| -> Result<String, ApiError> {
        match req.get(f).and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
            _ => Err(ApiError::invalid(f, "a PEM string is required")),
        }
    };
    let (cert_pem, key_pem) = (field("cert_pem")?, field("key_pem")?);
    outpost_proxy::tls::check_pem(&cert_pem, &key_pem)
        .map_err(|e| ApiError::invalid(e.path.clone(), e.message))?;
    let mut tls = doc.get("tls").cloned().unwrap_or_else(|| json!({}));
    if let Some(o) = tls.as_object_mut() {
        o.insert("cert".into(), Value::String(String::new()));
        o.insert("key".into(), Value::String(String::new()));
        o.insert("acme".into(), Value::Bool(false));
        o.insert("cert_pem".into(), Value::String(cert_pem));
        o.insert("key_pem".into(), Value::String(key_pem));
    }
    if let Some(o) = doc.as_object_mut() {
        o.insert("tls".into(), tls);
    }
    let (_, doc) = checked_tenant(c, t, doc, Some(name))?;
    let now = now_ms();
    t.put_tenant(name, &doc, now)?;
    let entry = c.new_version(t, &format!("certificate of tenant {name}"), now)?;
    Ok((
        StatusCode::OK,
        json!({ "tenant": doc, "version": version_of(&entry.op), "seq": entry.seq, "rollout": c.rollout_plan() }),
    ))
}

fn update_tenant(
    c: &Control,
    who: &Principal,
    t: &Tx<'_>,
    name: &str,
    body: &[u8],
) -> Result<Answer, ApiError> {
    may_act_on(who, name)?;
    if t.tenant(name)?.is_none() {
        return Err(ApiError::not_found(format!("no tenant {name:?}")));
    }
    let doc = parse_json(body)?;
    let (_, doc) = checked_tenant(c, t, doc, Some(name))?;
    let now = now_ms();
    t.put_tenant(name, &doc, now)?;
    let entry = c.new_version(t, &format!("update tenant {name}"), now)?;
    Ok((
        StatusCode::OK,
        json!({ "tenant": doc, "version": version_of(&entry.op), "seq": entry.seq, "rollout": c.rollout_plan() }),
    ))
}

fn delete_tenant(c: &Control, who: &Principal, t: &Tx<'_>, name: &str) -> Result<Answer, ApiError> {
    admin_only(who)?;
    if !t.delete_tenant(name)? {
        return Err(ApiError::not_found(format!("no tenant {name:?}")));
    }
    t.delete_keys_of(name)?;
    let entry = c.new_version(t, &format!("delete tenant {name}"), now_ms())?;
    Ok((
        StatusCode::OK,
        json!({ "deleted": name, "version": version_of(&entry.op), "seq": entry.seq, "rollout": c.rollout_plan() }),
    ))
}

fn create_key(who: &Principal, t: &Tx<'_>, name: &str) -> Result<Answer, ApiError> {
    admin_only(who)?;
    if t.tenant(name)?.is_none() {
        return Err(ApiError::not_found(format!("no tenant {name:?}")));
    }
    let key = t.create_key(Some(name), now_ms())?;
    Ok((
        StatusCode::CREATED,
        json!({ "tenant": name, "key": key, "note": "shown once: only its hash is stored" }),
    ))
}

fn version_of(op: &Op) -> u64 {
    match op {
        Op::Config { version, .. } => *version,
        Op::Purge(_) | Op::Warm(_) => 0,
    }
}

// ----- versions -----

fn parse_version(v: &str) -> Result<u64, ApiError> {
    v.parse()
        .map_err(|_| ApiError::not_found(format!("no version {v:?}")))
}

fn list_versions(c: &Control, who: &Principal) -> Result<Answer, ApiError> {
    admin_only(who)?;
    let (vs, rollouts) = c
        .store
        .tx(|t| Ok::<_, StoreError>((t.versions()?, t.rollouts(None)?)))?;
    let list: Vec<Value> = vs
        .into_iter()
        .map(|(v, at, reason, n)| {
            let rollout = rollouts.iter().find(|r| r.version == v);
            json!({"version": v, "created_ms": at, "reason": reason, "tenants": n, "rollout": rollout})
        })
        .collect();
    Ok((StatusCode::OK, json!({ "versions": list })))
}

fn get_version(c: &Control, who: &Principal, v: &str) -> Result<Answer, ApiError> {
    admin_only(who)?;
    let n = parse_version(v)?;
    let (found, rollouts) = c
        .store
        .tx(|t| Ok::<_, StoreError>((t.version(n)?, t.rollouts(None)?)))?;
    let (reason, tenants) = found.ok_or_else(|| ApiError::not_found(format!("no version {n}")))?;
    let rollout = rollouts.into_iter().find(|r| r.version == n);
    Ok((
        StatusCode::OK,
        json!({"version": n, "reason": reason, "tenants": tenants, "rollout": rollout}),
    ))
}

fn diff_versions(c: &Control, who: &Principal, v: &str, query: &str) -> Result<Answer, ApiError> {
    admin_only(who)?;
    let to = parse_version(v)?;
    let from = match query.split('&').find_map(|kv| kv.strip_prefix("from=")) {
        Some(f) => f
            .parse::<u64>()
            .map_err(|_| ApiError::invalid("from", "must be a version number"))?,
        None => to.saturating_sub(1),
    };
    let (a, b) = c
        .store
        .tx(|t| Ok::<_, StoreError>((t.version(from)?, t.version(to)?)))?;
    let b = b
        .ok_or_else(|| ApiError::not_found(format!("no version {to}")))?
        .1;
    let a = match a {
        Some((_, t)) => t,
        None if from == 0 => Vec::new(),
        None => return Err(ApiError::not_found(format!("no version {from}"))),
    };
    let by_name = |l: &[Value]| -> std::collections::BTreeMap<String, Value> {
        l.iter()
            .map(|d| {
                (
                    d.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    d.clone(),
                )
            })
            .collect()
    };
    let (old, new) = (by_name(&a), by_name(&b));
    let added: Vec<&String> = new.keys().filter(|k| !old.contains_key(*k)).collect();
    let removed: Vec<&String> = old.keys().filter(|k| !new.contains_key(*k)).collect();
    let changed: Vec<Value> = new
        .iter()
        .filter_map(|(k, d)| {
            let o = old.get(k)?;
            let fields = changed_fields(o, d);
            (!fields.is_empty()).then(|| json!({"tenant": k, "fields": fields}))
        })
        .collect();
    Ok((
        StatusCode::OK,
        json!({"from": from, "to": to, "added": added, "removed": removed, "changed": changed}),
    ))
}

/// Top-level fields that differ between two tenant documents.
fn changed_fields(a: &Value, b: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec![String::new()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

fn rollback(c: &Control, who: &Principal, t: &Tx<'_>, v: &str) -> Result<Answer, ApiError> {
    admin_only(who)?;
    let n = parse_version(v)?;
    let (_, tenants) = t
        .version(n)?
        .ok_or_else(|| ApiError::not_found(format!("no version {n}")))?;
    c.validate_tenants(&tenants).map_err(|(_, f, m)| {
        ApiError::invalid(f, format!("version {n} no longer validates: {m}"))
    })?;
    let now = now_ms();
    t.replace_tenants(&tenants, now)?;
    // An operator's rollback goes everywhere at once and ends any canary being watched.
    t.supersede_canaries(&format!("manual rollback to version {n}"), now)?;
    let entry = t.new_version(&format!("rollback to version {n}"), now)?;
    Ok((
        StatusCode::CREATED,
        json!({"version": version_of(&entry.op), "rolled_back_to": n, "seq": entry.seq}),
    ))
}

// ----- purges -----

/// The host of an absolute http(s) URL.
fn url_host(u: &str) -> Option<String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The tenant serving `host`, among the stored documents.
fn tenant_of_host(tenants: &[(String, Value)], host: &str) -> Option<String> {
    let serves = |d: &Value, exact: bool| {
        d.get("hostnames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|h| {
                if exact {
                    h.eq_ignore_ascii_case(host)
                } else {
                    h == "*"
                }
            })
    };
    tenants
        .iter()
        .find(|(_, d)| serves(d, true))
        .or_else(|| tenants.iter().find(|(_, d)| serves(d, false)))
        .map(|(n, _)| n.clone())
}

/// Every URL of `list` (the body field `field`) is absolute and served by a tenant, `tenant`
/// when one is named (403 for a tenant key's foreign host).
fn check_urls(
    who: &Principal,
    tenants: &[(String, Value)],
    tenant: Option<&str>,
    field: &str,
    list: &[String],
) -> Result<(), ApiError> {
    for (i, u) in list.iter().enumerate() {
        let host = url_host(u).ok_or_else(|| {
            ApiError::invalid(
                format!("{field}[{i}]"),
                "must be an absolute http:// or https:// URL",
            )
        })?;
        match (tenant, tenant_of_host(tenants, &host)) {
            (_, None) => {
                return Err(ApiError::invalid(
                    format!("{field}[{i}]"),
                    format!("no tenant serves host {host:?}"),
                ))
            }
            (Some(mine), Some(o)) if mine != o => {
                return Err(if who.tenant.is_some() {
                    ApiError::forbidden(format!("{field}[{i}]: host {host:?} is not your tenant's"))
                } else {
                    ApiError::invalid(
                        format!("{field}[{i}]"),
                        format!("host {host:?} belongs to tenant {o:?}, not {mine:?}"),
                    )
                })
            }
            _ => {}
        }
    }
    Ok(())
}

fn create_purge(who: &Principal, t: &Tx<'_>, body: &[u8]) -> Result<Answer, ApiError> {
    let v = parse_json(body)?;
    let req: PurgeRequest = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    let tenants = t.tenants()?;
    let tenant = match (&who.tenant, &req.tenant) {
        (Some(mine), Some(named)) if mine != named => {
            return Err(ApiError::forbidden(format!(
                "this key acts for tenant {mine:?} only"
            )))
        }
        (Some(mine), _) => Some(mine.clone()),
        (None, named) => named.clone(),
    };
    if let Some(name) = &tenant {
        if !tenants.iter().any(|(n, _)| n == name) {
            return Err(ApiError::invalid("tenant", format!("no tenant {name:?}")));
        }
    }
    for (field, list) in [("urls", &req.urls), ("prefixes", &req.prefixes)] {
        check_urls(who, &tenants, tenant.as_deref(), field, list)?;
    }
    let needs_tenant = !req.hosts.is_empty() || !req.tags.is_empty() || req.everything;
    if needs_tenant && tenant.is_none() {
        return Err(ApiError::invalid(
            "tenant",
            "purging hosts, tags or everything needs \"tenant\"",
        ));
    }
    for (i, h) in req.hosts.iter().enumerate() {
        if h.is_empty() || h.contains(['/', ' ']) {
            return Err(ApiError::invalid(
                format!("hosts[{i}]"),
                "must be a hostname",
            ));
        }
    }
    for (i, tag) in req.tags.iter().enumerate() {
        if tag.is_empty() || tag.contains(char::is_whitespace) {
            return Err(ApiError::invalid(
                format!("tags[{i}]"),
                "must be a non-empty tag without spaces",
            ));
        }
    }
    if req.urls.is_empty() && req.prefixes.is_empty() && !needs_tenant {
        return Err(ApiError::invalid(
            "",
            "name urls, prefixes, hosts, tags or everything",
        ));
    }
    let now = now_ms();
    let id = format!("pg_{}", crate::store::random_hex(8));
    let op = PurgeOp {
        id: id.clone(),
        purge: PurgeRequest {
            tenant: tenant.clone(),
            ..req
        },
    };
    let request = serde_json::to_value(&op).unwrap_or(Value::Null);
    let entry = t.append(Op::Purge(op), now)?;
    t.insert_purge(&PurgeRecord {
        id: id.clone(),
        seq: entry.seq,
        tenant,
        request,
        issued_ms: now,
    })?;
    Ok((
        StatusCode::ACCEPTED,
        json!({"purge_id": id, "status": "propagating", "seq": entry.seq}),
    ))
}

fn purge_status(c: &Control, who: &Principal, id: &str) -> Result<Answer, ApiError> {
    let (p, acks, nodes) = c.store.tx(|t| -> Result<_, StoreError> {
        let Some(p) = t.purge(id)? else {
            return Ok((None, Vec::new(), Vec::new()));
        };
        let acks = t.acks_of(p.seq)?;
        Ok((Some(p), acks, t.nodes()?))
    })?;
    let p = p.ok_or_else(|| ApiError::not_found(format!("no purge {id:?}")))?;
    if let Some(mine) = &who.tenant {
        if p.tenant.as_deref() != Some(mine.as_str()) {
            return Err(ApiError::forbidden(format!(
                "purge {id} is not tenant {mine:?}'s"
            )));
        }
    }
    let now = now_ms();
    let mut rows = Vec::new();
    let (mut applied, mut total, mut last) = (0usize, 0usize, None::<u64>);
    // Every member of the topology is waited for (one that is down applies the purge before it
    // serves again, and shows as pending until then); other nodes while they are heard from.
    let members = c.members();
    let mut all = nodes.clone();
    for m in &members {
        if !all.iter().any(|n| n.name == *m) {
            all.push(crate::store::NodeState {
                name: m.clone(),
                applied: 0,
                seen_ms: 0,
            });
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    for n in &all {
        let ack = acks.iter().find(|(node, _, _)| *node == n.name);
        let live = now.saturating_sub(n.seen_ms) <= LIVE_MS;
        let done = ack.is_some() || n.applied >= p.seq;
        if !live && !done && !members.contains(&n.name) {
            continue;
        }
        total += 1;
        if done {
            applied += 1;
        }
        let at = ack.map(|(_, at, _)| *at);
        if let Some(a) = at {
            last = Some(last.map_or(a, |l: u64| l.max(a)));
        }
        rows.push(json!({
            "node": n.name,
            "applied": done,
            "applied_ms": at,
            "ms_after_issue": at.map(|a| a.saturating_sub(p.issued_ms)),
            "error": ack.and_then(|(_, _, e)| e.clone()),
            "live": live,
        }));
    }
    let done = total > 0 && applied == total;
    Ok((
        StatusCode::OK,
        json!({
            "purge_id": p.id,
            "seq": p.seq,
            "tenant": p.tenant,
            "request": p.request,
            "issued_ms": p.issued_ms,
            "status": if done { "done" } else { "propagating" },
            "nodes_applied": applied,
            "nodes_total": total,
            "time_to_last_node_ms": if done { last.map(|l| l.saturating_sub(p.issued_ms)) } else { None },
            "nodes": rows,
        }),
    ))
}

fn nodes(c: &Control, who: &Principal) -> Result<Answer, ApiError> {
    admin_only(who)?;
    let (mut nodes, last) = c
        .store
        .tx(|t| Ok::<_, StoreError>((t.nodes()?, t.last_seq()?)))?;
    for m in c.members() {
        if !nodes.iter().any(|n| n.name == m) {
            nodes.push(crate::store::NodeState {
                name: m,
                applied: 0,
                seen_ms: 0,
            });
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let now = now_ms();
    let list: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "node": n.name,
                "applied": n.applied,
                "behind": last.saturating_sub(n.applied),
                "seen_ms_ago": now.saturating_sub(n.seen_ms),
                "live": now.saturating_sub(n.seen_ms) <= LIVE_MS,
            })
        })
        .collect();
    Ok((StatusCode::OK, json!({"log_seq": last, "nodes": list})))
}

// ----- warm -----

/// `POST /api/v1/warm` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WarmBody {
    urls: Vec<String>,
    regions: Vec<String>,
}

/// The edges that fetch for a warm job in `regions` (empty: all), when there is a topology.
fn warm_edges(c: &Control, regions: &[String]) -> Vec<(String, String)> {
    let Some(topo) = &c.template.topology else {
        return Vec::new();
    };
    topo.members()
        .into_iter()
        .filter(|(role, region, _, _)| {
            *role == outpost_config::Role::Edge
                && (regions.is_empty() || regions.iter().any(|r| r == region))
        })
        .map(|(_, region, _, m)| (m.name.clone(), region.to_string()))
        .collect()
}

fn create_warm(c: &Control, who: &Principal, t: &Tx<'_>, body: &[u8]) -> Result<Answer, ApiError> {
    let v = parse_json(body)?;
    let req: WarmBody = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    if req.urls.is_empty() {
        return Err(ApiError::invalid("urls", "name at least one URL"));
    }
    let tenants = t.tenants()?;
    check_urls(who, &tenants, who.tenant.as_deref(), "urls", &req.urls)?;
    let known: Vec<&str> = c
        .template
        .topology
        .as_ref()
        .map(|t| t.members().into_iter().map(|m| m.1).collect())
        .unwrap_or_default();
    for (i, r) in req.regions.iter().enumerate() {
        if !known.contains(&r.as_str()) {
            return Err(ApiError::invalid(
                format!("regions[{i}]"),
                format!("no region {r:?} in the topology"),
            ));
        }
    }
    let now = now_ms();
    let id = format!("wm_{}", crate::store::random_hex(8));
    let op = WarmOp {
        id: id.clone(),
        urls: req.urls,
        regions: req.regions,
    };
    let request = serde_json::to_value(&op).unwrap_or(Value::Null);
    let entry = t.append(Op::Warm(op), now)?;
    t.insert_warm(&PurgeRecord {
        id: id.clone(),
        seq: entry.seq,
        tenant: who.tenant.clone(),
        request,
        issued_ms: now,
    })?;
    Ok((
        StatusCode::ACCEPTED,
        json!({"warm_id": id, "status": "running", "seq": entry.seq}),
    ))
}

fn warm_status(c: &Control, who: &Principal, id: &str) -> Result<Answer, ApiError> {
    let (w, acks, nodes) = c.store.tx(|t| -> Result<_, StoreError> {
        let Some(w) = t.warm(id)? else {
            return Ok((None, Vec::new(), Vec::new()));
        };
        let acks = t.acks_with_detail(w.seq)?;
        Ok((Some(w), acks, t.nodes()?))
    })?;
    let w = w.ok_or_else(|| ApiError::not_found(format!("no warm job {id:?}")))?;
    if let Some(mine) = &who.tenant {
        if w.tenant.as_deref() != Some(mine.as_str()) {
            return Err(ApiError::forbidden(format!(
                "warm job {id} is not tenant {mine:?}'s"
            )));
        }
    }
    let regions: Vec<String> = w.request["regions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let total_urls = w.request["urls"].as_array().map_or(0, Vec::len) as u64;
    // The edges of the job's regions; without a topology, the nodes that report on it.
    let expected: Vec<(String, String)> = if c.template.topology.is_some() {
        warm_edges(c, &regions)
    } else {
        let now = now_ms();
        nodes
            .iter()
            .filter(|n| now.saturating_sub(n.seen_ms) <= LIVE_MS)
            .map(|n| (n.name.clone(), String::new()))
            .collect()
    };
    let (mut done, mut failed, mut finished) = (0u64, 0u64, 0usize);
    let rows: Vec<Value> = expected
        .iter()
        .map(|(name, region)| {
            let d = acks
                .iter()
                .find(|(n, _, _, _)| n == name)
                .and_then(|(_, _, _, d)| d.clone())
                .unwrap_or(Value::Null);
            let num = |k: &str| d[k].as_u64().unwrap_or(0);
            done += num("done");
            failed += num("failed");
            if d["finished"] == true {
                finished += 1;
            }
            json!({"node": name, "region": region, "done": num("done"), "failed": num("failed"),
                   "total": total_urls, "finished": d["finished"] == true})
        })
        .collect();
    let complete = !expected.is_empty() && finished == expected.len();
    Ok((
        StatusCode::OK,
        json!({
            "warm_id": w.id, "seq": w.seq, "issued_ms": w.issued_ms, "regions": regions,
            "urls": total_urls, "status": if complete { "done" } else { "running" },
            "fetched": done, "failed": failed, "to_fetch": total_urls * expected.len() as u64,
            "nodes": rows,
        }),
    ))
}

// ----- analytics -----

/// Traffic summed over rollups, with the merged latency histogram.
#[derive(Default)]
struct Agg {
    requests: u64,
    hits: u64,
    classes: [u64; 6],
    bytes_out: u64,
    origin_bytes: u64,
    latency: outpost_proxy::latency::Histogram,
}

impl Agg {
    fn add(&mut self, r: &crate::log::Rollup, origin_bytes: bool) {
        self.requests += r.requests;
        self.hits += r.hits;
        for (a, b) in self.classes.iter_mut().zip(r.classes) {
            *a += b;
        }
        self.bytes_out += r.bytes_out;
        if origin_bytes {
            self.origin_bytes += r.upstream_bytes;
        }
        for (i, n) in &r.latency {
            self.latency.add(*i, *n);
        }
    }

    fn json(&self) -> Value {
        let ms = |q: f64| self.latency.quantile(q).map(|us| us as f64 / 1000.0);
        json!({
            "requests": self.requests,
            "hits": self.hits,
            "hit_ratio": if self.requests == 0 { None } else { Some(self.hits as f64 / self.requests as f64) },
            "bytes_out": self.bytes_out,
            "origin_bytes": self.origin_bytes,
            "status": {"1xx": self.classes[0], "2xx": self.classes[1], "3xx": self.classes[2],
                       "4xx": self.classes[3], "5xx": self.classes[4], "other": self.classes[5]},
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99)},
        })
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

fn analytics(c: &Control, who: &Principal, query: &str) -> Result<Answer, ApiError> {
    let period = query_param(query, "period").unwrap_or("1h");
    let (span_ms, bucket_ms) = match period {
        "1h" => (3_600_000u64, 60_000u64),
        "24h" => (86_400_000, 900_000),
        _ => return Err(ApiError::invalid("period", "use 1h or 24h")),
    };
    let tenant = match (
        &who.tenant,
        query_param(query, "tenant").filter(|t| !t.is_empty()),
    ) {
        (Some(mine), Some(t)) if t != mine => {
            return Err(ApiError::forbidden(format!(
                "this key acts for tenant {mine:?} only"
            )))
        }
        (Some(mine), _) => Some(mine.clone()),
        (None, t) => t.map(str::to_string),
    };
    let now = now_ms();
    let from = now.saturating_sub(span_ms);
    let (rows, docs) = c
        .store
        .tx(|t| Ok::<_, StoreError>((t.rollups_since(tenant.as_deref(), from)?, t.tenants()?)))?;
    if let Some(name) = &tenant {
        if !docs.iter().any(|(n, _)| n == name) {
            return Err(ApiError::not_found(format!("no tenant {name:?}")));
        }
    }
    // Where each node is, and whether its upstream bytes come from the origin: a shield's
    // (not a mid-tier's), an edge's for a tenant without a shield, a node outside a topology's.
    let topo = c.template.topology.as_ref();
    let place = |node: &str| -> (String, String, bool, bool) {
        match topo.and_then(|t| t.find(node)) {
            Some((role, region, group, _)) => (
                group.to_string(),
                region.to_string(),
                role == outpost_config::Role::Shield,
                topo.is_some_and(|t| t.is_mid_tier(group)),
            ),
            None => ("-".into(), "-".into(), false, false),
        }
    };
    let shielded = |tenant: &str| {
        docs.iter()
            .find(|(n, _)| n == tenant)
            .is_some_and(|(_, d)| d.get("shield").is_some_and(|s| !s.is_null()))
    };
    let mut total = Agg::default();
    let mut by_pop: std::collections::BTreeMap<(String, String), Agg> = Default::default();
    let mut by_region: std::collections::BTreeMap<String, Agg> = Default::default();
    let mut buckets: std::collections::BTreeMap<u64, Agg> = Default::default();
    for (at, node, r) in &rows {
        let (pop, region, is_shield, mid) = place(node);
        let origin = if topo.and_then(|t| t.find(node)).is_none() {
            true
        } else if is_shield {
            !mid
        } else {
            !shielded(&r.tenant)
        };
        // Shields and mid-tiers only see other tiers' requests: their client counts are zero,
        // but their origin bytes count.
        total.add(r, origin);
        by_pop
            .entry((pop, region.clone()))
            .or_default()
            .add(r, origin);
        by_region.entry(region).or_default().add(r, origin);
        buckets
            .entry(at - at % bucket_ms)
            .or_default()
            .add(r, origin);
    }
    let mut out = total.json();
    out["tenant"] = json!(tenant);
    out["period"] = json!(period);
    out["from_ms"] = json!(from);
    out["to_ms"] = json!(now);
    out["by_pop"] = by_pop
        .iter()
        .map(|((pop, region), a)| {
            let mut v = a.json();
            v["pop"] = json!(pop);
            v["region"] = json!(region);
            v
        })
        .collect();
    out["by_region"] = by_region
        .iter()
        .map(|(region, a)| {
            let mut v = a.json();
            v["region"] = json!(region);
            v
        })
        .collect();
    out["buckets"] = buckets
        .iter()
        .map(|(start, a)| {
            let mut v = a.json();
            v["start_ms"] = json!(start);
            v
        })
        .collect();
    out["bucket_ms"] = json!(bucket_ms);
    Ok((StatusCode::OK, out))
}
