//! `cache-config`: how many keys the mount keeps loaded in memory (Vault's `path_cache_config.go`):
//! `size`, 0 for no limit (the default) or at least 10. rootseal's cache holds each key's verified
//! record and its sealed Level 1 blobs (never a plaintext key: those exist only inside the HSM); a
//! key dropped from it is read and its MAC checked in the HSM again on its next use. The size is
//! stored (so it survives a restart and reaches every replica) and applied at once.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::settings::{self, MIN_CACHE_SIZE};
use crate::routes::de::{parse_body, WeakU64};
use crate::routes::{ok, ApiError, AppState};

#[derive(Deserialize, Default)]
#[serde(default)]
struct CacheConfigBody {
    size: Option<WeakU64>,
}

#[derive(Serialize)]
struct CacheConfigOut {
    size: u64,
}

/// `GET cache-config`: the stored size (applied to this process if it was not yet).
pub(crate) async fn read(State(st): State<AppState>) -> Result<Response, ApiError> {
    let (s, _) = settings::load(st.keyring()).await?;
    st.settings().remember(st.keyring(), s);
    Ok(ok(CacheConfigOut { size: s.cache_size }))
}

/// `POST cache-config`.
pub(crate) async fn write(State(st): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let raw = st.read_body(body).await?;
    let b: CacheConfigBody = parse_body(&raw)?;
    let size = b.size.map_or(0, |s| s.0);
    if size != 0 && size < MIN_CACHE_SIZE {
        return Err(ApiError::bad_request(format!(
            "size must be 0 or a value greater or equal to {MIN_CACHE_SIZE}"
        )));
    }
    let s = settings::update(st.keyring(), st.settings(), |s| s.cache_size = size).await?;
    Ok(ok(CacheConfigOut { size: s.cache_size }))
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<CacheConfigBody>(raw);
}
