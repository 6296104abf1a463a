//! Transit `sign`, `verify`, `hmac` and `random` inside the HSM. A signing key's private half
//! is a token object that signs and never leaves; its public half verifies (`C_Verify`), so a
//! signature is checked by the same token that made it. Hashing of the input happens in
//! software (it is not a key operation); HMACs are computed by the token under the `hmac` key's
//! L1. Each call is one HSM job however many items it carries.

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use zeroize::Zeroizing;

use super::api::{HashAlg, Marshaling, RsaPadding, SaltLength, SignParams, Signature, VerifyItem};
use super::der::{self, DigestOid};
use super::state::KeyState;
use super::{jobs, Keyring, Result};
use crate::error::{Error as HsmError, KeyringError, Recovery};
use crate::types::{KeyOp, KeyType};

/// Largest `random` request, in bytes (Vault's limit).
pub const MAX_RANDOM_BYTES: usize = 128 * 1024;

/// How one item is signed: the mechanism's input and how the signature is encoded.
struct Prepared {
    /// What `C_Sign`/`C_Verify` is given (the message, a digest, or a `DigestInfo`).
    data: Vec<u8>,
}

/// The ECDSA field size in bytes of a key type.
fn ec_field(t: KeyType) -> usize {
    match t {
        KeyType::EcdsaP384 => 48,
        KeyType::EcdsaP521 => 66,
        _ => 32,
    }
}

/// The RSA modulus size in bytes of a key type.
fn rsa_bytes(t: KeyType) -> usize {
    match t {
        KeyType::Rsa3072 => 384,
        KeyType::Rsa4096 => 512,
        _ => 256,
    }
}

