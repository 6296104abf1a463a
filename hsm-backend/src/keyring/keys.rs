//! Key management: create, describe, list, delete, rotate, configure.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::api::{CreateOptions, KeyConfigUpdate, KeyInfo};
use super::jobs;
use super::record::{KeyConfig, Record, VersionEntry};
use super::state::KeyState;
use super::{Keyring, Result, CAS_ATTEMPTS};
use crate::error::KeyringError;
use crate::store::StoreError;
use crate::types::KeyType;

/// Vault's default `key_size` of an `hmac` key, in bytes.
const DEFAULT_HMAC_KEY_SIZE: u32 = 32;
/// Vault's smallest `key_size` of an `hmac` key.
const MIN_HMAC_KEY_SIZE: u32 = 32;
/// Vault's largest `key_size` of an `hmac` key.
const MAX_HMAC_KEY_SIZE: u32 = 512;

/// The record entry of a version just made at `created`, active for `period`.
fn entry(
    version: u32,
    made: jobs::NewVersion,
    created: u64,
    period: crate::lifecycle::Cryptoperiod,
) -> VersionEntry {
    let mut e = VersionEntry::sealed(version, created, made.blob, period);
    if let Some((id, spki)) = made.pair {
        e.object_id = Some(crate::types::RootId(id).to_hex());
        e.public_key = Some(B64.encode(spki));
    }
    e
}

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
        let key_type = opts.key_type;
        let ops = opts.allowed_ops.unwrap_or_else(|| key_type.default_ops());
        if ops.is_empty() {
            return Err(KeyringError::InvalidRequest(
                "allowed operations may not be empty".into(),
            ));
        }
        let key_size = match (key_type, opts.key_size) {
            (KeyType::Hmac, None) => DEFAULT_HMAC_KEY_SIZE,
            (KeyType::Hmac, Some(n)) if (MIN_HMAC_KEY_SIZE..=MAX_HMAC_KEY_SIZE).contains(&n) => n,
            (KeyType::Hmac, Some(_)) => {
                return Err(KeyringError::InvalidRequest(format!(
                    "invalid key_size: must be between {MIN_HMAC_KEY_SIZE} and {MAX_HMAC_KEY_SIZE} bytes"
                )))
            }
            (_, None | Some(0)) => 0,
            (_, Some(_)) => {
                return Err(KeyringError::InvalidRequest(
                    "key_size is only valid for hmac keys".into(),
                ))
            }
        };
        if opts.convergent && !opts.derived {
            return Err(KeyringError::InvalidRequest(
                "convergent encryption requires derivation to be enabled".into(),
            ));
        }
        if opts.derived && !key_type.is_aes() {
            return Err(KeyringError::InvalidRequest(format!(
                "key derivation is supported for aes256-gcm96 and aes128-gcm96 keys, not {key_type}"
            )));
        }
        let owned = name.to_owned();
        let created = self.inner.clock.now();
        let config = KeyConfig {
            min_decryption_version: 1,
            min_encryption_version: 0,
            deletion_allowed: opts.deletion_allowed,
            auto_rotate_period_secs: opts.auto_rotate_period_secs,
            allowed_ops: ops.clone(),
            created,
            key_type,
            key_size,
            derived: opts.derived,
            convergent: opts.convergent,
            min_available_version: 0,
            lifecycle_class: opts.lifecycle_class,
            originator_usage_period_secs: opts.originator_usage_period_secs,
            recipient_usage_period_secs: opts.recipient_usage_period_secs,
        };
        let period = config.period(&self.inner.policy)?;
        let record = self
            .inner
            .hsm
            .run(move |ctx| {
                let target = jobs::required_seal_target(ctx)?;
                let made = jobs::new_version(ctx, &target, &owned, 1, &ops, key_type, key_size)?;
                let first = entry(1, made, created, period);
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
            Err(StoreError::Conflict { .. }) => {
                self.discard_pairs(&record).await;
                self.load(name, true).await
            }
            Err(e) => {
                self.discard_pairs(&record).await;
                Err(e.into())
            }
        }
    }

    /// Destroys the token key pairs of `record`'s versions (a record that was never stored, or
    /// a key being deleted). Failures are logged: an orphan pair is unusable without its record.
    pub(super) async fn discard_pairs(&self, record: &Record) {
        let ids: Vec<[u8; 16]> = record
            .versions
            .iter()
            .filter_map(|v| v.object_id.as_deref().and_then(super::state::parse_id))
            .collect();
        if ids.is_empty() {
            return;
        }
        let r = self
            .inner
            .hsm
            .run(move |ctx| {
                for id in &ids {
                    jobs::destroy_pair(ctx, id)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(key = %record.name, error = %e, "cannot destroy a key's token key pairs");
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
        self.discard_pairs(&s.record).await;
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
    pub(super) async fn modify<F>(&self, name: &str, f: F) -> Result<Arc<KeyState>>
    where
        F: FnMut(&KeyState) -> Result<Option<(Record, bool)>>,
    {
        self.modify_with(name, f, false).await
    }

    /// [`Keyring::modify`]; with `keep_weak_root`, a write that adds no version to a record of a
    /// token without a hardened root (rootseal 0.1.0's root, `WeakRoot`) is MACed under the
    /// record's own root instead of being refused: a usage reservation (`usage.rs`), so that the
    /// keys of such a token keep encrypting until `rootseal root rotate` hardens it. The record's
    /// root is unchanged, so nothing is sealed or MACed under a weaker key than before.
    pub(super) async fn modify_with<F>(
        &self,
        name: &str,
        mut f: F,
        keep_weak_root: bool,
    ) -> Result<Arc<KeyState>>
    where
        F: FnMut(&KeyState) -> Result<Option<(Record, bool)>>,
    {
        let _guard = self.inner.writes.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let s = self.load(name, true).await?;
            let Some((mut record, new_version)) = f(&s)? else {
                return Ok(s);
            };
            // A record of format 1 or 2 is written as format 3: its versions' dates derived as
            // they were read (the cryptoperiod before this change).
            record.upgrade(s.record.config.period(&self.inner.policy)?);
            let period = record.config.period(&self.inner.policy)?;
            let created = self.inner.clock.now();
            let ops = record.config.allowed_ops.clone();
            let (key_type, key_size) = (record.config.key_type, record.config.key_size);
            let owned = name.to_owned();
            let next = s.latest() + 1;
            let record = self
                .inner
                .hsm
                .run(move |ctx| {
                    let target = match jobs::required_seal_target(ctx) {
                        Err(crate::error::Error::NoCurrentRoot)
                            if keep_weak_root && !new_version =>
                        {
                            crate::types::RootId::from_hex(&record.root_id)
                                .ok_or(crate::error::Error::NoCurrentRoot)?
                        }
                        r => r?,
                    };
                    let mut r = record.clone();
                    if new_version {
                        let made = jobs::new_version(
                            ctx, &target, &owned, next, &ops, key_type, key_size,
                        )?;
                        r.versions.push(entry(next, made, created, period));
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
                    if new_version {
                        self.discard_new_pair(&record).await;
                    }
                    continue;
                }
                Err(e) => {
                    if new_version {
                        self.discard_new_pair(&record).await;
                    }
                    return Err(e.into());
                }
            }
        }
        Err(KeyringError::Conflict)
    }

    /// Destroys the key pair of the newest version of `record` (a rotation that was not stored).
    async fn discard_new_pair(&self, record: &Record) {
        let mut last = record.clone();
        last.versions = record.versions.last().cloned().into_iter().collect();
        self.discard_pairs(&last).await;
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
                r.config.period(&self.inner.policy)?;
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
        let ops = crate::types::KeyOp::ALL.to_vec();
        let config = KeyConfig {
            min_decryption_version: 1,
            min_encryption_version: 0,
            deletion_allowed: false,
            auto_rotate_period_secs: 0,
            allowed_ops: ops.clone(),
            created: jobs::now(),
            key_type: KeyType::Aes256Gcm96,
            key_size: 0,
            derived: false,
            convergent: false,
            min_available_version: 0,
            lifecycle_class: None,
            originator_usage_period_secs: 0,
            recipient_usage_period_secs: 0,
        };
        let record = self
            .inner
            .hsm
            .run(move |ctx| {
                use cryptoki::mechanism::Mechanism;
                let template = crate::templates::previous_release::l1_new();
                let raw = jobs::seal_generated_l1(
                    ctx,
                    &root,
                    &owned,
                    1,
                    &ops,
                    &Mechanism::AesKeyGen,
                    &template,
                    "aes-256-gcm",
                )?;
                let mut first =
                    VersionEntry::sealed(1, jobs::now(), B64.encode(raw), Default::default());
                // 0.1.0 wrote record format 1: no lifecycle.
                first.lifecycle = None;
                let mut record = Record::new(&owned, config.clone(), first);
                record.format_version = 1;
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

#[cfg(feature = "test-hooks")]
impl Keyring {
    /// Rewrites key `name`'s record as the release before lifecycle encoded it (`test-hooks`
    /// only): no lifecycle fields, format 1 for an `aes256-gcm96` key and 2 otherwise, MACed
    /// again in the HSM; for the tests of the upgrade to format 3.
    ///
    /// # Errors
    /// `NotFound`, `InvalidRequest` (a key with lifecycle settings of its own), HSM and store
    /// errors.
    pub async fn testing_store_previous_format(&self, name: &str) -> Result<()> {
        let s = self.load(name, true).await?;
        let mut r = s.record.clone();
        if r.config.lifecycle_class.is_some()
            || r.config.originator_usage_period_secs != 0
            || r.config.recipient_usage_period_secs != 0
        {
            return Err(KeyringError::InvalidRequest(
                "the previous format has no lifecycle settings".into(),
            ));
        }
        for v in &mut r.versions {
            v.lifecycle = None;
            v.uses_reserved = 0;
        }
        r.format_version = if r.config.key_type == KeyType::Aes256Gcm96 {
            1
        } else {
            2
        };
        let root = crate::types::RootId::from_hex(&r.root_id)
            .ok_or_else(|| KeyringError::internal("record root id"))?;
        let r = self
            .inner
            .hsm
            .run(move |ctx| {
                let mut r = r.clone();
                jobs::mac_record(ctx, &mut r, &root)?;
                Ok(r)
            })
            .await?;
        self.inner
            .store
            .put(name, r.to_bytes()?, s.store_version)
            .await?;
        self.forget(name);
        Ok(())
    }

    /// Reads back, as the token reports them, the attributes of the latest version of key `name`
    /// (`test-hooks` only): its L1 in use (symmetric types), or its private and public token
    /// objects (signing types).
    ///
    /// # Errors
    /// `NotFound`, HSM errors.
    pub async fn testing_key_attributes(
        &self,
        name: &str,
    ) -> Result<Vec<(&'static str, crate::root::RootAttributes)>> {
        let s = self.load(name, false).await?;
        let v = s.latest();
        if s.key_type().is_asymmetric() {
            let pair = s.pair(v)?;
            return Ok(self
                .inner
                .hsm
                .run(move |ctx| {
                    let (private, public) = jobs::pair_handles(ctx, &pair.id)?;
                    Ok(vec![
                        ("private", crate::root::object_attributes(ctx, private)?),
                        ("public", crate::root::object_attributes(ctx, public)?),
                    ])
                })
                .await?);
        }
        let blob = s.blob(v)?;
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let h = jobs::l1_handle(ctx, &blob)?;
                Ok(vec![("l1_in_use", crate::root::object_attributes(ctx, h)?)])
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
    if let Some(class) = upd.lifecycle_class {
        c.lifecycle_class = Some(class);
    }
    if let Some(p) = upd.originator_usage_period_secs {
        c.originator_usage_period_secs = p;
    }
    if let Some(p) = upd.recipient_usage_period_secs {
        c.recipient_usage_period_secs = p;
    }
    Ok(())
}
