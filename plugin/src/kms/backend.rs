//! What the `Wrapper` service needs from the key hierarchy ([`SealKeys`]), and its production
//! implementation on [`rootseal_hsm::Keyring`] ([`KeyringOpener`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rootseal_hsm::{Cause, Custody, HsmConfig, Keyring, KeyringError};
use rootseal_hsm::{CreateOptions, DecryptItem, EncryptItem, KeyOp, LifecycleClass, Sealed};
use rootseal_hsm::{FileStore, KekStore};
use zeroize::Zeroizing;

use super::config::{resolve_pin, SealSettings, Source};

/// A boxed future (keeps the traits object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The unseal KEK of one seal instance: one L1 key, AES-256-GCM inside the HSM.
pub trait SealKeys: Send + Sync + 'static {
    /// The key's name.
    fn name(&self) -> &str;
    /// The newest version (what `Encrypt` uses).
    fn latest_version(&self) -> BoxFuture<'_, Result<u32, KeyringError>>;
    /// Encrypt under `version` (default latest).
    fn encrypt(
        &self,
        version: Option<u32>,
        plaintext: Zeroizing<Vec<u8>>,
        aad: Vec<u8>,
    ) -> BoxFuture<'_, Result<Sealed, KeyringError>>;
    /// Decrypt `iv ‖ ct ‖ tag` under `sealed.version`.
    fn decrypt(
        &self,
        sealed: Sealed,
        aad: Vec<u8>,
    ) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, KeyringError>>;
    /// Non-secret facts for `SetConfig`'s metadata (token, store).
    fn describe(&self) -> Vec<(String, String)>;
    /// Records `event` in the instance's audit log and waits until it is durable (block mode).
    /// Instances without a log (tests' soft keys) record nothing.
    ///
    /// # Errors
    /// The record could not be written: the call must not be answered.
    fn record(
        &self,
        event: rootseal_audit::Event,
    ) -> BoxFuture<'_, Result<(), rootseal_audit::AuditError>> {
        let _ = event;
        Box::pin(async { Ok(()) })
    }
}

/// Why a seal instance could not be opened. Messages are for OpenBao's log: no secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The settings cannot work (PIN missing, config file unreadable, …).
    #[error("{0}")]
    Config(String),
    /// The HSM could not be opened (module, PIN, …): a fault that retrying does not mend.
    #[error("cannot open the HSM: {0}")]
    Hsm(String),
    /// The HSM token is not there (yet): absent, or the device does not answer. Worth retrying.
    #[error("the HSM token is not available: {0}")]
    HsmAbsent(String),
    /// The keyring refused (no root, wrong HSM, store trouble).
    #[error("rootseal keyring: {0}")]
    Keyring(#[from] KeyringError),
    /// The audit log cannot be opened (unwritable, damaged, or in use by another process).
    #[error("audit log: {0}")]
    Audit(String),
    /// The token's root fails the custody check and the stanza does not allow that.
    #[error(
        "the HSM root is weak ({0}): run `rootseal root rotate` as the Security Officer to move \
         to a hardened root, or set allow_weak_root = \"true\" in the seal stanza to serve anyway"
    )]
    WeakRoot(String),
}

impl OpenError {
    /// Whether trying again later can succeed: the token absent, or the keyring's HSM or store
    /// unavailable, busy or in a concurrent write. Such a fault never disables the seal; a wrong
    /// PIN, a bad config or a weak root does (until OpenBao restarts the plugin).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            OpenError::HsmAbsent(_)
                // Another plugin process (OpenBao restarting it) may still hold the log.
                | OpenError::Audit(_)
                | OpenError::Keyring(
                    KeyringError::HsmUnavailable(_)
                        | KeyringError::StoreUnavailable(_)
                        | KeyringError::Conflict
                        | KeyringError::Overloaded
                )
        )
    }
}

/// Opens the [`SealKeys`] a stanza describes.
pub trait Opener: Send + Sync + 'static {
    /// Open (HSM login, store, create the KEK if missing).
    fn open(&self, settings: SealSettings) -> BoxFuture<'_, Result<Arc<dyn SealKeys>, OpenError>>;
}

