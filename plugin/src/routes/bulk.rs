//! HTTP handlers for `POST …/bulk-seal/{name}` and `POST …/bulk-unseal/{name}`: the HTTP face of
//! the `rootseal-bulk` engine.
//!
//! Mounting: [`router`] returns a `Router<S>` with the two routes for any state `S` from which the
//! key source can be extracted (`K: FromRef<S>`, e.g. `Keyring` from [`super::AppState`]);
//! [`super::bulk_routes`] nests it under the transit mount, behind the token check.
//!
//! Forms, chosen by `Content-Type` (and `?mode=stream`):
//! * `application/json` (or none): `{"batch_input":[…]}` → `{"data":{"batch_results":[…]}}`.
//! * `application/octet-stream`: binary frames (`docs/bulk-seal.md` §4.2), streamed both ways.
//! * `application/octet-stream` with `?mode=stream` (seal; unseal detects it by magic): one object
//!   as a chunked AEAD stream; `?chunk_size=N` and the `X-Rootseal-Associated-Data` header (base64)
//!   are optional.
//!
//! The JSON body is limited to the listener's `max_request_bytes` (the `limit` given to
//! [`router`]; 413 beyond); binary bodies are streamed in bounded memory (a few frames or
//! chunks in flight), so an object of any size can be sealed.

// Handlers return early with a ready `Response`; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64_simd::STANDARD as B64;
use bytes::Bytes;
use futures_util::StreamExt;
use rootseal_bulk::{
    BatchKeySource, BulkError, FrameDecoder, JsonOutcome, RequestError, StreamOpener, StreamSealer,
    DEFAULT_CHUNK, FRAME_MAGIC, STREAM_MAGIC,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::{keyring_message, keyring_status};

/// Header carrying the caller's associated data (base64) in stream mode.
pub(crate) const AAD_HEADER: &str = "x-rootseal-associated-data";

/// The two bulk routes, relative to the mount (`/bulk-seal/{name}`, `/bulk-unseal/{name}`); a
/// JSON body may have at most `limit` bytes.
pub(crate) fn router<S, K>(limit: usize) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    K: BatchKeySource + Clone + FromRef<S> + 'static,
{
    Router::new()
        .route(
            "/bulk-seal/{name}",
            post(move |k, p, q, h, b| bulk_seal::<K>(k, p, q, h, b, limit)),
        )
        .route(
            "/bulk-unseal/{name}",
            post(move |k, p, h, b| bulk_unseal::<K>(k, p, h, b, limit)),
        )
}

/// A request-level error in Vault's envelope `{"errors":[…]}`.
fn error_response(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::json!({ "errors": [msg] });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn request_error(e: &RequestError) -> Response {
    match e {
        RequestError::Bulk(BulkError::Internal) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
        RequestError::Bulk(b) => error_response(StatusCode::BAD_REQUEST, &b.to_string()),
        RequestError::Keyring(k) => error_response(keyring_status(k), &keyring_message(k)),
    }
}

fn name_of(params: &HashMap<String, String>) -> Result<String, Response> {
    params
        .get("name")
        .filter(|n| !n.is_empty())
        .cloned()
        .ok_or_else(|| error_response(StatusCode::BAD_REQUEST, "missing key name"))
}

fn is_binary(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/octet-stream")
        })
}

