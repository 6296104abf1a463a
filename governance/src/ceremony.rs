//! Ceremony files: a request for one operation with its exact parameters, and the operators'
//! signed approvals of it.
//!
//! ```json
//! {"format":"rootseal-ceremony","format_version":1,
//!  "request":{"id":"<32 hex from the HSM RNG>","op":"root.rotate","params":{"grace_secs":"5"},
//!             "token":{"manufacturer":"SoftHSM project","model":"SoftHSM v2","serial":"…"},
//!             "root_id":"<32 hex or null for root.init>","quorum_sha256":"<hex>",
//!             "registry_sha256":"<hex>","requester":"alice","requester_signature":"<b64>",
//!             "created":1700000000,"expires":1700000600},
//!  "approvals":[{"operator":"bob","alg":"ed25519","key_sha256":"<hex>","signature":"<b64>"}]}
//! ```
//!
//! Every signature is over `"rootseal-ceremony-v1\n" ‖ JCS(request)` (RFC 8785; the requester's
//! own signature over the request without it, with the prefix `"rootseal-ceremony-request-v1\n"`),
//! so it covers every field of the request and nothing can be changed after signing; the prefix
//! keeps a ceremony signature from ever meaning anything else. The file holds no secret.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::jcs;
use crate::ledger::Ledger;
use crate::pubkey::OperatorKey;
use crate::quorum::{operation, Operation, ParamKind, QuorumRules};
use crate::registry::Registry;
use crate::role::Role;
use crate::GovError;

/// The `format` of a ceremony file.
pub const CEREMONY_FORMAT: &str = "rootseal-ceremony";
/// The ceremony format version this code writes and reads.
pub const CEREMONY_VERSION: u16 = 1;
/// The domain-separation prefix of approval signatures.
pub const APPROVAL_PREFIX: &[u8] = b"rootseal-ceremony-v1\n";
/// The domain-separation prefix of the requester's signature.
pub const REQUEST_PREFIX: &[u8] = b"rootseal-ceremony-request-v1\n";
/// Default lifetime of a request: 10 minutes.
pub const DEFAULT_TTL_SECS: u64 = 600;
/// Longest lifetime of a request: 1 hour.
pub const MAX_TTL_SECS: u64 = 3600;
/// Clock skew tolerated for `created` in the future.
pub const SKEW_SECS: u64 = 60;

/// The token a ceremony applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRef {
    /// `manufacturerID`.
    pub manufacturer: String,
    /// `model`.
    pub model: String,
    /// `serialNumber`.
    pub serial: String,
}

impl fmt::Display for TokenRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} serial {}",
            self.manufacturer, self.model, self.serial
        )
    }
}

/// What a ceremony asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeremonyRequest {
    /// 128 bits from the HSM RNG, hex: single use.
    pub id: String,
    /// The operation ([`crate::OPERATIONS`]).
    pub op: String,
    /// Its exact parameters.
    pub params: BTreeMap<String, String>,
    /// The token it applies to.
    pub token: TokenRef,
    /// The root it applies to (`None` for `root.init`).
    pub root_id: Option<String>,
    /// The quorum rules in force when it was made.
    pub quorum_sha256: String,
    /// The operator registry in force when it was made.
    pub registry_sha256: String,
    /// Who asks (a registered operator).
    pub requester: String,
    /// The requester's signature (over the request with this field empty).
    pub requester_signature: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; at most [`MAX_TTL_SECS`] after `created`.
    pub expires: u64,
}

/// One operator's approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The operator's registered name.
    pub operator: String,
    /// `ed25519` or `ecdsa-p256`.
    pub alg: String,
    /// Fingerprint of the key that signed (hex SHA-256 of its SPKI).
    pub key_sha256: String,
    /// The signature, base64.
    pub signature: String,
}

/// A ceremony file: a request and its approvals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeremonyFile {
    /// [`CEREMONY_FORMAT`].
    pub format: String,
    /// [`CEREMONY_VERSION`].
    pub format_version: u16,
    /// What is asked.
    pub request: CeremonyRequest,
    /// Who approved it.
    pub approvals: Vec<Approval>,
}

