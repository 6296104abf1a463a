//! The custody check by enforcement, for a module through which array attributes cannot be read
//! (p11-kit's client module: [`crate::hsm::raw::shares_instance`]). Instead of reading
//! `CKA_ALLOWED_MECHANISMS` and `CKA_UNWRAP_TEMPLATE` back, the check makes the token refuse what
//! they forbid, with throwaway session keys, each next to a control that shows the same call
//! goes through when the restriction is not in the way:
//!
//! * mechanism restriction of L0 (`CKM_AES_KEY_WRAP_PAD` only): `CKM_AES_KEY_WRAP` of a probe
//!   key under an unrestricted throwaway wrapping key succeeds, under L0 it is refused with
//!   `CKR_MECHANISM_INVALID`;
//! * the unwrap template of L0: the probe key wrapped under L0 unwraps with a template that
//!   agrees with every attribute rootseal's unwrap template forces, and is refused with
//!   `CKR_TEMPLATE_INCONSISTENT` for each one of them flipped;
//! * mechanism restriction of the MAC key (`CKM_SHA256_HMAC` only): `CKM_SHA_1_HMAC` with an
//!   unrestricted throwaway key signs, with the MAC key it is refused with
//!   `CKR_MECHANISM_INVALID`, and `CKM_SHA256_HMAC` with the MAC key signs.
//!
//! Any other answer is a failure of the check (custody "weak"), never a pass. The probe key is
//! random, never leaves the token unwrapped, and every object made is destroyed.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};

use crate::error::{Error, Result};
use crate::hsm::SessionCtx;
use crate::templates;

/// A PKCS#11 answer of the token: the return value, `None` for success. Errors that mean the
/// HSM is gone are returned as errors (the check did not run), not as answers.
fn answer<T>(r: Result<T>) -> Result<(Option<RvError>, Option<T>)> {
    match r {
        Ok(v) => Ok((None, Some(v))),
        Err(e) if e.recovery() != crate::error::Recovery::None => Err(e),
        Err(e) => match e.rv() {
            Some(rv) => Ok((Some(rv), None)),
            None => Err(e),
        },
    }
}

fn rv_name(rv: Option<RvError>) -> String {
    rv.map_or_else(|| "CKR_OK".into(), |r| format!("{r:?}"))
}

fn flipped(a: &Attribute) -> Option<Attribute> {
    Some(match a {
        Attribute::Sensitive(b) => Attribute::Sensitive(!b),
        Attribute::WrapWithTrusted(b) => Attribute::WrapWithTrusted(!b),
        Attribute::Private(b) => Attribute::Private(!b),
        Attribute::Token(b) => Attribute::Token(!b),
        Attribute::Derive(b) => Attribute::Derive(!b),
        Attribute::Wrap(b) => Attribute::Wrap(!b),
        Attribute::Unwrap(b) => Attribute::Unwrap(!b),
        Attribute::Extractable(b) => Attribute::Extractable(!b),
        Attribute::Modifiable(b) => Attribute::Modifiable(!b),
        Attribute::Copyable(b) => Attribute::Copyable(!b),
        _ => return None,
    })
}

/// The mechanism restriction and the unwrap template of L0 `l0`, by enforcement.
pub(crate) fn l0(
    ctx: &mut SessionCtx<'_>,
    l0: ObjectHandle,
    failures: &mut Vec<String>,
) -> Result<()> {
    let key = ctx.generate(&Mechanism::AesKeyGen, &templates::custody_probe_key())?;
    let r = l0_with(ctx, l0, key, failures);
    ctx.destroy_transient(key, "custody probe key");
    r
}

