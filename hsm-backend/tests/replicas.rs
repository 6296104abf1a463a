//! Two keyrings on one store, as two replicas of rootseal would be (issue 16, item 4): a key
//! deleted and re-created by one (its store version starts at 1 again) is never served from the
//! other's cache under the old L1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use rootseal_hsm::{DecryptItem, EncryptItem, FileStore, KeyConfigUpdate, Keyring};
use rootseal_testkit::TestToken;
use zeroize::Zeroizing;

async fn encrypt(k: &Keyring, pt: &[u8]) -> rootseal_hsm::Sealed {
    let item = EncryptItem {
        plaintext: Zeroizing::new(pt.to_vec()),
        aad: Vec::new(),
    };
    k.encrypt("k", None, vec![item], false)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_and_recreated_elsewhere_is_not_served_from_a_stale_cache() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (hsm, a) = token.keyring(dir.path()).await;
    let b = Keyring::open(hsm.clone(), Arc::new(FileStore::open(dir.path()).unwrap()))
        .await
        .unwrap();
    a.create_key("k", Default::default()).await.unwrap();
    a.update_key_config(
        "k",
        KeyConfigUpdate {
            deletion_allowed: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // B serves k (and caches it).
    let _ = encrypt(&b, b"old").await;

    // A deletes k and makes a new k: the store version starts at 1 again, and after one rotation
    // it is where B's cached copy was (2).
    a.delete_key("k").await.unwrap();
    a.create_key("k", Default::default()).await.unwrap();
    a.rotate_key("k").await.unwrap();

    // After B's refresh interval, B must use the new key, never the deleted one's L1.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let ct = encrypt(&b, b"new").await;
    let pt = a
        .decrypt(
            "k",
            vec![DecryptItem {
                sealed: ct,
                aad: Vec::new(),
            }],
        )
        .await
        .unwrap()
        .pop()
        .unwrap()
        .expect("B encrypted under the deleted key");
    assert_eq!(pt.as_slice(), b"new");
}