/// Why `execute` refuses a ceremony. Each message names the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a ceremony file, or a malformed one.
    #[error("not a valid ceremony file: {0}")]
    Malformed(String),
    /// A format version this rootseal does not read.
    #[error(
        "ceremony format_version {0} is not supported (this rootseal reads {CEREMONY_VERSION})"
    )]
    UnsupportedFormat(u16),
    /// An operation not in the table.
    #[error("unknown ceremony operation {0:?}")]
    UnknownOperation(String),
    /// Parameters that do not fit the operation, or differ from the running system.
    #[error("ceremony parameters refused: {0}")]
    BadParams(String),
    /// Expired.
    #[error("the ceremony expired at {expires} (now {now}): propose a new one")]
    Expired {
        /// Its expiry.
        expires: u64,
        /// Now.
        now: u64,
    },
    /// A lifetime beyond the maximum, or a creation time in the future.
    #[error("the ceremony's validity is refused: {0}")]
    BadLifetime(String),
    /// An id already executed.
    #[error("ceremony {0} was already executed (each ceremony runs once)")]
    Replayed(String),
    /// Another token.
    #[error("the ceremony is for token {request}, but this is token {running}")]
    TokenMismatch {
        /// In the request.
        request: String,
        /// Here.
        running: String,
    },
    /// Another root.
    #[error("the ceremony is for root {request}, but the current root is {running}")]
    RootMismatch {
        /// In the request.
        request: String,
        /// Here.
        running: String,
    },
    /// Other quorum rules.
    #[error(
        "the ceremony was made under quorum rules {request}, but the rules in force are {running}"
    )]
    QuorumRulesChanged {
        /// In the request.
        request: String,
        /// Here.
        running: String,
    },
    /// Another operator registry.
    #[error("the ceremony was made under operator registry {request}, but the registry in force is {running}")]
    RegistryChanged {
        /// In the request.
        request: String,
        /// Here.
        running: String,
    },
    /// The requester is not a registered, active operator, or their signature fails.
    #[error("the requester {0:?} is not an active registered operator, or the request's signature does not verify")]
    BadRequester(String),
    /// An approval by a name or key the registry does not hold.
    #[error("approval by {0:?}: a signature by an unregistered key (not in this installation's operator registry)")]
    UnregisteredKey(String),
    /// An approval by a revoked operator.
    #[error("approval by {0:?}: the operator is revoked")]
    RevokedOperator(String),
    /// A signature that does not verify (the request changed after signing, or a forgery).
    #[error("approval by {0:?}: the signature does not verify over this request (changed after signing?)")]
    BadSignature(String),
    /// The same operator twice.
    #[error("operator {0:?} approved twice: approvals must be by distinct operators")]
    DuplicateApproval(String),
    /// The requester approved their own request.
    #[error("the requester {0:?} approved their own request (allow_requester_approval is false)")]
    RequesterApproval(String),
    /// An approver whose role cannot approve this operation.
    #[error("approval by {operator:?}: role {role} cannot approve {op}")]
    WrongRole {
        /// The operator.
        operator: String,
        /// Their role.
        role: Role,
        /// The operation.
        op: String,
    },
    /// Not enough approvals.
    #[error("quorum not met for {op}: needs {need}, has {have}")]
    QuorumNotMet {
        /// The operation.
        op: String,
        /// The rule.
        need: String,
        /// What was counted.
        have: String,
    },
    /// The rules cannot be met by the registry (m > n) or are missing.
    #[error("quorum rules refused: {0}")]
    Unsatisfiable(String),
}

/// What the running system is, for [`verify`].
#[derive(Clone, Copy, Debug)]
pub struct VerifyContext<'a> {
    /// The registry in force.
    pub registry: &'a Registry,
    /// The quorum rules in force.
    pub rules: &'a QuorumRules,
    /// This token.
    pub token: &'a TokenRef,
    /// The current root (`None` before `root.init`).
    pub root_id: Option<&'a str>,
    /// Now, Unix seconds.
    pub now: u64,
    /// Executed ceremonies.
    pub ledger: &'a Ledger,
}

