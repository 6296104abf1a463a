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
//! Bulk seal and unseal carry their item count too. A JSON batch's handler leaves its counts on
//! the response ([`BulkCounts`]): one record with `items` and `failed`. A binary request is not
//! buffered: its record (`"form": "frames"` or `"object"`) is written before the first byte of
//! the response, and a second record, `bulk.seal.end` / `bulk.unseal.end` with the same request
//! id, counts what the response carried (`items`, `failed`, `bytes`; `result` `"error"` when the
//! stream ended in a request-level error or broke off). The response's last bytes are held until
//! that record is durable (block mode), so no client holds a complete answer without its count on
//! disk. `/v1/sys/health` and `/metrics` are not recorded.
//!
//! In `mode = "block"` a response leaves only after its record is durable; when the record
//! cannot be written the client gets 503 with the reason instead of the response. While the log
//! is failing, a request is first held until a probe record (`audit.resume`) is written: nothing
//! is answered unaudited, and the first write that succeeds resumes service.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use rootseal_audit::{AuditLog, Event, Mode};
use serde::{Deserialize, Serialize};

use super::{error, AppState};

/// The most bytes of a response the middleware reads to find key versions and the request id.
const RESPONSE_PEEK_LIMIT: usize = 4 << 20;

/// What a bulk JSON batch did: the bulk handler leaves it on its response, so the audit record
/// counts the items without buffering the (possibly large) response.
#[derive(Clone, Debug)]
pub(crate) struct BulkCounts {
    /// Items in the batch.
    pub items: usize,
    /// Items that failed.
    pub failed: usize,
    /// The response's `request_id`.
    pub request_id: String,
}

/// An operation as the audit log names it.
struct Op<'a> {
    kind: Cow<'static, str>,
    /// The key's name (borrowed from the request path).
    key: Option<&'a str>,
    /// Whether the body is a stream the middleware must not buffer.
    stream: bool,
}

/// Names the operation of `method` on `path` (the request path) under `mount`.
fn classify<'a>(method: &Method, path: &'a str, mount: &str) -> Option<Op<'a>> {
    let op = |kind: &'static str, key: Option<&'a str>| Op {
        kind: Cow::Borrowed(kind),
        key,
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
    let mut segs = rest.split('/');
    let (s0, s1, s2) = (segs.next(), segs.next(), segs.next());
    if segs.next().is_some() {
        return None;
    }
    let writes = matches!(*method, Method::POST | Method::PUT);
    Some(match (s0?, s1, s2) {
        ("keys", None | Some(""), None) => op("key.list", None),
        ("keys", Some(name), None) if writes => op("key.create", Some(name)),
        ("keys", Some(name), None) if *method == Method::DELETE => op("key.delete", Some(name)),
        ("keys", Some(name), None) => op("key.read", Some(name)),
        ("keys", Some(name), Some("rotate")) => op("key.rotate", Some(name)),
        ("keys", Some(name), Some("config")) => op("key.config", Some(name)),
        ("keys", Some(name), Some("trim")) => op("key.trim", Some(name)),
        ("encrypt", Some(name), None) => op("transit.encrypt", Some(name)),
        ("decrypt", Some(name), None) => op("transit.decrypt", Some(name)),
        ("rewrap", Some(name), None) => op("transit.rewrap", Some(name)),
        ("datakey", Some(kind), Some(name)) => Op {
            kind: match kind {
                "plaintext" => Cow::Borrowed("transit.datakey.plaintext"),
                "wrapped" => Cow::Borrowed("transit.datakey.wrapped"),
                other => Cow::Owned(format!("transit.datakey.{other}")),
            },
            key: Some(name),
            stream: false,
        },
        ("bulk-seal", Some(name), None) => Op {
            kind: Cow::Borrowed("bulk.seal"),
            key: Some(name),
            stream: true,
        },
        ("bulk-unseal", Some(name), None) => Op {
            kind: Cow::Borrowed("bulk.unseal"),
            key: Some(name),
            stream: true,
        },
        _ => return None,
    })
}

#[derive(Deserialize, Default)]
struct ItemPeek<'a> {
    #[serde(borrow)]
    ciphertext: Option<Cow<'a, str>>,
    key_version: Option<u64>,
}

