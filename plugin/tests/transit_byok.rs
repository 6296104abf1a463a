//! Bring your own key (issue 15, item 6) with Vault's ciphertext format, built here by an
//! independent implementation (aws-lc: RSA-OAEP and KWP), unwrapped inside SoftHSM2: an imported
//! AES key's ciphertexts open with the original key outside rootseal, an imported HMAC key's tags
//! are recomputed outside it, and every bad input is a 400 in Vault's envelope.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
use aws_lc_rs::rsa::{
    OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use axum::body::Body;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rootseal::{app, ApiConfig};
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(router: &Router, method: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-vault-token", "t")
        .body(Body::from(body.to_string()))
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

fn spki_of(pem: &str) -> Vec<u8> {
    let b: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    B64.decode(b).unwrap()
}

/// Vault's import ciphertext of `target` under the wrapping key `spki`.
fn wrap_for_import(spki: &[u8], target: &[u8], sha256: bool) -> String {
    let ephemeral: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(3));
    let pk = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(spki).unwrap()).unwrap();
    let mut wrapped_eph = vec![0u8; pk.ciphertext_size()];
    let alg = if sha256 {
        &OAEP_SHA256_MGF1SHA256
    } else {
        &OAEP_SHA1_MGF1SHA1
    };
    let n = pk
        .encrypt(alg, &ephemeral, &mut wrapped_eph, None)
        .unwrap()
        .len();
    wrapped_eph.truncate(n);
    assert_eq!(wrapped_eph.len(), 512);
    let kek = AesKek::new(&AES_256, &ephemeral).unwrap();
    let mut wrapped_key = vec![0u8; target.len() + 16];
    let n = kek
        .wrap_with_padding(target, &mut wrapped_key)
        .unwrap()
        .len();
    wrapped_key.truncate(n);
    B64.encode([wrapped_eph, wrapped_key].concat())
}

fn open_vault_ciphertext(key: &[u8], ct: &str) -> Vec<u8> {
    let raw = B64.decode(ct.split(':').nth(2).unwrap()).unwrap();
    let alg = if key.len() == 16 {
        &AES_128_GCM
    } else {
        &AES_256_GCM
    };
    let k = LessSafeKey::new(UnboundKey::new(alg, key).unwrap());
    let (nonce, body) = raw.split_at(12);
    let mut body = body.to_vec();
    let pt = k
        .open_in_place(
            Nonce::try_assume_unique_for_key(nonce).unwrap(),
            Aad::empty(),
            &mut body,
        )
        .expect("the ciphertext opens with the imported key outside rootseal");
    pt.to_vec()
}

