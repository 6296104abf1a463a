//! An operator's signer: the Ed25519 (`CKM_EDDSA`) or ECDSA P-256 (`CKM_ECDSA` over SHA-256)
//! key on the operator's **own** PKCS#11 token (a YubiKey, a smart card; one SoftHSM2 token per
//! operator in tests) that signs their ceremony approvals.
//!
//! Named by a PKCS#11 URI ([`Pkcs11Uri`]): `token=` (or `serial=`) picks the token, `object=` the
//! key's label (default `rootseal-op`), `module-path=` the PKCS#11 library (default: SoftHSM2),
//! `pin-source=file:PATH` the User PIN of that token. The key is made on the token
//! ([`crate::templates::operator_signing_key`]: never extractable, never modifiable, sign only),
//! so the private half never exists anywhere else; rootseal only ever reads its public half.

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::config::{default_softhsm_module, HsmConfig, TokenSelector};
use crate::error::Error;
use crate::hsm::{Hsm, SessionCtx};
use crate::templates;
use crate::uri::{Pkcs11Uri, UriError};

/// The key label when the URI names no `object=`.
pub const DEFAULT_OPERATOR_OBJECT: &str = "rootseal-op";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte key follows.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER prefix of an ECDSA P-256 SubjectPublicKeyInfo (RFC 5480): the 65-byte uncompressed
/// point follows.
pub const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The `CKA_EC_PARAMS` of P-256: the OID 1.2.840.10045.3.1.7.
const P256_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The algorithm of an operator's signing key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OperatorKeyAlg {
    /// Ed25519 (`CKM_EDDSA`), the default.
    #[default]
    Ed25519,
    /// ECDSA P-256: `CKM_ECDSA` over the SHA-256 of the message, a 64-byte `r ‖ s` signature
    /// (what PIV cards without Ed25519 offer).
    EcdsaP256,
}

impl OperatorKeyAlg {
    /// Parses `ed25519` or `ecdsa-p256`.
    pub fn parse(s: &str) -> Option<OperatorKeyAlg> {
        match s {
            "ed25519" => Some(OperatorKeyAlg::Ed25519),
            "ecdsa-p256" => Some(OperatorKeyAlg::EcdsaP256),
            _ => None,
        }
    }

    /// `ed25519` or `ecdsa-p256`.
    pub fn name(self) -> &'static str {
        match self {
            OperatorKeyAlg::Ed25519 => "ed25519",
            OperatorKeyAlg::EcdsaP256 => "ecdsa-p256",
        }
    }
}

