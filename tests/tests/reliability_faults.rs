//! HSM faults with real parts (issue 16, build item 5): SoftHSM2 behind a real `p11-kit server`,
//! reached through the p11-kit client module over a unix socket. A hung HSM (SIGSTOP) answers
//! HsmUnavailable (HTTP 503) within the job deadline and recovers on SIGCONT; a server killed
//! mid-batch and restarted: no hung request, no lost key, recovery without reopening rootseal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rootseal_hsm::{
    Custody, DecryptItem, EncryptItem, FileStore, Hsm, InitOutcome, Keyring, KeyringError, Sealed,
};
use rootseal_testkit::{P11KitServer, TestToken};
use zeroize::Zeroizing;

const JOB_TIMEOUT: Duration = Duration::from_secs(6);

fn items(n: usize) -> Vec<EncryptItem> {
    (0..n)
        .map(|i| EncryptItem {
            plaintext: Zeroizing::new(format!("item {i}").into_bytes()),
            aad: Vec::new(),
        })
        .collect()
}

async fn decrypt(k: &Keyring, s: &Sealed) -> Result<Vec<u8>, KeyringError> {
    let mut r = k
        .decrypt(
            "k",
            vec![DecryptItem {
                sealed: s.clone(),
                aad: Vec::new(),
            }],
        )
        .await?;
    r.pop().unwrap().map(|p| p.to_vec())
}

async fn until_decrypts(k: &Keyring, s: &Sealed, within: Duration) {
    let t0 = Instant::now();
    loop {
        match decrypt(k, s).await {
            Ok(pt) => {
                assert_eq!(pt, b"item 0");
                return;
            }
            Err(e) => assert!(
                t0.elapsed() < within,
                "not recovered after {within:?}: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// SoftHSM2 behind a real p11-kit server: the key and the first ciphertext are made over the
// socket, then the HSM side is hung, resumed, killed mid-batch and restarted under the same
// Keyring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_killed_and_restarted_hsm_behind_p11_kit() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    // The root is made on SoftHSM2 directly: its L0 carries CKA_UNWRAP_TEMPLATE, an attribute
    // array that p11-kit's client module cannot take from rootseal (each C_GetFunctionList of
    // it is a new instance, which the raw call of hsm/raw.rs would use uninitialised).
    let out = token.init_root().await;
    assert!(matches!(out, InitOutcome::Created(_)), "{out:?}");
    let mut server = P11KitServer::start(&token);
    let mut cfg = server.config(&token);
    cfg.job_timeout = JOB_TIMEOUT;
    cfg.pool_size = 2;
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .unwrap()
        .unwrap();
    let store = Arc::new(FileStore::open(dir.path().join("keys")).unwrap());
    let k = Keyring::open(hsm.clone(), store).await.unwrap();
    // The custody check through the RPC (CKA_ALLOWED_MECHANISMS and CKA_UNWRAP_TEMPLATE tested
    // by enforcement, custody_enforced.rs) finds the root hardened.
    assert_eq!(
        k.custody().verdict(),
        Custody::Hardened,
        "{:?}",
        k.custody()
    );
    k.create_key("k", Default::default()).await.unwrap();
    let ct = k
        .encrypt("k", None, items(1), false)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(decrypt(&k, &ct).await.unwrap(), b"item 0");

    // Hung HSM: an answer (503-class) within the job deadline, never a hang.
    server.hang();
    let t0 = Instant::now();
    let r = decrypt(&k, &ct).await;
    assert!(matches!(r, Err(KeyringError::HsmUnavailable(_))), "{r:?}");
    assert!(
        t0.elapsed() < JOB_TIMEOUT + Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    server.resume();
    until_decrypts(&k, &ct, Duration::from_secs(30)).await;

    // Killed mid-batch: the batch answers (error or success) without hanging.
    let k2 = k.clone();
    let batch = tokio::spawn(async move { k2.encrypt("k", None, items(5000), false).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    server.kill();
    let answered = tokio::time::timeout(Duration::from_secs(60), batch).await;
    assert!(answered.is_ok(), "the batch hung after the HSM was killed");
    // While the HSM is away: HsmUnavailable, at once or within the deadline.
    let t0 = Instant::now();
    let r = decrypt(&k, &ct).await;
    assert!(matches!(r, Err(KeyringError::HsmUnavailable(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    // Back: the same Keyring recovers, and no key was lost.
    server.restart();
    until_decrypts(&k, &ct, Duration::from_secs(60)).await;
    let again = k.encrypt("k", None, items(300), false).await.unwrap();
    for (i, s) in again.into_iter().enumerate() {
        let s = s.unwrap();
        let pt = k
            .decrypt(
                "k",
                vec![DecryptItem {
                    sealed: s,
                    aad: Vec::new(),
                }],
            )
            .await
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(pt.as_slice(), format!("item {i}").as_bytes());
    }
}

// The custody check by enforcement can fail: a root made by rootseal 0.1.0 (untrusted, no
// mechanism restriction, no unwrap template) is weak through p11-kit too, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_root_is_weak_through_p11_kit_too() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    {
        let direct = token.open().await;
        rootseal_hsm::testing_init_previous_release_root(&direct, false)
            .await
            .unwrap();
        let _ = direct.shutdown(Instant::now() + Duration::from_secs(5));
    }
    let server = P11KitServer::start(&token);
    let cfg = server.config(&token);
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .unwrap()
        .unwrap();
    let store = Arc::new(FileStore::open(dir.path().join("keys")).unwrap());
    let k = Keyring::open(hsm, store).await.unwrap();
    let c = k.custody();
    assert_eq!(c.verdict(), Custody::Weak, "{c:?}");
    let failures = c.failures().join("\n");
    for want in [
        "L0 wraps with CKM_AES_KEY_WRAP",
        "L0 CKA_UNWRAP_TEMPLATE does not force Sensitive(true)",
        "L0 CKA_UNWRAP_TEMPLATE does not force WrapWithTrusted(true)",
        "L0 CKA_TRUSTED is false",
    ] {
        assert!(failures.contains(want), "{want:?} not in:\n{failures}");
    }
}
