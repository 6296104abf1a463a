//! Ceremony operations and their quorum rules.
//!
//! [`OPERATIONS`] is the one table of what a ceremony may ask for: each entry names the operation,
//! its quorum key in `[governance.quorum]`, whether only Security Officers approve it, its
//! parameters and its default quorum. A new operation (`backup.enroll`, `gate.reset`, …) is a new
//! entry here and an executor in the CLI, no new machinery.
//!
//! Quorum rules are read from `rootseal.toml`:
//!
//! ```toml
//! [governance]
//! allow_requester_approval = false
//! [governance.quorum]
//! root_rotate = { so = 2 }
//! key_destroy = { so = 1, co = 1 }
//! lifecycle_compromise = { so = 1, co = 1 }
//! ```
//!
//! and refused when read if a rule is empty or names a count of 0 (m = 0: never "no approval
//! needed", the OpenBao control-group failure), an unknown operation or role, a role that cannot
//! approve that operation, or more than [`MAX_APPROVALS`]. A rule that needs more operators of a
//! role than the registry has (m > n) is refused wherever rules meet a registry
//! ([`QuorumRules::check_satisfiable`]: `init --operators`, `operators.set`, `quorum.set`,
//! `propose`, `execute`). Duplicate keys are refused by the TOML parser.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::jcs;
use crate::registry::Registry;
use crate::role::Role;
use crate::GovError;

/// The largest total quorum of one rule.
pub const MAX_APPROVALS: u32 = 16;

/// What a parameter holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A transit key name.
    KeyName,
    /// A count of seconds (decimal).
    Seconds,
    /// A key version: a decimal number from 1 to 2^32 - 1.
    Version,
    /// 64 hex digits.
    Sha256Hex,
    /// A JSON document (given as `--param NAME=@FILE`), kept in canonical form.
    Document,
    /// A short word or comma-separated list (1 to 1024 bytes of `[A-Za-z0-9_.+,-]`): a role, key
    /// names, operation names, a token's name or accessor. Its meaning is checked by the
    /// operation's executor before anything runs.
    Words,
}

/// One parameter of an operation.
#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    /// Its name (`--param NAME=VALUE`).
    pub name: &'static str,
    /// Whether it must be given.
    pub required: bool,
    /// What it holds.
    pub kind: ParamKind,
    /// What it means.
    pub doc: &'static str,
}

/// One ceremony operation.
#[derive(Clone, Copy, Debug)]
pub struct Operation {
    /// Its name (`--op NAME`).
    pub name: &'static str,
    /// Its key in `[governance.quorum]`.
    pub quorum_key: &'static str,
    /// Whether only Security Officers may approve it.
    pub so_only: bool,
    /// Whether it applies to an existing root (false: only before any root exists).
    pub needs_root: bool,
    /// Its parameters.
    pub params: &'static [ParamSpec],
    /// Its quorum when `[governance.quorum]` does not name it.
    pub default_quorum: &'static [(Role, u32)],
    /// What it does.
    pub summary: &'static str,
}

