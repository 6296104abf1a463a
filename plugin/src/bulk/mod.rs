//! Bulk seal (issue 5): many items, or one large object, sealed with one HSM call per batch.
//!
//! The design and its reasoning are in `docs/bulk-seal.md`. In short: the keyring mints a fresh
//! 256-bit batch key inside the HSM and wraps it under the key's latest L1 version (one HSM job);
//! items are sealed in software with aws-lc-rs AES-256-GCM, nonce = item index, and an AAD that
//! binds key name, L1 version, batch id, item index and the caller's associated data.
//!
//! * [`format`]: the sealed-item format, AADs, the per-batch [`format::BatchCipher`].
//! * [`frame`]: the length-prefixed binary framing (`application/octet-stream`).
//! * [`stream`]: chunked AEAD for one large object.
//! * [`cache`]: the bounded, zeroizing cache of unwrapped batch keys.
//! * [`engine`]: HTTP-free batch sealing and unsealing, parallel over cores.
//! * [`http`]: the axum handlers.
//! * [`client`]: the client side used by `rootseal bulk seal` / `rootseal bulk unseal`.

use std::future::Future;

use rootseal_hsm::keyring::BatchKey;
use rootseal_hsm::KeyringError;
use zeroize::Zeroizing;

pub mod cache;
pub mod engine;
pub mod format;
pub mod frame;
pub mod http;
pub mod pool;
pub mod stream;

/// Items sealed under one batch key at most; a larger binary request starts a new batch.
pub const MAX_ITEMS_PER_BATCH: u32 = 1 << 24;

/// Errors of the bulk engine. Messages are safe to show to a client: crypto failures are the
/// single opaque [`BulkError::InvalidCiphertext`] (details go to the log where they happen).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// A sealed item, frame or stream did not verify (tampered, foreign, wrong AAD). Opaque.
    #[error("invalid ciphertext")]
    InvalidCiphertext,
    /// A sealed item, frame or stream has a format version this rootseal does not know.
    #[error("unsupported bulk format version {0}")]
    UnsupportedVersion(u8),
    /// The input is structurally malformed (message says what; it never contains key material).
    #[error("{0}")]
    Malformed(String),
    /// The input ended before it was complete.
    #[error("{0} truncated")]
    Truncated(&'static str),
    /// A length field exceeds its limit (checked before any allocation).
    #[error("{what} length {len} exceeds the limit of {max}")]
    TooLong {
        /// Which length.
        what: &'static str,
        /// The claimed length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The request carries no items.
    #[error("empty batch: no items given")]
    EmptyBatch,
    /// Too many items for one batch key.
    #[error("too many items in one batch (limit {MAX_ITEMS_PER_BATCH})")]
    TooManyItems,
    /// Unexpected internal failure (logged). Opaque.
    #[error("internal error")]
    Internal,
}

impl BulkError {
    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        Self::Malformed(msg.into())
    }
}

/// Where batch keys come from: the [`rootseal_hsm::Keyring`] in production; a software double
/// in unit tests. Both calls are one HSM job each.
pub trait BatchKeySource: Send + Sync {
    /// A fresh batch key wrapped under the latest L1 version of `name`.
    fn new_batch_key(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<BatchKey, KeyringError>> + Send;

    /// Unwraps a batch key sealed under L1 `version` of `name`; `InvalidCiphertext` when it
    /// does not verify.
    fn open_batch_key(
        &self,
        name: &str,
        version: u32,
        wrapped: &[u8],
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, KeyringError>> + Send;
}

impl BatchKeySource for rootseal_hsm::Keyring {
    fn new_batch_key(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<BatchKey, KeyringError>> + Send {
        rootseal_hsm::Keyring::new_batch_key(self, name)
    }

    fn open_batch_key(
        &self,
        name: &str,
        version: u32,
        wrapped: &[u8],
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, KeyringError>> + Send {
        rootseal_hsm::Keyring::open_batch_key(self, name, version, wrapped)
    }
}

impl<T: BatchKeySource> BatchKeySource for std::sync::Arc<T> {
    fn new_batch_key(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<BatchKey, KeyringError>> + Send {
        (**self).new_batch_key(name)
    }

    fn open_batch_key(
        &self,
        name: &str,
        version: u32,
        wrapped: &[u8],
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, KeyringError>> + Send {
        (**self).open_batch_key(name, version, wrapped)
    }
}

#[cfg(test)]
mod bench;
#[cfg(test)]
mod hsm_tests;
#[cfg(test)]
pub(crate) mod testkeys;
