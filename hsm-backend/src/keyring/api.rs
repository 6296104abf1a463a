//! The types of the [`super::Keyring`] API: what callers pass in and get back.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::error::KeyringError;
use crate::lifecycle::{LifecycleClass, LifecycleState, VersionLifecycle};
use crate::types::{KeyOp, KeyType};

/// Options for a new key.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Allowed operations; `None` means all of [`KeyOp::ALL`].
    pub allowed_ops: Option<Vec<KeyOp>>,
    /// Whether the key may be deleted (Vault's `deletion_allowed`), default false.
    pub deletion_allowed: bool,
    /// Auto-rotation period in seconds (0 = never), Vault's `auto_rotate_period`.
    pub auto_rotate_period_secs: u64,
    /// The key type (default `aes256-gcm96`).
    pub key_type: KeyType,
    /// Key size in bytes of an `hmac` key (Vault's `key_size`, 32 to 512; `None`: 32).
    pub key_size: Option<u32>,
    /// Vault's `derived` (AES types): every encrypt, decrypt and rewrap names a `context`.
    pub derived: bool,
    /// Vault's `convergent_encryption` (needs `derived`): the same plaintext, context and AAD
    /// always give the same ciphertext.
    pub convergent: bool,
    /// The key's lifecycle class (`None`: `l1-kek`).
    pub lifecycle_class: Option<LifecycleClass>,
    /// The key's own originator-usage period in seconds (0: its class's).
    pub originator_usage_period_secs: u64,
    /// The key's own recipient-usage period in seconds (0: its class's).
    pub recipient_usage_period_secs: u64,
}

/// One version's lifecycle as `GET transit/keys/:name` reports it (`versions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// The state now (see [`VersionLifecycle::state_at`]).
    pub state: LifecycleState,
    /// Activation time (unix seconds).
    pub activation_time: u64,
    /// Protect-stop time: the end of the originator-usage period.
    pub protect_stop_time: u64,
    /// Deactivation time: the end of the recipient-usage period.
    pub deactivation_time: u64,
    /// When it was marked compromised.
    pub compromise_time: Option<u64>,
    /// When its key material was destroyed.
    pub destroy_time: Option<u64>,
    /// The next lifecycle event after now: its name and time.
    pub next_event: Option<(&'static str, u64)>,
    /// AES-GCM encryptions reserved for it so far: at least the encryptions it made, at most
    /// one `[lifecycle] usage_block` per process more (0 for key types that do not count).
    pub encryptions: u64,
}

impl VersionInfo {
    /// The report of `l` at `now`.
    pub(super) fn new(l: &VersionLifecycle, now: u64, encryptions: u64) -> VersionInfo {
        VersionInfo {
            state: l.state_at(now),
            activation_time: l.activation,
            protect_stop_time: l.protect_stop,
            deactivation_time: l.deactivation,
            compromise_time: l.compromise,
            destroy_time: l.destroy,
            next_event: l.next_event(now),
            encryptions,
        }
    }
}

/// A key as Vault's `GET transit/keys/:name` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// The key type.
    pub key_type: KeyType,
    /// Key size in bytes (`hmac` keys; 0 otherwise).
    pub key_size: u32,
    /// Each version's public key, DER SubjectPublicKeyInfo (signing keys only).
    pub public_keys: BTreeMap<u32, Vec<u8>>,
    /// The newest version.
    pub latest_version: u32,
    /// Ciphertexts older than this are refused.
    pub min_decryption_version: u32,
    /// Versions below this were trimmed (their blobs destroyed); 0 when none was.
    pub min_available_version: u32,
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
    /// The versions that were imported (BYOK) rather than made in the HSM.
    pub imported_versions: Vec<u32>,
    /// Whether the key is derived (each item names a `context`).
    pub derived: bool,
    /// Whether the key's encryption is convergent.
    pub convergent: bool,
    /// The key's lifecycle class.
    pub lifecycle_class: LifecycleClass,
    /// The key's own originator-usage period in seconds (0: its class's).
    pub originator_usage_period_secs: u64,
    /// The key's own recipient-usage period in seconds (0: its class's).
    pub recipient_usage_period_secs: u64,
    /// Each version's lifecycle state and dates.
    pub lifecycle: BTreeMap<u32, VersionInfo>,
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
    /// New lifecycle class (applies to versions made from now on).
    pub lifecycle_class: Option<LifecycleClass>,
    /// New originator-usage period in seconds (0: the class's; versions made from now on).
    pub originator_usage_period_secs: Option<u64>,
    /// New recipient-usage period in seconds (0: the class's; versions made from now on).
    pub recipient_usage_period_secs: Option<u64>,
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

