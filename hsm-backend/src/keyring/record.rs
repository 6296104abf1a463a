//! The KEK record format (versions 1 and 2): every version's sealed blob (or, for a signing key,
//! its token object's id and public key) plus the key's configuration, MACed inside the HSM with
//! the MAC key of the root named in it.
//!
//! ```json
//! {"format":"rootseal-kek","format_version":1,"name":"app",
//!  "config":{"min_decryption_version":1,...},
//!  "versions":[{"version":1,"created":1700000000,"blob":"<base64 sealed blob>"}],
//!  "root_id":"<32 hex>","mac":"<base64 HMAC-SHA256 of the record with mac = \"\">"}
//! ```
//!
//! Version 2 adds, for key types other than `aes256-gcm96`, `config.key_type` and
//! `config.key_size` and, per version of a signing key, `object_id` (hex `CKA_ID` of its token
//! key pair) and `public_key` (base64 DER SubjectPublicKeyInfo) instead of `blob`. An
//! `aes256-gcm96` key is still written as version 1, byte for byte as before, so the previous
//! release keeps reading it; a record of another type is version 2, which the previous release
//! refuses by name. A record with an imported version (`"imported": true` on it) is version 2 as
//! well, whatever its type. An unknown `format_version` is [`KeyringError::UnsupportedFormat`], never a
//! guess.

use serde::{Deserialize, Serialize};

use crate::error::KeyringError;
use crate::types::{KeyOp, KeyType};

/// The `format` field of a KEK record.
pub const RECORD_FORMAT: &str = "rootseal-kek";
/// The newest record format version this code writes (and reads, with version 1).
pub const RECORD_VERSION: u16 = 2;
/// The version of an `aes256-gcm96` record (the only type of the previous release).
const RECORD_V1: u16 = 1;

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
    /// The key type (version 2; absent means `aes256-gcm96`).
    #[serde(default, skip_serializing_if = "is_default_type")]
    pub(super) key_type: KeyType,
    /// The key size in bytes of an `hmac` key (version 2; 0 otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) key_size: u32,
    /// Vault's `derived`: every item carries a `context`, bound into its AAD inside the HSM
    /// (version 2; absent means false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub(super) derived: bool,
    /// Vault's `convergent_encryption` (derived keys only): the GCM nonce is a pseudorandom
    /// function, inside the HSM, of the item's AAD and plaintext (version 2; absent means false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub(super) convergent: bool,
}

fn is_default_type(t: &KeyType) -> bool {
    *t == KeyType::Aes256Gcm96
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One version of a key: its sealed blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionEntry {
    pub(super) version: u32,
    pub(super) created: u64,
    /// The sealed blob, base64 (empty for a signing key's version).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) blob: String,
    /// A signing key's token objects: their `CKA_ID`, hex (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) object_id: Option<String>,
    /// A signing key's public key: DER SubjectPublicKeyInfo, base64 (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) public_key: Option<String>,
    /// The version was imported (transit `keys/{name}/import`, `import_version`): its key existed
    /// outside the HSM before (version 2; absent means made in the HSM).
    #[serde(default, skip_serializing_if = "is_false")]
    pub(super) imported: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl VersionEntry {
    /// A version sealed as a blob.
    pub(super) fn sealed(version: u32, created: u64, blob: String) -> VersionEntry {
        VersionEntry {
            version,
            created,
            blob,
            object_id: None,
            public_key: None,
            imported: false,
        }
    }
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
            format_version: if config.key_type == KeyType::Aes256Gcm96
                && !first.imported
                && !config.derived
            {
                RECORD_V1
            } else {
                RECORD_VERSION
            },
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
        if fv != RECORD_V1 && fv != RECORD_VERSION {
            return Err(KeyringError::UnsupportedFormat(fv));
        }
        let r: Record = serde_json::from_value(v).map_err(|e| {
            KeyringError::integrity(format!("key {name}: malformed KEK record: {e}"))
        })?;
        let v2_fields = r.config.key_type != KeyType::Aes256Gcm96
            || r.config.key_size != 0
            || r.versions
                .iter()
                .any(|v| v.object_id.is_some() || v.public_key.is_some());
        if fv == RECORD_V1 && v2_fields {
            return Err(KeyringError::integrity(format!(
                "key {name}: a version 1 record carries version 2 fields"
            )));
        }
        if r.name != name {
            return Err(KeyringError::integrity(format!(
                "key {name}: record is stored under another name ({:?})",
                r.name
            )));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record exactly as the previous release (0.1.0, format 1) wrote it.
    const PREVIOUS_RELEASE: &str = r#"{"format":"rootseal-kek","format_version":1,"name":"app","config":{"min_decryption_version":1,"min_encryption_version":0,"deletion_allowed":false,"auto_rotate_period_secs":0,"allowed_ops":["encrypt","decrypt","datakey","bulk_seal"],"created":1700000000},"versions":[{"version":1,"created":1700000000,"blob":"UlNCTA=="}],"root_id":"00112233445566778899aabbccddeeff","mac":"bWFj"}"#;

    #[test]
    fn reads_the_previous_release_and_writes_it_back_unchanged() {
        let r = Record::parse("app", PREVIOUS_RELEASE.as_bytes()).unwrap();
        assert_eq!(r.config.key_type, KeyType::Aes256Gcm96);
        assert_eq!(r.format_version, 1);
        assert_eq!(r.to_bytes().unwrap(), PREVIOUS_RELEASE.as_bytes());
    }

    #[test]
    fn other_types_are_version_2_and_version_1_cannot_claim_them() {
        let mut r = Record::parse("app", PREVIOUS_RELEASE.as_bytes()).unwrap();
        let mut c = r.config.clone();
        c.key_type = KeyType::Ed25519;
        let v2 = Record::new("app", c, r.versions[0].clone());
        assert_eq!(v2.format_version, 2);
        let back = Record::parse("app", &v2.to_bytes().unwrap()).unwrap();
        assert_eq!(back.config.key_type, KeyType::Ed25519);
        r.config.key_type = KeyType::Hmac;
        assert!(matches!(
            Record::parse("app", &r.to_bytes().unwrap()),
            Err(KeyringError::Integrity(_))
        ));
        let v3 = PREVIOUS_RELEASE.replace("\"format_version\":1", "\"format_version\":3");
        assert!(matches!(
            Record::parse("app", v3.as_bytes()),
            Err(KeyringError::UnsupportedFormat(3))
        ));
    }
}
