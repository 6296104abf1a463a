//! `random`, `random/{source}`, `random/{bytes}`, `random/{source}/{bytes}`: random bytes.
//! `seal` reads the HSM's RNG (`C_GenerateRandom`), `platform` the operating system's (through
//! aws-lc), `all` (the default here: the HSM is rootseal's root of trust) XORs both, as Vault
//! does. `bytes` defaults to 32, at most 128 KiB; `format` is `base64` (default) or `hex`.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use rootseal_hsm::KeyringError;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::routes::de::{parse_body, WeakU64};
use crate::routes::{ok, ApiError, AppState};

#[derive(Deserialize, Default)]
#[serde(default)]
struct RandomBody {
    bytes: Option<WeakU64>,
    format: Option<String>,
    source: Option<String>,
}

#[derive(Serialize)]
struct RandomOut {
    random_bytes: crate::routes::de::SecretB64,
}

/// Where the bytes come from.
#[derive(Clone, Copy)]
enum Source {
    Platform,
    Seal,
    All,
}

fn source(s: &str) -> Result<Source, ApiError> {
    match s {
        "" | "all" => Ok(Source::All),
        "platform" => Ok(Source::Platform),
        "seal" => Ok(Source::Seal),
        o => Err(ApiError::bad_request(format!(
            "unsupported entropy source {o:?}"
        ))),
    }
}

/// `POST random`.
pub(crate) async fn random(st: State<AppState>, body: Body) -> Result<Response, ApiError> {
    random_with(st, Vec::new(), body).await
}

/// `POST random/{a}`: a source or a byte count.
pub(crate) async fn random1(
    st: State<AppState>,
    a: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let a = super::segment(a)?;
    random_with(st, vec![a], body).await
}

/// `POST random/{source}/{bytes}`.
pub(crate) async fn random2(
    st: State<AppState>,
    ab: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let (a, b) = super::name_and(ab)?;
    random_with(st, vec![a, b], body).await
}

async fn random_with(
    State(st): State<AppState>,
    segments: Vec<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = st.read_body(body).await?;
    let b: RandomBody = parse_body(&raw)?;
    let mut src = b
        .source
        .as_deref()
        .map(source)
        .transpose()?
        .unwrap_or(Source::All);
    let mut n = b.bytes.map_or(Ok(32), |v| {
        usize::try_from(v.0).map_err(|_| ApiError::bad_request("invalid bytes value"))
    })?;
    match segments.as_slice() {
        [] => {}
        [a] => match a.parse::<usize>() {
            Ok(v) => n = v,
            Err(_) => src = source(a)?,
        },
        [a, c] => {
            src = source(a)?;
            n = c
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid bytes value {c:?}")))?;
        }
        _ => return Err(ApiError::NotFound),
    }
    if n == 0 {
        return Err(ApiError::bad_request("missing bytes count"));
    }
    let max = rootseal_hsm::MAX_RANDOM_BYTES;
    if n > max {
        return Err(ApiError::bad_request(format!(
            "exceeded maximum of {max} bytes"
        )));
    }
    let hex = match b.format.as_deref() {
        None | Some("" | "base64") => false,
        Some("hex") => true,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "unsupported encoding format {o}"
            )))
        }
    };
    let platform = || -> Result<Zeroizing<Vec<u8>>, ApiError> {
        let mut v = Zeroizing::new(vec![0u8; n]);
        aws_lc_rs::rand::fill(&mut v)
            .map_err(|_| ApiError::Keyring(KeyringError::internal("platform RNG failed")))?;
        Ok(v)
    };
    let bytes = match src {
        Source::Platform => platform()?,
        Source::Seal => st.keyring().random(n).await?,
        Source::All => {
            let mut h = st.keyring().random(n).await?;
            for (x, y) in h.iter_mut().zip(platform()?.iter()) {
                *x ^= y;
            }
            h
        }
    };
    let random_bytes = if hex {
        let mut s = Zeroizing::new(String::with_capacity(2 * n));
        for x in bytes.iter() {
            s.push_str(&format!("{x:02x}"));
        }
        crate::routes::de::SecretB64(s)
    } else {
        crate::routes::de::SecretB64::encode(&bytes)
    };
    Ok(ok(RandomOut { random_bytes }))
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<RandomBody>(raw);
}
