//! The custody self-check: every root's keys, read back from the token, against the templates
//! they must have been made with ([`crate::templates`]).
//!
//! `serve`, `dev` and the KMS plugin run it before serving, `GET /v1/sys/health` reports its
//! verdict (`"custody": "hardened"` or `"weak"`), and `rootseal root status` prints it. A root
//! made by rootseal 0.1.0 (User-made, modifiable, untrusted, no unwrap template) is weak: a holder
//! of the User PIN could unwrap its blobs into readable keys. `rootseal root rotate` moves such an
//! installation to a hardened root.

use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki_sys::CK_MECHANISM_TYPE;

use crate::error::Result;
use crate::hsm::{AllowedMechanisms, SessionCtx};
use crate::root::{self, RootInfo};
use crate::templates;
use crate::types::RootId;

/// The verdict of the custody check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Custody {
    /// Every root on the token carries the hardened attributes.
    Hardened,
    /// A root is missing a protection (or there is no root); see [`CustodyReport::failures`].
    Weak,
}

impl Custody {
    /// `"hardened"` or `"weak"`, as health reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Custody::Hardened => "hardened",
            Custody::Weak => "weak",
        }
    }
}

/// What the custody check found for one root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootCustody {
    /// The root.
    pub root: RootInfo,
    /// Each protection it lacks, e.g. `"L0 CKA_TRUSTED is false (expected true)"`.
    pub failures: Vec<String>,
}

/// The custody check of every root on the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustodyReport {
    /// One entry per root, oldest first.
    pub roots: Vec<RootCustody>,
}

impl CustodyReport {
    /// Hardened when the token holds at least one complete root and no complete root lacks a
    /// protection. A root without its MAC key (a `rootseal init` or `root rotate` cut short
    /// between its Security Officer and User steps, or an object someone else made) seals and
    /// opens nothing, so it does not weaken custody; running the command again completes it.
    pub fn verdict(&self) -> Custody {
        let mut complete = self.roots.iter().filter(|r| r.root.complete).peekable();
        if complete.peek().is_some() && complete.all(|r| r.failures.is_empty()) {
            Custody::Hardened
        } else {
            Custody::Weak
        }
    }

    /// Every failing protection of a complete root, as `root <id>: <what>`.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .roots
            .iter()
            .filter(|r| r.root.complete)
            .flat_map(|r| {
                r.failures
                    .iter()
                    .map(move |f| format!("root {}: {f}", r.root.id))
            })
            .collect();
        if !self.roots.iter().any(|r| r.root.complete) {
            out.push("the token holds no complete root".into());
        }
        out
    }
}

/// Runs the check on every root this (User) session sees.
pub(crate) fn check(ctx: &mut SessionCtx<'_>) -> Result<CustodyReport> {
    let mut roots = Vec::new();
    for info in root::list(ctx)? {
        let (l0, mac) = root::keys(ctx, &info.id)?;
        let mut failures = Vec::new();
        match l0 {
            Some(h) => check_l0(ctx, &info.id, h, &mut failures)?,
            None => failures.push("L0 key missing".into()),
        }
        match mac {
            Some(h) => check_mac(ctx, &info.id, h, &mut failures)?,
            None => failures.push("MAC key missing (a root cut short: run `rootseal init` or `rootseal root rotate` again)".into()),
        }
        roots.push(RootCustody {
            root: info,
            failures,
        });
    }
    Ok(CustodyReport { roots })
}

fn check_l0(
    ctx: &mut SessionCtx<'_>,
    id: &RootId,
    h: ObjectHandle,
    failures: &mut Vec<String>,
) -> Result<()> {
    let expected = templates::l0_wrap_key(id, "", true);
    check_bools(ctx, "L0", h, &expected, failures)?;
    if !ctx.reads_array_attributes() {
        return crate::custody_enforced::l0(ctx, h, failures);
    }
    check_mechanisms(ctx, "L0", h, MechanismType::AES_KEY_WRAP_PAD, failures)?;
    match ctx.unwrap_template(h)? {
        None => failures.push("L0 has no CKA_UNWRAP_TEMPLATE".into()),
        Some(have) => {
            for want in templates::l0_unwrap_template() {
                if !have.contains(&want) {
                    failures.push(format!("L0 CKA_UNWRAP_TEMPLATE does not force {want:?}"));
                }
            }
        }
    }
    Ok(())
}

