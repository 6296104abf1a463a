//! Bulk-seal batch keys: a fresh key per batch from the HSM RNG, sealed under the L1 inside the
//! HSM (one HSM job per batch), opened again inside the HSM.

use zeroize::Zeroizing;

use super::{aad, jobs, Keyring, Result};
use crate::error::{Error as HsmError, KeyringError};
use crate::types::KeyOp;

/// A fresh bulk-seal batch key: its plaintext for software AES-GCM, and its wrapped form
/// (sealed under the L1 version inside the HSM) that travels with every item.
pub struct BatchKey {
    /// The L1 version that wraps it.
    pub version: u32,
    /// The batch key sealed under that L1 version (`iv ‖ ct ‖ tag`).
    pub wrapped: Vec<u8>,
    /// The 32-byte key (zeroized on drop).
    pub key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for BatchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A fresh 256-bit bulk-seal batch key from the HSM RNG, sealed under the latest version of
    /// key `name` inside the HSM (one HSM job: at most one `C_GenerateRandom` and one
    /// `C_Encrypt`, once the L1 is cached).
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, HSM errors.
    pub async fn new_batch_key(&self, name: &str) -> Result<BatchKey> {
        let s = self.load(name, false).await?;
        s.allows(KeyOp::BulkSeal)?;
        // One use of the L1 (the batch key's own items use the batch key: `usage.rs`).
        let (s, v) = self.protect_with(s, None, 1).await?;
        let blob = s.blob(v)?;
        let aad = aad::batch_key(name, v);
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let k = jobs::l1_handle(ctx, &blob)?;
                let mut key = Zeroizing::new([0u8; 32]);
                ctx.pooled_random(key.as_mut())?;
                let wrapped = ctx.gcm_encrypt(k, &aad, key.as_ref())?;
                Ok(BatchKey {
                    version: v,
                    wrapped,
                    key,
                })
            })
            .await?)
    }

    /// Unseals a batch key made by [`Keyring::new_batch_key`] inside the HSM.
    ///
    /// # Errors
    /// `InvalidCiphertext` when it does not verify under key `name` version `version`;
    /// `VersionTooOld`, `NotFound`, `PolicyDenied`, HSM errors.
    pub async fn open_batch_key(
        &self,
        name: &str,
        version: u32,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>> {
        let s = self
            .load_for_versions(name, KeyOp::BulkSeal, std::iter::once(version))
            .await?;
        if version < s.record.config.min_decryption_version {
            return Err(KeyringError::VersionTooOld);
        }
        let blob = s
            .blobs
            .get(&version)
            .cloned()
            .ok_or(KeyringError::InvalidCiphertext)?;
        let aad = aad::batch_key(name, version);
        let wrapped = wrapped.to_vec();
        let r = self
            .inner
            .hsm
            .run(move |ctx| {
                let k = jobs::l1_handle(ctx, &blob)?;
                ctx.gcm_decrypt(k, &aad, &wrapped)
            })
            .await;
        match r {
            Ok(pt) => {
                let arr = <[u8; 32]>::try_from(pt.as_slice())
                    .map_err(|_| KeyringError::InvalidCiphertext)?;
                Ok(Zeroizing::new(arr))
            }
            Err(HsmError::Integrity(what)) => {
                tracing::debug!(what, "batch key failed to verify");
                Err(KeyringError::InvalidCiphertext)
            }
            Err(e) => Err(e.into()),
        }
    }
}
