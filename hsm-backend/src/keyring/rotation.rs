//! Root rotation: every sealed record, in every store that holds one, moves to a new root; then
//! the old roots are destroyed.
//!
//! Three steps, each resumable after `kill -9`:
//! 1. **SO:** the Security Officer makes the new L0 (skipped when an earlier run made it);
//! 2. **User:** the new root's MAC key (skipped when present); from then on it is the current root
//!    and every new blob is sealed under it;
//! 3. **User:** each record of each store is re-sealed inside the HSM (each L1 unwrapped under its
//!    old L0 through the L0's unwrap template, wrapped under the new trusted L0) and written back
//!    with check-and-set; the old roots are destroyed only after a full pass over every
//!    registered store (see `registry.rs`) found nothing left to move. A registered store this run
//!    cannot reach keeps the old roots alive, and the run says which.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use secrecy::SecretString;

use super::admin::{complete_root, new_l0, open_user};
use super::state::BlobRef;
use super::{jobs, Keyring, Result, CAS_ATTEMPTS};
use crate::config::HsmConfig;
use crate::error::{Error as HsmError, KeyringError};
use crate::registry;
use crate::root::{self, RootRole};
use crate::store::{leaf_stores, open_by_locator, KekStore, StoreError};
use crate::types::RootId;

/// What a root rotation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootRotationReport {
    /// The roots that were replaced (destroyed when `destroyed` is true).
    pub old_roots: Vec<String>,
    /// The new current root.
    pub new_root: String,
    /// Records re-sealed by this run.
    pub resealed: usize,
    /// Records found already under the new root (moved by an earlier, interrupted run).
    pub already_done: usize,
    /// The stores visited (their locators or descriptions).
    pub stores: Vec<String>,
    /// Registered stores this run could not reach: while any is left, the old roots stay.
    pub unreachable: Vec<String>,
    /// Whether the old roots were destroyed.
    pub destroyed: bool,
}

/// Rotates the root of `cfg`'s token: the Security Officer (`so_pin`) makes a new L0, then every
/// record in `store` and in every other registered store is re-sealed under it, then the old roots
/// are destroyed. Interrupted at any point, running it again finishes the job; every record stays
/// readable throughout. Moves an installation made by rootseal 0.1.0 (a weak root) to a hardened
/// root. Call it while no [`crate::Hsm`] of this token is open in the process.
///
/// # Errors
/// `NoRoot`, HSM and store errors (the run can be repeated).
pub async fn rotate_root(
    cfg: &HsmConfig,
    so_pin: &SecretString,
    store: Arc<dyn KekStore>,
    grace: Duration,
) -> Result<RootRotationReport> {
    // Which root to move to: a newer trusted root an earlier run made, the current one when an
    // earlier run got as far as destroying some old roots, or a new one.
    let roots = {
        let hsm = open_user(cfg).await?;
        hsm.run(root::list).await?
    };
    if !roots.iter().any(|r| r.complete) {
        return Err(KeyringError::NoRoot);
    }
    // An installation made before the audit log gets its audit key while the SO PIN is here.
    super::admin::ensure_audit_key(cfg, so_pin).await?;
    let next = roots
        .iter()
        .rev()
        .find(|r| r.role == RootRole::Next && r.trusted)
        .map(|r| r.id);
    let current = roots
        .iter()
        .find(|r| r.role == RootRole::Current)
        .map(|r| r.id);
    let retiring = roots.iter().any(|r| r.role == RootRole::Retiring);
    let target = match (next, current) {
        (Some(n), _) => n,
        (None, Some(c)) if retiring => c,
        _ => new_l0(cfg, so_pin).await?,
    };
    let hsm = open_user(cfg).await?;
    complete_root(&hsm, target).await?;
    let keyring = Keyring::open(hsm, store).await?;
    keyring.move_to_root(target, grace).await
}

