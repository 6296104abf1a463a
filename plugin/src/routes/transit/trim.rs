//! `keys/{name}/trim`: Vault's trim, removing (destroying) every version below
//! `min_available_version`; answers with the key. With governance on, refused: a trim is a
//! `key.destroy` ceremony (`--param min_available_version=N`).

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
    if st.governance() {
        // Trim destroys key material: with governance on it is a key.destroy ceremony.
        return Err(ApiError::bad_request(format!(
            "trimming destroys key versions: with governance on it is a key.destroy ceremony \
             (rootseal ceremony propose --op key.destroy --param key={name} \
             --param min_available_version={min})"
        )));
    }
    let info = st.keyring().trim_key(&name, min).await?;
    Ok(key_response(&info))
}
