//! Vault's transit paths, relative to `/v1/{mount}`, one file per path family (as Vault's
//! `path_*.go`):
//!
//! * [`keys`] — `keys` (list), `keys/{name}` (create, read, delete), the key description.
//! * [`config`] — `keys/{name}/config`.
//! * [`rotate`] — `keys/{name}/rotate`; [`trim`] — `keys/{name}/trim`.
//! * [`encrypt`], [`decrypt`], [`rewrap`]: single items and `batch_input`, through [`batch`]
//!   (a single item is a batch of one) and [`input`] (an item's field decoding).
//! * [`datakey`] — `datakey/{plaintext|wrapped}/{name}`, `datakeys/{plaintext|wrapped}/{name}`.
//! * [`sign`], [`verify`] — `sign/{name}(/{hash})`, `verify/{name}(/{hash})` (signatures and
//!   HMACs); [`hmac`] — `hmac/{name}(/{algorithm})`.
//! * [`random`] — `random(/{source})(/{bytes})`; [`hash`] — `hash(/{algorithm})`.
//! * [`import`] — `wrapping_key`, `keys/{name}/import`, `keys/{name}/import_version` (BYOK).
//! * [`config_keys`] — `config/keys`; [`cache_config`] — `cache-config`; both kept in the one
//!   record of [`settings`].

use axum::extract::rejection::PathRejection;
use axum::extract::Path;

use super::ApiError;

pub(crate) mod batch;
pub(crate) mod cache_config;
pub(crate) mod config;
pub(crate) mod config_keys;
pub(crate) mod datakey;
pub(crate) mod decrypt;
pub(crate) mod encrypt;
pub(crate) mod hash;
pub(crate) mod hmac;
pub(crate) mod import;
pub(crate) mod input;
pub(crate) mod keys;
pub(crate) mod random;
pub(crate) mod rewrap;
pub(crate) mod rotate;
pub(crate) mod settings;
pub(crate) mod sign;
pub(crate) mod trim;
pub(crate) mod verify;

/// Default [`crate::ApiConfig::max_batch_items`]: items one `batch_input` may carry.
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 10_000;

/// The `{name}` and the one more segment of a path (`sign/{name}/{hash}`, …), or a 400 in the
/// envelope.
pub(crate) fn name_and(
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    p.map(|Path(v)| v)
        .map_err(|_| ApiError::bad_request("invalid path"))
}

/// A single path segment that is not a key name (`hash/{algorithm}`, `random/{a}`), or a 400 in
/// the envelope.
pub(crate) fn segment(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|_| ApiError::bad_request("invalid path"))
}

/// The `{name}` of a path, or a 400 in the envelope.
pub(crate) fn key_name(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(n)| n)
        .map_err(|_| ApiError::bad_request("invalid key name in path"))
}
