//! `encrypt/{name}`, `decrypt/{name}`, `rewrap/{name}`: single items and `batch_input`.
//!
//! Each request makes one keyring call with all its items (one HSM job); rewrap makes two
//! (decrypt, then encrypt under the latest version). Batch answers follow Vault: results keep the
//! input order and echo `reference`; if any item failed the status is 400 (500 if only internal
//! failures), unless `partial_failure_response_code` is given and at least one item succeeded.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_hsm::KeyringError;
use rootseal_hsm::{DecryptItem, EncryptItem, Sealed};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::key_name;
use super::keys::check_key_type;
use crate::routes::ciphertext;
use crate::routes::de::{parse_body, BatchInput, SecretB64, WeakBool, WeakU64};
use crate::routes::error::{keyring_message, keyring_status, INVALID_CIPHERTEXT};
use crate::routes::{ok, respond, ApiError, AppState};

/// Decodes standard base64 straight into zeroizing memory.
///
/// # Errors
/// 400 `failed to base64-decode {what}`.
pub fn decode_secret(s: &str, what: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 4 * 3 + 3));
    B64.decode_vec(s, &mut out)
        .map_err(|_| format!("failed to base64-decode {what}"))?;
    Ok(out)
}

fn decode_aad(s: Option<&str>) -> Result<Vec<u8>, String> {
    match s {
        None | Some("") => Ok(Vec::new()),
        Some(a) => B64
            .decode(a)
            .map_err(|_| "failed to base64-decode associated_data".to_owned()),
    }
}

fn refuse_derivation(context: Option<&str>, nonce: Option<&str>) -> Result<(), String> {
    if context.is_some_and(|c| !c.is_empty()) || nonce.is_some_and(|n| !n.is_empty()) {
        return Err(
            "key derivation (context, nonce) is not supported: keys are not derived".into(),
        );
    }
    Ok(())
}

/// One batch result before serialisation.
enum Slot<T> {
    Done(T),
    Failed { msg: String, internal: bool },
}

impl<T> Slot<T> {
    fn user(msg: impl Into<String>) -> Self {
        Slot::Failed {
            msg: msg.into(),
            internal: false,
        }
    }
    fn keyring(e: &KeyringError) -> Self {
        if matches!(e, KeyringError::InvalidCiphertext) {
            return Slot::user(INVALID_CIPHERTEXT);
        }
        let internal = keyring_status(e).is_server_error();
        if internal {
            tracing::error!(error = %e, "batch item failed");
        }
        Slot::Failed {
            msg: keyring_message(e),
            internal,
        }
    }
}

/// Vault's status rule for a batch; adds a warning for an invalid override.
fn batch_status<T>(
    slots: &[Slot<T>],
    partial: Option<WeakU64>,
    warnings: &mut Vec<String>,
) -> StatusCode {
    let any_ok = slots.iter().any(|s| matches!(s, Slot::Done(_)));
    let user_err = slots.iter().any(|s| {
        matches!(
            s,
            Slot::Failed {
                internal: false,
                ..
            }
        )
    });
    let internal_err = slots
        .iter()
        .any(|s| matches!(s, Slot::Failed { internal: true, .. }));
    if !user_err && !internal_err {
        return StatusCode::OK;
    }
    let code = if user_err {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    match partial {
        Some(p) if any_ok => match u16::try_from(p.0)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(c) => c,
            None => {
                warnings.push(format!(
                    "invalid HTTP response code override from partial_failure_response_code, reverting to {}",
                    code.as_u16()
                ));
                code
            }
        },
        _ => code,
    }
}

fn check_batch_len(n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad_request("missing batch input to process"));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// encrypt

#[derive(Deserialize, Default)]
#[serde(default)]
struct EncryptBody<'a> {
    #[serde(borrow)]
    plaintext: Option<Cow<'a, str>>,
    #[serde(borrow)]
    associated_data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    context: Option<Cow<'a, str>>,
    #[serde(borrow)]
    nonce: Option<Cow<'a, str>>,
    key_version: Option<WeakU64>,
    #[serde(rename = "type")]
    key_type: Option<String>,
    convergent_encryption: Option<WeakBool>,
    batch_input: Option<BatchInput<EncryptIn>>,
    partial_failure_response_code: Option<WeakU64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EncryptIn {
    plaintext: Option<String>,
    associated_data: Option<String>,
    context: Option<String>,
    nonce: Option<String>,
    reference: Option<String>,
    key_version: Option<WeakU64>,
}

