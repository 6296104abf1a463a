//! The operator registry: who may approve ceremonies, in which role, with which key.
//!
//! The bootstrap file of `rootseal init --operators FILE` and the stored record share one shape:
//!
//! ```json
//! {"operators":[{"name":"alice","role":"so","public_key":"-----BEGIN PUBLIC KEY-----\n…"},…]}
//! ```
//!
//! (`revoked` is optional, default false; the stored form adds `"format":"rootseal-operators",
//! "format_version":1`). A registry is refused when a name or a key appears twice (so nobody can
//! be SO or CO and Auditor at once, and one key never counts twice), a role is `user`, a name is
//! not `[a-z0-9_.-]{1,64}`, or a key is neither Ed25519 nor P-256.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::jcs;
use crate::pubkey::OperatorKey;
use crate::role::Role;
use crate::GovError;

/// The `format` of a stored registry.
pub const REGISTRY_FORMAT: &str = "rootseal-operators";
/// The registry format version this code writes.
pub const REGISTRY_VERSION: u16 = 1;

/// One operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// Their name (what `--operator NAME` says).
    pub name: String,
    /// Their role.
    pub role: Role,
    /// Their public key, PEM (as `rootseal operator key` prints it).
    pub public_key: String,
    /// A revoked operator's approvals are refused.
    #[serde(default)]
    pub revoked: bool,
}

/// The registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// `rootseal-operators` (absent in a bootstrap file).
    #[serde(default = "default_format")]
    pub format: String,
    /// 1 (absent in a bootstrap file).
    #[serde(default = "default_version")]
    pub format_version: u16,
    /// The operators.
    pub operators: Vec<Operator>,
}

fn default_format() -> String {
    REGISTRY_FORMAT.into()
}

fn default_version() -> u16 {
    REGISTRY_VERSION
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

impl Registry {
    /// Parses and validates a registry (a bootstrap file or a stored record).
    ///
    /// # Errors
    /// [`GovError`] naming what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Registry, GovError> {
        let r: Registry = serde_json::from_slice(bytes)
            .map_err(|e| GovError::new(format!("operator registry: {e}")))?;
        if r.format != REGISTRY_FORMAT {
            return Err(GovError::new(format!(
                "operator registry: format {:?} is not {REGISTRY_FORMAT}",
                r.format
            )));
        }
        if r.format_version != REGISTRY_VERSION {
            return Err(GovError::new(format!(
                "operator registry: format_version {} is not supported (this rootseal reads {REGISTRY_VERSION})",
                r.format_version
            )));
        }
        r.validate()?;
        Ok(r)
    }

    /// Checks the rules in the module doc.
    ///
    /// # Errors
    /// [`GovError`] naming the operator at fault.
    pub fn validate(&self) -> Result<(), GovError> {
        if self.operators.is_empty() {
            return Err(GovError::new("operator registry: no operators"));
        }
        let mut names = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for o in &self.operators {
            if !valid_name(&o.name) {
                return Err(GovError::new(format!(
                    "operator registry: name {:?}: use 1-64 characters of a-z 0-9 _ - .",
                    o.name
                )));
            }
            if !o.role.is_operator_role() {
                return Err(GovError::new(format!(
                    "operator registry: {} has role user: operators are so, co or auditor (users hold API tokens)",
                    o.name
                )));
            }
            if !names.insert(o.name.as_str()) {
                return Err(GovError::new(format!(
                    "operator registry: {} appears twice (one role per operator; an Auditor is never also SO or CO)",
                    o.name
                )));
            }
            let k = OperatorKey::from_pem(&o.public_key)
                .map_err(|e| GovError::new(format!("operator registry: {}: {e}", o.name)))?;
            if !keys.insert(k.fingerprint()) {
                return Err(GovError::new(format!(
                    "operator registry: {}'s public key is already another operator's (one key, one operator)",
                    o.name
                )));
            }
        }
        Ok(())
    }

    /// The canonical bytes (RFC 8785) of the stored form.
    ///
    /// # Errors
    /// As [`jcs::canonical`].
    pub fn to_canonical(&self) -> Result<Vec<u8>, GovError> {
        jcs::canonical(self)
    }

    /// Hex SHA-256 of [`Registry::to_canonical`]: the registry a ceremony is bound to.
    ///
    /// # Errors
    /// As [`jcs::canonical`].
    pub fn digest(&self) -> Result<String, GovError> {
        jcs::digest_hex(self)
    }

    /// The operator named `name`.
    pub fn get(&self, name: &str) -> Option<&Operator> {
        self.operators.iter().find(|o| o.name == name)
    }

    /// How many operators that are not revoked hold `role`.
    pub fn active(&self, role: Role) -> usize {
        self.operators
            .iter()
            .filter(|o| o.role == role && !o.revoked)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubkey::tests::ed25519;

    pub(crate) fn op(name: &str, role: &str, pem: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "role": role, "public_key": pem})
    }

    #[test]
    fn refusals() {
        let (_, a) = ed25519();
        let (_, b) = ed25519();
        let ok = serde_json::json!({"operators": [op("alice", "so", &a), op("bob", "co", &b)]});
        let r = Registry::parse(ok.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.active(Role::So), 1);
        let refused = |v: serde_json::Value, want: &str| {
            let e = Registry::parse(v.to_string().as_bytes())
                .err()
                .unwrap_or_else(|| panic!("accepted {v}"));
            assert!(e.0.contains(want), "{e}");
        };
        refused(serde_json::json!({"operators": []}), "no operators");
        refused(
            serde_json::json!({"operators": [op("alice", "so", &a), op("alice", "auditor", &b)]}),
            "appears twice",
        );
        refused(
            serde_json::json!({"operators": [op("alice", "so", &a), op("carol", "auditor", &a)]}),
            "already another operator's",
        );
        refused(
            serde_json::json!({"operators": [op("u", "user", &a)]}),
            "role user",
        );
        refused(
            serde_json::json!({"operators": [op("Alice!", "so", &a)]}),
            "name",
        );
        refused(
            serde_json::json!({"operators": [op("alice", "so", "junk")]}),
            "PEM",
        );
        refused(
            serde_json::json!({"format_version": 2, "operators": [op("alice", "so", &a)]}),
            "format_version 2",
        );
    }
}
