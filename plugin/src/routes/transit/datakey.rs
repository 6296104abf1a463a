//! `datakey/{plaintext|wrapped}/{name}`: a Level 2 data key from the HSM RNG, sealed under the
//! latest version of `name` inside the HSM. `plaintext` answers the key and its ciphertext,
//! `wrapped` only the ciphertext. `bits` is 128, 256 (default) or 512.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::routes::ciphertext;
use crate::routes::de::{parse_body, SecretB64, WeakU64};
use crate::routes::{ok, ApiError, AppState};

#[derive(Deserialize, Default)]
#[serde(default)]
struct DatakeyBody {
    bits: Option<WeakU64>,
    context: Option<String>,
    nonce: Option<String>,
}

#[derive(Serialize)]
struct PlaintextOut {
    ciphertext: String,
    key_version: u32,
    plaintext: SecretB64,
}

#[derive(Serialize)]
struct WrappedOut {
    ciphertext: String,
    key_version: u32,
}

/// `POST datakey/{plaintext|wrapped}/{name}`.
pub(crate) async fn datakey(
    State(st): State<AppState>,
    params: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Path((kind, name)) = params.map_err(|_| ApiError::bad_request("invalid data key path"))?;
    let plaintext = match kind.as_str() {
        "plaintext" => true,
        "wrapped" => false,
        _ => return Err(ApiError::bad_request("invalid type")),
    };
    let raw = st.read_body(body).await?;
    let b: DatakeyBody = parse_body(&raw)?;
    if b.context.is_some_and(|c| !c.is_empty()) || b.nonce.is_some_and(|n| !n.is_empty()) {
        return Err(ApiError::bad_request(
            "key derivation (context, nonce) is not supported: keys are not derived",
        ));
    }
    let len = match b.bits.map_or(256, |b| b.0) {
        128 => 16,
        256 => 32,
        512 => 64,
        _ => return Err(ApiError::bad_request("invalid bits value")),
    };
    let (key, sealed) = st.keyring().generate_data_key(&name, len).await?;
    let ct = ciphertext::format(&sealed);
    if plaintext {
        let b64 = SecretB64::encode(key.as_slice());
        Ok(ok(PlaintextOut {
            ciphertext: ct,
            key_version: sealed.version,
            plaintext: b64,
        }))
    } else {
        Ok(ok(WrappedOut {
            ciphertext: ct,
            key_version: sealed.version,
        }))
    }
}