fn check_mac(
    ctx: &mut SessionCtx<'_>,
    id: &RootId,
    h: ObjectHandle,
    failures: &mut Vec<String>,
) -> Result<()> {
    let expected = templates::root_mac_key(id, "", true);
    check_bools(ctx, "MAC key", h, &expected, failures)?;
    if !ctx.reads_array_attributes() {
        return crate::custody_enforced::mac(ctx, h, failures);
    }
    check_mechanisms(ctx, "MAC key", h, MechanismType::SHA256_HMAC, failures)
}

/// Compares every boolean attribute of `template` (plus the two the token derives,
/// `CKA_ALWAYS_SENSITIVE` and `CKA_NEVER_EXTRACTABLE`, which must be true) with the object.
fn check_bools(
    ctx: &mut SessionCtx<'_>,
    what: &str,
    h: ObjectHandle,
    template: &[Attribute],
    failures: &mut Vec<String>,
) -> Result<()> {
    let mut want: Vec<(AttributeType, bool)> = template
        .iter()
        .filter_map(|a| bool_of(a).map(|b| (a.attribute_type(), b)))
        .collect();
    want.push((AttributeType::AlwaysSensitive, true));
    want.push((AttributeType::NeverExtractable, true));
    let types: Vec<AttributeType> = want.iter().map(|(t, _)| *t).collect();
    let have = ctx.bool_attributes(h, &types)?;
    for (t, expected) in want {
        match have.iter().find(|(ht, _)| *ht == t) {
            Some((_, v)) if *v == expected => {}
            Some((_, v)) => failures.push(format!("{what} {t} is {v} (expected {expected})")),
            None => failures.push(format!("{what} {t} cannot be read (expected {expected})")),
        }
    }
    Ok(())
}

fn bool_of(a: &Attribute) -> Option<bool> {
    match a {
        Attribute::Token(b)
        | Attribute::Private(b)
        | Attribute::Trusted(b)
        | Attribute::Sensitive(b)
        | Attribute::Extractable(b)
        | Attribute::Modifiable(b)
        | Attribute::Copyable(b)
        | Attribute::Wrap(b)
        | Attribute::Unwrap(b)
        | Attribute::Encrypt(b)
        | Attribute::Decrypt(b)
        | Attribute::Sign(b)
        | Attribute::Verify(b)
        | Attribute::Derive(b) => Some(*b),
        _ => None,
    }
}

/// `CKA_ALLOWED_MECHANISMS` must be exactly `[only]`, where the token supports the attribute.
fn check_mechanisms(
    ctx: &mut SessionCtx<'_>,
    what: &str,
    h: ObjectHandle,
    only: MechanismType,
    failures: &mut Vec<String>,
) -> Result<()> {
    match ctx.allowed_mechanisms(h)? {
        AllowedMechanisms::List(m) if m == [CK_MECHANISM_TYPE::from(only)] => {}
        AllowedMechanisms::List(m) if m.is_empty() => failures.push(format!(
            "{what} CKA_ALLOWED_MECHANISMS is empty (any mechanism; expected only {only})"
        )),
        AllowedMechanisms::List(m) => failures.push(format!(
            "{what} CKA_ALLOWED_MECHANISMS is {} (expected only {only})",
            mechanism_names(&m)
        )),
        AllowedMechanisms::TooMany => failures.push(format!(
            "{what} CKA_ALLOWED_MECHANISMS lists more than 64 mechanisms (expected only {only})"
        )),
        // A token without the attribute: nothing to restrict with (the template leaves it out).
        AllowedMechanisms::Unsupported => {}
    }
    Ok(())
}

/// `[CKM_A, CKM_B, 0x80000001]`: the names `cryptoki` knows, the others in hex.
pub(crate) fn mechanism_names(m: &[CK_MECHANISM_TYPE]) -> String {
    let names: Vec<String> = m
        .iter()
        .map(|v| MechanismType::try_from(*v).map_or_else(|_| format!("{v:#x}"), |t| t.to_string()))
        .collect();
    format!("[{}]", names.join(", "))
}
