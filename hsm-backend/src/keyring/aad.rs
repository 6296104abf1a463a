//! The domains of the additional authenticated data (AAD) of AES-GCM under an L1.
//!
//! One L1 serves transit clients (whose `associated_data` is any bytes they choose) and
//! rootseal's own uses (bulk-seal batch keys). A client must never be able to produce, with a
//! transit encrypt, a ciphertext that rootseal would take for one of its own, nor open one of
//! rootseal's own with a transit decrypt: with the batch-key AAD as `associated_data`, a transit
//! encrypt would forge a wrapped batch key and a transit decrypt would reveal one. Every internal
//! AAD therefore starts with [`RESERVED_PREFIX`], and client AAD starting with it is refused on
//! every face (transit encrypt, decrypt, rewrap; the KMS plugin's `with_aad`).
//!
//! Why a reserved prefix and not a usage byte in front of every AAD: every transit ciphertext
//! issued so far was made with the client's AAD as is, and must keep decrypting (a new release
//! reads everything the previous one wrote); the internal AAD of 0.1.0's batch keys already
//! starts with the prefix, so both old and new internal ciphertexts stay out of clients' reach.

use crate::error::KeyringError;

/// The prefix of every internal AAD; refused in client AAD.
pub(crate) const RESERVED_PREFIX: &[u8] = b"rootseal:";

/// The AAD that binds a bulk-seal batch key to its key name and version (unchanged since 0.1.0).
pub(super) fn batch_key(name: &str, version: u32) -> Vec<u8> {
    let mut a = RESERVED_PREFIX.to_vec();
    a.extend_from_slice(format!("batch-key:v1:{name}:{version}").as_bytes());
    a
}

/// Refuses client AAD in the internal domain.
pub(super) fn check_client(aad: &[u8]) -> Result<(), KeyringError> {
    if aad.starts_with(RESERVED_PREFIX) {
        Err(KeyringError::InvalidRequest(
            "associated_data may not begin with \"rootseal:\" (reserved for rootseal's own use)"
                .into(),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_key_aad_is_0_1_0s_and_in_the_reserved_domain() {
        assert_eq!(batch_key("k", 3), b"rootseal:batch-key:v1:k:3".to_vec());
        assert!(check_client(&batch_key("k", 3)).is_err());
        assert!(check_client(b"rootseal").is_ok());
        assert!(check_client(b"app:rootseal:").is_ok());
        assert!(check_client(b"").is_ok());
    }
}
