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
        self.encrypt_in_context(name, version, items, Vec::new(), create_if_missing)
            .await
    }

    /// [`Keyring::encrypt`] with Vault's `context` per item (`contexts[i]` for `items[i]`; empty:
    /// none). A derived key requires one for each item and binds it into the item's AAD inside the
    /// HSM (`aad::derived`); a key that is not derived refuses one. An upsert with contexts makes
    /// a derived key, as Vault's.
    ///
    /// # Errors
    /// As [`Keyring::encrypt`].
    pub async fn encrypt_in_context(
        &self,
        name: &str,
        version: Option<u32>,
        items: Vec<EncryptItem>,
        contexts: Vec<Vec<u8>>,
        create_if_missing: bool,
    ) -> Result<Vec<Result<Sealed>>> {
        check_contexts(items.len(), &contexts)?;
        let s = match self.load(name, false).await {
            Err(KeyringError::NotFound) if create_if_missing => {
                let opts = CreateOptions {
                    derived: !contexts.is_empty(),
                    ..CreateOptions::default()
                };
                self.create_missing(name, opts).await?
            }
            r => r?,
        };
        s.type_supports(s.key_type().supports_encryption(), "encryption")?;
        s.allows(KeyOp::Encrypt)?;
        let (s, v) = self.protect_with(s, version, uses(items.len())).await?;
        if s.key_type().is_rsa() {
            if !contexts.is_empty() {
                return Err(not_derived());
            }
            return self
                .rsa(&s, Some(v), items.into_iter().map(Rsa::Encrypt).collect())
                .await;
        }
        let aads = item_aads(
            s.record.config.derived,
            &contexts,
            items.iter().map(|i| &i.aad),
        );
        let convergent = s.record.config.convergent;
        let blob = s.blob(v)?;
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let k = jobs::l1_handle(ctx, &blob)?;
                let mut out = Vec::with_capacity(items.len());
                for (it, aad) in items.iter().zip(&aads) {
                    out.push(match aad {
                        Ok(aad) => seal_one(ctx, k, v, convergent, aad, &it.plaintext)?,
                        Err(m) => Err(KeyringError::InvalidRequest(m.clone())),
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
        self.decrypt_in_context(name, items, Vec::new()).await
    }

    /// [`Keyring::decrypt`] with Vault's `context` per item (see
    /// [`Keyring::encrypt_in_context`]).
    ///
    /// # Errors
    /// As [`Keyring::decrypt`].
    pub async fn decrypt_in_context(
        &self,
        name: &str,
        items: Vec<DecryptItem>,
        contexts: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Zeroizing<Vec<u8>>>>> {
        check_contexts(items.len(), &contexts)?;
        let s = self
            .load_for_versions(name, KeyOp::Decrypt, items.iter().map(|i| i.sealed.version))
            .await?;
        if s.key_type().is_rsa() {
            if !contexts.is_empty() {
                return Err(not_derived());
            }
            let out = self
                .rsa(&s, None, items.into_iter().map(Rsa::Decrypt).collect())
                .await?;
            return Ok(out
                .into_iter()
                .map(|r| r.map(|sealed| Zeroizing::new(sealed.bytes)))
                .collect());
        }
        s.type_supports(s.key_type().is_aes(), "decryption")?;
        let aads = item_aads(
            s.record.config.derived,
            &contexts,
            items.iter().map(|i| &i.aad),
        );
        let min = Processing::of(&s);
        let blobs = s.blobs.clone();
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let mut out = Vec::with_capacity(items.len());
                for (it, aad) in items.iter().zip(&aads) {
                    out.push(match aad {
                        Ok(aad) => decrypt_one(ctx, &blobs, &min, it, aad)?,
                        Err(m) => Err(KeyringError::InvalidRequest(m.clone())),
                    });
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
        self.rewrap_in_context(name, version, items, Vec::new())
            .await
    }

    /// [`Keyring::rewrap`] with Vault's `context` per item, the same for both halves (see
    /// [`Keyring::encrypt_in_context`]).
    ///
    /// # Errors
    /// As [`Keyring::rewrap`].
    pub async fn rewrap_in_context(
        &self,
        name: &str,
        version: Option<u32>,
        items: Vec<DecryptItem>,
        contexts: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Sealed>>> {
        check_contexts(items.len(), &contexts)?;
        let s = self
            .load_for_versions(name, KeyOp::Decrypt, items.iter().map(|i| i.sealed.version))
            .await?;
        s.allows(KeyOp::Encrypt)?;
        let (s, v) = self.protect_with(s, version, uses(items.len())).await?;
        if s.key_type().is_rsa() {
            if !contexts.is_empty() {
                return Err(not_derived());
            }
            return self
                .rsa(&s, Some(v), items.into_iter().map(Rsa::Rewrap).collect())
                .await;
        }
        s.type_supports(s.key_type().is_aes(), "rewrap")?;
        let aads = item_aads(
            s.record.config.derived,
            &contexts,
            items.iter().map(|i| &i.aad),
        );
        let convergent = s.record.config.convergent;
        let target = s.blob(v)?;
        let min = Processing::of(&s);
        let blobs = s.blobs.clone();
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let k = jobs::l1_handle(ctx, &target)?;
                let mut out = Vec::with_capacity(items.len());
                for (it, aad) in items.iter().zip(&aads) {
                    let aad = match aad {
                        Ok(a) => a,
                        Err(m) => {
                            out.push(Err(KeyringError::InvalidRequest(m.clone())));
                            continue;
                        }
                    };
                    out.push(match decrypt_one(ctx, &blobs, &min, it, aad)? {
                        Ok(pt) => seal_one(ctx, k, v, convergent, aad, &pt)?,
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
        if s.record.config.derived {
            return Err(KeyringError::InvalidRequest(
                "data keys under a derived key are not supported: use a key without derivation"
                    .into(),
            ));
        }
        let (s, v) = self.protect_with(s, version, uses(count)).await?;
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
        // A compromised version a ceremony lets decrypt: each use audited before it happens.
        // (Verify is never refused by the lifecycle, and not a use of this kind.)
        let what = match op {
            KeyOp::BulkSeal => Some("bulk.unseal"),
            KeyOp::Decrypt => Some("decrypt"),
            _ => None,
        };
        if let Some(what) = what {
            self.audit_compromised_uses(&s, &versions, what).await?;
        }
        Ok(s)
    }
}

/// Each item's AAD ([`aad::for_item`]), checked before the HSM job; a refusal is its message (the
/// job may run more than once, on a fresh session, so the results must be reusable).
fn item_aads<'a>(
    derived: bool,
    contexts: &[Vec<u8>],
    client: impl Iterator<Item = &'a Vec<u8>>,
) -> Vec<std::result::Result<Vec<u8>, String>> {
    client
        .enumerate()
        .map(|(i, a)| {
            aad::for_item(derived, contexts.get(i).map(Vec::as_slice), a).map_err(|e| e.to_string())
        })
        .collect()
}

/// `n` items as a count of uses (`usage.rs`).
fn uses(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Contexts come one per item or not at all.
fn check_contexts(items: usize, contexts: &[Vec<u8>]) -> Result<()> {
    if contexts.is_empty() || contexts.len() == items {
        Ok(())
    } else {
        Err(KeyringError::InvalidRequest(
            "context should be set either in all the request blocks or in none".into(),
        ))
    }
}

fn not_derived() -> KeyringError {
    KeyringError::InvalidRequest(
        "key was not created as a derived key: 'context' is not allowed".into(),
    )
}

/// Encrypts one item, with the convergent nonce when the key is convergent.
fn seal_one(
    ctx: &mut SessionCtx<'_>,
    key: ObjectHandle,
    v: u32,
    convergent: bool,
    aad: &[u8],
    plaintext: &[u8],
) -> std::result::Result<Result<Sealed>, HsmError> {
    if !convergent {
        return encrypt_one(ctx, key, v, aad, plaintext);
    }
    // The nonce is a pseudorandom function of everything the ciphertext authenticates: the first
    // 96 bits of AES_L1(SHA-256(domain ‖ len(aad) ‖ aad ‖ plaintext)[..16]), the AES inside the
    // HSM. Equal inputs give equal ciphertexts (the point of convergence); a nonce repeats only
    // with its whole input, so GCM never sees one nonce with two messages. The AAD of a derived
    // key holds its context.
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    h.update(b"rootseal:convergent-nonce:v1:");
    h.update(&u64::try_from(aad.len()).unwrap_or(u64::MAX).to_be_bytes());
    h.update(aad);
    h.update(plaintext);
    let d = h.finish();
    let mut block = [0u8; 16];
    block.copy_from_slice(&d.as_ref()[..16]);
    let nonce = match ctx.aes_block(key, &block) {
        Ok(b) => b,
        Err(e) if e.recovery() != Recovery::None => return Err(e),
        Err(e) => return Ok(Err(KeyringError::from(e))),
    };
    let mut iv = [0u8; 12];
    iv.copy_from_slice(&nonce[..12]);
    match ctx.gcm_encrypt_with_iv(key, iv, aad, plaintext) {
        Ok(bytes) => Ok(Ok(Sealed { version: v, bytes })),
        Err(e) if e.recovery() != Recovery::None => Err(e),
        Err(e) => Ok(Err(KeyringError::from(e))),
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
    aad: &[u8],
) -> std::result::Result<Result<Zeroizing<Vec<u8>>>, HsmError> {
    let v = it.sealed.version;
    if let Err(e) = min.check(v) {
        return Ok(Err(e));
    }
    let Some(b) = blobs.get(&v) else {
        tracing::debug!(version = v, "ciphertext names an unknown key version");
        return Ok(Err(KeyringError::InvalidCiphertext));
    };
    let k = jobs::l1_handle(ctx, b)?;
    match ctx.gcm_decrypt(k, aad, &it.sealed.bytes) {
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
