//! Marking a key version compromised (NIST SP 800-57 Part 1 Rev. 5 §7: the compromised state):
//! it never encrypts nor decrypts again, its compromise time is recorded under the record MAC,
//! and, when it was the latest version, the key is rotated in the same write so encryption goes
//! on under a fresh version.

use super::api::KeyInfo;
use super::{Keyring, Result};
use crate::error::KeyringError;
use crate::lifecycle::LifecycleState;

impl Keyring {
    /// Marks version `version` of key `name` compromised (now, by the keyring's clock); rotates
    /// the key when it is the latest. Marking it again changes nothing.
    ///
    /// # Errors
    /// `InvalidRequest` for a version the key does not have, `NotFound`, HSM and store errors.
    pub async fn compromise_version(&self, name: &str, version: u32) -> Result<KeyInfo> {
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
                if l.state == LifecycleState::Compromised {
                    return Ok(None);
                }
                l.state = LifecycleState::Compromised;
                l.compromise = Some(now);
                entry.lifecycle = Some(l);
                Ok(Some((r, version == s.latest())))
            })
            .await?;
        tracing::warn!(
            key = name,
            version,
            latest = s.latest(),
            "key version marked compromised"
        );
        Ok(s.info())
    }
}
