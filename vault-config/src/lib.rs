//! rootseal's configuration layer.
//!
//! * [`config`]: `rootseal.toml`, parsed once into validated types ([`Config`]); secrets (HSM PIN,
//!   root token, Vault token) come from files or the environment, never from the command line,
//!   and never print.
//! * [`kv`]: [`VaultKvStore`], a [`rootseal_hsm::store::KekStore`] over Vault/OpenBao KV v2 with
//!   check-and-set, pinned-version reads and background token renewal.
//! * [`render`]: the HCL that points Vault/OpenBao at rootseal (`seal "transit"`, the KMS plugin
//!   stanzas) and a raft server config for tests and demos.
#![forbid(unsafe_code)]

pub mod config;
pub mod kv;
pub mod render;

pub use config::{
    AuthSettings, Config, ConfigError, HsmSettings, ListenerSettings, StorageSettings, TlsFiles,
    TransitSettings, VaultSettings,
};
pub use kv::{SetupError, VaultKvStore};