/// What a verified ceremony was approved by.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The operation.
    pub op: &'static Operation,
    /// The approvers that counted, by role.
    pub approvers: BTreeMap<Role, Vec<String>>,
}

fn rule_text(rule: &BTreeMap<Role, u32>) -> String {
    rule.iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

impl CeremonyRequest {
    /// The bytes approvals sign: [`APPROVAL_PREFIX`] ‖ JCS(request).
    ///
    /// # Errors
    /// As [`jcs::canonical`].
    pub fn approval_message(&self) -> Result<Vec<u8>, GovError> {
        let mut m = APPROVAL_PREFIX.to_vec();
        m.extend(jcs::canonical(self)?);
        Ok(m)
    }

    /// The bytes the requester signs: [`REQUEST_PREFIX`] ‖ JCS(request without its signature).
    ///
    /// # Errors
    /// As [`jcs::canonical`].
    pub fn request_message(&self) -> Result<Vec<u8>, GovError> {
        let mut c = self.clone();
        c.requester_signature = String::new();
        let mut m = REQUEST_PREFIX.to_vec();
        m.extend(jcs::canonical(&c)?);
        Ok(m)
    }

    /// Hex SHA-256 of JCS(request): what the ledger records.
    ///
    /// # Errors
    /// As [`jcs::canonical`].
    pub fn digest(&self) -> Result<String, GovError> {
        jcs::digest_hex(self)
    }
}

/// Checks `params` against `op`'s schema: every required one present, no unknown one, each of
/// its kind.
///
/// # Errors
/// [`Refusal::BadParams`].
pub fn check_params(op: &Operation, params: &BTreeMap<String, String>) -> Result<(), Refusal> {
    for k in params.keys() {
        if !op.params.iter().any(|p| p.name == k) {
            return Err(Refusal::BadParams(format!(
                "{} takes no parameter {k:?} (it takes: {})",
                op.name,
                op.params
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    for p in op.params {
        let Some(v) = params.get(p.name) else {
            if p.required {
                return Err(Refusal::BadParams(format!(
                    "{} needs --param {}=… ({})",
                    op.name, p.name, p.doc
                )));
            }
            continue;
        };
        let ok = match p.kind {
            ParamKind::KeyName => {
                !v.is_empty()
                    && v.len() <= 128
                    && !v.starts_with('.')
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            }
            ParamKind::Seconds => v.parse::<u64>().is_ok(),
            ParamKind::Version => v.parse::<u32>().is_ok_and(|n| n >= 1),
            ParamKind::Sha256Hex => v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()),
            ParamKind::Document => serde_json::from_str::<serde_json::Value>(v).is_ok(),
            ParamKind::Words => {
                !v.is_empty()
                    && v.len() <= 1024
                    && v.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+' | b',')
                    })
            }
        };
        if !ok {
            return Err(Refusal::BadParams(format!(
                "{}: {:?} is not a valid {:?}",
                p.name, v, p.kind
            )));
        }
    }
    Ok(())
}

impl CeremonyFile {
    /// A new file around `request`, with no approvals.
    pub fn new(request: CeremonyRequest) -> CeremonyFile {
        CeremonyFile {
            format: CEREMONY_FORMAT.into(),
            format_version: CEREMONY_VERSION,
            request,
            approvals: Vec::new(),
        }
    }

    /// Parses a ceremony file (any JSON layout; the signatures are over the canonical request).
    ///
    /// # Errors
    /// [`Refusal::Malformed`], [`Refusal::UnsupportedFormat`].
    pub fn parse(bytes: &[u8]) -> Result<CeremonyFile, Refusal> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(CEREMONY_FORMAT) {
            return Err(Refusal::Malformed(format!(
                "no \"format\":\"{CEREMONY_FORMAT}\""
            )));
        }
        let fv = v
            .get("format_version")
            .and_then(|f| f.as_u64())
            .and_then(|f| u16::try_from(f).ok())
            .unwrap_or(u16::MAX);
        if fv != CEREMONY_VERSION {
            return Err(Refusal::UnsupportedFormat(fv));
        }
        serde_json::from_value(v).map_err(|e| Refusal::Malformed(e.to_string()))
    }

    /// The file as written: canonical JSON and a newline.
    ///
    /// # Errors
    /// As [`jcs::canonical`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, GovError> {
        let mut b = jcs::canonical(self)?;
        b.push(b'\n');
        Ok(b)
    }

    /// Appends `operator`'s approval: `signature` by `key` over
    /// [`CeremonyRequest::approval_message`]. Refuses what `execute` would refuse anyway and can
    /// be seen here: a second approval by the same operator, an expired request, a signature
    /// that does not verify.
    ///
    /// # Errors
    /// [`Refusal`].
    pub fn add_approval(
        &mut self,
        operator: &str,
        key: &OperatorKey,
        signature: &[u8],
        now: u64,
    ) -> Result<(), Refusal> {
        if self.approvals.iter().any(|a| a.operator == operator) {
            return Err(Refusal::DuplicateApproval(operator.to_owned()));
        }
        if now >= self.request.expires {
            return Err(Refusal::Expired {
                expires: self.request.expires,
                now,
            });
        }
        let msg = self
            .request
            .approval_message()
            .map_err(|e| Refusal::Malformed(e.0))?;
        if !key.verify(&msg, signature) {
            return Err(Refusal::BadSignature(operator.to_owned()));
        }
        self.approvals.push(Approval {
            operator: operator.to_owned(),
            alg: key.alg().name().to_owned(),
            key_sha256: key.fingerprint(),
            signature: B64.encode(signature),
        });
        Ok(())
    }
}

/// Verifies `file` against the running system: everything `execute` checks, in this order:
/// format, operation and parameters, token, root, quorum rules, registry, lifetime, ledger,
/// requester, each approval (registered, not revoked, role, distinct, not the requester, valid
/// signature), the quorum. Operation-specific checks of the parameters against the system (a key
/// that exists, a registry file that matches) are the executor's.
///
/// # Errors
/// The first [`Refusal`] found.
pub fn verify(file: &CeremonyFile, cx: &VerifyContext<'_>) -> Result<Verified, Refusal> {
    if file.format != CEREMONY_FORMAT {
        return Err(Refusal::Malformed("wrong format".into()));
    }
    if file.format_version != CEREMONY_VERSION {
        return Err(Refusal::UnsupportedFormat(file.format_version));
    }
    let req = &file.request;
    let op = operation(&req.op).ok_or_else(|| Refusal::UnknownOperation(req.op.clone()))?;
    check_params(op, &req.params)?;
    if req.token != *cx.token {
        return Err(Refusal::TokenMismatch {
            request: req.token.to_string(),
            running: cx.token.to_string(),
        });
    }
    if req.root_id.as_deref() != cx.root_id {
        return Err(Refusal::RootMismatch {
            request: req.root_id.clone().unwrap_or_else(|| "(none)".into()),
            running: cx.root_id.unwrap_or("(none)").to_owned(),
        });
    }
    let rules_hash = cx.rules.digest().map_err(|e| Refusal::Unsatisfiable(e.0))?;
    if req.quorum_sha256 != rules_hash {
        return Err(Refusal::QuorumRulesChanged {
            request: req.quorum_sha256.clone(),
            running: rules_hash,
        });
    }
    let reg_hash = cx.registry.digest().map_err(|e| Refusal::Malformed(e.0))?;
    if req.registry_sha256 != reg_hash {
        return Err(Refusal::RegistryChanged {
            request: req.registry_sha256.clone(),
            running: reg_hash,
        });
    }
    if req.expires <= req.created || req.expires - req.created > MAX_TTL_SECS {
        return Err(Refusal::BadLifetime(format!(
            "valid {}s, at most {MAX_TTL_SECS}s",
            req.expires.saturating_sub(req.created)
        )));
    }
    if req.created > cx.now + SKEW_SECS {
        return Err(Refusal::BadLifetime(format!(
            "created at {} is in the future (now {})",
            req.created, cx.now
        )));
    }
    if cx.now >= req.expires {
        return Err(Refusal::Expired {
            expires: req.expires,
            now: cx.now,
        });
    }
    if cx.ledger.get(&req.id).is_some() {
        return Err(Refusal::Replayed(req.id.clone()));
    }
    cx.rules
        .check_satisfiable(cx.registry)
        .map_err(|e| Refusal::Unsatisfiable(e.0))?;
    let rule = cx
        .rules
        .rule(op)
        .ok_or_else(|| Refusal::Unsatisfiable(format!("no rule for {}", op.quorum_key)))?;

    // The requester: registered, active, and their signature over the request.
    let requester = cx
        .registry
        .get(&req.requester)
        .filter(|o| !o.revoked && matches!(o.role, Role::So | Role::Co))
        .ok_or_else(|| Refusal::BadRequester(req.requester.clone()))?;
    let rkey = OperatorKey::from_pem(&requester.public_key)
        .map_err(|_| Refusal::BadRequester(req.requester.clone()))?;
    let rsig = B64
        .decode(&req.requester_signature)
        .map_err(|_| Refusal::BadRequester(req.requester.clone()))?;
    let rmsg = req.request_message().map_err(|e| Refusal::Malformed(e.0))?;
    if !rkey.verify(&rmsg, &rsig) {
        return Err(Refusal::BadRequester(req.requester.clone()));
    }

    let msg = req
        .approval_message()
        .map_err(|e| Refusal::Malformed(e.0))?;
    let mut seen = BTreeSet::new();
    let mut approvers: BTreeMap<Role, Vec<String>> = BTreeMap::new();
    for a in &file.approvals {
        if !seen.insert(a.operator.as_str()) {
            return Err(Refusal::DuplicateApproval(a.operator.clone()));
        }
        let o = cx
            .registry
            .get(&a.operator)
            .ok_or_else(|| Refusal::UnregisteredKey(a.operator.clone()))?;
        let key = OperatorKey::from_pem(&o.public_key)
            .map_err(|_| Refusal::UnregisteredKey(a.operator.clone()))?;
        if key.fingerprint() != a.key_sha256 {
            return Err(Refusal::UnregisteredKey(a.operator.clone()));
        }
        if o.revoked {
            return Err(Refusal::RevokedOperator(a.operator.clone()));
        }
        let sig = B64
            .decode(&a.signature)
            .map_err(|_| Refusal::BadSignature(a.operator.clone()))?;
        if !key.verify(&msg, &sig) {
            return Err(Refusal::BadSignature(a.operator.clone()));
        }
        if !rule.contains_key(&o.role) {
            return Err(Refusal::WrongRole {
                operator: a.operator.clone(),
                role: o.role,
                op: op.name.to_owned(),
            });
        }
        if a.operator == req.requester && !cx.rules.allow_requester_approval {
            return Err(Refusal::RequesterApproval(a.operator.clone()));
        }
        approvers
            .entry(o.role)
            .or_default()
            .push(a.operator.clone());
    }
    let short = rule.iter().any(|(r, m)| {
        approvers.get(r).map_or(0, Vec::len) < usize::try_from(*m).unwrap_or(usize::MAX)
    });
    if short {
        let have = if approvers.is_empty() {
            "no valid approval".to_owned()
        } else {
            approvers
                .iter()
                .map(|(r, v)| format!("{} {r} ({})", v.len(), v.join(", ")))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        return Err(Refusal::QuorumNotMet {
            op: op.name.to_owned(),
            need: rule_text(rule),
            have,
        });
    }
    Ok(Verified { op, approvers })
}

#[cfg(test)]
mod tests;
