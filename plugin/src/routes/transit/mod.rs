//! Vault's transit paths, relative to `/v1/{mount}`.
//!
//! * [`keys`] — `keys`, `keys/{name}`, `keys/{name}/rotate`, `keys/{name}/config`.
//! * [`crypto`] — `encrypt/{name}`, `decrypt/{name}`, `rewrap/{name}` (single and `batch_input`).
//! * [`datakey`] — `datakey/{plaintext|wrapped}/{name}`.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;

use super::ApiError;

pub mod crypto;
pub mod datakey;
pub mod keys;

/// The `{name}` of a path, or a 400 in the envelope.
pub(crate) fn key_name(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(n)| n)
        .map_err(|_| ApiError::bad_request("invalid key name in path"))
}
