//! Governance records: the operator registry, the quorum rules in force, the ledger of executed
//! ceremonies and the API-token grants (their meaning lives in the `rootseal-governance` crate;
//! here they are opaque bodies). Each is kept in the [`KekStore`] under a reserved name
//! ([`GOVERNANCE_PREFIX`]) and MACed inside the HSM with the current root's MAC key, exactly as a
//! KEK record is; root rotation re-MACs them under the new root.
//!
//! ```json
//! {"format":"rootseal-governance","format_version":1,"name":"rootseal-governance.operators",
//!  "body":"<base64>","root_id":"<32 hex>","mac":"<base64 HMAC-SHA256 of the record with mac = \"\">"}
//! ```
//!
//! Before the first root exists (`rootseal init --operators`) there is no MAC key: the first
//! registry is kept as a *bootstrap* record (`root_id` and `mac` empty), which only
//! [`read_bootstrap_record`] returns and only the `root.init` ceremony reads; it seals it as soon
//! as the root exists. [`Keyring::open_record`] refuses an unsealed record.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{Keyring, Result};
use crate::error::{Error, KeyringError};
use crate::root;
use crate::store::{KekStore, StoreError};
use crate::types::RootId;

pub use crate::store::{is_governance_name, GOVERNANCE_PREFIX};
/// The `format` field of a governance record.
pub const GOVERNANCE_FORMAT: &str = "rootseal-governance";
/// The governance record format version this code writes.
pub const GOVERNANCE_VERSION: u16 = 1;

/// A governance record as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GovRecord {
    format: String,
    format_version: u16,
    name: String,
    body: String,
    root_id: String,
    mac: String,
}

impl GovRecord {
    fn signed_bytes(&self) -> Result<Vec<u8>> {
        let mut c = self.clone();
        c.mac = String::new();
        serde_json::to_vec(&c).map_err(|e| KeyringError::internal(format!("serialise: {e}")))
    }

    fn parse(name: &str, raw: &[u8]) -> Result<GovRecord> {
        let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
            KeyringError::integrity(format!("governance record {name}: not JSON: {e}"))
        })?;
        if v.get("format").and_then(|f| f.as_str()) != Some(GOVERNANCE_FORMAT) {
            return Err(KeyringError::integrity(format!(
                "governance record {name}: not a rootseal governance record"
            )));
        }
        let fv = v
            .get("format_version")
            .and_then(|f| f.as_u64())
            .and_then(|f| u16::try_from(f).ok())
            .unwrap_or(u16::MAX);
        if fv != GOVERNANCE_VERSION {
            return Err(KeyringError::UnsupportedFormat(fv));
        }
        let r: GovRecord = serde_json::from_value(v).map_err(|e| {
            KeyringError::integrity(format!("governance record {name}: malformed: {e}"))
        })?;
        if r.name != name {
            return Err(KeyringError::integrity(format!(
                "governance record {name}: stored under another name ({:?})",
                r.name
            )));
        }
        Ok(r)
    }

    fn body(&self) -> Result<Vec<u8>> {
        B64.decode(&self.body).map_err(|_| {
            KeyringError::integrity(format!(
                "governance record {}: body is not base64",
                self.name
            ))
        })
    }
}

fn check_reserved(name: &str) -> Result<()> {
    if is_governance_name(name) && crate::store::valid_key_name(name) {
        Ok(())
    } else {
        Err(KeyringError::InvalidRequest(format!(
            "{name:?} is not a governance record name ({GOVERNANCE_PREFIX}…)"
        )))
    }
}

/// Writes a bootstrap (unsealed) record before any root exists; `cas` as [`KekStore::put`].
///
/// # Errors
/// `InvalidRequest` for a name without the reserved prefix; store errors (`Conflict` when it
/// changed since read).
pub async fn write_bootstrap_record(
    store: &Arc<dyn KekStore>,
    name: &str,
    body: &[u8],
    cas: u64,
) -> Result<u64> {
    check_reserved(name)?;
    let r = GovRecord {
        format: GOVERNANCE_FORMAT.into(),
        format_version: GOVERNANCE_VERSION,
        name: name.to_owned(),
        body: B64.encode(body),
        root_id: String::new(),
        mac: String::new(),
    };
    let bytes =
        serde_json::to_vec(&r).map_err(|e| KeyringError::internal(format!("serialise: {e}")))?;
    store.put(name, bytes, cas).await.map_err(|e| match e {
        StoreError::Conflict { .. } => KeyringError::Conflict,
        e => e.into(),
    })
}

/// Reads a bootstrap record: its body and store version, `None` when absent. A sealed record
/// under that name is returned as `None` too (it is no longer a bootstrap).
///
/// # Errors
/// `Integrity` when the entry is not a governance record; store errors.
pub async fn read_bootstrap_record(
    store: &Arc<dyn KekStore>,
    name: &str,
) -> Result<Option<(Vec<u8>, u64)>> {
    check_reserved(name)?;
    let Some(stored) = store.get(name).await? else {
        return Ok(None);
    };
    let r = GovRecord::parse(name, &stored.data)?;
    if !r.root_id.is_empty() || !r.mac.is_empty() {
        return Ok(None);
    }
    Ok(Some((r.body()?, stored.version)))
}

