//! Bring your own key (transit `wrapping_key`, `keys/{name}/import`, `keys/{name}/import_version`),
//! with Vault's ciphertext format and every unwrap **inside the HSM**:
//!
//! 1. The wrapping key is an RSA-4096 pair made on the token (`templates::byok_private`,
//!    `byok_public`): unwrap only, never decrypt, never extractable. `GET wrapping_key` makes it
//!    the first time and answers its public key (PEM).
//! 2. The client sends `RSA-OAEP(wrapping key, ephemeral AES-256 key) ‖ KWP(ephemeral, target key)`
//!    (512 + n bytes, Vault's `EncryptedKeyBytes`). The token unwraps the first part into a session
//!    key that can only unwrap (`byok_ephemeral`), then the second into an L1 with the template of
//!    every L1 (`l1_import`: sensitive, extractable only under a trusted key), which is wrapped
//!    under L0 at once and destroyed, as a generated L1 is. Neither key is ever a plaintext in
//!    rootseal's memory.
//! 3. The version is recorded as imported (`"imported": true` in the KEK record, `imported_key` in
//!    Vault's key description), because its key existed outside the HSM before: an auditor can
//!    tell such versions from those the HSM made.
//!
//! Symmetric types only (`aes256-gcm96`, `aes128-gcm96`, `hmac`); importing a private signing key
//! is refused by name. SoftHSM2 2.6.1 does RSA-OAEP only with SHA-1: another `hash_function` is
//! tried on the token and, when the token refuses it, refused with a message that says so.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cryptoki::mechanism::rsa::PkcsMgfType;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};

use super::record::{KeyConfig, Record, VersionEntry, RECORD_VERSION};
use super::{jobs, Keyring, Result};
use crate::error::{Error, KeyringError};
use crate::hsm::SessionCtx;
use crate::store::StoreError;
use crate::templates::{self, PairKind};
use crate::types::{KeyOp, KeyType};
use crate::{CreateOptions, KeyInfo};

/// Length of the RSA-OAEP part of an import ciphertext (an RSA-4096 block, Vault's
/// `EncryptedKeyBytes`).
const WRAPPED_EPHEMERAL_LEN: usize = 512;
/// How often a version import is retried when the key changed between its HSM job and its write.
const IMPORT_ATTEMPTS: usize = 3;

/// The OAEP hash of an import (Vault's `hash_function`, default `SHA256`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportHash {
    /// SHA-1 (the only OAEP hash of SoftHSM2 2.6.1).
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256 (Vault's default).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl ImportHash {
    /// Parses Vault's names (`SHA1`, `SHA224`, `SHA256`, `SHA384`, `SHA512`, any case).
    pub fn from_name(s: &str) -> Option<ImportHash> {
        Some(match s.to_ascii_uppercase().as_str() {
            "SHA1" => ImportHash::Sha1,
            "SHA224" => ImportHash::Sha224,
            "SHA256" => ImportHash::Sha256,
            "SHA384" => ImportHash::Sha384,
            "SHA512" => ImportHash::Sha512,
            _ => return None,
        })
    }

    /// Vault's name.
    pub fn name(self) -> &'static str {
        match self {
            ImportHash::Sha1 => "SHA1",
            ImportHash::Sha224 => "SHA224",
            ImportHash::Sha256 => "SHA256",
            ImportHash::Sha384 => "SHA384",
            ImportHash::Sha512 => "SHA512",
        }
    }

    fn mechanism(self) -> (MechanismType, PkcsMgfType) {
        match self {
            ImportHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            ImportHash::Sha224 => (MechanismType::SHA224, PkcsMgfType::MGF1_SHA224),
            ImportHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            ImportHash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
            ImportHash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
        }
    }
}

