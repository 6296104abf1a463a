//! Usage limits (issue 13, item 5; NIST SP 800-38D §8.3) against real SoftHSM2: each version
//! counts its AES-GCM encryptions in blocks reserved in its record, rotates at the limit (and
//! encrypt goes on under the new version), the count survives a restart, and is never below the
//! encryptions made.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use rootseal_hsm::{
    Clock, CreateOptions, DecryptItem, EncryptItem, FileStore, KekStore, Keyring, KeyringError,
    KeyringOptions, LifecyclePolicy, Refusal, Sealed, UsagePolicy,
};
use rootseal_testkit::TestToken;
use zeroize::Zeroizing;

const T0: u64 = 1_800_000_000;

async fn open(hsm: &rootseal_hsm::Hsm, dir: &std::path::Path, limit: u64, block: u64) -> Keyring {
    Keyring::open_with(
        hsm.clone(),
        Arc::new(FileStore::open(dir).unwrap()),
        KeyringOptions {
            clock: Clock::testing_manual(T0),
            lifecycle: LifecyclePolicy {
                usage: UsagePolicy::new(limit, block).unwrap(),
                ..Default::default()
            },
        },
    )
    .await
    .unwrap()
}

fn items(n: usize) -> Vec<EncryptItem> {
    (0..n)
        .map(|i| EncryptItem {
            plaintext: Zeroizing::new(format!("secret {i}").into_bytes()),
            aad: Vec::new(),
        })
        .collect()
}

async fn enc(k: &Keyring, n: usize, version: Option<u32>) -> Result<Vec<Sealed>, KeyringError> {
    k.encrypt("k", version, items(n), false)
        .await?
        .into_iter()
        .collect()
}