#[derive(Serialize)]
struct EncryptOut {
    ciphertext: String,
    key_version: u32,
}

#[derive(Serialize)]
struct EncryptItemOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_version: Option<u32>,
    reference: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct BatchData<T> {
    batch_results: Vec<T>,
}

/// The response of a batch whose items end as ciphertexts (encrypt, rewrap): results in input
/// order with their `reference`, and Vault's batch status rule.
fn sealed_batch_response<'a>(
    slots: Vec<Slot<Sealed>>,
    references: impl Iterator<Item = &'a str>,
    partial: Option<WeakU64>,
) -> Response {
    let mut warnings = Vec::new();
    let status = batch_status(&slots, partial, &mut warnings);
    let out: Vec<EncryptItemOut<'_>> = slots
        .into_iter()
        .zip(references)
        .map(|(slot, reference)| match slot {
            Slot::Done(s) => EncryptItemOut {
                ciphertext: Some(ciphertext::format(&s)),
                key_version: Some(s.version),
                reference,
                error: None,
            },
            Slot::Failed { msg, .. } => EncryptItemOut {
                ciphertext: None,
                key_version: None,
                reference,
                error: Some(msg),
            },
        })
        .collect();
    respond(status, BatchData { batch_results: out }, &warnings)
}

fn requested_version(v: Option<WeakU64>) -> Result<Option<u32>, ApiError> {
    match v {
        None | Some(WeakU64(0)) => Ok(None),
        Some(v) => v.to_u32("key_version").map(Some),
    }
}

/// `POST encrypt/{name}`.
pub async fn encrypt(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: EncryptBody<'_> = parse_body(&raw)?;
    check_key_type(b.key_type.as_deref())?;
    if b.convergent_encryption.is_some_and(|c| c.0) {
        return Err(ApiError::bad_request(
            "convergent encryption is not supported",
        ));
    }
    let version = requested_version(b.key_version)?;
    let upsert = st.config().allow_upsert;

    let Some(BatchInput(batch)) = b.batch_input else {
        let pt = b
            .plaintext
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("missing plaintext to encrypt"))?;
        refuse_derivation(b.context.as_deref(), b.nonce.as_deref())
            .map_err(ApiError::BadRequest)?;
        let item = EncryptItem {
            plaintext: decode_secret(pt, "plaintext").map_err(ApiError::BadRequest)?,
            aad: decode_aad(b.associated_data.as_deref()).map_err(ApiError::BadRequest)?,
        };
        let mut out = st
            .keyring()
            .encrypt(&name, version, vec![item], upsert)
            .await?;
        let sealed = out.pop().ok_or_else(no_item)??;
        return Ok(ok(EncryptOut {
            ciphertext: ciphertext::format(&sealed),
            key_version: sealed.version,
        }));
    };

    check_batch_len(batch.len())?;
    let mut slots: Vec<Slot<Sealed>> = Vec::with_capacity(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    for it in &batch {
        let prepared = (|| {
            let item_version = requested_version(it.key_version)
                .map_err(|_| "key_version is out of range".to_owned())?;
            if item_version.is_some() && item_version != version {
                return Err("per-item key_version must match the request's key_version".to_owned());
            }
            refuse_derivation(it.context.as_deref(), it.nonce.as_deref())?;
            let pt = it
                .plaintext
                .as_deref()
                .ok_or_else(|| "missing plaintext to encrypt".to_owned())?;
            Ok(EncryptItem {
                plaintext: decode_secret(pt, "plaintext")?,
                aad: decode_aad(it.associated_data.as_deref())?,
            })
        })();
        match prepared {
            Ok(item) => {
                items.push(item);
                slots.push(pending());
            }
            Err(msg) => slots.push(Slot::user(msg)),
        }
    }
    if !items.is_empty() {
        let results = st.keyring().encrypt(&name, version, items, upsert).await?;
        fill(&mut slots, results.into_iter());
    }
    Ok(sealed_batch_response(
        slots,
        batch
            .iter()
            .map(|i| i.reference.as_deref().unwrap_or_default()),
        b.partial_failure_response_code,
    ))
}

