//! rootseal's hardware layer: the only crate that speaks PKCS#11.
//!
//! * [`Hsm`]: one PKCS#11 module, one token (found by label or serial, never by slot id), one
//!   User login, a pool of worker threads that each own one session, recovery from lost sessions
//!   and lost devices. Every PKCS#11 call runs on those workers, never on the async runtime.
//! * The Level 0 root of trust (`root`: an AES-256 wrap-only token key and its companion HMAC
//!   key that binds metadata to sealed blobs) and its administration ([`init_root`],
//!   [`root_status`]).
//! * Every key template rootseal creates, one function per key class (`templates`).
//! * The versioned sealed-blob format for Level 1 keys (`blob`).
//! * Where sealed records live ([`KekStore`]): a local [`FileStore`] here, Vault KV in the
//!   `rootseal-vault-config` crate.
//! * [`Keyring`]: the hierarchy's one API that every face of rootseal calls.
//! * Key lifecycle per NIST SP 800-57 (`lifecycle`): version states, dates, cryptoperiods.
// `deny`, not `forbid`: the one exception is `hsm/raw.rs` (array attributes cryptoki does not wrap),
// which allows it for itself with a SAFETY comment on every block.
#![deny(unsafe_code)]

mod audit_key;
mod blob;
mod config;
mod custody;
mod custody_enforced;
mod error;
mod hsm;
mod keyring;
mod lifecycle;
mod metrics;
mod registry;
mod root;
mod signer;
mod softhsm;
mod store;
mod templates;
mod types;
mod uri;

// The public interface is:
pub use audit_key::AUDIT_KEY_LABEL;
pub use blob::BlobError;
pub use config::{
    default_softhsm_module, HsmConfig, TokenSelector, DEFAULT_JOB_TIMEOUT, DEFAULT_QUEUE_LIMIT,
};
pub use custody::{Custody, CustodyReport, RootCustody};
pub use error::{Cause, Error, KeyringError};
pub use hsm::{Hsm, HsmRelease};
pub use keyring::admin::{
    ensure_audit_key, init_root, root_attributes, root_status, InitOutcome, RootStatus,
};
#[cfg(feature = "test-hooks")]
pub use keyring::admin::{testing_init_previous_release_root, testing_new_l0};
pub use keyring::api::{
    CreateOptions, DecryptItem, EncryptItem, HashAlg, KeyConfigUpdate, KeyInfo, Marshaling,
    RsaPadding, SaltLength, Sealed, SignParams, Signature, VerifyItem, VersionInfo,
};
pub use keyring::batch::BatchKey;
pub use keyring::clock::Clock;
pub use keyring::compromise::{CompromisedUse, CompromisedUseAudit};
pub use keyring::crypto::MAX_DATA_KEYS;
pub use keyring::governance::{
    is_governance_name, read_bootstrap_record, write_bootstrap_record, GOVERNANCE_FORMAT,
    GOVERNANCE_PREFIX, GOVERNANCE_VERSION,
};
pub use keyring::import::ImportHash;
pub use keyring::record::{RECORD_FORMAT, RECORD_VERSION};
pub use keyring::rotation::{rotate_root, RootRotationReport};
pub use keyring::sign::MAX_RANDOM_BYTES;
pub use keyring::upkeep::{LifecycleGauge, Rotated, RotationReason};
pub use keyring::Keyring;
pub use keyring::KeyringOptions;
/// Unix seconds as RFC 3339 UTC, as the lifecycle dates are shown.
pub use lifecycle::rfc3339;
pub use lifecycle::{
    Cryptoperiod, LifecycleClass, LifecyclePolicy, LifecycleRefusal, LifecycleState, PeriodError,
    Refusal, UsageError, UsagePolicy, DEFAULT_LEAD_TIME_SECS, DEFAULT_OUP_SECS, DEFAULT_RUP_SECS,
    DEFAULT_USAGE_BLOCK, DEFAULT_USAGE_LIMIT, GCM_RANDOM_IV_LIMIT, MAX_OUP_SECS,
    MAX_RUP_BEYOND_OUP_SECS, STANDARD_PARAGRAPH, USAGE_MARGIN, USAGE_PARAGRAPH, YEAR_SECS,
};
pub use metrics::{HsmMetrics, HsmOp};
pub use root::{RootAttributes, RootInfo, RootRole};
pub use signer::{
    ed25519_pem, p256_pem, OperatorKeyAlg, OperatorSigner, SignerError, DEFAULT_OPERATOR_OBJECT,
    ED25519_SPKI_PREFIX, P256_SPKI_PREFIX,
};
pub use softhsm::{SoftHsmDir, SoftHsmError};
pub use store::{
    valid_key_name, BoxFuture, FileStore, KekStore, RoutedStore, StoreError, StoredRecord,
};
pub use types::{KeyOp, KeyType, RootId, TokenIdentity};
pub use uri::{Pkcs11Uri, UriError};

/// Entry points of `fuzz/` (cargo-fuzz): the parsers of untrusted bytes in this crate. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses a sealed blob (`blob.rs`), as a key store's bytes reach it.
    pub fn sealed_blob(raw: &[u8]) {
        let _ = crate::blob::decode(raw);
    }

    /// Parses a KEK record (`keyring/record.rs`), as a key store's bytes reach it.
    pub fn kek_record(raw: &[u8]) {
        crate::keyring::record::fuzz_parse(raw);
    }
}
