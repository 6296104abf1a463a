//! The audit signing key on real SoftHSM2: made by the Security Officer with the root, Ed25519,
//! sign only, never extractable or modifiable; its signatures verify in software (aws-lc-rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use rootseal_testkit::TestToken;

#[tokio::test(flavor = "multi_thread")]
async fn init_makes_the_audit_key_and_it_signs_checkpoints_that_verify_offline() {
    let t = TestToken::new();
    t.init_root().await;
    let hsm = t.open().await;
    let public = hsm
        .audit_public_key()
        .await
        .unwrap()
        .expect("audit key made by init");
    assert_eq!(hsm.audit_key_check().await.unwrap(), Vec::<String>::new());
    let msg = b"rootseal/serial/root\n1\nAAAA\ntime t\n".to_vec();
    let sig = hsm.audit_sign(msg.clone()).await.unwrap();
    assert_eq!(sig.len(), 64);
    let pk = UnparsedPublicKey::new(&ED25519, public);
    pk.verify(&msg, &sig).unwrap();
    let mut other = msg.clone();
    other[0] ^= 1;
    assert!(pk.verify(&other, &sig).is_err());
    // Ed25519 is deterministic: the same checkpoint always gets the same signature.
    assert_eq!(hsm.audit_sign(msg).await.unwrap(), sig);
    drop(hsm);
    // A second `init` keeps the same key.
    t.init_root().await;
    let hsm = t.open().await;
    assert_eq!(hsm.audit_public_key().await.unwrap(), Some(public));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_user_can_neither_read_nor_change_the_audit_key() {
    let t = TestToken::new();
    t.init_root().await;
    let pkcs11 = cryptoki::context::Pkcs11::new(&t.module).unwrap();
    // `init_root` initialised the module in this process already.
    let _ = pkcs11.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    ));
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            pkcs11
                .get_token_info(*s)
                .map(|i| i.label().trim() == t.label)
                .unwrap_or(false)
        })
        .unwrap();
    let s = pkcs11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::from(t.pin.clone())))
        .unwrap();
    let keys = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Label(b"rootseal-audit".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let k = keys[0];
    // The private value cannot be read.
    let v = s.get_attributes(k, &[AttributeType::Value]);
    assert!(
        !matches!(v.as_deref(), Ok([Attribute::Value(x)]) if !x.is_empty()),
        "the audit private key was readable: {v:?}"
    );
    // It cannot be made extractable or turned into a decryption key.
    assert!(s
        .update_attributes(k, &[Attribute::Extractable(true)])
        .is_err());
    assert!(s.update_attributes(k, &[Attribute::Sign(false)]).is_err());
    assert!(s
        .update_attributes(k, &[Attribute::Label(b"x".to_vec())])
        .is_err());
    // A holder of the User PIN could destroy it and make another key of the same label:
    // what makes that detectable is the public key the verifier pins (a checkpoint by any
    // other key is exit 13, `audit/tests/log.rs`).
}