impl Keyring {
    /// Step 3 of [`rotate_root`]: re-seals every record of every registered store under `target`
    /// (the current root), then destroys every other root if none was left behind.
    async fn move_to_root(&self, target: RootId, grace: Duration) -> Result<RootRotationReport> {
        let hsm = &self.inner.hsm;
        let roots = hsm.run(root::list).await?;
        if roots.iter().find(|r| r.id == target).map(|r| r.role) != Some(RootRole::Current) {
            return Err(KeyringError::internal(format!(
                "root rotation: the new root {target} is not the current root"
            )));
        }
        let old: Vec<RootId> = roots
            .iter()
            .filter(|r| r.id != target)
            .map(|r| r.id)
            .collect();
        let (stores, by_owner, unreachable) = self.rotation_stores(target).await?;
        let mut report = RootRotationReport {
            old_roots: old.iter().map(RootId::to_hex).collect(),
            new_root: target.to_hex(),
            stores: stores
                .iter()
                .map(|s| s.locator().unwrap_or_else(|| s.describe()))
                .chain(
                    by_owner
                        .iter()
                        .map(|l| format!("{l} (re-sealed by its own writer)")),
                )
                .collect(),
            unreachable,
            ..Default::default()
        };
        let mut grace_done = false;
        loop {
            let mut moved = 0;
            let mut seen = 0;
            for store in &stores {
                let names = store.list().await?;
                seen += names.len();
                for name in &names {
                    moved += self
                        .reseal_record(store.as_ref(), name, target, &mut report)
                        .await?;
                }
            }
            report.already_done = seen.saturating_sub(report.resealed);
            if moved == 0 {
                if grace_done || old.is_empty() {
                    break;
                }
                // A writer that sealed under an old root just before the new one became current
                // has had time to store its record by now; look once more.
                tokio::time::sleep(grace).await;
                grace_done = true;
            }
        }
        if report.unreachable.is_empty() {
            for id in &old {
                let id = *id;
                hsm.run(move |ctx| root::destroy(ctx, &id)).await?;
                tracing::info!(root = %id, "root rotation: old root destroyed");
            }
            report.destroyed = true;
        } else {
            tracing::warn!(stores = ?report.unreachable, "root rotation: registered stores not reached; the old roots stay");
        }
        self.forget_all();
        tracing::info!(root = %target, "root rotation: new root current");
        Ok(report)
    }

    /// The leaf stores to re-seal: this keyring's, then every other registered store this process
    /// can open; the locators of those it cannot open but whose own writer marked them as moved
    /// to `target` (see `registry.rs`); and the locators of the rest.
    async fn rotation_stores(
        &self,
        target: RootId,
    ) -> Result<(Vec<Arc<dyn KekStore>>, Vec<String>, Vec<String>)> {
        let mut stores = leaf_stores(&self.inner.store);
        let mut known: Vec<String> = stores.iter().filter_map(|s| s.locator()).collect();
        let registered = self.inner.hsm.run(registry::list).await?;
        let mut unreachable = Vec::new();
        let mut by_owner = Vec::new();
        for l in registered {
            if known.contains(&l) {
                continue;
            }
            match open_by_locator(&l) {
                Some(s) => {
                    known.push(l);
                    stores.push(s);
                }
                None => {
                    let loc = l.clone();
                    let moved = self
                        .inner
                        .hsm
                        .run(move |ctx| registry::is_moved(ctx, &loc, &target))
                        .await?;
                    if moved {
                        by_owner.push(l);
                    } else {
                        unreachable.push(l);
                    }
                }
            }
        }
        Ok((stores, by_owner, unreachable))
    }

