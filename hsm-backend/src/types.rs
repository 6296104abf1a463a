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
        }
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
