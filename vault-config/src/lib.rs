//! rootseal's configuration layer.
//!
//! * [`config`]: `rootseal.toml`, parsed once into validated types ([`Config`]); secrets (HSM PIN,
//!   root token, Vault token) come from files or the environment, never from the command line,
//!   and never print.
//! * [`kv`]: [`VaultKvStore`], a [`rootseal_hsm::KekStore`] over Vault/OpenBao KV v2 with
//!   check-and-set, pinned-version reads and background token renewal.
//! * [`render`]: the HCL that points Vault/OpenBao at rootseal (`seal "transit"`, the KMS plugin
//!   stanzas) and a raft server config for tests and demos.
#![forbid(unsafe_code)]

use std::sync::Arc;

use rootseal_hsm::{FileStore, KekStore, RoutedStore};

mod config;
mod kv;
mod lifecycle;
mod render;

// The public interface is:
pub use config::{
    AuditSettings, AuthSettings, Config, ConfigError, GovernanceSettings, HsmSettings,
    ListenerSettings, StorageSettings, TlsFiles, TransitSettings, VaultSettings,
};
pub use kv::{SetupError, VaultKvStore};
pub use lifecycle::LifecycleSettings;
pub use render::{
    render_kms_plugin_stanzas, render_openbao_server_config, render_transit_seal_stanza,
    KMS_PLUGIN_NAME,
};

/// Opens the KEK store `cfg` names: a [`FileStore`], or a [`RoutedStore`] that keeps
/// `local_keys` in a local [`FileStore`] and everything else in a [`VaultKvStore`].
///
/// A Vault that cannot be reached yet is not an error (it may be waiting for rootseal to
/// unseal it); see [`VaultKvStore::connect`]. Must be called inside a Tokio runtime.
///
/// # Errors
/// [`SetupError`] when a directory cannot be created or Vault answers that the KV mount is
/// missing or not version 2.
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn KekStore>, SetupError> {
    match &cfg.storage {
        StorageSettings::File { path } => Ok(Arc::new(FileStore::open(path)?)),
        StorageSettings::Vault(v) => {
            let local: Arc<dyn KekStore> = Arc::new(FileStore::open(&v.local_path)?);
            let shared: Arc<dyn KekStore> = Arc::new(VaultKvStore::connect(v).await?);
            Ok(Arc::new(RoutedStore::new(
                local,
                shared,
                v.local_keys.iter().cloned(),
            )))
        }
    }
}
