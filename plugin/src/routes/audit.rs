//! The audit face of the HTTP API: the middleware that records every request in the audit log
//! ([`record_requests`]), and `GET /v1/rootseal/audit/checkpoint` ([`checkpoint`]).
//!
//! The middleware sits around every route (so the transit handlers stay unaware of it). For each
//! request it records: the operation (from the matched route and method), the key name (from the
//! path), the item count (`batch_input`, else 1), the key version(s) (from `key_version`, the
//! request's ciphertexts, or the response's), the result and status, the request id, the token's
//! *name* (`root`; never the token), and the client address. Bodies are read only to count and
//! to find versions; no value from them (plaintext, ciphertext, context) is ever recorded.
//!
//! Bulk-seal streams are not buffered: their records carry no item count or versions (a gap the
//! bulk handler could close by reporting them). `/v1/sys/health` and `/metrics` are not recorded.
//!
//! In `mode = "block"` a response leaves only after its record is durable; when the record
//! cannot be written the client gets 503 with the reason instead of the response. While the log
//! is failing, a request is first held until a probe record (`audit.resume`) is written: nothing
//! is answered unaudited, and the first write that succeeds resumes service.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rootseal_audit::{Event, Mode};
use serde::Deserialize;

use super::{error, AppState};

/// The most bytes of a response the middleware reads to find key versions and the request id.
const RESPONSE_PEEK_LIMIT: usize = 4 << 20;

/// An operation as the audit log names it.
struct Op {
    kind: String,
    key: Option<String>,
    /// Whether the body is a stream the middleware must not buffer.
    stream: bool,
}

/// Names the operation of `method` on `path` (the request path) under `mount`.
fn classify(method: &Method, path: &str, mount: &str) -> Option<Op> {
    let op = |kind: &str, key: Option<&str>| Op {
        kind: kind.to_owned(),
        key: key.map(str::to_owned),
        stream: false,
    };
    if path == "/v1/auth/token/renew-self" {
        return Some(op("token.renew_self", None));
    }
    if path == "/v1/rootseal/audit/checkpoint" {
        return Some(op("audit.checkpoint_read", None));
    }
    let rest = path
        .strip_prefix("/v1/")?
        .strip_prefix(mount)?
        .strip_prefix('/')?;
    let segs: Vec<&str> = rest.split('/').collect();
    let writes = matches!(*method, Method::POST | Method::PUT);
    Some(match segs.as_slice() {
        ["keys"] | ["keys", ""] => op("key.list", None),
        ["keys", name] if writes => op("key.create", Some(name)),
        ["keys", name] if *method == Method::DELETE => op("key.delete", Some(name)),
        ["keys", name] => op("key.read", Some(name)),
        ["keys", name, "rotate"] => op("key.rotate", Some(name)),
        ["keys", name, "config"] => op("key.config", Some(name)),
        ["keys", name, "trim"] => op("key.trim", Some(name)),
        ["encrypt", name] => op("transit.encrypt", Some(name)),
        ["decrypt", name] => op("transit.decrypt", Some(name)),
        ["rewrap", name] => op("transit.rewrap", Some(name)),
        ["datakey", kind, name] => Op {
            kind: format!("transit.datakey.{kind}"),
            key: Some((*name).to_owned()),
            stream: false,
        },
        ["bulk-seal", name] => Op {
            kind: "bulk.seal".into(),
            key: Some((*name).to_owned()),
            stream: true,
        },
        ["bulk-unseal", name] => Op {
            kind: "bulk.unseal".into(),
            key: Some((*name).to_owned()),
            stream: true,
        },
        _ => return None,
    })
}

#[derive(Deserialize, Default)]
struct ItemPeek {
    ciphertext: Option<String>,
    key_version: Option<u64>,
}

