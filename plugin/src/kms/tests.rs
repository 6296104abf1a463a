//! Unit tests of the Wrapper service with a software double of the keyring (AES-256-GCM in
//! aws-lc-rs). The same behaviour against real SoftHSM2 and OpenBao is in
//! `tests/tests/kms_plugin.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use rootseal_hsm::KeyringError;
use rootseal_hsm::Sealed;
use tonic::Request;
use zeroize::Zeroizing;

use super::backend::{BoxFuture, OpenError, Opener, SealKeys};
use super::config::{ConfigError, SealSettings};
use super::proto::{metadata, pb, wrapping};
use super::service::{key_id, parse_key_id, MetadataService, WrapperService};
use metadata::metadata_server::Metadata as _;
use pb::wrapper_server::Wrapper as _;

struct SoftKeys {
    name: String,
    keys: Vec<[u8; 32]>,
    latest: AtomicU32,
}

impl SealKeys for SoftKeys {
    fn name(&self) -> &str {
        &self.name
    }
    fn latest_version(&self) -> BoxFuture<'_, Result<u32, KeyringError>> {
        Box::pin(async move { Ok(self.latest.load(Ordering::SeqCst)) })
    }
    fn encrypt(
        &self,
        version: Option<u32>,
        plaintext: Zeroizing<Vec<u8>>,
        aad: Vec<u8>,
    ) -> BoxFuture<'_, Result<Sealed, KeyringError>> {
        Box::pin(async move {
            let v = version.unwrap_or(self.latest.load(Ordering::SeqCst));
            let k = self
                .keys
                .get(v as usize - 1)
                .ok_or(KeyringError::InvalidRequest("v".into()))?;
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k).unwrap());
            let mut iv = [0u8; 12];
            aws_lc_rs::rand::fill(&mut iv).unwrap();
            let mut buf = plaintext.to_vec();
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(&aad),
                &mut buf,
            )
            .unwrap();
            let mut bytes = iv.to_vec();
            bytes.extend_from_slice(&buf);
            Ok(Sealed { version: v, bytes })
        })
    }
    fn decrypt(
        &self,
        sealed: Sealed,
        aad: Vec<u8>,
    ) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, KeyringError>> {
        Box::pin(async move {
            let k = self
                .keys
                .get(sealed.version as usize - 1)
                .ok_or(KeyringError::InvalidCiphertext)?;
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k).unwrap());
            let (iv, ct) = sealed.bytes.split_at(12);
            let mut buf = ct.to_vec();
            let nonce = Nonce::try_assume_unique_for_key(iv)
                .map_err(|_| KeyringError::InvalidCiphertext)?;
            let pt = key
                .open_in_place(nonce, Aad::from(&aad), &mut buf)
                .map_err(|_| KeyringError::InvalidCiphertext)?;
            Ok(Zeroizing::new(pt.to_vec()))
        })
    }
    fn describe(&self) -> Vec<(String, String)> {
        vec![("token".into(), "soft".into())]
    }
}

#[derive(Default)]
struct SoftOpener {
    opens: AtomicUsize,
    keys: std::sync::Mutex<HashMap<String, Arc<SoftKeys>>>,
    /// Errors the next opens return, first one first.
    fail: std::sync::Mutex<std::collections::VecDeque<OpenError>>,
}

impl Opener for SoftOpener {
    fn open(&self, s: SealSettings) -> BoxFuture<'_, Result<Arc<dyn SealKeys>, OpenError>> {
        Box::pin(async move {
            self.opens.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.fail.lock().unwrap().pop_front() {
                return Err(e);
            }
            let mut m = self.keys.lock().unwrap();
            let k = m
                .entry(s.key_name.clone())
                .or_insert_with(|| {
                    let mut a = [0u8; 32];
                    let mut b = [0u8; 32];
                    aws_lc_rs::rand::fill(&mut a).unwrap();
                    aws_lc_rs::rand::fill(&mut b).unwrap();
                    Arc::new(SoftKeys {
                        name: s.key_name.clone(),
                        keys: vec![a, b],
                        latest: AtomicU32::new(1),
                    })
                })
                .clone();
            Ok(k as Arc<dyn SealKeys>)
        })
    }
}

