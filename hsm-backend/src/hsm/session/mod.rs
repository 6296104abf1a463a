//! [`SessionCtx`]: one worker's session and what it caches, with the PKCS#11 operations a job
//! may call. As in rust-cryptoki's `session/`, the type lives here and each function family adds
//! its own `impl` block in its own file: [`random`], [`encryption`], [`signing`],
//! [`key_management`], [`object_management`].

use std::collections::HashMap;
use std::path::Path;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::l1_cache::L1Cache;
use crate::error::{Error, Result};
use crate::metrics::{HsmMetrics, HsmOp};
use crate::types::TokenIdentity;

mod encryption;
mod key_management;
mod object_management;
mod random;
mod signing;

/// What names a cached object handle: a kind (e.g. `"l0"`) and an id.
pub(crate) type ObjectKey = (&'static str, [u8; 16]);

/// A worker's session and what it caches: object handles, unwrapped L1 session objects, random
/// bytes. Lent to one job at a time; never shared between threads.
pub(crate) struct SessionCtx<'a> {
    pub(in crate::hsm) session: &'a Session,
    pub(in crate::hsm) cache: &'a mut SessionCache,
    pub(in crate::hsm) l1: &'a L1Cache,
    pub(in crate::hsm) owner: usize,
    pub(in crate::hsm) generation: u64,
    pub(in crate::hsm) metrics: &'a HsmMetrics,
    /// The module's path (for the calls cryptoki does not wrap, `hsm/raw.rs`).
    pub(in crate::hsm) module: &'a Path,
    /// The token this session is on.
    pub(crate) identity: &'a TokenIdentity,
}

/// What one worker caches for its session; dropped with the session.
#[derive(Default)]
pub(in crate::hsm) struct SessionCache {
    /// Handles of token objects found by id (roots), valid for this session.
    objects: HashMap<ObjectKey, ObjectHandle>,
    /// Random bytes from the HSM RNG, drawn 4 KiB per `C_GenerateRandom`: IVs and small keys.
    rand: Zeroizing<Vec<u8>>,
}

impl SessionCtx<'_> {
    /// Checks that the session answers (`C_GetSessionInfo`).
    pub(crate) fn session_info(&mut self) -> Result<()> {
        self.session.get_session_info()?;
        Ok(())
    }
}

/// Counts the call `op` and maps its error.
fn counted<T>(metrics: &HsmMetrics, op: HsmOp, r: std::result::Result<T, CkError>) -> Result<T> {
    metrics.count(op);
    r.map_err(|e| {
        metrics.error();
        Error::from(e)
    })
}

/// Maps the errors SoftHSM2 and others return for a bad tag or a tampered wrapped key to
/// [`Error::Integrity`].
fn integrity(e: Error, what: &'static str) -> Error {
    match e.rv() {
        Some(
            RvError::GeneralError
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::SignatureInvalid
            | RvError::SignatureLenRange
            | RvError::DataLenRange
            | RvError::UnwrappingKeyHandleInvalid,
        ) => Error::Integrity(what),
        _ => e,
    }
}
