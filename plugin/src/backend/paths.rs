//! Logical requests into the HTTP face's router, and its answers back into logical responses.
//!
//! The secrets engine has no transit logic of its own: a `HandleRequest` for a transit path
//! becomes an in-process `http::Request` to the router the HTTP listener serves
//! ([`crate::routes::transit_router`], without rootseal's token check: OpenBao has authenticated
//! and authorised the request), and the answer is translated back:
//!
//! | logical operation | HTTP request |
//! |---|---|
//! | `create`, `update` | `POST /<path>` with `data` as the JSON body |
//! | `read` | `GET /<path>` |
//! | `delete` | `DELETE /<path>` |
//! | `list` | `LIST /<path>` |
//! | `help` | answered here (a short description of the mount's paths) |
//! | anything else (`rollback`, `renew`, `revoke`, `patch`, …) | unsupported operation |
//!
//! | HTTP answer | logical reply (what OpenBao's HTTP layer then sends) |
//! |---|---|
//! | 200 `{"data":…,"warnings":…}` | a response with that `data` and `warnings` (200) |
//! | 204 | no response (204) |
//! | 404 `{"errors":[]}` | for `read`/`list`, no response (404 `{"errors":[]}`); else unsupported path (404) |
//! | 400 `{"errors":[m]}` | an error response (`logical.ErrorResponse(m)` with `ErrInvalidRequest`, as Vault's transit answers): 400 `{"errors":[m]}` |
//! | other 4xx `{"errors":[m]}` | a raw response with the same status and body |
//! | 5xx `{"errors":[m]}` | a coded error with the same status (OpenBao logs and audits it as an error) |
//! | 4xx with `data` (a batch with failed items) | a raw response with the same status and body |
//!
//! So a client gets the same status and error text through OpenBao as from rootseal's listener
//! (a 400 is also recorded as an error by OpenBao's audit devices).

use axum::body::Body;
use axum::Router;
use serde_json::Value;
use tower::ServiceExt as _;

use super::proto::pb;

/// Largest answer body read back from the router.
const MAX_ANSWER: usize = 64 << 20;

/// `sdk/plugin/pb` error types (openbao `sdk/plugin/pb/translation.go`).
mod err_type {
    pub(super) const CODED: u32 = 3;
    pub(super) const INVALID_REQUEST: u32 = 7;
    pub(super) const UNSUPPORTED_OPERATION: u32 = 5;
    pub(super) const UNSUPPORTED_PATH: u32 = 6;
}

/// What a `HandleRequest` answers.
#[derive(Debug, Default, PartialEq)]
pub struct Reply {
    /// The response (`None`: the host answers 204, or 404 for a read or list).
    pub response: Option<pb::Response>,
    /// The error, if any.
    pub err: Option<pb::ProtoError>,
}

impl Reply {
    /// A response with `data` (a JSON value) and `warnings`.
    pub fn data(data: &Value, warnings: Vec<String>) -> Self {
        Self {
            response: Some(pb::Response {
                data: data.to_string(),
                warnings,
                ..pb::Response::default()
            }),
            err: None,
        }
    }

    /// No response.
    pub fn empty() -> Self {
        Self::default()
    }

    /// An error with HTTP status `status` and message `msg` (`logical.CodedError`).
    pub fn coded(status: u16, msg: impl Into<String>) -> Self {
        Self::error(err_type::CODED, status, msg.into())
    }

    /// `logical.ErrorResponse(msg)` with `logical.ErrInvalidRequest`: 400 `{"errors":[msg]}`.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        let mut r = Self::error(err_type::INVALID_REQUEST, 0, "invalid request".into());
        r.response = Some(pb::Response {
            data: serde_json::json!({ "error": msg.into() }).to_string(),
            ..pb::Response::default()
        });
        r
    }

    /// A raw HTTP answer (`logical.RespondWithStatusCode`): `status` and a JSON `body`.
    pub fn raw(status: u16, body: &str) -> Self {
        Self::data(
            &serde_json::json!({
                "http_status_code": status,
                "http_content_type": "application/json",
                "http_raw_body": body,
            }),
            Vec::new(),
        )
    }

    /// `logical.ErrUnsupportedOperation` (405).
    pub fn unsupported_operation() -> Self {
        Self::error(
            err_type::UNSUPPORTED_OPERATION,
            0,
            "unsupported operation".into(),
        )
    }

    /// `logical.ErrUnsupportedPath` (404).
    pub fn unsupported_path() -> Self {
        Self::error(err_type::UNSUPPORTED_PATH, 0, "unsupported path".into())
    }

    fn error(t: u32, code: u16, msg: String) -> Self {
        Self {
            response: None,
            err: Some(pb::ProtoError {
                err_type: t,
                err_msg: msg,
                err_code: i64::from(code),
            }),
        }
    }
}

