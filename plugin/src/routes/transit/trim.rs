//! `keys/{name}/trim`: Vault's trim, removing (destroying) every version below
//! `min_available_version`; answers with the key.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::key_name;
use super::keys::key_response;
use crate::routes::de::{parse_body, WeakU64};
use crate::routes::{ApiError, AppState};

/// Body of `POST keys/{name}/trim`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct TrimBody {
    min_available_version: Option<WeakU64>,
}

/// `POST keys/{name}/trim`: answers with the key.
pub(crate) async fn trim(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: TrimBody = parse_body(&raw)?;
    let min = b
        .min_available_version
        .ok_or_else(|| ApiError::bad_request("missing min_available_version"))?
        .to_u32("min_available_version")?;
    let info = st.keyring().trim_key(&name, min).await?;
    Ok(key_response(&info))
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<TrimBody>(raw);
}
