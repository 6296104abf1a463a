//! Root rotation: every sealed record moves to a new root, then the old root is destroyed.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::state::BlobRef;
use super::{jobs, Keyring, Result, CAS_ATTEMPTS};
use crate::error::{Error as HsmError, KeyringError};
use crate::root::{self, RootRole};
use crate::store::StoreError;
use crate::templates;
use crate::types::RootId;

/// What a root rotation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootRotationReport {
    /// The root that was replaced (none when resuming after it was already destroyed).
    pub old_root: Option<String>,
    /// The new active root.
    pub new_root: String,
    /// Records re-sealed by this run.
    pub resealed: usize,
    /// Records found already under the new root (moved by an earlier, interrupted run).
    pub already_done: usize,
}

impl Keyring {
    /// Moves every sealed record to a new root: generates a new L0 (and MAC key) labelled `next`,
    /// unwraps each L1 inside the HSM and re-seals it under the new root, writes each record back
    /// with check-and-set, then destroys the old root and promotes the new one. Interrupted at any
    /// point, running it again finishes the job; every record stays readable throughout, because
    /// the old root is destroyed only after a full pass found nothing left under it.
    ///
    /// # Errors
    /// `NoRoot`, HSM and store errors (the run can be repeated).
    pub async fn rotate_root(&self, grace: Duration) -> Result<RootRotationReport> {
        let hsm = &self.inner.hsm;
        let roots = hsm.run(root::list).await?;
        let old = roots
            .iter()
            .find(|r| r.role == RootRole::Active)
            .map(|r| r.id);
        // A `next` root that is incomplete or fails its self-test was cut short while being
        // created: nothing was sealed under it (sealing needs both keys to work), so replace it.
        let mut roots = roots;
        for r in roots.clone().iter().filter(|r| r.role == RootRole::Next) {
            let id = r.id;
            let works = r.complete && hsm.run(move |ctx| Ok(root::self_test(ctx, &id))).await?;
            if !works {
                tracing::warn!(root = %id, "root rotation: replacing a half-created next root");
                hsm.run(move |ctx| root::destroy(ctx, &id)).await?;
                roots.retain(|x| x.id != id);
            }
        }
        let next = match roots
            .iter()
            .find(|r| r.role == RootRole::Next && r.complete)
        {
            Some(n) => n.id,
            None => {
                if old.is_none() {
                    return Err(KeyringError::NoRoot);
                }
                let id = hsm.run(|ctx| root::create(ctx, RootRole::Next)).await?;
                tracing::info!(root = %id, "root rotation: new root created");
                id
            }
        };
        let mut report = RootRotationReport {
            old_root: old.map(|o| o.to_hex()),
            new_root: next.to_hex(),
            ..Default::default()
        };
        let mut grace_done = false;
        loop {
            let mut moved = 0;
            let names = self.inner.store.list().await?;
            for name in &names {
                moved += self.reseal_record(name, next, &mut report).await?;
            }
            report.already_done = names.len().saturating_sub(report.resealed);
            if moved == 0 {
                if grace_done || old.is_none() {
                    break;
                }
                // A writer that sealed under the old root just before `next` appeared has had
                // time to store its record by now; look once more.
                tokio::time::sleep(grace).await;
                grace_done = true;
            }
        }
        if let Some(old) = old {
            hsm.run(move |ctx| root::destroy(ctx, &old)).await?;
            tracing::info!(root = %old, "root rotation: old root destroyed");
        }
        hsm.run(move |ctx| root::relabel(ctx, &next, RootRole::Active))
            .await?;
        self.forget_all();
        tracing::info!(root = %next, "root rotation: new root active");
        Ok(report)
    }

    /// Re-seals one record under `next` unless already there. Returns 1 when it wrote.
    async fn reseal_record(
        &self,
        name: &str,
        next: RootId,
        report: &mut RootRotationReport,
    ) -> Result<usize> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(stored) = self.inner.store.get(name).await? else {
                return Ok(0);
            };
            let state = self.verify(name, &stored.data, stored.version).await?;
            let nh = next.to_hex();
            if state.record.root_id == nh
                && state.blobs.values().all(|b| b.parsed.header.root_id == nh)
            {
                return Ok(0);
            }
            let record = state.record.clone();
            let blobs: Vec<(u32, Arc<BlobRef>)> =
                state.blobs.iter().map(|(v, b)| (*v, b.clone())).collect();
            let record = self
                .inner
                .hsm
                .run(move |ctx| {
                    let mut r = record.clone();
                    let new_root = root::handles(ctx, &next)?;
                    for (entry, (v, b)) in r.versions.iter_mut().zip(blobs.iter()) {
                        if entry.version != *v {
                            return Err(HsmError::Foreign("record versions out of order".into()));
                        }
                        if b.parsed.root_id == next {
                            continue;
                        }
                        jobs::check_blob_identity(ctx, &b.parsed)?;
                        let old = root::handles(ctx, &b.parsed.root_id)?;
                        ctx.hmac_verify(old.mac, &b.parsed.signed, &b.parsed.mac)?;
                        // Extractable only inside the HSM, only to be wrapped under the new L0,
                        // destroyed right after.
                        let k = ctx.unwrap_kwp(
                            old.wrap,
                            &b.parsed.wrapped,
                            &templates::l1_in_use(true),
                        )?;
                        let wrapped = ctx.wrap_kwp(new_root.wrap, k);
                        ctx.destroy_transient(k, "L1 re-wrapped by root rotation");
                        let mut header = b.parsed.header.clone();
                        header.root_id = next.to_hex();
                        let raw = jobs::seal_blob(ctx, new_root.mac, &header, &wrapped?)?;
                        entry.blob = B64.encode(raw);
                    }
                    jobs::mac_record(ctx, &mut r, &next)?;
                    Ok(r)
                })
                .await?;
            match self
                .inner
                .store
                .put(name, record.to_bytes()?, stored.version)
                .await
            {
                Ok(_) => {
                    tracing::info!(key = name, "root rotation: record re-sealed");
                    report.resealed += 1;
                    return Ok(1);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KeyringError::Conflict)
    }
}
