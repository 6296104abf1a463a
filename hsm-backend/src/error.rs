//! Errors: [`Error`] for the PKCS#11 layer (keeps the return value and the function), and
//! [`KeyringError`] for the hierarchy, which the faces map to HTTP or gRPC answers.

use cryptoki::error::{Error as CkError, RvError};

use crate::store::StoreError;

/// An error from the HSM layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PKCS#11 call failed; keeps cryptoki's error (return value and function).
    #[error("PKCS#11: {0}")]
    Pkcs11(#[from] CkError),
    /// The module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {source}")]
    Module {
        /// Path of the module.
        module: String,
        /// Why.
        #[source]
        source: CkError,
    },
    /// No token matches the selector.
    #[error("no token with {0} is present")]
    TokenNotFound(String),
    /// The User PIN was refused. rootseal never retries a wrong PIN (no lockout loop).
    #[error("the HSM refused the PIN for token {0}")]
    PinIncorrect(String),
    /// The token's PIN is locked.
    #[error("the User PIN of token {0} is locked")]
    PinLocked(String),
    /// A wrapped blob or a GCM tag failed to verify inside the HSM.
    #[error("integrity check failed in the HSM ({0})")]
    Integrity(&'static str),
    /// The root key (L0) or its MAC key is missing from the token.
    #[error("root key {0} is not on this token")]
    RootMissing(String),
    /// A sealed blob failed to parse or did not match this HSM.
    #[error("sealed blob rejected: {0}")]
    Blob(String),
    /// The HSM worker pool is gone (shutting down).
    #[error("HSM worker pool is shut down")]
    PoolClosed,
    /// The HSM could not be reached after recovery attempts.
    #[error("HSM unavailable: {0}")]
    Unavailable(String),
}

/// What recovery a failed call calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Nothing to recover: the error stands.
    None,
    /// The session is gone or logged out: open a new one (and log in), retry once.
    Session,
    /// The device or the library is gone: re-initialise everything, find the token again.
    Device,
}

impl Error {
    /// The PKCS#11 return value, if this error came from a call.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            Self::Pkcs11(CkError::Pkcs11(rv, _))
            | Self::Module {
                source: CkError::Pkcs11(rv, _),
                ..
            } => Some(*rv),
            _ => None,
        }
    }

    pub(crate) fn recovery(&self) -> Recovery {
        match self.rv() {
            Some(
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid,
            ) => Recovery::Session,
            Some(
                RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized
                | RvError::SlotIdInvalid,
            ) => Recovery::Device,
            _ if matches!(self, Self::TokenNotFound(_) | Self::Unavailable(_)) => Recovery::Device,
            _ => Recovery::None,
        }
    }
}

/// Shorthand for results of the HSM layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the [`crate::Keyring`]: what a face maps to an answer.
///
/// `InvalidCiphertext` and `Integrity` carry no detail on purpose: the detail is logged where the
/// failure happens, and clients get one opaque message. Deliberately exhaustive: every face maps
/// every variant in one `match`, so a new variant is a compile error until it is mapped.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// No such key.
    #[error("encryption key not found")]
    NotFound,
    /// The client sent something unusable (message is safe to show).
    #[error("{0}")]
    InvalidRequest(String),
    /// A ciphertext does not decrypt under this key (tampered, foreign, truncated). Opaque.
    #[error("invalid ciphertext")]
    InvalidCiphertext,
    /// The ciphertext's version is below `min_decryption_version`.
    #[error("ciphertext or signature version is disallowed by policy (too old)")]
    VersionTooOld,
    /// The key's allowed operations do not include this one.
    #[error("operation not allowed on this key: {0}")]
    PolicyDenied(&'static str),
    /// The key may not be deleted (`deletion_allowed` is false).
    #[error("deletion is not allowed for this key")]
    DeletionNotAllowed,
    /// A sealed record failed its integrity or identity checks (tampered, wrong HSM). Opaque.
    #[error("key material failed integrity verification")]
    Integrity,
    /// The record was written by a newer rootseal (unknown format version).
    #[error("stored key record has an unsupported format version {0}")]
    UnsupportedFormat(u16),
    /// The HSM cannot be reached.
    #[error("HSM unavailable")]
    HsmUnavailable,
    /// The key store cannot be reached.
    #[error("key store unavailable")]
    StoreUnavailable,
    /// The key store refused access.
    #[error("key store denied access")]
    StoreDenied,
    /// Concurrent writers kept conflicting.
    #[error("concurrent modification of the key, try again")]
    Conflict,
    /// The root key is not initialised on this token (`rootseal init`).
    #[error("no root key on the HSM token: run `rootseal init`")]
    NoRoot,
    /// Anything else (logged where it happened). Opaque.
    #[error("internal error")]
    Internal,
}

impl From<StoreError> for KeyringError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::Conflict,
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "key store unavailable");
                Self::StoreUnavailable
            }
            StoreError::PermissionDenied(m) => {
                tracing::error!(error = %m, "key store denied access");
                Self::StoreDenied
            }
            StoreError::NotARecord { name, reason } => {
                tracing::error!(key = %name, %reason, "stored entry is not a rootseal record");
                Self::Integrity
            }
            StoreError::InvalidName(n) => Self::InvalidRequest(format!("invalid key name {n:?}")),
            StoreError::Io { path, source } => {
                tracing::error!(path = %path.display(), error = %source, "key store I/O error");
                Self::StoreUnavailable
            }
        }
    }
}

impl From<Error> for KeyringError {
    fn from(e: Error) -> Self {
        match &e {
            Error::Integrity(what) => {
                tracing::warn!(what, "HSM integrity failure");
                Self::Integrity
            }
            Error::Blob(why) => {
                tracing::error!(%why, "sealed blob rejected");
                Self::Integrity
            }
            Error::RootMissing(id) => {
                tracing::error!(root = %id, "root key missing from token");
                Self::Integrity
            }
            _ if e.recovery() == Recovery::Device || matches!(e, Error::PoolClosed) => {
                tracing::error!(error = %e, "HSM unavailable");
                Self::HsmUnavailable
            }
            _ => {
                tracing::error!(error = %e, "HSM operation failed");
                Self::Internal
            }
        }
    }
}