#[derive(Deserialize, Default)]
struct RequestPeek<'a> {
    #[serde(borrow)]
    batch_input: Option<Vec<ItemPeek<'a>>>,
    #[serde(borrow)]
    ciphertext: Option<Cow<'a, str>>,
    key_version: Option<u64>,
    min_decryption_version: Option<u64>,
    min_encryption_version: Option<u64>,
    deletion_allowed: Option<bool>,
    auto_rotate_period: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ResultPeek<'a> {
    #[serde(borrow)]
    ciphertext: Option<Cow<'a, str>>,
    latest_version: Option<u64>,
    #[serde(borrow)]
    batch_results: Option<Vec<ItemPeek<'a>>>,
}

#[derive(Deserialize, Default)]
struct ResponsePeek<'a> {
    #[serde(borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<ResultPeek<'a>>,
}

/// The version in a `vault:v<N>:` ciphertext.
fn ct_version(ct: &str) -> Option<u64> {
    ct.strip_prefix("vault:v")?.split(':').next()?.parse().ok()
}

/// A request's record, as its event's fields: serialised straight to its canonical form (the
/// fields are declared in RFC 8785 order, sorted by name; absent ones are left out, `client` and
/// `token` are `null` when unknown). `request_records_are_canonical` holds it to the general
/// canonicalizer.
#[derive(Serialize, Default)]
struct RequestRecord<'a> {
    #[serde(serialize_with = "display_or_null")]
    client: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    form: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    /// The operation refused, when `type` is `auth.failure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    op: Option<&'a str>,
    request_id: Cow<'a, str>,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    settings: Option<serde_json::Map<String, serde_json::Value>>,
    status: u16,
    token: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "<[u64]>::is_empty")]
    versions: Vec<u64>,
}

fn display_or_null<S: serde::Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.collect_str(a),
        None => s.serialize_none(),
    }
}

impl RequestRecord<'_> {
    /// Sets `version` (one) or `versions` (several, ascending).
    fn set_versions(&mut self, mut v: Vec<u64>) {
        v.sort_unstable();
        v.dedup();
        match v.as_slice() {
            [] => {}
            [one] => self.version = Some(*one),
            _ => self.versions = v,
        }
    }

    /// The event's canonical bytes. Straight from the struct, unless a field holds what
    /// serde_json writes differently from RFC 8785 (a number beyond 2^53, or a client's
    /// `auto_rotate_period` that is not a string or a small integer): then through the general
    /// canonicalizer.
    fn encode(&self) -> Result<Vec<u8>, String> {
        const EXACT: u64 = 1 << 53;
        let general = self.settings.is_some()
            || self.version.is_some_and(|v| v > EXACT)
            || self.versions.iter().any(|v| *v > EXACT);
        if general {
            let v = serde_json::to_value(self).map_err(|e| e.to_string())?;
            let serde_json::Value::Object(m) = v else {
                return Err("a request record is not an object".into());
            };
            return rootseal_audit::record::encode_event(&Event(m));
        }
        let mut out = Vec::with_capacity(256);
        serde_json::to_writer(&mut out, self).map_err(|e| e.to_string())?;
        Ok(out)
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
    // The path's bytes are shared, not copied: the key name is borrowed from this clone.
    let uri = req.uri().clone();
    let Some(op) = classify(req.method(), uri.path(), &st.config().mount) else {
        return next.run(req).await;
    };
    let block = log.mode() == Mode::Block;
    if block && log.status().failing.is_some() {
        if let Err(e) = log.record(Event::new("audit.resume")).await {
            return unavailable(&e);
        }
    }
    let mut rec = RequestRecord {
        client: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
        key: op.key,
        ..RequestRecord::default()
    };
    let mut versions = Vec::new();
    if op.stream {
        let seal_object = uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "mode=stream"));
        // A binary bulk request's first bytes say which form its response takes.
        let magic = Arc::new(Mutex::new(Vec::with_capacity(4)));
        let (parts, body) = req.into_parts();
        let m = magic.clone();
        let body = body.into_data_stream().map(move |c| {
            if let Ok(b) = &c {
                let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
                let want = 4usize.saturating_sub(g.len());
                g.extend_from_slice(b.get(..want.min(b.len())).unwrap_or_default());
            }
            c
        });
        let resp = next
            .run(Request::from_parts(parts, Body::from_stream(body)))
            .await;
        // A seal's form is in its query (its body is any bytes); an unseal's in its body's magic.
        let object = if op.kind == "bulk.seal" {
            seal_object
        } else {
            magic.lock().unwrap_or_else(|e| e.into_inner()).as_slice() != rootseal_bulk::FRAME_MAGIC
        };
        let form = if object { Form::Object } else { Form::Frames };
        return finish(&log, &op, rec, resp, block, versions, Some(form)).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match st.read_body(body).await {
        Ok(b) => b,
        Err(e) => {
            let resp = e.into_response();
            return finish(&log, &op, rec, resp, block, versions, None).await;
        }
    };
    if let Ok(p) = serde_json::from_slice::<RequestPeek<'_>>(&bytes) {
        let items = p.batch_input.as_ref().map_or(1, Vec::len);
        if op.kind.starts_with("transit.") {
            rec.items = Some(items as u64);
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
            rec.settings = Some(s);
        }
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    finish(&log, &op, rec, resp, block, versions, None).await
}

