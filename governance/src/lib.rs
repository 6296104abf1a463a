//! rootseal's dual control and custodian separation, as data and rules (no PKCS#11, no HTTP):
//!
//! * [`role`]: the roles (SO, CO, User, Auditor) and who may hold which;
//! * [`pubkey`]: operator public keys (Ed25519, ECDSA P-256) and signature checks in software;
//! * [`registry`]: the operator registry (name, role, public key, revoked);
//! * [`quorum`]: the [`OPERATIONS`] table (one entry per ceremony operation) and the quorum rules
//!   of `[governance.quorum]`, refused at load when empty or malformed;
//! * [`ceremony`]: the versioned ceremony file (RFC 8785 canonical JSON), its approvals, and
//!   [`ceremony::verify`], which answers a typed [`Refusal`];
//! * [`ledger`]: the ids of executed ceremonies (single use);
//! * [`tokens`]: scoped API tokens and their grants (only the SHA-256 of a token is stored).
//!
//! The HSM-MACed storage of the registry, rules, ledger and grants is the keyring's
//! (`rootseal_hsm::Keyring::seal_record`); the HSM signer of approvals is
//! `rootseal_hsm::OperatorSigner`. This crate only decides.
#![forbid(unsafe_code)]

pub mod ceremony;
pub mod jcs;
pub mod ledger;
pub mod pubkey;
pub mod quorum;
pub mod registry;
pub mod role;
pub mod tokens;

pub use ceremony::{
    verify, Approval, CeremonyFile, CeremonyRequest, Refusal, TokenRef, Verified, VerifyContext,
};
pub use ledger::{Ledger, LedgerEntry, LedgerState};
pub use pubkey::{KeyAlg, OperatorKey};
pub use quorum::{operation, Operation, ParamKind, ParamSpec, QuorumRule, QuorumRules, OPERATIONS};
pub use registry::{Operator, Registry};
pub use role::Role;
pub use tokens::{Denial, GrantRequest, TokenGrant, TokenOp, TokenStore};

/// Store names of the governance records (under `rootseal_hsm::GOVERNANCE_PREFIX`).
pub mod records {
    /// The operator registry.
    pub const OPERATORS: &str = "rootseal-governance.operators";
    /// The quorum rules in force.
    pub const QUORUM: &str = "rootseal-governance.quorum";
    /// The ledger of executed ceremonies.
    pub const LEDGER: &str = "rootseal-governance.ledger";
    /// The API-token grants.
    pub const TOKENS: &str = "rootseal-governance.tokens";
}

/// An error reading or checking a governance document (registry, rules, token store): the
/// message names what is wrong, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GovError(pub String);

impl GovError {
    /// A new error with `msg`.
    pub fn new(msg: impl Into<String>) -> Self {
        GovError(msg.into())
    }
}
