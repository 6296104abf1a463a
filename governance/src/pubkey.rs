//! Operator public keys: PEM `PUBLIC KEY` (SPKI) for Ed25519 (RFC 8410) or ECDSA P-256
//! (RFC 5480), and signature checks in software (aws-lc-rs), so that a ceremony can be verified
//! offline, on any machine, without the operators' tokens.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::jcs::{hex, sha256};
use crate::GovError;

/// The DER prefix of an Ed25519 SPKI; the 32-byte key follows.
const ED25519_SPKI: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The DER prefix of an ECDSA P-256 SPKI; the 65-byte uncompressed point follows.
const P256_SPKI: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A signature algorithm of operator keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlg {
    /// Ed25519 (`CKM_EDDSA`): 64-byte signatures.
    Ed25519,
    /// ECDSA P-256 with SHA-256 (`CKM_ECDSA` over a SHA-256): 64-byte `r ‖ s` signatures.
    EcdsaP256,
}

impl KeyAlg {
    /// The name in ceremony files (`ed25519`, `ecdsa-p256`).
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "ed25519",
            KeyAlg::EcdsaP256 => "ecdsa-p256",
        }
    }
}

/// A parsed operator public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorKey {
    alg: KeyAlg,
    spki: Vec<u8>,
}

impl OperatorKey {
    /// Parses a PEM `PUBLIC KEY` holding an Ed25519 or P-256 SPKI.
    ///
    /// # Errors
    /// [`GovError`] naming what is wrong.
    pub fn from_pem(pem: &str) -> Result<OperatorKey, GovError> {
        let body: String = pem
            .trim()
            .strip_prefix("-----BEGIN PUBLIC KEY-----")
            .and_then(|r| r.trim_end().strip_suffix("-----END PUBLIC KEY-----"))
            .ok_or_else(|| GovError::new("public key is not a PEM \"PUBLIC KEY\""))?
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = B64
            .decode(body)
            .map_err(|_| GovError::new("public key PEM is not base64"))?;
        Self::from_spki(&der)
    }

    /// Parses a DER SPKI.
    ///
    /// # Errors
    /// [`GovError`] for anything but an Ed25519 or P-256 key.
    pub fn from_spki(der: &[u8]) -> Result<OperatorKey, GovError> {
        let alg = if der.len() == ED25519_SPKI.len() + 32 && der.starts_with(&ED25519_SPKI) {
            KeyAlg::Ed25519
        } else if der.len() == P256_SPKI.len() + 65
            && der.starts_with(&P256_SPKI)
            && der.get(P256_SPKI.len()) == Some(&0x04)
        {
            KeyAlg::EcdsaP256
        } else {
            return Err(GovError::new(
                "public key is neither Ed25519 nor ECDSA P-256 (uncompressed)",
            ));
        };
        Ok(OperatorKey {
            alg,
            spki: der.to_vec(),
        })
    }

    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The key's fingerprint: hex SHA-256 of its DER SPKI.
    pub fn fingerprint(&self) -> String {
        hex(&sha256(&self.spki))
    }

    /// The PEM form.
    pub fn to_pem(&self) -> String {
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(&self.spki)
        )
    }

    /// Whether `sig` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};
        match self.alg {
            KeyAlg::Ed25519 => {
                let raw = self.spki.get(ED25519_SPKI.len()..).unwrap_or_default();
                UnparsedPublicKey::new(&ED25519, raw)
                    .verify(msg, sig)
                    .is_ok()
            }
            KeyAlg::EcdsaP256 => {
                let raw = self.spki.get(P256_SPKI.len()..).unwrap_or_default();
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, raw)
                    .verify(msg, sig)
                    .is_ok()
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
    };

    use super::*;

    /// A software Ed25519 key for unit tests (the e2e tests use keys on SoftHSM2 tokens).
    pub(crate) fn ed25519() -> (Ed25519KeyPair, String) {
        let kp = Ed25519KeyPair::generate().unwrap_or_else(|_| unreachable!());
        let mut der = ED25519_SPKI.to_vec();
        der.extend_from_slice(kp.public_key().as_ref());
        let pem = OperatorKey::from_spki(&der)
            .unwrap_or_else(|_| unreachable!())
            .to_pem();
        (kp, pem)
    }

    #[test]
    fn ed25519_and_p256() {
        let (kp, pem) = ed25519();
        let k = OperatorKey::from_pem(&pem).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.alg(), KeyAlg::Ed25519);
        let sig = kp.sign(b"hello");
        assert!(k.verify(b"hello", sig.as_ref()));
        assert!(!k.verify(b"hellO", sig.as_ref()));

        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap_or_else(|_| unreachable!());
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .unwrap_or_else(|_| unreachable!());
        let mut der = P256_SPKI.to_vec();
        der.extend_from_slice(ec.public_key().as_ref());
        let k = OperatorKey::from_spki(&der).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.alg(), KeyAlg::EcdsaP256);
        let sig = ec.sign(&rng, b"m").unwrap_or_else(|_| unreachable!());
        assert!(k.verify(b"m", sig.as_ref()));
        assert!(!k.verify(b"n", sig.as_ref()));
        assert!(OperatorKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
        )
        .is_err());
        assert!(OperatorKey::from_pem("garbage").is_err());
    }
}
