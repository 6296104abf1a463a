//! The listener's `max_request_bytes` holds on every JSON path, bulk seal included (issue 16,
//! item 4): beyond it, 413 in Vault's envelope.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rootseal::{app, ApiConfig};
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use tower::ServiceExt;

#[tokio::test]
async fn json_bulk_and_transit_bodies_obey_max_request_bytes() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    keyring.create_key("k", Default::default()).await.unwrap();
    let router = app(
        keyring,
        SecretString::from("t"),
        ApiConfig {
            max_body_bytes: 4096,
            ..ApiConfig::default()
        },
    );
    let item = format!(r#"{{"plaintext":"{}"}}"#, "QUFB".repeat(300));
    let small = format!(r#"{{"batch_input":[{item}]}}"#);
    let big = format!(r#"{{"batch_input":[{}]}}"#, [item.as_str(); 10].join(","));
    assert!(small.len() < 4096 && big.len() > 4096);
    for path in ["/v1/transit/bulk-seal/k", "/v1/transit/encrypt/k"] {
        for (body, want) in [
            (&small, StatusCode::OK),
            (&big, StatusCode::PAYLOAD_TOO_LARGE),
        ] {
            let req = Request::builder()
                .method("POST")
                .uri(path)
                .header("x-vault-token", "t")
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let resp = router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(status, want, "{path}: {}", String::from_utf8_lossy(&bytes));
            if want == StatusCode::PAYLOAD_TOO_LARGE {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(
                    v,
                    serde_json::json!({"errors": ["request body too large (limit 4096 bytes)"]})
                );
            }
        }
    }
}

/// A path segment that is not UTF-8 (`%FF`) is a 400 in Vault's envelope on every path that takes a
/// segment, never axum's plain-text rejection.
#[tokio::test]
async fn an_undecodable_key_name_is_a_400_in_the_envelope() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    let router = app(keyring, SecretString::from("t"), ApiConfig::default());
    for path in [
        "/v1/transit/encrypt/%FF",
        "/v1/transit/sign/%FF",
        "/v1/transit/sign/%FF/sha2-256",
        "/v1/transit/verify/%FF",
        "/v1/transit/hmac/%FF/sha2-256",
        "/v1/transit/hash/%FF",
        "/v1/transit/random/%FF",
        "/v1/transit/random/%FF/32",
        "/v1/transit/random/seal/%FF",
        "/v1/transit/decrypt/%FF",
        "/v1/transit/rewrap/%FF",
        "/v1/transit/datakey/plaintext/%FF",
        "/v1/transit/keys/%FF/rotate",
        "/v1/transit/keys/%FF/config",
    ] {
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .header("x-vault-token", "t")
            .body(Body::from(r#"{"input":"aGk="}"#))
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&bytes)));
        assert!(v["errors"][0].is_string(), "{path}: {v}");
    }
}