/// Why an operator signer cannot be used. Never contains a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The URI is not acceptable.
    #[error("signer URI: {0}")]
    Uri(#[from] UriError),
    /// The URI does not say what rootseal needs.
    #[error("signer URI: {0}")]
    Incomplete(String),
    /// The PIN file cannot be read or is empty.
    #[error("signer PIN file {path}: {reason}")]
    Pin {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The token has no key with that label (run `rootseal operator key` first).
    #[error("the operator token has no signing key labelled {0:?}: run `rootseal operator key --signer URI` first")]
    NoKey(String),
    /// The token holds something rootseal cannot use under that label.
    #[error("the operator token's key {label:?}: {reason}")]
    BadKey {
        /// The label.
        label: String,
        /// Why.
        reason: String,
    },
    /// The token or module failed.
    #[error("operator token: {0}")]
    Hsm(#[from] Error),
}

/// An open operator token and the label of its signing key.
#[derive(Debug)]
pub struct OperatorSigner {
    hsm: Hsm,
    object: String,
}

impl OperatorSigner {
    /// Opens the token `uri` names and logs in with the PIN from its `pin-source`. Blocking:
    /// call it from `spawn_blocking` or before the runtime starts.
    ///
    /// # Errors
    /// [`SignerError`].
    pub fn open(uri: &Pkcs11Uri) -> Result<OperatorSigner, SignerError> {
        let token = match (uri.token()?, uri.serial()?) {
            (Some(l), _) if !l.is_empty() => TokenSelector::Label(l.to_owned()),
            (_, Some(s)) if !s.is_empty() => TokenSelector::Serial(s.to_owned()),
            _ => {
                return Err(SignerError::Incomplete(
                    "name the operator's token with token=LABEL or serial=SERIAL".into(),
                ))
            }
        };
        let module = match uri.module_path()? {
            Some(m) => m,
            None => default_softhsm_module().ok_or_else(|| {
                SignerError::Incomplete("no module-path= and no SoftHSM2 module installed".into())
            })?,
        };
        let pin_path = uri.pin_file()?.ok_or_else(|| {
            SignerError::Incomplete("give the token's PIN with pin-source=file:PATH".into())
        })?;
        let raw =
            Zeroizing::new(
                std::fs::read_to_string(&pin_path).map_err(|e| SignerError::Pin {
                    path: pin_path.clone(),
                    reason: e.to_string(),
                })?,
            );
        let pin = raw.trim_end_matches(['\r', '\n']);
        if pin.is_empty() {
            return Err(SignerError::Pin {
                path: pin_path,
                reason: "empty".into(),
            });
        }
        let object = uri
            .object()?
            .filter(|o| !o.is_empty())
            .unwrap_or(DEFAULT_OPERATOR_OBJECT)
            .to_owned();
        let hsm = Hsm::open(HsmConfig {
            pool_size: 1,
            ..HsmConfig::new(module, token, SecretString::from(pin.to_owned()))
        })?;
        Ok(OperatorSigner { hsm, object })
    }

    /// The signing key's public half as a PEM `PUBLIC KEY` (SPKI), making an Ed25519 key pair
    /// on the token first when `create` and it is absent. Returns the PEM and whether it was
    /// made now.
    ///
    /// # Errors
    /// [`SignerError::NoKey`] (absent, `create` false), [`SignerError::BadKey`], HSM errors.
    pub async fn public_key_pem(&self, create: bool) -> Result<(String, bool), SignerError> {
        self.public_key_pem_with(create, OperatorKeyAlg::Ed25519)
            .await
            .map(|(pem, made, _)| (pem, made))
    }

    /// As [`OperatorSigner::public_key_pem`], making an `alg` key when absent; also returns the
    /// algorithm of the key found (an existing key keeps its own, whatever `alg` says).
    ///
    /// # Errors
    /// [`SignerError::NoKey`] (absent, `create` false), [`SignerError::BadKey`], HSM errors.
    pub async fn public_key_pem_with(
        &self,
        create: bool,
        alg: OperatorKeyAlg,
    ) -> Result<(String, bool, OperatorKeyAlg), SignerError> {
        let label = self.object.clone();
        let found = self
            .hsm
            .run(move |ctx| {
                let (pubk, privk) = find_pair(ctx, &label)?;
                match (pubk, privk) {
                    (Some(p), Some(_)) => {
                        let a = key_alg(ctx, p)?;
                        Ok(Some((ec_point(ctx, p)?, false, a)))
                    }
                    (None, None) if create => {
                        let mut id = [0u8; 16];
                        ctx.random(&mut id)?;
                        let (p, _) = match alg {
                            OperatorKeyAlg::Ed25519 => {
                                let (pt, pk) = templates::operator_signing_key(&label, &id);
                                ctx.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &pt, &pk)?
                            }
                            OperatorKeyAlg::EcdsaP256 => {
                                let (pt, pk) = p256_template(&label, &id);
                                ctx.generate_key_pair(&Mechanism::EccKeyPairGen, &pt, &pk)?
                            }
                        };
                        Ok(Some((ec_point(ctx, p)?, true, alg)))
                    }
                    (None, None) => Ok(None),
                    _ => Err(Error::TokenState(format!(
                        "key {label:?} has only one half of its key pair on the token"
                    ))),
                }
            })
            .await?;
        let (point, made, alg) = found.ok_or_else(|| SignerError::NoKey(self.object.clone()))?;
        let pem = match alg {
            OperatorKeyAlg::Ed25519 => {
                let raw = ed25519_from_ec_point(&point).ok_or_else(|| SignerError::BadKey {
                    label: self.object.clone(),
                    reason: "not an Ed25519 key (CKA_EC_POINT is not 32 bytes)".into(),
                })?;
                ed25519_pem(&raw)
            }
            OperatorKeyAlg::EcdsaP256 => {
                let raw = p256_from_ec_point(&point).ok_or_else(|| SignerError::BadKey {
                    label: self.object.clone(),
                    reason: "not a P-256 key (CKA_EC_POINT is not an uncompressed point)".into(),
                })?;
                p256_pem(&raw)
            }
        };
        Ok((pem, made, alg))
    }

    /// Signs `msg` with the token's key: Ed25519 (`CKM_EDDSA`) or ECDSA P-256 (`CKM_ECDSA` over
    /// SHA-256 of `msg`, computed here: cards such as PIV only offer raw `CKM_ECDSA`); 64 bytes
    /// either way (`r ‖ s` for ECDSA, as PKCS#11 returns it).
    ///
    /// # Errors
    /// [`SignerError::NoKey`], HSM errors.
    pub async fn sign(&self, msg: Vec<u8>) -> Result<Vec<u8>, SignerError> {
        let label = self.object.clone();
        let sig = self
            .hsm
            .run(move |ctx| {
                let (pubk, privk) = find_pair(ctx, &label)?;
                let (Some(p), Some(k)) = (pubk, privk) else {
                    return Ok(None);
                };
                match key_alg(ctx, p)? {
                    OperatorKeyAlg::Ed25519 => Ok(Some(ctx.eddsa_sign(k, &msg)?)),
                    OperatorKeyAlg::EcdsaP256 => {
                        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &msg);
                        Ok(Some(ctx.sign_with(&Mechanism::Ecdsa, k, d.as_ref())?))
                    }
                }
            })
            .await?;
        sig.ok_or_else(|| SignerError::NoKey(self.object.clone()))
    }
}