/// The form of a binary bulk response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// A frame stream (`RSBF`): items are counted from its records.
    Frames,
    /// One object (`?mode=stream` seal, or the unseal of an `RSBS` object): one item.
    Object,
}

impl Form {
    fn as_str(self) -> &'static str {
        match self {
            Form::Frames => "frames",
            Form::Object => "object",
        }
    }
}

/// Counts the records of a frame stream as it passes (`RSBF` ‖ version, then `kind:u8 ‖
/// len:u32 ‖ body` records; `docs/bulk-seal.md` §4.2), reading no more than a record header and
/// an `ERROR` record's item number.
#[derive(Debug, Default)]
struct FrameCounter {
    /// Bytes of the stream header still to skip.
    header: usize,
    started: bool,
    /// A record header (or an ERROR item number) being assembled.
    buf: Vec<u8>,
    /// Body bytes of the current record still to skip.
    skip: usize,
    /// The current record is an ERROR whose item number is being read.
    in_error: bool,
    ok: u64,
    failed: u64,
    request_error: bool,
    ended: Option<u64>,
}

const KIND_SEALED: u8 = rootseal_bulk::Kind::Sealed as u8;
const KIND_PLAIN: u8 = rootseal_bulk::Kind::Plain as u8;
const KIND_ERROR: u8 = rootseal_bulk::Kind::Error as u8;
const KIND_END: u8 = rootseal_bulk::Kind::End as u8;

impl FrameCounter {
    fn feed(&mut self, mut b: &[u8]) {
        if !self.started {
            self.started = true;
            self.header = 5;
        }
        while !b.is_empty() {
            if self.header > 0 {
                let n = self.header.min(b.len());
                self.header -= n;
                b = &b[n..];
                continue;
            }
            if self.skip > 0 && !self.in_error {
                let n = self.skip.min(b.len());
                self.skip -= n;
                b = &b[n..];
                continue;
            }
            let want = if self.in_error { 8 } else { 5 };
            let n = (want - self.buf.len()).min(b.len());
            self.buf.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.buf.len() < want {
                continue;
            }
            if self.in_error {
                let item = u64::from_be_bytes(self.buf[..8].try_into().unwrap_or([0; 8]));
                if item == rootseal_bulk::REQUEST_ERROR {
                    self.request_error = true;
                } else {
                    self.failed += 1;
                }
                self.in_error = false;
                self.skip = self.skip.saturating_sub(8);
                self.buf.clear();
                continue;
            }
            let kind = self.buf[0];
            let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap_or([0; 4])) as usize;
            self.buf.clear();
            self.skip = len;
            match kind {
                KIND_SEALED | KIND_PLAIN => self.ok += 1,
                KIND_ERROR if len >= 8 => self.in_error = true,
                KIND_ERROR => self.failed += 1,
                KIND_END => self.ended = Some(self.ok + self.failed),
                _ => {}
            }
        }
    }
}

/// The end record of a binary bulk response, gating its last bytes (see the module docs).
struct StreamEnd {
    log: AuditLog,
    event: Event,
    form: Form,
    block: bool,
}

