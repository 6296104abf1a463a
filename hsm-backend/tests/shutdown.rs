//! Letting go of the HSM on the way out, against real SoftHSM2: a pool closes its sessions and
//! finalises the module within a deadline; a call that never returns does not hold the caller
//! past the deadline and keeps the module from being finalised under it; the process-wide
//! release refuses every later open.
//!
//! One test function: [`rootseal_hsm::Hsm::shutdown_all`] is for good in a process (nextest runs
//! each test binary's test in its own process).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use rootseal_hsm::{Error, Hsm, HsmRelease};
use rootseal_testkit::TestToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_finalises_and_never_outwaits_its_deadline() {
    let token = TestToken::new();

    // A stuck call: shutdown answers at its deadline, the module stays initialised. One worker,
    // so that a second call waits in the queue behind the stuck one.
    let mut cfg = token.config();
    cfg.pool_size = 1;
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .unwrap()
        .unwrap();
    hsm.health().await.unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let stalled = tokio::spawn({
        let hsm = hsm.clone();
        async move { hsm.testing_stall_until(release_rx).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = tokio::spawn({
        let hsm = hsm.clone();
        async move { hsm.health().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let hsm2 = hsm.clone();
    let out = tokio::task::spawn_blocking(move || {
        hsm2.shutdown(Instant::now() + Duration::from_millis(300))
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    assert!(
        matches!(out, HsmRelease::Stuck { threads } if threads >= 1),
        "{out:?}"
    );
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert!(
        hsm.testing_module_loaded(),
        "the module was finalised under a running call"
    );
    assert!(matches!(hsm.health().await, Err(Error::PoolClosed)));
    // The queued call was answered at once, not left waiting for the stuck one.
    let queued = tokio::time::timeout(Duration::from_secs(1), queued)
        .await
        .expect("a queued call waits for a stuck one after shutdown")
        .unwrap();
    assert!(matches!(queued, Err(Error::PoolClosed)), "{queued:?}");

    // The stuck call returns: the second shutdown is clean and finalises the module.
    drop(release_tx);
    assert!(stalled.await.unwrap().is_ok());
    let hsm2 = hsm.clone();
    let out =
        tokio::task::spawn_blocking(move || hsm2.shutdown(Instant::now() + Duration::from_secs(5)))
            .await
            .unwrap();
    assert_eq!(out, HsmRelease::Clean);
    assert!(!hsm.testing_module_loaded(), "module not finalised");

    // A pool opened after that loads the module again and works.
    let again = token.open().await;
    again.health().await.unwrap();
    assert!(again.testing_module_loaded());

    // The process lets go of everything: clean, finalised, and nobody opens the HSM any more.
    let out =
        tokio::task::spawn_blocking(|| Hsm::shutdown_all(Instant::now() + Duration::from_secs(5)))
            .await
            .unwrap();
    assert_eq!(out, HsmRelease::Clean);
    assert!(!again.testing_module_loaded());
    assert!(matches!(again.health().await, Err(Error::PoolClosed)));
    let cfg = token.config();
    let refused = tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .unwrap();
    assert!(matches!(refused, Err(Error::PoolClosed)), "{refused:?}");
}
