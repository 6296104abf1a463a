//! The audit signing key `rootseal-audit`: an Ed25519 pair on the token that signs the audit
//! log's checkpoints (`CKM_EDDSA`), made by the Security Officer with the root
//! ([`crate::templates::audit_signing_key`]). Its private half never leaves the token and can
//! never be changed; its public half is what `rootseal audit verify` checks against.

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki_sys::CK_MECHANISM_TYPE;

use crate::error::{Error, Result};
use crate::hsm::{AllowedMechanisms, Hsm, SessionCtx};
use crate::templates;

/// The label (and `CKA_ID`) of the audit key pair.
pub const AUDIT_KEY_LABEL: &str = "rootseal-audit";

fn find(ctx: &mut SessionCtx<'_>, class: ObjectClass) -> Result<Option<ObjectHandle>> {
    let found = ctx.find(&[
        Attribute::Class(class),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Token(true),
        Attribute::Label(AUDIT_KEY_LABEL.as_bytes().to_vec()),
    ])?;
    Ok(found.into_iter().next())
}

/// Makes the pair in this (Security Officer) session unless it exists; true when it made it.
pub(crate) fn ensure(ctx: &mut SessionCtx<'_>) -> Result<bool> {
    if find(ctx, ObjectClass::PRIVATE_KEY)?.is_some() {
        return Ok(false);
    }
    let id = AUDIT_KEY_LABEL.as_bytes();
    let (public, private) = templates::audit_signing_key(id, AUDIT_KEY_LABEL, true);
    match ctx.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private) {
        Ok(_) => {}
        Err(e) if e.rv() == Some(cryptoki::error::RvError::AttributeTypeInvalid) => {
            let (public, private) = templates::audit_signing_key(id, AUDIT_KEY_LABEL, false);
            ctx.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)?;
        }
        Err(e) => return Err(e),
    }
    Ok(true)
}

/// The 32-byte public key, `None` when the token has no audit key.
pub(crate) fn public_key(ctx: &mut SessionCtx<'_>) -> Result<Option<[u8; 32]>> {
    let Some(h) = find(ctx, ObjectClass::PUBLIC_KEY)? else {
        return Ok(None);
    };
    let point = ctx
        .attributes(h, &[AttributeType::EcPoint])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| Error::TokenState("the audit public key has no CKA_EC_POINT".into()))?;
    // PKCS#11 3.0 says the raw 32 bytes; SoftHSM2 2.6.1 wraps them in a DER OCTET STRING.
    let raw = match point.as_slice() {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        r if r.len() == 32 => r,
        _ => {
            return Err(Error::TokenState(
                "the audit public key is not an Ed25519 point".into(),
            ))
        }
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(raw);
    Ok(Some(out))
}

/// Signs `msg` with the audit key.
pub(crate) fn sign(ctx: &mut SessionCtx<'_>, msg: &[u8]) -> Result<Vec<u8>> {
    let h = find(ctx, ObjectClass::PRIVATE_KEY)?
        .ok_or_else(|| Error::TokenState("audit key missing".into()))?;
    ctx.eddsa_sign(h, msg)
}

/// Every protection the audit private key lacks (empty when it is as its template says).
pub(crate) fn check(ctx: &mut SessionCtx<'_>) -> Result<Vec<String>> {
    let Some(h) = find(ctx, ObjectClass::PRIVATE_KEY)? else {
        return Ok(vec!["audit key missing".into()]);
    };
    let want = [
        (AttributeType::Sensitive, true),
        (AttributeType::Extractable, false),
        (AttributeType::Modifiable, false),
        (AttributeType::Sign, true),
        (AttributeType::Decrypt, false),
        (AttributeType::Derive, false),
        (AttributeType::Unwrap, false),
        (AttributeType::AlwaysSensitive, true),
        (AttributeType::NeverExtractable, true),
    ];
    let types: Vec<AttributeType> = want.iter().map(|(t, _)| *t).collect();
    let have = ctx.bool_attributes(h, &types)?;
    let mut failures = Vec::new();
    for (t, expected) in want {
        match have.iter().find(|(ht, _)| *ht == t) {
            Some((_, v)) if *v == expected => {}
            Some((_, v)) => failures.push(format!("audit key {t} is {v} (expected {expected})")),
            None => failures.push(format!(
                "audit key {t} cannot be read (expected {expected})"
            )),
        }
    }
    // Read into a buffer (no null-pValue length query, which p11-kit's RPC cannot carry). A token
    // without the attribute, or a read that fails, leaves the restriction unchecked, as before.
    match ctx.allowed_mechanisms(h) {
        Ok(AllowedMechanisms::List(m)) if m != [CK_MECHANISM_TYPE::from(MechanismType::EDDSA)] => {
            failures.push(format!(
                "audit key CKA_ALLOWED_MECHANISMS is {} (expected only CKM_EDDSA)",
                crate::custody::mechanism_names(&m)
            ));
        }
        Ok(AllowedMechanisms::TooMany) => failures.push(
            "audit key CKA_ALLOWED_MECHANISMS lists more than 64 mechanisms (expected only CKM_EDDSA)"
                .into(),
        ),
        _ => {}
    }
    Ok(failures)
}

impl Hsm {
    /// The audit key's Ed25519 public key (32 bytes), `None` when the token has none.
    ///
    /// # Errors
    /// HSM errors.
    pub async fn audit_public_key(&self) -> Result<Option<[u8; 32]>> {
        self.run(public_key).await
    }

    /// Signs `msg` with the audit key inside the HSM (`CKM_EDDSA`), on a worker.
    ///
    /// # Errors
    /// HSM errors; [`Error::TokenState`] when the key is missing.
    pub async fn audit_sign(&self, msg: Vec<u8>) -> Result<Vec<u8>> {
        self.run(move |ctx| sign(ctx, &msg)).await
    }

    /// Every protection the audit key lacks (`["audit key missing"]` when there is none).
    ///
    /// # Errors
    /// HSM errors.
    pub async fn audit_key_check(&self) -> Result<Vec<String>> {
        self.run(check).await
    }
}