/// The algorithm of the public key `key` (`CKA_KEY_TYPE`).
fn key_alg(ctx: &mut SessionCtx<'_>, key: ObjectHandle) -> Result<OperatorKeyAlg, Error> {
    for a in ctx.attributes(key, &[AttributeType::KeyType])? {
        if let Attribute::KeyType(t) = a {
            return if t == KeyType::EC_EDWARDS {
                Ok(OperatorKeyAlg::Ed25519)
            } else if t == KeyType::EC {
                Ok(OperatorKeyAlg::EcdsaP256)
            } else {
                Err(Error::TokenState(format!(
                    "the operator key is of type {t}, neither Ed25519 nor ECDSA P-256"
                )))
            };
        }
    }
    Err(Error::TokenState("public key has no CKA_KEY_TYPE".into()))
}

/// The P-256 operator key pair's templates: as [`templates::operator_signing_key`] (never
/// extractable, never modifiable, sign only), with `CKK_EC` on P-256.
fn p256_template(label: &str, id: &[u8]) -> (Vec<Attribute>, Vec<Attribute>) {
    let (mut public, mut private) = templates::operator_signing_key(label, id);
    for a in public.iter_mut().chain(private.iter_mut()) {
        match a {
            Attribute::KeyType(t) => *t = KeyType::EC,
            Attribute::EcParams(p) => *p = P256_EC_PARAMS.to_vec(),
            _ => {}
        }
    }
    (public, private)
}

/// The public and private key objects labelled `label` (at most one of each).
fn find_pair(
    ctx: &mut SessionCtx<'_>,
    label: &str,
) -> Result<(Option<ObjectHandle>, Option<ObjectHandle>), Error> {
    let one = |ctx: &mut SessionCtx<'_>, class| -> Result<Option<ObjectHandle>, Error> {
        let found = ctx.find(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        match found.as_slice() {
            [] => Ok(None),
            [h] => Ok(Some(*h)),
            _ => Err(Error::TokenState(format!(
                "more than one key labelled {label:?} on the operator token"
            ))),
        }
    };
    Ok((
        one(ctx, ObjectClass::PUBLIC_KEY)?,
        one(ctx, ObjectClass::PRIVATE_KEY)?,
    ))
}

fn ec_point(ctx: &mut SessionCtx<'_>, key: ObjectHandle) -> Result<Vec<u8>, Error> {
    for a in ctx.attributes(key, &[AttributeType::EcPoint])? {
        if let Attribute::EcPoint(p) = a {
            return Ok(p);
        }
    }
    Err(Error::TokenState("public key has no CKA_EC_POINT".into()))
}

/// The 32-byte Ed25519 key in a `CKA_EC_POINT`: raw, or DER `OCTET STRING` (SoftHSM2).
fn ed25519_from_ec_point(p: &[u8]) -> Option<[u8; 32]> {
    let raw = match p {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        _ if p.len() == 32 => p,
        _ => return None,
    };
    raw.try_into().ok()
}

/// The 65-byte uncompressed P-256 point in a `CKA_EC_POINT`: DER `OCTET STRING` (PKCS#11) or raw.
fn p256_from_ec_point(p: &[u8]) -> Option<[u8; 65]> {
    let raw = match p {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 && rest.first() == Some(&0x04) => rest,
        [0x04, ..] if p.len() == 65 => p,
        _ => return None,
    };
    raw.try_into().ok()
}

/// A P-256 public key (uncompressed point) as PEM `PUBLIC KEY` (SPKI, RFC 5480).
pub fn p256_pem(point: &[u8; 65]) -> String {
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        B64.encode(der)
    )
}

/// An Ed25519 public key as PEM `PUBLIC KEY` (SPKI, RFC 8410).
pub fn ed25519_pem(raw: &[u8; 32]) -> String {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        B64.encode(der)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_forms() {
        let k = [7u8; 32];
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&k);
        assert_eq!(ed25519_from_ec_point(&der), Some(k));
        assert_eq!(ed25519_from_ec_point(&k), Some(k));
        assert_eq!(ed25519_from_ec_point(&[1, 2, 3]), None);
        assert!(ed25519_pem(&k).starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
        let mut pt = [9u8; 65];
        pt[0] = 0x04;
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(&pt);
        assert_eq!(p256_from_ec_point(&der), Some(pt));
        assert_eq!(p256_from_ec_point(&pt), Some(pt));
        assert_eq!(p256_from_ec_point(&[0x04, 0x41, 1]), None);
        assert!(p256_pem(&pt)
            .starts_with("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"));
        assert_eq!(
            OperatorKeyAlg::parse("ecdsa-p256"),
            Some(OperatorKeyAlg::EcdsaP256)
        );
        assert_eq!(OperatorKeyAlg::parse("rsa"), None);
    }
}