fn l0_with(
    ctx: &mut SessionCtx<'_>,
    l0: ObjectHandle,
    key: ObjectHandle,
    failures: &mut Vec<String>,
) -> Result<()> {
    // Mechanism restriction.
    let wrapper = ctx.generate(&Mechanism::AesKeyGen, &templates::custody_control_wrapper())?;
    let control = answer(ctx.wrap_with(&Mechanism::AesKeyWrap, wrapper, key));
    ctx.destroy_transient(wrapper, "custody control key");
    match control? {
        (None, _) => match answer(ctx.wrap_with(&Mechanism::AesKeyWrap, l0, key))?.0 {
            Some(RvError::MechanismInvalid) => {}
            rv => failures.push(format!(
                "L0 wraps with CKM_AES_KEY_WRAP ({}; expected only CKM_AES_KEY_WRAP_PAD)",
                rv_name(rv)
            )),
        },
        (rv, _) => failures.push(format!(
            "L0 mechanism restriction cannot be tested: CKM_AES_KEY_WRAP with an unrestricted key \
             answers {}",
            rv_name(rv)
        )),
    }
    // Unwrap template.
    let blob = match answer(ctx.wrap_kwp(l0, key))? {
        (None, Some(b)) => b,
        (rv, _) => {
            failures.push(format!(
                "L0 unwrap template cannot be tested: CKM_AES_KEY_WRAP_PAD under L0 answers {}",
                rv_name(rv)
            ));
            return Ok(());
        }
    };
    let forced = templates::l0_unwrap_template();
    let base = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
    ];
    let agreeing: Vec<Attribute> = base.iter().cloned().chain(forced.iter().cloned()).collect();
    match answer(ctx.unwrap_kwp_raw(l0, &blob, &agreeing))? {
        (None, Some(h)) => ctx.destroy_transient(h, "custody probe unwrap"),
        (rv, _) => {
            failures.push(format!(
                "L0 unwrap template cannot be tested: an unwrap agreeing with it answers {}",
                rv_name(rv)
            ));
            return Ok(());
        }
    }
    for (i, want) in forced.iter().enumerate() {
        let Some(flip) = flipped(want) else {
            return Err(Error::Internal(format!("no flip for {want:?}")));
        };
        let mut t = agreeing.clone();
        t[base.len() + i] = flip;
        match answer(ctx.unwrap_kwp_raw(l0, &blob, &t))? {
            (Some(RvError::TemplateInconsistent), _) => {}
            (rv, made) => {
                if let Some(h) = made {
                    ctx.destroy_transient(h, "custody probe unwrap");
                }
                failures.push(format!(
                    "L0 CKA_UNWRAP_TEMPLATE does not force {want:?} (an unwrap against it answers {})",
                    rv_name(rv)
                ));
            }
        }
    }
    Ok(())
}

/// The mechanism restriction of MAC key `mac`, by enforcement.
pub(crate) fn mac(
    ctx: &mut SessionCtx<'_>,
    mac: ObjectHandle,
    failures: &mut Vec<String>,
) -> Result<()> {
    const DATA: &[u8] = b"rootseal custody probe";
    let control = ctx.generate(
        &Mechanism::GenericSecretKeyGen,
        &templates::custody_control_hmac(),
    )?;
    let c = answer(ctx.sign_with(&Mechanism::Sha1Hmac, control, DATA));
    ctx.destroy_transient(control, "custody control key");
    match c? {
        (None, _) => match answer(ctx.sign_with(&Mechanism::Sha1Hmac, mac, DATA))?.0 {
            Some(RvError::MechanismInvalid) => {}
            rv => failures.push(format!(
                "MAC key signs with CKM_SHA_1_HMAC ({}; expected only CKM_SHA256_HMAC)",
                rv_name(rv)
            )),
        },
        (rv, _) => failures.push(format!(
            "MAC key mechanism restriction cannot be tested: CKM_SHA_1_HMAC with an \
             unrestricted key answers {}",
            rv_name(rv)
        )),
    }
    if let (Some(rv), _) = answer(ctx.sign_with(&Mechanism::Sha256Hmac, mac, DATA))? {
        failures.push(format!(
            "MAC key does not sign with CKM_SHA256_HMAC ({})",
            rv_name(Some(rv))
        ));
    }
    Ok(())
}