// ------------------------------------------------------------------------------------------------
// decrypt

#[derive(Deserialize, Default)]
#[serde(default)]
struct DecryptBody<'a> {
    #[serde(borrow)]
    ciphertext: Option<Cow<'a, str>>,
    #[serde(borrow)]
    associated_data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    context: Option<Cow<'a, str>>,
    #[serde(borrow)]
    nonce: Option<Cow<'a, str>>,
    key_version: Option<WeakU64>,
    batch_input: Option<BatchInput<DecryptIn>>,
    partial_failure_response_code: Option<WeakU64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DecryptIn {
    ciphertext: Option<String>,
    associated_data: Option<String>,
    context: Option<String>,
    nonce: Option<String>,
    reference: Option<String>,
}

#[derive(Serialize)]
struct DecryptOut {
    plaintext: SecretB64,
}

#[derive(Serialize)]
struct DecryptItemOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<SecretB64>,
    reference: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn parse_ct(s: &str) -> Result<Sealed, String> {
    ciphertext::parse(s).map_err(|why| {
        tracing::debug!(?why, "ciphertext does not parse");
        INVALID_CIPHERTEXT.to_owned()
    })
}

fn prepare_decrypt(
    ct: Option<&str>,
    aad: Option<&str>,
    context: Option<&str>,
    nonce: Option<&str>,
) -> Result<DecryptItem, String> {
    refuse_derivation(context, nonce)?;
    let ct = ct.ok_or_else(|| "missing ciphertext to decrypt".to_owned())?;
    Ok(DecryptItem {
        sealed: parse_ct(ct)?,
        aad: decode_aad(aad)?,
    })
}

fn b64_secret(pt: &[u8]) -> SecretB64 {
    SecretB64::encode(pt)
}

/// `POST decrypt/{name}`.
pub async fn decrypt(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: DecryptBody<'_> = parse_body(&raw)?;

    let Some(BatchInput(batch)) = b.batch_input else {
        let pt = decrypt_single(&st, &name, &b).await?;
        return Ok(ok(DecryptOut {
            plaintext: b64_secret(&pt),
        }));
    };

    check_batch_len(batch.len())?;
    let (mut slots, items) = prepare_batch_decrypt(&batch);
    if !items.is_empty() {
        let results = st.keyring().decrypt(&name, items).await?;
        fill(&mut slots, results.into_iter());
    }
    let mut warnings = Vec::new();
    let status = batch_status(&slots, b.partial_failure_response_code, &mut warnings);
    let out: Vec<DecryptItemOut<'_>> = slots
        .into_iter()
        .zip(&batch)
        .map(|(slot, input)| {
            let reference = input.reference.as_deref().unwrap_or_default();
            match slot {
                Slot::Done(pt) => DecryptItemOut {
                    plaintext: Some(b64_secret(&pt)),
                    reference,
                    error: None,
                },
                Slot::Failed { msg, .. } => DecryptItemOut {
                    plaintext: None,
                    reference,
                    error: Some(msg),
                },
            }
        })
        .collect();
    Ok(respond(status, BatchData { batch_results: out }, &warnings))
}

/// Slots for a decrypt batch (pending ones marked by an empty message) and the items to send.
/// Decrypts the single (non-batch) item of a decrypt or rewrap body: one keyring call.
async fn decrypt_single(
    st: &AppState,
    name: &str,
    b: &DecryptBody<'_>,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let item = prepare_decrypt(
        b.ciphertext.as_deref(),
        b.associated_data.as_deref(),
        b.context.as_deref(),
        b.nonce.as_deref(),
    )
    .map_err(|m| {
        if m == INVALID_CIPHERTEXT {
            ApiError::InvalidCiphertext
        } else {
            ApiError::BadRequest(m)
        }
    })?;
    let mut out = st.keyring().decrypt(name, vec![item]).await?;
    Ok(out.pop().ok_or_else(no_item)??)
}