/// Checks `p` against the key type, as Vault does.
fn check_params(t: KeyType, p: &SignParams) -> Result<()> {
    let bad = |m: String| Err(KeyringError::InvalidRequest(m));
    if t == KeyType::Ed25519 && p.prehashed {
        return bad("prehashed is not supported for ed25519 keys".into());
    }
    if t.is_ecdsa() && p.hash == HashAlg::None {
        return bad("hash_algorithm none is only valid for rsa keys with pkcs1v15".into());
    }
    match t {
        _ if t.is_rsa() => {
            if p.hash == HashAlg::None && (p.padding != RsaPadding::Pkcs1v15 || !p.prehashed) {
                return bad(
                    "hash_algorithm none requires signature_algorithm pkcs1v15 and prehashed"
                        .into(),
                );
            }
            if p.padding == RsaPadding::Pss && pss_hash(p.hash).is_none() {
                return bad(format!(
                    "hash_algorithm {} is not supported with pss: the token has no CKM_{} for RSA-PSS",
                    p.hash.name(),
                    p.hash.name().to_uppercase().replace('-', "_")
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The PSS hash and MGF of a hash algorithm, if the token has them.
fn pss_hash(h: HashAlg) -> Option<(MechanismType, PkcsMgfType)> {
    Some(match h {
        HashAlg::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        HashAlg::Sha224 => (MechanismType::SHA224, PkcsMgfType::MGF1_SHA224),
        HashAlg::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        HashAlg::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        HashAlg::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
        _ => return None,
    })
}

/// The `DigestInfo` OID of a hash.
fn digest_oid(h: HashAlg) -> Option<DigestOid> {
    Some(match h {
        HashAlg::Sha1 => DigestOid::Sha1,
        HashAlg::Sha224 => DigestOid::Nist(4),
        HashAlg::Sha256 => DigestOid::Nist(1),
        HashAlg::Sha384 => DigestOid::Nist(2),
        HashAlg::Sha512 => DigestOid::Nist(3),
        HashAlg::Sha3_224 => DigestOid::Nist(7),
        HashAlg::Sha3_256 => DigestOid::Nist(8),
        HashAlg::Sha3_384 => DigestOid::Nist(9),
        HashAlg::Sha3_512 => DigestOid::Nist(10),
        HashAlg::None => return None,
    })
}

/// The mechanism input for `input` under `p` (per item: a bad prehashed length fails only it).
fn prepare(t: KeyType, p: &SignParams, input: &[u8]) -> Result<Prepared> {
    if t == KeyType::Ed25519 {
        return Ok(Prepared {
            data: input.to_vec(),
        });
    }
    let digest = if p.prehashed {
        if p.hash != HashAlg::None && input.len() != p.hash.len() {
            return Err(KeyringError::InvalidRequest(format!(
                "prehashed input must be a {} digest of {} bytes",
                p.hash.name(),
                p.hash.len()
            )));
        }
        input.to_vec()
    } else {
        p.hash.digest(input)?
    };
    let data = if t.is_rsa() && p.padding == RsaPadding::Pkcs1v15 {
        match digest_oid(p.hash) {
            Some(oid) => der::digest_info(oid, &digest),
            None => digest,
        }
    } else {
        digest
    };
    Ok(Prepared { data })
}

/// The signing mechanism of key type `t` under `p` (`salt`: the PSS salt length to use).
fn mechanism(t: KeyType, p: &SignParams, salt: u64) -> Mechanism<'static> {
    match t {
        KeyType::Ed25519 => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        _ if t.is_ecdsa() => Mechanism::Ecdsa,
        _ => match (p.padding, pss_hash(p.hash)) {
            (RsaPadding::Pss, Some((hash_alg, mgf))) => Mechanism::RsaPkcsPss(PkcsPssParams {
                hash_alg,
                mgf,
                s_len: salt.into(),
            }),
            _ => Mechanism::RsaPkcs,
        },
    }
}

/// The PSS salt lengths to try: one to sign, and for `auto` two to verify (the largest, as
/// `auto` signs, and the hash length, as most other signers use).
fn salts(t: KeyType, p: &SignParams, verifying: bool) -> Result<Vec<u64>> {
    if !t.is_rsa() || p.padding != RsaPadding::Pss {
        return Ok(vec![0]);
    }
    let max = rsa_bytes(t).saturating_sub(p.hash.len() + 2);
    let want = match p.salt {
        SaltLength::Auto if verifying => {
            return Ok(vec![max as u64, p.hash.len() as u64]);
        }
        SaltLength::Auto => max,
        SaltLength::Hash => p.hash.len(),
        SaltLength::Bytes(n) => n as usize,
    };
    if want > max {
        return Err(KeyringError::InvalidRequest(format!(
            "salt_length {want} is too large for this key (at most {max})"
        )));
    }
    Ok(vec![want as u64])
}

/// A signature in the token's form as `p.marshaling` encodes it.
fn marshal(t: KeyType, p: &SignParams, raw: Vec<u8>) -> Vec<u8> {
    if t.is_ecdsa() && p.marshaling == Marshaling::Asn1 {
        der::ecdsa_to_asn1(&raw)
    } else {
        raw
    }
}

/// A marshaled signature in the token's form (`None`: malformed, so it does not verify).
fn unmarshal(t: KeyType, p: &SignParams, sig: &[u8]) -> Option<Vec<u8>> {
    if !t.is_ecdsa() {
        return Some(sig.to_vec());
    }
    let field = ec_field(t);
    match p.marshaling {
        Marshaling::Asn1 => der::ecdsa_from_asn1(sig, field),
        Marshaling::Jws => (sig.len() == 2 * field).then(|| sig.to_vec()),
    }
}

/// Splits a job-level HSM failure (retried on a fresh session) from a per-item one.
fn per_item<T>(r: std::result::Result<T, HsmError>) -> std::result::Result<Result<T>, HsmError> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) if e.recovery() != Recovery::None => Err(e),
        Err(e) => Ok(Err(KeyringError::from(e))),
    }
}

/// The HMAC mechanism of a hash, if the token has it.
fn hmac_mechanism(h: HashAlg) -> Result<Mechanism<'static>> {
    Ok(match h {
        HashAlg::Sha1 => Mechanism::Sha1Hmac,
        HashAlg::Sha224 => Mechanism::Sha224Hmac,
        HashAlg::Sha256 => Mechanism::Sha256Hmac,
        HashAlg::Sha384 => Mechanism::Sha384Hmac,
        HashAlg::Sha512 => Mechanism::Sha512Hmac,
        HashAlg::None => {
            return Err(KeyringError::InvalidRequest(
                "unsupported algorithm none".into(),
            ))
        }
        other => {
            return Err(KeyringError::InvalidRequest(format!(
                "unsupported algorithm {}: the token has no CKM_{}_HMAC",
                other.name(),
                other.name().to_uppercase().replace('-', "_")
            )))
        }
    })
}

/// SoftHSM2 (as PKCS#11 lets a token do) refuses an HMAC key shorter than the digest
/// (`CKR_KEY_SIZE_RANGE`): say so instead of failing in the HSM.
fn check_hmac_key_size(s: &KeyState, alg: HashAlg) -> Result<()> {
    let size = s.record.config.key_size as usize;
    if size < alg.len() {
        return Err(KeyringError::InvalidRequest(format!(
            "{} needs an hmac key of at least {} bytes on this HSM token (the key has {size}): \
             the token refuses shorter keys for CKM_{}_HMAC",
            alg.name(),
            alg.len(),
            alg.name().to_uppercase().replace('-', "_")
        )));
    }
    Ok(())
}

/// Checks the version an item to verify names: known, and not below `min_decryption_version`.
fn check_version(s: &KeyState, v: u32) -> Result<()> {
    if v < s.record.config.min_decryption_version {
        return Err(KeyringError::VersionTooOld);
    }
    if v == 0 || v > s.latest() {
        return Err(KeyringError::InvalidRequest(
            "the signature names an unknown key version".into(),
        ));
    }
    Ok(())
}

impl Keyring {
    /// Signs each of `inputs` with version `version` (default the latest) of signing key
    /// `name`, inside the HSM, in one job. Per-item failures come back per item.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, `InvalidRequest` (key type, parameters, version), HSM errors.
    pub async fn sign(
        &self,
        name: &str,
        version: Option<u32>,
        inputs: Vec<Vec<u8>>,
        p: SignParams,
    ) -> Result<Vec<Result<Signature>>> {
        let s = self.load(name, false).await?;
        let t = s.key_type();
        s.type_supports(t.supports_signing(), "signing")?;
        s.allows(KeyOp::Sign)?;
        check_params(t, &p)?;
        let v = s.encrypt_version(version)?;
        let pair = s.pair(v)?;
        let salt = salts(t, &p, false)?.first().copied().unwrap_or(0);
        let (errors, prepared) = split(inputs.iter().map(|i| prepare(t, &p, i)));
        let done = self
            .inner
            .hsm
            .run(move |ctx| {
                let (private, _) = jobs::pair_handles(ctx, &pair.id)?;
                let mech = mechanism(t, &p, salt);
                let mut out = Vec::with_capacity(prepared.len());
                for pr in &prepared {
                    out.push(
                        per_item(ctx.sign_with(&mech, private, &pr.data))?.map(|raw| Signature {
                            version: v,
                            bytes: marshal(t, &p, raw),
                        }),
                    );
                }
                Ok(out)
            })
            .await?;
        Ok(merge(errors, done))
    }

    /// Verifies each item's signature with the public key of the version it names, inside the
    /// HSM, in one job: `Ok(false)` when it does not verify.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, `InvalidRequest` (key type, parameters), HSM errors.
    pub async fn verify_signature(
        &self,
        name: &str,
        items: Vec<VerifyItem>,
        p: SignParams,
    ) -> Result<Vec<Result<bool>>> {
        let s = self.load(name, false).await?;
        s.type_supports(s.key_type().supports_signing(), "signature verification")?;
        let s = self
            .load_for_versions(
                name,
                KeyOp::Verify,
                items.iter().map(|i| i.signature.version),
            )
            .await?;
        let t = s.key_type();
        check_params(t, &p)?;
        let salts = salts(t, &p, true)?;
        let (errors, work) = split(items.iter().map(|it| {
            let v = it.signature.version;
            check_version(&s, v)
                .and_then(|()| s.pair(v))
                .and_then(|pair| Ok((pair, prepare(t, &p, &it.input)?)))
                .map(|(pair, pr)| (pair, pr, unmarshal(t, &p, &it.signature.bytes)))
        }));
        let done = self
            .inner
            .hsm
            .run(move |ctx| {
                let mut out = Vec::with_capacity(work.len());
                for (pair, pr, sig) in &work {
                    let Some(sig) = sig else {
                        out.push(Ok(false));
                        continue;
                    };
                    let (_, public) = jobs::pair_handles(ctx, &pair.id)?;
                    let mut valid = Ok(false);
                    for salt in &salts {
                        valid = per_item(ctx.verify_with(
                            &mechanism(t, &p, *salt),
                            public,
                            &pr.data,
                            sig,
                        ))?;
                        if matches!(valid, Ok(true) | Err(_)) {
                            break;
                        }
                    }
                    out.push(valid);
                }
                Ok(out)
            })
            .await?;
        Ok(merge(errors, done))
    }

    /// HMACs each of `inputs` under version `version` (default the latest) of `hmac` key
    /// `name`, inside the HSM, in one job.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, `InvalidRequest` (key type, algorithm, version), HSM errors.
    pub async fn hmac(
        &self,
        name: &str,
        version: Option<u32>,
        alg: HashAlg,
        inputs: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Signature>>> {
        let s = self.load(name, false).await?;
        s.type_supports(s.key_type() == KeyType::Hmac, "HMAC")?;
        s.allows(KeyOp::Hmac)?;
        hmac_mechanism(alg)?;
        check_hmac_key_size(&s, alg)?;
        let v = s.encrypt_version(version)?;
        let blob = s.blob(v)?;
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let mech = hmac_mechanism(alg).map_err(|e| HsmError::Internal(e.to_string()))?;
                let k = jobs::l1_handle(ctx, &blob)?;
                let mut out = Vec::with_capacity(inputs.len());
                for i in &inputs {
                    out.push(
                        per_item(ctx.sign_with(&mech, k, i))?
                            .map(|bytes| Signature { version: v, bytes }),
                    );
                }
                Ok(out)
            })
            .await?)
    }

    /// Verifies each item's HMAC under the version it names, inside the HSM (constant time
    /// there), in one job.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, `InvalidRequest` (key type, algorithm), HSM errors.
    pub async fn verify_hmac(
        &self,
        name: &str,
        alg: HashAlg,
        items: Vec<VerifyItem>,
    ) -> Result<Vec<Result<bool>>> {
        let s = self.load(name, false).await?;
        s.type_supports(s.key_type() == KeyType::Hmac, "HMAC")?;
        let s = self
            .load_for_versions(name, KeyOp::Hmac, items.iter().map(|i| i.signature.version))
            .await?;
        hmac_mechanism(alg)?;
        check_hmac_key_size(&s, alg)?;
        let (errors, work) = split(items.into_iter().map(|it| {
            check_version(&s, it.signature.version)
                .and_then(|()| s.blob(it.signature.version))
                .map(|b| (b, it))
        }));
        let done = self
            .inner
            .hsm
            .run(move |ctx| {
                let mech = hmac_mechanism(alg).map_err(|e| HsmError::Internal(e.to_string()))?;
                let mut out = Vec::with_capacity(work.len());
                for (b, it) in &work {
                    let k: ObjectHandle = jobs::l1_handle(ctx, b)?;
                    out.push(per_item(ctx.verify_with(
                        &mech,
                        k,
                        &it.input,
                        &it.signature.bytes,
                    ))?);
                }
                Ok(out)
            })
            .await?;
        Ok(merge(errors, done))
    }

    /// `n` bytes from the HSM RNG (`C_GenerateRandom`), for transit `random`.
    ///
    /// # Errors
    /// `InvalidRequest` beyond [`MAX_RANDOM_BYTES`]; HSM errors.
    pub async fn random(&self, n: usize) -> Result<Zeroizing<Vec<u8>>> {
        if n > MAX_RANDOM_BYTES {
            return Err(KeyringError::InvalidRequest(format!(
                "exceeded maximum of {MAX_RANDOM_BYTES} bytes"
            )));
        }
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let mut out = Zeroizing::new(vec![0u8; n]);
                if n > 0 {
                    ctx.random(&mut out)?;
                }
                Ok(out)
            })
            .await?)
    }
}

/// Used by the RSA encryption path (`crypto.rs`).
pub(super) fn rsa_max_plaintext(t: KeyType) -> usize {
    // OAEP with SHA-1: k - 2·20 - 2.
    rsa_bytes(t).saturating_sub(42)
}

/// Splits per-item results into the errors (by position) and the items for the HSM job.
fn split<T>(items: impl Iterator<Item = Result<T>>) -> (Vec<Option<KeyringError>>, Vec<T>) {
    let mut errors = Vec::new();
    let mut ok = Vec::new();
    for it in items {
        match it {
            Ok(v) => {
                ok.push(v);
                errors.push(None);
            }
            Err(e) => errors.push(Some(e)),
        }
    }
    (errors, ok)
}

/// Puts the job's results back between the items refused before it, in input order.
fn merge<T>(errors: Vec<Option<KeyringError>>, done: Vec<Result<T>>) -> Vec<Result<T>> {
    let mut done = done.into_iter();
    errors
        .into_iter()
        .map(|e| match e {
            Some(e) => Err(e),
            None => done
                .next()
                .unwrap_or_else(|| Err(KeyringError::internal("the HSM answered fewer items"))),
        })
        .collect()
}
