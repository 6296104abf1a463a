//! `rewrap/{name}`: each ciphertext decrypted and sealed again under the latest (or requested)
//! version in one keyring call ([`rootseal_hsm::Keyring::rewrap`], one HSM job): the plaintext
//! never leaves the HSM worker.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use rootseal_hsm::{DecryptItem, Sealed};

use super::batch::{self, Prepared};
use super::decrypt::{references, DecryptBody};
use super::encrypt::SealedOut;
use super::input::{requested_version, split, InContext};
use super::key_name;
use crate::routes::de::parse_body;
use crate::routes::{ok, ApiError, AppState};

/// `POST rewrap/{name}`.
pub(crate) async fn rewrap(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: DecryptBody<'_> = parse_body(&raw)?;
    let version = requested_version(b.key_version)?;
    let batch_in = b.batch(&st)?;
    let mut p: Prepared<Sealed, InContext<DecryptItem>> = b.prepare(batch_in);
    let items = p.take_items();
    if !items.is_empty() {
        let results = batch::in_jobs(items, |c| {
            let (items, contexts) = split(c);
            st.keyring()
                .rewrap_in_context(&name, version, items, contexts)
        })
        .await?;
        p.fill(results);
    }
    match batch_in {
        None => Ok(ok(SealedOut::new(&p.into_single()?))),
        Some(v) => Ok(batch::response(
            p.slots,
            references(v),
            b.partial_failure_response_code,
            |s| SealedOut::new(&s),
        )),
    }
}
