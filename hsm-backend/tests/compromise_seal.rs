//! Issue 13, items 3 and 7 against real SoftHSM2, time moved by the injected clock: a compromised
//! version decrypts only while the `lifecycle.compromise` decision allows it, each use audited
//! first (and refused when it cannot be); the auto-unseal key (`seal-kek`) past its protect-stop
//! refuses encrypt while decrypt (OpenBao's unseal) works, and a warning says so; verify
//! operations are not refused by the lifecycle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};

use rootseal_hsm::{
    Clock, CompromisedUse, CreateOptions, DecryptItem, EncryptItem, FileStore, KeyType, Keyring,
    KeyringError, KeyringOptions, LifecycleClass, LifecycleState, Refusal, Sealed,
    DEFAULT_OUP_SECS,
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
    let k = Keyring::open_with(
        hsm,
        Arc::new(FileStore::open(dir.path()).unwrap()),
        KeyringOptions {
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (token, dir, clock, k)
}

async fn enc(k: &Keyring, name: &str, version: Option<u32>) -> Result<Sealed, KeyringError> {
    let item = EncryptItem {
        plaintext: Zeroizing::new(b"secret".to_vec()),
        aad: Vec::new(),
    };
    k.encrypt(name, version, vec![item], false)
        .await?
        .pop()
        .unwrap()
}

async fn dec(k: &Keyring, name: &str, s: &Sealed) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
    let item = DecryptItem {
        sealed: s.clone(),
        aad: Vec::new(),
    };
    k.decrypt(name, vec![item]).await?.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_version_decrypts_only_within_the_decision_each_use_audited() {
    let (_t, _d, clock, k) = setup().await;
    let audited: Arc<Mutex<Vec<CompromisedUse>>> = Arc::default();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (audited, fail) = (audited.clone(), fail.clone());
        k.set_compromised_use_audit(Arc::new(move |u| {
            let (audited, fail) = (audited.clone(), fail.clone());
            Box::pin(async move {
                if fail.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err("audit log failing".to_owned());
                }
                audited.lock().unwrap().push(u);
                Ok(())
            })
        }));
    }
    k.create_key("k", CreateOptions::default()).await.unwrap();
    let ct = enc(&k, "k", None).await.unwrap();

    // The ceremony's decision: v1 decrypts for one hour from now.
    let info = k
        .compromise_version_until("k", 1, Some(T0 + 3600))
        .await
        .unwrap();
    assert_eq!(info.latest_version, 2, "the latest version rotates");
    assert_eq!(info.lifecycle[&1].state, LifecycleState::Compromised);
    assert!(audited.lock().unwrap().is_empty());
    assert_eq!(&dec(&k, "k", &ct).await.unwrap()[..], b"secret");
    assert_eq!(
        *audited.lock().unwrap(),
        vec![CompromisedUse {
            key: "k".into(),
            version: 1,
            op: "decrypt",
            allowed_until: T0 + 3600,
        }]
    );
    // Rewrap to the new version (the reason for the window) is a use too.
    let re = k
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
    assert_eq!(re.version, 2);
    assert_eq!(audited.lock().unwrap().len(), 2);
    // A v2 decrypt is not a compromised use.
    dec(&k, "k", &re).await.unwrap();
    assert_eq!(audited.lock().unwrap().len(), 2);
    // Never encrypts.
    match enc(&k, "k", Some(1)).await {
        Err(KeyringError::Lifecycle(r)) => {
            assert_eq!(r.reason, Refusal::State(LifecycleState::Compromised))
        }
        other => panic!("{other:?}"),
    }
    // No use without its record.
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        dec(&k, "k", &ct).await,
        Err(KeyringError::Internal(_))
    ));
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    // After the window: refused, and nothing audited.
    clock.testing_advance(3600);
    match dec(&k, "k", &ct).await {
        Err(KeyringError::Lifecycle(r)) => {
            assert_eq!(r.reason, Refusal::State(LifecycleState::Compromised));
            assert_eq!(r.to_string(), "key version 1 is compromised");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(audited.lock().unwrap().len(), 2);
    // A later decision replaces it (a second ceremony); the compromise time stays.
    let again = k.compromise_version_until("k", 1, None).await.unwrap();
    assert_eq!(again.lifecycle[&1].compromise_time, Some(T0));
    assert_eq!(again.latest_version, 2, "no second rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seal_key_past_protect_stop_refuses_encrypt_unseals_and_warns() {
    let (_t, _d, clock, k) = setup().await;
    let opts = CreateOptions {
        allowed_ops: Some(vec![
            rootseal_hsm::KeyOp::Encrypt,
            rootseal_hsm::KeyOp::Decrypt,
        ]),
        lifecycle_class: Some(LifecycleClass::SealKek),
        ..CreateOptions::default()
    };
    let info = k.create_key("unseal", opts).await.unwrap();
    assert_eq!(info.lifecycle_class, LifecycleClass::SealKek);
    let root_key_blob = enc(&k, "unseal", None).await.unwrap();
    assert!(k.seal_key_warnings().is_empty());

    clock.testing_advance(DEFAULT_OUP_SECS);
    match enc(&k, "unseal", None).await {
        Err(KeyringError::Lifecycle(r)) => assert_eq!(r.reason, Refusal::PastProtectStop),
        other => panic!("expected encrypt refused past protect-stop, got {other:?}"),
    }
    // OpenBao still unseals: decrypt of its root key works.
    assert_eq!(
        &dec(&k, "unseal", &root_key_blob).await.unwrap()[..],
        b"secret"
    );
    let w = k.seal_key_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("seal key unseal v1 is past its protect-stop"),
        "{w:?}"
    );
    assert!(w[0].contains("still unseals"), "{w:?}");
    // Both dates as RFC 3339 UTC, as an operator reads them (`(2027-…Z)`), not Unix seconds.
    assert_eq!(w[0].matches("Z)").count(), 2, "{w:?}");
    assert!(w[0].contains("protect-stop (20"), "{w:?}");
    // Rotating clears it.
    k.rotate_key("unseal").await.unwrap();
    assert!(k.seal_key_warnings().is_empty());
    enc(&k, "unseal", None).await.unwrap();
}

/// Verify operations check a signature or HMAC someone made: the lifecycle never refuses them
/// (the issue names none), neither past protect-stop nor past deactivation; only Vault's
/// `min_decryption_version` and a trimmed version (its key is gone) do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_works_past_protect_stop() {
    let (_t, _d, clock, k) = setup().await;
    let opts = CreateOptions {
        key_type: KeyType::Hmac,
        ..Default::default()
    };
    k.create_key("h", opts).await.unwrap();
    let mac = k
        .hmac(
            "h",
            None,
            rootseal_hsm::HashAlg::Sha256,
            vec![b"x".to_vec()],
        )
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    clock.testing_advance(DEFAULT_OUP_SECS + 10);
    assert!(k
        .hmac(
            "h",
            None,
            rootseal_hsm::HashAlg::Sha256,
            vec![b"x".to_vec()]
        )
        .await
        .is_err());
    let ok = k
        .verify_hmac(
            "h",
            rootseal_hsm::HashAlg::Sha256,
            vec![rootseal_hsm::VerifyItem {
                input: b"x".to_vec(),
                signature: mac.clone(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(ok.len(), 1);
    assert!(matches!(ok[0], Ok(true)), "{ok:?}");
    clock.testing_advance(rootseal_hsm::DEFAULT_RUP_SECS);
    let ok = k
        .verify_hmac(
            "h",
            rootseal_hsm::HashAlg::Sha256,
            vec![rootseal_hsm::VerifyItem {
                input: b"x".to_vec(),
                signature: mac,
            }],
        )
        .await
        .unwrap();
    assert!(matches!(ok[0], Ok(true)), "past deactivation: {ok:?}");
}
