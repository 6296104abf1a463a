//! The bulk engine's errors: [`BulkError`] for what is wrong with the input (safe to show to a
//! client), [`RequestError`] for why a whole request failed.

use rootseal_hsm::KeyringError;

use crate::MAX_ITEMS_PER_BATCH;

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

/// Why a whole request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A malformed request (message safe to show).
    #[error(transparent)]
    Bulk(#[from] BulkError),
    /// The keyring refused (unknown key, policy, HSM down...).
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}