/// The HTTP method for a logical operation, `None` for one the transit paths do not serve.
pub fn method(operation: &str) -> Option<http::Method> {
    match operation {
        "create" | "update" => Some(http::Method::POST),
        "read" => Some(http::Method::GET),
        "delete" => Some(http::Method::DELETE),
        "list" => http::Method::from_bytes(b"LIST").ok(),
        _ => None,
    }
}

/// `path` percent-encoded as an absolute URI path (`/` kept).
fn uri_path(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len() + 1);
    out.push('/');
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// The in-process HTTP request for `req`, or the reply when it has none.
///
/// # Errors
/// The [`Reply`] to send instead (an unsupported operation).
pub fn to_http(req: &pb::Request) -> Result<http::Request<Body>, Box<Reply>> {
    let method = method(&req.operation).ok_or_else(|| Box::new(Reply::unsupported_operation()))?;
    let body = if method == http::Method::POST {
        match req.data.trim() {
            "" | "null" => Body::from("{}"),
            d => Body::from(d.to_owned()),
        }
    } else {
        Body::empty()
    };
    http::Request::builder()
        .method(method)
        .uri(uri_path(&req.path))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|_| Box::new(Reply::unsupported_path()))
}

/// The logical reply for the router's answer to a request with `operation`.
pub async fn from_http(resp: http::Response<Body>, operation: &str) -> Reply {
    let status = resp.status();
    if status == http::StatusCode::NO_CONTENT {
        return Reply::empty();
    }
    let body = match axum::body::to_bytes(resp.into_body(), MAX_ANSWER).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the transit answer");
            return Reply::coded(500, crate::routes::error::INTERNAL);
        }
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status.is_success() {
        let warnings = v
            .get("warnings")
            .and_then(Value::as_array)
            .map(|w| {
                w.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        return Reply::data(v.get("data").unwrap_or(&Value::Null), warnings);
    }
    // A batch answer with failed items keeps its status and body (`logical.RespondWithStatusCode`).
    if v.get("data").is_some_and(|d| !d.is_null()) {
        return Reply::raw(status.as_u16(), &String::from_utf8_lossy(&body));
    }
    let errors: Vec<String> = v
        .get("errors")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if errors.is_empty() {
        if status == http::StatusCode::NOT_FOUND {
            return if matches!(operation, "read" | "list") {
                Reply::empty()
            } else {
                Reply::unsupported_path()
            };
        }
        if status == http::StatusCode::METHOD_NOT_ALLOWED {
            return Reply::unsupported_operation();
        }
    }
    let msg = errors.join("; ");
    if status == http::StatusCode::BAD_REQUEST {
        Reply::bad_request(msg)
    } else if status.is_client_error() {
        Reply::raw(status.as_u16(), &String::from_utf8_lossy(&body))
    } else {
        Reply::coded(status.as_u16(), msg)
    }
}

/// Answers `req` through `router` (the transit paths).
pub async fn forward(router: Router, req: &pb::Request) -> Reply {
    let http_req = match to_http(req) {
        Ok(r) => r,
        Err(reply) => return *reply,
    };
    match router.oneshot(http_req).await {
        Ok(resp) => from_http(resp, &req.operation).await,
        Err(never) => match never {},
    }
}

/// What an existence check looks at for a path.
#[derive(Debug, PartialEq, Eq)]
pub enum Existence<'a> {
    /// A path about one key (`keys/{name}`, `encrypt/{name}`): it exists iff the key does, so
    /// OpenBao asks for `create` to make a key and `update` to use or change one (Vault's transit
    /// does the same for these two paths).
    Key(&'a str),
    /// `config/hsm`: exists iff the mount has HSM settings.
    HsmConfig,
    /// No existence check: OpenBao treats a write as `update`.
    None,
}

/// The existence check of `path`.
pub fn existence(path: &str) -> Existence<'_> {
    if path == super::hsm_config::CONFIG_ENTRY {
        return Existence::HsmConfig;
    }
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("keys" | "encrypt"), Some(name), None) if !name.is_empty() => Existence::Key(name),
        _ => Existence::None,
    }
}

