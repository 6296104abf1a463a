//! Work done on an HSM worker, inside one session: checking and unwrapping a blob into its L1
//! session object, making and sealing a new L1, MACing a record, choosing the root to seal under.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;

use super::der;
use super::record::Record;
use super::state::BlobRef;
use crate::blob::{self, BlobHeader, SealedBlob};
use crate::error::{Error, Result};
use crate::hsm::SessionCtx;
use crate::root;
use crate::templates::{self, PairKind};
use crate::types::{KeyOp, KeyType, RootId};

/// Seconds since the Unix epoch.
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Refuses a blob sealed by another token, or one that is not an L1.
pub(super) fn check_blob_identity(ctx: &SessionCtx<'_>, b: &SealedBlob) -> Result<()> {
    let h = &b.header.hsm;
    let me = ctx.identity;
    if !h.same_token(me) {
        return Err(Error::Foreign(format!(
            "key {:?} v{} was sealed by token {} {} serial {}, but this token is {}",
            b.header.key_name, b.header.key_version, h.manufacturer, h.model, h.serial, me
        )));
    }
    if b.header.level != 1 {
        return Err(Error::Foreign(format!(
            "blob level {} is not 1",
            b.header.level
        )));
    }
    Ok(())
}

/// The L1 session object for `b`: from the session cache, or verified and unwrapped under L0.
pub(super) fn l1_handle(ctx: &mut SessionCtx<'_>, b: &BlobRef) -> Result<ObjectHandle> {
    if let Some(h) = ctx.cached_l1(&b.digest) {
        return Ok(h);
    }
    check_blob_identity(ctx, &b.parsed)?;
    let root = root::handles(ctx, &b.parsed.root_id)?;
    ctx.hmac_verify(root.mac, &b.parsed.signed, &b.parsed.mac)?;
    let h = ctx.unwrap_kwp(root.wrap, &b.parsed.wrapped, &in_use_template(&b.parsed)?)?;
    ctx.cache_l1(b.digest, h);
    Ok(h)
}

/// The `C_UnwrapKey` template of a blob's L1, chosen by the algorithm its MACed header names.
pub(super) fn in_use_template(b: &SealedBlob) -> Result<Vec<cryptoki::object::Attribute>> {
    match b.header.algorithm.as_str() {
        "aes-256-gcm" | "aes-128-gcm" => Ok(templates::l1_in_use()),
        "hmac" => Ok(templates::l1_hmac_in_use()),
        other => Err(Error::Foreign(format!(
            "blob algorithm {other:?} is unknown"
        ))),
    }
}

/// The template and mechanism of a new symmetric L1 of `key_type` (`key_size` bytes for `hmac`).
fn new_l1(
    key_type: KeyType,
    key_size: u32,
) -> Result<(Mechanism<'static>, Vec<cryptoki::object::Attribute>)> {
    match key_type {
        KeyType::Aes256Gcm96 => Ok((Mechanism::AesKeyGen, templates::l1_new())),
        KeyType::Aes128Gcm96 => Ok((Mechanism::AesKeyGen, templates::l1_new_aes(16))),
        KeyType::Hmac => Ok((
            Mechanism::GenericSecretKeyGen,
            templates::l1_hmac_new(u64::from(key_size)),
        )),
        other => Err(Error::Internal(format!("{other} has no L1 blob"))),
    }
}

/// The PKCS#11 shape of a signing key type.
pub(super) fn pair_kind(key_type: KeyType) -> Result<PairKind> {
    Ok(match key_type {
        KeyType::Ed25519 => PairKind::Ed25519,
        KeyType::EcdsaP256 => PairKind::Ec(der::P256),
        KeyType::EcdsaP384 => PairKind::Ec(der::P384),
        KeyType::EcdsaP521 => PairKind::Ec(der::P521),
        KeyType::Rsa2048 => PairKind::Rsa(2048),
        KeyType::Rsa3072 => PairKind::Rsa(3072),
        KeyType::Rsa4096 => PairKind::Rsa(4096),
        other => {
            return Err(Error::Internal(format!(
                "{other} is not a signing key type"
            )))
        }
    })
}

