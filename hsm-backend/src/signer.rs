//! An operator's signer: the Ed25519 key on the operator's **own** PKCS#11 token (a YubiKey, a
//! smart card; one SoftHSM2 token per operator in tests) that signs their ceremony approvals.
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
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
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

    /// The signing key's public half as a PEM `PUBLIC KEY` (SPKI), making the key pair on the
    /// token first when `create` and it is absent. Returns the PEM and whether it was made now.
    ///
    /// # Errors
    /// [`SignerError::NoKey`] (absent, `create` false), [`SignerError::BadKey`], HSM errors.
    pub async fn public_key_pem(&self, create: bool) -> Result<(String, bool), SignerError> {
        let label = self.object.clone();
        let found = self
            .hsm
            .run(move |ctx| {
                let (pubk, privk) = find_pair(ctx, &label)?;
                match (pubk, privk) {
                    (Some(p), Some(_)) => Ok(Some((ec_point(ctx, p)?, false))),
                    (None, None) if create => {
                        let mut id = [0u8; 16];
                        ctx.random(&mut id)?;
                        let (pt, pk) = templates::operator_signing_key(&label, &id);
                        let (p, _) =
                            ctx.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &pt, &pk)?;
                        Ok(Some((ec_point(ctx, p)?, true)))
                    }
                    (None, None) => Ok(None),
                    _ => Err(Error::TokenState(format!(
                        "key {label:?} has only one half of its key pair on the token"
                    ))),
                }
            })
            .await?;
        let (point, made) = found.ok_or_else(|| SignerError::NoKey(self.object.clone()))?;
        let raw = ed25519_from_ec_point(&point).ok_or_else(|| SignerError::BadKey {
            label: self.object.clone(),
            reason: "not an Ed25519 key (CKA_EC_POINT is not 32 bytes)".into(),
        })?;
        Ok((ed25519_pem(&raw), made))
    }

    /// Signs `msg` with the token's key (`CKM_EDDSA`, Ed25519): 64 bytes.
    ///
    /// # Errors
    /// [`SignerError::NoKey`], HSM errors.
    pub async fn sign(&self, msg: Vec<u8>) -> Result<Vec<u8>, SignerError> {
        let label = self.object.clone();
        let sig = self
            .hsm
            .run(move |ctx| {
                let (_, privk) = find_pair(ctx, &label)?;
                match privk {
                    Some(k) => Ok(Some(ctx.eddsa_sign(k, &msg)?)),
                    None => Ok(None),
                }
            })
            .await?;
        sig.ok_or_else(|| SignerError::NoKey(self.object.clone()))
    }
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
    }
}
