//! `config/keys`: the mount-wide key settings (Vault's `path_config_keys.go`): `disable_upsert`,
//! whether `encrypt` may create a key that does not exist. Read answers `{"disable_upsert": …}`;
//! a write changes only what it names and answers the same.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::settings;
use crate::routes::de::{parse_body, WeakBool};
use crate::routes::{ok, ApiError, AppState};

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfigKeysBody {
    disable_upsert: Option<WeakBool>,
}

#[derive(Serialize)]
struct ConfigKeysOut {
    disable_upsert: bool,
}

/// `GET config/keys`.
pub(crate) async fn read(State(st): State<AppState>) -> Result<Response, ApiError> {
    let (s, _) = settings::load(st.keyring()).await?;
    Ok(ok(ConfigKeysOut {
        disable_upsert: s.disable_upsert,
    }))
}

/// `POST config/keys`. As Vault, a write without `disable_upsert` sets it to false (its default).
pub(crate) async fn write(State(st): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let raw = st.read_body(body).await?;
    let b: ConfigKeysBody = parse_body(&raw)?;
    let disable = b.disable_upsert.is_some_and(|d| d.0);
    let s = settings::update(st.keyring(), st.settings(), |s| s.disable_upsert = disable).await?;
    Ok(ok(ConfigKeysOut {
        disable_upsert: s.disable_upsert,
    }))
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<ConfigKeysBody>(raw);
}
