//! Every key type against real SoftHSM2 (issue 15): each new key class's attributes read back
//! from the token (sensitive, never extractable, usage limited), signatures checked by an
//! independent implementation (aws-lc), HMACs and RSA-OAEP round trips, rotation, deletion
//! destroying the token objects, and wrong-type operations refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use rootseal_hsm::{
    CreateOptions, DecryptItem, EncryptItem, HashAlg, KeyType, KeyringError, Marshaling,
    RsaPadding, SaltLength, SignParams, Signature, VerifyItem,
};
use rootseal_testkit::Fixture;
use zeroize::Zeroizing;

fn opts(t: KeyType) -> CreateOptions {
    CreateOptions {
        key_type: t,
        deletion_allowed: true,
        ..CreateOptions::default()
    }
}

/// The BIT STRING of a SubjectPublicKeyInfo (the key as aws-lc takes it).
fn spki_key(spki: &[u8]) -> &[u8] {
    fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, l) = (b[0], b[1]);
        let (len, at) = if l < 0x80 {
            (usize::from(l), 2)
        } else {
            let k = usize::from(l & 0x7f);
            (
                b[2..2 + k]
                    .iter()
                    .fold(0, |a, x| (a << 8) | usize::from(*x)),
                2 + k,
            )
        };
        (tag, &b[at..at + len], &b[at + len..])
    }
    let (_, seq, _) = tlv(spki);
    let (_, _, rest) = tlv(seq);
    let (tag, bits, _) = tlv(rest);
    assert_eq!(tag, 3);
    &bits[1..]
}

fn attrs_ok(classes: &[(&str, rootseal_hsm::RootAttributes)], t: KeyType) {
    for (class, a) in classes {
        let want: &[(&str, bool)] = match *class {
            "private" => &[
                ("Token", true),
                ("Private", true),
                ("Sensitive", true),
                ("AlwaysSensitive", true),
                ("Extractable", false),
                ("NeverExtractable", true),
                ("Local", true),
                ("Modifiable", false),
                ("Copyable", false),
                ("Sign", true),
                ("Unwrap", false),
                ("Derive", false),
            ],
            "public" => &[
                ("Token", true),
                ("Private", true),
                ("Modifiable", false),
                ("Verify", true),
                ("Wrap", false),
                ("Derive", false),
            ],
            _ => &[
                ("Token", false),
                ("Private", true),
                ("Sensitive", true),
                ("Extractable", true),
                ("WrapWithTrusted", true),
                ("Modifiable", false),
                ("Wrap", false),
                ("Unwrap", false),
                ("Derive", false),
            ],
        };
        for (name, v) in want {
            assert_eq!(a.get(name), Some(*v), "{t} {class} {name}: {a:?}");
        }
        let rsa = t.is_rsa();
        match *class {
            "private" => assert_eq!(a.get("Decrypt"), Some(rsa), "{t}: {a:?}"),
            "public" => assert_eq!(a.get("Encrypt"), Some(rsa), "{t}: {a:?}"),
            _ => {
                let hmac = t == KeyType::Hmac;
                assert_eq!(a.get("Sign"), Some(hmac), "{t}: {a:?}");
                assert_eq!(a.get("Verify"), Some(hmac), "{t}: {a:?}");
                assert_eq!(a.get("Encrypt"), Some(!hmac), "{t}: {a:?}");
                assert_eq!(a.get("Decrypt"), Some(!hmac), "{t}: {a:?}");
            }
        }
    }
}

async fn sign1(f: &Fixture, name: &str, input: &[u8], p: SignParams) -> Signature {
    f.keyring
        .sign(name, None, vec![input.to_vec()], p)
        .await
        .unwrap()
        .remove(0)
        .unwrap()
}