/// The production [`Opener`]: real HSM, local [`FileStore`], [`Keyring`].
#[derive(Debug, Default)]
pub struct KeyringOpener;

impl Opener for KeyringOpener {
    fn open(&self, settings: SealSettings) -> BoxFuture<'_, Result<Arc<dyn SealKeys>, OpenError>> {
        Box::pin(async move {
            let (hsm_cfg, key_dir) = match &settings.source {
                Source::Inline {
                    module,
                    token,
                    key_dir,
                    pin_file,
                } => {
                    let pin = resolve_pin(settings.allow_env, pin_file.as_deref())
                        .map_err(OpenError::Config)?;
                    (
                        HsmConfig {
                            pool_size: settings.pool_size,
                            ..HsmConfig::new(module.clone(), token.into(), pin)
                        },
                        key_dir.clone(),
                    )
                }
                Source::ConfigFile(path) => from_config_file(path, &settings)?,
            };
            let hsm = tokio::task::spawn_blocking(move || rootseal_hsm::Hsm::open(hsm_cfg))
                .await
                .map_err(|e| OpenError::Hsm(format!("HSM open task failed: {e}")))?
                .map_err(|e| match e {
                    rootseal_hsm::Error::TokenNotFound(_) | rootseal_hsm::Error::Unavailable(_) => {
                        OpenError::HsmAbsent(e.to_string())
                    }
                    other => OpenError::Hsm(other.to_string()),
                })?;
            let token = hsm.identity().to_string();
            let store = FileStore::open(&key_dir)
                .map_err(|e| OpenError::Config(format!("local key store: {e}")))?;
            let store_desc = store.describe();
            // The audit log (block mode): every seal call, and every write of the unseal KEK's
            // record, is on it before it is answered; a rolled-back record is refused.
            let audit_cfg = rootseal_audit::AuditConfig::new(
                settings
                    .audit_log
                    .clone()
                    .unwrap_or_else(|| key_dir.join(KMS_AUDIT_LOG)),
                rootseal_audit::Mode::Block,
            );
            let (log, seen) = open_audit(&audit_cfg, &hsm).await?;
            let store: Arc<dyn KekStore> = Arc::new(crate::audit::store::AuditedStore::new(
                Arc::new(store),
                log.clone(),
                seen,
            ));
            let keyring = Keyring::open(hsm, store).await?;
            crate::audit::record_custody(&log, &keyring).await;
            crate::audit::audit_compromised_uses(&log, &keyring);
            let custody = keyring.custody();
            if custody.verdict() == Custody::Weak {
                let failures = custody.failures().join("; ");
                if !settings.allow_weak_root {
                    return Err(OpenError::WeakRoot(failures));
                }
                tracing::warn!(%failures, "serving from a weak root (allow_weak_root = \"true\")");
            }
            // The auto-unseal key is lifecycle class `seal-kek` (`[lifecycle.seal-kek]`): past
            // its protect-stop it refuses Encrypt while Decrypt (unseal) keeps working.
            let opts = CreateOptions {
                allowed_ops: Some(vec![KeyOp::Encrypt, KeyOp::Decrypt]),
                lifecycle_class: Some(LifecycleClass::SealKek),
                ..CreateOptions::default()
            };
            let info = keyring.create_key(&settings.key_name, opts).await?;
            if info.lifecycle_class != LifecycleClass::SealKek {
                // Made before the class existed: its versions keep their dates, new ones get
                // the class's.
                let upd = rootseal_hsm::KeyConfigUpdate {
                    lifecycle_class: Some(LifecycleClass::SealKek),
                    ..Default::default()
                };
                keyring.update_key_config(&settings.key_name, upd).await?;
            }
            for w in keyring.seal_key_warnings() {
                tracing::warn!(warning = %w, "unseal key lifecycle");
            }
            tracing::info!(key = %settings.key_name, %token, store = %store_desc, "unseal key ready");
            Ok(Arc::new(KeyringKeys {
                keyring,
                name: settings.key_name.clone(),
                token,
                store: store_desc,
                audit: log,
            }) as Arc<dyn SealKeys>)
        })
    }
}