fn request_id() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn json_response(o: JsonOutcome) -> Response {
    let status = StatusCode::from_u16(o.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let id = request_id();
    // For the audit record (routes/audit.rs): the batch's counts, without buffering the body.
    let counts = super::audit::BulkCounts {
        items: o.ok + o.failed,
        failed: o.failed,
        request_id: id.clone(),
    };
    let head = format!(
        "{{\"request_id\":\"{id}\",\"lease_id\":\"\",\"renewable\":false,\"lease_duration\":0,\"data\":{{\"batch_results\":["
    );
    let tail: &'static [u8] = b"]},\"wrap_info\":null,\"warnings\":null,\"auth\":null}";
    let parts = std::iter::once(Bytes::from(head))
        .chain(o.parts.into_iter().map(Bytes::from))
        .chain(std::iter::once(Bytes::from_static(tail)))
        .map(Ok::<_, Infallible>);
    let mut r = Response::new(Body::from_stream(futures_util::stream::iter(parts)));
    r.extensions_mut().insert(counts);
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn streaming_response(rx: mpsc::Receiver<Result<Bytes, BulkError>>) -> Response {
    let mut r = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

async fn read_json(body: Body, limit: usize) -> Result<Bytes, Response> {
    super::read_body(body, limit)
        .await
        .map_err(IntoResponse::into_response)
}

type DataStream = axum::body::BodyDataStream;

/// Reads from `input` into `push` until `ready` says the header is complete.
async fn read_until<T>(
    input: &mut DataStream,
    mut step: impl FnMut(Option<&[u8]>) -> Result<Option<T>, BulkError>,
) -> Result<T, Response> {
    let bad = |e: BulkError| error_response(StatusCode::BAD_REQUEST, &e.to_string());
    if let Some(t) = step(None).map_err(bad)? {
        return Ok(t);
    }
    loop {
        match input.next().await {
            Some(Ok(c)) => {
                if let Some(t) = step(Some(&c)).map_err(bad)? {
                    return Ok(t);
                }
            }
            Some(Err(_)) => return Err(bad(BulkError::Truncated("request body"))),
            None => return Err(bad(BulkError::Truncated("request header"))),
        }
    }
}

fn stream_aad(headers: &HeaderMap) -> Result<Vec<u8>, Response> {
    match headers.get(AAD_HEADER) {
        None => Ok(Vec::new()),
        Some(v) => B64.decode_to_vec(v.as_bytes()).map_err(|_| {
            error_response(
                StatusCode::BAD_REQUEST,
                "X-Rootseal-Associated-Data is not valid base64",
            )
        }),
    }
}

/// `POST …/bulk-seal/{name}`.
async fn bulk_seal<K: BatchKeySource + Clone + 'static>(
    State(keys): State<K>,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
    limit: usize,
) -> Response {
    let name = match name_of(&params) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if !is_binary(&headers) {
        let body = match read_json(body, limit).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        return match rootseal_bulk::seal_json_async(keys, name, body).await {
            Ok(o) => json_response(o),
            Err(e) => request_error(&e),
        };
    }
    let mut input = body.into_data_stream();
    if query.get("mode").map(String::as_str) == Some("stream") {
        let chunk_size = match query.get("chunk_size").map(|c| c.parse::<u32>()) {
            None => DEFAULT_CHUNK,
            Some(Ok(c)) => c,
            Some(Err(_)) => {
                return error_response(StatusCode::BAD_REQUEST, "chunk_size is not a number")
            }
        };
        let aad = match stream_aad(&headers) {
            Ok(a) => a,
            Err(r) => return r,
        };
        let cipher = match rootseal_bulk::new_cipher(&keys, &name).await {
            Ok(c) => c,
            Err(e) => return request_error(&e.into()),
        };
        let sealer = match StreamSealer::new(cipher, chunk_size, &aad) {
            Ok(s) => s,
            Err(e) => return request_error(&e.into()),
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(rootseal_bulk::seal_stream(sealer, input, tx));
        return streaming_response(rx);
    }
    let mut dec = FrameDecoder::new();
    if let Err(r) = read_until(&mut input, |c| {
        if let Some(c) = c {
            dec.push(c);
        }
        Ok(dec.header()?.then_some(()))
    })
    .await
    {
        return r;
    }
    let cipher = match rootseal_bulk::new_cipher(&keys, &name).await {
        Ok(c) => c,
        Err(e) => return request_error(&e.into()),
    };
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(rootseal_bulk::seal_frames(
        keys, name, cipher, dec, input, tx,
    ));
    streaming_response(rx)
}

enum Detected {
    Frames(FrameDecoder),
    Stream(StreamOpener),
}

/// `POST …/bulk-unseal/{name}`.
async fn bulk_unseal<K: BatchKeySource + Clone + 'static>(
    State(keys): State<K>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
    limit: usize,
) -> Response {
    let name = match name_of(&params) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if !is_binary(&headers) {
        let body = match read_json(body, limit).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        return match rootseal_bulk::unseal_json_async(keys, name, body).await {
            Ok(o) => json_response(o),
            Err(e) => request_error(&e),
        };
    }
    let aad = match stream_aad(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut input = body.into_data_stream();
    let mut head = Vec::new();
    let detected = read_until(&mut input, |c| {
        if let Some(c) = c {
            head.extend_from_slice(c);
        }
        match head.get(..4) {
            None => Ok(None),
            Some(m) if m == FRAME_MAGIC => {
                let mut d = FrameDecoder::new();
                d.push(&head);
                Ok(Some(Detected::Frames(d)))
            }
            Some(m) if m == STREAM_MAGIC => {
                let mut o = StreamOpener::new(&aad);
                o.push(&head);
                Ok(Some(Detected::Stream(o)))
            }
            Some(_) => Err(BulkError::Malformed(
                "body is neither a frame stream (RSBF) nor an object stream (RSBS)".into(),
            )),
        }
    })
    .await;
    let (tx, rx) = mpsc::channel(4);
    match detected {
        Err(r) => r,
        Ok(Detected::Frames(mut dec)) => {
            if let Err(e) = dec.header() {
                return request_error(&e.into());
            }
            tokio::spawn(rootseal_bulk::unseal_frames(keys, name, dec, input, tx));
            streaming_response(rx)
        }
        Ok(Detected::Stream(mut opener)) => {
            let header = match read_until(&mut input, |c| {
                if let Some(c) = c {
                    opener.push(c);
                }
                Ok(opener.header()?.cloned())
            })
            .await
            {
                Ok(h) => h,
                Err(r) => return r,
            };
            match rootseal_bulk::open_cipher(&keys, &name, header.version, &header.wrapped).await {
                Ok(c) => opener.set_cipher(c),
                Err(e) => return request_error(&e.into()),
            }
            tokio::spawn(rootseal_bulk::unseal_stream(opener, input, tx));
            streaming_response(rx)
        }
    }
}

#[cfg(test)]
mod tests;
