//! `hmac/{name}` and `hmac/{name}/{algorithm}`: HMACs computed inside the HSM under an `hmac`
//! key's L1 (`CKM_SHA*_HMAC`), `vault:v<N>:<base64>`. Verification is `verify/{name}` with
//! `hmac` ([`super::verify`]).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use rootseal_hsm::{Marshaling, Signature};
use serde::{Deserialize, Serialize};

use super::batch::{self, Prepared};
use super::input::requested_version;
use super::sign::{decode_input, format_signature, parse_hash};
use crate::routes::de::{parse_body, BatchInput, WeakU64};
use crate::routes::{ok, ApiError, AppState};

#[derive(Deserialize, Default)]
#[serde(default)]
struct HmacBody {
    input: Option<String>,
    key_version: Option<WeakU64>,
    algorithm: Option<String>,
    batch_input: Option<BatchInput<HmacIn>>,
    partial_failure_response_code: Option<WeakU64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HmacIn {
    input: Option<String>,
    reference: Option<String>,
}

#[derive(Serialize)]
struct HmacOut {
    hmac: String,
}

/// `POST hmac/{name}`.
pub(crate) async fn hmac(
    st: State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = super::key_name(name)?;
    hmac_with(st, name, None, body).await
}

/// `POST hmac/{name}/{algorithm}`.
pub(crate) async fn hmac_alg(
    st: State<AppState>,
    params: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let (name, alg) = super::name_and(params)?;
    hmac_with(st, name, Some(alg), body).await
}

async fn hmac_with(
    State(st): State<AppState>,
    name: String,
    url_alg: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = st.read_body(body).await?;
    let b: HmacBody = parse_body(&raw)?;
    let alg = parse_hash(url_alg.as_deref().or(b.algorithm.as_deref()))?;
    let version = requested_version(b.key_version)?;
    let batch_in = batch::inputs(&st, b.batch_input.as_ref())?;
    let mut p: Prepared<Signature, Vec<u8>> = match batch_in {
        None => Prepared::new(std::iter::once(b.input.as_deref()), decode_input),
        Some(v) => Prepared::new(v.iter(), |i| decode_input(i.input.as_deref())),
    };
    let items = p.take_items();
    if !items.is_empty() {
        let results = batch::in_jobs(items, |c| st.keyring().hmac(&name, version, alg, c)).await?;
        p.fill(results);
    }
    let out = |s: Signature| HmacOut {
        hmac: format_signature(&s, Marshaling::Asn1),
    };
    match batch_in {
        None => Ok(ok(out(p.into_single()?))),
        Some(v) => Ok(batch::response(
            p.slots,
            v.iter().map(|i| i.reference.as_deref().unwrap_or_default()),
            b.partial_failure_response_code,
            out,
        )),
    }
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<HmacBody>(raw);
}
