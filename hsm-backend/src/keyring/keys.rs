//! Key management: create, describe, list, delete, rotate, configure.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::api::{CreateOptions, KeyConfigUpdate, KeyInfo};
use super::jobs::{self, now};
use super::record::{KeyConfig, Record, VersionEntry};
use super::state::KeyState;
use super::{Keyring, Result, CAS_ATTEMPTS};
use crate::error::KeyringError;
use crate::store::StoreError;
use crate::types::KeyOp;

impl Keyring {
    /// Creates key `name` (version 1) unless it exists; returns its description.
    ///
    /// # Errors
    /// `InvalidRequest` for a bad name, HSM and store errors.
    pub async fn create_key(&self, name: &str, opts: CreateOptions) -> Result<KeyInfo> {
        Self::check_name(name)?;
        match self.load(name, true).await {
            Ok(s) => return Ok(s.info()),
            Err(KeyringError::NotFound) => {}
            Err(e) => return Err(e),
        }
        Ok(self.create_missing(name, opts).await?.info())
    }

    /// Creates key `name`, which a load just found missing: one HSM job (seal) and one store
    /// write; the new state is cached without reading it back. Another writer that created the
    /// key first wins, and its key is loaded.
    pub(super) async fn create_missing(
        &self,
        name: &str,
        opts: CreateOptions,
    ) -> Result<Arc<KeyState>> {
        let ops = opts.allowed_ops.unwrap_or_else(|| KeyOp::ALL.to_vec());
        if ops.is_empty() {
            return Err(KeyringError::InvalidRequest(
                "allowed operations may not be empty".into(),
            ));
        }
        let owned = name.to_owned();
        let config = KeyConfig {
            min_decryption_version: 1,
            min_encryption_version: 0,
            deletion_allowed: opts.deletion_allowed,
            auto_rotate_period_secs: opts.auto_rotate_period_secs,
            allowed_ops: ops.clone(),
            created: now(),
        };
        let record = self
            .inner
            .hsm
            .run(move |ctx| {
                let target = jobs::required_seal_target(ctx)?;
                let raw = jobs::seal_new_l1(ctx, &target, &owned, 1, &ops)?;
                let first = VersionEntry {
                    version: 1,
                    created: now(),
                    blob: B64.encode(raw),
                };
                let mut record = Record::new(&owned, config.clone(), first);
                jobs::mac_record(ctx, &mut record, &target)?;
                Ok(record)
            })
            .await?;
        match self.inner.store.put(name, record.to_bytes()?, 0).await {
            Ok(version) => {
                tracing::info!(key = name, "key created");
                self.written(record, version)
            }
            Err(StoreError::Conflict { .. }) => self.load(name, true).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Describes key `name`.
    ///
    /// # Errors
    /// `NotFound`, store and HSM errors.
    pub async fn key_info(&self, name: &str) -> Result<KeyInfo> {
        Ok(self.load(name, false).await?.info())
    }

    /// Lists key names.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list_keys(&self) -> Result<Vec<String>> {
        let mut names = self.inner.store.list().await?;
        names.retain(|n| !super::governance::is_governance_name(n));
        Ok(names)
    }

    /// Deletes key `name` if its configuration allows it.
    ///
    /// # Errors
    /// `DeletionNotAllowed`, `NotFound`, store errors.
    pub async fn delete_key(&self, name: &str) -> Result<()> {
        let s = self.load(name, true).await?;
        if !s.record.config.deletion_allowed {
            return Err(KeyringError::DeletionNotAllowed);
        }
        self.inner.store.delete(name).await?;
        self.forget(name);
        tracing::info!(key = name, "key deleted");
        Ok(())
    }

    /// Destroys key `name` and every version, whatever its `deletion_allowed`: only a
    /// `key.destroy` ceremony (SO + CO approvals) calls this. Destroying a missing key is not an
    /// error (a resumed ceremony).
    ///
    /// # Errors
    /// Store errors; `InvalidRequest` for a bad name.
    pub async fn destroy_key(&self, name: &str) -> Result<()> {
        Self::check_name(name)?;
        self.inner.store.delete(name).await?;
        self.forget(name);
        tracing::info!(key = name, "key destroyed by ceremony");
        Ok(())
    }

    /// Read-modify-write of a record with check-and-set; `f` returns the new record (unsigned)
    /// and whether to add a version, or `None` for no change. Retries on conflicts.
    async fn modify<F>(&self, name: &str, mut f: F) -> Result<Arc<KeyState>>
    where
        F: FnMut(&KeyState) -> Result<Option<(Record, bool)>>,
    {
        let _guard = self.inner.writes.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let s = self.load(name, true).await?;
            let Some((record, new_version)) = f(&s)? else {
                return Ok(s);
            };
            let ops = record.config.allowed_ops.clone();
            let owned = name.to_owned();
            let next = s.latest() + 1;
            let record = self
                .inner
                .hsm
                .run(move |ctx| {
                    let target = jobs::required_seal_target(ctx)?;
                    let mut r = record.clone();
                    if new_version {
                        let raw = jobs::seal_new_l1(ctx, &target, &owned, next, &ops)?;
                        r.versions.push(VersionEntry {
                            version: next,
                            created: now(),
                            blob: B64.encode(raw),
                        });
                    }
                    // The record MAC follows the seal target (the `next` root during a rotation).
                    jobs::mac_record(ctx, &mut r, &target)?;
                    Ok(r)
                })
                .await?;
            match self
                .inner
                .store
                .put(name, record.to_bytes()?, s.store_version)
                .await
            {
                Ok(version) => return self.written(record, version),
                Err(StoreError::Conflict { .. }) => {
                    tracing::info!(key = name, "check-and-set conflict; retrying");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(KeyringError::Conflict)
    }

    /// Adds a new version to key `name`.
    ///
    /// # Errors
    /// `NotFound`, store and HSM errors.
    pub async fn rotate_key(&self, name: &str) -> Result<KeyInfo> {
        let s = self
            .modify(name, |s| Ok(Some((s.record.clone(), true))))
            .await?;
        tracing::info!(key = name, version = s.latest(), "key rotated");
        Ok(s.info())
    }

    /// Changes key `name`'s configuration.
    ///
    /// # Errors
    /// `InvalidRequest` for values Vault would refuse, `NotFound`, store and HSM errors.
    pub async fn update_key_config(&self, name: &str, upd: KeyConfigUpdate) -> Result<KeyInfo> {
        let s = self
            .modify(name, |s| {
                let mut r = s.record.clone();
                apply_config(&mut r.config, &upd, s.latest())?;
                if r.config == s.record.config {
                    return Ok(None);
                }
                Ok(Some((r, false)))
            })
            .await?;
        Ok(s.info())
    }
}

#[cfg(feature = "test-hooks")]
impl Keyring {
    /// Creates key `name` as rootseal 0.1.0 did (`test-hooks` only): an L1 made with 0.1.0's
    /// template (extractable under any key) sealed under root `root` (a 0.1.0 root, which is
    /// never current), for the tests that migrate such an installation.
    ///
    /// # Errors
    /// HSM and store errors.
    pub async fn testing_create_key_previous_release(
        &self,
        name: &str,
        root: crate::types::RootId,
    ) -> Result<KeyInfo> {
        let owned = name.to_owned();
        let ops = KeyOp::ALL.to_vec();
        let config = KeyConfig {
            min_decryption_version: 1,
            min_encryption_version: 0,
            deletion_allowed: false,
            auto_rotate_period_secs: 0,
            allowed_ops: ops.clone(),
            created: now(),
        };
        let record = self
            .inner
            .hsm
            .run(move |ctx| {
                let template = crate::templates::previous_release::l1_new();
                let raw = jobs::seal_generated_l1(ctx, &root, &owned, 1, &ops, &template)?;
                let first = VersionEntry {
                    version: 1,
                    created: now(),
                    blob: B64.encode(raw),
                };
                let mut record = Record::new(&owned, config.clone(), first);
                jobs::mac_record(ctx, &mut record, &root)?;
                Ok(record)
            })
            .await?;
        let version = self.inner.store.put(name, record.to_bytes()?, 0).await?;
        Ok(self.written(record, version)?.info())
    }

    /// Reads back, as the token reports them, the attributes of the L1 classes this keyring makes
    /// (`test-hooks` only): key `name`'s latest L1 in use, a new L1 and a root self-test key (both
    /// made for the purpose and destroyed).
    ///
    /// # Errors
    /// `NotFound`, HSM errors.
    pub async fn testing_l1_class_attributes(
        &self,
        name: &str,
    ) -> Result<Vec<(&'static str, crate::root::RootAttributes)>> {
        let s = self.load(name, false).await?;
        let blob = s.blob(s.latest())?;
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                use cryptoki::mechanism::Mechanism;
                let in_use = jobs::l1_handle(ctx, &blob)?;
                let mut out = vec![("l1_in_use", crate::root::object_attributes(ctx, in_use)?)];
                for (class, template) in [
                    ("l1_new", crate::templates::l1_new()),
                    ("self_test_key", crate::templates::self_test_key()),
                ] {
                    let h = ctx.generate(&Mechanism::AesKeyGen, &template)?;
                    let a = crate::root::object_attributes(ctx, h);
                    ctx.destroy_transient(h, "attribute read-back");
                    out.push((class, a?));
                }
                Ok(out)
            })
            .await?)
    }
}