impl StreamEnd {
    /// Passes `body` through, counting it; before its last chunk leaves, writes the end record.
    /// When that record cannot be written in block mode, the stream breaks off instead.
    fn wrap(self, body: Body) -> Body {
        struct St {
            inner: axum::body::BodyDataStream,
            held: Option<Bytes>,
            end: Option<StreamEnd>,
            frames: FrameCounter,
            bytes: u64,
        }
        let st = St {
            inner: body.into_data_stream(),
            held: None,
            end: Some(self),
            frames: FrameCounter::default(),
            bytes: 0,
        };
        let s = futures_util::stream::unfold(st, |mut st| async move {
            let end = st.end.as_ref()?;
            let form = end.form;
            let broke = loop {
                match st.inner.next().await {
                    Some(Ok(c)) => {
                        st.bytes += c.len() as u64;
                        if form == Form::Frames {
                            st.frames.feed(&c);
                        }
                        if let Some(prev) = st.held.replace(c) {
                            return Some((Ok::<Bytes, std::io::Error>(prev), st));
                        }
                    }
                    Some(Err(_)) => break true,
                    None => break false,
                }
            };
            let end = st.end.take()?;
            let mut ev = end.event;
            let kind = format!("{}.end", ev.kind());
            ev.set("type", kind.as_str());
            ev.set("form", form.as_str());
            ev.set("bytes", st.bytes);
            let ok = match form {
                Form::Frames => {
                    ev.set("items", st.frames.ok + st.frames.failed);
                    ev.set("failed", st.frames.failed);
                    !broke && !st.frames.request_error && st.frames.ended.is_some()
                }
                Form::Object => {
                    ev.set("items", 1);
                    ev.set("failed", u64::from(broke));
                    !broke
                }
            };
            ev.set("result", if ok { "ok" } else { "error" });
            match end.log.record(ev).await {
                Ok(_) => {}
                Err(e) if end.block => {
                    tracing::error!(error = %e, "bulk response broken off: the audit log cannot be written");
                    return Some((Err(std::io::Error::other("audit log unavailable")), st));
                }
                Err(e) => tracing::warn!(error = %e, "audit record not written (best-effort)"),
            }
            if broke {
                return Some((Err(std::io::Error::other("bulk response failed")), st));
            }
            st.held.take().map(|last| (Ok(last), st))
        });
        Body::from_stream(s)
    }
}

/// Records the request with the response's result, then answers with the response, or 503
/// when the record could not be written in block mode.
async fn finish(
    log: &AuditLog,
    op: &Op<'_>,
    mut rec: RequestRecord<'_>,
    resp: Response,
    block: bool,
    mut versions: Vec<u64>,
    stream: Option<Form>,
) -> Response {
    let status = resp.status();
    let ctype = resp.headers().get(header::CONTENT_TYPE);
    let is_json = ctype.is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let is_binary = ctype.is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    let (parts, body) = resp.into_parts();
    // The token check (inside this layer) leaves who called on the response: a token's name,
    // never the token.
    rec.token = parts
        .extensions
        .get::<super::auth::Caller>()
        .map(|c| match c {
            super::auth::Caller::Root => "root",
            super::auth::Caller::Scoped(g) => g.name.as_str(),
        });
    rec.kind = &op.kind;
    if status == StatusCode::FORBIDDEN && rec.token.is_none() {
        rec.op = Some(&op.kind);
        rec.kind = "auth.failure";
    }
    let counts = parts.extensions.get::<BulkCounts>();
    let mut end = None;
    if let Some(c) = counts {
        // A bulk JSON batch: counted by its handler, not buffered here.
        rec.items = Some(c.items as u64);
        rec.failed = Some(c.failed as u64);
        rec.request_id = Cow::Borrowed(&c.request_id);
    } else if let Some(form) = stream {
        if is_binary && status.is_success() {
            rec.form = Some(form.as_str());
            end = Some(form);
        } else {
            // Refused before any item was read.
            rec.items = Some(0);
        }
    }
    // The response is read (not copied: `Bytes` are shared) to find its request id and versions.
    let mut peeked = None;
    let body = if is_json && counts.is_none() {
        match axum::body::to_bytes(body, RESPONSE_PEEK_LIMIT).await {
            Ok(b) => Body::from(peeked.insert(b).clone()),
            Err(_) => {
                tracing::error!("cannot read a response to audit it");
                return error::envelope(StatusCode::INTERNAL_SERVER_ERROR, Some(error::INTERNAL));
            }
        }
    } else {
        body
    };
    if let Some(b) = &peeked {
        if let Ok(p) = serde_json::from_slice::<ResponsePeek<'_>>(b) {
            if let Some(id) = p.request_id {
                rec.request_id = id;
            }
            if let Some(d) = p.data {
                versions.extend(d.ciphertext.as_deref().and_then(ct_version));
                for r in d.batch_results.iter().flatten() {
                    versions.extend(r.ciphertext.as_deref().and_then(ct_version));
                }
                if op.kind.starts_with("key.") {
                    versions.extend(d.latest_version);
                }
            }
        }
    }
    if rec.request_id.is_empty() {
        rec.request_id = Cow::Owned(super::request_id());
    }
    rec.set_versions(versions);
    rec.status = status.as_u16();
    rec.result = if status.is_success() { "ok" } else { "error" };
    let encoded = rec.encode();
    // (A binary response is never peeked: `end` and `peeked` exclude each other.)
    let body = match end {
        Some(form) => StreamEnd {
            log: log.clone(),
            event: Event::new(&op.kind)
                .with("key", rec.key.map_or(serde_json::Value::Null, Into::into))
                .with(
                    "token",
                    rec.token.map_or(serde_json::Value::Null, Into::into),
                )
                .with("request_id", rec.request_id.as_ref()),
            form,
            block,
        }
        .wrap(body),
        None => body,
    };
    drop(rec);
    let written = match encoded {
        Ok(ev) => log.record_encoded(ev).await,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an audit record");
            Err(rootseal_audit::AuditError::Unavailable(format!(
                "cannot encode the record: {e}"
            )))
        }
    };
    match written {
        Ok(_) => Response::from_parts(parts, body),
        Err(e) if block => unavailable(&e),
        Err(e) => {
            tracing::warn!(error = %e, "audit record not written (best-effort)");
            Response::from_parts(parts, body)
        }
    }
}

