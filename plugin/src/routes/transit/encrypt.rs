//! `encrypt/{name}`: single items and `batch_input`, one keyring call (one HSM job) per request;
//! the key is created first when missing and upsert is on (Vault's default).

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use rootseal_hsm::{CreateOptions, EncryptItem, Sealed};
use serde::{Deserialize, Serialize};

use super::batch::{self, ItemError, Prepared};
use super::input::{
    decode_aad, decode_context, decode_secret, requested_version, split, InContext,
};
use super::key_name;
use super::keys::check_key_type;
use crate::routes::ciphertext;
use crate::routes::de::{parse_body, BatchInput, WeakBool, WeakU64};
use crate::routes::{ok, ApiError, AppState};

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

/// One sealed item in an answer (encrypt and rewrap).
#[derive(Serialize)]
pub(super) struct SealedOut {
    ciphertext: String,
    key_version: u32,
}

impl SealedOut {
    /// Vault's `vault:vN:` form of `s`.
    pub(super) fn new(s: &Sealed) -> Self {
        Self {
            ciphertext: ciphertext::format(s),
            key_version: s.version,
        }
    }
}

/// One item's fields, borrowed from the body or from a batch item.
struct ItemIn<'a> {
    plaintext: Option<&'a str>,
    associated_data: Option<&'a str>,
    context: Option<&'a str>,
    nonce: Option<&'a str>,
    key_version: Option<WeakU64>,
}

fn decode(it: ItemIn<'_>, version: Option<u32>) -> Result<InContext<EncryptItem>, ItemError> {
    let item_version = requested_version(it.key_version)
        .map_err(|_| ItemError::bad_request("key_version is out of range"))?;
    if item_version.is_some() && item_version != version {
        return Err(ItemError::bad_request(
            "per-item key_version must match the request's key_version",
        ));
    }
    let context = decode_context(it.context, it.nonce)?;
    let pt = it
        .plaintext
        .ok_or_else(|| ItemError::bad_request("missing plaintext to encrypt"))?;
    Ok(InContext {
        item: EncryptItem {
            plaintext: decode_secret(pt, "plaintext")?,
            aad: decode_aad(it.associated_data)?,
        },
        context,
    })
}

/// `POST encrypt/{name}`.
pub(crate) async fn encrypt(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: EncryptBody<'_> = parse_body(&raw)?;
    check_key_type(b.key_type.as_deref())?;

    let version = requested_version(b.key_version)?;
    let single = ItemIn {
        plaintext: b.plaintext.as_deref(),
        associated_data: b.associated_data.as_deref(),
        context: b.context.as_deref(),
        nonce: b.nonce.as_deref(),
        key_version: None,
    };
    let batch_in = batch::inputs(&st, b.batch_input.as_ref())?;
    let mut p: Prepared<Sealed, InContext<EncryptItem>> = match batch_in {
        None => Prepared::new(std::iter::once(single), |it| decode(it, version)),
        Some(v) => Prepared::new(
            v.iter().map(|it| ItemIn {
                plaintext: it.plaintext.as_deref(),
                associated_data: it.associated_data.as_deref(),
                context: it.context.as_deref(),
                nonce: it.nonce.as_deref(),
                key_version: it.key_version,
            }),
            |it| decode(it, version),
        ),
    };
    let items = p.take_items();
    if !items.is_empty() {
        let upsert = st
            .settings()
            .upsert(st.keyring(), st.config().allow_upsert)
            .await;
        if upsert && b.convergent_encryption.is_some_and(|c| c.0) {
            // Vault's upsert of a convergent key: made first, derived and convergent (an
            // existing key is left as it is, as Vault does).
            if items.iter().all(|i| i.context.is_empty()) {
                return Err(ApiError::bad_request(
                    "convergent encryption requires derivation to be enabled, so context is required",
                ));
            }
            st.keyring()
                .create_key(
                    &name,
                    CreateOptions {
                        derived: true,
                        convergent: true,
                        ..CreateOptions::default()
                    },
                )
                .await?;
        }
        let results = batch::in_jobs(items, |c| {
            let (items, contexts) = split(c);
            st.keyring()
                .encrypt_in_context(&name, version, items, contexts, upsert)
        })
        .await?;
        p.fill(results);
    }
    match batch_in {
        None => Ok(ok(SealedOut::new(&p.into_single()?))),
        Some(v) => Ok(batch::response(
            p.slots,
            v.iter().map(|i| i.reference.as_deref().unwrap_or_default()),
            b.partial_failure_response_code,
            |s| SealedOut::new(&s),
        )),
    }
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body and every item's decoding, as
/// [`encrypt`] does before any HSM work.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let Ok(b) = parse_body::<EncryptBody<'_>>(raw) else {
        return;
    };
    let _ = check_key_type(b.key_type.as_deref());
    let Ok(version) = requested_version(b.key_version) else {
        return;
    };
    let _ = decode(
        ItemIn {
            plaintext: b.plaintext.as_deref(),
            associated_data: b.associated_data.as_deref(),
            context: b.context.as_deref(),
            nonce: b.nonce.as_deref(),
            key_version: None,
        },
        version,
    );
    for it in b.batch_input.iter().flat_map(|BatchInput(v)| v) {
        let _ = decode(
            ItemIn {
                plaintext: it.plaintext.as_deref(),
                associated_data: it.associated_data.as_deref(),
                context: it.context.as_deref(),
                nonce: it.nonce.as_deref(),
                key_version: it.key_version,
            },
            version,
        );
    }
}
