//! Scheduled lifecycle upkeep: which keys are due for rotation, and rotating them exactly once
//! however many replicas share the store.
//!
//! A key is due when Vault's `auto_rotate_period` has passed since its latest version's
//! activation, or when its latest version's protect-stop comes within the policy's lead time
//! (`[lifecycle] lead_time`), so a fresh version is active before the old one stops encrypting.
//! The rotation is a check-and-set write on the record (`modify`): every replica that finds the
//! key due races for the same store version, one wins, and the others re-read the record, find
//! the new version, and see the key no longer due.

use super::state::KeyState;
use super::{Keyring, Result};
use crate::error::KeyringError;

/// Why a key is due for rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationReason {
    /// `auto_rotate_period` has passed since the latest version's activation.
    AutoRotatePeriod,
    /// The latest version's protect-stop is within the lead time (or past).
    ProtectStopAhead,
}

impl RotationReason {
    /// The reason's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::AutoRotatePeriod => "auto_rotate_period",
            Self::ProtectStopAhead => "protect_stop_within_lead_time",
        }
    }
}

/// A rotation the upkeep made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotated {
    /// The key.
    pub name: String,
    /// Its new version.
    pub version: u32,
    /// Why.
    pub reason: RotationReason,
}

/// Whether `s` is due at `now` with lead time `lead`, and why.
fn due(s: &KeyState, now: u64, lead: u64) -> Option<RotationReason> {
    let latest = s.latest();
    let l = s.lifecycle.get(&latest)?;
    let period = s.record.config.auto_rotate_period_secs;
    if period != 0 && now >= l.activation.saturating_add(period) {
        return Some(RotationReason::AutoRotatePeriod);
    }
    // A key whose own OUP is shorter than the lead time is rotated at half its OUP, not at every
    // pass.
    let lead = lead.min(l.protect_stop.saturating_sub(l.activation) / 2);
    if now.saturating_add(lead) >= l.protect_stop {
        return Some(RotationReason::ProtectStopAhead);
    }
    None
}

impl Keyring {
    /// Rotates every key that is due (see the module documentation); returns what it rotated.
    /// A key that fails is logged and skipped (the next pass tries again).
    ///
    /// # Errors
    /// Store errors listing the keys.
    pub async fn rotate_due(&self) -> Result<Vec<Rotated>> {
        let mut out = Vec::new();
        for name in self.list_keys().await? {
            match self.rotate_if_due(&name).await {
                Ok(Some(r)) => out.push(r),
                Ok(None) | Err(KeyringError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(key = %name, error = %e, cause = ?e.cause(), "scheduled rotation failed");
                }
            }
        }
        Ok(out)
    }

    /// Rotates key `name` if it is due, by check-and-set on its record: `None` when it is not
    /// due (or another replica rotated it first).
    ///
    /// # Errors
    /// `NotFound`, HSM and store errors.
    pub async fn rotate_if_due(&self, name: &str) -> Result<Option<Rotated>> {
        let lead = self.inner.policy.lead_time_secs;
        let mut reason = None;
        let s = self
            .modify(name, |s| {
                reason = due(s, s.clock.now(), lead);
                Ok(reason.map(|_| (s.record.clone(), true)))
            })
            .await?;
        let Some(reason) = reason else {
            return Ok(None);
        };
        let version = s.latest();
        tracing::info!(
            key = name,
            version,
            reason = reason.name(),
            "key rotated by schedule"
        );
        Ok(Some(Rotated {
            name: name.to_owned(),
            version,
            reason,
        }))
    }
}
