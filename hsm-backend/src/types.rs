//! Small value types shared across the crate: what a key may do ([`KeyOp`]), which token sealed
//! something ([`TokenIdentity`]) and which root wraps it ([`RootId`]).

use std::fmt;

/// An operation a key may be allowed to do. Enforced on every call; stored in every sealed blob.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
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
    /// Transit `sign` (signing key types).
    Sign,
    /// Transit `verify` of a signature (signing key types).
    Verify,
    /// Transit `hmac` and `verify` of an HMAC (`hmac` keys).
    Hmac,
}

impl KeyOp {
    /// Every operation: the default for new keys.
    pub const ALL: [KeyOp; 4] = [
        KeyOp::Encrypt,
        KeyOp::Decrypt,
        KeyOp::Datakey,
        KeyOp::BulkSeal,
    ];

    /// The name used in configs and errors.
    pub fn name(self) -> &'static str {
        match self {
            KeyOp::Encrypt => "encrypt",
            KeyOp::Decrypt => "decrypt",
            KeyOp::Datakey => "datakey",
            KeyOp::BulkSeal => "bulk_seal",
            KeyOp::Sign => "sign",
            KeyOp::Verify => "verify",
            KeyOp::Hmac => "hmac",
        }
    }
}

/// A transit key type, named as Vault names it (`type` of `POST keys/:name`). Every key lives
/// in the HSM: symmetric keys as L1 blobs sealed under L0, private keys as non-extractable token
/// objects (see `templates.rs`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[non_exhaustive]
pub enum KeyType {
    /// AES-128-GCM, 96-bit nonce.
    #[serde(rename = "aes128-gcm96")]
    Aes128Gcm96,
    /// AES-256-GCM, 96-bit nonce (the default).
    #[default]
    #[serde(rename = "aes256-gcm96")]
    Aes256Gcm96,
    /// A generic secret for HMAC (`CKM_SHA*_HMAC`).
    #[serde(rename = "hmac")]
    Hmac,
    /// Ed25519 (`CKM_EDDSA`).
    #[serde(rename = "ed25519")]
    Ed25519,
    /// ECDSA over NIST P-256 (`CKM_ECDSA`).
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA over NIST P-384.
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    /// ECDSA over NIST P-521.
    #[serde(rename = "ecdsa-p521")]
    EcdsaP521,
    /// RSA-2048 (PSS / PKCS#1 v1.5 signatures, OAEP encryption).
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA-3072.
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    /// RSA-4096.
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    /// Every key type rootseal makes.
    pub const ALL: [KeyType; 10] = [
        KeyType::Aes128Gcm96,
        KeyType::Aes256Gcm96,
        KeyType::Hmac,
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::EcdsaP521,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// Vault's name.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Aes128Gcm96 => "aes128-gcm96",
            KeyType::Aes256Gcm96 => "aes256-gcm96",
            KeyType::Hmac => "hmac",
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::EcdsaP521 => "ecdsa-p521",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// The type named `s` (Vault's names), if rootseal makes it.
    pub fn from_name(s: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// AES-GCM (encrypt, decrypt, rewrap, data keys).
    pub fn is_aes(self) -> bool {
        matches!(self, KeyType::Aes128Gcm96 | KeyType::Aes256Gcm96)
    }

    /// RSA (sign, verify, encrypt, decrypt).
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }

    /// ECDSA.
    pub fn is_ecdsa(self) -> bool {
        matches!(
            self,
            KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521
        )
    }

    /// A key pair whose private half is a token object (sign and verify).
    pub fn is_asymmetric(self) -> bool {
        self.is_rsa() || self.is_ecdsa() || self == KeyType::Ed25519
    }

    /// Whether `encrypt`/`decrypt` work with this type.
    pub fn supports_encryption(self) -> bool {
        self.is_aes() || self.is_rsa()
    }

    /// Whether `sign`/`verify` work with this type.
    pub fn supports_signing(self) -> bool {
        self.is_asymmetric()
    }

    /// The operations a new key of this type allows.
    pub fn default_ops(self) -> Vec<KeyOp> {
        match self {
            KeyType::Aes128Gcm96 | KeyType::Aes256Gcm96 => KeyOp::ALL.to_vec(),
            KeyType::Hmac => vec![KeyOp::Hmac],
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                vec![KeyOp::Encrypt, KeyOp::Decrypt, KeyOp::Sign, KeyOp::Verify]
            }
            KeyType::Ed25519 | KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521 => {
                vec![KeyOp::Sign, KeyOp::Verify]
            }
        }
    }

    /// The `algorithm` of this type's sealed blobs (symmetric types only).
    pub(crate) fn blob_algorithm(self) -> Option<&'static str> {
        match self {
            KeyType::Aes256Gcm96 => Some("aes-256-gcm"),
            KeyType::Aes128Gcm96 => Some("aes-128-gcm"),
            KeyType::Hmac => Some("hmac"),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The identity of a token, bound into every sealed blob.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenIdentity {
    /// `manufacturerID`, trimmed.
    pub manufacturer: String,
    /// `model`, trimmed.
    pub model: String,
    /// `serialNumber`, trimmed.
    pub serial: String,
    /// The token label, trimmed (informational; not compared).
    #[serde(default)]
    pub label: String,
}

impl TokenIdentity {
    /// Whether `other` is the same token: manufacturer, model and serial (the label may change).
    pub fn same_token(&self, other: &TokenIdentity) -> bool {
        self.manufacturer == other.manufacturer
            && self.model == other.model
            && self.serial == other.serial
    }
}

impl fmt::Display for TokenIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} serial {} (label {:?})",
            self.manufacturer, self.model, self.serial, self.label
        )
    }
}

/// A root's id: 16 random bytes from the HSM, `CKA_ID` of both root keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootId(pub [u8; 16]);

impl RootId {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 32 hex digits.
    pub fn from_hex(s: &str) -> Option<RootId> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(RootId(out))
    }
}

impl fmt::Debug for RootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootId({})", self.to_hex())
    }
}

impl fmt::Display for RootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_id_hex_round_trip() {
        let id = RootId([0xab; 16]);
        assert_eq!(RootId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(RootId::from_hex("zz"), None);
        assert_eq!(RootId::from_hex(&"g".repeat(32)), None);
    }
}
