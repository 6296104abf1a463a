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

/// Fuzz entry (`fuzz/`, through `crate::fuzzing`): the body as this route parses it.
pub(crate) fn fuzz_body(raw: &[u8]) {
    let _ = parse_body::<TrimBody>(raw);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use rootseal_hsm::CreateOptions;
    use rootseal_testkit::TestToken;
    use secrecy::SecretString;
    use tower::ServiceExt;

    use crate::routes::auth::AuthConfig;
    use crate::routes::{try_app_with, ApiConfig};

    /// With governance on, trim (which destroys key versions) is a `key.destroy` ceremony: the
    /// HTTP path answers 400 naming it and destroys nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trim_is_refused_with_governance_on() {
        let token = TestToken::new();
        let dir = tempfile::tempdir().unwrap();
        let (_hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
        keyring
            .create_key("k", CreateOptions::default())
            .await
            .unwrap();
        keyring.rotate_key("k").await.unwrap();
        let auth = AuthConfig {
            root_token: Some(SecretString::from("root-tok")),
            governance: true,
        };
        let app = try_app_with(keyring.clone(), &auth, ApiConfig::default(), None).unwrap();
        let req = Request::builder()
            .method("POST")
            .uri("/v1/transit/keys/k/trim")
            .header("x-vault-token", "root-tok")
            .body(axum::body::Body::from(r#"{"min_available_version":1}"#))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains("key.destroy ceremony"), "{text}");
        assert_eq!(keyring.key_info("k").await.unwrap().versions.len(), 2);
    }
}
