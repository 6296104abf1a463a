//! `keys` (list) and `keys/{name}` (create, read, delete), and the key description every key
//! path answers with ([`KeyData`]). Shapes follow Vault's transit API (create answers 200 with
//! the key, as Vault ≥ 1.14 does; delete answers 204).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rootseal_hsm::KeyringError;
use rootseal_hsm::{CreateOptions, KeyInfo, KeyOp};
use serde::{Deserialize, Serialize};

use super::key_name;
use crate::routes::de::{parse_body, DurationSecs, WeakBool};
use crate::routes::{ok, ApiError, AppState};

/// The only key type rootseal has.
pub(crate) const KEY_TYPE: &str = "aes256-gcm96";

/// `data` of `GET keys/{name}`.
#[derive(Serialize)]
pub(crate) struct KeyData<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    key_type: &'a str,
    keys: &'a BTreeMap<u32, u64>,
    latest_version: u32,
    min_available_version: u32,
    min_decryption_version: u32,
    min_encryption_version: u32,
    deletion_allowed: bool,
    derived: bool,
    exportable: bool,
    allow_plaintext_backup: bool,
    imported_key: bool,
    supports_encryption: bool,
    supports_decryption: bool,
    supports_derivation: bool,
    supports_signing: bool,
    auto_rotate_period: u64,
    /// rootseal's extension: the operations the key allows.
    allowed_operations: Vec<&'static str>,
}

impl<'a> KeyData<'a> {
    /// Vault's description of `k`.
    pub(crate) fn from_info(k: &'a KeyInfo) -> Self {
        KeyData {
            name: &k.name,
            key_type: k.key_type,
            keys: &k.versions,
            latest_version: k.latest_version,
            min_available_version: 0,
            min_decryption_version: k.min_decryption_version,
            min_encryption_version: k.min_encryption_version,
            deletion_allowed: k.deletion_allowed,
            derived: false,
            exportable: false,
            allow_plaintext_backup: false,
            imported_key: false,
            supports_encryption: k.allowed_ops.contains(&KeyOp::Encrypt),
            supports_decryption: k.allowed_ops.contains(&KeyOp::Decrypt),
            supports_derivation: false,
            supports_signing: false,
            auto_rotate_period: k.auto_rotate_period_secs,
            allowed_operations: k.allowed_ops.iter().map(|o| o.name()).collect(),
        }
    }
}

pub(super) fn key_response(k: &KeyInfo) -> Response {
    ok(KeyData::from_info(k))
}

#[derive(Serialize)]
struct ListData {
    keys: Vec<String>,
}

fn wants_list(q: Option<&str>) -> bool {
    q.unwrap_or_default().split('&').any(|kv| {
        matches!(
            kv.split_once('='),
            Some(("list", "true" | "1" | "t" | "True" | "TRUE"))
        )
    })
}

async fn list(st: &AppState) -> Result<Response, ApiError> {
    let mut keys = st.keyring().list_keys().await?;
    if keys.is_empty() {
        return Err(ApiError::NotFound);
    }
    keys.sort();
    Ok(ok(ListData { keys }))
}

/// `GET keys?list=true`.
pub(crate) async fn list_get(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    if !wants_list(q.as_deref()) {
        return ApiError::MethodNotAllowed.into_response();
    }
    list(&st).await.into_response()
}

/// `LIST keys`; any other method is 405.
pub(crate) async fn list_other_method(State(st): State<AppState>, method: Method) -> Response {
    if method.as_str() != "LIST" {
        return ApiError::MethodNotAllowed.into_response();
    }
    list(&st).await.into_response()
}

/// Body of `POST keys/{name}`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct CreateBody {
    #[serde(rename = "type")]
    key_type: Option<String>,
    exportable: Option<WeakBool>,
    derived: Option<WeakBool>,
    convergent_encryption: Option<WeakBool>,
    allow_plaintext_backup: Option<WeakBool>,
    auto_rotate_period: Option<DurationSecs>,
}

pub(super) fn refuse_true(field: &str, v: Option<WeakBool>) -> Result<(), ApiError> {
    if v.is_some_and(|b| b.0) {
        return Err(ApiError::bad_request(format!(
            "{field} is not supported: key material never leaves the HSM"
        )));
    }
    Ok(())
}

/// Checks a requested key type (`None` or `aes256-gcm96`).
///
/// # Errors
/// 400 for any other type.
pub(super) fn check_key_type(t: Option<&str>) -> Result<(), ApiError> {
    match t {
        None | Some("" | KEY_TYPE) => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "unsupported key type {other:?}: rootseal keys are {KEY_TYPE}"
        ))),
    }
}

/// `POST keys/{name}`: creates the key (or returns the existing one, as Vault does).
pub(crate) async fn create(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: CreateBody = parse_body(&raw)?;
    check_key_type(b.key_type.as_deref())?;
    refuse_true("exportable", b.exportable)?;
    refuse_true("allow_plaintext_backup", b.allow_plaintext_backup)?;
    if b.derived.is_some_and(|d| d.0) || b.convergent_encryption.is_some_and(|d| d.0) {
        return Err(ApiError::bad_request(
            "key derivation and convergent encryption are not supported",
        ));
    }
    let period = b.auto_rotate_period.map_or(0, |p| p.0);
    if period != 0 && period < 3600 {
        return Err(ApiError::bad_request(
            "auto_rotate_period must be 0 or at least one hour",
        ));
    }
    let info = st
        .keyring()
        .create_key(
            &name,
            CreateOptions {
                auto_rotate_period_secs: period,
                ..CreateOptions::default()
            },
        )
        .await?;
    Ok(key_response(&info))
}

/// `GET keys/{name}`: 404 `{"errors":[]}` when absent, as Vault.
pub(crate) async fn read(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    match st.keyring().key_info(&name).await {
        Ok(info) => Ok(key_response(&info)),
        Err(KeyringError::NotFound) => Err(ApiError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE keys/{name}`: 204 when `deletion_allowed`.
pub(crate) async fn delete(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    st.keyring().delete_key(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query() {
        assert!(wants_list(Some("list=true")));
        assert!(wants_list(Some("a=b&list=1")));
        assert!(!wants_list(Some("list=false")));
        assert!(!wants_list(None));
    }
}