    /// Re-seals every record of this keyring's own stores under the current root, when the token
    /// holds a retiring root (a root rotation ran), then marks those stores on the token as moved
    /// to the current root (`registry.rs`), so that [`rotate_root`], run where these stores
    /// cannot be reached, counts them as done and may destroy the old roots. For a store only
    /// its own process can reach: an OpenBao plugin mount's storage. Destroys nothing. Returns
    /// `None` when there was nothing to do (no retiring root, or already marked).
    ///
    /// # Errors
    /// `NoRoot`, HSM and store errors, `Integrity` for a record that fails its check (nothing is
    /// marked then, and the old roots stay).
    pub async fn reseal_own_stores(&self) -> Result<Option<RootRotationReport>> {
        let hsm = &self.inner.hsm;
        let roots = hsm.run(root::list).await?;
        let Some(current) = roots
            .iter()
            .find(|r| r.role == RootRole::Current)
            .map(|r| r.id)
        else {
            return Err(KeyringError::NoRoot);
        };
        if !roots.iter().any(|r| r.role == RootRole::Retiring) {
            return Ok(None);
        }
        let stores = leaf_stores(&self.inner.store);
        let locators: Vec<String> = stores.iter().filter_map(|s| s.locator()).collect();
        let check = locators.clone();
        let done = hsm
            .run(move |ctx| {
                for l in &check {
                    if !registry::is_moved(ctx, l, &current)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
            .await?;
        if done {
            return Ok(None);
        }
        let mut report = RootRotationReport {
            old_roots: roots
                .iter()
                .filter(|r| r.id != current)
                .map(|r| r.id.to_hex())
                .collect(),
            new_root: current.to_hex(),
            stores: stores
                .iter()
                .map(|s| s.locator().unwrap_or_else(|| s.describe()))
                .collect(),
            ..Default::default()
        };
        let mut seen = 0;
        for store in &stores {
            let names = store.list().await?;
            seen += names.len();
            for name in &names {
                self.reseal_record(store.as_ref(), name, current, &mut report)
                    .await?;
            }
        }
        report.already_done = seen.saturating_sub(report.resealed);
        self.forget_all();
        hsm.run(move |ctx| registry::mark_moved(ctx, &locators, &current))
            .await?;
        Ok(Some(report))
    }

    /// Re-seals record `name` of `store` under `next` unless already there. Returns 1 when it
    /// wrote.
    async fn reseal_record(
        &self,
        store: &dyn KekStore,
        name: &str,
        next: RootId,
        report: &mut RootRotationReport,
    ) -> Result<usize> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(stored) = store.get(name).await? else {
                return Ok(0);
            };
            if super::governance::is_governance_name(name) {
                let Some(bytes) = self.remac_governance(name, &stored.data, next).await? else {
                    return Ok(0);
                };
                match store.put(name, bytes, stored.version).await {
                    Ok(_) => {
                        tracing::info!(record = name, store = %store.describe(), "root rotation: governance record re-MACed");
                        report.resealed += 1;
                        return Ok(1);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
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
                    // Signing key versions have no blob (their key pairs stay on the token): only
                    // the record MAC moves to the new root.
                    let sealed = r.versions.iter_mut().filter(|e| !e.blob.is_empty());
                    for (entry, (v, b)) in sealed.zip(blobs.iter()) {
                        if entry.version != *v {
                            return Err(HsmError::Foreign("record versions out of order".into()));
                        }
                        if b.parsed.root_id == next {
                            continue;
                        }
                        jobs::check_blob_identity(ctx, &b.parsed)?;
                        let old = root::handles(ctx, &b.parsed.root_id)?;
                        ctx.hmac_verify(old.mac, &b.parsed.signed, &b.parsed.mac)?;
                        // The same template as every use: sensitive, wrappable only under a trusted
                        // key, so only the new L0 can wrap it; destroyed right after.
                        let template = jobs::in_use_template(&b.parsed)?;
                        let k = ctx.unwrap_kwp(old.wrap, &b.parsed.wrapped, &template)?;
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
            match store.put(name, record.to_bytes()?, stored.version).await {
                Ok(_) => {
                    tracing::info!(key = name, store = %store.describe(), "root rotation: record re-sealed");
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
