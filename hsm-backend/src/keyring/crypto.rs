//! Transit cryptography under a key's L1, inside the HSM: encrypt, decrypt, rewrap, data keys.
//! Each call is one HSM job however many items it carries.

use std::collections::BTreeMap;
use std::sync::Arc;

use cryptoki::object::ObjectHandle;
use zeroize::Zeroizing;

use super::api::{CreateOptions, DecryptItem, EncryptItem, Sealed};
use super::sign::rsa_max_plaintext;
use super::state::{BlobRef, KeyState, PairRef};
use super::{aad, jobs};
use super::{Keyring, Result};
use crate::error::{Error as HsmError, KeyringError, Recovery};
use crate::hsm::SessionCtx;
use crate::lifecycle::{Use, VersionLifecycle};
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
        s.type_supports(s.key_type().supports_encryption(), "encryption")?;
        s.allows(KeyOp::Encrypt)?;
        let v = s.encrypt_version(version)?;
        if s.key_type().is_rsa() {
            return self
                .rsa(&s, Some(v), items.into_iter().map(Rsa::Encrypt).collect())
                .await;
        }
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
        if s.key_type().is_rsa() {
            let out = self
                .rsa(&s, None, items.into_iter().map(Rsa::Decrypt).collect())
                .await?;
            return Ok(out
                .into_iter()
                .map(|r| r.map(|sealed| Zeroizing::new(sealed.bytes)))
                .collect());
        }
        s.type_supports(s.key_type().is_aes(), "decryption")?;
        let min = Processing::of(&s);
        let blobs = s.blobs.clone();
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let mut out = Vec::with_capacity(items.len());
                for it in &items {
                    out.push(decrypt_one(ctx, &blobs, &min, it)?);
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
        if s.key_type().is_rsa() {
            return self
                .rsa(&s, Some(v), items.into_iter().map(Rsa::Rewrap).collect())
                .await;
        }
        s.type_supports(s.key_type().is_aes(), "rewrap")?;
        let target = s.blob(v)?;
        let min = Processing::of(&s);
        let blobs = s.blobs.clone();
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let k = jobs::l1_handle(ctx, &target)?;
                let mut out = Vec::with_capacity(items.len());
                for it in &items {
                    out.push(match decrypt_one(ctx, &blobs, &min, it)? {
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
        s.type_supports(s.key_type().is_aes(), "data key generation")?;
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

    /// RSA-OAEP encrypt, decrypt or rewrap of `items` under RSA key `s` inside the HSM, in one
    /// job (`target`: the version new ciphertexts use). A decrypt answers its plaintext in
    /// [`Sealed::bytes`].
    async fn rsa(
        &self,
        s: &KeyState,
        target: Option<u32>,
        items: Vec<Rsa>,
    ) -> Result<Vec<Result<Sealed>>> {
        let t = s.key_type();
        let max = rsa_max_plaintext(t);
        let min = Processing::of(s);
        let pairs = s.pairs.clone();
        let target = match target {
            Some(v) => Some((v, s.pair(v)?)),
            None => None,
        };
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let mut out = Vec::with_capacity(items.len());
                for it in &items {
                    let opened = match it {
                        Rsa::Encrypt(e) => {
                            if !e.aad.is_empty() {
                                out.push(Err(KeyringError::InvalidRequest(
                                    "associated_data is not supported by rsa keys".into(),
                                )));
                                continue;
                            }
                            Ok(Zeroizing::new(e.plaintext.to_vec()))
                        }
                        Rsa::Decrypt(d) | Rsa::Rewrap(d) => rsa_open(ctx, &pairs, &min, d)?,
                    };
                    let pt = match opened {
                        Ok(pt) => pt,
                        Err(e) => {
                            out.push(Err(e));
                            continue;
                        }
                    };
                    if let Rsa::Decrypt(d) = it {
                        out.push(Ok(Sealed {
                            version: d.sealed.version,
                            bytes: pt.to_vec(),
                        }));
                        continue;
                    }
                    if pt.len() > max {
                        out.push(Err(KeyringError::InvalidRequest(format!(
                            "plaintext too long: an rsa key of this size encrypts at most {max} bytes"
                        ))));
                        continue;
                    }
                    let Some((v, pair)) = &target else {
                        out.push(Err(KeyringError::internal("no target version")));
                        continue;
                    };
                    let (_, public) = jobs::pair_handles(ctx, &pair.id)?;
                    out.push(match ctx.oaep_encrypt(public, &pt) {
                        Ok(bytes) => Ok(Sealed { version: *v, bytes }),
                        Err(e) if e.recovery() != Recovery::None => return Err(e),
                        Err(e) => Err(KeyringError::from(e)),
                    });
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
        let versions: Vec<u32> = versions.by_ref().collect();
        let mut s = self.load(name, false).await?;
        s.permits(op)?;
        let latest = s.latest();
        if versions.iter().any(|v| *v > latest) {
            s = self.load(name, true).await?;
            s.permits(op)?;
        }
        // A bulk unseal opens one batch key: its version must still process. Decrypt and
        // rewrap check each item's version (a refusal is that item's error).
        if op == KeyOp::BulkSeal {
            for v in &versions {
                s.check_use(*v, Use::Process)?;
            }
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

/// What decides whether a ciphertext's version may be opened now: `min_decryption_version` and
/// each version's lifecycle at the time the request started (data already in memory).
struct Processing {
    available: u32,
    min: u32,
    now: u64,
    lifecycle: Arc<BTreeMap<u32, VersionLifecycle>>,
}

impl Processing {
    fn of(s: &KeyState) -> Processing {
        Processing {
            available: s.record.config.min_available_version,
            min: s.record.config.min_decryption_version,
            now: s.clock.now(),
            lifecycle: s.lifecycle.clone(),
        }
    }

    /// Refuses version `v`: below `min_decryption_version`, or its lifecycle refuses processing.
    fn check(&self, v: u32) -> Result<()> {
        if v < self.available {
            return Err(KeyringError::Lifecycle(
                crate::lifecycle::LifecycleRefusal {
                    version: v,
                    reason: crate::lifecycle::Refusal::State(
                        crate::lifecycle::LifecycleState::Destroyed,
                    ),
                },
            ));
        }
        if v < self.min {
            return Err(KeyringError::VersionTooOld);
        }
        match self.lifecycle.get(&v) {
            Some(l) => l
                .check(v, Use::Process, self.now)
                .map_err(KeyringError::Lifecycle),
            None => Ok(()),
        }
    }
}

/// Decrypts one item with the blob of its version. Every way a ciphertext can fail to open (an
/// unknown version, a bad tag) is the one opaque `InvalidCiphertext`; the detail goes to the log
/// at debug.
fn decrypt_one(
    ctx: &mut SessionCtx<'_>,
    blobs: &BTreeMap<u32, Arc<BlobRef>>,
    min: &Processing,
    it: &DecryptItem,
) -> std::result::Result<Result<Zeroizing<Vec<u8>>>, HsmError> {
    if let Err(e) = aad::check_client(&it.aad) {
        return Ok(Err(e));
    }
    let v = it.sealed.version;
    if let Err(e) = min.check(v) {
        return Ok(Err(e));
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

/// One RSA item.
enum Rsa {
    Encrypt(EncryptItem),
    Decrypt(DecryptItem),
    Rewrap(DecryptItem),
}

/// Opens one RSA-OAEP ciphertext with the private key of its version (the one opaque
/// `InvalidCiphertext` for every way it can fail).
fn rsa_open(
    ctx: &mut SessionCtx<'_>,
    pairs: &BTreeMap<u32, Arc<PairRef>>,
    min: &Processing,
    it: &DecryptItem,
) -> std::result::Result<Result<Zeroizing<Vec<u8>>>, HsmError> {
    if !it.aad.is_empty() {
        return Ok(Err(KeyringError::InvalidRequest(
            "associated_data is not supported by rsa keys".into(),
        )));
    }
    let v = it.sealed.version;
    if let Err(e) = min.check(v) {
        return Ok(Err(e));
    }
    let Some(p) = pairs.get(&v) else {
        return Ok(Err(KeyringError::InvalidCiphertext));
    };
    let (private, _) = jobs::pair_handles(ctx, &p.id)?;
    match ctx.oaep_decrypt(private, &it.sealed.bytes) {
        Ok(pt) => Ok(Ok(pt)),
        Err(e) if e.recovery() != Recovery::None => Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "rsa ciphertext failed to open");
            Ok(Err(KeyringError::InvalidCiphertext))
        }
    }
}
