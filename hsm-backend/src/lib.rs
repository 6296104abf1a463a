//! rootseal's hardware layer: the only crate that speaks PKCS#11.
//!
//! * [`Hsm`]: one PKCS#11 module, one token (found by label or serial, never by slot id), one
//!   User login, a pool of worker threads that each own one session, recovery from lost sessions
//!   and lost devices. Every PKCS#11 call runs on those workers, never on the async runtime.
//! * [`root`]: the Level 0 root of trust (an AES-256 wrap-only token key) and its companion
//!   HMAC key that binds metadata to sealed blobs.
//! * [`blob`]: the versioned sealed-blob format for Level 1 keys.
//! * [`store`]: where sealed records live ([`store::KekStore`]): a local file store here, Vault
//!   KV in the `rootseal-vault-config` crate.
//! * [`keyring`]: the hierarchy's one API ([`Keyring`]) that every face of rootseal calls.
#![forbid(unsafe_code)]

pub mod blob;
pub mod config;
pub mod error;
pub mod hsm;
pub mod keyring;
pub mod metrics;
pub mod root;
pub mod softhsm;
pub mod store;

pub use config::{HsmConfig, TokenSelector};
pub use error::{Error, KeyringError};
pub use hsm::Hsm;
pub use keyring::Keyring;
// Used by rootseal-bulk and the bulk tests, by crate-root path.
pub use keyring::{BatchKey, CreateOptions, KeyOp};
pub use metrics::HsmMetrics;