/// The plugin's audit log in the local key store directory, unless the stanza names one.
pub const KMS_AUDIT_LOG: &str = "kms-audit.log";

/// Opens the plugin's audit log (`kms.start` record, start checkpoint). A log still held by
/// another plugin process (OpenBao replacing one) is waited for a few seconds, then reported as
/// [`OpenError::Audit`] (transient: the seal opens it on use).
async fn open_audit(
    cfg: &rootseal_audit::AuditConfig,
    hsm: &rootseal_hsm::Hsm,
) -> Result<
    (
        rootseal_audit::AuditLog,
        std::collections::HashMap<String, crate::audit::store::Seen>,
    ),
    OpenError,
> {
    let mut tries = 0;
    loop {
        match crate::audit::open(cfg, hsm, "kms").await {
            Ok((log, _, seen)) => return Ok((log, seen)),
            Err(e) if e.contains("in use by another") && tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(OpenError::Audit(e)),
        }
    }
}

/// HSM settings and the local store directory from a `rootseal.toml`. The unseal KEK always
/// lives in a local file store: `[storage] path` (file backend) or `local_path` (vault backend).
fn from_config_file(
    path: &std::path::Path,
    settings: &SealSettings,
) -> Result<(HsmConfig, std::path::PathBuf), OpenError> {
    let allow_env = settings.allow_env;
    let env = move |name: &str| {
        if allow_env {
            std::env::var(name).ok()
        } else {
            None
        }
    };
    let cfg = rootseal_vault_config::Config::load_with_env(path, &env)
        .map_err(|e| OpenError::Config(format!("config_file {}: {e}", path.display())))?;
    let key_dir = match &cfg.storage {
        rootseal_vault_config::StorageSettings::File { path } => path.clone(),
        rootseal_vault_config::StorageSettings::Vault(v) => v.local_path.clone(),
        #[allow(unreachable_patterns)]
        _ => {
            return Err(OpenError::Config(
                "config_file: unsupported [storage] backend for the unseal key".into(),
            ))
        }
    };
    Ok((cfg.hsm_config(), key_dir))
}

struct KeyringKeys {
    keyring: Keyring,
    name: String,
    token: String,
    store: String,
    audit: rootseal_audit::AuditLog,
}

fn one<T>(v: Vec<Result<T, KeyringError>>) -> Result<T, KeyringError> {
    v.into_iter()
        .next()
        .unwrap_or_else(|| Err(KeyringError::internal("the keyring answered no item")))
}

impl SealKeys for KeyringKeys {
    fn name(&self) -> &str {
        &self.name
    }

    fn latest_version(&self) -> BoxFuture<'_, Result<u32, KeyringError>> {
        Box::pin(async move { Ok(self.keyring.key_info(&self.name).await?.latest_version) })
    }

    fn encrypt(
        &self,
        version: Option<u32>,
        plaintext: Zeroizing<Vec<u8>>,
        aad: Vec<u8>,
    ) -> BoxFuture<'_, Result<Sealed, KeyringError>> {
        Box::pin(async move {
            one(self
                .keyring
                .encrypt(
                    &self.name,
                    version,
                    vec![EncryptItem { plaintext, aad }],
                    false,
                )
                .await?)
        })
    }

    fn decrypt(
        &self,
        sealed: Sealed,
        aad: Vec<u8>,
    ) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, KeyringError>> {
        Box::pin(async move {
            let out = one(self
                .keyring
                .decrypt(&self.name, vec![DecryptItem { sealed, aad }])
                .await?);
            // Unsealing with a version past its protect-stop works; say that it will not last.
            for w in self.keyring.seal_key_warnings() {
                tracing::warn!(warning = %w, "unseal key lifecycle");
            }
            out
        })
    }

    fn describe(&self) -> Vec<(String, String)> {
        vec![
            ("token".to_owned(), self.token.clone()),
            ("key_store".to_owned(), self.store.clone()),
        ]
    }

    fn record(
        &self,
        event: rootseal_audit::Event,
    ) -> BoxFuture<'_, Result<(), rootseal_audit::AuditError>> {
        Box::pin(async move { self.audit.record(event).await.map(|_| ()) })
    }
}

