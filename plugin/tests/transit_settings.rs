//! `config/keys` (`disable_upsert`) and `cache-config` (issue 15, item 7): Vault's paths, answers
//! and validation; the settings persist in the key store, MACed in the HSM, so a restart and
//! another replica see them, and a tampered record turns upsert off instead of on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rootseal::{app, ApiConfig};
use rootseal_hsm::{FileStore, Keyring};
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(router: &Router, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-vault-token", "t")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, v)
}

async fn router_over(token: &TestToken, dir: &Path) -> (Keyring, Router) {
    let hsm = token.open().await;
    let keyring = Keyring::open(hsm, std::sync::Arc::new(FileStore::open(dir).unwrap()))
        .await
        .unwrap();
    let r = app(
        keyring.clone(),
        SecretString::from("t"),
        ApiConfig::default(),
    );
    (keyring, r)
}

const PT: &str = r#"{"plaintext":"aGVsbG8="}"#;

#[tokio::test]
async fn disable_upsert_is_vaults_and_persists() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (_hsm, _k) = token.keyring(&keys).await;
    let (_k1, r) = router_over(&token, &keys).await;

    // Default: upsert on, encrypt creates the key.
    let (s, v) = call(&r, "GET", "/v1/transit/config/keys", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!({"disable_upsert": false}));
    let (s, _) = call(&r, "POST", "/v1/transit/encrypt/made-by-upsert", PT).await;
    assert_eq!(s, StatusCode::OK);

    // Turned off: a missing key is Vault's 400, an existing key still encrypts.
    let (s, v) = call(
        &r,
        "POST",
        "/v1/transit/config/keys",
        r#"{"disable_upsert":true}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"], json!({"disable_upsert": true}));
    let (s, v) = call(&r, "POST", "/v1/transit/encrypt/not-there", PT).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v, json!({"errors": ["encryption key not found"]}));
    let (s, _) = call(&r, "POST", "/v1/transit/encrypt/made-by-upsert", PT).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&r, "GET", "/v1/transit/keys/not-there", "").await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "the refused encrypt created nothing"
    );

    // A restart (or another replica over the same store) reads the stored setting.
    let (_k2, r2) = router_over(&token, &keys).await;
    let (s, v) = call(&r2, "GET", "/v1/transit/config/keys", "").await;
    assert_eq!(
        (s, &v["data"]),
        (StatusCode::OK, &json!({"disable_upsert": true}))
    );
    let (s, _) = call(&r2, "POST", "/v1/transit/encrypt/still-not-there", PT).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // As Vault: a write without the field sets the default (false) again; `bao write -f` sends null.
    let (s, v) = call(&r2, "POST", "/v1/transit/config/keys", "null").await;
    assert_eq!(
        (s, &v["data"]),
        (StatusCode::OK, &json!({"disable_upsert": false}))
    );
    let (s, _) = call(&r2, "POST", "/v1/transit/encrypt/upserted-again", PT).await;
    assert_eq!(s, StatusCode::OK);

    // Bad input: 400 in the envelope.
    for body in [
        r#"{"disable_upsert":"maybe"}"#,
        "{not json",
        r#"{"disable_upsert":[1]}"#,
    ] {
        let (s, v) = call(&r2, "POST", "/v1/transit/config/keys", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["errors"][0].is_string(), "{body}: {v}");
    }
}

#[tokio::test]
async fn a_tampered_settings_record_is_refused_and_upsert_stays_off() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (_hsm, _k) = token.keyring(&keys).await;
    let (_k1, r) = router_over(&token, &keys).await;
    let (s, _) = call(
        &r,
        "POST",
        "/v1/transit/config/keys",
        r#"{"disable_upsert":true}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // Someone with write access to the store flips the stored setting back to false.
    let file = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("transit-settings"))
        .expect("the settings record is in the store");
    let text = std::fs::read_to_string(&file).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let mut rec: Value = serde_json::from_str(rest).unwrap();
    let body = rec["body"].as_str().unwrap().to_owned();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let plain = String::from_utf8(b64.decode(&body).unwrap()).unwrap();
    assert!(plain.contains("\"disable_upsert\":true"), "{plain}");
    rec["body"] = json!(b64.encode(plain.replace("true", "false")));
    std::fs::write(
        &file,
        format!("{first}\n{}", serde_json::to_string(&rec).unwrap()),
    )
    .unwrap();

    let (_k2, r2) = router_over(&token, &keys).await;
    let (s, v) = call(&r2, "GET", "/v1/transit/config/keys", "").await;
    assert!(s.is_server_error(), "an integrity failure: {s} {v}");
    assert!(!v.to_string().contains("disable_upsert"), "{v}");
    let (s, _) = call(&r2, "POST", "/v1/transit/encrypt/must-not-appear", PT).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "upsert stays off while the record fails its MAC"
    );
    let (s, _) = call(&r2, "GET", "/v1/transit/keys/must-not-appear", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cache_config_validates_persists_and_bounds_the_key_cache() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (_hsm, _k) = token.keyring(&keys).await;
    let (keyring, r) = router_over(&token, &keys).await;

    let (s, v) = call(&r, "GET", "/v1/transit/cache-config", "").await;
    assert_eq!((s, &v["data"]), (StatusCode::OK, &json!({"size": 0})));
    for bad in ["1", "9", "-1", "\"x\""] {
        let (s, v) = call(
            &r,
            "POST",
            "/v1/transit/cache-config",
            &format!(r#"{{"size":{bad}}}"#),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["errors"][0].is_string(), "{bad}: {v}");
    }
    let (s, v) = call(&r, "POST", "/v1/transit/cache-config", r#"{"size":1}"#).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::BAD_REQUEST,
            json!({"errors": ["size must be 0 or a value greater or equal to 10"]})
        )
    );
    let (s, v) = call(&r, "POST", "/v1/transit/cache-config", r#"{"size":"10"}"#).await;
    assert_eq!((s, &v["data"]), (StatusCode::OK, &json!({"size": 10})));

    for i in 0..14 {
        let (s, _) = call(&r, "POST", &format!("/v1/transit/encrypt/k{i}"), PT).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert!(
        keyring.cached_keys() <= 10,
        "{} keys cached",
        keyring.cached_keys()
    );
    // Every key still works when it has been dropped from the cache.
    for i in 0..14 {
        let (s, _) = call(&r, "POST", &format!("/v1/transit/encrypt/k{i}"), PT).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert!(keyring.cached_keys() <= 10);

    // A restart reads the stored size and applies it when the mount first reads its settings.
    let (keyring2, r2) = router_over(&token, &keys).await;
    let (s, v) = call(&r2, "GET", "/v1/transit/cache-config", "").await;
    assert_eq!((s, &v["data"]), (StatusCode::OK, &json!({"size": 10})));
    assert_eq!(keyring2.cache_size(), 10);
    let (s, v) = call(&r2, "POST", "/v1/transit/cache-config", "{}").await;
    assert_eq!((s, &v["data"]), (StatusCode::OK, &json!({"size": 0})));
    assert_eq!(keyring2.cache_size(), 0);
}
