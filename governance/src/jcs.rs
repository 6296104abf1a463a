//! RFC 8785 (JSON Canonicalization Scheme) bytes and SHA-256 digests of them.

use serde::Serialize;

use crate::GovError;

/// The RFC 8785 canonical JSON of `v`.
///
/// # Errors
/// [`GovError`] when `v` cannot be serialised (a number JSON cannot hold).
pub fn canonical<T: Serialize>(v: &T) -> Result<Vec<u8>, GovError> {
    serde_json_canonicalizer::to_vec(v).map_err(|e| GovError::new(format!("canonical JSON: {e}")))
}

/// SHA-256 of `b`.
pub fn sha256(b: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex SHA-256 of the canonical JSON of `v`.
///
/// # Errors
/// As [`canonical`].
pub fn digest_hex<T: Serialize>(v: &T) -> Result<String, GovError> {
    Ok(hex(&sha256(&canonical(v)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8785 §3.2.2-style ordering and number forms.
    #[test]
    fn canonical_form() {
        let v =
            serde_json::json!({"b": 1, "a": [true, null, "x"], "c": {"z": 1.0e2, "y": "\u{20ac}"}});
        let c = canonical(&v).unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&c),
            r#"{"a":[true,null,"x"],"b":1,"c":{"y":"€","z":100}}"#
        );
    }
}
