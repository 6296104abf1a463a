//! `GET /v1/sys/health` costs the HSM nothing per request (issue 16, item 2): a flood runs a
//! bounded number of HSM checks, and a hung HSM is reported (503) within the health timeout
//! while every answer comes at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, StatusCode};
use rootseal::{app, ApiConfig};
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use tower::ServiceExt;

async fn health(router: &axum::Router) -> StatusCode {
    let req = Request::builder()
        .uri("/v1/sys/health")
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_flood_runs_a_bounded_number_of_hsm_checks() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    // What one check costs.
    let before = hsm.metrics().total();
    keyring.health().await.unwrap();
    let per_check = hsm.metrics().total() - before;
    assert!(per_check > 0);

    let router = app(keyring, SecretString::from("t"), ApiConfig::default());
    assert_eq!(health(&router).await, StatusCode::OK);
    let start_ops = hsm.metrics().total();
    let start = Instant::now();
    let mut answered = 0u32;
    while start.elapsed() < Duration::from_millis(2500) {
        let batch: Vec<_> = (0..200)
            .map(|_| {
                let r = router.clone();
                tokio::spawn(async move { health(&r).await })
            })
            .collect();
        for h in batch {
            assert_eq!(h.await.unwrap(), StatusCode::OK);
            answered += 1;
        }
    }
    let ops = hsm.metrics().total() - start_ops;
    // One check per second at most (plus the one in flight at the end).
    assert!(
        ops <= per_check * 4,
        "{answered} health requests cost {ops} HSM operations ({per_check} per check)"
    );
    assert!(answered > 1000, "only {answered} answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_hsm_is_reported_within_the_health_timeout_and_answers_stay_fast() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    let router = app(keyring, SecretString::from("t"), ApiConfig::default());
    assert_eq!(health(&router).await, StatusCode::OK);
    // Both workers hang, as a stopped HSM would.
    let stalls: Vec<_> = (0..2)
        .map(|_| {
            let h = hsm.clone();
            tokio::spawn(async move { h.testing_stall(Duration::from_secs(9)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let hung_at = Instant::now();
    let mut first_503 = None;
    while hung_at.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let s = health(&router).await;
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a health answer took {:?} while the HSM hangs",
            t.elapsed()
        );
        if s == StatusCode::SERVICE_UNAVAILABLE {
            first_503 = Some(hung_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = first_503.expect("health never reported the hung HSM");
    assert!(took < Duration::from_secs(6), "reported after {took:?}");
    for s in stalls {
        let _ = s.await;
    }
    // Back once the HSM answers again.
    let mut ok = false;
    for _ in 0..50 {
        if health(&router).await == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "health did not recover");
}