/// The `help` operation's text.
pub const HELP: &str = "rootseal: HSM-rooted transit keys (a Level 1 key per name, sealed under \
    the HSM's root; its sealed record kept in this mount's storage).\n\n\
    Paths (Vault's transit API): keys (list), keys/<name> (create, read, delete), \
    keys/<name>/config, keys/<name>/rotate, encrypt/<name>, decrypt/<name>, rewrap/<name>, \
    datakey/<plaintext|wrapped>/<name>, bulk-seal/<name>, bulk-unseal/<name>; \
    config/hsm (module, token_label or token_serial, pin_file or pin_env, pool_size; \
    requires sudo). See docs/secrets-plugin.md.";

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: &str, path: &str, data: &str) -> pb::Request {
        pb::Request {
            operation: op.into(),
            path: path.into(),
            data: data.into(),
            ..pb::Request::default()
        }
    }

    #[test]
    fn operations_become_methods() {
        let r = to_http(&req("update", "encrypt/app", r#"{"plaintext":"aGk="}"#));
        let r = r.ok();
        assert_eq!(
            r.as_ref().map(|r| r.method().clone()),
            Some(http::Method::POST)
        );
        assert_eq!(
            r.map(|r| r.uri().path().to_owned()),
            Some("/encrypt/app".into())
        );
        let l = to_http(&req("list", "keys/", "null")).ok();
        assert_eq!(
            l.map(|r| r.method().as_str().to_owned()),
            Some("LIST".into())
        );
        assert_eq!(
            to_http(&req("rollback", "", "")).err().map(|r| *r),
            Some(Reply::unsupported_operation())
        );
        assert_eq!(uri_path("keys/a b%"), "/keys/a%20b%25");
    }

    #[tokio::test]
    async fn answers_become_replies() {
        let ok = http::Response::builder()
            .status(200)
            .body(Body::from(
                r#"{"data":{"ciphertext":"vault:v1:x"},"warnings":["w"]}"#,
            ))
            .unwrap_or_default();
        let r = from_http(ok, "update").await;
        let resp = r.response.unwrap_or_default();
        assert_eq!(resp.data, r#"{"ciphertext":"vault:v1:x"}"#);
        assert_eq!(resp.warnings, vec!["w".to_owned()]);

        let bad = http::Response::builder()
            .status(400)
            .body(Body::from(r#"{"errors":["missing plaintext to encrypt"]}"#))
            .unwrap_or_default();
        assert_eq!(
            from_http(bad, "update").await,
            Reply::bad_request("missing plaintext to encrypt")
        );
        let big = http::Response::builder()
            .status(413)
            .body(Body::from(r#"{"errors":["too large"]}"#))
            .unwrap_or_default();
        let r = from_http(big, "update").await.response.unwrap_or_default();
        let v: Value = serde_json::from_str(&r.data).unwrap_or_default();
        assert_eq!(v["http_status_code"], 413);
        assert_eq!(v["http_raw_body"], r#"{"errors":["too large"]}"#);
        let down = http::Response::builder()
            .status(503)
            .body(Body::from(r#"{"errors":["HSM unavailable"]}"#))
            .unwrap_or_default();
        assert_eq!(
            from_http(down, "update").await,
            Reply::coded(503, "HSM unavailable")
        );

        let gone = || {
            http::Response::builder()
                .status(404)
                .body(Body::from(r#"{"errors":[]}"#))
                .unwrap_or_default()
        };
        assert_eq!(from_http(gone(), "read").await, Reply::empty());
        assert_eq!(from_http(gone(), "update").await, Reply::unsupported_path());

        let partial = http::Response::builder()
            .status(400)
            .body(Body::from(r#"{"data":{"batch_results":[{"error":"x"}]}}"#))
            .unwrap_or_default();
        let r = from_http(partial, "update")
            .await
            .response
            .unwrap_or_default();
        let v: Value = serde_json::from_str(&r.data).unwrap_or_default();
        assert_eq!(v["http_status_code"], 400);
    }

    #[test]
    fn existence_checks() {
        assert_eq!(existence("keys/app"), Existence::Key("app"));
        assert_eq!(existence("encrypt/app"), Existence::Key("app"));
        assert_eq!(existence("keys/app/rotate"), Existence::None);
        assert_eq!(existence("decrypt/app"), Existence::None);
        assert_eq!(existence("config/hsm"), Existence::HsmConfig);
        assert_eq!(existence("keys/"), Existence::None);
    }
}
