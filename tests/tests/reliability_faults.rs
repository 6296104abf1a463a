//! HSM faults with real parts (issue 16, build item 5): SoftHSM2 behind a real `p11-kit server`,
//! reached through the p11-kit client module over a unix socket. A hung HSM (SIGSTOP) answers
//! HsmUnavailable (HTTP 503) within the job deadline and recovers on SIGCONT; a server killed
//! mid-batch and restarted: no hung request, no lost key, recovery without reopening rootseal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rootseal_hsm::{DecryptItem, EncryptItem, FileStore, Hsm, Keyring, KeyringError, Sealed};
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

// Not run by default yet: through p11-kit 0.25's RPC, the first decrypt fails with
// CKR_DEVICE_ERROR from a C_GetAttributeValue on rootseal's root-handle path (an attribute the
// RPC does not carry, to be found); until then `cargo nextest run --run-ignored all` shows it.
#[ignore = "p11-kit RPC: CKR_DEVICE_ERROR on a root attribute read (issue 16, open)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_killed_and_restarted_hsm_behind_p11_kit() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    // The key is made on SoftHSM2 directly (p11-kit 0.25's RPC answers CKR_DEVICE_ERROR to an
    // attribute read of key creation), then used over the socket.
    let ct = {
        let (direct, kd) = token.keyring(&dir.path().join("keys")).await;
        kd.create_key("k", Default::default()).await.unwrap();
        let ct = kd
            .encrypt("k", None, items(1), false)
            .await
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
        drop(kd);
        let _ = direct.shutdown(Instant::now() + Duration::from_secs(5));
        ct
    };
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
