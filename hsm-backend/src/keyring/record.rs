//! The KEK record format (versions 1, 2 and 3): every version's sealed blob (or, for a signing key,
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
//!
//! Version 3 (key lifecycle, NIST SP 800-57; see `lifecycle.rs`) adds per version `lifecycle`
//! (`state`, `activation`, `protect_stop`, `deactivation`, and `compromise`, `destroy` once they
//! happen) and, in `config`, the optional `lifecycle_class`, `originator_usage_period_secs` and
//! `recipient_usage_period_secs`; all of it under the record MAC like the rest. Every record
//! this code writes is version 3: a record of version 1 or 2 is read as it is (its MAC covers
//! exactly the stored bytes), its versions' dates derived from their creation time and the
//! class defaults, and it is written as version 3 on its next write ([`Record::upgrade`]).
//! Version 3 also counts, per version, the AES-GCM encryptions reserved so far
//! (`uses_reserved`, absent while 0; see `usage.rs`). A version from a record of format 1 or 2
//! starts counting at 0: what it encrypted before is not known.

use serde::{Deserialize, Serialize};

use crate::error::KeyringError;
use crate::lifecycle::{Cryptoperiod, LifecycleClass, LifecyclePolicy, VersionLifecycle};
use crate::types::{KeyOp, KeyType};

/// The `format` field of a KEK record.
pub const RECORD_FORMAT: &str = "rootseal-kek";
/// The newest record format version this code writes (and reads, with version 1).
pub const RECORD_VERSION: u16 = 3;
/// The version of an `aes256-gcm96` record of release 0.1.
const RECORD_V1: u16 = 1;
/// When lifecycle enforcement began (2026-12-03T00:00:00Z, unix seconds): the cryptoperiod of a
/// version from a record of format 1 or 2 starts here, or at its creation if later
/// ([`VersionEntry::lifecycle_or`]).
pub(super) const LIFECYCLE_EPOCH: u64 = 1_796_256_000;
/// The version that added key types other than `aes256-gcm96`.
const RECORD_V2: u16 = 2;

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
    /// Versions below this were trimmed: their blobs destroyed (version 3; 0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) min_available_version: u32,
    /// The key's lifecycle class (version 3; absent means `l1-kek`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) lifecycle_class: Option<LifecycleClass>,
    /// The key's own originator-usage period, seconds (version 3; 0: the class's).
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub(super) originator_usage_period_secs: u64,
    /// The key's own recipient-usage period, seconds (version 3; 0: the class's).
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub(super) recipient_usage_period_secs: u64,
}

impl KeyConfig {
    /// The key's class (`l1-kek` when none is recorded).
    pub(super) fn class(&self) -> LifecycleClass {
        self.lifecycle_class.unwrap_or_default()
    }

    /// The cryptoperiod of this key under `policy`: its class's, with its own overrides.
    pub(super) fn period(&self, policy: &LifecyclePolicy) -> Result<Cryptoperiod, KeyringError> {
        policy
            .class(self.class())
            .with_overrides(
                self.originator_usage_period_secs,
                self.recipient_usage_period_secs,
            )
            .map_err(|e| KeyringError::InvalidRequest(e.to_string()))
    }

    fn has_v3_fields(&self) -> bool {
        self.lifecycle_class.is_some()
            || self.min_available_version != 0
            || self.originator_usage_period_secs != 0
            || self.recipient_usage_period_secs != 0
    }
}