/// A hash algorithm, named as Vault names it (`hash_algorithm`, `algorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashAlg {
    /// `sha1`.
    Sha1,
    /// `sha2-224`.
    Sha224,
    /// `sha2-256` (the default).
    Sha256,
    /// `sha2-384`.
    Sha384,
    /// `sha2-512`.
    Sha512,
    /// `sha3-224` (named, never computed: aws-lc has no SHA3-224 and SoftHSM2 no `CKM_SHA3_224`).
    Sha3_224,
    /// `sha3-256`.
    Sha3_256,
    /// `sha3-384`.
    Sha3_384,
    /// `sha3-512`.
    Sha3_512,
    /// `none`: the input is signed as given (RSA PKCS#1 v1.5 with `prehashed` only).
    None,
}

impl HashAlg {
    const NAMES: [(&'static str, HashAlg); 10] = [
        ("sha1", HashAlg::Sha1),
        ("sha2-224", HashAlg::Sha224),
        ("sha2-256", HashAlg::Sha256),
        ("sha2-384", HashAlg::Sha384),
        ("sha2-512", HashAlg::Sha512),
        ("sha3-224", HashAlg::Sha3_224),
        ("sha3-256", HashAlg::Sha3_256),
        ("sha3-384", HashAlg::Sha3_384),
        ("sha3-512", HashAlg::Sha3_512),
        ("none", HashAlg::None),
    ];

    /// The algorithm Vault names `s`.
    pub fn from_name(s: &str) -> Option<HashAlg> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, h)| *h)
    }

    /// Vault's name.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, h)| *h == self)
            .map_or("none", |(n, _)| n)
    }

    /// The digest length in bytes (0 for `none`).
    #[allow(clippy::len_without_is_empty)] // a length, not a container
    pub fn len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha224 | HashAlg::Sha3_224 => 28,
            HashAlg::Sha256 | HashAlg::Sha3_256 => 32,
            HashAlg::Sha384 | HashAlg::Sha3_384 => 48,
            HashAlg::Sha512 | HashAlg::Sha3_512 => 64,
            HashAlg::None => 0,
        }
    }

    fn aws(self) -> Option<&'static aws_lc_rs::digest::Algorithm> {
        use aws_lc_rs::digest;
        Some(match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha224 => &digest::SHA224,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
            HashAlg::Sha3_256 => &digest::SHA3_256,
            HashAlg::Sha3_384 => &digest::SHA3_384,
            HashAlg::Sha3_512 => &digest::SHA3_512,
            HashAlg::Sha3_224 | HashAlg::None => return None,
        })
    }

    /// The digest of `data`, in software (hashing is not a key operation).
    ///
    /// # Errors
    /// `InvalidRequest` for `none` and `sha3-224`, which rootseal cannot compute.
    pub fn digest(self, data: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let alg = self.aws().ok_or_else(|| {
            KeyringError::InvalidRequest(format!("unsupported hash algorithm {}", self.name()))
        })?;
        Ok(aws_lc_rs::digest::digest(alg, data).as_ref().to_vec())
    }
}

/// RSA signature padding (Vault's `signature_algorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RsaPadding {
    /// `pss` (the default), `CKM_RSA_PKCS_PSS`.
    #[default]
    Pss,
    /// `pkcs1v15`, `CKM_RSA_PKCS` over a `DigestInfo`.
    Pkcs1v15,
}

/// PSS salt length (Vault's `salt_length`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SaltLength {
    /// `auto` (the default): the largest salt when signing; when verifying, the largest or the
    /// hash length.
    #[default]
    Auto,
    /// `hash`: the hash length.
    Hash,
    /// That many bytes.
    Bytes(u32),
}

/// How an ECDSA signature is encoded (Vault's `marshaling_algorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Marshaling {
    /// `asn1` (the default): DER `SEQUENCE { r, s }`, standard base64.
    #[default]
    Asn1,
    /// `jws`: `r ‖ s`, unpadded base64url.
    Jws,
}

/// How to sign or verify (`sign/:name`, `verify/:name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignParams {
    /// The hash of the input (ignored for Ed25519).
    pub hash: HashAlg,
    /// Whether the input is already the digest.
    pub prehashed: bool,
    /// RSA padding.
    pub padding: RsaPadding,
    /// RSA-PSS salt length.
    pub salt: SaltLength,
    /// ECDSA signature encoding.
    pub marshaling: Marshaling,
}

impl Default for SignParams {
    fn default() -> Self {
        SignParams {
            hash: HashAlg::Sha256,
            prehashed: false,
            padding: RsaPadding::Pss,
            salt: SaltLength::Auto,
            marshaling: Marshaling::Asn1,
        }
    }
}

/// A signature (or an HMAC) by one key version, encoded as its marshaling says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The key version that made it.
    pub version: u32,
    /// The signature bytes (ECDSA: DER for `asn1`, `r ‖ s` for `jws`).
    pub bytes: Vec<u8>,
}

/// One signature (or HMAC) to check against its input.
#[derive(Clone, Debug)]
pub struct VerifyItem {
    /// The signed input (or its digest, when `prehashed`).
    pub input: Vec<u8>,
    /// The signature and the version it names.
    pub signature: Signature,
}
