//! The types of the [`super::Keyring`] API: what callers pass in and get back.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::types::KeyOp;

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
