//! What the `Wrapper` service needs from the key hierarchy ([`SealKeys`]), and its production
//! implementation on [`rootseal_hsm::Keyring`] ([`KeyringOpener`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rootseal_hsm::{Cause, Clock, Custody, HsmConfig, Keyring, KeyringError};
use rootseal_hsm::{CreateOptions, DecryptItem, EncryptItem, KeyOp, LifecycleClass, Sealed};
use rootseal_hsm::{FileStore, KekStore};
use rootseal_hsm::{KeyringOptions, LifecyclePolicy};
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
            // Inline stanza: the SP 800-57 defaults; `config_file`: that file's `[lifecycle]`
            // (and `[lifecycle.seal-kek]`), read and bounded as `rootseal serve` reads them.
            let (hsm_cfg, key_dir, lifecycle) = match &settings.source {
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
                        LifecyclePolicy::default(),
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
            let options = KeyringOptions {
                clock: seal_clock()?,
                lifecycle,
            };
            let keyring = Keyring::open_with(hsm, store, options).await?;
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

/// The clock the unseal key's lifecycle decisions read: the system clock.
#[cfg(not(feature = "test-hooks"))]
fn seal_clock() -> Result<Clock, OpenError> {
    Ok(Clock::system())
}

/// Environment variable of the test-only clock offset ([`seal_clock`], `test-hooks` builds only).
#[cfg(feature = "test-hooks")]
pub const TEST_CLOCK_OFFSET_ENV: &str = "ROOTSEAL_TEST_CLOCK_OFFSET_SECS";

/// The clock the unseal key's lifecycle decisions read.
///
/// **Test hook, compiled only with the `test-hooks` cargo feature** (a default or release build
/// has none of this and always reads the system clock): when the plugin process's environment
/// holds `ROOTSEAL_TEST_CLOCK_OFFSET_SECS=N` (whole seconds), the keyring reads a clock that
/// stands still at the system time of the open plus `N`, so an end-to-end test moves the seal
/// key past its protect-stop or deactivation by restarting OpenBao with another `N`
/// (`tests/tests/kms_lifecycle.rs`), never by sleeping. It is read whatever
/// `with_disallow_env_vars` says, and logged at `warn`. Only the keyring's lifecycle clock
/// moves: audit records keep the system time.
///
/// # Errors
/// [`OpenError::Config`] when the variable is set but is not a whole number of seconds.
#[cfg(feature = "test-hooks")]
fn seal_clock() -> Result<Clock, OpenError> {
    let Ok(raw) = std::env::var(TEST_CLOCK_OFFSET_ENV) else {
        return Ok(Clock::system());
    };
    let offset: u64 = raw.trim().parse().map_err(|_| {
        OpenError::Config(format!(
            "{TEST_CLOCK_OFFSET_ENV} must be a whole number of seconds"
        ))
    })?;
    let now = Clock::system().now().saturating_add(offset);
    tracing::warn!(
        offset_secs = offset,
        now,
        "test-hooks build: the unseal key's lifecycle clock is moved forward ({TEST_CLOCK_OFFSET_ENV})"
    );
    Ok(Clock::testing_manual(now))
}

/// HSM settings, the local store directory and the `[lifecycle]` policy from a `rootseal.toml`.
/// The unseal KEK always lives in a local file store: `[storage] path` (file backend) or
/// `local_path` (vault backend).
fn from_config_file(
    path: &std::path::Path,
    settings: &SealSettings,
) -> Result<(HsmConfig, std::path::PathBuf, LifecyclePolicy), OpenError> {
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
    Ok((cfg.hsm_config(), key_dir, cfg.lifecycle.policy))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(path: &std::path::Path) -> SealSettings {
        let map = [("config_file".to_owned(), path.display().to_string())].into();
        SealSettings::parse(&map, true).unwrap()
    }

    fn config_file(dir: &std::path::Path, lifecycle: &str) -> std::path::PathBuf {
        let pin = dir.join("pin");
        std::fs::write(&pin, "1234").unwrap();
        let tok = dir.join("root-token");
        std::fs::write(&tok, "unused").unwrap();
        let path = dir.join("rootseal.toml");
        std::fs::write(
            &path,
            format!(
                "governance = \"off\"\n[listener]\naddress = \"127.0.0.1:0\"\n\
                 [hsm]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"t\"\n\
                 pin_file = \"{pin}\"\n[auth]\nroot_token_file = \"{tok}\"\n\
                 [storage]\nbackend = \"file\"\npath = \"{keys}\"\n{lifecycle}",
                pin = pin.display(),
                tok = tok.display(),
                keys = dir.join("keys").display(),
            ),
        )
        .unwrap();
        path
    }

    #[test]
    fn the_config_file_lifecycle_reaches_the_seal_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_file(
            dir.path(),
            "[lifecycle.seal-kek]\noriginator_usage_period = \"90d\"\n\
             recipient_usage_period = \"180d\"\n",
        );
        let (_, key_dir, policy) = from_config_file(&path, &settings(&path)).unwrap();
        assert_eq!(key_dir, dir.path().join("keys"));
        assert_eq!(policy.seal_kek.oup_secs(), 90 * 86_400);
        assert_eq!(policy.seal_kek.rup_secs(), 180 * 86_400);
        // Without the table: the SP 800-57 defaults, as an inline stanza gets them.
        let path = config_file(dir.path(), "");
        let (_, _, policy) = from_config_file(&path, &settings(&path)).unwrap();
        assert_eq!(policy, LifecyclePolicy::default());
    }

    #[test]
    fn an_oup_above_the_standard_in_the_config_file_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_file(
            dir.path(),
            "[lifecycle.seal-kek]\noriginator_usage_period = \"3y\"\n",
        );
        let e = from_config_file(&path, &settings(&path)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, OpenError::Config(_)), "{msg}");
        assert!(
            msg.contains("lifecycle.seal-kek.originator_usage_period") && msg.contains("800-57"),
            "{msg}"
        );
    }
}
