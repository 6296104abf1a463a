//! A loaded, verified key as the keyring caches it, and its parsed blobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::api::KeyInfo;
use super::record::Record;
use crate::blob::{self, BlobError, SealedBlob};
use crate::error::KeyringError;
use crate::types::KeyOp;

/// A parsed blob ready for the HSM, with the digest that keys the L1 session-object cache.
pub(super) struct BlobRef {
    pub(super) digest: [u8; 32],
    pub(super) parsed: SealedBlob,
}

impl BlobRef {
    /// Parses a raw sealed blob (structure only; the HSM checks its MAC when it is used).
    pub(super) fn new(raw: &[u8]) -> Result<BlobRef, BlobError> {
        let parsed = blob::decode(raw)?;
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, raw);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(d.as_ref());
        Ok(BlobRef { digest, parsed })
    }
}

/// A loaded key: its record (whose MAC was verified, or which this process wrote), the store
/// version it was read at, and its parsed blobs by version.
pub(super) struct KeyState {
    pub(super) record: Record,
    pub(super) store_version: u64,
    pub(super) blobs: BTreeMap<u32, Arc<BlobRef>>,
    pub(super) loaded_at: Instant,
}

impl KeyState {
    /// Builds the state of `record` (already MAC-checked or just written) stored at
    /// `store_version`: parses every blob and checks that each belongs to this key and version.
    pub(super) fn from_record(
        record: Record,
        store_version: u64,
    ) -> Result<KeyState, KeyringError> {
        let name = record.name.as_str();
        let mut blobs = BTreeMap::new();
        for v in &record.versions {
            let raw = B64.decode(&v.blob).map_err(|_| {
                KeyringError::integrity(format!("key {name} v{}: blob is not base64", v.version))
            })?;
            let b = BlobRef::new(&raw).map_err(|e| match e {
                BlobError::UnsupportedVersion(n) => KeyringError::UnsupportedFormat(n),
                e => KeyringError::integrity(format!(
                    "key {name} v{}: sealed blob rejected: {e}",
                    v.version
                )),
            })?;
            if b.parsed.header.key_name != name || b.parsed.header.key_version != v.version {
                return Err(KeyringError::integrity(format!(
                    "key {name} v{}: blob belongs to another key or version",
                    v.version
                )));
            }
            blobs.insert(v.version, Arc::new(b));
        }
        if blobs.is_empty() {
            return Err(KeyringError::integrity(format!(
                "key {name}: record has no versions"
            )));
        }
        Ok(KeyState {
            record,
            store_version,
            blobs,
            loaded_at: Instant::now(),
        })
    }

    /// The same state, marked as freshly checked against the store.
    pub(super) fn refreshed(&self) -> KeyState {
        KeyState {
            record: self.record.clone(),
            store_version: self.store_version,
            blobs: self.blobs.clone(),
            loaded_at: Instant::now(),
        }
    }

    /// The newest version.
    pub(super) fn latest(&self) -> u32 {
        self.blobs.keys().next_back().copied().unwrap_or(0)
    }

    /// The version new ciphertexts use when the caller names none: the latest, or
    /// `min_encryption_version` when that is higher.
    pub(super) fn default_encrypt_version(&self) -> u32 {
        self.latest().max(self.record.config.min_encryption_version)
    }

    /// The version an encrypt asked for `version` uses (Vault's `key_version` rules).
    pub(super) fn encrypt_version(&self, version: Option<u32>) -> Result<u32, KeyringError> {
        let min = self.record.config.min_encryption_version;
        match version {
            None | Some(0) => Ok(self.default_encrypt_version()),
            Some(v) if v > self.latest() => Err(KeyringError::InvalidRequest(
                "requested version for encryption is higher than the latest key version".into(),
            )),
            Some(v) if v < min => Err(KeyringError::InvalidRequest(
                "requested version for encryption is less than the minimum encryption key version"
                    .into(),
            )),
            Some(v) => Ok(v),
        }
    }

    /// The blob of version `v`.
    pub(super) fn blob(&self, v: u32) -> Result<Arc<BlobRef>, KeyringError> {
        self.blobs.get(&v).cloned().ok_or(KeyringError::NotFound)
    }

    /// The description Vault's `GET transit/keys/:name` gives.
    pub(super) fn info(&self) -> KeyInfo {
        let c = &self.record.config;
        KeyInfo {
            name: self.record.name.clone(),
            key_type: "aes256-gcm96",
            latest_version: self.latest(),
            min_decryption_version: c.min_decryption_version,
            min_encryption_version: c.min_encryption_version,
            deletion_allowed: c.deletion_allowed,
            auto_rotate_period_secs: c.auto_rotate_period_secs,
            versions: self
                .record
                .versions
                .iter()
                .map(|v| (v.version, v.created))
                .collect(),
            allowed_ops: c.allowed_ops.clone(),
        }
    }

    /// Refuses `op` unless the key allows it.
    pub(super) fn allows(&self, op: KeyOp) -> Result<(), KeyringError> {
        if self.record.config.allowed_ops.contains(&op) {
            Ok(())
        } else {
            Err(KeyringError::PolicyDenied(op.name()))
        }
    }
}
