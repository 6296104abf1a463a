//! A loaded, verified key as the keyring caches it, and its parsed blobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::api::{KeyInfo, VersionInfo};
use super::clock::Clock;
use super::counter::Usage;
use super::record::Record;
use crate::blob::{self, BlobError, SealedBlob};
use crate::error::KeyringError;
use crate::lifecycle::{LifecyclePolicy, Use, VersionLifecycle};
use crate::types::{KeyOp, KeyType};

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

/// A signing key version: the `CKA_ID` of its token key pair and its public key (DER SPKI).
pub(super) struct PairRef {
    pub(super) id: [u8; 16],
    pub(super) public_key: Vec<u8>,
}

/// A loaded key: its record (whose MAC was verified, or which this process wrote), the store
/// version it was read at, and its parsed blobs (symmetric types) or key pairs (signing types)
/// by version.
pub(super) struct KeyState {
    pub(super) record: Record,
    pub(super) store_version: u64,
    pub(super) blobs: BTreeMap<u32, Arc<BlobRef>>,
    pub(super) pairs: BTreeMap<u32, Arc<PairRef>>,
    /// Each version's lifecycle: recorded (format 3) or derived (formats 1 and 2).
    pub(super) lifecycle: Arc<BTreeMap<u32, VersionLifecycle>>,
    /// The keyring's clock, which every lifecycle check reads.
    pub(super) clock: Clock,
    /// Each AES version's encryptions reserved by this process and not yet spent (`usage.rs`),
    /// kept from the state this one replaces while the version's key material is the same.
    pub(super) usage: BTreeMap<u32, Arc<Usage>>,
    /// Whether some version is compromised with a ceremony's decision to let it decrypt (its uses
    /// are audited: `compromise.rs`); false keeps the decrypt path free of that scan.
    pub(super) compromised_processing: bool,
    pub(super) loaded_at: Instant,
}

/// Parses a 32-hex-digit `CKA_ID`.
pub(super) fn parse_id(s: &str) -> Option<[u8; 16]> {
    crate::types::RootId::from_hex(s).map(|r| r.0)
}

impl KeyState {
    /// Builds the state of `record` (already MAC-checked or just written) stored at
    /// `store_version`: parses every blob and checks that each belongs to this key and version;
    /// each version's lifecycle as recorded, or derived under `policy`. The usage counters of
    /// `previous` (the state this one replaces) are kept for each version whose blob is the same.
    pub(super) fn from_record(
        record: Record,
        store_version: u64,
        policy: &LifecyclePolicy,
        clock: Clock,
        previous: Option<&KeyState>,
    ) -> Result<KeyState, KeyringError> {
        let name = record.name.as_str();
        let period = record.config.period(policy).map_err(|e| {
            KeyringError::integrity(format!("key {name}: recorded cryptoperiod refused: {e}"))
        })?;
        let lifecycle: Arc<BTreeMap<u32, VersionLifecycle>> = Arc::new(
            record
                .versions
                .iter()
                .map(|v| (v.version, v.lifecycle_or(period)))
                .collect(),
        );
        let key_type = record.config.key_type;
        let mut blobs = BTreeMap::new();
        let mut pairs = BTreeMap::new();
        for v in &record.versions {
            if key_type.is_asymmetric() {
                let (Some(id), Some(pk)) = (&v.object_id, &v.public_key) else {
                    return Err(KeyringError::integrity(format!(
                        "key {name} v{}: a signing key version without its key pair",
                        v.version
                    )));
                };
                let id = parse_id(id).ok_or_else(|| {
                    KeyringError::integrity(format!("key {name} v{}: bad object id", v.version))
                })?;
                let public_key = B64.decode(pk).map_err(|_| {
                    KeyringError::integrity(format!(
                        "key {name} v{}: public key is not base64",
                        v.version
                    ))
                })?;
                pairs.insert(v.version, Arc::new(PairRef { id, public_key }));
                continue;
            }
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
            if Some(b.parsed.header.algorithm.as_str()) != key_type.blob_algorithm() {
                return Err(KeyringError::integrity(format!(
                    "key {name} v{}: blob algorithm {:?} is not the key's type {key_type}",
                    v.version, b.parsed.header.algorithm
                )));
            }
            blobs.insert(v.version, Arc::new(b));
        }
        if blobs.is_empty() && pairs.is_empty() {
            return Err(KeyringError::integrity(format!(
                "key {name}: record has no versions"
            )));
        }
        let mut usage = BTreeMap::new();
        if key_type.is_aes() {
            for v in &record.versions {
                let kept = previous.and_then(|p| {
                    let same = p
                        .record
                        .versions
                        .iter()
                        .any(|e| e.version == v.version && e.blob == v.blob);
                    same.then(|| p.usage.get(&v.version).cloned()).flatten()
                });
                usage.insert(v.version, kept.unwrap_or_default());
            }
        }
        let compromised_processing = lifecycle.values().any(|l: &VersionLifecycle| {
            l.state == crate::lifecycle::LifecycleState::Compromised && l.process_until.is_some()
        });
        Ok(KeyState {
            record,
            store_version,
            blobs,
            pairs,
            lifecycle,
            clock,
            usage,
            compromised_processing,
            loaded_at: Instant::now(),
        })
    }

