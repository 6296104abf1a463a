//! Marking a key version compromised (NIST SP 800-57 Part 1 Rev. 5 §7: the compromised state):
//! it never encrypts again, its compromise time is recorded under the record MAC, and, when it was
//! the latest version, the key is rotated in the same write so encryption goes on under a fresh
//! version.
//!
//! It decrypts only while the decision of the `lifecycle.compromise` ceremony that marked it
//! allows ([`VersionLifecycle::process_until`], e.g. a window to rewrap its ciphertexts under the
//! new version), and every such use is audited first: the keyring calls the audit hook a face
//! installs ([`Keyring::set_compromised_use_audit`]; `rootseal serve` and `dev` write a
//! `lifecycle.compromised_use` record) and refuses the use when the record cannot be written.
//!
//! [`VersionLifecycle::process_until`]: crate::lifecycle::VersionLifecycle::process_until

use std::collections::BTreeSet;
use std::sync::Arc;

use super::api::KeyInfo;
use super::state::KeyState;
use super::{Keyring, Result};
use crate::error::KeyringError;
use crate::lifecycle::LifecycleState;
use crate::store::BoxFuture;

/// A use of a compromised version that a ceremony's decision allows, reported to the audit hook
/// before it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompromisedUse {
    /// The key.
    pub key: String,
    /// The compromised version.
    pub version: u32,
    /// The operation (`decrypt`, `rewrap`, `bulk.unseal`).
    pub op: &'static str,
    /// Until when the ceremony's decision allows it (unix seconds).
    pub allowed_until: u64,
}

/// Records a [`CompromisedUse`] durably (the audit log); an error refuses the use.
pub type CompromisedUseAudit = Arc<
    dyn Fn(CompromisedUse) -> BoxFuture<'static, std::result::Result<(), String>> + Send + Sync,
>;

impl Keyring {
    /// Marks version `version` of key `name` compromised (now, by the keyring's clock), never to
    /// decrypt again; rotates the key when it is the latest. Marking it again changes nothing.
    ///
    /// # Errors
    /// `InvalidRequest` for a version the key does not have, `NotFound`, HSM and store errors.
    pub async fn compromise_version(&self, name: &str, version: u32) -> Result<KeyInfo> {
        self.compromise_version_until(name, version, None).await
    }

    /// [`Keyring::compromise_version`] with the ceremony's decision: the version still decrypts
    /// before `process_until` (unix seconds; `None`: never), each use audited. A later decision
    /// on an already compromised version replaces the earlier one (its compromise time stays).
    ///
    /// # Errors
    /// As [`Keyring::compromise_version`].
    pub async fn compromise_version_until(
        &self,
        name: &str,
        version: u32,
        process_until: Option<u64>,
    ) -> Result<KeyInfo> {
        let policy = self.inner.policy;
        let s = self
            .modify(name, |s| {
                let period = s.record.config.period(&policy)?;
                let now = s.clock.now();
                let mut r = s.record.clone();
                let Some(entry) = r.versions.iter_mut().find(|v| v.version == version) else {
                    return Err(KeyringError::InvalidRequest(format!(
                        "key {name} has no version {version}"
                    )));
                };
                let mut l = entry.lifecycle_or(period);
                if l.state == LifecycleState::Compromised && l.process_until == process_until {
                    return Ok(None);
                }
                let first = l.state != LifecycleState::Compromised;
                l.state = LifecycleState::Compromised;
                l.compromise = l.compromise.or(Some(now));
                l.process_until = process_until;
                entry.lifecycle = Some(l);
                Ok(Some((r, first && version == s.latest())))
            })
            .await?;
        tracing::warn!(
            key = name,
            version,
            latest = s.latest(),
            process_until,
            "key version marked compromised"
        );
        Ok(s.info())
    }

    /// Installs the hook that records each allowed use of a compromised version before it
    /// happens (the audit log of `serve` and `dev`). Without one, each use is only logged.
    pub fn set_compromised_use_audit(&self, audit: CompromisedUseAudit) {
        *self
            .inner
            .compromised_audit
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(audit);
    }

    /// Audits every use of a compromised version among `versions` of `s` that its ceremony's
    /// decision allows now, before `op` runs. Free unless some version of the key is compromised
    /// with such a decision (a flag in memory).
    ///
    /// # Errors
    /// `Internal` when the audit record cannot be written: the use is refused.
    pub(super) async fn audit_compromised_uses(
        &self,
        s: &KeyState,
        versions: &[u32],
        op: &'static str,
    ) -> Result<()> {
        if !s.compromised_processing {
            return Ok(());
        }
        let now = s.clock.now();
        let used: BTreeSet<u32> = versions
            .iter()
            .copied()
            .filter(|v| {
                s.lifecycle
                    .get(v)
                    .is_some_and(|l| l.processes_compromised(now))
            })
            .collect();
        let hook = self
            .inner
            .compromised_audit
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for v in used {
            let allowed_until = s
                .lifecycle
                .get(&v)
                .and_then(|l| l.process_until)
                .unwrap_or(0);
            tracing::warn!(
                key = %s.record.name,
                version = v,
                op,
                allowed_until,
                "compromised key version used under a lifecycle.compromise decision"
            );
            if let Some(h) = &hook {
                let u = CompromisedUse {
                    key: s.record.name.clone(),
                    version: v,
                    op,
                    allowed_until,
                };
                h(u).await.map_err(|e| {
                    KeyringError::internal(format!(
                        "the use of compromised key version {v} cannot be audited: {e}"
                    ))
                })?;
            }
        }
        Ok(())
    }
}
