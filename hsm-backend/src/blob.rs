//! The sealed-blob format (version 1) for Level 1 keys.
//!
//! ```text
//! "RSBL" | format u16 BE (=1) | header_len u32 BE | header (JSON) | wrapped_len u32 BE | wrapped | mac (32)
//! ```
//! * `header`: [`BlobHeader`] as JSON (key name, version, level, root id, token identity,
//!   creation time, allowed operations, policy digest, algorithms).
//! * `wrapped`: the L1 wrapped under the L0 named by `root_id` with `CKM_AES_KEY_WRAP_PAD`.
//! * `mac`: HMAC-SHA256 over every preceding byte, computed and verified inside the HSM with the
//!   root's MAC key. Changing any byte makes the unseal fail.
//!
//! An unknown format version is refused with [`BlobError::UnsupportedVersion`], never guessed at.

use serde::{Deserialize, Serialize};

use crate::types::{KeyOp, RootId, TokenIdentity};

/// The magic bytes of a sealed blob.
pub const MAGIC: &[u8; 4] = b"RSBL";
/// The format version this code writes.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the HMAC-SHA256 trailer.
pub const MAC_LEN: usize = 32;
/// Upper bound of a header, far above any real one; longer is rejected before allocating.
const MAX_HEADER: usize = 64 * 1024;
/// Upper bound of a wrapped key.
const MAX_WRAPPED: usize = 4 * 1024;

/// The metadata bound to a wrapped key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobHeader {
    /// Hierarchy level of the wrapped key (1 for KEKs).
    pub level: u8,
    /// Key name.
    pub key_name: String,
    /// Key version.
    pub key_version: u32,
    /// Hex id of the L0 root that wraps it (and whose MAC key signs the blob).
    pub root_id: String,
    /// The token that sealed it.
    pub hsm: TokenIdentity,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Operations the key may do.
    pub allowed_ops: Vec<KeyOp>,
    /// SHA-256 digest (hex) of the policy bound to the key; empty until the policy engine lands.
    pub policy_digest: String,
    /// The key's algorithm: `aes-256-gcm`.
    pub algorithm: String,
    /// The wrap mechanism: `CKM_AES_KEY_WRAP_PAD`.
    pub wrap_mechanism: String,
}

/// Errors decoding a blob (before any HSM check).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobError {
    /// Not a sealed blob.
    #[error("not a rootseal sealed blob (bad magic)")]
    BadMagic,
    /// Written by a newer rootseal.
    #[error("sealed blob format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u16),
    /// Cut short or with lengths that do not add up.
    #[error("sealed blob is truncated or malformed")]
    Malformed,
    /// The header is not valid JSON of the expected shape.
    #[error("sealed blob header is invalid: {0}")]
    Header(String),
}

/// A parsed blob. `signed` is the byte range the MAC covers.
#[derive(Clone, Debug)]
pub struct SealedBlob {
    /// The parsed header.
    pub header: BlobHeader,
    /// The root id from the header.
    pub root_id: RootId,
    /// The KWP-wrapped key.
    pub wrapped: Vec<u8>,
    /// The MAC trailer.
    pub mac: [u8; MAC_LEN],
    /// Everything the MAC covers.
    pub signed: Vec<u8>,
}

/// Serialises everything but the MAC: the caller computes the MAC over it in the HSM and appends
/// it with [`append_mac`].
pub fn encode_unsigned(header: &BlobHeader, wrapped: &[u8]) -> Result<Vec<u8>, BlobError> {
    let h = serde_json::to_vec(header).map_err(|e| BlobError::Header(e.to_string()))?;
    let hl = u32::try_from(h.len()).map_err(|_| BlobError::Malformed)?;
    let wl = u32::try_from(wrapped.len()).map_err(|_| BlobError::Malformed)?;
    let mut out = Vec::with_capacity(4 + 2 + 4 + h.len() + 4 + wrapped.len() + MAC_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&hl.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&wl.to_be_bytes());
    out.extend_from_slice(wrapped);
    Ok(out)
}

