//! Transit cryptography under a key's L1, inside the HSM: encrypt, decrypt, rewrap, data keys.
//! Each call is one HSM job however many items it carries.

use std::collections::BTreeMap;
use std::sync::Arc;

use cryptoki::object::ObjectHandle;
use zeroize::Zeroizing;

use super::api::{CreateOptions, DecryptItem, EncryptItem, Sealed};
use super::state::{BlobRef, KeyState};
use super::{aad, jobs};
use super::{Keyring, Result};
use crate::error::{Error as HsmError, KeyringError, Recovery};
use crate::hsm::SessionCtx;
use crate::types::KeyOp;

/// Largest Level 2 data key, in bytes.
const MAX_DATA_KEY: usize = 64;
/// Most data keys one `datakeys` request may ask for.
pub const MAX_DATA_KEYS: usize = 1000;

impl Keyring {
    /// Encrypts `items` under key `name` (version `version`, default the latest), inside the HSM
    /// with AES-256-GCM, in one HSM job. Creates the key first when `create_if_missing` (Vault's
    /// upsert: one store read and one write before the encrypt). Per-item failures come back per
    /// item.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, `InvalidRequest` (bad version), HSM and store errors.
    pub async fn encrypt(
        &self,
        name: &str,
        version: Option<u32>,
        items: Vec<EncryptItem>,
        create_if_missing: bool,
    ) -> Result<Vec<Result<Sealed>>> {
        let s = match self.load(name, false).await {
            Err(KeyringError::NotFound) if create_if_missing => {
                self.create_missing(name, CreateOptions::default()).await?
            }
            r => r?,
        };
        s.allows(KeyOp::Encrypt)?;
        let v = s.encrypt_version(version)?;
        let blob = s.blob(v)?;
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let k = jobs::l1_handle(ctx, &blob)?;
                let mut out = Vec::with_capacity(items.len());
                for it in &items {
                    out.push(match aad::check_client(&it.aad) {
                        Ok(()) => encrypt_one(ctx, k, v, &it.aad, &it.plaintext)?,
                        Err(e) => Err(e),
                    });
                }
                Ok(out)
            })
            .await?)
    }

    /// Decrypts `items` under key `name` inside the HSM, in one HSM job. A ciphertext that does not
    /// verify is `InvalidCiphertext` for that item.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, HSM and store errors.
    pub async fn decrypt(
        &self,
        name: &str,
        items: Vec<DecryptItem>,
    ) -> Result<Vec<Result<Zeroizing<Vec<u8>>>>> {
        let s = self
            .load_for_versions(name, KeyOp::Decrypt, items.iter().map(|i| i.sealed.version))
            .await?;
        let min = s.record.config.min_decryption_version;
        let blobs = s.blobs.clone();
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let mut out = Vec::with_capacity(items.len());
                for it in &items {
                    out.push(decrypt_one(ctx, &blobs, min, it)?);
                }
                Ok(out)
            })
            .await?)
    }

    /// Re-encrypts `items` under version `version` of key `name` (default the latest): each is
    /// decrypted and encrypted again inside one HSM job, so no plaintext leaves the keyring.
    /// Per-item failures (of either half) come back per item.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, `InvalidRequest` (bad version), HSM and store errors.
    pub async fn rewrap(
        &self,
        name: &str,
        version: Option<u32>,
        items: Vec<DecryptItem>,
    ) -> Result<Vec<Result<Sealed>>> {
        let s = self
            .load_for_versions(name, KeyOp::Decrypt, items.iter().map(|i| i.sealed.version))
            .await?;
        s.allows(KeyOp::Encrypt)?;
        let v = s.encrypt_version(version)?;
        let target = s.blob(v)?;
        let min = s.record.config.min_decryption_version;
        let blobs = s.blobs.clone();
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let k = jobs::l1_handle(ctx, &target)?;
                let mut out = Vec::with_capacity(items.len());
                for it in &items {
                    out.push(match decrypt_one(ctx, &blobs, min, it)? {
                        Ok(pt) => encrypt_one(ctx, k, v, &it.aad, &pt)?,
                        Err(e) => Err(e),
                    });
                }
                Ok(out)
            })
            .await?)
    }

    /// A new Level 2 data key of `len` bytes from the HSM RNG, and its ciphertext under version
    /// `version` of key `name` (default the latest; Vault's `key_version` rules), in one HSM job.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, `InvalidRequest` (bad length or version), HSM errors.
    pub async fn generate_data_key(
        &self,
        name: &str,
        len: usize,
        version: Option<u32>,
    ) -> Result<(Zeroizing<Vec<u8>>, Sealed)> {
        let mut keys = self.generate_data_keys(name, len, version, 1).await?;
        keys.pop()
            .ok_or_else(|| KeyringError::internal("no data key generated"))
    }

    /// `count` new Level 2 data keys of `len` bytes each (Vault's `datakeys`), each sealed under
    /// version `version` of key `name` (default the latest), in one HSM job.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, `InvalidRequest` (bad length, version or count), HSM errors.
    pub async fn generate_data_keys(
        &self,
        name: &str,
        len: usize,
        version: Option<u32>,
        count: usize,
    ) -> Result<Vec<(Zeroizing<Vec<u8>>, Sealed)>> {
        if !(1..=MAX_DATA_KEY).contains(&len) {
            return Err(KeyringError::InvalidRequest(
                "invalid data key length".into(),
            ));
        }
        if !(1..=MAX_DATA_KEYS).contains(&count) {
            return Err(KeyringError::InvalidRequest(format!(
                "count must be between 1 and {MAX_DATA_KEYS}"
            )));
        }
        let s = self.load(name, false).await?;
        s.allows(KeyOp::Datakey)?;
        let v = s.encrypt_version(version)?;
        let blob = s.blob(v)?;
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let k = jobs::l1_handle(ctx, &blob)?;
                let mut out = Vec::with_capacity(count);
                for _ in 0..count {
                    let mut dk = Zeroizing::new(vec![0u8; len]);
                    ctx.pooled_random(&mut dk)?;
                    let bytes = ctx.gcm_encrypt(k, &[], &dk)?;
                    out.push((dk, Sealed { version: v, bytes }));
                }
                Ok(out)
            })
            .await?)
    }

    /// Loads key `name` for `op` on ciphertexts of `versions`: when one names a version newer than
    /// the cached key knows, another replica may have rotated, so the store is asked again before
    /// refusing.
    pub(super) async fn load_for_versions(
        &self,
        name: &str,
        op: KeyOp,
        mut versions: impl Iterator<Item = u32>,
    ) -> Result<Arc<KeyState>> {
        let s = self.load(name, false).await?;
        s.allows(op)?;
        let latest = s.latest();
        if versions.any(|v| v > latest) {
            let s = self.load(name, true).await?;
            s.allows(op)?;
            return Ok(s);
        }
        Ok(s)
    }
}

