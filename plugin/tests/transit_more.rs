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
    let errs = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no envelope: {v}"));
    assert!(
        errs.iter()
            .any(|m| m.as_str().unwrap_or_default().contains(want)),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_types_sign_verify_hmac_random_hash() {
    let e = env().await;
    let input = b64(b"hello world");
    // Every signing type: sign, verify, tampered signature → valid false.
    for (t, extra) in [
        ("ed25519", json!({})),
        ("ecdsa-p256", json!({"marshaling_algorithm": "jws"})),
        ("ecdsa-p384", json!({"hash_algorithm": "sha2-384"})),
        ("rsa-2048", json!({"signature_algorithm": "pkcs1v15"})),
        ("rsa-2048", json!({"salt_length": "hash"})),
    ] {
        let name = format!("s-{t}");
        let d = data(
            &e,
            "POST",
            &format!("/v1/transit/keys/{name}"),
            json!({"type": t}),
        )
        .await;
        assert_eq!(d["type"], t);
        assert_eq!(d["supports_signing"], true);
        assert!(
            d["keys"]["1"]["public_key"].as_str().unwrap().len() > 40,
            "{d}"
        );
        let mut body = extra.clone();
        body["input"] = json!(input);
        let s = data(
            &e,
            "POST",
            &format!("/v1/transit/sign/{name}"),
            body.clone(),
        )
        .await;
        let sig = s["signature"].as_str().unwrap().to_owned();
        assert!(sig.starts_with("vault:v1:"), "{s}");
        assert_eq!(s["key_version"], 1);
        body["signature"] = json!(sig);
        let v = data(
            &e,
            "POST",
            &format!("/v1/transit/verify/{name}"),
            body.clone(),
        )
        .await;
        assert_eq!(v["valid"], true, "{t} {extra}");
        body["input"] = json!(b64(b"other"));
        let v = data(
            &e,
            "POST",
            &format!("/v1/transit/verify/{name}"),
            body.clone(),
        )
        .await;
        assert_eq!(v["valid"], false, "{t} {extra}");
    }
    // Hash in the path, batch sign and verify with references.
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/sign/s-ecdsa-p256/sha2-512",
        Some(json!({"batch_input": [{"input": input, "reference": "a"}, {"input": "@@", "reference": "b"}]})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let r = v["data"]["batch_results"].as_array().unwrap();
    assert_eq!(r[0]["reference"], "a");
    assert!(r[1]["error"].is_string());
    let (s, _) = call(
        &e,
        "POST",
        "/v1/transit/sign/s-ecdsa-p256/sha2-512",
        Some(json!({"batch_input": [{"input": input}, {"input": "@@"}], "partial_failure_response_code": 207})),
    )
    .await;
    assert_eq!(s.as_u16(), 207);
    let v = data(
        &e,
        "POST",
        "/v1/transit/verify/s-ecdsa-p256/sha2-512",
        json!({"batch_input": [{"input": input, "signature": r[0]["signature"], "reference": "x"}]}),
    )
    .await;
    assert_eq!(v["batch_results"][0]["valid"], true);
    assert_eq!(v["batch_results"][0]["reference"], "x");

    // HMAC keys.
    let d = data(
        &e,
        "POST",
        "/v1/transit/keys/mac",
        json!({"type": "hmac", "key_size": 64}),
    )
    .await;
    assert_eq!(d["key_size"], 64);
    let h = data(
        &e,
        "POST",
        "/v1/transit/hmac/mac/sha2-512",
        json!({"input": input}),
    )
    .await;
    let mac = h["hmac"].as_str().unwrap().to_owned();
    assert_eq!(unb64(mac.strip_prefix("vault:v1:").unwrap()).len(), 64);
    let v = data(
        &e,
        "POST",
        "/v1/transit/verify/mac/sha2-512",
        json!({"input": input, "hmac": mac}),
    )
    .await;
    assert_eq!(v["valid"], true);
    let v = data(
        &e,
        "POST",
        "/v1/transit/verify/mac",
        json!({"input": input, "hmac": mac, "algorithm": "sha2-256"}),
    )
    .await;
    assert_eq!(v["valid"], false);

    // RSA encrypt/decrypt through the ordinary paths.
    let c = data(
        &e,
        "POST",
        "/v1/transit/encrypt/s-rsa-2048",
        json!({"plaintext": input}),
    )
    .await;
    let p = data(
        &e,
        "POST",
        "/v1/transit/decrypt/s-rsa-2048",
        json!({"ciphertext": c["ciphertext"]}),
    )
    .await;
    assert_eq!(p["plaintext"], input);

    // random and hash.
    for (path, body, len) in [
        ("/v1/transit/random", json!({}), 32),
        ("/v1/transit/random/64", json!({}), 64),
        ("/v1/transit/random/seal/16", json!({}), 16),
        ("/v1/transit/random/platform", json!({"bytes": 8}), 8),
        (
            "/v1/transit/random/all",
            json!({"bytes": "12", "format": "hex"}),
            24,
        ),
    ] {
        let d = data(&e, "POST", path, body.clone()).await;
        let s = d["random_bytes"].as_str().unwrap();
        let n = if body.get("format").is_some() {
            s.len()
        } else {
            unb64(s).len()
        };
        assert_eq!(n, len, "{path} {body}");
    }
    let d = data(
        &e,
        "POST",
        "/v1/transit/hash",
        json!({"input": b64(b"abc")}),
    )
    .await;
    assert_eq!(
        d["sum"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let d = data(
        &e,
        "POST",
        "/v1/transit/hash/sha2-512",
        json!({"input": b64(b"abc"), "format": "base64"}),
    )
    .await;
    assert_eq!(unb64(d["sum"].as_str().unwrap()).len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_new_path_is_4xx() {
    let e = env().await;
    data(&e, "POST", "/v1/transit/keys/aes", json!({})).await;
    data(
        &e,
        "POST",
        "/v1/transit/keys/ed",
        json!({"type": "ed25519"}),
    )
    .await;
    data(
        &e,
        "POST",
        "/v1/transit/keys/ec",
        json!({"type": "ecdsa-p256"}),
    )
    .await;
    data(
        &e,
        "POST",
        "/v1/transit/keys/rsa",
        json!({"type": "rsa-2048"}),
    )
    .await;
    data(&e, "POST", "/v1/transit/keys/mac", json!({"type": "hmac"})).await;
    let i = b64(b"x");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/transit/keys/k",
            json!({"type": "chacha20-poly1305"}),
            "CKM_CHACHA20_POLY1305",
        ),
        (
            "/v1/transit/keys/k",
            json!({"type": "des"}),
            "unknown key type",
        ),
        (
            "/v1/transit/keys/k",
            json!({"type": "hmac", "key_size": 8}),
            "key_size",
        ),
        (
            "/v1/transit/keys/k",
            json!({"type": "ed25519", "key_size": 64}),
            "key_size",
        ),
        (
            "/v1/transit/sign/aes",
            json!({"input": i}),
            "signing is not supported by key type aes256-gcm96",
        ),
        (
            "/v1/transit/sign/mac",
            json!({"input": i}),
            "not supported by key type hmac",
        ),
        ("/v1/transit/sign/ed", json!({"input": "%%%"}), "base64"),
        (
            "/v1/transit/sign/ed",
            json!({"input": i, "prehashed": true}),
            "prehashed",
        ),
        (
            "/v1/transit/sign/ec",
            json!({"input": i, "hash_algorithm": "md5"}),
            "unsupported hash algorithm",
        ),
        (
            "/v1/transit/sign/ec/sha3-224",
            json!({"input": i}),
            "sha3-224",
        ),
        (
            "/v1/transit/sign/ec",
            json!({"input": i, "marshaling_algorithm": "pem"}),
            "marshaling",
        ),
        (
            "/v1/transit/sign/ec",
            json!({"input": i, "prehashed": true}),
            "digest",
        ),
        (
            "/v1/transit/sign/rsa",
            json!({"input": i, "signature_algorithm": "ssa"}),
            "signature algorithm",
        ),
        (
            "/v1/transit/sign/rsa",
            json!({"input": i, "salt_length": "lots"}),
            "salt_length",
        ),
        (
            "/v1/transit/sign/rsa",
            json!({"input": i, "salt_length": 4000}),
            "salt_length",
        ),
        (
            "/v1/transit/sign/rsa/sha3-256",
            json!({"input": i}),
            "RSA-PSS",
        ),
        (
            "/v1/transit/sign/missing",
            json!({"input": i}),
            "encryption key not found",
        ),
        (
            "/v1/transit/sign/ed",
            json!({"batch_input": []}),
            "missing batch input",
        ),
        (
            "/v1/transit/verify/ed",
            json!({"input": i, "signature": "vault:v1:@@@"}),
            "invalid signature",
        ),
        (
            "/v1/transit/verify/ed",
            json!({"input": i, "signature": "nope"}),
            "invalid signature",
        ),
        (
            "/v1/transit/verify/ed",
            json!({"input": i, "signature": "vault:v9:AAAA"}),
            "unknown key version",
        ),
        (
            "/v1/transit/verify/ed",
            json!({"input": i}),
            "missing signature",
        ),
        (
            "/v1/transit/verify/ed",
            json!({"input": i, "signature": "vault:v1:AA==", "hmac": "vault:v1:AA=="}),
            "not both",
        ),
        (
            "/v1/transit/verify/aes",
            json!({"input": i, "hmac": "vault:v1:AA=="}),
            "not supported by key type",
        ),
        (
            "/v1/transit/hmac/aes",
            json!({"input": i}),
            "HMAC is not supported by key type aes256-gcm96",
        ),
        (
            "/v1/transit/hmac/mac/sha3-256",
            json!({"input": i}),
            "CKM_SHA3_256_HMAC",
        ),
        (
            "/v1/transit/hmac/mac/sha2-512",
            json!({"input": i}),
            "at least 64 bytes",
        ),
        (
            "/v1/transit/hmac/mac/md5",
            json!({"input": i}),
            "unsupported hash algorithm",
        ),
        ("/v1/transit/hmac/mac", json!({"input": "%%"}), "base64"),
        (
            "/v1/transit/encrypt/ed",
            json!({"plaintext": i}),
            "encryption is not supported by key type ed25519",
        ),
        (
            "/v1/transit/encrypt/rsa",
            json!({"plaintext": b64(&[0; 300])}),
            "plaintext too long",
        ),
        (
            "/v1/transit/datakey/plaintext/ed",
            json!({}),
            "not supported by key type",
        ),
        (
            "/v1/transit/random/lots",
            json!({}),
            "unsupported entropy source",
        ),
        (
            "/v1/transit/random/seal/nine",
            json!({}),
            "invalid bytes value",
        ),
        (
            "/v1/transit/random/999999999",
            json!({}),
            "exceeded maximum",
        ),
        (
            "/v1/transit/random",
            json!({"format": "octal"}),
            "unsupported encoding format",
        ),
        ("/v1/transit/random", json!({"bytes": -1}), ""),
        (
            "/v1/transit/hash/md5",
            json!({"input": i}),
            "unsupported hash algorithm",
        ),
        ("/v1/transit/hash", json!({"input": "%%"}), "base64"),
        (
            "/v1/transit/hash",
            json!({"input": i, "format": "octal"}),
            "unsupported encoding format",
        ),
    ];
    for (path, body, want) in cases {
        refused(&e, "POST", path, body, want).await;
    }
}
