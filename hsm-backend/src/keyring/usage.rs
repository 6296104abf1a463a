//! Usage limits (issue 13, item 5): every AES version counts its AES-GCM encryptions and stops at
//! the policy's limit (default 2^32 minus a margin: NIST SP 800-38D §8.3 allows one key at most
//! 2^32 invocations with random 96-bit IVs), when the key rotates so encryption goes on under a
//! fresh version.
//!
//! The count lives in the version's record entry (`uses_reserved`, under the record MAC), and is
//! reserved ahead of use: a process that runs out of uses writes `uses_reserved + block` by
//! check-and-set, then spends that block from an atomic counter in memory ([`Usage`]), one
//! compare-and-swap per request. The record therefore always holds at least the encryptions
//! made (never an under-count); a crash loses at most the unspent part of one block per process.
//! Several replicas sharing a store each reserve their own blocks; the check-and-set makes their
//! reservations add up.
//!
//! What counts, per version: every item of `encrypt` and of rewrap's encrypt half, every data
//! key, and every bulk-seal batch key (one use of the L1; the batch key's own items are
//! counter-nonce AES-GCM under the batch key, at most `bulk::MAX_ITEMS_PER_BATCH` = 2^24 per
//! batch key, so they never approach the limit). Uses are counted before the HSM encrypts, so a
//! failed encryption still counts.

use std::sync::atomic::Ordering;

use super::counter::Usage;
use super::state::KeyState;
use super::{Keyring, Result};
use crate::error::KeyringError;
use crate::lifecycle::{LifecycleRefusal, Refusal};

/// The refusal of a version at its usage limit.
fn exhausted(version: u32) -> KeyringError {
    KeyringError::Lifecycle(LifecycleRefusal {
        version,
        reason: Refusal::UsageLimit,
    })
}

impl Keyring {
    /// Counts `n` AES-GCM encryptions under version `v` of key `s` before they are made: from
    /// this process's reserved block when it holds enough (an atomic operation), else after
    /// reserving another block in the record. A version without a counter (signing, HMAC and RSA
    /// keys) counts nothing.
    ///
    /// # Errors
    /// The lifecycle refusal [`Refusal::UsageLimit`] when the version has reached its limit
    /// (the key is rotated then, when it is the latest); HSM and store errors of the
    /// reservation.
    pub(super) async fn count_uses(&self, s: &KeyState, v: u32, n: u64) -> Result<()> {
        let Some(u) = s.usage.get(&v) else {
            return Ok(());
        };
        if n == 0 || u.try_take(n) {
            return Ok(());
        }
        self.reserve(&s.record.name, v, n, u).await
    }

    /// Chooses the version a protecting AES operation of `n` encryptions uses (Vault's
    /// `key_version` rules and the lifecycle, [`KeyState::encrypt_version`]) and counts them.
    /// When the default version has just reached its limit, the key has rotated: the new latest
    /// version is used instead. A version the caller named is refused at its limit.
    ///
    /// # Errors
    /// As [`KeyState::encrypt_version`] and [`Keyring::count_uses`].
    pub(super) async fn protect_with(
        &self,
        s: std::sync::Arc<KeyState>,
        version: Option<u32>,
        n: u64,
    ) -> Result<(std::sync::Arc<KeyState>, u32)> {
        let v = s.encrypt_version(version)?;
        match self.count_uses(&s, v, n).await {
            Ok(()) => Ok((s, v)),
            Err(KeyringError::Lifecycle(LifecycleRefusal {
                reason: Refusal::UsageLimit,
                ..
            })) if matches!(version, None | Some(0)) => {
                let s = self.load(&s.record.name, true).await?;
                let w = s.encrypt_version(version)?;
                if w == v {
                    return Err(exhausted(v));
                }
                self.count_uses(&s, w, n).await?;
                Ok((s, w))
            }
            Err(e) => Err(e),
        }
    }

    /// Reserves a block of uses of version `v` of key `name` for `u` by check-and-set on the
    /// record, then spends `n` of it. When the version has fewer than `n` uses left and is the
    /// latest, the write adds a new version instead (the rotation at the limit), and the request
    /// is refused here for [`Keyring::protect_with`] to move to the new version. Rotating only
    /// then, not when the last block is reserved, lets a single process use every one of a
    /// version's `limit` uses; several replicas may leave the unspent rest of their last blocks.
    async fn reserve(&self, name: &str, v: u32, n: u64, u: &Usage) -> Result<()> {
        let _one = u.refill.lock().await;
        // Another request may have reserved while this one waited.
        if u.try_take(n) {
            return Ok(());
        }
        let usage = self.inner.policy.usage;
        let (limit, block) = (usage.limit(), usage.block());
        let mut granted = 0;
        self.modify_with(
            name,
            |s| {
                granted = 0;
                let latest = s.latest();
                let mut r = s.record.clone();
                let Some(e) = r.versions.iter_mut().find(|e| e.version == v) else {
                    return Err(KeyringError::NotFound);
                };
                let used = e.uses_reserved;
                if used.saturating_add(n) > limit {
                    // At the limit: the latest version rotates now (once; the scheduler also
                    // rotates a latest version found at its limit).
                    return Ok((v == latest).then_some((r, true)));
                }
                // At least `n` (`used + n <= limit`): a batch is encrypted under one version.
                let grant = block.max(n).min(limit - used);
                e.uses_reserved = used + grant;
                granted = grant;
                Ok(Some((r, false)))
            },
            true,
        )
        .await?;
        if granted == 0 {
            tracing::warn!(
                key = name,
                version = v,
                limit,
                "key version reached its usage limit"
            );
            return Err(exhausted(v));
        }
        u.left.fetch_add(granted - n, Ordering::AcqRel);
        Ok(())
    }
}
