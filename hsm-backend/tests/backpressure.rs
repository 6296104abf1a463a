//! Back-pressure on the HSM job queue, against real SoftHSM2 (issue 16, item 2): a full queue
//! refuses at once (`Overloaded`), a job that waits past the job timeout answers `HsmUnavailable`
//! and never runs, and a job whose caller has gone away is dropped before it costs the HSM
//! anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rootseal_hsm::{EncryptItem, FileStore, Hsm, HsmOp, Keyring, KeyringError};
use rootseal_testkit::TestToken;
use zeroize::Zeroizing;

async fn one_worker(
    token: &TestToken,
    queue_limit: usize,
    job_timeout: Duration,
) -> (Hsm, Keyring, tempfile::TempDir) {
    token.init_root().await;
    let mut cfg = token.config();
    cfg.pool_size = 1;
    cfg.queue_limit = queue_limit;
    cfg.job_timeout = job_timeout;
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let keyring = Keyring::open(hsm.clone(), Arc::new(store)).await.unwrap();
    keyring.create_key("k", Default::default()).await.unwrap();
    // Load the key (its L1) so that later encrypts are one HSM job each.
    encrypt(&keyring).await.unwrap();
    (hsm, keyring, dir)
}

async fn encrypt(k: &Keyring) -> Result<(), KeyringError> {
    let item = EncryptItem {
        plaintext: Zeroizing::new(b"x".to_vec()),
        aad: Vec::new(),
    };
    k.encrypt("k", None, vec![item], false)
        .await?
        .pop()
        .unwrap()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once() {
    let token = TestToken::new();
    let (hsm, keyring, _dir) = one_worker(&token, 2, Duration::from_secs(30)).await;
    let stall = tokio::spawn({
        let hsm = hsm.clone();
        async move { hsm.testing_stall(Duration::from_secs(2)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Two wait in the queue ...
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let k = keyring.clone();
            tokio::spawn(async move { encrypt(&k).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... the third is refused at once, not queued.
    let t = Instant::now();
    let r = encrypt(&keyring).await;
    assert!(matches!(r, Err(KeyringError::Overloaded)), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "refused after {:?}",
        t.elapsed()
    );
    assert_eq!(hsm.metrics().jobs_refused(), 1);
    // The queued ones run once the worker is free.
    stall.await.unwrap().unwrap();
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    encrypt(&keyring).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_deadline_answers_unavailable_and_never_runs() {
    let token = TestToken::new();
    let (hsm, keyring, _dir) = one_worker(&token, 16, Duration::from_millis(500)).await;
    let before = hsm.metrics().get(HsmOp::Encrypt);
    let stall = tokio::spawn({
        let hsm = hsm.clone();
        async move { hsm.testing_stall(Duration::from_secs(2)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let r = encrypt(&keyring).await;
    assert!(matches!(r, Err(KeyringError::HsmUnavailable(_))), "{r:?}");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(1500),
        "answered after {waited:?}"
    );
    // The stall's own caller gave up at the deadline too, while the "HSM call" hangs on.
    let r = stall.await.unwrap();
    assert!(matches!(r, Err(rootseal_hsm::Error::Deadline(_))), "{r:?}");
    // Once the hung call returns, the timed-out job is dropped, not run.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(hsm.metrics().get(HsmOp::Encrypt), before);
    encrypt(&keyring).await.unwrap();
    assert_eq!(hsm.metrics().get(HsmOp::Encrypt), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_caller_went_away_is_not_run() {
    let token = TestToken::new();
    let (hsm, keyring, _dir) = one_worker(&token, 16, Duration::from_secs(30)).await;
    let before = hsm.metrics().get(HsmOp::Encrypt);
    let stall = tokio::spawn({
        let hsm = hsm.clone();
        async move { hsm.testing_stall(Duration::from_secs(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Ten callers queue and go away (their client disconnected).
    for _ in 0..10 {
        let k = keyring.clone();
        let h = tokio::spawn(async move { encrypt(&k).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        h.abort();
    }
    stall.await.unwrap().unwrap();
    encrypt(&keyring).await.unwrap();
    assert_eq!(hsm.metrics().get(HsmOp::Encrypt), before + 1);
}
