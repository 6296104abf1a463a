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
use rootseal_hsm::{CreateOptions, KeyInfo, KeyOp, KeyType, LifecycleClass, VersionInfo};
use serde::{Deserialize, Serialize};

use super::key_name;
use crate::routes::de::{parse_body, DurationSecs, WeakBool, WeakU64};
use crate::routes::{ok, ApiError, AppState};

/// One version of a signing key in `keys` (Vault's shape).
#[derive(Serialize)]
struct PublicVersion {
    creation_time: String,
    name: &'static str,
    public_key: String,
}

/// `keys` of a key description: creation times (symmetric types), or each version's public key
/// (signing types).
#[derive(Serialize)]
#[serde(untagged)]
enum Versions<'a> {
    Symmetric(&'a BTreeMap<u32, u64>),
    Public(BTreeMap<u32, PublicVersion>),
}

/// One version's lifecycle in `versions` (rootseal's extension; NIST SP 800-57 states, RFC 3339
/// times).
#[derive(Serialize)]
struct LifecycleVersion {
    state: &'static str,
    activation_time: String,
    protect_stop_time: String,
    deactivation_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    compromise_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destroy_time: Option<String>,
    /// AES-GCM encryptions reserved so far (at least those made; NIST SP 800-38D §8.3 limit).
    encryptions: u64,
}

impl LifecycleVersion {
    fn new(v: &VersionInfo) -> Self {
        LifecycleVersion {
            state: v.state.name(),
            activation_time: rfc3339(v.activation_time),
            protect_stop_time: rfc3339(v.protect_stop_time),
            deactivation_time: rfc3339(v.deactivation_time),
            compromise_time: v.compromise_time.map(rfc3339),
            destroy_time: v.destroy_time.map(rfc3339),
            encryptions: v.encryptions,
        }
    }
}

/// `data` of `GET keys/{name}`.
#[derive(Serialize)]
pub(crate) struct KeyData<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    key_type: &'static str,
    keys: Versions<'a>,
    latest_version: u32,
    min_available_version: u32,
    min_decryption_version: u32,
    min_encryption_version: u32,
    deletion_allowed: bool,
    derived: bool,
    /// Vault's, present for a derived key.
    #[serde(skip_serializing_if = "Option::is_none")]
    kdf: Option<&'static str>,
    /// Vault's, present for a derived key.
    #[serde(skip_serializing_if = "Option::is_none")]
    convergent_encryption: Option<bool>,
    /// rootseal's convergence construction (see docs/api.md), present for a convergent key.
    #[serde(skip_serializing_if = "Option::is_none")]
    convergent_encryption_version: Option<i32>,
    exportable: bool,
    allow_plaintext_backup: bool,
    imported_key: bool,
    supports_encryption: bool,
    supports_decryption: bool,
    supports_derivation: bool,
    supports_signing: bool,
    auto_rotate_period: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_size: Option<u32>,
    /// rootseal's extension: the operations the key allows.
    allowed_operations: Vec<&'static str>,
    /// rootseal's extension: the key's lifecycle class.
    lifecycle_class: &'static str,
    /// rootseal's extension: the key's own originator-usage period, seconds (0: its class's).
    originator_usage_period: u64,
    /// rootseal's extension: the key's own recipient-usage period, seconds (0: its class's).
    recipient_usage_period: u64,
    /// rootseal's extension: each version's lifecycle state and dates (`keys` stays Vault's).
    versions: BTreeMap<u32, LifecycleVersion>,
}

impl<'a> KeyData<'a> {
    /// Vault's description of `k`.
    pub(crate) fn from_info(k: &'a KeyInfo) -> Self {
        let t = k.key_type;
        let keys = if t.is_asymmetric() {
            Versions::Public(
                k.public_keys
                    .iter()
                    .map(|(v, spki)| {
                        (
                            *v,
                            PublicVersion {
                                creation_time: rfc3339(k.versions.get(v).copied().unwrap_or(0)),
                                name: public_key_name(t),
                                public_key: public_key(t, spki),
                            },
                        )
                    })
                    .collect(),
            )
        } else {
            Versions::Symmetric(&k.versions)
        };
        KeyData {
            name: &k.name,
            key_type: t.name(),
            keys,
            latest_version: k.latest_version,
            min_available_version: k.min_available_version,
            min_decryption_version: k.min_decryption_version,
            min_encryption_version: k.min_encryption_version,
            deletion_allowed: k.deletion_allowed,
            derived: k.derived,
            // Not Vault's HKDF: the context is bound into the AAD inside the HSM (docs/api.md).
            kdf: k.derived.then_some("rootseal-aad-v1"),
            convergent_encryption: k.derived.then_some(k.convergent),
            convergent_encryption_version: k.convergent.then_some(-1),
            exportable: false,
            allow_plaintext_backup: false,
            imported_key: !k.imported_versions.is_empty(),
            supports_encryption: t.supports_encryption() && k.allowed_ops.contains(&KeyOp::Encrypt),
            supports_decryption: t.supports_encryption() && k.allowed_ops.contains(&KeyOp::Decrypt),
            supports_derivation: t.is_aes(),
            supports_signing: t.supports_signing() && k.allowed_ops.contains(&KeyOp::Sign),
            auto_rotate_period: k.auto_rotate_period_secs,
            key_size: (t == KeyType::Hmac).then_some(k.key_size),
            allowed_operations: k.allowed_ops.iter().map(|o| o.name()).collect(),
            lifecycle_class: k.lifecycle_class.name(),
            originator_usage_period: k.originator_usage_period_secs,
            recipient_usage_period: k.recipient_usage_period_secs,
            versions: k
                .lifecycle
                .iter()
                .map(|(v, l)| (*v, LifecycleVersion::new(l)))
                .collect(),
        }
    }
}