#[derive(Deserialize, Default)]
struct RequestPeek {
    batch_input: Option<Vec<ItemPeek>>,
    ciphertext: Option<String>,
    key_version: Option<u64>,
    min_decryption_version: Option<u64>,
    min_encryption_version: Option<u64>,
    deletion_allowed: Option<bool>,
    auto_rotate_period: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ResultPeek {
    ciphertext: Option<String>,
    latest_version: Option<u64>,
    batch_results: Option<Vec<ItemPeek>>,
}

#[derive(Deserialize, Default)]
struct ResponsePeek {
    request_id: Option<String>,
    data: Option<ResultPeek>,
}

/// The version in a `vault:v<N>:` ciphertext.
fn ct_version(ct: &str) -> Option<u64> {
    ct.strip_prefix("vault:v")?.split(':').next()?.parse().ok()
}

fn add_versions(ev: &mut Event, mut v: Vec<u64>) {
    v.sort_unstable();
    v.dedup();
    match v.as_slice() {
        [] => {}
        [one] => ev.set("version", *one),
        many => ev.set("versions", many.to_vec()),
    }
}

/// Middleware: records every request in the audit log (see the module docs).
pub async fn record_requests(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(log) = st.audit().cloned() else {
        return next.run(req).await;
    };
    if log.mode() == Mode::Off || req.extensions().get::<MatchedPath>().is_none() {
        return next.run(req).await;
    }
    let Some(op) = classify(req.method(), req.uri().path(), &st.config().mount) else {
        return next.run(req).await;
    };
    let block = log.mode() == Mode::Block;
    if block && log.status().failing.is_some() {
        if let Err(e) = log.record(Event::new("audit.resume")).await {
            return unavailable(&e);
        }
    }
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let mut ev = Event::new(&op.kind);
    if let Some(k) = &op.key {
        ev.set("key", k.as_str());
    }
    ev.set("client", client.map_or(serde_json::Value::Null, Into::into));
    let mut versions = Vec::new();
    let req = if op.stream {
        req
    } else {
        let (parts, body) = req.into_parts();
        let bytes = match st.read_body(body).await {
            Ok(b) => b,
            Err(e) => {
                let resp = e.into_response();
                return finish(&log, ev, resp, block, Vec::new()).await;
            }
        };
        if let Ok(p) = serde_json::from_slice::<RequestPeek>(&bytes) {
            let items = p.batch_input.as_ref().map_or(1, Vec::len);
            if op.kind.starts_with("transit.") {
                ev.set("items", items);
            }
            for it in p.batch_input.iter().flatten() {
                versions.extend(it.key_version);
                versions.extend(it.ciphertext.as_deref().and_then(ct_version));
            }
            versions.extend(p.key_version);
            versions.extend(p.ciphertext.as_deref().and_then(ct_version));
            if op.kind == "key.config" {
                let mut s = serde_json::Map::new();
                if let Some(v) = p.min_decryption_version {
                    s.insert("min_decryption_version".into(), v.into());
                }
                if let Some(v) = p.min_encryption_version {
                    s.insert("min_encryption_version".into(), v.into());
                }
                if let Some(v) = p.deletion_allowed {
                    s.insert("deletion_allowed".into(), v.into());
                }
                if let Some(v) = p.auto_rotate_period {
                    s.insert("auto_rotate_period".into(), v);
                }
                ev.set("settings", serde_json::Value::Object(s));
            }
        }
        Request::from_parts(parts, Body::from(bytes))
    };
    let resp = next.run(req).await;
    // The token check (inside this layer) leaves who called on the response: a token's name,
    // never the token.
    let token = resp
        .extensions()
        .get::<super::auth::Caller>()
        .map(|c| match c {
            super::auth::Caller::Root => "root".to_owned(),
            super::auth::Caller::Scoped(g) => g.name.clone(),
        });
    ev.set(
        "token",
        token.clone().map_or(serde_json::Value::Null, Into::into),
    );
    if resp.status() == StatusCode::FORBIDDEN && token.is_none() {
        ev.set("op", op.kind.as_str());
        ev.set("type", "auth.failure");
    }
    finish(&log, ev, resp, block, versions).await
}

/// Records `ev` with the response's result, then answers with the response, or 503 when the
/// record could not be written in block mode.
async fn finish(
    log: &rootseal_audit::AuditLog,
    mut ev: Event,
    resp: Response,
    block: bool,
    mut versions: Vec<u64>,
) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let (parts, body) = resp.into_parts();
    let body = if is_json {
        match axum::body::to_bytes(body, RESPONSE_PEEK_LIMIT).await {
            Ok(b) => {
                if let Ok(p) = serde_json::from_slice::<ResponsePeek>(&b) {
                    if let Some(id) = p.request_id {
                        ev.set("request_id", id);
                    }
                    if let Some(d) = p.data {
                        versions.extend(d.ciphertext.as_deref().and_then(ct_version));
                        for r in d.batch_results.iter().flatten() {
                            versions.extend(r.ciphertext.as_deref().and_then(ct_version));
                        }
                        if ev.kind().starts_with("key.") {
                            versions.extend(d.latest_version);
                        }
                    }
                }
                Body::from(b)
            }
            Err(_) => {
                tracing::error!("cannot read a response to audit it");
                return error::envelope(StatusCode::INTERNAL_SERVER_ERROR, Some(error::INTERNAL));
            }
        }
    } else {
        body
    };
    if ev.0.get("request_id").is_none() {
        ev.set("request_id", super::request_id());
    }
    add_versions(&mut ev, versions);
    ev.set("status", status.as_u16());
    ev.set("result", if status.is_success() { "ok" } else { "error" });
    match log.record(ev).await {
        Ok(_) => Response::from_parts(parts, body),
        Err(e) if block => unavailable(&e),
        Err(e) => {
            tracing::warn!(error = %e, "audit record not written (best-effort)");
            Response::from_parts(parts, body)
        }
    }
}

fn unavailable(e: &rootseal_audit::AuditError) -> Response {
    tracing::error!(error = %e, "request refused: the audit log cannot be written");
    error::envelope(StatusCode::SERVICE_UNAVAILABLE, Some(&e.to_string()))
}

/// `GET /v1/rootseal/audit/checkpoint`: the latest signed checkpoint (a C2SP signed note, as
/// `text/plain`), for an Auditor to keep elsewhere. Root token (no Auditor role exists yet).
pub async fn checkpoint(State(st): State<AppState>) -> Response {
    let Some(log) = st.audit() else {
        return error::envelope(StatusCode::NOT_FOUND, Some("the audit log is off"));
    };
    match log.latest_checkpoint() {
        Some(note) => {
            let mut r = Response::new(Body::from(note));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        None => error::envelope(
            StatusCode::NOT_FOUND,
            Some("no checkpoint yet (the audit key is missing, or the log is off)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_named() {
        let c = |m: Method, p: &str| classify(&m, p, "transit").map(|o| (o.kind, o.key));
        assert_eq!(
            c(Method::POST, "/v1/transit/encrypt/k"),
            Some(("transit.encrypt".into(), Some("k".into())))
        );
        assert_eq!(
            c(Method::DELETE, "/v1/transit/keys/k"),
            Some(("key.delete".into(), Some("k".into())))
        );
        assert_eq!(
            c(Method::PUT, "/v1/transit/datakey/plaintext/k"),
            Some(("transit.datakey.plaintext".into(), Some("k".into())))
        );
        assert_eq!(c(Method::GET, "/v1/sys/health"), None);
        assert_eq!(ct_version("vault:v12:abc"), Some(12));
        assert_eq!(ct_version("vault:x"), None);
    }
}
