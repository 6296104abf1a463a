//! `keys/{name}/config`: `min_decryption_version`, `min_encryption_version`, `deletion_allowed`,
//! `auto_rotate_period`, and rootseal's lifecycle settings `lifecycle_class`,
//! `originator_usage_period`, `recipient_usage_period` (NIST SP 800-57; for versions made from
//! then on); answers with the key.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use rootseal_hsm::KeyConfigUpdate;
use serde::Deserialize;

use super::key_name;
use super::keys::{key_response, lifecycle_class, refuse_true};
use crate::routes::de::{parse_body, DurationSecs, WeakBool, WeakU64};
use crate::routes::{ApiError, AppState};

/// Body of `POST keys/{name}/config`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfigBody {
    min_decryption_version: Option<WeakU64>,
    min_encryption_version: Option<WeakU64>,
    deletion_allowed: Option<WeakBool>,
    auto_rotate_period: Option<DurationSecs>,
    exportable: Option<WeakBool>,
    allow_plaintext_backup: Option<WeakBool>,
    lifecycle_class: Option<String>,
    originator_usage_period: Option<DurationSecs>,
    recipient_usage_period: Option<DurationSecs>,
}

/// `POST keys/{name}/config`: answers with the key.
pub(crate) async fn config(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = key_name(name)?;
    let raw = st.read_body(body).await?;
    let b: ConfigBody = parse_body(&raw)?;
    refuse_true("exportable", b.exportable)?;
    refuse_true("allow_plaintext_backup", b.allow_plaintext_backup)?;
    let upd = KeyConfigUpdate {
        min_decryption_version: b
            .min_decryption_version
            .map(|v| v.to_u32("min_decryption_version"))
            .transpose()?,
        min_encryption_version: b
            .min_encryption_version
            .map(|v| v.to_u32("min_encryption_version"))
            .transpose()?,
        deletion_allowed: b.deletion_allowed.map(|d| d.0),
        auto_rotate_period_secs: b.auto_rotate_period.map(|p| p.0),
        lifecycle_class: b
            .lifecycle_class
            .as_deref()
            .map(lifecycle_class)
            .transpose()?,
        originator_usage_period_secs: b.originator_usage_period.map(|p| p.0),
        recipient_usage_period_secs: b.recipient_usage_period.map(|p| p.0),
    };
    let info = st.keyring().update_key_config(&name, upd).await?;
    Ok(key_response(&info))
}

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<ConfigBody>(raw);
}
