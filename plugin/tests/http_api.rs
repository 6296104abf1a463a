//! The transit HTTP API against real SoftHSM2: every route's shape, OpenBao's seal requests, batch
//! semantics, every kind of bad input, auth, the listener (plain and TLS) and the `bao` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rootseal::{app, ApiConfig};
use rootseal_hsm::Keyring;
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "s.root-test-token";

struct Env {
    app: Router,
    keyring: Keyring,
    _token: TestToken,
    _dir: tempfile::TempDir,
}

async fn keyring() -> (Keyring, TestToken, tempfile::TempDir) {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    (keyring, token, dir)
}

async fn env_with(cfg: ApiConfig) -> Env {
    let (keyring, token, dir) = keyring().await;
    let app = app(keyring.clone(), SecretString::from(TOKEN), cfg);
    Env {
        app,
        keyring,
        _token: token,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(ApiConfig::default()).await
}

/// One request through the router: (status, body as JSON or `Null` when empty).
async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    if bytes.is_empty() {
        return (status, Value::Null);
    }
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

fn req(method: &str, path: &str, body: Option<&str>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("x-vault-token", TOKEN)
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap()
}

async fn call(e: &Env, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let b = body.map(|v| v.to_string());
    send(&e.app, req(method, path, b.as_deref())).await
}

async fn encrypt(e: &Env, key: &str, pt: &str) -> String {
    let (s, v) = call(
        e,
        "PUT",
        &format!("/v1/transit/encrypt/{key}"),
        Some(json!({ "plaintext": b64(pt.as_bytes()) })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["data"]["ciphertext"].as_str().unwrap().to_owned()
}

async fn decrypt(e: &Env, key: &str, ct: &str) -> (StatusCode, Value) {
    call(
        e,
        "PUT",
        &format!("/v1/transit/decrypt/{key}"),
        Some(json!({ "ciphertext": ct })),
    )
    .await
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn assert_envelope(v: &Value) {
    for k in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(v.get(k).is_some(), "missing {k} in {v}");
    }
    assert_eq!(v["lease_id"], "");
    assert_eq!(v["renewable"], false);
    assert_eq!(v["lease_duration"], 0);
    assert_eq!(v["request_id"].as_str().unwrap().len(), 36);
}

/// The service still answers a normal round trip.
async fn still_works(e: &Env) {
    let ct = encrypt(e, "alive", "still here").await;
    let (s, v) = decrypt(e, "alive", &ct).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        unb64(v["data"]["plaintext"].as_str().unwrap()),
        b"still here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lifecycle_shapes() {
    let e = env().await;
    // Empty list: 404 with an empty errors list, as Vault.
    let (s, v) = call(&e, "GET", "/v1/transit/keys?list=true", None).await;
    assert_eq!((s, v), (StatusCode::NOT_FOUND, json!({"errors": []})));

    let (s, v) = call(&e, "POST", "/v1/transit/keys/k1", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_envelope(&v);
    let d = &v["data"];
    assert_eq!(d["name"], "k1");
    assert_eq!(d["type"], "aes256-gcm96");
    assert_eq!(d["latest_version"], 1);
    assert_eq!(d["min_decryption_version"], 1);
    assert_eq!(d["min_encryption_version"], 0);
    assert_eq!(d["deletion_allowed"], false);
    assert_eq!(d["exportable"], false);
    assert_eq!(d["supports_encryption"], true);
    assert_eq!(d["supports_decryption"], true);
    assert_eq!(
        d["supports_derivation"], true,
        "as Vault: AES keys can be derived"
    );
    assert_eq!(d["supports_signing"], false);
    assert_eq!(d["auto_rotate_period"], 0);
    assert!(d["keys"]["1"].as_u64().unwrap() > 1_600_000_000);

    // The HTTP answer describes what the keyring holds.
    let info = e.keyring.key_info("k1").await.unwrap();
    assert_eq!(d["keys"]["1"], info.versions[&1]);
    // Read, the CLI's list, and the LIST method.
    let (s, v) = call(&e, "GET", "/v1/transit/keys/k1", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["name"], "k1");
    call(
        &e,
        "POST",
        "/v1/transit/keys/k0",
        Some(json!({"type": "aes256-gcm96"})),
    )
    .await;
    let (s, v) = call(&e, "GET", "/v1/transit/keys?list=true", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_envelope(&v);
    assert_eq!(v["data"], json!({"keys": ["k0", "k1"]}));
    let (s, v) = call(&e, "LIST", "/v1/transit/keys", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["keys"], json!(["k0", "k1"]));
    let (s, _) = call(&e, "GET", "/v1/transit/keys", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);

    // Rotate: 200 with the key.
    let (s, v) = call(&e, "POST", "/v1/transit/keys/k1/rotate", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["latest_version"], 2);
    assert!(v["data"]["keys"]["2"].is_u64());

    // Config, with the CLI's string-typed values.
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/keys/k1/config",
        Some(json!({"min_decryption_version": "2", "min_encryption_version": 2, "auto_rotate_period": "24h"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["min_decryption_version"], 2);
    assert_eq!(v["data"]["min_encryption_version"], 2);
    assert_eq!(v["data"]["auto_rotate_period"], 86_400);
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/keys/k1/config",
        Some(json!({"min_decryption_version": 9})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Delete: refused until allowed, then 204, then the key is gone.
    let (s, v) = call(&e, "DELETE", "/v1/transit/keys/k1", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v,
        json!({"errors": ["deletion is not allowed for this key"]})
    );
    let (s, _) = call(
        &e,
        "POST",
        "/v1/transit/keys/k1/config",
        Some(json!({"deletion_allowed": "true"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(&e, "DELETE", "/v1/transit/keys/k1", None).await;
    assert_eq!((s, v), (StatusCode::NO_CONTENT, Value::Null));
    let (s, v) = call(&e, "GET", "/v1/transit/keys/k1", None).await;
    assert_eq!((s, v), (StatusCode::NOT_FOUND, json!({"errors": []})));

    // Unsupported key types and options.
    for body in [
        json!({"type": "chacha20-poly1305"}),
        json!({"type": "rsa-1024"}),
        json!({"exportable": true}),
        json!({"derived": false, "convergent_encryption": true}),
        json!({"auto_rotate_period": "10m"}),
    ] {
        let (s, v) = call(&e, "POST", "/v1/transit/keys/k9", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {v}");
        assert!(v["errors"][0].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_decrypt_versions_and_rewrap() {
    let e = env().await;
    // Upsert: encrypt creates the key.
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/encrypt/k",
        Some(json!({"plaintext": b64(b"hello")})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_envelope(&v);
    assert_eq!(v["data"]["key_version"], 1);
    let ct1 = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(ct1.starts_with("vault:v1:"));
    let (s, v) = decrypt(&e, "k", &ct1).await;
    assert_eq!(s, StatusCode::OK);
    assert_envelope(&v);
    assert_eq!(v["data"], json!({"plaintext": b64(b"hello")}));

    // Empty plaintext and associated data.
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/encrypt/k",
        Some(json!({"plaintext": "", "associated_data": b64(b"ctx")})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ct_aad = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/decrypt/k",
        Some(json!({"ciphertext": ct_aad, "associated_data": b64(b"ctx")})),
    )
    .await;
    assert_eq!((s, &v["data"]["plaintext"]), (StatusCode::OK, &json!("")));
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/decrypt/k",
        Some(json!({"ciphertext": ct_aad, "associated_data": b64(b"other")})),
    )
    .await;
    assert_eq!(
        (s, v),
        (
            StatusCode::BAD_REQUEST,
            json!({"errors": ["invalid ciphertext"]})
        )
    );

    // Rotate: new ciphertexts are v2, v1 still decrypts.
    call(&e, "POST", "/v1/transit/keys/k/rotate", None).await;
    let ct2 = encrypt(&e, "k", "two").await;
    assert!(ct2.starts_with("vault:v2:"), "{ct2}");
    assert_eq!(decrypt(&e, "k", &ct1).await.0, StatusCode::OK);
    // Encrypt under an explicit older version.
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/encrypt/k",
        Some(json!({"plaintext": b64(b"x"), "key_version": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v1:"));
    let (s, _) = call(
        &e,
        "POST",
        "/v1/transit/encrypt/k",
        Some(json!({"plaintext": b64(b"x"), "key_version": 7})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Rewrap v1 → v2.
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/rewrap/k",
        Some(json!({"ciphertext": ct1})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["key_version"], 2);
    let re = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(re.starts_with("vault:v2:"));
    assert_eq!(
        decrypt(&e, "k", &re).await.1["data"]["plaintext"],
        b64(b"hello")
    );

    // Unknown version: opaque. Too old (after min_decryption_version=2): Vault's message.
    let forged = ct1.replacen("vault:v1:", "vault:v9:", 1);
    assert_eq!(
        decrypt(&e, "k", &forged).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"errors": ["invalid ciphertext"]})
        )
    );
    call(
        &e,
        "POST",
        "/v1/transit/keys/k/config",
        Some(json!({"min_decryption_version": 2})),
    )
    .await;
    let (s, v) = decrypt(&e, "k", &ct1).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v,
        json!({"errors": ["ciphertext or signature version is disallowed by policy (too old)"]})
    );
    assert_eq!(decrypt(&e, "k", &ct2).await.0, StatusCode::OK);
    still_works(&e).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_semantics() {
    let e = env().await;
    call(&e, "POST", "/v1/transit/keys/b", None).await;
    let body = json!({"batch_input": [
        {"plaintext": b64(b"one"), "reference": "r1"},
        {"plaintext": "not base64!", "reference": "r2"},
        {"plaintext": b64(b"three")},
    ]});
    let (s, v) = call(&e, "POST", "/v1/transit/encrypt/b", Some(body.clone())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_envelope(&v);
    let r = v["data"]["batch_results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["reference"], "r1");
    assert_eq!(r[0]["key_version"], 1);
    assert_eq!(r[1]["reference"], "r2");
    assert_eq!(r[1]["error"], "failed to base64-decode plaintext");
    assert!(r[1].get("ciphertext").is_none());
    assert_eq!(r[2]["reference"], "");
    let c0 = r[0]["ciphertext"].as_str().unwrap().to_owned();
    let c2 = r[2]["ciphertext"].as_str().unwrap().to_owned();

    // partial_failure_response_code with at least one success.
    let mut pb = body.clone();
    pb["partial_failure_response_code"] = json!(207);
    let (s, _) = call(&e, "POST", "/v1/transit/encrypt/b", Some(pb)).await;
    assert_eq!(s.as_u16(), 207);
    // ... but not when every item failed.
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/encrypt/b",
        Some(json!({"batch_input": [{"plaintext": "!"}], "partial_failure_response_code": 207})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // All good → 200.
    let (s, v) = call(&e, "POST", "/v1/transit/encrypt/b", Some(json!({"batch_input": [{"plaintext": b64(b"a")}, {"plaintext": b64(b"b"), "reference": "x"}]}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["batch_results"][1]["reference"], "x");
    // The CLI's `batch_input=@file` sends the array as a string: accepted.
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/encrypt/b",
        Some(json!({"batch_input": format!("[{{\"plaintext\":\"{}\"}}]\n", b64(b"s"))})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Empty batch.
    let (s, _) = call(
        &e,
        "POST",
        "/v1/transit/encrypt/b",
        Some(json!({"batch_input": []})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Decrypt batch with one tampered item.
    let tampered = tamper(&c2);
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/decrypt/b",
        Some(json!({"batch_input": [
        {"ciphertext": c0, "reference": "a"},
        {"ciphertext": tampered, "reference": "b"},
        {"ciphertext": "garbage"},
    ], "partial_failure_response_code": 200})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = v["data"]["batch_results"].as_array().unwrap();
    assert_eq!(r[0]["plaintext"], b64(b"one"));
    assert_eq!(r[0]["reference"], "a");
    assert_eq!(r[1]["error"], "invalid ciphertext");
    assert_eq!(r[1]["reference"], "b");
    assert_eq!(r[2]["error"], "invalid ciphertext");

    // Rewrap batch after a rotation.
    call(&e, "POST", "/v1/transit/keys/b/rotate", None).await;
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/rewrap/b",
        Some(json!({"batch_input": [
            {"ciphertext": c0, "reference": "p"},
            {"ciphertext": "vault:v1:AAAA"},
            {"ciphertext": c2, "reference": "q"},
        ]})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let r = v["data"]["batch_results"].as_array().unwrap();
    assert_eq!(r[0]["key_version"], 2);
    assert_eq!(r[0]["reference"], "p");
    assert_eq!(r[1]["error"], "invalid ciphertext");
    assert_eq!(r[2]["reference"], "q");
    let re2 = r[2]["ciphertext"].as_str().unwrap();
    assert!(re2.starts_with("vault:v2:"));
    assert_eq!(
        decrypt(&e, "b", re2).await.1["data"]["plaintext"],
        b64(b"three")
    );
    still_works(&e).await;
}

/// Flips one bit in the payload of a `vault:vN:` ciphertext.
fn tamper(ct: &str) -> String {
    let (head, payload) = ct.rsplit_once(':').unwrap();
    let mut raw = unb64(payload);
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    format!("{head}:{}", b64(&raw))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_4xx_in_the_envelope() {
    let e = env_with(ApiConfig {
        allow_upsert: false,
        max_body_bytes: 4096,
        ..ApiConfig::default()
    })
    .await;
    call(&e, "POST", "/v1/transit/keys/k", None).await;
    call(&e, "POST", "/v1/transit/keys/alive", None).await;
    call(&e, "POST", "/v1/transit/keys/other", None).await;
    let good = encrypt(&e, "k", "secret").await;
    let foreign = encrypt(&e, "other", "secret").await;

    let raw_cases: Vec<(&str, String, u16, Option<Value>)> = vec![
        ("/v1/transit/encrypt/k", "{\"plaintext\":".into(), 400, None),
        ("/v1/transit/encrypt/k", "not json at all".into(), 400, None),
        ("/v1/transit/encrypt/k", "[1,2]".into(), 400, None),
        (
            "/v1/transit/encrypt/k",
            "{\"plaintext\":5}".into(),
            400,
            None,
        ),
        (
            "/v1/transit/encrypt/k",
            "{\"plaintext\":null,\"batch_input\":7}".into(),
            400,
            None,
        ),
        (
            "/v1/transit/encrypt/k",
            "{\"plaintext\":\"%%%\"}".into(),
            400,
            Some(json!({"errors": ["failed to base64-decode plaintext"]})),
        ),
        (
            "/v1/transit/encrypt/k",
            "{}".into(),
            400,
            Some(json!({"errors": ["missing plaintext to encrypt"]})),
        ),
        (
            "/v1/transit/encrypt/k",
            "{\"plaintext\":\"YQ==\",\"key_version\":\"x\"}".into(),
            400,
            None,
        ),
        (
            "/v1/transit/encrypt/nokey",
            "{\"plaintext\":\"YQ==\"}".into(),
            400,
            Some(json!({"errors": ["encryption key not found"]})),
        ),
        (
            "/v1/transit/decrypt/nokey",
            format!("{{\"ciphertext\":\"{good}\"}}"),
            400,
            Some(json!({"errors": ["encryption key not found"]})),
        ),
        (
            "/v1/transit/encrypt/bad%20name",
            "{\"plaintext\":\"YQ==\"}".into(),
            400,
            None,
        ),
        (
            "/v1/transit/decrypt/k",
            format!("{{\"ciphertext\":\"{}\"}}", tamper(&good)),
            400,
            Some(json!({"errors": ["invalid ciphertext"]})),
        ),
        (
            "/v1/transit/decrypt/k",
            format!("{{\"ciphertext\":\"{foreign}\"}}"),
            400,
            Some(json!({"errors": ["invalid ciphertext"]})),
        ),
        (
            "/v1/transit/decrypt/k",
            format!(
                "{{\"ciphertext\":\"{}\"}}",
                good.replacen("vault:v1:", "vault:v2:", 1)
            ),
            400,
            Some(json!({"errors": ["invalid ciphertext"]})),
        ),
        (
            "/v1/transit/decrypt/k",
            format!(
                "{{\"ciphertext\":\"{}\"}}",
                good.replacen("vault:v1:", "vault:v01:", 1)
            ),
            400,
            Some(json!({"errors": ["invalid ciphertext"]})),
        ),
        (
            "/v1/transit/decrypt/k",
            "{\"ciphertext\":\"vault:v1\"}".into(),
            400,
            Some(json!({"errors": ["invalid ciphertext"]})),
        ),
        (
            "/v1/transit/decrypt/k",
            "{\"ciphertext\":\"vault:v1:AAAA\"}".into(),
            400,
            Some(json!({"errors": ["invalid ciphertext"]})),
        ),
        (
            "/v1/transit/decrypt/k",
            "{\"ciphertext\":\"vault:v1:@@@@\"}".into(),
            400,
            Some(json!({"errors": ["invalid ciphertext"]})),
        ),
        (
            "/v1/transit/decrypt/k",
            "{\"ciphertext\":7}".into(),
            400,
            None,
        ),
        (
            "/v1/transit/datakey/plaintext/k",
            "{\"bits\":100}".into(),
            400,
            Some(json!({"errors": ["invalid bits value"]})),
        ),
        ("/v1/transit/datakey/secret/k", "{}".into(), 400, None),
        (
            "/v1/transit/keys/k/config",
            "{\"deletion_allowed\":\"perhaps\"}".into(),
            400,
            None,
        ),
        (
            "/v1/transit/keys/k/config",
            "{\"min_decryption_version\":-3}".into(),
            400,
            None,
        ),
        (
            "/v1/transit/encrypt/k",
            format!("{{\"plaintext\":\"{}\"}}", "A".repeat(5000)),
            413,
            None,
        ),
    ];
    for (path, body, status, want) in raw_cases {
        let (s, v) = send(&e.app, req("PUT", path, Some(&body))).await;
        let shown = &body[..body.len().min(60)];
        assert_eq!(s.as_u16(), status, "{path} {shown} -> {v}");
        let errs = v["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no envelope: {path} {shown} -> {v}"));
        assert_eq!(errs.len(), 1, "{v}");
        assert!(errs[0].is_string());
        if let Some(w) = want {
            assert_eq!(v, w, "{path} {shown}");
        }
        still_works(&e).await;
    }

    // Oversized with a lying/absent Content-Length (chunked) is refused too.
    let stream = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))),
    );
    let r = Request::builder()
        .method("PUT")
        .uri("/v1/transit/encrypt/k")
        .header("x-vault-token", TOKEN)
        .body(Body::from_stream(stream))
        .unwrap();
    let (s, v) = send(&e.app, r).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("too large"));

    // Auth: missing, wrong, wrong scheme → 403 permission denied; Bearer works.
    let denied = json!({"errors": ["permission denied"]});
    let body = "{\"plaintext\":\"YQ==\"}";
    for headers in [
        vec![],
        vec![("x-vault-token", "s.wrong")],
        vec![("x-vault-token", "")],
        vec![("authorization", "Bearer s.wrong")],
        vec![("authorization", &*format!("Basic {TOKEN}"))],
        vec![("x-vault-token", &*format!("{TOKEN}x"))],
    ] {
        let mut b = Request::builder()
            .method("PUT")
            .uri("/v1/transit/encrypt/k");
        for (k, v) in &headers {
            b = b.header(*k, *v);
        }
        let (s, v) = send(&e.app, b.body(Body::from(body)).unwrap()).await;
        assert_eq!((s, &v), (StatusCode::FORBIDDEN, &denied), "{headers:?}");
    }
    for (method, path) in [
        ("GET", "/v1/transit/keys?list=true"),
        ("LIST", "/v1/transit/keys"),
        ("GET", "/v1/transit/keys/k"),
        ("DELETE", "/v1/transit/keys/k"),
        ("PUT", "/v1/transit/keys/k/rotate"),
        ("PUT", "/v1/transit/datakey/plaintext/k"),
        ("POST", "/v1/transit/bulk-seal/k"),
        ("POST", "/v1/transit/bulk-unseal/k"),
        ("PUT", "/v1/auth/token/renew-self"),
    ] {
        let r = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(&e.app, r).await,
            (StatusCode::FORBIDDEN, denied.clone()),
            "{method} {path}"
        );
    }
    let r = Request::builder()
        .method("PUT")
        .uri("/v1/transit/encrypt/k")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&e.app, r).await.0, StatusCode::OK);

    // Unknown paths and methods.
    for (m, p) in [
        ("GET", "/v1/transit/nothing"),
        ("GET", "/v1/other/encrypt/k"),
        ("PUT", "/"),
        ("GET", "/v1/transit/encrypt/k/extra"),
    ] {
        let (s, v) = send(&e.app, req(m, p, None)).await;
        assert_eq!(
            (s, v),
            (StatusCode::NOT_FOUND, json!({"errors": []})),
            "{m} {p}"
        );
    }
    let (s, v) = send(&e.app, req("GET", "/v1/transit/encrypt/k", None)).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    assert!(v["errors"].is_array());
    still_works(&e).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datakeys() {
    let e = env().await;
    call(&e, "POST", "/v1/transit/keys/dk", None).await;
    for (bits, len) in [
        (None, 32),
        (Some(json!(128)), 16),
        (Some(json!("512")), 64),
        (Some(json!(256)), 32),
    ] {
        let body = bits.map(|b| json!({"bits": b})).unwrap_or(json!({}));
        let (s, v) = call(&e, "POST", "/v1/transit/datakey/plaintext/dk", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_envelope(&v);
        let pt = unb64(v["data"]["plaintext"].as_str().unwrap());
        assert_eq!(pt.len(), len);
        assert_eq!(v["data"]["key_version"], 1);
        let ct = v["data"]["ciphertext"].as_str().unwrap();
        assert_eq!(decrypt(&e, "dk", ct).await.1["data"]["plaintext"], b64(&pt));
    }
    let (s, v) = call(&e, "PUT", "/v1/transit/datakey/wrapped/dk", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["data"].get("plaintext").is_none(), "{v}");
    assert!(v["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v1:"));
    // The bulk-seal routes are mounted under the transit mount, behind the token check.
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/bulk-seal/dk",
        Some(json!({"batch_input": [{"plaintext": b64(b"bulk")}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(
        &e,
        "POST",
        "/v1/transit/bulk-unseal/dk",
        Some(json!({"batch_input": [{"ciphertext": v["data"]["batch_results"][0]["ciphertext"]}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["batch_results"][0]["plaintext"], b64(b"bulk"));
    let (s, v) = call(&e, "PUT", "/v1/transit/datakey/wrapped/missing", None).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::BAD_REQUEST,
            json!({"errors": ["encryption key not found"]})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_health_metrics_renew_and_nested_mount() {
    let e = env_with(ApiConfig {
        mount: "a/b/transit".into(),
        ..ApiConfig::default()
    })
    .await;
    let r = Request::builder()
        .uri("/v1/sys/health")
        .body(Body::empty())
        .unwrap();
    let (s, v) = send(&e.app, r).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["initialized"], true);
    assert_eq!(v["sealed"], false);
    assert_eq!(v["standby"], false);

    let (s, v) = call(
        &e,
        "PUT",
        "/v1/a/b/transit/encrypt/n",
        Some(json!({"plaintext": "YQ=="})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = call(
        &e,
        "PUT",
        "/v1/transit/encrypt/n",
        Some(json!({"plaintext": "YQ=="})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, v) = call(
        &e,
        "PUT",
        "/v1/auth/token/renew-self",
        Some(json!({"increment": 0})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["auth"]["client_token"], TOKEN);
    assert_eq!(v["auth"]["renewable"], false);
    assert_eq!(v["auth"]["lease_duration"], 0);

    let r = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let resp = e.app.clone().oneshot(r).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
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
        text.contains("rootseal_hsm_operations_total{operation=\"encrypt\"} "),
        "{text}"
    );
    let enc_line = text
        .lines()
        .find(|l| l.starts_with("rootseal_hsm_operations_total{operation=\"encrypt\"}"))
        .unwrap();
    assert!(!enc_line.ends_with(" 0"), "{enc_line}");
    assert!(text.contains("rootseal_http_requests_total{route=\"/v1/a/b/transit/encrypt/{name}\",method=\"PUT\",code=\"200\"} 1"), "{text}");
    assert!(text.contains("code=\"404\""), "{text}");
    assert!(text.contains("rootseal_http_request_duration_seconds_count"));
    assert!(!text.contains(TOKEN));
}

// ------------------------------------------------------------------------------------------------
// Over real sockets.

async fn spawn_server(
    e: &Env,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = e.app.clone();
    let h = tokio::spawn(rootseal::serve_listener(
        listener,
        tls,
        router,
        async move {
            let _ = rx.await;
        },
    ));
    (addr, tx, h)
}

/// Sends one request exactly as OpenBao's seal does and reads one response on the same connection.
async fn raw_roundtrip(
    sock: &mut tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    path: &str,
    body: String,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\nX-Vault-Request: true\r\nX-Vault-Token: {TOKEN}\r\nAccept-Encoding: gzip\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            assert!(
                !head.to_ascii_lowercase().contains("connection: close"),
                "{head}"
            );
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if rest.len() >= len {
                let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, serde_json::from_str::<Value>(&rest[..len]).unwrap());
            }
        }
    }
}

/// OpenBao's transit seal, byte for byte: PUT, no Content-Type, `X-Vault-Request: true`,
/// concurrent requests on keep-alive connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_seal_requests_over_tcp() {
    let e = env().await;
    let (addr, stop, h) = spawn_server(&e, None).await;
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (s, v) = raw_roundtrip(
        &mut sock,
        addr,
        "/v1/auth/token/renew-self",
        "{\"increment\":0}".into(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = raw_roundtrip(
        &mut sock,
        addr,
        "/v1/transit/encrypt/autounseal",
        "{\"plaintext\":\"YQ==\"}".into(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert_eq!(ct.split(':').count(), 3);
    let (s, v) = raw_roundtrip(
        &mut sock,
        addr,
        "/v1/transit/decrypt/autounseal",
        format!("{{\"ciphertext\":\"{ct}\"}}"),
    )
    .await;
    assert_eq!((s, &v["data"]["plaintext"]), (200, &json!("YQ==")));
    drop(sock);

    // Concurrent clients with keep-alive (reqwest sends no Content-Type for a string body).
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let pt = b64(format!("item {i}").as_bytes());
            let r = client
                .put(format!("http://{addr}/v1/transit/encrypt/autounseal"))
                .header("X-Vault-Token", TOKEN)
                .header("X-Vault-Request", "true")
                .body(format!("{{\"plaintext\":\"{pt}\"}}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let v: Value = r.json().await.unwrap();
            let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
            let r = client
                .put(format!("http://{addr}/v1/transit/decrypt/autounseal"))
                .header("X-Vault-Token", TOKEN)
                .body(format!("{{\"ciphertext\":\"{ct}\"}}"))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["data"]["plaintext"], pt);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Graceful shutdown returns.
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(40), h)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mtls_listener() {
    let e = env().await;
    let dir = tempfile::tempdir().unwrap();
    // A CA, a server certificate for 127.0.0.1 and a client certificate.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let srv_key = rcgen::KeyPair::generate().unwrap();
    let srv = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&srv_key, &issuer)
        .unwrap();
    let cli_key = rcgen::KeyPair::generate().unwrap();
    let cli = rcgen::CertificateParams::new(vec!["client".to_owned()])
        .unwrap()
        .signed_by(&cli_key, &issuer)
        .unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("ca.pem"), ca.pem()).unwrap();
    std::fs::write(p("srv.pem"), srv.pem()).unwrap();
    std::fs::write(p("srv.key"), srv_key.serialize_pem()).unwrap();

    let files = rootseal::TlsFiles {
        cert: p("srv.pem"),
        key: p("srv.key"),
        client_ca: Some(p("ca.pem")),
    };
    let cfg = rootseal::tls_config(&files).unwrap();
    let (addr, stop, h) = spawn_server(&e, Some(cfg)).await;
    let ca_cert = reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
    let url = format!("https://127.0.0.1:{}/v1/transit/encrypt/t", addr.port());

    // Without a client certificate: refused in the handshake.
    let anon = reqwest::Client::builder()
        .add_root_certificate(ca_cert.clone())
        .build()
        .unwrap();
    assert!(anon
        .put(&url)
        .header("X-Vault-Token", TOKEN)
        .body("{\"plaintext\":\"YQ==\"}")
        .send()
        .await
        .is_err());
    // With one: works.
    let ident =
        reqwest::Identity::from_pem(format!("{}{}", cli.pem(), cli_key.serialize_pem()).as_bytes())
            .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca_cert)
        .identity(ident)
        .build()
        .unwrap();
    let r = client
        .put(&url)
        .header("X-Vault-Token", TOKEN)
        .body("{\"plaintext\":\"YQ==\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    stop.send(()).unwrap();
    h.await.unwrap().unwrap();

    // Bad files: clear errors naming the file.
    let bad = rootseal::TlsFiles {
        cert: p("missing.pem"),
        key: p("srv.key"),
        client_ca: None,
    };
    let err = rootseal::tls_config(&bad).unwrap_err().to_string();
    assert!(err.contains("missing.pem"), "{err}");
    // Bind errors name the address.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = rootseal::ListenerConfig {
        addr: busy.local_addr().unwrap(),
        tls: None,
        limits: rootseal::ConnLimits::default(),
    };
    let err = rootseal::serve(cfg, e.app.clone(), async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&busy.local_addr().unwrap().to_string()),
        "{err}"
    );
}

/// The real `bao` CLI against the server (skipped when `bao` is not installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bao_cli_smoke() {
    if std::process::Command::new("bao")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("bao not installed; skipping");
        return;
    }
    let e = env().await;
    let (addr, stop, h) = spawn_server(&e, None).await;
    let bao = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let addr = format!("http://{addr}");
        async move {
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new("bao")
                    .args(&args)
                    .env("BAO_ADDR", addr)
                    .env("BAO_TOKEN", TOKEN)
                    .env_remove("VAULT_TOKEN")
                    .output()
                    .unwrap();
                (
                    out.status.success(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
            .await
            .unwrap()
        }
    };
    let (ok, out, err) = bao(&["write", "-f", "transit/keys/cli"]).await;
    assert!(ok, "{out}{err}");
    let (ok, ct, err) = bao(&[
        "write",
        "-field=ciphertext",
        "transit/encrypt/cli",
        &format!("plaintext={}", b64(b"hi bao")),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(ct.trim().starts_with("vault:v1:"), "{ct}");
    let (ok, pt, err) = bao(&[
        "write",
        "-field=plaintext",
        "transit/decrypt/cli",
        &format!("ciphertext={}", ct.trim()),
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(pt.trim(), b64(b"hi bao"));
    let (ok, out, err) = bao(&["read", "-format=json", "transit/keys/cli"]).await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["latest_version"], 1);
    assert_eq!(v["data"]["type"], "aes256-gcm96");
    let (ok, out, err) = bao(&["list", "-format=json", "transit/keys"]).await;
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!(["cli"]));
    let (ok, _, err) = bao(&["write", "-f", "transit/keys/cli/rotate"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = bao(&[
        "write",
        "transit/keys/cli/config",
        "min_decryption_version=2",
        "deletion_allowed=true",
    ])
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = bao(&[
        "write",
        "-field=plaintext",
        "transit/decrypt/cli",
        &format!("ciphertext={}", ct.trim()),
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("too old"), "{err}");
    let (ok, out, err) = bao(&[
        "write",
        "-format=json",
        "transit/datakey/plaintext/cli",
        "bits=512",
    ])
    .await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(unb64(v["data"]["plaintext"].as_str().unwrap()).len(), 64);
    let (ok, _, err) = bao(&["delete", "transit/keys/cli"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = bao(&[
        "write",
        "-field=ciphertext",
        "transit/encrypt/cli",
        "plaintext=%%%",
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("base64"), "{err}");
    stop.send(()).unwrap();
    h.await.unwrap().unwrap();
}

/// One transit encrypt on `sock`, as OpenBao's seal sends it: the status.
async fn encrypt_raw(sock: &mut tokio::net::TcpStream, addr: std::net::SocketAddr) -> u16 {
    raw_roundtrip(
        sock,
        addr,
        "/v1/transit/encrypt/autounseal",
        "{\"plaintext\":\"YQ==\"}".into(),
    )
    .await
    .0
}

/// A client that never finishes its request header is cut off after `HEADER_READ_TIMEOUT`, and
/// other clients are served meanwhile. An idle keep-alive connection is closed after the same
/// time (hyper applies the timeout to the wait for the next request); a new connection serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_is_cut_off_and_idle_connections_close() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let e = env().await;
    let (addr, stop, h) = spawn_server(&e, None).await;
    let limit = rootseal::HEADER_READ_TIMEOUT;

    // An idle keep-alive connection after one complete request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let s = encrypt_raw(&mut idle, addr).await;
    assert_eq!(s, 200);

    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    slow.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Served while the slow client holds its connection.
    let s = encrypt_raw(
        &mut tokio::net::TcpStream::connect(addr).await.unwrap(),
        addr,
    )
    .await;
    assert_eq!(s, 200);
    let mut rest = Vec::new();
    let r = tokio::time::timeout(limit + Duration::from_secs(10), slow.read_to_end(&mut rest))
        .await
        .expect("the slow connection was never closed");
    let waited = start.elapsed();
    assert!(
        waited >= limit - Duration::from_secs(1),
        "closed after {waited:?}"
    );
    // Closed, with at most an error response (never a 200).
    if r.is_ok() && !rest.is_empty() {
        let text = String::from_utf8_lossy(&rest);
        assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
    }

    // The idle connection was closed too; a new one serves.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the idle connection is still open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let s = encrypt_raw(
        &mut tokio::net::TcpStream::connect(addr).await.unwrap(),
        addr,
    )
    .await;
    assert_eq!(s, 200);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(40), h)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A request refused before its body was read (wrong token, bulk unseal under the wrong key)
/// still gets its answer: the server reads the rest of the body instead of resetting the
/// connection under a client that is still sending (which would see "broken pipe").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_with_a_large_body_gets_its_answer() {
    let e = env().await;
    let (addr, stop, h) = spawn_server(&e, None).await;
    let client = reqwest::Client::new();
    let big = vec![0x5au8; 8 << 20];
    for _ in 0..5 {
        let r = client
            .post(format!("http://{addr}/v1/transit/bulk-seal/k?mode=stream"))
            .header("X-Vault-Token", "wrong")
            .header("Content-Type", "application/octet-stream")
            .body(big.clone())
            .send()
            .await
            .expect("the answer was lost");
        assert_eq!(r.status().as_u16(), 403);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0], "permission denied");
    }
    // A bulk unseal stream whose header is garbage: answered 400 while the body still flows.
    for _ in 0..5 {
        let r = client
            .post(format!("http://{addr}/v1/transit/bulk-unseal/k"))
            .header("X-Vault-Token", TOKEN)
            .header("Content-Type", "application/octet-stream")
            .body(big.clone())
            .send()
            .await
            .expect("the answer was lost");
        assert_eq!(r.status().as_u16(), 400, "{:?}", r.text().await);
    }
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(40), h)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A buffer the test's tracing subscriber writes to.
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

/// An error answer writes one log line, at the edge: a 4xx one `warn`, a 5xx one `error` with
/// the detail, and nothing else at those levels.
#[tokio::test]
async fn an_error_is_logged_once_at_the_edge() {
    let buf = LogBuf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    // Global: HSM worker threads log too (nextest runs each test in its own process).
    tracing::subscriber::set_global_default(sub).unwrap();
    let e = env().await;
    let ct = encrypt(&e, "k", &b64(b"hello")).await;
    buf.take();

    let (s, _) = decrypt(&e, "k", &tamper(&ct)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let log = buf.take();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains("WARN") && log.contains("request refused"),
        "{log}"
    );

    // A KEK record that no longer verifies: a 500 with one error line naming the cause.
    std::fs::write(
        e._dir.path().join("keys").join("broken.kek"),
        b"not a record",
    )
    .unwrap();
    let (s, v) = call(
        &e,
        "PUT",
        "/v1/transit/encrypt/broken",
        Some(json!({"plaintext": b64(b"x")})),
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(v, json!({"errors": ["internal error"]}));
    let log = buf.take();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains("ERROR") && log.contains("request failed"),
        "{log}"
    );
    assert!(log.contains("detail="), "{log}");
}

/// `associated_data` in rootseal's own domain (the bulk batch-key AAD) is a 400 on encrypt,
/// decrypt and rewrap, single and batch: no client can forge or open a wrapped batch key.
#[tokio::test]
async fn reserved_associated_data_is_refused() {
    let e = env().await;
    let ct = encrypt(&e, "k", &b64(b"hello")).await;
    let forged = b64(b"rootseal:batch-key:v1:k:1");
    let want = "associated_data may not begin with \"rootseal:\" (reserved for rootseal's own use)";
    for (path, body) in [
        (
            "encrypt",
            json!({"plaintext": b64(&[7u8; 32]), "associated_data": forged}),
        ),
        (
            "decrypt",
            json!({"ciphertext": ct, "associated_data": forged}),
        ),
        (
            "rewrap",
            json!({"ciphertext": ct, "associated_data": forged}),
        ),
    ] {
        let (s, v) = call(
            &e,
            "PUT",
            &format!("/v1/transit/{path}/k"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v, json!({"errors": [want]}), "{path}");
        let (s, v) = call(
            &e,
            "PUT",
            &format!("/v1/transit/{path}/k"),
            Some(json!({"batch_input": [body]})),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} batch: {v}");
        assert_eq!(v["data"]["batch_results"][0]["error"], want, "{path} batch");
    }
    still_works(&e).await;
}