/// Appends the MAC to an unsigned blob.
pub fn append_mac(mut unsigned: Vec<u8>, mac: &[u8]) -> Vec<u8> {
    unsigned.extend_from_slice(mac);
    unsigned
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], BlobError> {
    if buf.len() < n {
        return Err(BlobError::Malformed);
    }
    let (a, b) = buf.split_at(n);
    *buf = b;
    Ok(a)
}

fn take_u32(buf: &mut &[u8]) -> Result<usize, BlobError> {
    let b = take(buf, 4)?;
    let arr = <[u8; 4]>::try_from(b).map_err(|_| BlobError::Malformed)?;
    usize::try_from(u32::from_be_bytes(arr)).map_err(|_| BlobError::Malformed)
}

/// Parses a blob. Checks structure and version only; the caller verifies the MAC in the HSM and
/// compares the header with what it expects.
///
/// # Errors
/// [`BlobError`] on any malformation; never panics.
pub fn decode(raw: &[u8]) -> Result<SealedBlob, BlobError> {
    let mut buf = raw;
    if take(&mut buf, 4)? != MAGIC {
        return Err(BlobError::BadMagic);
    }
    let v = take(&mut buf, 2)?;
    let v = u16::from_be_bytes(<[u8; 2]>::try_from(v).map_err(|_| BlobError::Malformed)?);
    if v != FORMAT_VERSION {
        return Err(BlobError::UnsupportedVersion(v));
    }
    let hl = take_u32(&mut buf)?;
    if hl > MAX_HEADER {
        return Err(BlobError::Malformed);
    }
    let h = take(&mut buf, hl)?;
    let wl = take_u32(&mut buf)?;
    if wl > MAX_WRAPPED {
        return Err(BlobError::Malformed);
    }
    let wrapped = take(&mut buf, wl)?.to_vec();
    let mac = take(&mut buf, MAC_LEN)?;
    if !buf.is_empty() {
        return Err(BlobError::Malformed);
    }
    let header: BlobHeader =
        serde_json::from_slice(h).map_err(|e| BlobError::Header(e.to_string()))?;
    let root_id = RootId::from_hex(&header.root_id)
        .ok_or_else(|| BlobError::Header("root_id is not 32 hex digits".into()))?;
    let signed_len = raw.len() - MAC_LEN;
    Ok(SealedBlob {
        header,
        root_id,
        wrapped,
        mac: <[u8; MAC_LEN]>::try_from(mac).map_err(|_| BlobError::Malformed)?,
        signed: raw.get(..signed_len).ok_or(BlobError::Malformed)?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BlobHeader {
        BlobHeader {
            level: 1,
            key_name: "k".into(),
            key_version: 3,
            root_id: RootId([7; 16]).to_hex(),
            hsm: TokenIdentity {
                manufacturer: "m".into(),
                model: "x".into(),
                serial: "s".into(),
                label: "l".into(),
            },
            created: 5,
            allowed_ops: vec![KeyOp::Encrypt],
            policy_digest: String::new(),
            algorithm: "aes-256-gcm".into(),
            wrap_mechanism: "CKM_AES_KEY_WRAP_PAD".into(),
        }
    }

    #[test]
    fn round_trip() {
        let u = encode_unsigned(&header(), &[1; 40]).unwrap();
        let raw = append_mac(u.clone(), &[9; 32]);
        let b = decode(&raw).unwrap();
        assert_eq!(b.header, header());
        assert_eq!(b.wrapped, vec![1; 40]);
        assert_eq!(b.mac, [9; 32]);
        assert_eq!(b.signed, u);
    }

    #[test]
    fn rejects_every_truncation_and_bad_versions() {
        let raw = append_mac(encode_unsigned(&header(), &[1; 40]).unwrap(), &[9; 32]);
        for n in 0..raw.len() {
            assert!(decode(&raw[..n]).is_err(), "prefix {n} accepted");
        }
        let mut v2 = raw.clone();
        v2[5] = 2;
        assert_eq!(decode(&v2).unwrap_err(), BlobError::UnsupportedVersion(2));
        let mut bad = raw.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad).unwrap_err(), BlobError::BadMagic);
        let mut long = raw.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        // A lying header length never allocates or panics.
        let mut lie = raw;
        lie[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&lie).unwrap_err(), BlobError::Malformed);
    }
}
