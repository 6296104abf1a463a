//! Scheduled lifecycle upkeep: which keys are due for rotation, and rotating them exactly once
//! however many replicas share the store.
//!
//! A key is due when Vault's `auto_rotate_period` has passed since its latest version's
//! activation, or when its latest version's protect-stop comes within the policy's lead time
//! (`[lifecycle] lead_time`), so a fresh version is active before the old one stops encrypting,
//! or when its latest version has reserved its usage limit of encryptions (`usage.rs`).
//! The rotation is a check-and-set write on the record (`modify`): every replica that finds the
//! key due races for the same store version, one wins, and the others re-read the record, find
//! the new version, and see the key no longer due.
//!
//! Each pass also advances `min_decryption_version` past the versions that are deactivated (the
//! end of their recipient-usage period), so the key's policy says what the lifecycle enforces
//! (the request of hashicorp/vault#17761).

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
    /// The latest version has reserved its usage limit of encryptions (SP 800-38D §8.3).
    UsageLimit,
}

impl RotationReason {
    /// The reason's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::AutoRotatePeriod => "auto_rotate_period",
            Self::ProtectStopAhead => "protect_stop_within_lead_time",
            Self::UsageLimit => "usage_limit",
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

/// Whether `s` is due at `now` with lead time `lead` and usage limit `limit`, and why.
fn due(s: &KeyState, now: u64, lead: u64, limit: u64) -> Option<RotationReason> {
    let latest = s.latest();
    let l = s.lifecycle.get(&latest)?;
    // The write that reserves a version's last uses rotates the key; this catches a rotation
    // that failed there.
    if s.usage.contains_key(&latest) && s.uses_reserved(latest) >= limit {
        return Some(RotationReason::UsageLimit);
    }
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

/// One key's lifecycle gauges: seconds from now until events (negative once past).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleGauge {
    /// The key.
    pub name: String,
    /// Until its latest version's protect-stop (encrypt stops unless it is rotated).
    pub protect_stop_in: i64,
    /// Until the earliest deactivation among its versions that still decrypt (`None`: none).
    pub deactivation_in: Option<i64>,
}

fn secs_until(t: u64, now: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(i64::MAX)
}

impl Keyring {
    /// The lifecycle gauges of every key this process has loaded (the scheduler loads every key
    /// each pass), from memory only: no HSM or store call, so `/metrics` can read it at every
    /// scrape.
    pub fn lifecycle_gauges(&self) -> Vec<LifecycleGauge> {
        let now = self.inner.clock.now();
        let keys = self.inner.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<LifecycleGauge> = keys
            .values()
            .filter_map(|s| {
                let latest = s.lifecycle.get(&s.latest())?;
                let min = s.record.config.min_decryption_version;
                let deactivation_in = s
                    .lifecycle
                    .iter()
                    .filter(|(v, l)| **v >= min && l.deactivation > now)
                    .map(|(_, l)| secs_until(l.deactivation, now))
                    .min();
                Some(LifecycleGauge {
                    name: s.record.name.clone(),
                    protect_stop_in: secs_until(latest.protect_stop, now),
                    deactivation_in,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Warnings about `seal-kek` keys (OpenBao's auto-unseal key) this process has loaded, from
    /// memory only: a latest version past its protect-stop no longer encrypts (OpenBao cannot
    /// seal new values with it) while it still decrypts, so OpenBao still unseals, until its
    /// deactivation. Each warning names the key, the version and both times.
    pub fn seal_key_warnings(&self) -> Vec<String> {
        let now = self.inner.clock.now();
        let keys = self.inner.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = keys
            .values()
            .filter(|s| s.record.config.class() == crate::lifecycle::LifecycleClass::SealKek)
            .filter_map(|s| {
                let v = s.latest();
                let l = s.lifecycle.get(&v)?;
                let past = l.state_at(now) == crate::lifecycle::LifecycleState::Active
                    && now >= l.protect_stop;
                past.then(|| {
                    format!(
                        "seal key {} v{v} is past its protect-stop ({}): it no longer encrypts, \
                         but OpenBao still unseals with it (decrypt) until its deactivation ({}); \
                         rotate it (rootseal key rotate {})",
                        s.record.name,
                        crate::lifecycle::rfc3339(l.protect_stop),
                        crate::lifecycle::rfc3339(l.deactivation),
                        s.record.name
                    )
                })
            })
            .collect();
        out.sort();
        out
    }

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
            match self.advance_min_decryption(&name).await {
                Ok(_) | Err(KeyringError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(key = %name, error = %e, cause = ?e.cause(), "cannot advance min_decryption_version");
                }
            }
        }
        Ok(out)
    }

    /// Raises key `name`'s `min_decryption_version` to its oldest version that is not
    /// deactivated now (never past the latest; `min_encryption_version`, when set, follows).
    /// Returns the new value when it changed.
    ///
    /// # Errors
    /// `NotFound`, HSM and store errors.
    pub async fn advance_min_decryption(&self, name: &str) -> Result<Option<u32>> {
        let mut changed = None;
        self.modify(name, |s| {
            let now = s.clock.now();
            let c = &s.record.config;
            let first_live = s
                .lifecycle
                .iter()
                .filter(|(v, _)| **v >= c.min_decryption_version)
                .find(|(_, l)| l.state_at(now) != crate::lifecycle::LifecycleState::Deactivated)
                .map_or(s.latest(), |(v, _)| *v);
            if first_live <= c.min_decryption_version {
                changed = None;
                return Ok(None);
            }
            let mut r = s.record.clone();
            r.config.min_decryption_version = first_live;
            if r.config.min_encryption_version != 0 {
                r.config.min_encryption_version = r.config.min_encryption_version.max(first_live);
            }
            changed = Some(first_live);
            Ok(Some((r, false)))
        })
        .await?;
        if let Some(v) = changed {
            tracing::info!(
                key = name,
                min_decryption_version = v,
                "deactivated versions: min_decryption_version advanced"
            );
        }
        Ok(changed)
    }

    /// Rotates key `name` if it is due, by check-and-set on its record: `None` when it is not
    /// due (or another replica rotated it first).
    ///
    /// # Errors
    /// `NotFound`, HSM and store errors.
    pub async fn rotate_if_due(&self, name: &str) -> Result<Option<Rotated>> {
        let lead = self.inner.policy.lead_time_secs;
        let limit = self.inner.policy.usage.limit();
        let mut reason = None;
        let s = self
            .modify(name, |s| {
                reason = due(s, s.clock.now(), lead, limit);
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
