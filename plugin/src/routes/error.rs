//! The one error type of the HTTP face, [`ApiError`], and its mapping to Vault's envelope
//! `{"errors":["..."]}`.
//!
//! Statuses come from one `match` over [`KeyringError`] ([`keyring_status`]). 5xx bodies are
//! generic (`internal error`, `service unavailable`, `upstream error`). Turning an error into a
//! response logs nothing: it attaches an [`ErrorDetail`] to the response, and the edge (the
//! `observe` middleware in `routes/mod.rs`) writes the one log line per request, at `error` for
//! a 5xx (with the detail) and at `warn` for a 4xx (with its safe message). Cryptographic
//! failures are the single opaque `invalid ciphertext`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rootseal_hsm::KeyringError;

/// The generic body of a 500.
pub const INTERNAL: &str = "internal error";
/// Vault's wording for a missing key on encrypt/decrypt/rewrap/datakey (`KeyringError::NotFound`).
#[cfg(test)]
const KEY_NOT_FOUND: &str = "encryption key not found";
/// The one opaque answer for every ciphertext that does not verify.
pub const INVALID_CIPHERTEXT: &str = "invalid ciphertext";
/// Vault's answer for a missing or wrong token.
pub const PERMISSION_DENIED: &str = "permission denied";

/// An error answered in Vault's envelope. Build it from a [`KeyringError`] with `?` (`From`), or
/// from one of the request-level variants.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// A keyring failure; the status comes from [`keyring_status`].
    Keyring(KeyringError),
    /// A read of something that does not exist (`GET keys/:name`, unknown path): 404 with
    /// `{"errors":[]}`, as Vault answers.
    NotFound,
    /// The client sent something unusable; the message is safe to show.
    BadRequest(String),
    /// A ciphertext string that does not parse (the detail is logged at debug where it happens).
    InvalidCiphertext,
    /// No token, or the wrong one.
    PermissionDenied,
    /// The path exists but not for this method.
    MethodNotAllowed,
    /// The body is larger than the configured limit.
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

impl ApiError {
    /// A 400 with `msg`.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Keyring(e) => keyring_status(e),
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) | Self::InvalidCiphertext => StatusCode::BAD_REQUEST,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The message the client sees (`None`: an empty `errors` list).
    pub fn public_message(&self) -> Option<String> {
        match self {
            Self::Keyring(e) => Some(keyring_message(e)),
            Self::NotFound => None,
            Self::BadRequest(m) => Some(m.clone()),
            Self::InvalidCiphertext => Some(INVALID_CIPHERTEXT.to_owned()),
            Self::PermissionDenied => Some(PERMISSION_DENIED.to_owned()),
            Self::MethodNotAllowed => Some("unsupported operation".to_owned()),
            Self::PayloadTooLarge { limit } => {
                Some(format!("request body too large (limit {limit} bytes)"))
            }
        }
    }
}

impl From<KeyringError> for ApiError {
    fn from(e: KeyringError) -> Self {
        Self::Keyring(e)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keyring(e) => write!(f, "{e}"),
            other => f.write_str(other.public_message().as_deref().unwrap_or("not found")),
        }
    }
}

impl std::error::Error for ApiError {}

/// The HTTP status for a keyring error. The only place that decides it (the bulk-seal handlers
/// use it too); one exhaustive match, pinned by a table test.
pub fn keyring_status(e: &KeyringError) -> StatusCode {
    match e {
        KeyringError::NotFound
        | KeyringError::InvalidRequest(_)
        | KeyringError::InvalidCiphertext
        | KeyringError::VersionTooOld
        | KeyringError::PolicyDenied(_)
        | KeyringError::Lifecycle(_)
        | KeyringError::DeletionNotAllowed => StatusCode::BAD_REQUEST,
        KeyringError::Integrity(_)
        | KeyringError::UnsupportedFormat(_)
        | KeyringError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        // 503: Vault clients (and OpenBao's seal) retry 5xx; a conflict is transient.
        KeyringError::HsmUnavailable(_)
        | KeyringError::StoreUnavailable(_)
        | KeyringError::Conflict
        | KeyringError::NoRoot
        | KeyringError::WeakRoot
        | KeyringError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        KeyringError::StoreDenied(_) => StatusCode::BAD_GATEWAY,
    }
}

/// What the client sees for a keyring error: the error's own text, which names a state and never a
/// value (`HSM unavailable`, `key store denied access`, …), except for integrity and internal
/// failures, which are one opaque `internal error` (the detail is in the log).
pub fn keyring_message(e: &KeyringError) -> String {
    match e {
        KeyringError::Integrity(_) | KeyringError::Internal(_) => INTERNAL.to_owned(),
        e => e.to_string(),
    }
}

