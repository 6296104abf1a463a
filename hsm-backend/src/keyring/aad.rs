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

/// The AAD of an item under a derived key (`derived=true`, Vault's `context`): the context and
/// the client's AAD, length-prefixed, in the internal domain, so that a ciphertext made with one
/// context opens with no other (and with no plain transit call, whose AAD may not start with the
/// prefix). Checks the client AAD first.
pub(super) fn derived(context: &[u8], client: &[u8]) -> Result<Vec<u8>, KeyringError> {
    check_client(client)?;
    let mut a = RESERVED_PREFIX.to_vec();
    a.extend_from_slice(b"derived:v1:");
    a.extend_from_slice(
        &u32::try_from(context.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    a.extend_from_slice(context);
    a.extend_from_slice(client);
    Ok(a)
}

/// The AAD an item is sealed with: [`derived`] for a derived key (a context is required), the
/// client's own otherwise (a context is refused, as it would be silently meaningless).
pub(super) fn for_item(
    is_derived: bool,
    context: Option<&[u8]>,
    client: &[u8],
) -> Result<Vec<u8>, KeyringError> {
    match (is_derived, context) {
        (true, Some(c)) if !c.is_empty() => derived(c, client),
        (true, _) => Err(KeyringError::InvalidRequest(
            "missing 'context' for key derivation; the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key".into(),
        )),
        (false, Some(c)) if !c.is_empty() => Err(KeyringError::InvalidRequest(
            "key was not created as a derived key: 'context' is not allowed".into(),
        )),
        (false, _) => {
            check_client(client)?;
            Ok(client.to_vec())
        }
    }
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
