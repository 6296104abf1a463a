//! The KEK record format (version 1): every version's sealed blob plus the key's configuration,
//! MACed inside the HSM with the MAC key of the root named in it.
//!
//! ```json
//! {"format":"rootseal-kek","format_version":1,"name":"app",
//!  "config":{"min_decryption_version":1,...},
//!  "versions":[{"version":1,"created":1700000000,"blob":"<base64 sealed blob>"}],
//!  "root_id":"<32 hex>","mac":"<base64 HMAC-SHA256 of the record with mac = \"\">"}
//! ```
//!
//! An unknown `format_version` is [`KeyringError::UnsupportedFormat`], never a guess.

use serde::{Deserialize, Serialize};

use crate::error::KeyringError;
use crate::types::KeyOp;

/// The `format` field of a KEK record.
pub const RECORD_FORMAT: &str = "rootseal-kek";
/// The record format version this code writes.
pub const RECORD_VERSION: u16 = 1;

/// A key's configuration, as stored (and MACed) in its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyConfig {
    pub(super) min_decryption_version: u32,
    pub(super) min_encryption_version: u32,
    pub(super) deletion_allowed: bool,
    pub(super) auto_rotate_period_secs: u64,
    pub(super) allowed_ops: Vec<KeyOp>,
    pub(super) created: u64,
}

/// One version of a key: its sealed blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionEntry {
    pub(super) version: u32,
    pub(super) created: u64,
    /// The sealed blob, base64.
    pub(super) blob: String,
}

/// A KEK record as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Record {
    pub(super) format: String,
    pub(super) format_version: u16,
    pub(super) name: String,
    pub(super) config: KeyConfig,
    pub(super) versions: Vec<VersionEntry>,
    pub(super) root_id: String,
    pub(super) mac: String,
}

impl Record {
    /// A new record for key `name` with `config` and one version (unsigned: no root, no MAC).
    pub(super) fn new(name: &str, config: KeyConfig, first: VersionEntry) -> Record {
        Record {
            format: RECORD_FORMAT.into(),
            format_version: RECORD_VERSION,
            name: name.to_owned(),
            config,
            versions: vec![first],
            root_id: String::new(),
            mac: String::new(),
        }
    }

    /// The bytes the record MAC covers: the record serialised with an empty `mac`.
    pub(super) fn signed_bytes(&self) -> Result<Vec<u8>, KeyringError> {
        let mut copy = self.clone();
        copy.mac = String::new();
        serde_json::to_vec(&copy)
            .map_err(|e| KeyringError::internal(format!("serialise record: {e}")))
    }

    /// The stored form.
    pub(super) fn to_bytes(&self) -> Result<Vec<u8>, KeyringError> {
        serde_json::to_vec(self)
            .map_err(|e| KeyringError::internal(format!("serialise record: {e}")))
    }

    /// Parses the entry stored under `name`: a record of this format and version, for this name.
    pub(super) fn parse(name: &str, raw: &[u8]) -> Result<Record, KeyringError> {
        let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
            KeyringError::integrity(format!("key {name}: stored entry is not JSON: {e}"))
        })?;
        if v.get("format").and_then(|f| f.as_str()) != Some(RECORD_FORMAT) {
            return Err(KeyringError::integrity(format!(
                "key {name}: stored entry is not a rootseal KEK record"
            )));
        }
        let fv = v
            .get("format_version")
            .and_then(|f| f.as_u64())
            .and_then(|f| u16::try_from(f).ok())
            .unwrap_or(u16::MAX);
        if fv != RECORD_VERSION {
            return Err(KeyringError::UnsupportedFormat(fv));
        }
        let r: Record = serde_json::from_value(v).map_err(|e| {
            KeyringError::integrity(format!("key {name}: malformed KEK record: {e}"))
        })?;
        if r.name != name {
            return Err(KeyringError::integrity(format!(
                "key {name}: record is stored under another name ({:?})",
                r.name
            )));
        }
        Ok(r)
    }
}