impl Keyring {
    /// The BYOK wrapping key's public half, DER SubjectPublicKeyInfo; the pair is made on the token
    /// the first time (several processes racing may make two: the one with the lowest `CKA_ID` is
    /// used by all).
    ///
    /// # Errors
    /// HSM errors.
    pub async fn wrapping_key(&self) -> Result<Vec<u8>> {
        let _guard = self.inner.writes.lock().await;
        Ok(self
            .inner
            .hsm
            .run(|ctx| {
                let (_, public) = match wrapping_pair(ctx)? {
                    Some(p) => p,
                    None => {
                        let mut id = [0u8; 16];
                        ctx.random(&mut id)?;
                        ctx.generate_key_pair(
                            &Mechanism::RsaPkcsKeyPairGen,
                            &templates::byok_public(&id),
                            &templates::byok_private(&id),
                        )?;
                        ctx.forget_objects();
                        wrapping_pair(ctx)?.ok_or_else(|| {
                            Error::TokenState("the new wrapping key is not on the token".into())
                        })?
                    }
                };
                jobs::public_spki(ctx, PairKind::Rsa(4096), public)
            })
            .await?)
    }

    /// Creates key `name` (version 1) from an import `ciphertext` (see the module documentation).
    ///
    /// # Errors
    /// `InvalidRequest` for an existing key, a type that cannot be imported, a ciphertext that is
    /// too short or does not unwrap, a hash the token lacks; HSM and store errors.
    pub async fn import_key(
        &self,
        name: &str,
        opts: CreateOptions,
        ciphertext: Vec<u8>,
        hash: ImportHash,
    ) -> Result<KeyInfo> {
        Self::check_name(name)?;
        let key_type = opts.key_type;
        check_importable(key_type)?;
        match self.load(name, true).await {
            Ok(_) => return Err(exists()),
            Err(KeyringError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let ops = opts.allowed_ops.unwrap_or_else(|| key_type.default_ops());
        if ops.is_empty() {
            return Err(KeyringError::InvalidRequest(
                "allowed operations may not be empty".into(),
            ));
        }
        let created = self.inner.clock.now();
        let config = KeyConfig {
            min_decryption_version: 1,
            min_encryption_version: 0,
            deletion_allowed: opts.deletion_allowed,
            auto_rotate_period_secs: opts.auto_rotate_period_secs,
            allowed_ops: ops.clone(),
            created,
            key_type,
            key_size: 0,
            derived: false,
            convergent: false,
            min_available_version: 0,
            lifecycle_class: opts.lifecycle_class,
            originator_usage_period_secs: opts.originator_usage_period_secs,
            recipient_usage_period_secs: opts.recipient_usage_period_secs,
        };
        let period = config.period(&self.inner.policy)?;
        let owned = name.to_owned();
        let record = self
            .inner
            .hsm
            .run(move |ctx| {
                let target = jobs::required_seal_target(ctx)?;
                let (blob, key_size) =
                    match import_l1(ctx, &target, &owned, 1, &ops, key_type, &ciphertext, hash)? {
                        Ok(v) => v,
                        Err(e) => return Ok(Err(e)),
                    };
                let mut config = config.clone();
                if key_type == KeyType::Hmac {
                    config.key_size = key_size;
                }
                let mut record =
                    Record::new(&owned, config, imported_entry(1, blob, created, period));
                jobs::mac_record(ctx, &mut record, &target)?;
                Ok(Ok(record))
            })
            .await??;
        match self.inner.store.put(name, record.to_bytes()?, 0).await {
            Ok(version) => {
                tracing::info!(key = name, "key imported");
                Ok(self.written(record, version)?.info())
            }
            Err(StoreError::Conflict { .. }) => Err(exists()),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds a version to the imported key `name` from an import `ciphertext`.
    ///
    /// # Errors
    /// `NotFound`; `InvalidRequest` for a key that was not imported and as [`Keyring::import_key`];
    /// HSM and store errors.
    pub async fn import_key_version(
        &self,
        name: &str,
        ciphertext: Vec<u8>,
        hash: ImportHash,
    ) -> Result<KeyInfo> {
        let ciphertext = Arc::new(ciphertext);
        for _ in 0..IMPORT_ATTEMPTS {
            let s = match self.load(name, true).await {
                Err(KeyringError::NotFound) => {
                    return Err(KeyringError::InvalidRequest(format!(
                    "no key found with name {name}; to import a new key, use the import/ endpoint"
                )))
                }
                r => r?,
            };
            if !s.record.versions.iter().any(|v| v.imported) {
                return Err(KeyringError::InvalidRequest(
                    "the import_version endpoint can only be used with an imported key".into(),
                ));
            }
            let c = &s.record.config;
            let (key_type, key_size, ops) = (c.key_type, c.key_size, c.allowed_ops.clone());
            check_importable(key_type)?;
            let next = s.latest() + 1;
            let owned = name.to_owned();
            let ct = ciphertext.clone();
            let blob = self
                .inner
                .hsm
                .run(move |ctx| {
                    let target = jobs::required_seal_target(ctx)?;
                    Ok(
                        match import_l1(ctx, &target, &owned, next, &ops, key_type, &ct, hash)? {
                            Ok((_, size)) if key_type == KeyType::Hmac && size != key_size => {
                                Err(KeyringError::InvalidRequest(format!(
                                    "the imported key is {size} bytes; this hmac key's versions are {key_size}"
                                )))
                            }
                            r => r.map(|(blob, _)| blob),
                        },
                    )
                })
                .await??;
            let stale = std::sync::atomic::AtomicBool::new(false);
            let r = self
                .modify(name, |s| {
                    if s.latest() + 1 != next {
                        stale.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(KeyringError::Conflict);
                    }
                    let mut r = s.record.clone();
                    r.format_version = RECORD_VERSION;
                    let period = r.config.period(&self.inner.policy)?;
                    r.versions.push(imported_entry(
                        next,
                        blob.clone(),
                        self.inner.clock.now(),
                        period,
                    ));
                    Ok(Some((r, false)))
                })
                .await;
            match r {
                Err(KeyringError::Conflict) if stale.load(std::sync::atomic::Ordering::Relaxed) => {
                    continue
                }
                r => {
                    let s = r?;
                    tracing::info!(key = name, version = next, "key version imported");
                    return Ok(s.info());
                }
            }
        }
        Err(KeyringError::Conflict)
    }
}

fn exists() -> KeyringError {
    KeyringError::InvalidRequest(
        "the import path cannot be used with an existing key; use import-version to rotate an existing imported key"
            .into(),
    )
}

fn check_importable(t: KeyType) -> Result<()> {
    if t.blob_algorithm().is_some() {
        Ok(())
    } else {
        Err(KeyringError::InvalidRequest(format!(
            "importing a {t} key is not supported: rootseal imports symmetric keys (aes256-gcm96, aes128-gcm96, hmac); its signing keys are made on the HSM"
        )))
    }
}

fn imported_entry(
    version: u32,
    blob: Vec<u8>,
    created: u64,
    period: crate::lifecycle::Cryptoperiod,
) -> VersionEntry {
    let mut e = VersionEntry::sealed(version, created, B64.encode(blob), period);
    e.imported = true;
    e
}

/// The wrapping pair on the token (private, public), the one with the lowest `CKA_ID` when there
/// are several; `None` when there is none.
fn wrapping_pair(
    ctx: &mut SessionCtx<'_>,
) -> std::result::Result<Option<(ObjectHandle, ObjectHandle)>, Error> {
    let mut ids = Vec::new();
    for h in ctx.find(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(true),
        Attribute::Label(templates::BYOK_LABEL.as_bytes().to_vec()),
    ])? {
        for a in ctx.attributes(h, &[AttributeType::Id])? {
            if let Attribute::Id(id) = a {
                ids.push((id, h));
            }
        }
    }
    ids.sort_by(|a, b| a.0.cmp(&b.0));
    let Some((id, private)) = ids.into_iter().next() else {
        return Ok(None);
    };
    let public = ctx.find(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(true),
        Attribute::Id(id),
    ])?;
    match public.first() {
        Some(p) => Ok(Some((private, *p))),
        None => Err(Error::TokenState(
            "the wrapping key's public half is missing from the token".into(),
        )),
    }
}

/// Unwraps an import ciphertext inside the HSM and seals the key as version `version` of `name`
/// under `root`: the raw blob and the key's length in bytes. A client's mistake is the inner
/// `Err`; the outer one is the HSM's.
#[allow(clippy::too_many_arguments)]
fn import_l1(
    ctx: &mut SessionCtx<'_>,
    root: &crate::types::RootId,
    name: &str,
    version: u32,
    ops: &[KeyOp],
    key_type: KeyType,
    ciphertext: &[u8],
    hash: ImportHash,
) -> std::result::Result<Result<(Vec<u8>, u32)>, Error> {
    let bad = |m: &str| Ok(Err(KeyringError::InvalidRequest(m.to_owned())));
    if ciphertext.len() <= WRAPPED_EPHEMERAL_LEN {
        return bad("provided ciphertext is too short");
    }
    let Some((private, _)) = wrapping_pair(ctx)? else {
        return bad("no wrapping key exists yet: read transit/wrapping_key first");
    };
    let (h, mgf) = hash.mechanism();
    let (wrapped_eph, wrapped_key) = ciphertext.split_at(WRAPPED_EPHEMERAL_LEN);
    let eph = match ctx.unwrap_oaep(private, wrapped_eph, h, mgf, &templates::byok_ephemeral()) {
        Ok(k) => k,
        Err(Error::Integrity(_)) => {
            return bad("the ciphertext does not unwrap under the wrapping key")
        }
        Err(e) if e.recovery() == crate::error::Recovery::None => {
            tracing::debug!(error = %e, hash = hash.name(), "RSA-OAEP unwrap refused by the token");
            return Ok(Err(KeyringError::InvalidRequest(format!(
                "this HSM does not unwrap RSA-OAEP with hash_function {} (SoftHSM2 2.6.1 does OAEP only with SHA-1: use hash_function=SHA1)",
                hash.name()
            ))));
        }
        Err(e) => return Err(e),
    };
    let pk_type = match key_type {
        KeyType::Hmac => cryptoki::object::KeyType::GENERIC_SECRET,
        _ => cryptoki::object::KeyType::AES,
    };
    let want = match key_type {
        KeyType::Aes256Gcm96 => Some(32),
        KeyType::Aes128Gcm96 => Some(16),
        _ => None,
    };
    // KWP pads to 8 bytes and adds one 8-byte block: the wrapped size gives the key's length to
    // within 7 bytes, which for AES (16 or 32) is exact. SoftHSM2 2.6.1 neither takes
    // CKA_VALUE_LEN in an unwrap template nor reports it for an unwrapped key.
    let padded = u32::try_from(wrapped_key.len().saturating_sub(8)).unwrap_or(u32::MAX);
    let fits = match want {
        Some(w) => padded == w,
        None => (32..=512).contains(&padded),
    };
    if !fits || wrapped_key.len() % 8 != 0 {
        ctx.destroy_transient(eph, "ephemeral import key");
        return Ok(Err(KeyringError::InvalidRequest(format!(
            "the imported key is about {padded} bytes, which a {key_type} key cannot be"
        ))));
    }
    let unwrapped = ctx.unwrap_kwp(eph, wrapped_key, &templates::l1_import(pk_type));
    ctx.destroy_transient(eph, "ephemeral import key");
    let k = match unwrapped {
        Ok(k) => k,
        Err(Error::Integrity(_)) => {
            return bad("the wrapped key does not unwrap under the ephemeral key")
        }
        Err(e) => return Err(e),
    };
    let algorithm = key_type
        .blob_algorithm()
        .ok_or_else(|| Error::Internal(format!("{key_type} has no L1 blob")))?;
    let blob = jobs::seal_l1(ctx, root, name, version, ops, k, algorithm)?;
    Ok(Ok((blob, padded)))
}

#[cfg(feature = "test-hooks")]
impl Keyring {
    /// The protection attributes of the BYOK wrapping key pair as the token reports them
    /// (`private`, `public`), for the read-back test of its key class (tests only).
    ///
    /// # Errors
    /// `InvalidRequest` when there is no wrapping key yet; HSM errors.
    pub async fn testing_wrapping_key_attributes(
        &self,
    ) -> Result<Vec<(&'static str, crate::root::RootAttributes)>> {
        self.inner
            .hsm
            .run(|ctx| {
                let Some((private, public)) = wrapping_pair(ctx)? else {
                    return Ok(Err(KeyringError::InvalidRequest("no wrapping key".into())));
                };
                Ok(Ok(vec![
                    ("private", crate::root::object_attributes(ctx, private)?),
                    ("public", crate::root::object_attributes(ctx, public)?),
                ]))
            })
            .await?
    }
}