/// Generates key `name` version `version`'s key pair on the token: returns its `CKA_ID` (16
/// random bytes from the HSM) and its public key as DER SubjectPublicKeyInfo, read back from
/// the token.
pub(super) fn make_pair(
    ctx: &mut SessionCtx<'_>,
    key_type: KeyType,
    name: &str,
    version: u32,
) -> Result<([u8; 16], Vec<u8>)> {
    let kind = pair_kind(key_type)?;
    let mut id = [0u8; 16];
    ctx.random(&mut id)?;
    let label = format!("rootseal-key:{name}:v{version}");
    let mech = match kind {
        PairKind::Ed25519 => Mechanism::EccEdwardsKeyPairGen,
        PairKind::Ec(_) => Mechanism::EccKeyPairGen,
        PairKind::Rsa(_) => Mechanism::RsaPkcsKeyPairGen,
    };
    let (public, private) = ctx.generate_key_pair(
        &mech,
        &templates::signing_public(kind, &id, &label),
        &templates::signing_private(kind, &id, &label),
    )?;
    match public_spki(ctx, kind, public) {
        Ok(spki) => Ok((id, spki)),
        Err(e) => {
            ctx.destroy_transient(public, "half-made key pair");
            ctx.destroy_transient(private, "half-made key pair");
            Err(e)
        }
    }
}

/// A public key object's DER SubjectPublicKeyInfo.
pub(super) fn public_spki(
    ctx: &mut SessionCtx<'_>,
    kind: PairKind,
    public: ObjectHandle,
) -> Result<Vec<u8>> {
    use cryptoki::object::{Attribute, AttributeType};
    let bad = || Error::TokenState("the token reported a malformed public key".into());
    match kind {
        PairKind::Rsa(_) => {
            let attrs = ctx.attributes(
                public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            Ok(der::spki_rsa(&n.ok_or_else(bad)?, &e.ok_or_else(bad)?))
        }
        PairKind::Ec(_) | PairKind::Ed25519 => {
            let attrs = ctx.attributes(public, &[AttributeType::EcPoint])?;
            let point = attrs
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(v) => Some(v),
                    _ => None,
                })
                .ok_or_else(bad)?;
            // Tokens report CKA_EC_POINT as a DER OCTET STRING; some give the raw point.
            let raw = der::octet_string(&point).map_or(point.clone(), <[u8]>::to_vec);
            Ok(match kind {
                PairKind::Ec(curve) => der::spki_ec(curve, &raw),
                _ => {
                    if raw.len() != 32 {
                        return Err(bad());
                    }
                    der::spki_ed25519(&raw)
                }
            })
        }
    }
}

/// The (private, public) objects of the key pair with `CKA_ID` `id`, cached per session.
pub(super) fn pair_handles(
    ctx: &mut SessionCtx<'_>,
    id: &[u8; 16],
) -> Result<(ObjectHandle, ObjectHandle)> {
    use cryptoki::object::{Attribute, ObjectClass};
    let find = |ctx: &mut SessionCtx<'_>, kind: &'static str, class: ObjectClass| {
        if let Some(h) = ctx.cached_object(&(kind, *id)) {
            return Ok(h);
        }
        let found = ctx.find(&[
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Id(id.to_vec()),
        ])?;
        match found.as_slice() {
            [h] => {
                ctx.remember_object((kind, *id), *h);
                Ok(*h)
            }
            [] => Err(Error::TokenState(format!(
                "signing key object {} is missing from the token",
                crate::types::RootId(*id).to_hex()
            ))),
            _ => Err(Error::TokenState(format!(
                "signing key object {} is on the token more than once",
                crate::types::RootId(*id).to_hex()
            ))),
        }
    };
    let private = find(ctx, "pair-private", ObjectClass::PRIVATE_KEY)?;
    let public = find(ctx, "pair-public", ObjectClass::PUBLIC_KEY)?;
    Ok((private, public))
}

/// Destroys the key pair with `CKA_ID` `id` (both halves; a missing half is not an error).
pub(super) fn destroy_pair(ctx: &mut SessionCtx<'_>, id: &[u8; 16]) -> Result<()> {
    use cryptoki::object::{Attribute, ObjectClass};
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        for h in ctx.find(&[
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Id(id.to_vec()),
        ])? {
            ctx.destroy(h)?;
        }
    }
    ctx.forget_objects();
    Ok(())
}

/// What a new version of a key is, by type.
pub(super) struct NewVersion {
    /// The sealed blob (symmetric types), base64.
    pub(super) blob: String,
    /// The key pair's `CKA_ID` and public key (signing types).
    pub(super) pair: Option<([u8; 16], Vec<u8>)>,
}

