//! Derived keys (issue 15, item 5): Vault's `derived=true` and `context`, with the context bound
//! into the item's AAD inside the HSM, so a ciphertext opens under its own context only; every
//! misuse is a 400 in Vault's envelope; the flag survives a restart (it is in the MACed record).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use axum::body::Body;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rootseal::{app, ApiConfig};
use rootseal_hsm::{FileStore, Keyring};
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(router: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let method = if body.is_null() { "GET" } else { "POST" };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-vault-token", "t")
        .body(Body::from(if body.is_null() {
            String::new()
        } else {
            body.to_string()
        }))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, v)
}

fn b(s: &str) -> String {
    B64.encode(s)
}

fn err(v: &Value) -> String {
    v["errors"][0].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn derived_keys_bind_the_context_inside_the_hsm() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (_hsm, keyring) = token.keyring(&keys).await;
    let r = app(keyring, SecretString::from("t"), ApiConfig::default());

    let (s, k) = call(&r, "/v1/transit/keys/d", json!({"derived": true})).await;
    assert_eq!(s, StatusCode::OK, "{k}");
    assert_eq!(
        (
            k["data"]["derived"].clone(),
            k["data"]["supports_derivation"].clone()
        ),
        (json!(true), json!(true))
    );

    // Encrypt needs a context; it opens under that context only.
    let (s, v) = call(
        &r,
        "/v1/transit/encrypt/d",
        json!({"plaintext": b("secret")}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        err(&v).contains("missing 'context' for key derivation"),
        "{v}"
    );
    let (s, e) = call(
        &r,
        "/v1/transit/encrypt/d",
        json!({"plaintext": b("secret"), "context": b("tenant-a")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let ct = e["data"]["ciphertext"].as_str().unwrap().to_owned();
    let (s, d) = call(
        &r,
        "/v1/transit/decrypt/d",
        json!({"ciphertext": ct, "context": b("tenant-a")}),
    )
    .await;
    assert_eq!(
        (s, d["data"]["plaintext"].as_str()),
        (StatusCode::OK, Some(b("secret").as_str()))
    );
    let (s, v) = call(
        &r,
        "/v1/transit/decrypt/d",
        json!({"ciphertext": ct, "context": b("tenant-b")}),
    )
    .await;
    assert_eq!(
        (s, err(&v)),
        (StatusCode::BAD_REQUEST, "invalid ciphertext".to_owned()),
        "another context"
    );
    let (s, v) = call(&r, "/v1/transit/decrypt/d", json!({"ciphertext": ct})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(err(&v).contains("missing 'context'"), "{v}");
    // Associated data is bound as well, after the context.
    let (_, e2) = call(
        &r,
        "/v1/transit/encrypt/d",
        json!({"plaintext": b("x"), "context": b("tenant-a"), "associated_data": b("row-1")}),
    )
    .await;
    let ct2 = e2["data"]["ciphertext"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &r,
        "/v1/transit/decrypt/d",
        json!({"ciphertext": ct2, "context": b("tenant-a"), "associated_data": b("row-2")}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(
        &r,
        "/v1/transit/decrypt/d",
        json!({"ciphertext": ct2, "context": b("tenant-arow-1")}),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "the context and the AAD cannot be shifted into each other"
    );
    let (s, _) = call(
        &r,
        "/v1/transit/decrypt/d",
        json!({"ciphertext": ct2, "context": b("tenant-a"), "associated_data": b("row-1")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // Batches: a context per item; an item without one fails alone.
    let (s, v) = call(
        &r,
        "/v1/transit/encrypt/d",
        json!({"batch_input": [
            {"plaintext": b("one"), "context": b("c1")},
            {"plaintext": b("two"), "context": b("c2")},
            {"plaintext": b("three")}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let res = v["data"]["batch_results"].as_array().unwrap();
    assert!(
        res[0]["ciphertext"].is_string() && res[1]["ciphertext"].is_string(),
        "{v}"
    );
    assert!(res[2]["error"].as_str().unwrap().contains("context"), "{v}");
    let (c1, c2) = (res[0]["ciphertext"].clone(), res[1]["ciphertext"].clone());
    let (s, v) = call(
        &r,
        "/v1/transit/decrypt/d",
        json!({"batch_input": [
            {"ciphertext": c1, "context": b("c1")}, {"ciphertext": c2, "context": b("c1")}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let res = v["data"]["batch_results"].as_array().unwrap();
    assert_eq!(res[0]["plaintext"], b("one"));
    assert_eq!(res[1]["error"], "invalid ciphertext");

    // Rewrap keeps the context.
    call(&r, "/v1/transit/keys/d/rotate", json!({})).await;
    let (s, w) = call(
        &r,
        "/v1/transit/rewrap/d",
        json!({"ciphertext": ct, "context": b("tenant-a")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{w}");
    let rw = w["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(rw.starts_with("vault:v2:"));
    let (s, _) = call(
        &r,
        "/v1/transit/decrypt/d",
        json!({"ciphertext": rw, "context": b("tenant-a")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &r,
        "/v1/transit/rewrap/d",
        json!({"ciphertext": ct, "context": b("tenant-b")}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Misuse, each a 400: context on a key that is not derived, a caller's nonce, bad base64,
    // data keys under a derived key, convergent encryption, derivation of a signing key.
    call(&r, "/v1/transit/keys/plain", json!({})).await;
    let cases = [
        (
            "/v1/transit/encrypt/plain",
            json!({"plaintext": b("x"), "context": b("c")}),
            "not created as a derived key",
        ),
        (
            "/v1/transit/decrypt/plain",
            json!({"ciphertext": ct, "context": b("c")}),
            "not created as a derived key",
        ),
        (
            "/v1/transit/encrypt/d",
            json!({"plaintext": b("x"), "context": b("c"), "nonce": b("123456789012")}),
            "nonce",
        ),
        (
            "/v1/transit/encrypt/d",
            json!({"plaintext": b("x"), "context": "%%"}),
            "context",
        ),
        ("/v1/transit/datakey/plaintext/d", json!({}), "derived key"),
        (
            "/v1/transit/keys/conv-no-derive",
            json!({"convergent_encryption": true}),
            "requires derivation",
        ),
        (
            "/v1/transit/keys/edd",
            json!({"derived": true, "type": "ed25519"}),
            "derivation",
        ),
    ];
    for (path, body, want) in cases {
        let (s, v) = call(&r, path, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
        assert!(err(&v).contains(want), "{path} {body}: {v}");
    }

    // Upsert with a context makes a derived key, as Vault's.
    let (s, _) = call(
        &r,
        "/v1/transit/encrypt/upd",
        json!({"plaintext": b("x"), "context": b("c")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, k) = call(&r, "/v1/transit/keys/upd", Value::Null).await;
    assert_eq!(k["data"]["derived"], true);

    // A restart reads the flag from the MACed record.
    let hsm = token.open().await;
    let k2 = Keyring::open(hsm, std::sync::Arc::new(FileStore::open(&keys).unwrap()))
        .await
        .unwrap();
    let r2 = app(k2, SecretString::from("t"), ApiConfig::default());
    let (s, _) = call(
        &r2,
        "/v1/transit/decrypt/d",
        json!({"ciphertext": ct, "context": b("tenant-a")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&r2, "/v1/transit/decrypt/d", json!({"ciphertext": ct})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

fn nonce_of(ct: &str) -> Vec<u8> {
    B64.decode(ct.split(':').nth(2).unwrap()).unwrap()[..12].to_vec()
}

#[tokio::test]
async fn convergent_keys_are_deterministic_per_context_aad_and_plaintext() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    let r = app(keyring, SecretString::from("t"), ApiConfig::default());
    let (s, k) = call(
        &r,
        "/v1/transit/keys/conv",
        json!({"derived": true, "convergent_encryption": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{k}");
    assert_eq!(k["data"]["convergent_encryption"], true, "{k}");

    let enc = |body: Value| {
        let r = r.clone();
        async move {
            let (s, v) = call(&r, "/v1/transit/encrypt/conv", body).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["data"]["ciphertext"].as_str().unwrap().to_owned()
        }
    };
    let a1 = enc(json!({"plaintext": b("same"), "context": b("ctx")})).await;
    let a2 = enc(json!({"plaintext": b("same"), "context": b("ctx")})).await;
    assert_eq!(a1, a2, "equal inputs, equal ciphertexts");
    let other_ctx = enc(json!({"plaintext": b("same"), "context": b("ctx2")})).await;
    let other_pt = enc(json!({"plaintext": b("diff"), "context": b("ctx")})).await;
    let other_aad =
        enc(json!({"plaintext": b("same"), "context": b("ctx"), "associated_data": b("a")})).await;
    for (what, ct) in [
        ("context", &other_ctx),
        ("plaintext", &other_pt),
        ("associated data", &other_aad),
    ] {
        assert_ne!(nonce_of(ct), nonce_of(&a1), "another {what}, another nonce");
    }
    let (s, d) = call(
        &r,
        "/v1/transit/decrypt/conv",
        json!({"ciphertext": a1, "context": b("ctx")}),
    )
    .await;
    assert_eq!(
        (s, d["data"]["plaintext"].as_str()),
        (StatusCode::OK, Some(b("same").as_str()))
    );

    // In a batch, equal items seal alike; after a rotation rewrap is deterministic too.
    let (_, v) = call(&r, "/v1/transit/encrypt/conv", json!({"batch_input": [
        {"plaintext": b("same"), "context": b("ctx")}, {"plaintext": b("same"), "context": b("ctx")}
    ]})).await;
    let res = v["data"]["batch_results"].as_array().unwrap();
    assert_eq!(res[0]["ciphertext"], res[1]["ciphertext"]);
    assert_eq!(res[0]["ciphertext"], json!(a1));
    call(&r, "/v1/transit/keys/conv/rotate", json!({})).await;
    let (_, w1) = call(
        &r,
        "/v1/transit/rewrap/conv",
        json!({"ciphertext": a1, "context": b("ctx")}),
    )
    .await;
    let (_, w2) = call(
        &r,
        "/v1/transit/rewrap/conv",
        json!({"ciphertext": a1, "context": b("ctx")}),
    )
    .await;
    assert!(w1["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v2:"));
    assert_eq!(w1["data"]["ciphertext"], w2["data"]["ciphertext"]);
    assert_ne!(w1["data"]["ciphertext"], json!(a1));

    // A key that is not convergent never repeats a nonce for equal inputs.
    call(
        &r,
        "/v1/transit/keys/plainderived",
        json!({"derived": true}),
    )
    .await;
    let (_, p1) = call(
        &r,
        "/v1/transit/encrypt/plainderived",
        json!({"plaintext": b("same"), "context": b("ctx")}),
    )
    .await;
    let (_, p2) = call(
        &r,
        "/v1/transit/encrypt/plainderived",
        json!({"plaintext": b("same"), "context": b("ctx")}),
    )
    .await;
    assert_ne!(p1["data"]["ciphertext"], p2["data"]["ciphertext"]);

    // Upsert of a convergent key, as Vault: with a context it is made convergent; without, 400.
    let (s, v) = call(
        &r,
        "/v1/transit/encrypt/upconv",
        json!({"plaintext": b("x"), "convergent_encryption": true}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(err(&v).contains("context is required"), "{v}");
    let u1 = enc_path(
        &r,
        "/v1/transit/encrypt/upconv",
        json!({"plaintext": b("x"), "context": b("c"), "convergent_encryption": true}),
    )
    .await;
    let u2 = enc_path(
        &r,
        "/v1/transit/encrypt/upconv",
        json!({"plaintext": b("x"), "context": b("c")}),
    )
    .await;
    assert_eq!(u1, u2);
    let (_, k) = call(&r, "/v1/transit/keys/upconv", Value::Null).await;
    assert_eq!(
        (
            k["data"]["derived"].clone(),
            k["data"]["convergent_encryption"].clone()
        ),
        (json!(true), json!(true))
    );
}

async fn enc_path(r: &Router, path: &str, body: Value) -> String {
    let (s, v) = call(r, path, body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["data"]["ciphertext"].as_str().unwrap().to_owned()
}