/// A JSON response with `status` and an already serialised body.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(axum::body::Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Vault's error envelope with `status` and `msg` (`None`: `{"errors":[]}`).
pub fn envelope(status: StatusCode, msg: Option<&str>) -> Response {
    let body = match msg {
        Some(m) => serde_json::json!({ "errors": [m] }),
        None => serde_json::json!({ "errors": [] }),
    };
    json_bytes(status, body.to_string().into_bytes())
}

/// What the edge logs about an error answer: attached to the response by
/// [`ApiError::into_response`], read (and logged once) by the `observe` middleware. The client
/// never sees it.
#[derive(Clone, Debug)]
pub(crate) struct ErrorDetail {
    /// The error's text (never a secret: errors name states, not values).
    pub(crate) error: String,
    /// The variant and its cause, for 5xx.
    pub(crate) detail: String,
}

impl ErrorDetail {
    /// Writes the one log line for an answer with `status`.
    pub(crate) fn log(&self, status: StatusCode) {
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self.error, detail = %self.detail, "request failed");
        } else {
            tracing::warn!(status = status.as_u16(), error = %self.error, "request refused");
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut r = envelope(status, self.public_message().as_deref());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Back-pressure, an HSM or key store away, a conflict: all transient; tell
            // well-behaved clients when to come back.
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r.extensions_mut().insert(ErrorDetail {
            error: self.to_string(),
            detail: if status.is_server_error() {
                format!("{self:?}")
            } else {
                String::new()
            },
        });
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins (variant → status, body) for every keyring error.
    #[test]
    fn keyring_error_table() {
        let table: Vec<(KeyringError, u16, &str)> = vec![
            (KeyringError::NotFound, 400, KEY_NOT_FOUND),
            (KeyringError::InvalidRequest("bad x".into()), 400, "bad x"),
            (KeyringError::InvalidCiphertext, 400, INVALID_CIPHERTEXT),
            (
                KeyringError::VersionTooOld,
                400,
                "ciphertext or signature version is disallowed by policy (too old)",
            ),
            (
                KeyringError::PolicyDenied("encrypt"),
                400,
                "operation not allowed on this key: encrypt",
            ),
            (
                KeyringError::DeletionNotAllowed,
                400,
                "deletion is not allowed for this key",
            ),
            (
                KeyringError::Lifecycle(rootseal_hsm::LifecycleRefusal {
                    version: 3,
                    reason: rootseal_hsm::Refusal::State(rootseal_hsm::LifecycleState::Deactivated),
                }),
                400,
                "key version 3 is deactivated",
            ),
            (KeyringError::integrity("t"), 500, INTERNAL),
            (
                KeyringError::UnsupportedFormat(9),
                500,
                "stored key record has an unsupported format version 9",
            ),
            (KeyringError::internal("t"), 500, INTERNAL),
            (
                KeyringError::HsmUnavailable(rootseal_hsm::Cause::new("t")),
                503,
                "HSM unavailable",
            ),
            (
                KeyringError::StoreUnavailable(rootseal_hsm::Cause::new("t")),
                503,
                "key store unavailable",
            ),
            (
                KeyringError::Conflict,
                503,
                "concurrent modification of the key, try again",
            ),
            (
                KeyringError::NoRoot,
                503,
                "no root key on the HSM token: run `rootseal init`",
            ),
            (
                KeyringError::WeakRoot,
                503,
                "the HSM root is not hardened: run `rootseal root rotate` (Security Officer) before creating or rotating keys",
            ),
            (
                KeyringError::StoreDenied(rootseal_hsm::Cause::new("t")),
                502,
                "key store denied access",
            ),
            (KeyringError::Overloaded, 503, "HSM busy, try again"),
        ];
        for (e, status, msg) in table {
            let api = ApiError::from(e);
            assert_eq!(api.status().as_u16(), status, "{api:?}");
            assert_eq!(api.public_message().as_deref(), Some(msg), "{api:?}");
        }
    }

    #[test]
    fn request_errors() {
        assert_eq!(ApiError::NotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(ApiError::NotFound.public_message(), None);
        assert_eq!(ApiError::PermissionDenied.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            ApiError::PermissionDenied.public_message().as_deref(),
            Some(PERMISSION_DENIED)
        );
        assert_eq!(
            ApiError::PayloadTooLarge { limit: 5 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ApiError::InvalidCiphertext.public_message().as_deref(),
            Some(INVALID_CIPHERTEXT)
        );
        assert_eq!(
            ApiError::MethodNotAllowed.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
