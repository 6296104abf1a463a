//! Module lifecycle and the L1 cache under concurrency (issue 16, build item 3), on real
//! SoftHSM2: a module is re-initialised only when no thread of any `Hsm` is inside it, the other
//! `Hsm`s on it re-open their sessions, and no worker uses an L1 object another worker's session
//! owns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use rootseal_hsm::{DecryptItem, EncryptItem, FileStore, Hsm, HsmOp, Keyring};
use rootseal_testkit::TestToken;
use zeroize::Zeroizing;

fn items(n: usize) -> Vec<EncryptItem> {
    (0..n)
        .map(|i| EncryptItem {
            plaintext: Zeroizing::new(format!("item {i}").into_bytes()),
            aad: Vec::new(),
        })
        .collect()
}

async fn round_trip(k: &Keyring, n: usize) {
    let sealed = k.encrypt("k", None, items(n), false).await.unwrap();
    let back = k
        .decrypt(
            "k",
            sealed
                .into_iter()
                .map(|s| DecryptItem {
                    sealed: s.unwrap(),
                    aad: Vec::new(),
                })
                .collect(),
        )
        .await
        .unwrap();
    for (i, pt) in back.into_iter().enumerate() {
        assert_eq!(pt.unwrap().as_slice(), format!("item {i}").as_bytes());
    }
}

async fn open_with(token: &TestToken, pool: usize) -> Hsm {
    let mut cfg = token.config();
    cfg.pool_size = pool;
    cfg.job_timeout = Duration::from_secs(20);
    tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .unwrap()
        .unwrap()
}

/// Two `Hsm`s on one module: a re-initialisation started by one waits while the other is
/// inside the module (mid-job), then happens, and the other carries on with new sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinit_waits_for_another_hsm_mid_job_and_both_recover() {
    let token = TestToken::new();
    token.init_root().await;
    let a = open_with(&token, 2).await;
    let b = open_with(&token, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path().join("keys")).unwrap());
    let kb = Keyring::open(b.clone(), store).await.unwrap();
    kb.create_key("k", Default::default()).await.unwrap();
    round_trip(&kb, 10).await;
    let sessions_before = b.metrics().get(HsmOp::OpenSession);

    // b is inside the module, in a call that does not return until the test says so.
    let (release, until) = std::sync::mpsc::channel::<()>();
    let stalled = {
        let b = b.clone();
        tokio::spawn(async move { b.testing_stall_until(until).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a2 = a.clone();
    let reinit = std::thread::spawn(move || a2.testing_recover_module());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !reinit.is_finished(),
        "the module was re-initialised while another Hsm's worker was inside it"
    );
    release.send(()).unwrap();
    stalled.await.unwrap().unwrap();
    let t0 = std::time::Instant::now();
    while !reinit.is_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the re-initialisation never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reinit.join().unwrap().unwrap();

    // b was told: its workers re-open their sessions on the new generation and work.
    round_trip(&kb, 300).await;
    assert!(b.metrics().get(HsmOp::OpenSession) > sessions_before);
    a.health().await.unwrap();

    // Re-initialisations from a while b runs batches: every item round-trips.
    let kb2 = kb.clone();
    let load = tokio::spawn(async move {
        for _ in 0..20 {
            round_trip(&kb2, 300).await;
        }
    });
    for _ in 0..5 {
        let a2 = a.clone();
        tokio::task::spawn_blocking(move || a2.testing_recover_module())
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.await.unwrap();
    a.health().await.unwrap();
}

/// A worker never uses the L1 object another worker unwrapped (that object dies with its
/// owner's session, possibly under the other worker's call): each worker unwraps the key itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_uses_only_its_own_l1_objects() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = open_with(&token, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path().join("keys")).unwrap());
    let k = Keyring::open(hsm.clone(), store).await.unwrap();

    // Worker X is held; everything below runs on worker Y.
    let (release_x, until_x) = std::sync::mpsc::channel::<()>();
    let x = {
        let h = hsm.clone();
        tokio::spawn(async move { h.testing_stall_until(until_x).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    k.create_key("k", Default::default()).await.unwrap();
    round_trip(&k, 5).await;
    // Now hold Y and free X: the next encrypt runs on X.
    let (release_y, until_y) = std::sync::mpsc::channel::<()>();
    let y = {
        let h = hsm.clone();
        tokio::spawn(async move { h.testing_stall_until(until_y).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    release_x.send(()).unwrap();
    x.await.unwrap().unwrap();
    let unwraps = hsm.metrics().get(HsmOp::UnwrapKey);
    round_trip(&k, 5).await;
    assert_eq!(
        hsm.metrics().get(HsmOp::UnwrapKey),
        unwraps + 1,
        "worker X used worker Y's L1 object instead of its own"
    );
    // X has its own now: no further unwrap.
    round_trip(&k, 5).await;
    assert_eq!(hsm.metrics().get(HsmOp::UnwrapKey), unwraps + 1);
    release_y.send(()).unwrap();
    y.await.unwrap().unwrap();
    round_trip(&k, 50).await;
}
