//! The bulk endpoints against real SoftHSM2 through the real `Keyring` and the axum router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http_body_util::BodyExt;
use rootseal_bulk::{put_end, put_header, put_record, FrameDecoder, Kind};
use rootseal_hsm::{CreateOptions, KeyOp, Keyring};
use rootseal_testkit::TestToken;
use tower::ServiceExt;

use super::router;

fn app(keyring: Keyring) -> Router {
    Router::new()
        .nest("/v1/{mount}", router::<Keyring, Keyring>(128 << 20))
        .with_state(keyring)
}

async fn call(
    app: &Router,
    path: &str,
    ctype: &str,
    body: impl Into<Body>,
) -> (StatusCode, Result<Vec<u8>, String>) {
    let req = Request::post(path)
        .header("content-type", ctype)
        .body(body.into())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .map_err(|e| e.to_string());
    (status, body)
}

async fn json(
    app: &Router,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let (s, b) = call(app, path, "application/json", body.to_string()).await;
    (s, serde_json::from_slice(&b.unwrap()).unwrap())
}

fn items(n: usize, size: usize) -> serde_json::Value {
    let pt = STANDARD.encode(vec![0x5au8; size]);
    let v: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"plaintext": pt, "reference": i.to_string()}))
        .collect();
    serde_json::json!({ "batch_input": v })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_against_softhsm() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    keyring
        .create_key("bk", CreateOptions::default())
        .await
        .unwrap();
    keyring
        .create_key(
            "nobulk",
            CreateOptions {
                allowed_ops: Some(vec![KeyOp::Encrypt, KeyOp::Decrypt]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let app = app(keyring.clone());
    let m = || hsm.metrics().total();

    // Warm up (the L1 is unwrapped into the HSM worker's cache on first use).
    let (s, _) = json(&app, "/v1/transit/bulk-seal/bk", items(1, 16)).await;
    assert_eq!(s, StatusCode::OK);

    // A 2,000-item batch costs at most 2 HSM calls each way.
    // Each HSM worker unwraps (and MAC-checks) the L1 into its own session on first use, so a
    // batch that lands on a worker the warm-up did not reach costs that once more.
    let first_use = || hsm.metrics().get(rootseal_hsm::HsmOp::UnwrapKey);
    let u0 = first_use();
    let before = m();
    let (s, sealed) = json(&app, "/v1/transit/bulk-seal/bk", items(2000, 64)).await;
    assert_eq!(s, StatusCode::OK);
    let seal_calls = m() - before;
    let unwraps = first_use() - u0;
    assert!(unwraps <= 1, "one L1 unwrap per worker at most: {unwraps}");
    assert!(
        seal_calls <= 2 + 2 * unwraps,
        "bulk seal of 2000 items cost {seal_calls} HSM calls ({unwraps} first uses on a worker)"
    );
    let results = sealed["data"]["batch_results"].as_array().unwrap();
    assert_eq!(results.len(), 2000);
    assert_eq!(results[1999]["reference"], "1999");
    let cts: Vec<_> = results
        .iter()
        .map(|r| serde_json::json!({"ciphertext": r["ciphertext"]}))
        .collect();
    let before = m();
    let u0 = first_use();
    let (s, opened) = json(
        &app,
        "/v1/transit/bulk-unseal/bk",
        serde_json::json!({ "batch_input": cts }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let unseal_calls = m() - before;
    let unwraps = first_use() - u0;
    assert!(unwraps <= 1, "one L1 unwrap per worker at most: {unwraps}");
    assert!(
        unseal_calls <= 2 + 2 * unwraps,
        "bulk unseal of 2000 items cost {unseal_calls} HSM calls ({unwraps} first uses on a worker)"
    );
    assert_eq!(
        opened["data"]["batch_results"][5]["plaintext"],
        STANDARD.encode([0x5au8; 64])
    );

    // Per-item errors: a tampered item and a foreign item fail alone (400, transit's rule).
    let good = results[0]["ciphertext"].as_str().unwrap().to_owned();
    let mut raw = STANDARD.decode(&good[5..]).unwrap();
    let n = raw.len();
    raw[n - 3] ^= 4;
    let mut wrapped_tampered = STANDARD.decode(&good[5..]).unwrap();
    wrapped_tampered[10] ^= 1; // inside the wrapped batch key: the HSM refuses it
    let body = serde_json::json!({"batch_input": [
        {"ciphertext": good},
        {"ciphertext": format!("rsb1:{}", STANDARD.encode(&raw))},
        {"ciphertext": format!("rsb1:{}", STANDARD.encode(&wrapped_tampered))},
        {"ciphertext": "not a ciphertext"},
    ]});
    let (s, r) = json(&app, "/v1/transit/bulk-unseal/bk", body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let r = &r["data"]["batch_results"];
    assert!(r[0]["plaintext"].is_string());
    assert_eq!(r[1]["error"], "invalid ciphertext");
    assert_eq!(r[2]["error"], "invalid ciphertext");
    assert!(r[3]["error"].as_str().unwrap().contains("rsb1:"));

    // Request-level errors in Vault's envelope.
    for (path, body) in [
        (
            "/v1/transit/bulk-seal/bk",
            serde_json::json!({"batch_input": []}),
        ),
        ("/v1/transit/bulk-seal/missing", items(1, 1)),
        ("/v1/transit/bulk-seal/nobulk", items(1, 1)),
    ] {
        let (s, r) = json(&app, path, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {r}");
        assert!(r["errors"][0].is_string(), "{r}");
    }
    let (s, b) = call(
        &app,
        "/v1/transit/bulk-seal/bk",
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8(b.unwrap()).unwrap().contains("errors"));

    // 10,000 items of 4 KiB are accepted.
    let (s, r) = json(&app, "/v1/transit/bulk-seal/bk", items(10_000, 4096)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["data"]["batch_results"].as_array().unwrap().len(), 10_000);

    // Binary frames: seal, then pipe the response into unseal.
    let mut req = Vec::new();
    put_header(&mut req);
    for i in 0..500u32 {
        put_record(
            &mut req,
            Kind::Item,
            &[&0u32.to_be_bytes(), &i.to_be_bytes()],
        );
    }
    put_end(&mut req, 500);
    let before = m();
    let (s, sealed) = call(
        &app,
        "/v1/transit/bulk-seal/bk",
        "application/octet-stream",
        req,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let seal_calls = m() - before;
    assert!(seal_calls <= 2, "binary seal cost {seal_calls} HSM calls");
    let before = m();
    let (s, opened) = call(
        &app,
        "/v1/transit/bulk-unseal/bk",
        "application/octet-stream",
        sealed.unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let unseal_calls = m() - before;
    assert!(
        unseal_calls <= 2,
        "binary unseal cost {unseal_calls} HSM calls"
    );
    let mut d = FrameDecoder::new();
    d.push(&opened.unwrap());
    let mut plains = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        if f.kind == Kind::Plain {
            plains.push(f.body.to_vec());
        }
    }
    d.finish().unwrap();
    assert_eq!(plains.len(), 500);
    assert_eq!(plains[499], 499u32.to_be_bytes());

    // Object stream: round trip; a cut stream breaks the response instead of ending it cleanly.
    let object: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let (s, sealed) = call(
        &app,
        "/v1/transit/bulk-seal/bk?mode=stream&chunk_size=65536",
        "application/octet-stream",
        object.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let sealed = sealed.unwrap();
    let (s, opened) = call(
        &app,
        "/v1/transit/bulk-unseal/bk",
        "application/octet-stream",
        sealed.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(opened.unwrap(), object);
    let (_, cut) = call(
        &app,
        "/v1/transit/bulk-unseal/bk",
        "application/octet-stream",
        sealed[..sealed.len() - 10].to_vec(),
    )
    .await;
    assert!(cut.is_err(), "truncated stream must not end cleanly");
    let (s, r) = call(
        &app,
        "/v1/transit/bulk-unseal/bk",
        "application/octet-stream",
        b"XXXXjunk".to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r:?}");
}
