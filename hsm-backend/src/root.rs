//! The Level 0 root of trust.
//!
//! A root is a pair of token keys sharing one random 16-byte `CKA_ID` (the root id, stored in every
//! sealed blob):
//! * the **L0 wrap key**: AES-256, `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not extractable,
//!   `CKA_WRAP`/`CKA_UNWRAP` only (no encrypt, decrypt, sign, verify, derive);
//! * the **MAC key**: a 256-bit generic secret, same protections, `CKA_SIGN`/`CKA_VERIFY` only,
//!   that computes the HMAC-SHA256 binding a blob's metadata to its wrapped key.
//!
//! Labels say the role: `rootseal-l0`/`rootseal-mac` for the active root, `…-next` for the one a
//! root rotation is moving to. Roots are always told apart by id, never by label order.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};

use crate::error::{Error, Result};
use crate::hsm::SessionCtx;
use crate::templates;
use crate::types::RootId;

/// Handles of a root's two keys in one session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RootHandles {
    pub(crate) wrap: ObjectHandle,
    pub(crate) mac: ObjectHandle,
}

/// The role of a root, from its label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootRole {
    /// Seals new blobs.
    Active,
    /// The target of an unfinished root rotation.
    Next,
}

impl RootRole {
    fn wrap_label(self) -> &'static str {
        match self {
            RootRole::Active => "rootseal-l0",
            RootRole::Next => "rootseal-l0-next",
        }
    }
    fn mac_label(self) -> &'static str {
        match self {
            RootRole::Active => "rootseal-mac",
            RootRole::Next => "rootseal-mac-next",
        }
    }
}

/// A root found on the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootInfo {
    /// Its id.
    pub id: RootId,
    /// Its role.
    pub role: RootRole,
    /// Whether its MAC key is present too.
    pub complete: bool,
}

/// Creates a new root (both keys) with role `role`. Returns its id.
pub(crate) fn create(ctx: &mut SessionCtx<'_>, role: RootRole) -> Result<RootId> {
    let mut id = [0u8; 16];
    ctx.random(&mut id)?;
    let id = RootId(id);
    ctx.generate(
        &Mechanism::AesKeyGen,
        &templates::l0_wrap_key(&id, role.wrap_label()),
    )?;
    ctx.generate(
        &Mechanism::GenericSecretKeyGen,
        &templates::root_mac_key(&id, role.mac_label()),
    )?;
    Ok(id)
}

fn find_one(
    ctx: &mut SessionCtx<'_>,
    id: &RootId,
    key_type: KeyType,
) -> Result<Option<ObjectHandle>> {
    let found = ctx.find(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Id(id.0.to_vec()),
    ])?;
    Ok(found.first().copied())
}

/// Handle-cache kinds of the two root keys.
const L0_KIND: &str = "root-l0";
const MAC_KIND: &str = "root-mac";

/// The handles of root `id`'s two keys: cached for this session, found by `CKA_ID` on a miss.
pub(crate) fn handles(ctx: &mut SessionCtx<'_>, id: &RootId) -> Result<RootHandles> {
    if let (Some(wrap), Some(mac)) = (
        ctx.cached_object(&(L0_KIND, id.0)),
        ctx.cached_object(&(MAC_KIND, id.0)),
    ) {
        return Ok(RootHandles { wrap, mac });
    }
    let h = find_handles(ctx, id)?;
    ctx.remember_object((L0_KIND, id.0), h.wrap);
    ctx.remember_object((MAC_KIND, id.0), h.mac);
    Ok(h)
}

fn find_handles(ctx: &mut SessionCtx<'_>, id: &RootId) -> Result<RootHandles> {
    let wrap = find_one(ctx, id, KeyType::AES)?;
    let mac = find_one(ctx, id, KeyType::GENERIC_SECRET)?;
    match (wrap, mac) {
        (Some(wrap), Some(mac)) => Ok(RootHandles { wrap, mac }),
        _ => Err(Error::RootMissing(id.to_hex())),
    }
}

/// Lists the roots on the token, by label role.
pub(crate) fn list(ctx: &mut SessionCtx<'_>) -> Result<Vec<RootInfo>> {
    let mut out: Vec<RootInfo> = Vec::new();
    for role in [RootRole::Active, RootRole::Next] {
        let wraps = ctx.find(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Label(role.wrap_label().as_bytes().to_vec()),
        ])?;
        for h in wraps {
            let attrs = ctx.attributes(h, &[AttributeType::Id])?;
            let Some(Attribute::Id(raw)) = attrs.into_iter().next() else {
                continue;
            };
            let Ok(raw) = <[u8; 16]>::try_from(raw.as_slice()) else {
                continue;
            };
            let id = RootId(raw);
            let complete = find_one(ctx, &id, KeyType::GENERIC_SECRET)?.is_some();
            out.push(RootInfo { id, role, complete });
        }
    }
    Ok(out)
}