/// Encrypts one item under `key` (version `v`). A failure that recovery can mend fails the job
/// (it is retried on a fresh session); any other fails only this item.
fn encrypt_one(
    ctx: &mut SessionCtx<'_>,
    key: ObjectHandle,
    v: u32,
    aad: &[u8],
    plaintext: &[u8],
) -> std::result::Result<Result<Sealed>, HsmError> {
    match ctx.gcm_encrypt(key, aad, plaintext) {
        Ok(bytes) => Ok(Ok(Sealed { version: v, bytes })),
        Err(e) if e.recovery() != Recovery::None => Err(e),
        Err(e) => Ok(Err(KeyringError::from(e))),
    }
}

/// Decrypts one item with the blob of its version. Every way a ciphertext can fail to open (an
/// unknown version, a bad tag) is the one opaque `InvalidCiphertext`; the detail goes to the log
/// at debug.
fn decrypt_one(
    ctx: &mut SessionCtx<'_>,
    blobs: &BTreeMap<u32, Arc<BlobRef>>,
    min: u32,
    it: &DecryptItem,
) -> std::result::Result<Result<Zeroizing<Vec<u8>>>, HsmError> {
    if let Err(e) = aad::check_client(&it.aad) {
        return Ok(Err(e));
    }
    let v = it.sealed.version;
    if v < min {
        return Ok(Err(KeyringError::VersionTooOld));
    }
    let Some(b) = blobs.get(&v) else {
        tracing::debug!(version = v, "ciphertext names an unknown key version");
        return Ok(Err(KeyringError::InvalidCiphertext));
    };
    let k = jobs::l1_handle(ctx, b)?;
    match ctx.gcm_decrypt(k, &it.aad, &it.sealed.bytes) {
        Ok(pt) => Ok(Ok(pt)),
        Err(e) if e.recovery() != Recovery::None => Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "ciphertext failed to verify");
            Ok(Err(KeyringError::InvalidCiphertext))
        }
    }
}
