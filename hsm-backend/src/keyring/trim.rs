//! Vault's `transit/keys/:name/trim`: removes every version below `min_available_version` from
//! the key's record, so their sealed blobs (symmetric types) are gone from the store and their
//! token key pairs (signing types) are destroyed: crypto-shredding of what they protected. The
//! store's older versions of the record are destroyed too ([`KekStore::shred_history`]: Vault KV
//! v2's `destroy`). A ciphertext of a trimmed version is refused as `key version N is destroyed`.
//!
//! [`KekStore::shred_history`]: crate::store::KekStore::shred_history

use super::api::KeyInfo;
use super::{Keyring, Result};
use crate::error::KeyringError;

impl Keyring {
    /// Trims key `name` to versions `min_available_version` and newer (Vault's rules: at least
    /// 1, never lower than before, at most `min_decryption_version` and, when set,
    /// `min_encryption_version`). Trimming to the current value changes nothing.
    ///
    /// # Errors
    /// `InvalidRequest` for a value Vault would refuse, `NotFound`, HSM and store errors.
    pub async fn trim_key(&self, name: &str, min_available_version: u32) -> Result<KeyInfo> {
        let bad = |m: &str| Err(KeyringError::InvalidRequest(m.into()));
        let mut removed = Vec::new();
        let s = self
            .modify(name, |s| {
                let c = &s.record.config;
                if min_available_version == 0 {
                    return bad("minimum available version should be positive");
                }
                if min_available_version < c.min_available_version {
                    return bad("minimum available version cannot be decremented");
                }
                if min_available_version > c.min_decryption_version {
                    return bad(
                        "minimum available version should not be greater than minimum decryption version",
                    );
                }
                if c.min_encryption_version != 0
                    && min_available_version > c.min_encryption_version
                {
                    return bad(
                        "minimum available version should not be greater than minimum encryption version",
                    );
                }
                let mut r = s.record.clone();
                r.config.min_available_version = min_available_version;
                removed = r
                    .versions
                    .iter()
                    .filter(|v| v.version < min_available_version)
                    .cloned()
                    .collect();
                r.versions.retain(|v| v.version >= min_available_version);
                if r.config == s.record.config && removed.is_empty() {
                    return Ok(None);
                }
                Ok(Some((r, false)))
            })
            .await?;
        // Crypto-shredding: the store's older versions of the record (Vault KV v2 keeps them)
        // still hold the removed blobs. Always, so a trim retried after a failure here finishes.
        self.inner
            .store
            .shred_history(name, s.store_version)
            .await?;
        if !removed.is_empty() {
            let mut gone = s.record.clone();
            gone.versions = removed;
            self.discard_pairs(&gone).await;
            tracing::info!(
                key = name,
                below = min_available_version,
                versions = gone.versions.len(),
                "key versions trimmed (blobs destroyed)"
            );
        }
        Ok(s.info())
    }
}
