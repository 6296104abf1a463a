//! `decrypt/{name}`: single items and `batch_input`, one keyring call (one HSM job) per request.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use rootseal_hsm::DecryptItem;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::batch::{self, Prepared};
use super::input::{decrypt_item, split, InContext};
use super::key_name;
use crate::routes::de::{parse_body, BatchInput, SecretB64, WeakU64};
use crate::routes::{ok, ApiError, AppState};

/// The body of `decrypt/{name}` and `rewrap/{name}`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct DecryptBody<'a> {
    #[serde(borrow)]
    ciphertext: Option<Cow<'a, str>>,
    #[serde(borrow)]
    associated_data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    context: Option<Cow<'a, str>>,
    #[serde(borrow)]
    nonce: Option<Cow<'a, str>>,
    /// rewrap's target version.
    pub(super) key_version: Option<WeakU64>,
    batch_input: Option<BatchInput<DecryptIn>>,
    /// Vault's override of a batch's failure status.
    pub(super) partial_failure_response_code: Option<WeakU64>,
}

/// One `batch_input` item of decrypt and rewrap.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct DecryptIn {
    ciphertext: Option<String>,
    associated_data: Option<String>,
    context: Option<String>,
    nonce: Option<String>,
    reference: Option<String>,
}

impl DecryptBody<'_> {
    /// The batch items, if `batch_input` was given (a non-empty list).
    ///
    /// # Errors
    /// 400 for an empty `batch_input`.
    pub(super) fn batch(&self, st: &AppState) -> Result<Option<&[DecryptIn]>, ApiError> {
        batch::inputs(st, self.batch_input.as_ref())
    }

    /// Decodes the single item or every batch item.
    pub(super) fn prepare<T>(
        &self,
        batch: Option<&[DecryptIn]>,
    ) -> Prepared<T, InContext<DecryptItem>> {
        match batch {
            None => Prepared::new(std::iter::once(()), |()| {
                decrypt_item(
                    self.ciphertext.as_deref(),
                    self.associated_data.as_deref(),
                    self.context.as_deref(),
                    self.nonce.as_deref(),
                )
            }),
            Some(v) => Prepared::new(v.iter(), |it| {
                decrypt_item(
                    it.ciphertext.as_deref(),
                    it.associated_data.as_deref(),
                    it.context.as_deref(),
                    it.nonce.as_deref(),
                )
            }),
        }
    }
}

/// The `reference` of each batch item.
pub(super) fn references(v: &[DecryptIn]) -> impl Iterator<Item = &str> {
    v.iter().map(|i| i.reference.as_deref().unwrap_or_default())
}

#[derive(Serialize)]
struct DecryptOut {
    plaintext: SecretB64,
}

impl DecryptOut {
    fn new(pt: &[u8]) -> Self {
        Self {
            plaintext: SecretB64::encode(pt),
        }
    }
}

/// `POST decrypt/{name}`.
pub(crate) async fn decrypt(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: DecryptBody<'_> = parse_body(&raw)?;
    let batch_in = b.batch(&st)?;
    let mut p: Prepared<Zeroizing<Vec<u8>>, InContext<DecryptItem>> = b.prepare(batch_in);
    let items = p.take_items();
    if !items.is_empty() {
        let results = batch::in_jobs(items, |c| {
            let (items, contexts) = split(c);
            st.keyring().decrypt_in_context(&name, items, contexts)
        })
        .await?;
        p.fill(results);
    }
    match batch_in {
        None => Ok(ok(DecryptOut::new(&p.into_single()?))),
        Some(v) => Ok(batch::response(
            p.slots,
            references(v),
            b.partial_failure_response_code,
            |pt| DecryptOut::new(&pt),
        )),
    }
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body and every item's decoding
/// (ciphertext string, associated data, context), as decrypt and rewrap do before the HSM.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let Ok(b) = parse_body::<DecryptBody<'_>>(raw) else {
        return;
    };
    let batch = b.batch_input.as_ref().map(|BatchInput(v)| v.as_slice());
    let mut p: Prepared<(), InContext<DecryptItem>> = b.prepare(batch);
    let _ = p.take_items();
}