/// Every ceremony operation.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        name: "root.init",
        quorum_key: "root_init",
        so_only: true,
        needs_root: false,
        params: &[ParamSpec {
            name: "registry_sha256",
            required: true,
            kind: ParamKind::Sha256Hex,
            doc: "the bootstrap registry (rootseal init --operators) the root is made for",
        }],
        default_quorum: &[(Role::So, 2)],
        summary: "create the L0 root and seal the first operator registry and quorum rules",
    },
    Operation {
        name: "root.rotate",
        quorum_key: "root_rotate",
        so_only: true,
        needs_root: true,
        params: &[ParamSpec {
            name: "grace_secs",
            required: false,
            kind: ParamKind::Seconds,
            doc: "seconds before the final re-seal pass (default 5)",
        }],
        default_quorum: &[(Role::So, 2)],
        summary: "re-seal every L1 under a new L0, then destroy the old L0",
    },
    Operation {
        name: "key.destroy",
        quorum_key: "key_destroy",
        so_only: false,
        needs_root: true,
        params: &[
            ParamSpec {
                name: "key",
                required: true,
                kind: ParamKind::KeyName,
                doc: "the transit key to destroy (every version, unless min_available_version)",
            },
            ParamSpec {
                name: "min_available_version",
                required: false,
                kind: ParamKind::Version,
                doc: "destroy only the versions below this one (Vault's trim; absent: the whole key)",
            },
        ],
        default_quorum: &[(Role::So, 1), (Role::Co, 1)],
        summary: "destroy a key and all its versions, or (trim) its versions below one",
    },
    Operation {
        name: "lifecycle.compromise",
        quorum_key: "lifecycle_compromise",
        so_only: false,
        needs_root: true,
        params: &[
            ParamSpec {
                name: "key",
                required: true,
                kind: ParamKind::KeyName,
                doc: "the transit key",
            },
            ParamSpec {
                name: "version",
                required: true,
                kind: ParamKind::Version,
                doc: "the compromised version",
            },
            ParamSpec {
                name: "decrypt_secs",
                required: false,
                kind: ParamKind::Seconds,
                doc: "seconds from execution during which the version still decrypts, each use audited (default 0: never again)",
            },
        ],
        default_quorum: &[(Role::So, 1), (Role::Co, 1)],
        summary: "mark a key version compromised (never encrypts again; decrypts only within the decision) and rotate the key",
    },
    Operation {
        name: "operators.set",
        quorum_key: "operators_set",
        so_only: true,
        needs_root: true,
        params: &[ParamSpec {
            name: "operators",
            required: true,
            kind: ParamKind::Document,
            doc: "the new operator registry ({\"operators\":[…]})",
        }],
        default_quorum: &[(Role::So, 2)],
        summary: "replace the operator registry",
    },
    Operation {
        name: "quorum.set",
        quorum_key: "quorum_set",
        so_only: true,
        needs_root: true,
        params: &[ParamSpec {
            name: "rules",
            required: true,
            kind: ParamKind::Document,
            doc: "the new quorum rules (default: those in rootseal.toml now)",
        }],
        default_quorum: &[(Role::So, 2)],
        summary: "approve the quorum rules of rootseal.toml",
    },
    Operation {
        name: "token.create",
        quorum_key: "token_create",
        so_only: false,
        needs_root: true,
        params: &[
            ParamSpec {
                name: "role",
                required: true,
                kind: ParamKind::Words,
                doc: "user (data plane) or co (key administration)",
            },
            ParamSpec {
                name: "keys",
                required: true,
                kind: ParamKind::Words,
                doc: "comma-separated key names the token may use",
            },
            ParamSpec {
                name: "ops",
                required: true,
                kind: ParamKind::Words,
                doc: "comma-separated operations (user: encrypt, decrypt, rewrap, datakey, bulk, sign, verify, hmac; co: read, create, rotate, config)",
            },
            ParamSpec {
                name: "ttl_secs",
                required: false,
                kind: ParamKind::Seconds,
                doc: "lifetime in seconds (default: no expiry)",
            },
            ParamSpec {
                name: "name",
                required: false,
                kind: ParamKind::Words,
                doc: "a name for `token list` and `token revoke` (default ROLE-KEY+KEY)",
            },
        ],
        default_quorum: &[(Role::Co, 1)],
        summary: "issue a scoped API token (printed once by `execute`; only its SHA-256 is kept)",
    },
    Operation {
        name: "token.revoke",
        quorum_key: "token_revoke",
        so_only: false,
        needs_root: true,
        params: &[ParamSpec {
            name: "who",
            required: true,
            kind: ParamKind::Words,
            doc: "the token's accessor or name",
        }],
        default_quorum: &[(Role::Co, 1)],
        summary: "revoke a scoped API token",
    },
];

