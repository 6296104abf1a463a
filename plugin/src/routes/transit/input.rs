//! Decoding of one request item's fields (base64 plaintext and `associated_data`, ciphertext
//! strings, `key_version`), shared by encrypt, decrypt and rewrap. Each failure is an
//! [`ItemError`] the caller answers as a 400 (single request) or as the item's `error` (batch).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_hsm::{DecryptItem, Sealed};
use zeroize::Zeroizing;

use super::batch::ItemError;
use crate::routes::ciphertext;
use crate::routes::de::WeakU64;
use crate::routes::ApiError;

/// Decodes standard base64 straight into zeroizing memory.
///
/// # Errors
/// 400 `failed to base64-decode {what}`.
pub(super) fn decode_secret(s: &str, what: &str) -> Result<Zeroizing<Vec<u8>>, ItemError> {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 4 * 3 + 3));
    B64.decode_vec(s, &mut out)
        .map_err(|_| ItemError::bad_request(format!("failed to base64-decode {what}")))?;
    Ok(out)
}

/// Decodes `associated_data` (absent or empty: no AAD).
pub(super) fn decode_aad(s: Option<&str>) -> Result<Vec<u8>, ItemError> {
    match s {
        None | Some("") => Ok(Vec::new()),
        Some(a) => B64
            .decode(a)
            .map_err(|_| ItemError::bad_request("failed to base64-decode associated_data")),
    }
}

/// An item and its Vault `context` (base64-decoded; empty when none was given).
pub(crate) struct InContext<T> {
    pub(crate) item: T,
    pub(crate) context: Vec<u8>,
}

/// Decodes an item's `context`, and refuses a caller-supplied `nonce` (Vault's convergent
/// version 1): rootseal never takes a nonce from the client.
pub(super) fn decode_context(
    context: Option<&str>,
    nonce: Option<&str>,
) -> Result<Vec<u8>, ItemError> {
    if nonce.is_some_and(|n| !n.is_empty()) {
        return Err(ItemError::bad_request(
            "a caller-supplied nonce is not supported: nonces are made inside the HSM",
        ));
    }
    match context {
        None | Some("") => Ok(Vec::new()),
        Some(c) => B64
            .decode(c)
            .map_err(|_| ItemError::bad_request("failed to base64-decode context")),
    }
}

/// Splits items from their contexts; the contexts are empty when no item named one (so a key that
/// is not derived sees none).
pub(crate) fn split<T>(v: Vec<InContext<T>>) -> (Vec<T>, Vec<Vec<u8>>) {
    let any = v.iter().any(|i| !i.context.is_empty());
    let mut items = Vec::with_capacity(v.len());
    let mut contexts = Vec::with_capacity(if any { v.len() } else { 0 });
    for i in v {
        items.push(i.item);
        if any {
            contexts.push(i.context);
        }
    }
    (items, contexts)
}

/// A `vault:vN:` ciphertext string; anything else is the one opaque `invalid ciphertext`.
fn parse_ct(s: &str) -> Result<Sealed, ItemError> {
    ciphertext::parse(s).map_err(|why| {
        tracing::debug!(?why, "ciphertext does not parse");
        ItemError::InvalidCiphertext
    })
}

/// One decrypt (or rewrap) item from its fields.
pub(super) fn decrypt_item(
    ct: Option<&str>,
    aad: Option<&str>,
    context: Option<&str>,
    nonce: Option<&str>,
) -> Result<InContext<DecryptItem>, ItemError> {
    let context = decode_context(context, nonce)?;
    let ct = ct.ok_or_else(|| ItemError::bad_request("missing ciphertext to decrypt"))?;
    Ok(InContext {
        item: DecryptItem {
            sealed: parse_ct(ct)?,
            aad: decode_aad(aad)?,
        },
        context,
    })
}

/// The version a request asks for (`None` or 0: the key's default).
///
/// # Errors
/// 400 when it does not fit a `u32`.
pub(super) fn requested_version(v: Option<WeakU64>) -> Result<Option<u32>, ApiError> {
    match v {
        None | Some(WeakU64(0)) => Ok(None),
        Some(v) => v.to_u32("key_version").map(Some),
    }
}