fn prepare_batch_decrypt<T>(batch: &[DecryptIn]) -> (Vec<Slot<T>>, Vec<DecryptItem>) {
    let mut slots = Vec::with_capacity(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    for it in batch {
        match prepare_decrypt(
            it.ciphertext.as_deref(),
            it.associated_data.as_deref(),
            it.context.as_deref(),
            it.nonce.as_deref(),
        ) {
            Ok(item) => {
                items.push(item);
                slots.push(pending());
            }
            Err(msg) => slots.push(Slot::user(msg)),
        }
    }
    (slots, items)
}

fn pending<T>() -> Slot<T> {
    Slot::Failed {
        msg: String::new(),
        internal: true,
    }
}

fn is_pending<T>(s: &Slot<T>) -> bool {
    matches!(s, Slot::Failed { msg, .. } if msg.is_empty())
}

/// Replaces each pending slot, in order, with the next keyring result.
fn fill<T>(slots: &mut [Slot<T>], mut results: impl Iterator<Item = Result<T, KeyringError>>) {
    for slot in slots.iter_mut() {
        if is_pending(slot) {
            *slot = match results.next() {
                Some(Ok(v)) => Slot::Done(v),
                Some(Err(e)) => Slot::keyring(&e),
                None => Slot::keyring(&no_item()),
            };
        }
    }
}

// ------------------------------------------------------------------------------------------------
// rewrap

/// `POST rewrap/{name}`: decrypts (one keyring call) and encrypts under the latest (or requested)
/// version (a second call).
pub async fn rewrap(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: DecryptBody<'_> = parse_body(&raw)?;
    let version = requested_version(b.key_version)?;

    let Some(BatchInput(batch)) = b.batch_input else {
        let aad = decode_aad(b.associated_data.as_deref()).map_err(ApiError::BadRequest)?;
        let pt = decrypt_single(&st, &name, &b).await?;
        let mut enc = st
            .keyring()
            .encrypt(
                &name,
                version,
                vec![EncryptItem { plaintext: pt, aad }],
                false,
            )
            .await?;
        let sealed = enc.pop().ok_or_else(no_item)??;
        return Ok(ok(EncryptOut {
            ciphertext: ciphertext::format(&sealed),
            key_version: sealed.version,
        }));
    };

    check_batch_len(batch.len())?;
    let (mut dec_slots, items) = prepare_batch_decrypt::<Zeroizing<Vec<u8>>>(&batch);
    // The AAD of each slot (empty for items refused before the HSM), for the encrypt half.
    let mut sent_aads = items.iter().map(|i| i.aad.clone());
    let slot_aads: Vec<Vec<u8>> = dec_slots
        .iter()
        .map(|s| {
            if is_pending(s) {
                sent_aads.next().unwrap_or_default()
            } else {
                Vec::new()
            }
        })
        .collect();
    if !items.is_empty() {
        let results = st.keyring().decrypt(&name, items).await?;
        fill(&mut dec_slots, results.into_iter());
    }
    // Second call: every plaintext that came back, under the target version.
    let mut slots: Vec<Slot<Sealed>> = Vec::with_capacity(dec_slots.len());
    let mut enc_items = Vec::new();
    for (slot, aad) in dec_slots.into_iter().zip(slot_aads) {
        match slot {
            Slot::Done(pt) => {
                enc_items.push(EncryptItem { plaintext: pt, aad });
                slots.push(pending());
            }
            Slot::Failed { msg, internal } => slots.push(Slot::Failed { msg, internal }),
        }
    }
    if !enc_items.is_empty() {
        let results = st
            .keyring()
            .encrypt(&name, version, enc_items, false)
            .await?;
        fill(&mut slots, results.into_iter());
    }
    Ok(sealed_batch_response(
        slots,
        batch
            .iter()
            .map(|i| i.reference.as_deref().unwrap_or_default()),
        b.partial_failure_response_code,
    ))
}

/// The error for a keyring answer with fewer items than were sent (cannot happen).
fn no_item() -> KeyringError {
    KeyringError::internal("the keyring answered fewer items than were sent")
}