fn is_zero64(n: &u64) -> bool {
    *n == 0
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
    /// The version's lifecycle state and dates (version 3; every version of a version 3 record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) lifecycle: Option<VersionLifecycle>,
    /// The version was imported (transit `keys/{name}/import`, `import_version`): its key existed
    /// outside the HSM before (version 2; absent means made in the HSM).
    #[serde(default, skip_serializing_if = "is_false")]
    pub(super) imported: bool,
    /// AES-GCM encryptions reserved for this version so far (version 3; absent: none): an upper
    /// bound of the encryptions it made, since every process reserves a block here before it
    /// uses it (`usage.rs`, NIST SP 800-38D §8.3).
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub(super) uses_reserved: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl VersionEntry {
    /// A version sealed as a blob, active from `created` for `period`.
    pub(super) fn sealed(
        version: u32,
        created: u64,
        blob: String,
        period: Cryptoperiod,
    ) -> VersionEntry {
        VersionEntry {
            version,
            created,
            blob,
            object_id: None,
            public_key: None,
            imported: false,
            lifecycle: Some(VersionLifecycle::active(created, period)),
            uses_reserved: 0,
        }
    }

    /// The version's lifecycle: as recorded, or (a record of version 1 or 2) derived from its
    /// creation time and `period`.
    ///
    /// A version written before lifecycle enforcement existed is activated at its creation, but
    /// its cryptoperiod runs from [`LIFECYCLE_EPOCH`] when it is older: an upgrade never stops a
    /// working key at once (an auto-unseal key years old keeps unsealing), and every such version
    /// gets one full originator-usage period, then rotates ahead of it as any other.
    pub(super) fn lifecycle_or(&self, period: Cryptoperiod) -> VersionLifecycle {
        self.lifecycle.unwrap_or_else(|| {
            let mut l = VersionLifecycle::active(self.created.max(LIFECYCLE_EPOCH), period);
            l.activation = self.created;
            l
        })
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
    /// A new record (version 3) for key `name` with `config` and one version (unsigned: no
    /// root, no MAC).
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

    /// Moves a record of version 1 or 2 to version 3 before it is written: every version gets
    /// its lifecycle, derived from its creation time and `period` (the key's cryptoperiod). A
    /// version 3 record is unchanged.
    pub(super) fn upgrade(&mut self, period: Cryptoperiod) {
        for v in &mut self.versions {
            v.lifecycle = Some(v.lifecycle_or(period));
        }
        self.format_version = RECORD_VERSION;
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
        if ![RECORD_V1, RECORD_V2, RECORD_VERSION].contains(&fv) {
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
        let v3_fields = r.config.has_v3_fields()
            || r.versions
                .iter()
                .any(|v| v.lifecycle.is_some() || v.uses_reserved != 0);
        if fv < RECORD_VERSION && v3_fields {
            return Err(KeyringError::integrity(format!(
                "key {name}: a version {fv} record carries version 3 fields"
            )));
        }
        if fv == RECORD_VERSION && r.versions.iter().any(|v| v.lifecycle.is_none()) {
            return Err(KeyringError::integrity(format!(
                "key {name}: a version 3 record has a version without its lifecycle"
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

/// [`Record::parse`] for `crate::fuzzing` (the result dropped).
pub(crate) fn fuzz_parse(raw: &[u8]) {
    let _ = Record::parse("k", raw);
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

    /// A record exactly as the release before lifecycle (format 2, an ed25519 key) wrote it.
    const FORMAT_2: &str = r#"{"format":"rootseal-kek","format_version":2,"name":"app","config":{"min_decryption_version":1,"min_encryption_version":0,"deletion_allowed":false,"auto_rotate_period_secs":0,"allowed_ops":["sign","verify"],"created":1700000000,"key_type":"ed25519"},"versions":[{"version":1,"created":1700000000,"object_id":"00112233445566778899aabbccddeeff","public_key":"MCowBQYDK2VwAyEA"}],"root_id":"00112233445566778899aabbccddeeff","mac":"bWFj"}"#;

    #[test]
    fn other_types_and_version_1_cannot_claim_newer_fields() {
        let mut r = Record::parse("app", PREVIOUS_RELEASE.as_bytes()).unwrap();
        let v2 = Record::parse("app", FORMAT_2.as_bytes()).unwrap();
        assert_eq!(v2.format_version, 2);
        assert_eq!(v2.to_bytes().unwrap(), FORMAT_2.as_bytes());
        r.config.key_type = KeyType::Hmac;
        assert!(matches!(
            Record::parse("app", &r.to_bytes().unwrap()),
            Err(KeyringError::Integrity(_))
        ));
        let v4 = PREVIOUS_RELEASE.replace("\"format_version\":1", "\"format_version\":4");
        assert!(matches!(
            Record::parse("app", v4.as_bytes()),
            Err(KeyringError::UnsupportedFormat(4))
        ));
    }

    #[test]
    fn previous_formats_upgrade_to_version_3_with_derived_dates() {
        let period = Cryptoperiod::default();
        for fixture in [PREVIOUS_RELEASE, FORMAT_2] {
            let mut r = Record::parse("app", fixture.as_bytes()).unwrap();
            assert!(r.versions[0].lifecycle.is_none());
            r.upgrade(period);
            assert_eq!(r.format_version, 3);
            let lc = r.versions[0].lifecycle.unwrap();
            // Made before lifecycle enforcement began: activated at creation, its cryptoperiod
            // from LIFECYCLE_EPOCH (an upgrade never stops a working key).
            assert_eq!(lc.activation, 1_700_000_000);
            assert_eq!(lc.protect_stop, LIFECYCLE_EPOCH + period.oup_secs());
            assert_eq!(lc.deactivation, LIFECYCLE_EPOCH + period.rup_secs());
            let back = Record::parse("app", &r.to_bytes().unwrap()).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn lifecycle_fields_are_refused_in_older_versions_and_required_in_version_3() {
        let mut r = Record::parse("app", PREVIOUS_RELEASE.as_bytes()).unwrap();
        r.versions[0].lifecycle = Some(r.versions[0].lifecycle_or(Cryptoperiod::default()));
        assert!(matches!(
            Record::parse("app", &r.to_bytes().unwrap()),
            Err(KeyringError::Integrity(_))
        ));
        r.format_version = 3;
        r.versions[0].lifecycle = None;
        assert!(matches!(
            Record::parse("app", &r.to_bytes().unwrap()),
            Err(KeyringError::Integrity(_))
        ));
        let mut c = r.config.clone();
        c.lifecycle_class = Some(LifecycleClass::SealKek);
        let mut r2 = Record::parse("app", PREVIOUS_RELEASE.as_bytes()).unwrap();
        r2.config = c;
        assert!(matches!(
            Record::parse("app", &r2.to_bytes().unwrap()),
            Err(KeyringError::Integrity(_))
        ));
    }
}
