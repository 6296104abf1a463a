//! The keyring against real SoftHSM2: hierarchy, encryption, versions, tampering, wrong HSM,
//! recovery, root rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use rootseal_testkit::Fixture;

use std::time::Duration;

use rootseal_hsm::HsmOp;
use rootseal_hsm::KekStore;
use rootseal_hsm::Keyring;
use rootseal_hsm::KeyringError;
use rootseal_hsm::{CreateOptions, DecryptItem, EncryptItem, KeyConfigUpdate, KeyOp, Sealed};
use zeroize::Zeroizing;

fn item(p: &[u8], aad: &[u8]) -> EncryptItem {
    EncryptItem {
        plaintext: Zeroizing::new(p.to_vec()),
        aad: aad.to_vec(),
    }
}

async fn enc(k: &Keyring, name: &str, p: &[u8]) -> Sealed {
    k.encrypt(name, None, vec![item(p, b"")], true)
        .await
        .unwrap()
        .remove(0)
        .unwrap()
}

async fn dec(k: &Keyring, name: &str, s: &Sealed, aad: &[u8]) -> Result<Vec<u8>, KeyringError> {
    k.decrypt(
        name,
        vec![DecryptItem {
            sealed: s.clone(),
            aad: aad.to_vec(),
        }],
    )
    .await?
    .remove(0)
    .map(|z| z.to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypt_decrypt_versions_and_policy() {
    let f = Fixture::new().await;
    let k = &f.keyring;
    let c1 = enc(k, "app", b"hello").await;
    assert_eq!(c1.version, 1);
    assert_eq!(c1.bytes.len(), 12 + 5 + 16);
    assert_eq!(dec(k, "app", &c1, b"").await.unwrap(), b"hello");
    // Same plaintext twice: different IVs.
    let c1b = enc(k, "app", b"hello").await;
    assert_ne!(c1.bytes, c1b.bytes);
    // AAD is bound.
    let ca = k
        .encrypt("app", None, vec![item(b"x", b"ctx")], false)
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(dec(k, "app", &ca, b"ctx").await.unwrap(), b"x");
    assert!(matches!(
        dec(k, "app", &ca, b"other").await,
        Err(KeyringError::InvalidCiphertext)
    ));
    // Tampering any byte fails, opaquely.
    for i in [0, 12, c1.bytes.len() - 1] {
        let mut t = c1.clone();
        t.bytes[i] ^= 0x01;
        assert!(
            matches!(
                dec(k, "app", &t, b"").await,
                Err(KeyringError::InvalidCiphertext)
            ),
            "byte {i}"
        );
    }
    let mut short = c1.clone();
    short.bytes.truncate(10);
    assert!(matches!(
        dec(k, "app", &short, b"").await,
        Err(KeyringError::InvalidCiphertext)
    ));
    // Rotation: new ciphertexts use v2, v1 keeps decrypting.
    let info = k.rotate_key("app").await.unwrap();
    assert_eq!(info.latest_version, 2);
    let c2 = enc(k, "app", b"two").await;
    assert_eq!(c2.version, 2);
    assert_eq!(dec(k, "app", &c1, b"").await.unwrap(), b"hello");
    // A v1 ciphertext claimed as v2 fails.
    let mut wrongv = c1.clone();
    wrongv.version = 2;
    assert!(matches!(
        dec(k, "app", &wrongv, b"").await,
        Err(KeyringError::InvalidCiphertext)
    ));
    let mut unknown = c1.clone();
    unknown.version = 9;
    assert!(matches!(
        dec(k, "app", &unknown, b"").await,
        Err(KeyringError::InvalidCiphertext)
    ));
    // min_decryption_version retires v1.
    k.update_key_config(
        "app",
        KeyConfigUpdate {
            min_decryption_version: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        dec(k, "app", &c1, b"").await,
        Err(KeyringError::VersionTooOld)
    ));
    assert_eq!(dec(k, "app", &c2, b"").await.unwrap(), b"two");
    // Explicit versions.
    assert!(matches!(
        k.encrypt("app", Some(3), vec![item(b"x", b"")], false)
            .await,
        Err(KeyringError::InvalidRequest(_))
    ));
    assert!(matches!(
        k.update_key_config(
            "app",
            KeyConfigUpdate {
                min_decryption_version: Some(7),
                ..Default::default()
            }
        )
        .await,
        Err(KeyringError::InvalidRequest(_))
    ));
    // Deletion only when allowed.
    assert!(matches!(
        k.delete_key("app").await,
        Err(KeyringError::DeletionNotAllowed)
    ));
    k.update_key_config(
        "app",
        KeyConfigUpdate {
            deletion_allowed: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    k.delete_key("app").await.unwrap();
    assert!(matches!(
        k.key_info("app").await,
        Err(KeyringError::NotFound)
    ));
    assert!(matches!(
        k.encrypt("app", None, vec![item(b"x", b"")], false).await,
        Err(KeyringError::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_operations_are_enforced() {
    let f = Fixture::new().await;
    let k = &f.keyring;
    k.create_key(
        "enc-only",
        CreateOptions {
            allowed_ops: Some(vec![KeyOp::Encrypt]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let c = enc(k, "enc-only", b"x").await;
    assert!(matches!(
        dec(k, "enc-only", &c, b"").await,
        Err(KeyringError::PolicyDenied("decrypt"))
    ));
    assert!(matches!(
        k.generate_data_key("enc-only", 32, None).await,
        Err(KeyringError::PolicyDenied(_))
    ));
    assert!(matches!(
        k.new_batch_key("enc-only").await,
        Err(KeyringError::PolicyDenied(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_record_or_blob_is_refused_and_other_keys_keep_working() {
    let f = Fixture::new().await;
    let k = &f.keyring;
    let good = enc(k, "good", b"g").await;
    enc(k, "victim", b"v").await;
    let path = f.dir.path().join("keys/victim.kek");
    let original = std::fs::read(&path).unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    // 1. Lower a config value (min_decryption_version) without the HSM: record MAC fails.
    let tampered = text.replace("\"deletion_allowed\":false", "\"deletion_allowed\":true");
    assert_ne!(tampered, text);
    std::fs::write(&path, tampered).unwrap();
    let fresh = Keyring::open(f.hsm.clone(), f.store.clone()).await.unwrap();
    assert!(matches!(
        fresh.key_info("victim").await,
        Err(KeyringError::Integrity(_))
    ));
    assert!(matches!(
        fresh.delete_key("victim").await,
        Err(KeyringError::Integrity(_))
    ));
    // 2. A newer record format: named error, nothing guessed.
    // (Version 3 is this release's format, with key lifecycle; 4 is from the future.)
    let newer = text.replace("\"format_version\":3", "\"format_version\":4");
    std::fs::write(&path, newer).unwrap();
    let fresh = Keyring::open(f.hsm.clone(), f.store.clone()).await.unwrap();
    assert!(matches!(
        fresh.key_info("victim").await,
        Err(KeyringError::UnsupportedFormat(4))
    ));
    // 3. Not a record at all.
    f.store.delete("victim").await.unwrap();
    f.store
        .put("victim", b"{\"hello\":1}".to_vec(), 0)
        .await
        .unwrap();
    let fresh = Keyring::open(f.hsm.clone(), f.store.clone()).await.unwrap();
    assert!(matches!(
        fresh.key_info("victim").await,
        Err(KeyringError::Integrity(_))
    ));
    // Other keys are unaffected.
    assert_eq!(dec(&fresh, "good", &good, b"").await.unwrap(), b"g");
}

#[tokio::test(flavor = "multi_thread")]
async fn sealed_blob_bytes_are_bound_by_the_hsm_mac() {
    use base64::Engine as _;
    let f = Fixture::new().await;
    let k = &f.keyring;
    enc(k, "k", b"x").await;
    let raw = f.store.get("k").await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw.data).unwrap();
    let blob_b64 = v["versions"][0]["blob"].as_str().unwrap().to_owned();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(&blob_b64)
        .unwrap();
    // Flip each byte of the sealed blob in turn (every 7th, to keep the test fast), re-MAC the
    // record honestly is impossible without the HSM, so here we test the blob MAC alone by
    // building a keyring state through the public path: the record MAC catches the change first.
    let mut refused = 0;
    for i in (0..blob.len()).step_by(7) {
        let mut b = blob.clone();
        b[i] ^= 0x40;
        let mut v2 = v.clone();
        v2["versions"][0]["blob"] = base64::engine::general_purpose::STANDARD.encode(&b).into();
        f.store.delete("k").await.unwrap();
        f.store
            .put("k", serde_json::to_vec(&v2).unwrap(), 0)
            .await
            .unwrap();
        let fresh = Keyring::open(f.hsm.clone(), f.store.clone()).await.unwrap();
        let r = fresh.encrypt("k", None, vec![item(b"x", b"")], false).await;
        assert!(
            r.is_err(),
            "byte {i} of the blob changed and the key still worked"
        );
        refused += 1;
    }
    assert!(refused > 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_from_another_hsm_is_refused_with_the_mismatch_logged() {
    // Both tokens exist before the module loads (SoftHSM2 reads its token directory at init).
    let a = rootseal_testkit::TestToken::new();
    let b = rootseal_testkit::TestToken::new();
    let fa = Fixture::with_token(a).await;
    let fb = Fixture::with_token(b).await;
    let ca = enc(&fa.keyring, "shared-name", b"from-a").await;
    enc(&fb.keyring, "own", b"b").await;
    // Copy A's record into B's store.
    let rec = fa.store.get("shared-name").await.unwrap().unwrap();
    fb.store.put("shared-name", rec.data, 0).await.unwrap();
    let r = dec(&fb.keyring, "shared-name", &ca, b"").await;
    assert!(matches!(r, Err(KeyringError::Integrity(_))), "{r:?}");
    // B's own keys keep working, and A still decrypts.
    let cb = enc(&fb.keyring, "own", b"b2").await;
    assert_eq!(dec(&fb.keyring, "own", &cb, b"").await.unwrap(), b"b2");
    assert_eq!(
        dec(&fa.keyring, "shared-name", &ca, b"").await.unwrap(),
        b"from-a"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn data_keys_and_batch_keys() {
    let f = Fixture::new().await;
    let k = &f.keyring;
    k.create_key("dk", CreateOptions::default()).await.unwrap();
    for len in [16, 32, 64] {
        let (pt, sealed) = k.generate_data_key("dk", len, None).await.unwrap();
        assert_eq!(pt.len(), len);
        assert_eq!(dec(k, "dk", &sealed, b"").await.unwrap(), pt.to_vec());
    }
    // `key_version` is honoured (the issue's one wrong answer: v1 was asked, the latest used).
    k.rotate_key("dk").await.unwrap();
    let (pt, sealed) = k.generate_data_key("dk", 32, Some(1)).await.unwrap();
    assert_eq!(sealed.version, 1);
    assert_eq!(dec(k, "dk", &sealed, b"").await.unwrap(), pt.to_vec());
    assert_eq!(
        k.generate_data_key("dk", 32, None).await.unwrap().1.version,
        2
    );
    assert!(matches!(
        k.generate_data_key("dk", 32, Some(3)).await,
        Err(KeyringError::InvalidRequest(_))
    ));
    // `datakeys`: `count` distinct keys, one HSM job, each under the asked version.
    let many = k.generate_data_keys("dk", 16, Some(1), 5).await.unwrap();
    assert_eq!(many.len(), 5);
    for (pt, sealed) in &many {
        assert_eq!(sealed.version, 1);
        assert_eq!(dec(k, "dk", sealed, b"").await.unwrap(), pt.to_vec());
    }
    assert_ne!(many[0].0, many[1].0);
    for bad in [0, 1001] {
        assert!(matches!(
            k.generate_data_keys("dk", 16, None, bad).await,
            Err(KeyringError::InvalidRequest(_))
        ));
    }
    let bk = k.new_batch_key("dk").await.unwrap();
    let opened = k
        .open_batch_key("dk", bk.version, &bk.wrapped)
        .await
        .unwrap();
    assert_eq!(*opened, *bk.key);
    let mut t = bk.wrapped.clone();
    t[20] ^= 1;
    assert!(matches!(
        k.open_batch_key("dk", bk.version, &t).await,
        Err(KeyringError::InvalidCiphertext)
    ));
    // A batch key is bound to its key name: it does not open as a transit ciphertext's plaintext
    // under the same key without the batch-key AAD.
    let as_transit = Sealed {
        version: bk.version,
        bytes: bk.wrapped.clone(),
    };
    assert!(matches!(
        dec(k, "dk", &as_transit, b"").await,
        Err(KeyringError::InvalidCiphertext)
    ));
    // With the L1 cached, a batch key costs at most 2 HSM calls (the random pool refills 4 KiB
    // per call). Each worker unwraps and MAC-checks the L1 into its own session on its first use
    // (per-worker L1 objects), which happens once per worker.
    let mut first_uses = 0;
    for _ in 0..600 {
        let before = f.hsm.metrics().total();
        let unwraps = f.hsm.metrics().get(rootseal_hsm::HsmOp::UnwrapKey);
        let _ = k.new_batch_key("dk").await.unwrap();
        let u = f.hsm.metrics().get(rootseal_hsm::HsmOp::UnwrapKey) - unwraps;
        first_uses += u;
        let used = f.hsm.metrics().total() - before;
        assert!(
            used <= 2 + 2 * u,
            "batch key used {used} HSM calls ({u} first uses)"
        );
    }
    assert!(
        first_uses <= 2,
        "one L1 unwrap per worker at most: {first_uses}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_requests_share_the_pool() {
    let f = Fixture::new().await;
    let k = f.keyring.clone();
    k.create_key("c", CreateOptions::default()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let p = i.to_be_bytes();
            let s = enc(&k, "c", &p).await;
            assert_eq!(dec(&k, "c", &s, b"").await.unwrap(), p);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // One unwrap per worker session at most, then cached.
    assert!(f.hsm.metrics().get(HsmOp::UnwrapKey) <= 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_sessions_and_lost_device_are_recovered() {
    let f = Fixture::new().await;
    let k = &f.keyring;
    let c = enc(k, "r", b"data").await;
    f.hsm.testing_invalidate_sessions();
    assert_eq!(dec(k, "r", &c, b"").await.unwrap(), b"data");
    let m = f.hsm.metrics();
    assert!(m.session_recoveries() + m.device_recoveries() >= 1);
    let before = m.device_recoveries();
    f.hsm.testing_finalize_module();
    assert_eq!(dec(k, "r", &c, b"").await.unwrap(), b"data");
    assert!(f.hsm.metrics().device_recoveries() > before);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_gone_is_unavailable_then_recovers_when_back() {
    let f = Fixture::new().await;
    let k = &f.keyring;
    let c = enc(k, "g", b"data").await;
    let tokens = f.token.dir.tokens.clone();
    let away = tokens.with_file_name("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    f.hsm.testing_finalize_module();
    let r = dec(k, "g", &c, b"").await;
    assert!(matches!(r, Err(KeyringError::HsmUnavailable(_))), "{r:?}");
    std::fs::rename(&away, &tokens).unwrap();
    assert_eq!(dec(k, "g", &c, b"").await.unwrap(), b"data");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_pin_fails_once_without_retrying() {
    let t = rootseal_testkit::TestToken::new();
    let mut cfg = t.config();
    cfg.pin = secrecy::SecretString::from("not-the-pin".to_owned());
    let r = tokio::task::spawn_blocking(move || rootseal_hsm::Hsm::open(cfg))
        .await
        .unwrap();
    assert!(
        matches!(r, Err(rootseal_hsm::Error::PinIncorrect(_))),
        "{r:?}"
    );
    // The right PIN still works: no lockout from a retry loop.
    let _ok = t.open().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_rotation_reseals_everything_and_destroys_the_old_root() {
    let Fixture {
        token,
        hsm,
        keyring: k,
        store,
        dir: _dir,
    } = Fixture::new().await;
    let mut cts = Vec::new();
    for name in ["a", "b", "c"] {
        cts.push((name, enc(&k, name, name.as_bytes()).await));
    }
    k.rotate_key("b").await.unwrap();
    cts.push(("b", enc(&k, "b", b"b2").await));
    let old = rootseal_hsm::root_status(&hsm).await.unwrap().roots[0].id;
    // The Security Officer step needs this process logged out as User.
    drop((k, hsm));
    let grace = Duration::from_millis(10);
    let report = rootseal_hsm::rotate_root(&token.config(), &token.so_pin(), store.clone(), grace)
        .await
        .unwrap();
    assert_eq!(report.resealed, 3);
    assert_eq!(report.old_roots, vec![old.to_hex()]);
    assert!(
        report.destroyed && report.unreachable.is_empty(),
        "{report:?}"
    );
    let hsm = token.open().await;
    let status = rootseal_hsm::root_status(&hsm).await.unwrap();
    assert_eq!(status.roots.len(), 1);
    assert_ne!(status.roots[0].id, old);
    assert_eq!(status.roots[0].role, rootseal_hsm::RootRole::Current);
    assert_eq!(status.custody.verdict(), rootseal_hsm::Custody::Hardened);
    // A fresh keyring (no caches) reads everything under the new root.
    let fresh = Keyring::open(hsm.clone(), store.clone()).await.unwrap();
    for (name, c) in &cts {
        assert!(
            dec(&fresh, name, c, b"").await.is_ok(),
            "{name} v{}",
            c.version
        );
    }
    // Running it again rotates again, and loses nothing either.
    drop((fresh, hsm));
    let again = rootseal_hsm::rotate_root(&token.config(), &token.so_pin(), store.clone(), grace)
        .await
        .unwrap();
    assert_eq!(again.resealed, 3);
    let hsm = token.open().await;
    let fresh = Keyring::open(hsm, store).await.unwrap();
    for (name, c) in &cts {
        assert!(dec(&fresh, name, c, b"").await.is_ok(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_needs_an_answering_hsm_with_a_complete_root() {
    let f = Fixture::new().await;
    f.keyring.health().await.unwrap();
    let tokens = f.token.dir.tokens.clone();
    let away = tokens.with_file_name("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    f.hsm.testing_finalize_module();
    assert!(matches!(
        f.keyring.health().await,
        Err(KeyringError::HsmUnavailable(_))
    ));
    std::fs::rename(&away, &tokens).unwrap();
    f.keyring.health().await.unwrap();
}

/// A token absent when the HSM is opened is reported as `TokenNotFound`; once it is back, a new
/// `Hsm::open` in the same process finds it (the module is initialised again to see it).
#[tokio::test(flavor = "multi_thread")]
async fn a_token_absent_at_open_is_found_once_it_is_back() {
    let t = rootseal_testkit::TestToken::new();
    let tokens = t.dir.tokens.clone();
    let away = tokens.with_file_name("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let cfg = t.config();
    let r = tokio::task::spawn_blocking(move || rootseal_hsm::Hsm::open(cfg))
        .await
        .unwrap();
    assert!(
        matches!(r, Err(rootseal_hsm::Error::TokenNotFound(_))),
        "{r:?}"
    );
    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    let _ok = t.open().await;
}