/// Makes version `version` of key `name` inside the HSM: a symmetric L1 sealed under `root_id`,
/// or a key pair on the token.
pub(super) fn new_version(
    ctx: &mut SessionCtx<'_>,
    root_id: &RootId,
    name: &str,
    version: u32,
    ops: &[KeyOp],
    key_type: KeyType,
    key_size: u32,
) -> Result<NewVersion> {
    if key_type.is_asymmetric() {
        return Ok(NewVersion {
            blob: String::new(),
            pair: Some(make_pair(ctx, key_type, name, version)?),
        });
    }
    let (mech, template) = new_l1(key_type, key_size)?;
    let algorithm = key_type
        .blob_algorithm()
        .ok_or_else(|| Error::Internal(format!("{key_type} has no L1 blob")))?;
    let raw = seal_generated_l1(
        ctx, root_id, name, version, ops, &mech, &template, algorithm,
    )?;
    Ok(NewVersion {
        blob: B64.encode(raw),
        pair: None,
    })
}

/// Generates an L1 with `mechanism` and `template` and seals it under `root_id`, its header
/// naming `algorithm`. Returns the raw blob.
#[allow(clippy::too_many_arguments)]
pub(super) fn seal_generated_l1(
    ctx: &mut SessionCtx<'_>,
    root_id: &RootId,
    name: &str,
    version: u32,
    ops: &[KeyOp],
    mechanism: &Mechanism<'_>,
    template: &[cryptoki::object::Attribute],
    algorithm: &str,
) -> Result<Vec<u8>> {
    let k = ctx.generate(mechanism, template)?;
    seal_l1(ctx, root_id, name, version, ops, k, algorithm)
}

/// Wraps the transient L1 object `k` (new or imported) under `root_id`, destroys it, and seals
/// the wrapped bytes with a header naming `algorithm`. Returns the raw blob.
pub(super) fn seal_l1(
    ctx: &mut SessionCtx<'_>,
    root_id: &RootId,
    name: &str,
    version: u32,
    ops: &[KeyOp],
    k: ObjectHandle,
    algorithm: &str,
) -> Result<Vec<u8>> {
    let root = match root::handles(ctx, root_id) {
        Ok(r) => r,
        Err(e) => {
            ctx.destroy_transient(k, "new L1");
            return Err(e);
        }
    };
    let wrapped = ctx.wrap_kwp(root.wrap, k);
    ctx.destroy_transient(k, "new L1");
    let header = BlobHeader {
        level: 1,
        key_name: name.to_owned(),
        key_version: version,
        root_id: root_id.to_hex(),
        hsm: ctx.identity.clone(),
        created: now(),
        allowed_ops: ops.to_vec(),
        policy_digest: String::new(),
        algorithm: algorithm.into(),
        wrap_mechanism: "CKM_AES_KEY_WRAP_PAD".into(),
    };
    seal_blob(ctx, root.mac, &header, &wrapped?)
}

/// Encodes `header` and `wrapped` as a blob and appends its MAC, computed in the HSM.
pub(super) fn seal_blob(
    ctx: &mut SessionCtx<'_>,
    mac_key: ObjectHandle,
    header: &BlobHeader,
    wrapped: &[u8],
) -> Result<Vec<u8>> {
    let unsigned = blob::encode_unsigned(header, wrapped)?;
    let mac = ctx.hmac(mac_key, &unsigned)?;
    Ok(blob::append_mac(unsigned, &mac))
}

/// MACs a record under `root_id` (sets `root_id` and `mac`).
pub(super) fn mac_record(
    ctx: &mut SessionCtx<'_>,
    record: &mut Record,
    root_id: &RootId,
) -> Result<()> {
    let root = root::handles(ctx, root_id)?;
    record.root_id = root_id.to_hex();
    record.mac = String::new();
    let bytes = serde_json::to_vec(&*record)
        .map_err(|e| Error::Internal(format!("cannot serialise record: {e}")))?;
    let mac = ctx.hmac(root.mac, &bytes)?;
    record.mac = B64.encode(mac);
    Ok(())
}

/// Checks a record's MAC (over `signed`) with the MAC key of `root_id`.
pub(super) fn verify_record_mac(
    ctx: &mut SessionCtx<'_>,
    root_id: &RootId,
    signed: &[u8],
    mac: &[u8],
) -> Result<()> {
    let root = root::handles(ctx, root_id)?;
    ctx.hmac_verify(root.mac, signed, mac)
}

/// Where new blobs go: the current root (the newest complete, hardened root that works; during a
/// rotation, the root it is moving to).
pub(super) fn required_seal_target(ctx: &mut SessionCtx<'_>) -> Result<RootId> {
    root::current(ctx)?.ok_or(Error::NoCurrentRoot)
}