/// Applies `upd` to `c` with Vault's validation; `latest` is the key's newest version.
fn apply_config(c: &mut KeyConfig, upd: &KeyConfigUpdate, latest: u32) -> Result<()> {
    if let Some(v) = upd.min_decryption_version {
        if v > latest {
            return Err(KeyringError::InvalidRequest(
                "cannot set min_decryption_version higher than the latest version".into(),
            ));
        }
        c.min_decryption_version = v.max(1);
    }
    if let Some(v) = upd.min_encryption_version {
        if v > latest {
            return Err(KeyringError::InvalidRequest(
                "cannot set min_encryption_version higher than the latest version".into(),
            ));
        }
        c.min_encryption_version = v;
    }
    if c.min_encryption_version != 0 && c.min_encryption_version < c.min_decryption_version {
        return Err(KeyringError::InvalidRequest(
            "min_encryption_version must be 0 or at least min_decryption_version".into(),
        ));
    }
    if let Some(d) = upd.deletion_allowed {
        c.deletion_allowed = d;
    }
    if let Some(p) = upd.auto_rotate_period_secs {
        if p != 0 && p < 3600 {
            return Err(KeyringError::InvalidRequest(
                "auto_rotate_period must be 0 or at least one hour".into(),
            ));
        }
        c.auto_rotate_period_secs = p;
    }
    Ok(())
}