/// `uses_reserved` of each version, read from the stored record (what survives the process).
async fn stored_counts(dir: &std::path::Path) -> Vec<(u64, u64)> {
    let store = FileStore::open(dir).unwrap();
    let rec: serde_json::Value =
        serde_json::from_slice(&store.get("k").await.unwrap().unwrap().data).unwrap();
    rec["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["uses_reserved"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_usage_limit_rotates_the_key_and_encrypt_goes_on() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let k = open(&hsm, dir.path(), 30, 10).await;
    k.create_key("k", CreateOptions::default()).await.unwrap();

    // 35 encryptions one by one: 30 under v1, then the key rotates and the rest use v2.
    let mut made = Vec::new();
    for _ in 0..35 {
        made.extend(enc(&k, 1, None).await.unwrap());
    }
    let under = |v: u32| made.iter().filter(|s| s.version == v).count();
    assert_eq!(under(1), 30, "the limit is exact");
    assert_eq!(under(2), 5);
    let info = k.key_info("k").await.unwrap();
    assert_eq!(info.latest_version, 2, "rotated once at the limit");
    assert_eq!(info.lifecycle[&1].encryptions, 30);
    assert!(info.lifecycle[&2].encryptions >= 5);
    // v1 decrypts still; naming it for encryption is refused by name, as a 400.
    let d = DecryptItem {
        sealed: made[0].clone(),
        aad: Vec::new(),
    };
    let pt = k
        .decrypt("k", vec![d])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(&pt[..], b"secret 0");
    match enc(&k, 1, Some(1)).await {
        Err(KeyringError::Lifecycle(r)) => {
            assert_eq!((r.version, r.reason), (1, Refusal::UsageLimit));
            assert!(r.to_string().contains("usage limit"), "{r}");
        }
        other => panic!("expected the usage-limit refusal, got {other:?}"),
    }
    // A batch larger than what is left of v2 goes to v3 whole.
    let batch = enc(&k, 28, None).await.unwrap();
    assert!(
        batch.iter().all(|s| s.version == 3),
        "{:?}",
        batch[0].version
    );
    assert_eq!(k.key_info("k").await.unwrap().latest_version, 3);
    // Never more than the limit reserved for a version.
    for (v, n) in stored_counts(dir.path()).await {
        assert!(n <= 30, "v{v} reserved {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_a_restart_and_are_never_under_counted() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let k = open(&hsm, dir.path(), 1000, 10).await;
    k.create_key("k", CreateOptions::default()).await.unwrap();
    assert_eq!(stored_counts(dir.path()).await, vec![(1, 0)]);

    // 3 encryptions: one block of 10 is reserved in the record before the first.
    enc(&k, 3, None).await.unwrap();
    assert_eq!(stored_counts(dir.path()).await, vec![(1, 10)]);
    // Within the block: no write.
    enc(&k, 7, None).await.unwrap();
    assert_eq!(stored_counts(dir.path()).await, vec![(1, 10)]);
    // The 11th needs a new block.
    enc(&k, 1, None).await.unwrap();
    assert_eq!(stored_counts(dir.path()).await, vec![(1, 20)]);
    let mut made = 11;

    // A restart (or a crash: the process holds nothing the record does not) loses the unspent
    // part of its block and starts from the record: the count never goes down.
    drop(k);
    let k = open(&hsm, dir.path(), 1000, 10).await;
    enc(&k, 1, None).await.unwrap();
    made += 1;
    assert_eq!(stored_counts(dir.path()).await, vec![(1, 30)]);

    // Two replicas on one store add up their reservations; every encryption is covered.
    let other = open(&hsm, dir.path(), 1000, 10).await;
    for _ in 0..5 {
        enc(&k, 4, None).await.unwrap();
        enc(&other, 3, None).await.unwrap();
        made += 7;
    }
    // Data keys, rewrap's encrypt half and bulk batch keys count too (one use each).
    k.generate_data_keys("k", 32, None, 5).await.unwrap();
    let bk = other.new_batch_key("k").await.unwrap();
    assert_eq!(bk.version, 1);
    let ct = enc(&k, 1, None).await.unwrap().pop().unwrap();
    k.rewrap(
        "k",
        None,
        vec![DecryptItem {
            sealed: ct,
            aad: Vec::new(),
        }],
    )
    .await
    .unwrap();
    made += 5 + 1 + 1 + 1;
    let reserved = stored_counts(dir.path()).await[0].1;
    assert!(reserved >= made, "reserved {reserved} < made {made}");
    // At most one block per process (two live, two gone) beyond what was made.
    assert!(
        reserved <= made + 4 * 10,
        "reserved {reserved}, made {made}"
    );
    assert_eq!(k.key_info("k").await.unwrap().latest_version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_of_one_counts_every_encryption_exactly() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let k = open(&hsm, dir.path(), 8, 1).await;
    k.create_key("k", CreateOptions::default()).await.unwrap();
    // Concurrent requests never spend a use twice nor skip one.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let k = k.clone();
        tasks.push(tokio::spawn(async move { enc(&k, 1, None).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(stored_counts(dir.path()).await, vec![(1, 6)]);
    // Hmac and signing keys do not count (no AES-GCM).
    let hmac = CreateOptions {
        key_type: rootseal_hsm::KeyType::Hmac,
        ..Default::default()
    };
    k.create_key("h", hmac).await.unwrap();
    k.hmac(
        "h",
        None,
        rootseal_hsm::HashAlg::Sha256,
        vec![b"x".to_vec()],
    )
    .await
    .unwrap();
    assert_eq!(k.key_info("h").await.unwrap().lifecycle[&1].encryptions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_at_the_limit_rotate_exactly_once() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let a = open(&hsm, dir.path(), 20, 5).await;
    let b = open(&hsm, dir.path(), 20, 5).await;
    a.create_key("k", CreateOptions::default()).await.unwrap();
    let mut made = Vec::new();
    for _ in 0..15 {
        made.extend(enc(&a, 1, None).await.unwrap());
        made.extend(enc(&b, 1, None).await.unwrap());
    }
    let v1 = made.iter().filter(|s| s.version == 1).count();
    assert!(v1 <= 20, "v1 made {v1} encryptions, over its limit");
    assert!(v1 >= 20 - 5, "at most one block per replica unspent: {v1}");
    assert_eq!(a.key_info("k").await.unwrap().latest_version, 2);
    let counts = stored_counts(dir.path()).await;
    assert_eq!(counts.len(), 2, "exactly one rotation: {counts:?}");
    assert!(counts[0].1 <= 20);
    // Every ciphertext opens, whichever replica made it.
    for s in &made {
        let d = DecryptItem {
            sealed: s.clone(),
            aad: Vec::new(),
        };
        b.decrypt("k", vec![d])
            .await
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
    }
}
