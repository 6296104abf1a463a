//! Errors: [`Error`] for the PKCS#11 layer (keeps the return value and the function), and
//! [`KeyringError`] for the hierarchy, which the faces map to HTTP or gRPC answers.

use std::fmt;
use std::sync::Arc;

use cryptoki::error::{Error as CkError, RvError};

use crate::blob::BlobError;
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
    /// The Security Officer PIN was refused (never retried).
    #[error("the HSM refused the Security Officer PIN for token {0}")]
    SoPinIncorrect(String),
    /// The token's PIN is locked.
    #[error("the User PIN of token {0} is locked")]
    PinLocked(String),
    /// A wrapped blob or a GCM tag failed to verify inside the HSM.
    #[error("integrity check failed in the HSM ({0})")]
    Integrity(&'static str),
    /// The token holds no hardened root to seal under (only roots made by rootseal 0.1.0, or
    /// roots that fail their self-test).
    #[error("the token holds no hardened root to seal under")]
    NoCurrentRoot,
    /// The root key (L0) or its MAC key is missing from the token.
    #[error("root key {0} is not on this token")]
    RootMissing(String),
    /// A sealed blob failed to parse.
    #[error("sealed blob rejected: {0}")]
    Blob(#[from] BlobError),
    /// A sealed blob or record does not belong here: another token, another level, another key.
    #[error("sealed key rejected: {0}")]
    Foreign(String),
    /// The token's objects are not in a state rootseal can use (for example two active roots).
    #[error("token state: {0}")]
    TokenState(String),
    /// Something that cannot happen did (a serialisation of our own types failed).
    #[error("internal: {0}")]
    Internal(String),
    /// The HSM worker pool is gone (shutting down).
    #[error("HSM worker pool is shut down")]
    PoolClosed,
    /// The HSM could not be reached after recovery attempts.
    #[error("HSM unavailable: {0}")]
    Unavailable(String),
    /// The job queue is full: refused at once, never queued.
    #[error("HSM job queue full ({0} jobs waiting)")]
    Busy(usize),
    /// The job did not finish within the job timeout (a hung or overloaded HSM).
    #[error("HSM job did not finish within {0:?}")]
    Deadline(std::time::Duration),
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

/// Why an opaque [`KeyringError`] happened: for the one log line at the edge that answers the
/// caller, never for the caller. Carries internal detail (a PKCS#11 return value, a path, which
/// check failed), never a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Cause(Arc<str>);

impl Cause {
    /// A cause described by `detail`.
    pub fn new(detail: impl fmt::Display) -> Self {
        Self(Arc::from(detail.to_string()))
    }

    /// The detail text.
    pub fn detail(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// An error from the [`crate::Keyring`]: what a face maps to an answer.
///
/// `InvalidCiphertext` and the variants carrying a [`Cause`] show the client no detail on purpose:
/// their `Display` is one fixed message, and the cause is logged once, by the face that answers
/// (HTTP, gRPC, CLI). Nothing in this crate logs an error it returns. Deliberately exhaustive:
/// every face maps every variant in one `match`, so a new variant is a compile error until it is
/// mapped.
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
    /// The key version's lifecycle refuses the operation now (NIST SP 800-57 states and dates:
    /// "key version 3 is deactivated"). A client error: HTTP 400.
    #[error("{0}")]
    Lifecycle(crate::lifecycle::LifecycleRefusal),
    /// The key may not be deleted (`deletion_allowed` is false).
    #[error("deletion is not allowed for this key")]
    DeletionNotAllowed,
    /// A sealed record failed its integrity or identity checks (tampered, wrong HSM). Opaque.
    #[error("key material failed integrity verification")]
    Integrity(Cause),
    /// The record was written by a newer rootseal (unknown format version).
    #[error("stored key record has an unsupported format version {0}")]
    UnsupportedFormat(u16),
    /// The HSM cannot be reached.
    #[error("HSM unavailable")]
    HsmUnavailable(Cause),
    /// The key store cannot be reached.
    #[error("key store unavailable")]
    StoreUnavailable(Cause),
    /// The key store refused access.
    #[error("key store denied access")]
    StoreDenied(Cause),
    /// Concurrent writers kept conflicting.
    #[error("concurrent modification of the key, try again")]
    Conflict,
    /// The token's root is not hardened (made by rootseal 0.1.0): keys can be read but not created
    /// or rotated until `rootseal root rotate` moves them to a hardened root.
    #[error("the HSM root is not hardened: run `rootseal root rotate` (Security Officer) before creating or rotating keys")]
    WeakRoot,
    /// The root key is not initialised on this token (`rootseal init`).
    #[error("no root key on the HSM token: run `rootseal init`")]
    NoRoot,
    /// Anything else. Opaque.
    #[error("internal error")]
    Internal(Cause),

    /// The HSM has more work queued than it may hold: retry shortly (HTTP 503, `Retry-After`).
    #[error("HSM busy, try again")]
    Overloaded,
}

impl KeyringError {
    /// An integrity failure with its cause.
    pub fn integrity(detail: impl fmt::Display) -> Self {
        Self::Integrity(Cause::new(detail))
    }

    /// An internal failure with its cause.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::Internal(Cause::new(detail))
    }

    /// The internal cause behind an opaque error, for the log line of the face that answers.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            Self::Integrity(c)
            | Self::HsmUnavailable(c)
            | Self::StoreUnavailable(c)
            | Self::StoreDenied(c)
            | Self::Internal(c) => Some(c),
            _ => None,
        }
    }
}

impl From<StoreError> for KeyringError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::Conflict,
            StoreError::Unavailable(_) | StoreError::Io { .. } => {
                Self::StoreUnavailable(Cause::new(&e))
            }
            StoreError::PermissionDenied(_) => Self::StoreDenied(Cause::new(&e)),
            StoreError::NotARecord { .. } => Self::Integrity(Cause::new(&e)),
            StoreError::InvalidName(n) => Self::InvalidRequest(format!("invalid key name {n:?}")),
        }
    }
}

impl From<Error> for KeyringError {
    fn from(e: Error) -> Self {
        match &e {
            Error::Integrity(_) | Error::Blob(_) | Error::Foreign(_) | Error::RootMissing(_) => {
                Self::Integrity(Cause::new(&e))
            }
            Error::NoCurrentRoot => Self::WeakRoot,
            Error::Busy(_) => Self::Overloaded,
            Error::Deadline(_) => Self::HsmUnavailable(Cause::new(&e)),
            Error::TokenState(_) => Self::Integrity(Cause::new(&e)),
            _ if e.recovery() == Recovery::Device || matches!(e, Error::PoolClosed) => {
                Self::HsmUnavailable(Cause::new(&e))
            }
            _ => Self::Internal(Cause::new(&e)),
        }
    }
}