/// The operation named `name`.
pub fn operation(name: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|o| o.name == name)
}

/// One rule: how many approvals of each role.
pub type QuorumRule = BTreeMap<Role, u32>;

/// The quorum rules in force: one per operation (defaults filled in) and whether a requester's
/// own approval counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumRules {
    /// Quorum key -> rule.
    pub rules: BTreeMap<String, QuorumRule>,
    /// `allow_requester_approval` (default false).
    pub allow_requester_approval: bool,
}

impl Default for QuorumRules {
    fn default() -> Self {
        let rules = OPERATIONS
            .iter()
            .map(|o| {
                (
                    o.quorum_key.to_owned(),
                    o.default_quorum.iter().copied().collect(),
                )
            })
            .collect();
        QuorumRules {
            rules,
            allow_requester_approval: false,
        }
    }
}

impl QuorumRules {
    /// The rules from `[governance.quorum]` (quorum key -> role name -> count) over the defaults.
    ///
    /// # Errors
    /// [`GovError`] naming the key at fault (see the module doc).
    pub fn from_config(
        table: &BTreeMap<String, BTreeMap<String, i64>>,
        allow_requester_approval: bool,
    ) -> Result<QuorumRules, GovError> {
        let mut out = QuorumRules {
            allow_requester_approval,
            ..QuorumRules::default()
        };
        for (key, raw) in table {
            let op = OPERATIONS
                .iter()
                .find(|o| o.quorum_key == key)
                .ok_or_else(|| {
                    GovError::new(format!(
                        "governance.quorum.{key}: no such operation (known: {})",
                        OPERATIONS
                            .iter()
                            .map(|o| o.quorum_key)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            let mut rule = QuorumRule::new();
            for (role, n) in raw {
                let r = Role::parse(role).ok_or_else(|| {
                    GovError::new(format!("governance.quorum.{key}: unknown role {role:?}"))
                })?;
                if !matches!(r, Role::So | Role::Co) || (op.so_only && r != Role::So) {
                    return Err(GovError::new(format!(
                        "governance.quorum.{key}: role {role} cannot approve {}{}",
                        op.name,
                        if op.so_only {
                            " (Security Officers only)"
                        } else {
                            " (so and co only)"
                        }
                    )));
                }
                let n = u32::try_from(*n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                    GovError::new(format!(
                        "governance.quorum.{key}.{role} = {n}: each count must be at least 1 (m = 0 would mean no approval; omit a role that is not needed)"
                    ))
                })?;
                rule.insert(r, n);
            }
            let total: u32 = rule.values().sum();
            if total == 0 {
                return Err(GovError::new(format!(
                    "governance.quorum.{key} is empty (m = 0 would mean no approval)"
                )));
            }
            if total > MAX_APPROVALS {
                return Err(GovError::new(format!(
                    "governance.quorum.{key}: {total} approvals, at most {MAX_APPROVALS}"
                )));
            }
            out.rules.insert(key.clone(), rule);
        }
        Ok(out)
    }

    /// The rule of `op`.
    pub fn rule(&self, op: &Operation) -> Option<&QuorumRule> {
        self.rules.get(op.quorum_key)
    }

    /// Hex SHA-256 of the canonical rules: what a ceremony is bound to.
    ///
    /// # Errors
    /// As [`jcs::canonical`].
    pub fn digest(&self) -> Result<String, GovError> {
        jcs::digest_hex(self)
    }

    /// Parses stored rules (canonical JSON), checking every rule again.
    ///
    /// # Errors
    /// [`GovError`].
    pub fn parse(bytes: &[u8]) -> Result<QuorumRules, GovError> {
        let mut r: QuorumRules = serde_json::from_slice(bytes)
            .map_err(|e| GovError::new(format!("quorum rules: {e}")))?;
        // Rules approved by an older rootseal have no entry for operations added since: those
        // get their default quorum (never "no approval"), as `from_config` gives them.
        for op in OPERATIONS {
            r.rules
                .entry(op.quorum_key.to_owned())
                .or_insert_with(|| op.default_quorum.iter().copied().collect());
        }
        for op in OPERATIONS {
            let rule = r.rule(op).ok_or_else(|| {
                GovError::new(format!("quorum rules: no rule for {}", op.quorum_key))
            })?;
            if rule.values().sum::<u32>() == 0 || rule.values().any(|n| *n == 0) {
                return Err(GovError::new(format!(
                    "quorum rules: {} has m = 0",
                    op.quorum_key
                )));
            }
        }
        Ok(r)
    }

    /// Refuses a rule that needs more operators of a role than `registry` has (m > n), counting
    /// only operators who are not revoked.
    ///
    /// # Errors
    /// [`GovError`] naming the rule.
    pub fn check_satisfiable(&self, registry: &Registry) -> Result<(), GovError> {
        for op in OPERATIONS {
            let Some(rule) = self.rule(op) else {
                return Err(GovError::new(format!(
                    "no quorum rule for {}",
                    op.quorum_key
                )));
            };
            for (role, m) in rule {
                let n = registry.active(*role);
                if usize::try_from(*m).unwrap_or(usize::MAX) > n {
                    return Err(GovError::new(format!(
                        "quorum rule {} needs {m} {role} approvals but the registry has {n} active {role} operator(s) (m > n: unsatisfiable)",
                        op.quorum_key
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &[(&str, i64)])]) -> BTreeMap<String, BTreeMap<String, i64>> {
        entries
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    v.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn defaults_and_refusals() {
        let d = QuorumRules::default();
        assert_eq!(
            d.rules["root_rotate"],
            [(Role::So, 2)].into_iter().collect()
        );
        assert_eq!(
            d.rules["key_destroy"],
            [(Role::So, 1), (Role::Co, 1)].into_iter().collect()
        );
        let r = QuorumRules::from_config(&table(&[("root_rotate", &[("so", 3)])]), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.rules["root_rotate"][&Role::So], 3);
        assert_ne!(r.digest().ok(), d.digest().ok());
        let refused = |t, want: &str| {
            let e = QuorumRules::from_config(&t, false)
                .err()
                .unwrap_or_else(|| panic!("accepted"));
            assert!(e.0.contains(want), "{e}");
        };
        refused(table(&[("root_rotate", &[("so", 0)])]), "m = 0");
        refused(table(&[("root_rotate", &[])]), "empty");
        refused(table(&[("root_rotate", &[("co", 1)])]), "cannot approve");
        refused(
            table(&[("key_destroy", &[("auditor", 1)])]),
            "cannot approve",
        );
        refused(table(&[("root_rotate", &[("so", -1)])]), "at least 1");
        refused(table(&[("root_rotate", &[("so", 17)])]), "at most");
        refused(
            table(&[("root_explode", &[("so", 1)])]),
            "no such operation",
        );
        refused(table(&[("root_rotate", &[("admin", 1)])]), "unknown role");
        let back = QuorumRules::parse(&jcs::canonical(&r).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
        // Token issue and revocation are CO actions, one CO by default; an SO may be required
        // too, a User or Auditor never.
        assert_eq!(
            d.rules["token_create"],
            [(Role::Co, 1)].into_iter().collect()
        );
        assert_eq!(
            d.rules["token_revoke"],
            [(Role::Co, 1)].into_iter().collect()
        );
        refused(table(&[("token_create", &[("user", 1)])]), "cannot approve");
        refused(table(&[("token_revoke", &[("co", 0)])]), "m = 0");
        // Rules stored before token.create existed get its default, never an empty rule.
        let mut old = d.clone();
        old.rules.remove("token_create");
        let back = QuorumRules::parse(&jcs::canonical(&old).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, d);
    }
}