/// The root new blobs are sealed under: the one labelled active, or else a lone `next` (a
/// rotation that destroyed the old root but crashed before relabelling).
///
/// # Errors
/// `Ok(None)` when there is no root; [`Error::Blob`] when the token holds two active roots.
pub(crate) fn active(ctx: &mut SessionCtx<'_>) -> Result<Option<RootId>> {
    let roots = list(ctx)?;
    let actives: Vec<&RootInfo> = roots
        .iter()
        .filter(|r| r.role == RootRole::Active)
        .collect();
    match actives.as_slice() {
        [one] => return Ok(Some(one.id)),
        [] => {}
        _ => {
            return Err(Error::TokenState(format!(
                "token holds {} active roots; expected one",
                actives.len()
            )))
        }
    }
    Ok(roots
        .iter()
        .find(|r| r.role == RootRole::Next)
        .map(|r| r.id))
}

/// Sets the labels of root `id` to `role`.
pub(crate) fn relabel(ctx: &mut SessionCtx<'_>, id: &RootId, role: RootRole) -> Result<()> {
    let h = find_handles(ctx, id)?;
    ctx.set_attributes(
        h.wrap,
        &[Attribute::Label(role.wrap_label().as_bytes().to_vec())],
    )?;
    ctx.set_attributes(
        h.mac,
        &[Attribute::Label(role.mac_label().as_bytes().to_vec())],
    )?;
    ctx.forget_objects();
    Ok(())
}

/// Destroys both keys of root `id`, tolerating a half-made or half-destroyed root (a process
/// killed between the two `C_GenerateKey` or `C_DestroyObject` calls): whatever part exists goes.
pub(crate) fn destroy(ctx: &mut SessionCtx<'_>, id: &RootId) -> Result<()> {
    if let Some(mac) = find_one(ctx, id, KeyType::GENERIC_SECRET)? {
        ctx.destroy(mac)?;
    }
    if let Some(wrap) = find_one(ctx, id, KeyType::AES)? {
        ctx.destroy(wrap)?;
    }
    ctx.forget_objects();
    Ok(())
}

/// Whether root `id` works: both keys present, the MAC key signs, and the L0 key wraps a
/// throwaway session key. A root cut short while being created can have both objects but a key
/// without its value (SoftHSM2 writes an object's attributes in several steps); nothing can have
/// been sealed under such a root, since sealing needs both keys to work.
pub(crate) fn self_test(ctx: &mut SessionCtx<'_>, id: &RootId) -> bool {
    let Ok(h) = find_handles(ctx, id) else {
        return false;
    };
    if ctx.hmac(h.mac, b"rootseal root self-test").is_err() {
        return false;
    }
    let Ok(tmp) = ctx.generate(&Mechanism::AesKeyGen, &templates::self_test_key()) else {
        return false;
    };
    let wrapped = ctx.wrap_kwp(h.wrap, tmp);
    ctx.destroy_transient(tmp, "root self-test key");
    ctx.forget_objects();
    wrapped.is_ok()
}

/// The protection attributes of a root's L0 key as the token reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootAttributes {
    /// `(attribute name, value)` pairs read back from the token.
    pub attributes: Vec<(String, bool)>,
}

impl RootAttributes {
    /// The value of attribute `name` (e.g. `"NeverExtractable"`).
    pub fn get(&self, name: &str) -> Option<bool> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

pub(crate) fn read_attributes(
    ctx: &mut SessionCtx<'_>,
    id: &RootId,
    mac: bool,
) -> Result<RootAttributes> {
    let h = find_handles(ctx, id)?;
    let types = [
        AttributeType::Token,
        AttributeType::Private,
        AttributeType::Sensitive,
        AttributeType::AlwaysSensitive,
        AttributeType::Extractable,
        AttributeType::NeverExtractable,
        AttributeType::Local,
        AttributeType::Wrap,
        AttributeType::Unwrap,
        AttributeType::Encrypt,
        AttributeType::Decrypt,
        AttributeType::Sign,
        AttributeType::Verify,
        AttributeType::Derive,
    ];
    let vals = ctx.bool_attributes(if mac { h.mac } else { h.wrap }, &types)?;
    Ok(RootAttributes {
        attributes: vals
            .into_iter()
            .map(|(t, v)| (format!("{t:?}"), v))
            .collect(),
    })
}
