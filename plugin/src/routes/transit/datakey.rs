//! `datakey/{plaintext|wrapped}/{name}` and `datakeys/{plaintext|wrapped}/{name}` (Vault 1.21,
//! with `count`): Level 2 data keys from the HSM RNG, sealed inside the HSM under version
//! `key_version` of `name` (default the latest, Vault's rules). `plaintext` answers each key and
//! its ciphertext, `wrapped` only the ciphertext. `bits` is 128, 256 (default) or 512.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use rootseal_hsm::{Sealed, MAX_DATA_KEYS};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::input::requested_version;
use crate::routes::ciphertext;
use crate::routes::de::{parse_body, SecretB64, WeakU64};
use crate::routes::{ok, ApiError, AppState};

#[derive(Deserialize, Default)]
#[serde(default)]
struct DatakeyBody {
    bits: Option<WeakU64>,
    key_version: Option<WeakU64>,
    count: Option<WeakU64>,
    context: Option<String>,
    nonce: Option<String>,
}

/// One data key in an answer; `plaintext` only on the `plaintext` path.
#[derive(Serialize)]
struct KeyOut {
    ciphertext: String,
    key_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<SecretB64>,
}

impl KeyOut {
    fn new(key: &Zeroizing<Vec<u8>>, sealed: &Sealed, plaintext: bool) -> Self {
        KeyOut {
            ciphertext: ciphertext::format(sealed),
            key_version: sealed.version,
            plaintext: plaintext.then(|| SecretB64::encode(key.as_slice())),
        }
    }
}

/// `data` of `datakeys`: the keys, in order.
#[derive(Serialize)]
struct ManyOut {
    keys: Vec<KeyOut>,
}

/// The parsed request of either path.
struct Request {
    name: String,
    plaintext: bool,
    len: usize,
    version: Option<u32>,
    count: Option<u64>,
}

async fn request(
    st: &AppState,
    params: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Request, ApiError> {
    let Path((kind, name)) = params.map_err(|_| ApiError::bad_request("invalid data key path"))?;
    let plaintext = match kind.as_str() {
        "plaintext" => true,
        "wrapped" => false,
        _ => {
            return Err(ApiError::bad_request(
                "Invalid path, must be 'plaintext' or 'wrapped'",
            ))
        }
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
    Ok(Request {
        name,
        plaintext,
        len,
        version: requested_version(b.key_version)?,
        count: b.count.map(|c| c.0),
    })
}

/// `POST datakey/{plaintext|wrapped}/{name}`.
pub(crate) async fn datakey(
    State(st): State<AppState>,
    params: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let r = request(&st, params, body).await?;
    let (key, sealed) = st
        .keyring()
        .generate_data_key(&r.name, r.len, r.version)
        .await?;
    Ok(ok(KeyOut::new(&key, &sealed, r.plaintext)))
}

/// `POST datakeys/{plaintext|wrapped}/{name}` with `count` (required, 1 to 1000).
pub(crate) async fn datakeys(
    State(st): State<AppState>,
    params: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let r = request(&st, params, body).await?;
    let count = match r.count {
        None => return Err(ApiError::bad_request("missing count")),
        Some(c) => usize::try_from(c)
            .ok()
            .filter(|c| (1..=MAX_DATA_KEYS).contains(c))
            .ok_or_else(|| {
                ApiError::bad_request(format!("count must be between 1 and {MAX_DATA_KEYS}"))
            })?,
    };
    let keys = st
        .keyring()
        .generate_data_keys(&r.name, r.len, r.version, count)
        .await?;
    Ok(ok(ManyOut {
        keys: keys
            .iter()
            .map(|(k, s)| KeyOut::new(k, s, r.plaintext))
            .collect(),
    }))
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<DatakeyBody>(raw);
}