/// A seal instance whose HSM token was not there when OpenBao configured the seal: every call
/// tries to open it again, so OpenBao (which retries unsealing every few seconds) unseals as soon
/// as the token is back, without a restart. Until then every call is `HsmUnavailable`. A fault
/// that retrying does not mend (a wrong PIN above all: no lockout loop) stops the retries.
pub struct PendingKeys {
    opener: Arc<dyn Opener>,
    settings: SealSettings,
    state: tokio::sync::Mutex<Pending>,
}

enum Pending {
    Waiting,
    Open(Arc<dyn SealKeys>),
    Failed,
}

impl PendingKeys {
    /// An instance that opens `settings` with `opener` on first use.
    pub fn new(opener: Arc<dyn Opener>, settings: SealSettings) -> Self {
        Self {
            opener,
            settings,
            state: tokio::sync::Mutex::new(Pending::Waiting),
        }
    }

    async fn keys(&self) -> Result<Arc<dyn SealKeys>, KeyringError> {
        let mut st = self.state.lock().await;
        match &*st {
            Pending::Open(k) => return Ok(k.clone()),
            Pending::Failed => {
                return Err(KeyringError::HsmUnavailable(Cause::new(
                    "the HSM could not be opened",
                )))
            }
            Pending::Waiting => {}
        }
        match self.opener.open(self.settings.clone()).await {
            Ok(k) => {
                tracing::info!(key = %self.settings.key_name, "HSM token available: seal ready");
                *st = Pending::Open(k.clone());
                Ok(k)
            }
            Err(e) if e.is_transient() => Err(KeyringError::HsmUnavailable(Cause::new(format!(
                "HSM token or key store still not available: {e}"
            )))),
            Err(e) => {
                tracing::error!(error = %e, "seal cannot open its HSM; not retrying (restart once fixed)");
                *st = Pending::Failed;
                Err(KeyringError::HsmUnavailable(Cause::new(e)))
            }
        }
    }
}

impl SealKeys for PendingKeys {
    fn name(&self) -> &str {
        &self.settings.key_name
    }

    fn latest_version(&self) -> BoxFuture<'_, Result<u32, KeyringError>> {
        Box::pin(async move { self.keys().await?.latest_version().await })
    }

    fn encrypt(
        &self,
        version: Option<u32>,
        plaintext: Zeroizing<Vec<u8>>,
        aad: Vec<u8>,
    ) -> BoxFuture<'_, Result<Sealed, KeyringError>> {
        Box::pin(async move { self.keys().await?.encrypt(version, plaintext, aad).await })
    }

    fn decrypt(
        &self,
        sealed: Sealed,
        aad: Vec<u8>,
    ) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, KeyringError>> {
        Box::pin(async move { self.keys().await?.decrypt(sealed, aad).await })
    }

    fn record(
        &self,
        event: rootseal_audit::Event,
    ) -> BoxFuture<'_, Result<(), rootseal_audit::AuditError>> {
        Box::pin(async move {
            let open = match &*self.state.lock().await {
                Pending::Open(k) => Some(k.clone()),
                _ => None,
            };
            match open {
                Some(k) => k.record(event).await,
                // Not open: the call it would record failed without touching a key, and
                // there is no log yet to write to.
                None => Ok(()),
            }
        })
    }

    fn describe(&self) -> Vec<(String, String)> {
        match self.state.try_lock().as_deref() {
            Ok(Pending::Open(k)) => k.describe(),
            _ => vec![("state".to_owned(), "waiting for the HSM token".to_owned())],
        }
    }
}