#[tokio::test]
async fn byok_imports_symmetric_keys_inside_the_hsm() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    let r = app(keyring, SecretString::from("t"), ApiConfig::default());

    // Before any wrapping key exists an import says what to do.
    let (s, v) = call(
        &r,
        "POST",
        "/v1/transit/keys/early/import",
        &json!({"ciphertext": B64.encode([0u8; 600]), "hash_function": "SHA1"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let (s, v) = call(&r, "GET", "/v1/transit/wrapping_key", &Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let pem = v["data"]["public_key"].as_str().unwrap().to_owned();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let (_, v2) = call(&r, "GET", "/v1/transit/wrapping_key", &Value::Null).await;
    assert_eq!(v2["data"]["public_key"], pem, "one wrapping key, made once");
    let spki = spki_of(&pem);

    for (kt, len) in [("aes256-gcm96", 32usize), ("aes128-gcm96", 16)] {
        let name = format!("byok-{kt}");
        let key: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
        let body = json!({"ciphertext": wrap_for_import(&spki, &key, false), "hash_function": "SHA1", "type": kt});
        let (s, v) = call(
            &r,
            "POST",
            &format!("/v1/transit/keys/{name}/import"),
            &body,
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{kt}: {v}");
        let (_, k) = call(&r, "GET", &format!("/v1/transit/keys/{name}"), &Value::Null).await;
        assert_eq!(k["data"]["imported_key"], true, "{k}");
        assert_eq!(k["data"]["type"], kt);
        let (s, e) = call(
            &r,
            "POST",
            &format!("/v1/transit/encrypt/{name}"),
            &json!({"plaintext": B64.encode(b"byok works")}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{e}");
        let ct = e["data"]["ciphertext"].as_str().unwrap();
        assert_eq!(open_vault_ciphertext(&key, ct), b"byok works");

        // A second import on the same name is Vault's refusal; import_version adds version 2.
        let (s, v) = call(
            &r,
            "POST",
            &format!("/v1/transit/keys/{name}/import"),
            &body,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["errors"][0]
                .as_str()
                .unwrap()
                .contains("use import-version"),
            "{v}"
        );
        let key2: Vec<u8> = (0..len).map(|i| (i * 29 + 5) as u8).collect();
        let (s, v) = call(
            &r,
            "POST",
            &format!("/v1/transit/keys/{name}/import_version"),
            &json!({"ciphertext": wrap_for_import(&spki, &key2, false), "hash_function": "sha1"}),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
        let (_, e) = call(
            &r,
            "POST",
            &format!("/v1/transit/encrypt/{name}"),
            &json!({"plaintext": B64.encode(b"v2")}),
        )
        .await;
        let ct2 = e["data"]["ciphertext"].as_str().unwrap();
        assert!(ct2.starts_with("vault:v2:"), "{ct2}");
        assert_eq!(open_vault_ciphertext(&key2, ct2), b"v2");
        let (s, d) = call(
            &r,
            "POST",
            &format!("/v1/transit/decrypt/{name}"),
            &json!({"ciphertext": ct}),
        )
        .await;
        assert_eq!(
            (s, d["data"]["plaintext"].as_str()),
            (StatusCode::OK, Some(B64.encode(b"byok works").as_str()))
        );
        // The wrong length for the type is refused.
        let short = json!({"ciphertext": wrap_for_import(&spki, &key[..8], false), "hash_function": "SHA1"});
        let (s, v) = call(
            &r,
            "POST",
            &format!("/v1/transit/keys/{name}/import_version"),
            &short,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }

    // HMAC: the tag is recomputed outside rootseal with the key that was imported.
    let mac_key: Vec<u8> = (0..32).map(|i| (255 - i) as u8).collect();
    let (s, v) = call(&r, "POST", "/v1/transit/keys/byok-mac/import", &json!({"ciphertext": wrap_for_import(&spki, &mac_key, false), "hash_function": "SHA1", "type": "hmac"})).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, h) = call(
        &r,
        "POST",
        "/v1/transit/hmac/byok-mac/sha2-256",
        &json!({"input": B64.encode(b"tag me")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &mac_key),
        b"tag me",
    );
    assert_eq!(
        h["data"]["hmac"],
        format!("vault:v1:{}", B64.encode(tag.as_ref()))
    );

    // Bad input: each a 400 in the envelope, nothing created.
    let good = wrap_for_import(&spki, &[7u8; 32], false);
    let mut tampered = B64.decode(&good).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut tampered_rsa = B64.decode(&good).unwrap();
    tampered_rsa[10] ^= 1;
    let cases = [
        (
            json!({"ciphertext": good, "hash_function": "SHA256"}),
            "SHA-1",
        ),
        (
            json!({"ciphertext": wrap_for_import(&spki, &[7u8; 32], true)}),
            "SHA-1",
        ),
        (
            json!({"ciphertext": good, "hash_function": "MD5"}),
            "unknown hash function",
        ),
        (
            json!({"ciphertext": B64.encode(tampered), "hash_function": "SHA1"}),
            "does not unwrap",
        ),
        (
            json!({"ciphertext": B64.encode(tampered_rsa), "hash_function": "SHA1"}),
            "does not unwrap",
        ),
        (
            json!({"ciphertext": B64.encode([1u8; 100]), "hash_function": "SHA1"}),
            "too short",
        ),
        (
            json!({"ciphertext": "%%%", "hash_function": "SHA1"}),
            "base64",
        ),
        (json!({"hash_function": "SHA1"}), "missing ciphertext"),
        (
            json!({"ciphertext": good, "hash_function": "SHA1", "type": "ed25519"}),
            "not supported",
        ),
        (
            json!({"ciphertext": good, "hash_function": "SHA1", "type": "rot13"}),
            "unknown key type",
        ),
        (
            json!({"ciphertext": good, "hash_function": "SHA1", "exportable": true}),
            "not supported",
        ),
        (
            json!({"ciphertext": good, "hash_function": "SHA1", "convergent_encryption": true}),
            "convergent",
        ),
        (
            json!({"public_key": "-----BEGIN PUBLIC KEY-----", "hash_function": "SHA1"}),
            "public_key",
        ),
        (
            json!({"ciphertext": good, "hash_function": "SHA1", "auto_rotate_period": "2h"}),
            "allow_rotation",
        ),
    ];
    for (body, want) in cases {
        let (s, v) = call(&r, "POST", "/v1/transit/keys/refused/import", &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        let msg = v["errors"][0].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{body}: {v}");
    }
    let (s, _) = call(&r, "GET", "/v1/transit/keys/refused", &Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // import_version needs an imported key.
    let (_, _) = call(&r, "POST", "/v1/transit/keys/generated", &json!({})).await;
    let (s, v) = call(
        &r,
        "POST",
        "/v1/transit/keys/generated/import_version",
        &json!({"ciphertext": good, "hash_function": "SHA1"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("only be used with an imported key"),
        "{v}"
    );
    let (s, v) = call(
        &r,
        "POST",
        "/v1/transit/keys/absent/import_version",
        &json!({"ciphertext": good, "hash_function": "SHA1"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, k) = call(&r, "GET", "/v1/transit/keys/generated", &Value::Null).await;
    assert_eq!(k["data"]["imported_key"], false);
}