/// Vault's `name` of a signing key version.
fn public_key_name(t: KeyType) -> &'static str {
    match t {
        KeyType::EcdsaP256 => "P-256",
        KeyType::EcdsaP384 => "P-384",
        KeyType::EcdsaP521 => "P-521",
        other => other.name(),
    }
}

/// Vault's `public_key`: the raw key in base64 for Ed25519, PEM SubjectPublicKeyInfo otherwise.
fn public_key(t: KeyType, spki: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    if t == KeyType::Ed25519 {
        // A 44-byte Ed25519 SPKI ends with the 32-byte key.
        return B64.encode(
            spki.get(spki.len().saturating_sub(32)..)
                .unwrap_or_default(),
        );
    }
    pem(spki)
}

/// A DER SubjectPublicKeyInfo as PEM (`-----BEGIN PUBLIC KEY-----`, 64-column base64).
pub(super) fn pem(spki: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    let b = B64.encode(spki);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

pub(crate) use rootseal_hsm::rfc3339;

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
    key_size: Option<WeakU64>,
    lifecycle_class: Option<String>,
    originator_usage_period: Option<DurationSecs>,
    recipient_usage_period: Option<DurationSecs>,
}

/// The lifecycle class named `s` (`l1-kek`, `seal-kek`).
///
/// # Errors
/// 400 naming the classes.
pub(super) fn lifecycle_class(s: &str) -> Result<LifecycleClass, ApiError> {
    LifecycleClass::from_name(s).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown lifecycle_class {s:?}: use l1-kek or seal-kek"
        ))
    })
}

pub(super) fn refuse_true(field: &str, v: Option<WeakBool>) -> Result<(), ApiError> {
    if v.is_some_and(|b| b.0) {
        return Err(ApiError::bad_request(format!(
            "{field} is not supported: key material never leaves the HSM"
        )));
    }
    Ok(())
}

/// The requested key type (`None` or empty: `aes256-gcm96`).
///
/// # Errors
/// 400 for a type rootseal does not make, naming why.
pub(super) fn check_key_type(t: Option<&str>) -> Result<KeyType, ApiError> {
    match t {
        None | Some("") => Ok(KeyType::Aes256Gcm96),
        Some(name) => KeyType::from_name(name).ok_or_else(|| match name {
            "chacha20-poly1305" => ApiError::bad_request(
                "key type chacha20-poly1305 is not supported: the HSM token lacks the \
                 CKM_CHACHA20_POLY1305 mechanism",
            ),
            "managed_key" | "aes128-cmac" | "aes256-cmac" | "ml-dsa" | "slh-dsa" => {
                ApiError::bad_request(format!("key type {name:?} is not supported by rootseal"))
            }
            _ => ApiError::bad_request(format!("unknown key type {name}")),
        }),
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
    let key_type = check_key_type(b.key_type.as_deref())?;
    let key_size = match b.key_size {
        None | Some(WeakU64(0)) => None,
        Some(n) => Some(n.to_u32("key_size")?),
    };
    refuse_true("exportable", b.exportable)?;
    refuse_true("allow_plaintext_backup", b.allow_plaintext_backup)?;
    let derived = b.derived.is_some_and(|d| d.0);
    let convergent = b.convergent_encryption.is_some_and(|d| d.0);
    if convergent && !derived {
        return Err(ApiError::bad_request(
            "convergent encryption requires derivation to be enabled",
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
                key_type,
                key_size,
                derived,
                convergent,
                lifecycle_class: b
                    .lifecycle_class
                    .as_deref()
                    .map(lifecycle_class)
                    .transpose()?,
                originator_usage_period_secs: b.originator_usage_period.map_or(0, |p| p.0),
                recipient_usage_period_secs: b.recipient_usage_period.map_or(0, |p| p.0),
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

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<CreateBody>(raw);
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
