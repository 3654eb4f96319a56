//! The OpenAPI 3 document served at `/api/v1/openapi.json`: every route of `api.rs`, its
//! parameters, bodies and answers. `tests/api.rs` walks its paths and exercises each one.

use serde_json::{json, Value};

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(desc: &str, schema: Value) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": schema}}})
}

fn obj() -> Value {
    json!({"type": "object"})
}

fn param(name: &str, location: &str, kind: &str) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "schema": {"type": kind}})
}

fn idem() -> Value {
    json!({"$ref": "#/components/parameters/IdempotencyKey"})
}

fn common(mut responses: Value) -> Value {
    responses["401"] = err("missing or unknown API key");
    responses["403"] = err("the key may not act on this");
    responses["429"] = err("rate limited; see Retry-After");
    responses
}

/// The document.
pub fn document() -> Value {
    let tenant_body = json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Tenant"}}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Outpost control plane", "version": "1"},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/openapi.json": {"get": {
                "summary": "This document", "security": [],
                "responses": {"200": ok("the OpenAPI document", obj())}}},
            "/api/v1/tenants": {
                "get": {"summary": "List tenants (a tenant key sees its own)",
                    "responses": common(json!({"200": ok("tenants", obj())}))},
                "post": {"summary": "Create a tenant (admin)", "parameters": [idem()], "requestBody": tenant_body,
                    "responses": common(json!({"201": ok("created, with the new config version", obj()),
                        "400": err("malformed JSON"), "409": err("a hostname or the name is taken"),
                        "422": err("a field fails validation")}))}},
            "/api/v1/tenants/{name}": {
                "parameters": [param("name", "path", "string")],
                "get": {"summary": "Read a tenant",
                    "responses": common(json!({"200": ok("the tenant", json!({"$ref": "#/components/schemas/Tenant"})), "404": err("no such tenant")}))},
                "put": {"summary": "Replace a tenant's config", "parameters": [idem()], "requestBody": tenant_body,
                    "responses": common(json!({"200": ok("updated, with the new config version", obj()),
                        "400": err("malformed JSON"), "404": err("no such tenant"),
                        "409": err("a hostname is taken"), "422": err("a field fails validation")}))},
                "delete": {"summary": "Delete a tenant (admin)", "parameters": [idem()],
                    "responses": common(json!({"200": ok("deleted", obj()), "404": err("no such tenant")}))}},
            "/api/v1/tenants/{name}/keys": {
                "parameters": [param("name", "path", "string")],
                "post": {"summary": "Create an API key for a tenant (admin); shown once", "parameters": [idem()],
                    "responses": common(json!({"201": ok("the key", obj()), "404": err("no such tenant")}))}},
            "/api/v1/tenants/{name}/certificate": {
                "parameters": [param("name", "path", "string")],
                "put": {"summary": "Upload the tenant's TLS certificate chain and key (PEM); served by every HTTPS listener within 2 s. The key is never shown again.",
                    "parameters": [idem()],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["cert_pem", "key_pem"],
                        "properties": {"cert_pem": {"type": "string"}, "key_pem": {"type": "string"}}}}}},
                    "responses": common(json!({"200": ok("stored, with the new config version", obj()),
                        "400": err("malformed JSON"), "404": err("no such tenant"),
                        "422": err("a PEM does not parse, or the key does not match the certificate")}))}},
            "/api/v1/versions": {"get": {"summary": "Config versions, newest first (admin)",
                "responses": common(json!({"200": ok("versions", obj())}))}},
            "/api/v1/versions/{version}": {
                "parameters": [param("version", "path", "integer")],
                "get": {"summary": "One config version (admin)",
                    "responses": common(json!({"200": ok("the version", obj()), "404": err("no such version")}))}},
            "/api/v1/versions/{version}/diff": {
                "parameters": [param("version", "path", "integer"), param("from", "query", "integer")],
                "get": {"summary": "Tenants added, removed and changed since `from` (default: the version before)",
                    "responses": common(json!({"200": ok("the diff", obj()), "404": err("no such version"), "422": err("bad from")}))}},
            "/api/v1/versions/{version}/rollback": {
                "parameters": [param("version", "path", "integer")],
                "post": {"summary": "Make a new version with this version's tenants (admin)", "parameters": [idem()],
                    "responses": common(json!({"201": ok("the new version", obj()), "404": err("no such version"), "422": err("no longer valid")}))}},
            "/api/v1/purge": {"post": {
                "summary": "Purge URLs (all variants), prefixes, hosts, tags or a whole tenant on every node",
                "parameters": [idem()],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Purge"}}}},
                "responses": common(json!({"202": ok("accepted; propagating", obj()), "400": err("malformed JSON"), "422": err("a field fails validation")}))}},
            "/api/v1/purge/{id}": {
                "parameters": [param("id", "path", "string")],
                "get": {"summary": "A purge's status on every node and the time to the last one",
                    "responses": common(json!({"200": ok("status", obj()), "404": err("no such purge")}))}},
            "/api/v1/warm": {"post": {
                "summary": "Warm URLs: the edges of the regions fetch them through their normal path (shield first, coalesced)",
                "parameters": [idem()],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Warm"}}}},
                "responses": common(json!({"202": ok("accepted; running", obj()), "400": err("malformed JSON"), "422": err("a field fails validation")}))}},
            "/api/v1/warm/{id}": {
                "parameters": [param("id", "path", "string")],
                "get": {"summary": "A warm job's progress on every edge",
                    "responses": common(json!({"200": ok("progress", obj()), "404": err("no such warm job")}))}},
            "/api/v1/analytics": {"get": {
                "summary": "Requests, hit ratio, bytes, origin bytes, latency p50/p90/p99 (merged histograms), by status class, PoP, region and time bucket",
                "parameters": [param("tenant", "query", "string"), {"name": "period", "in": "query", "required": false,
                    "schema": {"type": "string", "enum": ["1h", "24h"]}}],
                "responses": common(json!({"200": ok("analytics", obj()), "404": err("no such tenant"), "422": err("bad period")}))}},
            "/api/v1/nodes": {"get": {"summary": "Nodes, their log position and liveness (admin)",
                "responses": common(json!({"200": ok("nodes", obj())}))}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": {"IdempotencyKey": {"name": "Idempotency-Key", "in": "header", "required": false,
                "description": "A retried write with the same key and request is answered from the first and applied once",
                "schema": {"type": "string"}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                    "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}},
                "Tenant": {"type": "object", "required": ["hostnames", "origins"], "properties": {
                    "name": {"type": "string"},
                    "hostnames": {"type": "array", "items": {"type": "string"}},
                    "origins": {"type": "array", "items": {"type": "string"}},
                    "cache": {"type": "object"}, "cache_key": {"type": "object"},
                    "rule": {"type": "array", "items": {"type": "object"}},
                    "shield": {"type": "string", "nullable": true}, "origin_pool": {"type": "object"}}},
                "Warm": {"type": "object", "required": ["urls"], "properties": {
                    "urls": {"type": "array", "items": {"type": "string"}},
                    "regions": {"type": "array", "items": {"type": "string"}}}},
                "Purge": {"type": "object", "properties": {
                    "tenant": {"type": "string"},
                    "urls": {"type": "array", "items": {"type": "string"}},
                    "prefixes": {"type": "array", "items": {"type": "string"}},
                    "hosts": {"type": "array", "items": {"type": "string"}},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "everything": {"type": "boolean"}, "soft": {"type": "boolean"}}}
            }
        }
    })
}
