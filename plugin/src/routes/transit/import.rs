//! Bring your own key (Vault's `path_wrapping_key.go`, `path_import.go`): `GET wrapping_key`,
//! `POST keys/{name}/import`, `POST keys/{name}/import_version`. The ciphertext is Vault's
//! (`RSA-OAEP(wrapping key, ephemeral AES-256 key) ‖ KWP(ephemeral key, target key)`, base64), and
//! both unwraps happen inside the HSM (`rootseal_hsm::Keyring::import_key`). Symmetric keys only;
//! `public_key` imports, `exportable`, `allow_plaintext_backup`, derivation and convergence are
//! refused by name. Success is Vault's empty 204.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::StatusCode;
use rootseal_hsm::{CreateOptions, ImportHash};
use serde::{Deserialize, Serialize};

use super::key_name;
use super::keys::{check_key_type, pem, refuse_true};
use crate::routes::de::{parse_body, DurationSecs, WeakBool, WeakU64};
use crate::routes::{ok, ApiError, AppState};

#[derive(Serialize)]
struct WrappingKeyOut {
    public_key: String,
}

/// `GET wrapping_key`: the RSA-4096 public key (PEM) to wrap ephemeral keys under; made on the
/// token the first time.
pub(crate) async fn wrapping_key(State(st): State<AppState>) -> Result<Response, ApiError> {
    let spki = st.keyring().wrapping_key().await?;
    Ok(ok(WrappingKeyOut {
        public_key: pem(&spki),
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ImportBody {
    ciphertext: Option<String>,
    hash_function: Option<String>,
    #[serde(rename = "type")]
    key_type: Option<String>,
    public_key: Option<String>,
    allow_rotation: Option<WeakBool>,
    derived: Option<WeakBool>,
    context: Option<String>,
    convergent_encryption: Option<serde_json::Value>,
    exportable: Option<WeakBool>,
    allow_plaintext_backup: Option<WeakBool>,
    auto_rotate_period: Option<DurationSecs>,
    version: Option<WeakU64>,
}

/// The decoded ciphertext and hash of an import body.
fn material(b: &ImportBody) -> Result<(Vec<u8>, ImportHash), ApiError> {
    if b.public_key.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(ApiError::bad_request(
            "public_key import is not supported: rootseal imports symmetric keys only",
        ));
    }
    let hash_name = b.hash_function.as_deref().unwrap_or("SHA256");
    let hash = ImportHash::from_name(hash_name)
        .ok_or_else(|| ApiError::bad_request(format!("unknown hash function: {hash_name}")))?;
    let ct = b
        .ciphertext
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing ciphertext to import"))?;
    let ct = B64
        .decode(ct)
        .map_err(|_| ApiError::bad_request("unable to decode ciphertext as base64"))?;
    Ok((ct, hash))
}

/// `POST keys/{name}/import`: a new key from an import ciphertext.
pub(crate) async fn import(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: ImportBody = parse_body(&raw)?;
    if b.convergent_encryption.is_some() {
        return Err(ApiError::bad_request(
            "import cannot be used on keys with convergent encryption enabled",
        ));
    }
    if b.derived.is_some_and(|d| d.0) || b.context.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::bad_request(
            "key derivation is not supported for imported keys",
        ));
    }
    refuse_true("exportable", b.exportable)?;
    refuse_true("allow_plaintext_backup", b.allow_plaintext_backup)?;
    let period = b.auto_rotate_period.map_or(0, |p| p.0);
    if period > 0 && !b.allow_rotation.is_some_and(|r| r.0) {
        return Err(ApiError::bad_request(
            "allow_rotation must be set to true if auto-rotation is enabled",
        ));
    }
    if period != 0 && period < 3600 {
        return Err(ApiError::bad_request(
            "auto_rotate_period must be 0 or at least one hour",
        ));
    }
    let key_type = check_key_type(b.key_type.as_deref())?;
    let (ct, hash) = material(&b)?;
    st.keyring()
        .import_key(
            &name,
            CreateOptions {
                auto_rotate_period_secs: period,
                key_type,
                ..CreateOptions::default()
            },
            ct,
            hash,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST keys/{name}/import_version`: a new version of an imported key.
pub(crate) async fn import_version(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: ImportBody = parse_body(&raw)?;
    if b.version.is_some_and(|v| v.0 != 0) {
        return Err(ApiError::bad_request(
            "version is only for adding a private key to a public-key version, which rootseal does not import",
        ));
    }
    let (ct, hash) = material(&b)?;
    st.keyring().import_key_version(&name, ct, hash).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<ImportBody>(raw);
}