async fn verify1(f: &Fixture, name: &str, input: &[u8], sig: Signature, p: SignParams) -> bool {
    f.keyring
        .verify_signature(
            name,
            vec![VerifyItem {
                input: input.to_vec(),
                signature: sig,
            }],
            p,
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_keys_sign_in_the_hsm_and_verify_independently() {
    let f = Fixture::new().await;
    let msg = b"the quick brown fox";
    let cases: [(
        KeyType,
        &'static dyn signature::VerificationAlgorithm,
        SignParams,
    ); 6] = [
        (KeyType::Ed25519, &signature::ED25519, SignParams::default()),
        (
            KeyType::EcdsaP256,
            &signature::ECDSA_P256_SHA256_ASN1,
            SignParams::default(),
        ),
        (
            KeyType::EcdsaP384,
            &signature::ECDSA_P384_SHA384_FIXED,
            SignParams {
                hash: HashAlg::Sha384,
                marshaling: Marshaling::Jws,
                ..SignParams::default()
            },
        ),
        (
            KeyType::EcdsaP521,
            &signature::ECDSA_P521_SHA512_ASN1,
            SignParams {
                hash: HashAlg::Sha512,
                ..SignParams::default()
            },
        ),
        (
            KeyType::Rsa2048,
            &signature::RSA_PSS_2048_8192_SHA256,
            SignParams {
                salt: SaltLength::Hash,
                ..SignParams::default()
            },
        ),
        (
            KeyType::Rsa3072,
            &signature::RSA_PKCS1_2048_8192_SHA256,
            SignParams {
                padding: RsaPadding::Pkcs1v15,
                ..SignParams::default()
            },
        ),
    ];
    for (t, alg, p) in cases {
        let name = t.name();
        let info = f.keyring.create_key(name, opts(t)).await.unwrap();
        assert_eq!(info.key_type, t);
        let spki = info.public_keys.get(&1).unwrap().clone();
        attrs_ok(&f.keyring.testing_key_attributes(name).await.unwrap(), t);
        let sig = sign1(&f, name, msg, p).await;
        assert_eq!(sig.version, 1);
        UnparsedPublicKey::new(alg, spki_key(&spki))
            .verify(msg, &sig.bytes)
            .unwrap_or_else(|_| panic!("{t}: aws-lc refuses the HSM's signature"));
        assert!(verify1(&f, name, msg, sig.clone(), p).await, "{t}");
        assert!(
            !verify1(&f, name, b"another message", sig.clone(), p).await,
            "{t}"
        );
        let mut bad = sig.clone();
        let last = bad.bytes.len() - 1;
        bad.bytes[last] ^= 1;
        assert!(!verify1(&f, name, msg, bad, p).await, "{t}");
        // Rotation makes a new key pair; the old version still verifies.
        let info = f.keyring.rotate_key(name).await.unwrap();
        assert_ne!(info.public_keys.get(&2), Some(&spki), "{t}");
        assert_eq!(sign1(&f, name, msg, p).await.version, 2);
        assert!(verify1(&f, name, msg, sig.clone(), p).await, "{t}");
        // Deleting destroys the token objects (a new key of the name is a new pair).
        f.keyring.delete_key(name).await.unwrap();
        assert!(matches!(
            f.keyring.key_info(name).await,
            Err(KeyringError::NotFound)
        ));
    }
    // PSS with `auto` signs with the largest salt and verifies it.
    f.keyring
        .create_key("pss", opts(KeyType::Rsa2048))
        .await
        .unwrap();
    let sig = sign1(&f, "pss", msg, SignParams::default()).await;
    assert!(verify1(&f, "pss", msg, sig, SignParams::default()).await);
    // Prehashed ECDSA: the digest is signed as given.
    f.keyring
        .create_key("p256", opts(KeyType::EcdsaP256))
        .await
        .unwrap();
    let digest = HashAlg::Sha256.digest(msg).unwrap();
    let pre = SignParams {
        prehashed: true,
        ..SignParams::default()
    };
    let sig = sign1(&f, "p256", &digest, pre).await;
    assert!(verify1(&f, "p256", msg, sig, SignParams::default()).await);
    let short = f
        .keyring
        .sign("p256", None, vec![vec![1; 5]], pre)
        .await
        .unwrap();
    assert!(matches!(short[0], Err(KeyringError::InvalidRequest(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_aes128_and_rsa_oaep_keys() {
    let f = Fixture::new().await;
    let k = &f.keyring;
    // hmac: a generic-secret L1 sealed under L0, HMAC computed and verified in the HSM.
    let info = k
        .create_key(
            "mac",
            CreateOptions {
                key_type: KeyType::Hmac,
                key_size: Some(64),
                ..CreateOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((info.key_type, info.key_size), (KeyType::Hmac, 64));
    attrs_ok(
        &k.testing_key_attributes("mac").await.unwrap(),
        KeyType::Hmac,
    );
    for alg in [
        HashAlg::Sha224,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ] {
        let m = k
            .hmac("mac", None, alg, vec![b"data".to_vec()])
            .await
            .unwrap();
        let m = m.into_iter().next().unwrap().unwrap();
        assert_eq!(m.bytes.len(), alg.len());
        let ok = k
            .verify_hmac(
                "mac",
                alg,
                vec![
                    VerifyItem {
                        input: b"data".to_vec(),
                        signature: m.clone(),
                    },
                    VerifyItem {
                        input: b"datA".to_vec(),
                        signature: m.clone(),
                    },
                ],
            )
            .await
            .unwrap();
        assert_eq!(ok[0].as_ref().unwrap(), &true);
        assert_eq!(ok[1].as_ref().unwrap(), &false);
    }
    assert!(matches!(
        k.hmac("mac", None, HashAlg::Sha3_256, vec![vec![]]).await,
        Err(KeyringError::InvalidRequest(m)) if m.contains("CKM_SHA3_256_HMAC")
    ));
    for bad in [16, 513] {
        let r = k
            .create_key(
                &format!("mac{bad}"),
                CreateOptions {
                    key_type: KeyType::Hmac,
                    key_size: Some(bad),
                    ..CreateOptions::default()
                },
            )
            .await;
        assert!(matches!(r, Err(KeyringError::InvalidRequest(_))), "{bad}");
    }
    // Wrong type for the operation.
    assert!(matches!(
        k.encrypt("mac", None, vec![EncryptItem { plaintext: Zeroizing::new(vec![1]), aad: vec![] }], false).await,
        Err(KeyringError::InvalidRequest(m)) if m.contains("not supported by key type hmac")
    ));
    k.create_key("aes", CreateOptions::default()).await.unwrap();
    assert!(matches!(
        k.sign("aes", None, vec![vec![1]], SignParams::default()).await,
        Err(KeyringError::InvalidRequest(m)) if m.contains("signing is not supported")
    ));
    assert!(matches!(
        k.hmac("aes", None, HashAlg::Sha256, vec![vec![1]]).await,
        Err(KeyringError::InvalidRequest(_))
    ));

    // aes128-gcm96: a 16-byte L1.
    k.create_key("a128", opts(KeyType::Aes128Gcm96))
        .await
        .unwrap();
    attrs_ok(
        &k.testing_key_attributes("a128").await.unwrap(),
        KeyType::Aes128Gcm96,
    );
    let ct = k
        .encrypt(
            "a128",
            None,
            vec![EncryptItem {
                plaintext: Zeroizing::new(b"hi".to_vec()),
                aad: vec![],
            }],
            false,
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let pt = k
        .decrypt(
            "a128",
            vec![DecryptItem {
                sealed: ct,
                aad: vec![],
            }],
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(&*pt, b"hi");

    // RSA-OAEP encrypt/decrypt inside the HSM, and rewrap across versions.
    k.create_key("rsa", opts(KeyType::Rsa2048)).await.unwrap();
    let ct = k
        .encrypt(
            "rsa",
            None,
            vec![EncryptItem {
                plaintext: Zeroizing::new(b"secret".to_vec()),
                aad: vec![],
            }],
            false,
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(ct.bytes.len(), 256);
    k.rotate_key("rsa").await.unwrap();
    let re = k
        .rewrap(
            "rsa",
            None,
            vec![DecryptItem {
                sealed: ct.clone(),
                aad: vec![],
            }],
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(re.version, 2);
    for c in [ct.clone(), re] {
        let pt = k
            .decrypt(
                "rsa",
                vec![DecryptItem {
                    sealed: c,
                    aad: vec![],
                }],
            )
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        assert_eq!(&*pt, b"secret");
    }
    let mut bad = ct;
    bad.bytes[10] ^= 1;
    assert!(matches!(
        k.decrypt(
            "rsa",
            vec![DecryptItem {
                sealed: bad,
                aad: vec![]
            }]
        )
        .await
        .unwrap()[0],
        Err(KeyringError::InvalidCiphertext)
    ));
    let long = k
        .encrypt(
            "rsa",
            None,
            vec![EncryptItem {
                plaintext: Zeroizing::new(vec![0; 300]),
                aad: vec![],
            }],
            false,
        )
        .await
        .unwrap();
    assert!(matches!(long[0], Err(KeyringError::InvalidRequest(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn new_key_types_survive_a_reopen() {
    let f = Fixture::new().await;
    for t in [KeyType::Hmac, KeyType::Ed25519, KeyType::Aes128Gcm96] {
        f.keyring.create_key(t.name(), opts(t)).await.unwrap();
    }
    let sig = sign1(&f, "ed25519", b"m", SignParams::default()).await;
    // A fresh keyring over the same store reads the version 2 records back (MAC checked).
    let store = rootseal_hsm::FileStore::open(f.dir.path().join("keys")).unwrap();
    let k2 = rootseal_hsm::Keyring::open(f.hsm.clone(), std::sync::Arc::new(store))
        .await
        .unwrap();
    for t in [KeyType::Hmac, KeyType::Ed25519, KeyType::Aes128Gcm96] {
        assert_eq!(k2.key_info(t.name()).await.unwrap().key_type, t);
    }
    let ok = k2
        .verify_signature(
            "ed25519",
            vec![VerifyItem {
                input: b"m".to_vec(),
                signature: sig,
            }],
            SignParams::default(),
        )
        .await
        .unwrap();
    assert_eq!(ok[0].as_ref().unwrap(), &true);
}

/// The BYOK wrapping key (transit `wrapping_key`): an RSA-4096 pair made on the token, its private
/// half sensitive, never extractable, unwrap only (never decrypt, so no plaintext can come out of
/// it), its public half wrap only; made once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byok_wrapping_key_is_unwrap_only_and_never_extractable() {
    let f = Fixture::new().await;
    let k = &f.keyring;
    assert!(
        k.testing_wrapping_key_attributes().await.is_err(),
        "none before the first read"
    );
    let spki = k.wrapping_key().await.unwrap();
    assert_eq!(k.wrapping_key().await.unwrap(), spki, "made once");
    assert!(spki_key(&spki).len() > 512, "an RSA-4096 public key");
    let classes = k.testing_wrapping_key_attributes().await.unwrap();
    for (class, a) in &classes {
        let want: &[(&str, bool)] = match *class {
            "private" => &[
                ("Token", true),
                ("Private", true),
                ("Sensitive", true),
                ("AlwaysSensitive", true),
                ("Extractable", false),
                ("NeverExtractable", true),
                ("Local", true),
                ("Modifiable", false),
                ("Copyable", false),
                ("Unwrap", true),
                ("Decrypt", false),
                ("Sign", false),
                ("Derive", false),
            ],
            _ => &[
                ("Token", true),
                ("Private", false),
                ("Modifiable", false),
                ("Wrap", true),
                ("Encrypt", false),
                ("Verify", false),
                ("Derive", false),
            ],
        };
        for (name, v) in want {
            assert_eq!(a.get(name), Some(*v), "wrapping key {class} {name}: {a:?}");
        }
    }
}
