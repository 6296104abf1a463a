//! Transit batches are bounded (issue 16): at most `max_batch_items` items (400 in Vault's
//! envelope beyond), and a batch runs as HSM jobs of at most 256 items, so a large batch never
//! holds an HSM worker while other requests wait.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rootseal::{app, ApiConfig};
use rootseal_hsm::{FileStore, Hsm, HsmOp, Keyring};
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use tower::ServiceExt;

async fn one_worker(token: &TestToken, dir: &std::path::Path) -> (Hsm, Keyring) {
    token.init_root().await;
    let mut cfg = token.config();
    cfg.pool_size = 1;
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .unwrap()
        .unwrap();
    let store = FileStore::open(dir.join("keys")).unwrap();
    let keyring = Keyring::open(hsm.clone(), Arc::new(store)).await.unwrap();
    (hsm, keyring)
}

fn post(path: &str, body: String) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header("x-vault-token", "t")
        .body(Body::from(body))
        .unwrap()
}

fn batch(n: usize) -> String {
    let items = vec![r#"{"plaintext":"aGk="}"#; n].join(",");
    format!(r#"{{"batch_input":[{items}]}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_above_max_batch_items_is_a_400_in_the_envelope() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    keyring.create_key("k", Default::default()).await.unwrap();
    let router = app(
        keyring,
        SecretString::from("t"),
        ApiConfig {
            max_batch_items: 10,
            ..ApiConfig::default()
        },
    );
    for path in [
        "/v1/transit/encrypt/k",
        "/v1/transit/decrypt/k",
        "/v1/transit/rewrap/k",
        "/v1/transit/hmac/k",
        "/v1/transit/sign/k",
        "/v1/transit/verify/k",
    ] {
        let resp = router.clone().oneshot(post(path, batch(11))).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"errors": ["batch_input has 11 items; at most 10 are allowed in one request (transit.max_batch_items)"]}),
            "{path}"
        );
    }
    let resp = router
        .clone()
        .oneshot(post("/v1/transit/encrypt/k", batch(10)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// With one HSM worker, a single encrypt sent while a 30,000-item batch runs is answered before
/// the batch is done: the batch's jobs leave the worker between them. As one job, the batch
/// would hold the worker until its last item, and the single encrypt could only come after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_does_not_hold_the_hsm_worker() {
    const N: u64 = 30_000;
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (hsm, keyring) = one_worker(&token, dir.path()).await;
    keyring.create_key("k", Default::default()).await.unwrap();
    let router = app(
        keyring,
        SecretString::from("t"),
        ApiConfig {
            max_batch_items: 100_000,
            ..ApiConfig::default()
        },
    );
    let base = hsm.metrics().get(HsmOp::Encrypt);
    let big = tokio::spawn(router.clone().oneshot(post(
        "/v1/transit/encrypt/k",
        batch(usize::try_from(N).unwrap()),
    )));
    // Wait until the batch is in the HSM.
    let t0 = std::time::Instant::now();
    while hsm.metrics().get(HsmOp::Encrypt) == base {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the batch never started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let resp = router
        .clone()
        .oneshot(post(
            "/v1/transit/encrypt/k",
            r#"{"plaintext":"aGk="}"#.into(),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let done = hsm.metrics().get(HsmOp::Encrypt) - base;
    assert!(
        done < N,
        "the single encrypt waited for the whole batch ({done} encrypts done)"
    );
    assert!(!big.is_finished());
    let resp = big.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let results = v["data"]["batch_results"].as_array().unwrap();
    assert_eq!(results.len(), usize::try_from(N).unwrap());
    assert!(results.iter().all(|r| r["ciphertext"]
        .as_str()
        .is_some_and(|c| c.starts_with("vault:v1:"))));
    assert_eq!(hsm.metrics().get(HsmOp::Encrypt) - base, N + 1);
}