    /// The same state, marked as freshly checked against the store.
    pub(super) fn refreshed(&self) -> KeyState {
        KeyState {
            record: self.record.clone(),
            store_version: self.store_version,
            blobs: self.blobs.clone(),
            pairs: self.pairs.clone(),
            lifecycle: self.lifecycle.clone(),
            clock: self.clock.clone(),
            usage: self.usage.clone(),
            compromised_processing: self.compromised_processing,
            loaded_at: Instant::now(),
        }
    }

    /// The newest version.
    pub(super) fn latest(&self) -> u32 {
        let b = self.blobs.keys().next_back().copied().unwrap_or(0);
        let p = self.pairs.keys().next_back().copied().unwrap_or(0);
        b.max(p)
    }

    /// The version new ciphertexts use when the caller names none: the latest, or
    /// `min_encryption_version` when that is higher.
    pub(super) fn default_encrypt_version(&self) -> u32 {
        self.latest().max(self.record.config.min_encryption_version)
    }

    /// The version an encrypt asked for `version` uses (Vault's `key_version` rules), which must
    /// be allowed to protect now (lifecycle: active, before its protect-stop). Every protecting
    /// operation (encrypt, rewrap's target, data keys, sign, HMAC) chooses its version here.
    pub(super) fn encrypt_version(&self, version: Option<u32>) -> Result<u32, KeyringError> {
        let v = self.requested_encrypt_version(version)?;
        self.check_use(v, Use::Protect)?;
        Ok(v)
    }

    /// Refuses `op` with version `v` when its lifecycle does not allow it now: a comparison of
    /// the clock with dates in memory. A version without a lifecycle entry is unknown: left to
    /// the caller (an opaque invalid ciphertext, or not found).
    pub(super) fn check_use(&self, v: u32, op: Use) -> Result<(), KeyringError> {
        match self.lifecycle.get(&v) {
            Some(l) => l
                .check(v, op, self.clock.now())
                .map_err(KeyringError::Lifecycle),
            None => Ok(()),
        }
    }

    fn requested_encrypt_version(&self, version: Option<u32>) -> Result<u32, KeyringError> {
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

    /// The AES-GCM encryptions reserved for version `v` in the record (`usage.rs`).
    pub(super) fn uses_reserved(&self, v: u32) -> u64 {
        self.record
            .versions
            .iter()
            .find(|e| e.version == v)
            .map_or(0, |e| e.uses_reserved)
    }

    /// The blob of version `v`.
    pub(super) fn blob(&self, v: u32) -> Result<Arc<BlobRef>, KeyringError> {
        self.blobs.get(&v).cloned().ok_or(KeyringError::NotFound)
    }

    /// The key pair of version `v`.
    pub(super) fn pair(&self, v: u32) -> Result<Arc<PairRef>, KeyringError> {
        self.pairs.get(&v).cloned().ok_or(KeyringError::NotFound)
    }

    /// The key's type.
    pub(super) fn key_type(&self) -> KeyType {
        self.record.config.key_type
    }

    /// Refuses `what` (an operation's name) unless `ok` holds for the key's type.
    pub(super) fn type_supports(&self, ok: bool, what: &str) -> Result<(), KeyringError> {
        if ok {
            Ok(())
        } else {
            Err(KeyringError::InvalidRequest(format!(
                "{what} is not supported by key type {}",
                self.key_type()
            )))
        }
    }

    /// The description Vault's `GET transit/keys/:name` gives.
    pub(super) fn info(&self) -> KeyInfo {
        let c = &self.record.config;
        KeyInfo {
            name: self.record.name.clone(),
            key_type: c.key_type,
            key_size: c.key_size,
            public_keys: self
                .pairs
                .iter()
                .map(|(v, p)| (*v, p.public_key.clone()))
                .collect(),
            latest_version: self.latest(),
            min_decryption_version: c.min_decryption_version,
            min_available_version: c.min_available_version,
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
            derived: c.derived,
            convergent: c.convergent,
            imported_versions: self
                .record
                .versions
                .iter()
                .filter(|v| v.imported)
                .map(|v| v.version)
                .collect(),
            lifecycle_class: c.class(),
            originator_usage_period_secs: c.originator_usage_period_secs,
            recipient_usage_period_secs: c.recipient_usage_period_secs,
            lifecycle: self
                .lifecycle
                .iter()
                .map(|(v, l)| {
                    (
                        *v,
                        VersionInfo::new(l, self.clock.now(), self.uses_reserved(*v)),
                    )
                })
                .collect(),
        }
    }

    /// Refuses `op` unless the key allows it. For `bulk_seal` (a new batch key, sealed under
    /// the default encryption version) also unless that version may protect now.
    pub(super) fn allows(&self, op: KeyOp) -> Result<(), KeyringError> {
        self.permits(op)?;
        if op == KeyOp::BulkSeal {
            self.check_use(self.default_encrypt_version(), Use::Protect)?;
        }
        Ok(())
    }

    /// Refuses `op` unless the key's allowed operations include it (no lifecycle check).
    pub(super) fn permits(&self, op: KeyOp) -> Result<(), KeyringError> {
        if self.record.config.allowed_ops.contains(&op) {
            Ok(())
        } else {
            Err(KeyringError::PolicyDenied(op.name()))
        }
    }
}
