//! The roles of custodian separation.
//!
//! | role | may |
//! |---|---|
//! | SO (Security Officer) | roots, the operator registry, the quorum rules, backup enrolment and restore, the attestation gate: only ever by ceremony |
//! | CO (Crypto Officer) | key create, rotate, config, lifecycle; API token issue and revoke; co-signs key destruction and export |
//! | User | data-plane calls on the keys and operations its API token names |
//! | Auditor | reads and verifies the audit log; nothing else |
//!
//! No operator may be Auditor and SO or CO: the registry refuses one person (one name, one public
//! key) enrolled both ways ([`crate::Registry::validate`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Security Officer.
    So,
    /// Crypto Officer.
    Co,
    /// A data-plane caller (API tokens only; never an operator in the registry).
    User,
    /// Reads and verifies the audit log.
    Auditor,
}

impl Role {
    /// The name in configs and files (`so`, `co`, `user`, `auditor`).
    pub fn name(self) -> &'static str {
        match self {
            Role::So => "so",
            Role::Co => "co",
            Role::User => "user",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "so" => Some(Role::So),
            "co" => Some(Role::Co),
            "user" => Some(Role::User),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    /// Whether an operator (a registry entry) may hold this role: SO, CO, Auditor. Users are API
    /// tokens, not operators.
    pub fn is_operator_role(self) -> bool {
        !matches!(self, Role::User)
    }

    /// Whether one person may hold both roles: never Auditor with SO or CO.
    pub fn compatible(self, other: Role) -> bool {
        !matches!(
            (self, other),
            (Role::Auditor, Role::So | Role::Co) | (Role::So | Role::Co, Role::Auditor)
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auditor_exclusive() {
        assert!(!Role::Auditor.compatible(Role::So));
        assert!(!Role::Co.compatible(Role::Auditor));
        assert!(Role::So.compatible(Role::Co));
        assert!(Role::Auditor.compatible(Role::Auditor));
        assert_eq!(Role::parse("co"), Some(Role::Co));
        assert_eq!(Role::parse("admin"), None);
        assert!(!Role::User.is_operator_role());
    }
}