/// The audit log's lines of `GET /metrics`: records, fdatasyncs (records per sync is how well
/// group commit groups), dropped records (best-effort) and whether the log is failing.
pub(crate) fn render_prometheus(log: Option<&AuditLog>, out: &mut String) {
    use std::fmt::Write as _;
    let Some(s) = log.map(AuditLog::status) else {
        return;
    };
    let _ = write!(
        out,
        "# HELP rootseal_audit_records Records in the audit log (durable ones, in block mode).\n\
         # TYPE rootseal_audit_records gauge\n\
         rootseal_audit_records {}\n\
         # HELP rootseal_audit_syncs_total fdatasync calls of the audit writer (one per group in block mode).\n\
         # TYPE rootseal_audit_syncs_total counter\n\
         rootseal_audit_syncs_total {}\n\
         # HELP rootseal_audit_dropped_total Records dropped because the queue was full (best-effort mode).\n\
         # TYPE rootseal_audit_dropped_total counter\n\
         rootseal_audit_dropped_total {}\n\
         # HELP rootseal_audit_failing 1 while the audit log cannot be written.\n\
         # TYPE rootseal_audit_failing gauge\n\
         rootseal_audit_failing {}\n",
        s.size,
        s.syncs,
        s.dropped,
        u8::from(s.failing.is_some()),
    );
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
        let c = |m: Method, p: &'static str| {
            classify(&m, p, "transit").map(|o| (o.kind.into_owned(), o.key))
        };
        assert_eq!(
            c(Method::POST, "/v1/transit/encrypt/k"),
            Some(("transit.encrypt".into(), Some("k")))
        );
        assert_eq!(
            c(Method::DELETE, "/v1/transit/keys/k"),
            Some(("key.delete".into(), Some("k")))
        );
        assert_eq!(
            c(Method::PUT, "/v1/transit/datakey/plaintext/k"),
            Some(("transit.datakey.plaintext".into(), Some("k")))
        );
        assert_eq!(
            c(Method::PUT, "/v1/transit/datakey/other/k"),
            Some(("transit.datakey.other".into(), Some("k")))
        );
        assert_eq!(
            c(Method::GET, "/v1/transit/keys"),
            Some(("key.list".into(), None))
        );
        assert_eq!(
            c(Method::GET, "/v1/transit/keys/"),
            Some(("key.list".into(), None))
        );
        assert_eq!(
            c(Method::POST, "/v1/transit/keys/k/rotate"),
            Some(("key.rotate".into(), Some("k")))
        );
        assert_eq!(c(Method::POST, "/v1/transit/encrypt/k/x"), None);
        assert_eq!(c(Method::POST, "/v1/transit/keys/k/rotate/x"), None);
        assert_eq!(c(Method::GET, "/v1/sys/health"), None);
        assert_eq!(ct_version("vault:v12:abc"), Some(12));
        assert_eq!(ct_version("vault:x"), None);
    }

    /// A request record serialised straight from its struct is the RFC 8785 form of the same
    /// fields (the general canonicalizer's output), in every shape the middleware makes: escapes
    /// in names, no client or token, one or several versions, numbers beyond 2^53, settings with
    /// a float.
    #[test]
    fn request_records_are_canonical() {
        let base = || RequestRecord {
            client: Some("127.0.0.1:4000".parse().unwrap_or_else(|_| unreachable!())),
            key: Some("k"),
            request_id: Cow::Borrowed("0b0e6a0e-8a4f-4b8e-9c52-2f0c3c1d7e11"),
            result: "ok",
            status: 200,
            token: Some("root"),
            kind: "transit.encrypt",
            items: Some(1),
            ..RequestRecord::default()
        };
        let mut cases = vec![base()];
        let mut r = base();
        r.client = Some("[::1]:9".parse().unwrap_or_else(|_| unreachable!()));
        r.key = Some("n\u{e9}e \"q\" \\ \u{1}\n\u{2028}");
        r.token = Some("t\u{7f}\u{10ffff}");
        r.set_versions(vec![3, 1, 3]);
        cases.push(r);
        let mut r = base();
        r.client = None;
        r.token = None;
        r.op = Some("transit.decrypt");
        r.kind = "auth.failure";
        r.status = 403;
        r.result = "error";
        r.set_versions(vec![(1 << 53) + 1]);
        cases.push(r);
        let mut r = base();
        r.set_versions(vec![u64::MAX, 2]);
        r.failed = Some(2);
        r.form = Some("frames");
        cases.push(r);
        let mut r = base();
        r.kind = "key.config";
        r.items = None;
        let mut m = serde_json::Map::new();
        m.insert("auto_rotate_period".into(), serde_json::json!(1.5e3));
        m.insert("deletion_allowed".into(), true.into());
        r.settings = Some(m);
        cases.push(r);
        for r in &cases {
            let fast = r.encode().unwrap_or_default();
            let serde_json::Value::Object(m) = serde_json::to_value(r).unwrap_or_default() else {
                panic!("not an object");
            };
            let general =
                serde_json_canonicalizer::to_vec(&serde_json::Value::Object(m)).unwrap_or_default();
            assert!(!fast.is_empty());
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&general)
            );
            assert!(rootseal_audit::record::is_canonical_object(&fast));
        }
        // The versions are ascending and unique; one is `version`.
        let v: serde_json::Value =
            serde_json::from_slice(&cases[1].encode().unwrap_or_default()).unwrap_or_default();
        assert_eq!(v["versions"], serde_json::json!([1, 3]));
        let v: serde_json::Value =
            serde_json::from_slice(&cases[2].encode().unwrap_or_default()).unwrap_or_default();
        assert!(v["client"].is_null() && v["token"].is_null() && v.get("versions").is_none());
    }

    /// A frame stream fed whole and one byte at a time gives the same counts: two SEALED, one
    /// item ERROR, END; a request-level ERROR (item `u64::MAX`) is told apart.
    #[test]
    fn frame_counter_counts_items_across_chunk_boundaries() {
        let rec = |kind: u8, body: &[u8]| {
            let mut r = vec![kind];
            r.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes());
            r.extend_from_slice(body);
            r
        };
        let mut s = b"RSBF\x01".to_vec();
        s.extend(rec(0x02, &[0u8; 40]));
        s.extend(rec(KIND_SEALED, &[1u8; 100]));
        let mut err = 7u64.to_be_bytes().to_vec();
        err.extend_from_slice(b"bad item");
        s.extend(rec(KIND_ERROR, &err));
        s.extend(rec(KIND_SEALED, &[2u8; 3]));
        s.extend(rec(KIND_END, &3u64.to_be_bytes()));
        for step in [s.len(), 1, 3, 7] {
            let mut c = FrameCounter::default();
            for chunk in s.chunks(step) {
                c.feed(chunk);
            }
            assert_eq!(
                (c.ok, c.failed, c.ended, c.request_error),
                (2, 1, Some(3), false)
            );
        }
        let mut s = b"RSBF\x01".to_vec();
        s.extend(rec(KIND_SEALED, &[1u8; 10]));
        let mut err = u64::MAX.to_be_bytes().to_vec();
        err.extend_from_slice(b"request failed");
        s.extend(rec(KIND_ERROR, &err));
        let mut c = FrameCounter::default();
        for chunk in s.chunks(2) {
            c.feed(chunk);
        }
        assert_eq!(
            (c.ok, c.failed, c.ended, c.request_error),
            (1, 0, None, true)
        );
    }
}
