//! `hash` and `hash/{algorithm}`: a digest of `input` computed in software (hashing is not a key
//! operation). `algorithm` defaults to `sha2-256`; `format` is `hex` (default) or `base64`.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_hsm::HashAlg;
use serde::{Deserialize, Serialize};

use super::sign::parse_hash;
use crate::routes::de::parse_body;
use crate::routes::{ok, ApiError, AppState};

#[derive(Deserialize, Default)]
#[serde(default)]
struct HashBody {
    input: Option<String>,
    algorithm: Option<String>,
    format: Option<String>,
}

#[derive(Serialize)]
struct HashOut {
    sum: String,
}

/// `POST hash`.
pub(crate) async fn hash(st: State<AppState>, body: Body) -> Result<Response, ApiError> {
    hash_with(st, None, body).await
}

/// `POST hash/{algorithm}`.
pub(crate) async fn hash_alg(
    st: State<AppState>,
    alg: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let alg = super::segment(alg)?;
    hash_with(st, Some(alg), body).await
}

async fn hash_with(
    State(st): State<AppState>,
    url_alg: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = st.read_body(body).await?;
    let b: HashBody = parse_body(&raw)?;
    let alg = parse_hash(url_alg.as_deref().or(b.algorithm.as_deref()))?;
    if alg == HashAlg::None {
        return Err(ApiError::bad_request("unsupported hash algorithm none"));
    }
    let input = B64
        .decode(b.input.as_deref().unwrap_or_default())
        .map_err(|_| ApiError::bad_request("unable to decode input as base64"))?;
    let sum = alg.digest(&input)?;
    let sum = match b.format.as_deref() {
        None | Some("" | "hex") => sum.iter().map(|x| format!("{x:02x}")).collect(),
        Some("base64") => B64.encode(&sum),
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "unsupported encoding format {o}"
            )))
        }
    };
    Ok(ok(HashOut { sum }))
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<HashBody>(raw);
}
