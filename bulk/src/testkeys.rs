//! A software double of the keyring's batch-key calls, for unit tests only (every feature also
//! has a test against real SoftHSM2 through the real `Keyring`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use rootseal_hsm::{BatchKey, KeyringError};
use zeroize::Zeroizing;

use crate::source::BatchKeySource;

/// Software "L1" keys by name: version n is `keys[n-1]`.
pub(crate) struct SoftKeys {
    keys: HashMap<String, Vec<[u8; 32]>>,
    pub(crate) calls: AtomicU64,
}

impl SoftKeys {
    pub(crate) fn new(names: &[&str]) -> Self {
        let mut keys = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            keys.insert(
                (*n).to_owned(),
                vec![[i as u8 + 1; 32], [i as u8 + 101; 32]],
            );
        }
        Self {
            keys,
            calls: AtomicU64::new(0),
        }
    }

    fn l1(&self, name: &str, version: u32) -> Result<LessSafeKey, KeyringError> {
        let v = self.keys.get(name).ok_or(KeyringError::NotFound)?;
        let k = v
            .get(
                (version as usize)
                    .checked_sub(1)
                    .ok_or(KeyringError::InvalidCiphertext)?,
            )
            .ok_or(KeyringError::InvalidCiphertext)?;
        Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k).map_err(
            |_| KeyringError::internal("software test key"),
        )?))
    }
}

impl BatchKeySource for SoftKeys {
    async fn new_batch_key(&self, name: &str) -> Result<BatchKey, KeyringError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let version = 2;
        let l1 = self.l1(name, version)?;
        let mut key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(key.as_mut())
            .map_err(|_| KeyringError::internal("software test key"))?;
        let mut iv = [0u8; 12];
        aws_lc_rs::rand::fill(&mut iv).map_err(|_| KeyringError::internal("software test key"))?;
        let mut ct = key.to_vec();
        let tag = l1
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut ct)
            .map_err(|_| KeyringError::internal("software test key"))?;
        let mut wrapped = iv.to_vec();
        wrapped.extend_from_slice(&ct);
        wrapped.extend_from_slice(tag.as_ref());
        Ok(BatchKey {
            version,
            wrapped,
            key,
        })
    }

    async fn open_batch_key(
        &self,
        name: &str,
        version: u32,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, KeyringError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let l1 = self.l1(name, version)?;
        if wrapped.len() != 60 {
            return Err(KeyringError::InvalidCiphertext);
        }
        let (iv, rest) = wrapped.split_at(12);
        let iv: [u8; 12] = iv.try_into().map_err(|_| KeyringError::InvalidCiphertext)?;
        let mut buf = Zeroizing::new(rest.to_vec());
        let pt = l1
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut buf)
            .map_err(|_| KeyringError::InvalidCiphertext)?;
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(pt);
        Ok(key)
    }
}
