//! The [`Keyring`]: the key hierarchy's one API. Every face of rootseal (HTTP transit, the
//! OpenBao KMS plugin, the CLI) calls it; none talks to the HSM directly.
//!
//! It owns the policy of the hierarchy: which L1 keys exist and their versions, lifecycle checks
//! (`min_decryption_version`, allowed operations), where sealed records live ([`KekStore`]), and
//! the cache of unwrapped session objects inside the HSM workers.

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::error::KeyringError;
use crate::hsm::Hsm;
use crate::store::KekStore;

/// Result type of the keyring.
pub type Result<T, E = KeyringError> = std::result::Result<T, E>;

/// An operation a key may be allowed to do. Enforced on every call; stored in every sealed blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyOp {
    /// Transit encrypt (and the encrypt half of rewrap).
    Encrypt,
    /// Transit decrypt (and the decrypt half of rewrap).
    Decrypt,
    /// Generate Level 2 data keys.
    Datakey,
    /// Wrap and unwrap bulk-seal batch keys.
    BulkSeal,
}

impl KeyOp {
    /// Every operation: the default for new keys.
    pub const ALL: [KeyOp; 4] = [KeyOp::Encrypt, KeyOp::Decrypt, KeyOp::Datakey, KeyOp::BulkSeal];

    /// The name used in configs and errors.
    pub fn name(self) -> &'static str {
        match self {
            KeyOp::Encrypt => "encrypt",
            KeyOp::Decrypt => "decrypt",
            KeyOp::Datakey => "datakey",
            KeyOp::BulkSeal => "bulk_seal",
        }
    }
}

/// Options for a new key.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Allowed operations; `None` means all of [`KeyOp::ALL`].
    pub allowed_ops: Option<Vec<KeyOp>>,
    /// Whether the key may be deleted (Vault's `deletion_allowed`), default false.
    pub deletion_allowed: bool,
    /// Auto-rotation period in seconds (0 = never), Vault's `auto_rotate_period`.
    pub auto_rotate_period_secs: u64,
}

/// A key as Vault's `GET transit/keys/:name` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// Always `aes256-gcm96`.
    pub key_type: &'static str,
    /// The newest version.
    pub latest_version: u32,
    /// Ciphertexts older than this are refused.
    pub min_decryption_version: u32,
    /// Encryption uses at least this version (0 = latest).
    pub min_encryption_version: u32,
    /// Whether `DELETE` is allowed.
    pub deletion_allowed: bool,
    /// Auto-rotation period in seconds (0 = off).
    pub auto_rotate_period_secs: u64,
    /// Creation time (unix seconds) of each live version.
    pub versions: BTreeMap<u32, u64>,
    /// Allowed operations.
    pub allowed_ops: Vec<KeyOp>,
}

/// Changes to a key's configuration (`POST transit/keys/:name/config`); `None` leaves a field.
#[derive(Clone, Debug, Default)]
pub struct KeyConfigUpdate {
    /// New `min_decryption_version`.
    pub min_decryption_version: Option<u32>,
    /// New `min_encryption_version`.
    pub min_encryption_version: Option<u32>,
    /// New `deletion_allowed`.
    pub deletion_allowed: Option<bool>,
    /// New `auto_rotate_period` in seconds.
    pub auto_rotate_period_secs: Option<u64>,
}

/// A ciphertext under one key version: `iv (12) ‖ ciphertext ‖ tag (16)`, as Vault's aes256-gcm96.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The key version that sealed it.
    pub version: u32,
    /// `iv ‖ ct ‖ tag`.
    pub bytes: Vec<u8>,
}

/// One item to encrypt.
pub struct EncryptItem {
    /// The plaintext (zeroized on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Additional authenticated data (Vault's `associated_data`), may be empty.
    pub aad: Vec<u8>,
}

/// One item to decrypt.
#[derive(Clone, Debug)]
pub struct DecryptItem {
    /// The ciphertext and its version.
    pub sealed: Sealed,
    /// Additional authenticated data given at encryption.
    pub aad: Vec<u8>,
}

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

/// The hierarchy's API. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

struct Inner {
    hsm: Hsm,
    store: Arc<dyn KekStore>,
}
