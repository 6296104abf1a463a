//! `keys/{name}/rotate`: a new version of the key, made in the HSM; answers with the key (Vault
//! ≥ 1.14).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;

use super::key_name;
use super::keys::key_response;
use crate::routes::{ApiError, AppState};

/// `POST keys/{name}/rotate`: adds a version; answers with the key.
pub(crate) async fn rotate(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let info = st.keyring().rotate_key(&name).await?;
    Ok(key_response(&info))
}
