//! The lifecycle scheduler of `rootseal serve` and `rootseal dev`: a background task that every
//! [`INTERVAL`] asks the keyring to rotate the keys that are due (Vault's `auto_rotate_period`,
//! and a version whose protect-stop comes within `[lifecycle] lead_time`). Replicas sharing a
//! store each run it; the keyring's check-and-set write makes exactly one of them rotate.

use std::time::Duration;

use rootseal_hsm::{Keyring, Rotated};

/// How often the scheduler looks for due keys. Vault's own auto-rotation checks hourly; a
/// minute keeps a rotation within a minute of its due time.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// One scheduler pass: rotates every due key; returns what it rotated (a failure is logged, and the next
/// pass tries again).
pub async fn lifecycle_pass(keyring: &Keyring) -> Vec<Rotated> {
    match keyring.rotate_due().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, cause = ?e.cause(), "lifecycle scheduler: cannot list keys");
            Vec::new()
        }
    }
}

/// Spawns the scheduler: a pass every `interval` until the process ends (the task holds a
/// keyring clone, which is cheap).
pub fn spawn(keyring: Keyring, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            for r in lifecycle_pass(&keyring).await {
                tracing::info!(key = %r.name, version = r.version, reason = r.reason.name(), "lifecycle scheduler rotated a key");
            }
        }
    })
}
