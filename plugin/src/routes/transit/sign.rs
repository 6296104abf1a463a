//! `sign/{name}` and `sign/{name}/{hash}`: signatures made inside the HSM by a signing key's
//! token private key, `vault:v<N>:<base64>` (base64url without padding for `jws`). Single items
//! and `batch_input` through [`super::batch`]. The parameters shared with `verify` are parsed
//! here ([`SignOptions`]).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rootseal_hsm::{HashAlg, Marshaling, RsaPadding, SaltLength, SignParams, Signature};
use serde::{Deserialize, Serialize};

use super::batch::{self, ItemError, Prepared};
use super::input::requested_version;
use crate::routes::de::{parse_body, BatchInput, WeakBool, WeakU64};
use crate::routes::{ok, ApiError, AppState};

/// The signing parameters of a `sign` or `verify` body.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct SignOptions {
    hash_algorithm: Option<String>,
    /// Vault's older name of `hash_algorithm`.
    algorithm: Option<String>,
    prehashed: Option<WeakBool>,
    signature_algorithm: Option<String>,
    marshaling_algorithm: Option<String>,
    salt_length: Option<serde_json::Value>,
    context: Option<String>,
}

impl SignOptions {
    /// The HMAC algorithm a `verify` body names (`algorithm`, then `hash_algorithm`).
    pub(super) fn hmac_algorithm(&self) -> Option<&str> {
        self.algorithm.as_deref().or(self.hash_algorithm.as_deref())
    }

    /// The parameters, with the hash from the path (`url_hash`) winning over the body.
    pub(super) fn params(&self, url_hash: Option<&str>) -> Result<SignParams, ApiError> {
        if self.context.as_deref().is_some_and(|c| !c.is_empty()) {
            return Err(ApiError::bad_request(
                "key derivation (context) is not supported: keys are not derived",
            ));
        }
        let hash = parse_hash(
            url_hash
                .or(self.hash_algorithm.as_deref())
                .or(self.algorithm.as_deref()),
        )?;
        let padding = match self.signature_algorithm.as_deref() {
            None | Some("" | "pss") => RsaPadding::Pss,
            Some("pkcs1v15") => RsaPadding::Pkcs1v15,
            Some(o) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported rsa signature algorithm {o}"
                )))
            }
        };
        let marshaling = match self.marshaling_algorithm.as_deref() {
            None | Some("" | "asn1") => Marshaling::Asn1,
            Some("jws") => Marshaling::Jws,
            Some(o) => {
                return Err(ApiError::bad_request(format!(
                    "invalid marshaling type {o:?}"
                )))
            }
        };
        let salt = match &self.salt_length {
            None => SaltLength::Auto,
            Some(serde_json::Value::String(s)) if s.is_empty() || s == "auto" => SaltLength::Auto,
            Some(serde_json::Value::String(s)) if s == "hash" => SaltLength::Hash,
            Some(serde_json::Value::String(s)) => SaltLength::Bytes(
                s.parse::<u32>()
                    .map_err(|_| ApiError::bad_request(format!("invalid salt_length {s:?}")))?,
            ),
            Some(serde_json::Value::Number(n)) => SaltLength::Bytes(
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| ApiError::bad_request("invalid salt_length"))?,
            ),
            Some(_) => return Err(ApiError::bad_request("invalid salt_length")),
        };
        Ok(SignParams {
            hash,
            prehashed: self.prehashed.is_some_and(|p| p.0),
            padding,
            salt,
            marshaling,
        })
    }
}

/// A hash algorithm by Vault's name (absent: `sha2-256`).
///
/// # Errors
/// 400 `unsupported hash algorithm`.
pub(super) fn parse_hash(name: Option<&str>) -> Result<HashAlg, ApiError> {
    match name {
        None | Some("") => Ok(HashAlg::Sha256),
        Some(n) => HashAlg::from_name(n)
            .ok_or_else(|| ApiError::bad_request(format!("unsupported hash algorithm {n}"))),
    }
}

/// `vault:v<N>:` and the encoded signature.
pub(super) fn format_signature(s: &Signature, m: Marshaling) -> String {
    let body = match m {
        Marshaling::Asn1 => B64.encode(&s.bytes),
        Marshaling::Jws => URL_SAFE_NO_PAD.encode(&s.bytes),
    };
    format!("vault:v{}:{body}", s.version)
}

/// Parses `vault:v<N>:<payload>` (payload base64, or base64url without padding for `jws`).
///
/// # Errors
/// 400 `invalid signature` for anything else.
pub(super) fn parse_signature(s: &str, m: Marshaling) -> Result<Signature, ItemError> {
    let bad = || ItemError::bad_request("invalid signature");
    let mut parts = s.splitn(3, ':');
    let (Some("vault"), Some(v), Some(payload)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let digits = v.strip_prefix('v').ok_or_else(bad)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let version: u32 = digits.parse().map_err(|_| bad())?;
    let bytes = match m {
        Marshaling::Asn1 => B64.decode(payload),
        Marshaling::Jws => URL_SAFE_NO_PAD.decode(payload),
    }
    .map_err(|_| bad())?;
    Ok(Signature { version, bytes })
}

/// Decodes an item's base64 `input` (absent: empty, as Vault).
pub(super) fn decode_input(s: Option<&str>) -> Result<Vec<u8>, ItemError> {
    match s {
        None | Some("") => Ok(Vec::new()),
        Some(s) => B64
            .decode(s)
            .map_err(|_| ItemError::bad_request("unable to decode input as base64")),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SignBody {
    input: Option<String>,
    key_version: Option<WeakU64>,
    batch_input: Option<BatchInput<SignIn>>,
    partial_failure_response_code: Option<WeakU64>,
    #[serde(flatten)]
    opts: SignOptions,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SignIn {
    input: Option<String>,
    context: Option<String>,
    reference: Option<String>,
}

#[derive(Serialize)]
struct SignOut {
    signature: String,
    key_version: u32,
}

/// `POST sign/{name}`.
pub(crate) async fn sign(
    st: State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = super::key_name(name)?;
    sign_with(st, name, None, body).await
}

/// `POST sign/{name}/{hash}`.
pub(crate) async fn sign_hash(
    st: State<AppState>,
    params: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let (name, hash) = super::name_and(params)?;
    sign_with(st, name, Some(hash), body).await
}

async fn sign_with(
    State(st): State<AppState>,
    name: String,
    url_hash: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = st.read_body(body).await?;
    let b: SignBody = parse_body(&raw)?;
    let params = b.opts.params(url_hash.as_deref())?;
    let version = requested_version(b.key_version)?;
    let batch_in = batch::inputs(&st, b.batch_input.as_ref())?;
    let mut p: Prepared<Signature, Vec<u8>> = match batch_in {
        None => Prepared::new(std::iter::once(b.input.as_deref()), decode_input),
        Some(v) => Prepared::new(v.iter(), |it| {
            if it.context.as_deref().is_some_and(|c| !c.is_empty()) {
                return Err(ItemError::bad_request(
                    "key derivation (context) is not supported: keys are not derived",
                ));
            }
            decode_input(it.input.as_deref())
        }),
    };
    let items = p.take_items();
    if !items.is_empty() {
        let results =
            batch::in_jobs(items, |c| st.keyring().sign(&name, version, c, params)).await?;
        p.fill(results);
    }
    let out = |s: Signature| SignOut {
        signature: format_signature(&s, params.marshaling),
        key_version: s.version,
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
    let _ = parse_body::<SignBody>(raw);
}