impl Keyring {
    /// Reads governance record `name`, verifying its MAC inside the HSM: its body and store
    /// version, `None` when absent.
    ///
    /// # Errors
    /// `Integrity` when the MAC fails, the record is unsealed (a bootstrap record) or malformed;
    /// HSM and store errors.
    pub async fn open_record(&self, name: &str) -> Result<Option<(Vec<u8>, u64)>> {
        check_reserved(name)?;
        let Some(stored) = self.inner.store.get(name).await? else {
            return Ok(None);
        };
        let r = self.verify_gov(name, &stored.data).await?;
        Ok(Some((r.body()?, stored.version)))
    }

    async fn verify_gov(&self, name: &str, raw: &[u8]) -> Result<GovRecord> {
        let r = GovRecord::parse(name, raw)?;
        if r.mac.is_empty() {
            return Err(KeyringError::integrity(format!(
                "governance record {name} is not sealed (a bootstrap record where a sealed one is required)"
            )));
        }
        let root_id = RootId::from_hex(&r.root_id).ok_or_else(|| {
            KeyringError::integrity(format!("governance record {name}: root id malformed"))
        })?;
        let mac = B64.decode(&r.mac).map_err(|_| {
            KeyringError::integrity(format!("governance record {name}: MAC is not base64"))
        })?;
        let signed = r.signed_bytes()?;
        self.inner
            .hsm
            .run(move |ctx| {
                let h = root::handles(ctx, &root_id)?;
                ctx.hmac_verify(h.mac, &signed, &mac)
            })
            .await
            .map_err(|e| match KeyringError::from(e) {
                KeyringError::Integrity(c) => KeyringError::integrity(format!(
                    "governance record {name}: MAC check failed: {c}"
                )),
                other => other,
            })?;
        Ok(r)
    }

    /// Writes governance record `name` with `body`, MACed inside the HSM under the current root;
    /// `cas` as [`KekStore::put`] (0: only if absent; the version [`Keyring::open_record`]
    /// returned, or that of a bootstrap record it replaces). Returns the new store version.
    ///
    /// # Errors
    /// `Conflict` when the entry changed since it was read; HSM and store errors.
    pub async fn seal_record(&self, name: &str, body: &[u8], cas: u64) -> Result<u64> {
        check_reserved(name)?;
        let mut r = GovRecord {
            format: GOVERNANCE_FORMAT.into(),
            format_version: GOVERNANCE_VERSION,
            name: name.to_owned(),
            body: B64.encode(body),
            root_id: String::new(),
            mac: String::new(),
        };
        let r = self
            .inner
            .hsm
            .run(move |ctx| {
                let id = root::current(ctx)?.ok_or(Error::NoCurrentRoot)?;
                let h = root::handles(ctx, &id)?;
                r.root_id = id.to_hex();
                r.mac = String::new();
                let bytes = serde_json::to_vec(&r)
                    .map_err(|e| Error::Internal(format!("serialise: {e}")))?;
                r.mac = B64.encode(ctx.hmac(h.mac, &bytes)?);
                Ok(r.clone())
            })
            .await?;
        let bytes = serde_json::to_vec(&r)
            .map_err(|e| KeyringError::internal(format!("serialise: {e}")))?;
        self.inner
            .store
            .put(name, bytes, cas)
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } => KeyringError::Conflict,
                e => e.into(),
            })
    }

    /// `n` bytes (at most 1024) from the HSM RNG.
    ///
    /// # Errors
    /// HSM errors; `InvalidRequest` beyond 1024.
    pub async fn random_bytes(&self, n: usize) -> Result<Vec<u8>> {
        self.inner.hsm.random_bytes(n).await
    }

    /// Root rotation's step for a governance record: verified under its root, re-MACed under
    /// `next`. Returns the new bytes, or `None` when already under `next`.
    pub(super) async fn remac_governance(
        &self,
        name: &str,
        raw: &[u8],
        next: RootId,
    ) -> Result<Option<Vec<u8>>> {
        if GovRecord::parse(name, raw)?.mac.is_empty() {
            // A bootstrap record (no root when it was written): nothing to move.
            return Ok(None);
        }
        let r = self.verify_gov(name, raw).await?;
        if r.root_id == next.to_hex() {
            return Ok(None);
        }
        let mut r = r;
        let r = self
            .inner
            .hsm
            .run(move |ctx| {
                let h = root::handles(ctx, &next)?;
                r.root_id = next.to_hex();
                r.mac = String::new();
                let bytes = serde_json::to_vec(&r)
                    .map_err(|e| Error::Internal(format!("serialise: {e}")))?;
                r.mac = B64.encode(ctx.hmac(h.mac, &bytes)?);
                Ok(r.clone())
            })
            .await?;
        Ok(Some(serde_json::to_vec(&r).map_err(|e| {
            KeyringError::internal(format!("serialise: {e}"))
        })?))
    }
}
