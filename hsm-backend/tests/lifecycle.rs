//! Key lifecycle (issue 13, NIST SP 800-57) against real SoftHSM2, time moved by the injected
//! clock (never by sleeping): encrypt refused after protect-stop while decrypt works, decrypt
//! refused after deactivation, the upgrade of a record of the previous format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use rootseal_hsm::{
    Clock, CreateOptions, DecryptItem, EncryptItem, FileStore, KekStore, KeyConfigUpdate, Keyring,
    KeyringError, KeyringOptions, LifecycleClass, LifecycleState, Refusal, Sealed,
    DEFAULT_OUP_SECS, DEFAULT_RUP_SECS, MAX_OUP_SECS,
};
use rootseal_testkit::TestToken;
use zeroize::Zeroizing;

const T0: u64 = 1_800_000_000;

async fn setup() -> (TestToken, tempfile::TempDir, Clock, Keyring) {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::testing_manual(T0);
    let k = open(&hsm, dir.path(), &clock).await;
    (token, dir, clock, k)
}

async fn open(hsm: &rootseal_hsm::Hsm, dir: &std::path::Path, clock: &Clock) -> Keyring {
    Keyring::open_with(
        hsm.clone(),
        Arc::new(FileStore::open(dir).unwrap()),
        KeyringOptions {
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn enc(k: &Keyring, version: Option<u32>) -> Result<Sealed, KeyringError> {
    let item = EncryptItem {
        plaintext: Zeroizing::new(b"secret".to_vec()),
        aad: Vec::new(),
    };
    k.encrypt("k", version, vec![item], false)
        .await?
        .pop()
        .unwrap()
}

async fn dec(k: &Keyring, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
    let item = DecryptItem {
        sealed: sealed.clone(),
        aad: Vec::new(),
    };
    k.decrypt("k", vec![item]).await?.pop().unwrap()
}

fn refusal(r: Result<impl std::fmt::Debug, KeyringError>) -> (u32, Refusal, String) {
    match r {
        Err(KeyringError::Lifecycle(l)) => (l.version, l.reason, l.to_string()),
        other => panic!("expected a lifecycle refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_stops_at_protect_stop_and_decrypt_at_deactivation() {
    let (_t, _d, clock, k) = setup().await;
    let info = k.create_key("k", CreateOptions::default()).await.unwrap();
    let v1 = info.lifecycle[&1];
    assert_eq!(v1.state, LifecycleState::Active);
    assert_eq!(v1.activation_time, T0);
    assert_eq!(v1.protect_stop_time, T0 + DEFAULT_OUP_SECS);
    assert_eq!(v1.deactivation_time, T0 + DEFAULT_RUP_SECS);
    let ct = enc(&k, None).await.unwrap();

    // One second before protect-stop: still encrypts.
    clock.testing_advance(DEFAULT_OUP_SECS - 1);
    enc(&k, None).await.unwrap();
    // At protect-stop: encrypt, data keys and bulk seal are refused; decrypt works.
    clock.testing_advance(1);
    let (v, reason, msg) = refusal(enc(&k, None).await);
    assert_eq!((v, reason), (1, Refusal::PastProtectStop));
    assert!(
        msg.starts_with("key version 1 is past its protect-stop"),
        "{msg}"
    );
    refusal(k.generate_data_key("k", 32, None).await);
    refusal(k.new_batch_key("k").await);
    assert_eq!(&dec(&k, &ct).await.unwrap()[..], b"secret");

    // A rotation gives a new active version: encrypt works again (with it), and rewrap moves the
    // old ciphertext onto it.
    k.rotate_key("k").await.unwrap();
    let ct2 = enc(&k, None).await.unwrap();
    assert_eq!(ct2.version, 2);
    refusal(enc(&k, Some(1)).await);
    let rewrapped = k
        .rewrap(
            "k",
            None,
            vec![DecryptItem {
                sealed: ct.clone(),
                aad: Vec::new(),
            }],
        )
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(rewrapped.version, 2);

    // At version 1's deactivation: its ciphertexts are refused by name, version 2's still open.
    clock.testing_advance(DEFAULT_RUP_SECS - DEFAULT_OUP_SECS);
    let (v, reason, msg) = refusal(dec(&k, &ct).await);
    assert_eq!(
        (v, reason),
        (1, Refusal::State(LifecycleState::Deactivated))
    );
    assert_eq!(msg, "key version 1 is deactivated");
    assert_eq!(&dec(&k, &rewrapped).await.unwrap()[..], b"secret");
    let info = k.key_info("k").await.unwrap();
    assert_eq!(info.lifecycle[&1].state, LifecycleState::Deactivated);
    assert_eq!(info.lifecycle[&2].state, LifecycleState::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_periods_are_bounded_by_the_standard() {
    let (_t, _d, clock, k) = setup().await;
    let too_long = CreateOptions {
        originator_usage_period_secs: MAX_OUP_SECS + 1,
        ..Default::default()
    };
    match k.create_key("k", too_long).await {
        Err(KeyringError::InvalidRequest(m)) => assert!(m.contains("§5.3.6"), "{m}"),
        other => panic!("{other:?}"),
    }
    let short = CreateOptions {
        lifecycle_class: Some(LifecycleClass::SealKek),
        originator_usage_period_secs: 3600,
        ..Default::default()
    };
    let info = k.create_key("k", short).await.unwrap();
    assert_eq!(info.lifecycle_class, LifecycleClass::SealKek);
    assert_eq!(info.lifecycle[&1].protect_stop_time, T0 + 3600);
    clock.testing_advance(3600);
    refusal(enc(&k, None).await);
    // The config path refuses the same bound, and changes apply to new versions.
    let bad = KeyConfigUpdate {
        recipient_usage_period_secs: Some(MAX_OUP_SECS * 10),
        ..Default::default()
    };
    assert!(matches!(
        k.update_key_config("k", bad).await,
        Err(KeyringError::InvalidRequest(_))
    ));
    let longer = KeyConfigUpdate {
        originator_usage_period_secs: Some(7200),
        ..Default::default()
    };
    let info = k.update_key_config("k", longer).await.unwrap();
    assert_eq!(info.originator_usage_period_secs, 7200);
    assert_eq!(info.lifecycle[&1].protect_stop_time, T0 + 3600);
    let info = k.rotate_key("k").await.unwrap();
    assert_eq!(info.lifecycle[&2].protect_stop_time, T0 + 3600 + 7200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_the_previous_format_is_read_and_upgraded_on_the_next_write() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::testing_manual(T0);
    let k = open(&hsm, dir.path(), &clock).await;
    k.create_key("k", CreateOptions::default()).await.unwrap();
    let ct = enc(&k, None).await.unwrap();
    k.testing_store_previous_format("k").await.unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let raw = || async {
        let r = store.get("k").await.unwrap().unwrap();
        serde_json::from_slice::<serde_json::Value>(&r.data).unwrap()
    };
    let stored = raw().await;
    assert_eq!(stored["format_version"], 1, "{stored}");
    assert!(stored["versions"][0].get("lifecycle").is_none());

    // Another keyring (no cache) reads it: MAC verified, dates derived from creation time.
    clock.testing_advance(10);
    let fresh = open(&hsm, dir.path(), &clock).await;
    let info = fresh.key_info("k").await.unwrap();
    assert_eq!(info.lifecycle[&1].activation_time, T0);
    assert_eq!(info.lifecycle[&1].protect_stop_time, T0 + DEFAULT_OUP_SECS);
    assert_eq!(&dec(&fresh, &ct).await.unwrap()[..], b"secret");
    assert_eq!(raw().await["format_version"], 1, "a read does not rewrite");

    // The next write is format 3, with the derived dates recorded, MAC-checked by a third
    // keyring.
    fresh.rotate_key("k").await.unwrap();
    let stored = raw().await;
    assert_eq!(stored["format_version"], 3, "{stored}");
    assert_eq!(stored["versions"][0]["lifecycle"]["activation"], T0);
    assert_eq!(stored["versions"][0]["lifecycle"]["state"], "active");
    assert_eq!(stored["versions"][1]["lifecycle"]["activation"], T0 + 10);
    let third = open(&hsm, dir.path(), &clock).await;
    assert_eq!(&dec(&third, &ct).await.unwrap()[..], b"secret");
    assert_eq!(third.key_info("k").await.unwrap().latest_version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rotate_period_rotates_once_after_an_hour_and_once_with_two_replicas() {
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::testing_manual(T0);
    let a = open(&hsm, dir.path(), &clock).await;
    let b = open(&hsm, dir.path(), &clock).await;
    a.create_key(
        "k",
        CreateOptions {
            auto_rotate_period_secs: 3600,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    a.create_key("still", CreateOptions::default())
        .await
        .unwrap();

    // Not before the hour.
    clock.testing_advance(3599);
    assert!(a.rotate_due().await.unwrap().is_empty());
    assert!(b.rotate_due().await.unwrap().is_empty());

    // At the hour, both replicas run their pass at once: exactly one rotation.
    clock.testing_advance(1);
    let (ra, rb) = tokio::join!(a.rotate_due(), b.rotate_due());
    let mut all = ra.unwrap();
    all.extend(rb.unwrap());
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].name, "k");
    assert_eq!(all[0].version, 2);
    assert_eq!(
        all[0].reason,
        rootseal_hsm::RotationReason::AutoRotatePeriod
    );
    assert_eq!(a.key_info("k").await.unwrap().latest_version, 2);
    assert_eq!(b.key_info("k").await.unwrap().latest_version, 2);
    // Another pass in the same hour does nothing; the key without a period is untouched.
    assert!(a.rotate_due().await.unwrap().is_empty());
    assert!(b.rotate_due().await.unwrap().is_empty());
    assert_eq!(a.key_info("still").await.unwrap().latest_version, 1);

    // The next hour: once more.
    clock.testing_advance(3600);
    let (ra, rb) = tokio::join!(a.rotate_due(), b.rotate_due());
    assert_eq!(ra.unwrap().len() + rb.unwrap().len(), 1);
    assert_eq!(a.key_info("k").await.unwrap().latest_version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_is_rotated_lead_time_ahead_of_its_protect_stop() {
    let (_t, _d, clock, k) = setup().await;
    k.create_key("k", CreateOptions::default()).await.unwrap();
    let lead = rootseal_hsm::DEFAULT_LEAD_TIME_SECS;
    clock.testing_advance(DEFAULT_OUP_SECS - lead - 1);
    assert!(k.rotate_due().await.unwrap().is_empty());
    clock.testing_advance(1);
    let r = k.rotate_due().await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].reason, rootseal_hsm::RotationReason::ProtectStopAhead);
    // The new version encrypts past the old one's protect-stop.
    clock.testing_advance(lead);
    assert_eq!(enc(&k, None).await.unwrap().version, 2);
    assert!(k.rotate_due().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_destroys_the_versions_below_min_available_version() {
    let (_t, dir, _clock, k) = setup().await;
    k.create_key("k", CreateOptions::default()).await.unwrap();
    let ct1 = enc(&k, None).await.unwrap();
    k.rotate_key("k").await.unwrap();
    k.rotate_key("k").await.unwrap();
    let ct3 = enc(&k, None).await.unwrap();
    // Vault's rules.
    for bad in [0, 2] {
        assert!(
            matches!(
                k.trim_key("k", bad).await,
                Err(KeyringError::InvalidRequest(_))
            ),
            "trim to {bad}"
        );
    }
    let upd = KeyConfigUpdate {
        min_decryption_version: Some(2),
        ..Default::default()
    };
    k.update_key_config("k", upd).await.unwrap();
    let info = k.trim_key("k", 2).await.unwrap();
    assert_eq!(info.min_available_version, 2);
    assert_eq!(
        info.versions.keys().copied().collect::<Vec<_>>(),
        vec![2, 3]
    );
    // The blob is gone from the store, and the version's ciphertexts are refused by name.
    let store = FileStore::open(dir.path()).unwrap();
    let stored: serde_json::Value =
        serde_json::from_slice(&store.get("k").await.unwrap().unwrap().data).unwrap();
    assert_eq!(stored["versions"].as_array().unwrap().len(), 2, "{stored}");
    assert_eq!(stored["config"]["min_available_version"], 2);
    let (v, reason, msg) = refusal(dec(&k, &ct1).await);
    assert_eq!((v, reason), (1, Refusal::State(LifecycleState::Destroyed)));
    assert_eq!(msg, "key version 1 is destroyed");
    let fresh = open_again(&k, dir.path()).await;
    refusal(dec(&fresh, &ct1).await);
    assert_eq!(&dec(&fresh, &ct3).await.unwrap()[..], b"secret");
    assert!(matches!(
        k.trim_key("k", 1).await,
        Err(KeyringError::InvalidRequest(_))
    ));
    // Rotation continues after the trimmed versions.
    assert_eq!(k.rotate_key("k").await.unwrap().latest_version, 4);
}

async fn open_again(k: &Keyring, dir: &std::path::Path) -> Keyring {
    open(k.hsm(), dir, k.clock()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_advances_min_decryption_version() {
    let (_t, _d, clock, k) = setup().await;
    k.create_key("k", CreateOptions::default()).await.unwrap();
    clock.testing_advance(DEFAULT_OUP_SECS);
    k.rotate_key("k").await.unwrap();
    assert!(k.advance_min_decryption("k").await.unwrap().is_none());
    // Version 1's deactivation: a pass raises min_decryption_version to 2, once.
    clock.testing_advance(DEFAULT_RUP_SECS - DEFAULT_OUP_SECS);
    k.rotate_due().await.unwrap();
    assert_eq!(k.key_info("k").await.unwrap().min_decryption_version, 2);
    assert!(k.advance_min_decryption("k").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_version_never_encrypts_nor_decrypts_and_the_key_rotates() {
    let (_t, dir, clock, k) = setup().await;
    k.create_key("k", CreateOptions::default()).await.unwrap();
    let ct = enc(&k, None).await.unwrap();
    clock.testing_advance(5);
    let info = k.compromise_version("k", 1).await.unwrap();
    assert_eq!(
        info.latest_version, 2,
        "compromising the latest version rotates"
    );
    assert_eq!(info.lifecycle[&1].state, LifecycleState::Compromised);
    assert_eq!(info.lifecycle[&1].compromise_time, Some(T0 + 5));
    let (v, reason, msg) = refusal(dec(&k, &ct).await);
    assert_eq!(
        (v, reason),
        (1, Refusal::State(LifecycleState::Compromised))
    );
    assert_eq!(msg, "key version 1 is compromised");
    refusal(enc(&k, Some(1)).await);
    assert_eq!(enc(&k, None).await.unwrap().version, 2);
    // Recorded under the MAC: another keyring sees it; marking again changes nothing.
    let fresh = open(k.hsm(), dir.path(), &clock).await;
    refusal(dec(&fresh, &ct).await);
    assert_eq!(
        fresh
            .compromise_version("k", 1)
            .await
            .unwrap()
            .latest_version,
        2
    );
    assert!(matches!(
        k.compromise_version("k", 9).await,
        Err(KeyringError::InvalidRequest(_))
    ));
}

/// An upgrade never stops a working key at once: a version of a previous-format record made
/// five years before lifecycle enforcement began still encrypts and decrypts right after the
/// upgrade, and its cryptoperiod runs from 2026-12-03 (one full OUP, then rotation as usual).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_key_of_the_previous_format_keeps_working_after_the_upgrade() {
    const EPOCH: u64 = 1_796_256_000; // 2026-12-03T00:00:00Z
    let made = EPOCH - 5 * 365 * 86_400;
    let token = TestToken::new();
    token.init_root().await;
    let hsm = token.open().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::testing_manual(made);
    let k = open(&hsm, dir.path(), &clock).await;
    k.create_key("k", CreateOptions::default()).await.unwrap();
    let ct = {
        let items = vec![EncryptItem {
            plaintext: Zeroizing::new(b"secret".to_vec()),
            aad: Vec::new(),
        }];
        k.encrypt("k", None, items, false)
            .await
            .unwrap()
            .remove(0)
            .unwrap()
    };
    k.testing_store_previous_format("k").await.unwrap();

    let now = Clock::testing_manual(EPOCH + 86_400);
    let upgraded = open(&hsm, dir.path(), &now).await;
    let info = upgraded.key_info("k").await.unwrap();
    assert_eq!(info.lifecycle[&1].activation_time, made);
    assert_eq!(
        info.lifecycle[&1].protect_stop_time,
        EPOCH + DEFAULT_OUP_SECS
    );
    assert_eq!(&dec(&upgraded, &ct).await.unwrap()[..], b"secret");
    let items = vec![EncryptItem {
        plaintext: Zeroizing::new(b"more".to_vec()),
        aad: Vec::new(),
    }];
    assert!(upgraded.encrypt("k", None, items, false).await.unwrap()[0].is_ok());
}