fn inline(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = [
        ("module", "/usr/lib/softhsm/libsofthsm2.so"),
        ("token_label", "t"),
        ("key_dir", "/var/lib/rootseal"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        m.insert((*k).to_owned(), (*v).to_owned());
    }
    m
}

async fn configured(svc: &WrapperService, map: HashMap<String, String>) -> String {
    svc.set_config(Request::new(pb::SetConfigRequest {
        options: Some(wrapping::RpcOptions {
            with_config_map: map,
            ..Default::default()
        }),
    }))
    .await
    .unwrap()
    .into_inner()
    .wrapper_id
}

async fn encrypt(svc: &WrapperService, id: &str, pt: &[u8], aad: &[u8]) -> wrapping::BlobInfo {
    svc.encrypt(Request::new(pb::EncryptRequest {
        wrapper_id: id.to_owned(),
        plaintext: pt.to_vec(),
        options: Some(wrapping::RpcOptions {
            with_aad: aad.to_vec(),
            ..Default::default()
        }),
    }))
    .await
    .unwrap()
    .into_inner()
    .ciphertext
    .unwrap()
}

async fn decrypt(
    svc: &WrapperService,
    id: &str,
    blob: wrapping::BlobInfo,
    aad: &[u8],
) -> Result<Vec<u8>, tonic::Status> {
    svc.decrypt(Request::new(pb::DecryptRequest {
        wrapper_id: id.to_owned(),
        ciphertext: Some(blob),
        options: Some(wrapping::RpcOptions {
            with_aad: aad.to_vec(),
            ..Default::default()
        }),
    }))
    .await
    .map(|r| r.into_inner().plaintext)
}

#[test]
fn stanza_validation() {
    let ok = SealSettings::parse(&inline(&[]), false).unwrap();
    assert_eq!(ok.key_name, "openbao-unseal");
    assert_eq!(ok.pool_size, 1);
    assert!(ok.allow_env);
    let e = SealSettings::parse(&inline(&[("pin", "1234")]), false).unwrap_err();
    assert!(matches!(e, ConfigError::PinInStanza(_)));
    assert!(!e.to_string().contains("1234"), "{e}");
    assert!(e.to_string().contains("ROOTSEAL_HSM_PIN"), "{e}");
    let e = SealSettings::parse(&inline(&[("HSM_PIN", "1234")]), false).unwrap_err();
    assert!(matches!(e, ConfigError::PinInStanza(_)));
    let e = SealSettings::parse(&inline(&[("colour", "blue")]), false).unwrap_err();
    assert!(
        e.to_string().contains("\"colour\"") && !e.to_string().contains("blue"),
        "{e}"
    );
    let e =
        SealSettings::parse(&inline(&[("config_file", "/etc/rootseal.toml")]), false).unwrap_err();
    assert!(e.to_string().contains("mutually exclusive"), "{e}");
    let e = SealSettings::parse(&inline(&[("token_serial", "abc")]), false).unwrap_err();
    assert!(e.to_string().contains("mutually exclusive"), "{e}");
    let mut m = inline(&[]);
    m.remove("key_dir");
    assert!(SealSettings::parse(&m, false).is_err());
    assert!(SealSettings::parse(&HashMap::new(), false).is_err());
    assert!(SealSettings::parse(&inline(&[("key_name", "../x")]), false).is_err());
    assert!(SealSettings::parse(&inline(&[("pool_size", "0")]), false).is_err());
    let file: HashMap<String, String> =
        [("config_file".to_owned(), "/etc/rootseal.toml".to_owned())].into();
    assert!(SealSettings::parse(&file, true).is_ok_and(|s| !s.allow_env));
}

#[test]
fn key_ids_round_trip() {
    assert_eq!(
        parse_key_id(&key_id("openbao-unseal", 3)),
        Some(("openbao-unseal", 3))
    );
    assert_eq!(parse_key_id("a/v0"), None);
    assert_eq!(parse_key_id("/v1"), None);
    assert_eq!(parse_key_id("nov"), None);
    assert_eq!(parse_key_id("a/vx"), None);
}

#[tokio::test]
async fn wrapper_round_trip_aad_tamper_and_instances() {
    let opener = Arc::new(SoftOpener::default());
    let svc = WrapperService::new(opener.clone());

    // Bad stanza: an error OpenBao logs, and nothing opened.
    let err = svc
        .set_config(Request::new(pb::SetConfigRequest {
            options: Some(wrapping::RpcOptions {
                with_config_map: inline(&[("pin", "1234")]),
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(!err.message().contains("1234"));
    assert_eq!(opener.opens.load(Ordering::SeqCst), 0);

    let id = configured(&svc, inline(&[])).await;
    let id2 = configured(&svc, inline(&[])).await;
    assert_ne!(id, id2);
    assert_eq!(
        opener.opens.load(Ordering::SeqCst),
        1,
        "same settings share one keyring"
    );

    let t = svc
        .r#type(Request::new(pb::TypeRequest {
            wrapper_id: id.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(t.into_inner().r#type, "rootseal");
    let kid = svc
        .key_id(Request::new(pb::KeyIdRequest {
            wrapper_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .key_id;
    assert_eq!(kid, "openbao-unseal/v1");

    let blob = encrypt(&svc, &id, b"root key", b"aad").await;
    assert_eq!(blob.iv.len(), 12);
    assert_eq!(blob.ciphertext.len(), 8 + 16);
    let info = blob.key_info.clone().unwrap();
    assert_eq!(info.key_id, "openbao-unseal/v1");
    assert_eq!(info.mechanism, super::service::MECHANISM_AES_GCM);
    assert_eq!(
        decrypt(&svc, &id2, blob.clone(), b"aad").await.unwrap(),
        b"root key"
    );

    // Wrong AAD, tampered bytes, foreign key, garbage: errors, never a panic.
    let e = decrypt(&svc, &id, blob.clone(), b"other")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let mut t = blob.clone();
    t.ciphertext[0] ^= 1;
    assert!(decrypt(&svc, &id, t, b"aad").await.is_err());
    let mut t = blob.clone();
    t.iv.pop();
    assert!(decrypt(&svc, &id, t, b"aad").await.is_err());
    let mut t = blob.clone();
    t.ciphertext.truncate(3);
    assert!(decrypt(&svc, &id, t, b"aad").await.is_err());
    let mut t = blob.clone();
    t.key_info = None;
    assert!(decrypt(&svc, &id, t, b"aad").await.is_err());
    let mut t = blob.clone();
    t.key_info.as_mut().unwrap().key_id = "openbao-unseal/v99".into();
    assert!(decrypt(&svc, &id, t, b"aad").await.is_err());
    let other = configured(&svc, inline(&[("key_name", "other")])).await;
    let e = decrypt(&svc, &other, blob.clone(), b"aad")
        .await
        .unwrap_err();
    assert!(e.message().contains("another key"), "{e:?}");
    let foreign = encrypt(&svc, &other, b"x", b"").await;
    let mut t = foreign.clone();
    t.key_info.as_mut().unwrap().key_id = "openbao-unseal/v1".into();
    assert_eq!(
        decrypt(&svc, &id, t, b"").await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let e = svc
        .decrypt(Request::new(pb::DecryptRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "unknown instance");

    // Rotation changes KeyId; old ciphertexts still decrypt (version from key_info).
    opener.keys.lock().unwrap()["openbao-unseal"]
        .latest
        .store(2, Ordering::SeqCst);
    let kid = svc
        .key_id(Request::new(pb::KeyIdRequest {
            wrapper_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .key_id;
    assert_eq!(kid, "openbao-unseal/v2");
    let b2 = encrypt(&svc, &id, b"new", b"").await;
    assert_eq!(b2.key_info.as_ref().unwrap().key_id, "openbao-unseal/v2");
    assert_eq!(decrypt(&svc, &id, blob, b"aad").await.unwrap(), b"root key");

    // Finalize removes the instance.
    svc.finalize(Request::new(pb::FinalizeRequest {
        wrapper_id: id.clone(),
        options: None,
    }))
    .await
    .unwrap();
    let e = svc
        .key_id(Request::new(pb::KeyIdRequest { wrapper_id: id }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn metadata_marks_pin_keys_sensitive() {
    let m = MetadataService
        .get(Request::new(metadata::Empty {}))
        .await
        .unwrap()
        .into_inner();
    for k in ["pin", "hsm_pin", "pin_file"] {
        assert!(m.sensitive_kms_fields.iter().any(|f| f == k), "{k}");
    }
}

#[test]
fn kms_config_installs_binary_and_prints_stanzas() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("fake-rootseal");
    std::fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
    let cfg = dir.path().join("rootseal.toml");
    std::fs::write(&cfg, "").unwrap();
    let plugins = dir.path().join("plugins");
    let out = super::deploy::install(&exe, &cfg, &plugins).unwrap();
    let installed = plugins.join("rootseal");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&exe).unwrap()
    );
    let sum = super::deploy::sha256_file(&installed).unwrap();
    assert_eq!(sum.len(), 64);
    assert!(out.contains(&format!("sha256sum = \"{sum}\"")), "{out}");
    assert!(out.contains("plugin \"kms\" \"rootseal\""), "{out}");
    assert!(
        out.contains("args      = [\"openbao\", \"kms-plugin\"]"),
        "{out}"
    );
    assert!(out.contains("version   = \"v"), "{out}");
    assert!(out.contains("seal \"rootseal\""), "{out}");
    assert!(out.contains("plugin_directory = "), "{out}");
    assert!(super::deploy::install(&exe, &dir.path().join("missing.toml"), &plugins).is_err());
}

/// The HSM token absent at SetConfig: the seal is configured anyway, every call is `Unavailable`
/// (OpenBao stays sealed and retries) until the token is back, then it works with no new
/// SetConfig. A fault that retrying cannot mend (wrong PIN) stops the retries for good.
#[tokio::test]
async fn absent_token_is_retried_on_use_and_a_wrong_pin_is_not() {
    let opener = Arc::new(SoftOpener::default());
    // SetConfig tries twice (open, then the key id); the first Encrypt once more.
    opener
        .fail
        .lock()
        .unwrap()
        .extend((0..3).map(|_| OpenError::HsmAbsent("no token".into())));
    let svc = WrapperService::new(opener.clone());
    let id = configured(&svc, inline(&[])).await;
    let e = svc
        .encrypt(Request::new(pb::EncryptRequest {
            wrapper_id: id.clone(),
            plaintext: b"k".to_vec(),
            options: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    assert_eq!(opener.opens.load(Ordering::SeqCst), 3);
    // The token is back: the same instance works.
    let blob = encrypt(&svc, &id, b"root key", b"").await;
    assert_eq!(decrypt(&svc, &id, blob, b"").await.unwrap(), b"root key");
    assert_eq!(opener.opens.load(Ordering::SeqCst), 4);

    // Absent at SetConfig, then a wrong PIN: no further open is attempted.
    let opener = Arc::new(SoftOpener::default());
    opener.fail.lock().unwrap().extend([
        OpenError::HsmAbsent("no token".into()),
        OpenError::Hsm("the HSM refused the PIN".into()),
    ]);
    let svc = WrapperService::new(opener.clone());
    let id = configured(&svc, inline(&[])).await;
    for _ in 0..3 {
        let e = svc
            .key_id(Request::new(pb::KeyIdRequest {
                wrapper_id: id.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    }
    assert_eq!(opener.opens.load(Ordering::SeqCst), 2);

    // Any other fault at SetConfig still fails SetConfig.
    let opener = Arc::new(SoftOpener::default());
    opener
        .fail
        .lock()
        .unwrap()
        .push_back(OpenError::Hsm("the HSM refused the PIN".into()));
    let svc = WrapperService::new(opener.clone());
    let e = svc
        .set_config(Request::new(pb::SetConfigRequest {
            options: Some(wrapping::RpcOptions {
                with_config_map: inline(&[]),
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
}

/// A transient keyring fault while opening (store unavailable, HSM busy or unavailable, a
/// concurrent write) never disables the seal: the next call opens again and works.
#[tokio::test]
async fn a_transient_keyring_fault_while_opening_is_retried() {
    let opener = Arc::new(SoftOpener::default());
    opener.fail.lock().unwrap().extend([
        OpenError::Keyring(KeyringError::StoreUnavailable(rootseal_hsm::Cause::new(
            "disk",
        ))),
        OpenError::Keyring(KeyringError::Conflict),
        OpenError::Keyring(KeyringError::Overloaded),
        OpenError::Keyring(KeyringError::HsmUnavailable(rootseal_hsm::Cause::new(
            "gone",
        ))),
    ]);
    let svc = WrapperService::new(opener.clone());
    let id = configured(&svc, inline(&[])).await;
    for _ in 0..2 {
        let e = svc
            .key_id(Request::new(pb::KeyIdRequest {
                wrapper_id: id.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    }
    let blob = encrypt(&svc, &id, b"root key", b"").await;
    assert_eq!(decrypt(&svc, &id, blob, b"").await.unwrap(), b"root key");
    assert_eq!(opener.opens.load(Ordering::SeqCst), 5);
}
