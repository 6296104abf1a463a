//! Where batch keys come from: [`BatchKeySource`], implemented by the [`rootseal_hsm::Keyring`].

use std::future::Future;

use rootseal_hsm::{BatchKey, KeyringError};
use zeroize::Zeroizing;

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
