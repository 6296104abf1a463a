//! `verify/{name}` and `verify/{name}/{hash}`: a `signature` checked inside the HSM with the
//! public key of the version it names, or an `hmac` checked by the `hmac` key's L1 (in constant
//! time, by the token). `{"valid": bool}`; single items and `batch_input`.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use rootseal_hsm::{Marshaling, VerifyItem};
use serde::{Deserialize, Serialize};

use super::batch::{self, ItemError, Prepared};
use super::sign::{decode_input, parse_hash, parse_signature, SignOptions};
use crate::routes::de::{parse_body, BatchInput, WeakU64};
use crate::routes::{ok, ApiError, AppState};

#[derive(Deserialize, Default)]
#[serde(default)]
struct VerifyBody {
    input: Option<String>,
    signature: Option<String>,
    hmac: Option<String>,
    batch_input: Option<BatchInput<VerifyIn>>,
    partial_failure_response_code: Option<WeakU64>,
    #[serde(flatten)]
    opts: SignOptions,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct VerifyIn {
    input: Option<String>,
    signature: Option<String>,
    hmac: Option<String>,
    reference: Option<String>,
}

#[derive(Serialize)]
struct VerifyOut {
    valid: bool,
}

/// Which of `signature` and `hmac` a request checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Signature,
    Hmac,
}

fn item(
    kind: Kind,
    m: Marshaling,
    input: Option<&str>,
    sig: Option<&str>,
    mac: Option<&str>,
) -> Result<VerifyItem, ItemError> {
    let s = match (kind, sig, mac) {
        (Kind::Signature, Some(s), None) => parse_signature(s, m)?,
        (Kind::Hmac, None, Some(h)) => parse_signature(h, Marshaling::Asn1)?,
        (_, Some(_), Some(_)) => {
            return Err(ItemError::bad_request(
                "provide one of 'signature' or 'hmac', not both",
            ))
        }
        (Kind::Signature, None, _) => return Err(ItemError::bad_request("missing signature")),
        (Kind::Hmac, _, None) => return Err(ItemError::bad_request("missing hmac")),
    };
    Ok(VerifyItem {
        input: decode_input(input)?,
        signature: s,
    })
}

/// `POST verify/{name}`.
pub(crate) async fn verify(
    st: State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = super::key_name(name)?;
    verify_with(st, name, None, body).await
}

/// `POST verify/{name}/{hash}`.
pub(crate) async fn verify_hash(
    st: State<AppState>,
    params: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let (name, hash) = super::name_and(params)?;
    verify_with(st, name, Some(hash), body).await
}

async fn verify_with(
    State(st): State<AppState>,
    name: String,
    url_hash: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = st.read_body(body).await?;
    let b: VerifyBody = parse_body(&raw)?;
    let params = b.opts.params(url_hash.as_deref())?;
    let batch_in = batch::inputs(&st, b.batch_input.as_ref())?;
    // One kind per request, as Vault: `hmac` anywhere makes it an HMAC check.
    let kind = match batch_in {
        None if b.hmac.is_some() => Kind::Hmac,
        Some(v) if v.iter().any(|i| i.hmac.is_some()) => Kind::Hmac,
        _ => Kind::Signature,
    };
    let m = params.marshaling;
    let mut p: Prepared<bool, VerifyItem> = match batch_in {
        None => Prepared::new(std::iter::once(()), |()| {
            item(
                kind,
                m,
                b.input.as_deref(),
                b.signature.as_deref(),
                b.hmac.as_deref(),
            )
        }),
        Some(v) => Prepared::new(v.iter(), |i| {
            item(
                kind,
                m,
                i.input.as_deref(),
                i.signature.as_deref(),
                i.hmac.as_deref(),
            )
        }),
    };
    let items = p.take_items();
    if !items.is_empty() {
        let k = st.keyring();
        let results = match kind {
            Kind::Signature => {
                batch::in_jobs(items, |c| k.verify_signature(&name, c, params)).await?
            }
            Kind::Hmac => {
                let alg = parse_hash(
                    url_hash
                        .as_deref()
                        .or(b.opts_algorithm())
                        .filter(|s| !s.is_empty()),
                )?;
                batch::in_jobs(items, |c| k.verify_hmac(&name, alg, c)).await?
            }
        };
        p.fill(results);
    }
    let out = |valid: bool| VerifyOut { valid };
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

impl VerifyBody {
    /// The HMAC algorithm of the body (`algorithm`, or `hash_algorithm`).
    fn opts_algorithm(&self) -> Option<&str> {
        self.opts.hmac_algorithm()
    }
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body and every item's signature or
/// HMAC string and input, in both marshalings, as verify does before the HSM.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let Ok(b) = parse_body::<VerifyBody>(raw) else {
        return;
    };
    for kind in [Kind::Signature, Kind::Hmac] {
        for m in [Marshaling::Asn1, Marshaling::Jws] {
            let _ = item(
                kind,
                m,
                b.input.as_deref(),
                b.signature.as_deref(),
                b.hmac.as_deref(),
            );
            for it in b.batch_input.iter().flat_map(|BatchInput(v)| v) {
                let _ = item(
                    kind,
                    m,
                    it.input.as_deref(),
                    it.signature.as_deref(),
                    it.hmac.as_deref(),
                );
            }
        }
    }
}
