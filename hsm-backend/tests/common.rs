//! Shared fixtures for the SoftHSM2 tests: a fresh token, an opened HSM, an initialised root and a
//! keyring over a file store in a temporary directory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use rootseal_hsm::keyring::InitOutcome;
use rootseal_hsm::softhsm::TestToken;
use rootseal_hsm::store::FileStore;
use rootseal_hsm::{Hsm, Keyring};

pub struct Fixture {
    pub token: TestToken,
    pub hsm: Hsm,
    pub keyring: Keyring,
    pub store: Arc<FileStore>,
    pub dir: tempfile::TempDir,
}

pub async fn open_hsm(token: &TestToken) -> Hsm {
    let cfg = token.config();
    tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .unwrap()
        .unwrap()
}

pub async fn fixture_with(token: TestToken) -> Fixture {
    let hsm = open_hsm(&token).await;
    let out = Keyring::init_root(&hsm).await.unwrap();
    assert!(matches!(out, InitOutcome::Created(_)));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path().join("keys")).unwrap());
    let keyring = Keyring::open(hsm.clone(), store.clone()).await.unwrap();
    Fixture {
        token,
        hsm,
        keyring,
        store,
        dir,
    }
}

pub async fn fixture() -> Fixture {
    fixture_with(TestToken::new()).await
}
