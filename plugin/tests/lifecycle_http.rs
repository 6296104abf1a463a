//! Key lifecycle over the transit HTTP API against real SoftHSM2 (issue 13), time moved by the
//! injected clock: the lifecycle fields of create and config, Vault's `keys` map kept as it was
//! beside the new `versions` map, refusals as 400 in Vault's envelope naming the state, and
//! `GET /v1/rootseal/lifecycle`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rootseal::{app, ApiConfig};
use rootseal_hsm::{Clock, FileStore, Keyring, KeyringOptions};
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "s.root-test-token";
const T0: u64 = 1_800_000_000;

async fn call(app: &Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-vault-token", TOKEN)
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_over_http() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::testing_manual(T0);
    let keyring = Keyring::open_with(
        hsm,
        Arc::new(FileStore::open(dir.path()).unwrap()),
        KeyringOptions {
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let app = app(keyring, SecretString::from(TOKEN), ApiConfig::default());

    // Bad lifecycle input is a 400 in the envelope, naming the standard's paragraph.
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/keys/bad",
        Some(json!({"originator_usage_period": "1000d"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("§5.3.6"), "{v}");
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/keys/bad",
        Some(json!({"lifecycle_class": "l0"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Create with a class and a one-hour OUP: Vault's `keys` map unchanged, `versions` added.
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/keys/k",
        Some(json!({"lifecycle_class": "seal-kek", "originator_usage_period": "1h"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = &v["data"];
    assert_eq!(d["keys"]["1"], json!(T0), "{d}");
    assert_eq!(d["lifecycle_class"], "seal-kek");
    assert_eq!(d["originator_usage_period"], 3600);
    assert_eq!(d["versions"]["1"]["state"], "active");
    assert_eq!(
        d["versions"]["1"]["activation_time"],
        "2027-01-15T08:00:00Z"
    );
    assert_eq!(
        d["versions"]["1"]["protect_stop_time"],
        "2027-01-15T09:00:00Z"
    );

    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/encrypt/k",
        Some(json!({"plaintext": "aGVsbG8="})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    let (_, v) = call(&app, "GET", "/v1/rootseal/lifecycle", None).await;
    assert_eq!(v["data"]["keys"]["k"]["next_event"], "protect_stop", "{v}");
    assert_eq!(v["data"]["keys"]["k"]["rotation"], "ok", "{v}");

    // Past protect-stop: encrypt is a 400 naming the state, decrypt still works.
    clock.testing_advance(3600);
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/encrypt/k",
        Some(json!({"plaintext": "aGVsbG8="})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let msg = v["errors"][0].as_str().unwrap();
    assert!(
        msg.starts_with("key version 1 is past its protect-stop"),
        "{msg}"
    );
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/decrypt/k",
        Some(json!({"ciphertext": ct})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["plaintext"], "aGVsbG8=");
    let (_, v) = call(&app, "GET", "/v1/rootseal/lifecycle", None).await;
    assert_eq!(v["data"]["keys"]["k"]["rotation"], "overdue", "{v}");
    assert_eq!(v["data"]["keys"]["k"]["next_event"], "deactivation", "{v}");

    // Config changes the period of versions made from now on; a rotation encrypts again.
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/keys/k/config",
        Some(json!({"originator_usage_period": "2h"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(&app, "POST", "/v1/transit/keys/k/rotate", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"]["versions"]["2"]["protect_stop_time"],
        "2027-01-15T11:00:00Z"
    );
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/encrypt/k",
        Some(json!({"plaintext": "aGVsbG8="})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v2:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_pass_rotates_a_key_whose_auto_rotate_period_passed() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::testing_manual(T0);
    let k = Keyring::open_with(
        hsm,
        Arc::new(FileStore::open(dir.path()).unwrap()),
        KeyringOptions {
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let app = app(k.clone(), SecretString::from(TOKEN), ApiConfig::default());
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/keys/k",
        Some(json!({"auto_rotate_period": "1h"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(rootseal::lifecycle_pass(&k).await.is_empty());
    clock.testing_advance(3600);
    let r = rootseal::lifecycle_pass(&k).await;
    assert_eq!(r.len(), 1, "{r:?}");
    let (_, v) = call(&app, "GET", "/v1/transit/keys/k", None).await;
    assert_eq!(v["data"]["latest_version"], 2, "{v}");
    assert!(rootseal::lifecycle_pass(&k).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_over_http_follows_vault() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let k = Keyring::open(hsm, Arc::new(FileStore::open(dir.path()).unwrap()))
        .await
        .unwrap();
    let app = app(k, SecretString::from(TOKEN), ApiConfig::default());
    call(&app, "POST", "/v1/transit/keys/k", None).await;
    let (_, v) = call(
        &app,
        "POST",
        "/v1/transit/encrypt/k",
        Some(json!({"plaintext": "aGVsbG8="})),
    )
    .await;
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    call(&app, "POST", "/v1/transit/keys/k/rotate", None).await;
    // Above min_decryption_version: 400 in the envelope.
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/keys/k/trim",
        Some(json!({"min_available_version": 2})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["errors"][0]
        .as_str()
        .unwrap()
        .contains("minimum decryption version"));
    let (s, _) = call(&app, "POST", "/v1/transit/keys/k/trim", Some(json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    call(
        &app,
        "POST",
        "/v1/transit/keys/k/config",
        Some(json!({"min_decryption_version": 2})),
    )
    .await;
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/keys/k/trim",
        Some(json!({"min_available_version": "2"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["min_available_version"], 2);
    assert!(v["data"]["keys"].get("1").is_none(), "{v}");
    let (s, v) = call(
        &app,
        "POST",
        "/v1/transit/decrypt/k",
        Some(json!({"ciphertext": ct})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["errors"][0], "key version 1 is destroyed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_each_keys_lifecycle_gauges() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::testing_manual(T0);
    let k = Keyring::open_with(
        hsm,
        Arc::new(FileStore::open(dir.path()).unwrap()),
        KeyringOptions {
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let app = app(k, SecretString::from(TOKEN), ApiConfig::default());
    call(
        &app,
        "POST",
        "/v1/transit/keys/k",
        Some(json!({"originator_usage_period": "1h", "recipient_usage_period": "2h"})),
    )
    .await;
    clock.testing_advance(600);
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("rootseal_key_protect_stop_seconds{key=\"k\"} 3000\n"),
        "{text}"
    );
    assert!(
        text.contains("rootseal_key_deactivation_seconds{key=\"k\"} 6600\n"),
        "{text}"
    );
}
