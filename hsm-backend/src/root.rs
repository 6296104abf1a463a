//! The Level 0 root of trust.
//!
//! A root is a pair of token keys sharing one random 16-byte `CKA_ID` (the root id, stored in every
//! sealed blob and record):
//! * the **L0 wrap key**, made by the Security Officer: AES-256, public, `CKA_TRUSTED`, never
//!   extractable or modifiable, KWP wrap/unwrap only, with an unwrap template the token enforces
//!   ([`crate::templates::l0_wrap_key`]);
//! * the **MAC key**, made by the User right after: a private 256-bit generic secret, HMAC-SHA256
//!   sign/verify only, that binds metadata to wrapped keys ([`crate::templates::root_mac_key`]).
//!
//! Roots are never modified after they are made, so a root's place is fixed at birth: its label
//! carries a **generation** (`rootseal-l0/<n>`, `rootseal-mac/<n>`), and the newest complete,
//! hardened root that passes its self-test is the one new blobs are sealed under. Older roots are
//! retiring: blobs under them stay readable until root rotation has moved every record and
//! destroys them. This survives `kill -9` at any point without a registry: a root cut short
//! between its two keys is completed (or, failing its self-test, never used), and a rotation run
//! again finds the same newest root and finishes.
//!
//! Roots made by rootseal 0.1.0 carry the labels `rootseal-l0`/`rootseal-mac` (generation 0) and
//! `rootseal-l0-next`/`rootseal-mac-next` (generation 1); every new root has generation 2 or more.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};

use crate::error::{Error, Result};
use crate::hsm::SessionCtx;
use crate::templates;
use crate::types::RootId;

/// Label prefix of new L0 keys: `rootseal-l0/<generation>`.
const L0_PREFIX: &str = "rootseal-l0/";
/// Label prefix of new MAC keys: `rootseal-mac/<generation>`.
const MAC_PREFIX: &str = "rootseal-mac/";
/// The first generation of a root made by this release (0 and 1 are 0.1.0's labels).
const FIRST_GENERATION: u64 = 2;

/// Handles of a root's two keys in one session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RootHandles {
    pub(crate) wrap: ObjectHandle,
    pub(crate) mac: ObjectHandle,
}

/// The role of a root on the token, derived from its generation and state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootRole {
    /// The root new blobs are sealed under: the newest complete, hardened root that works.
    Current,
    /// A newer root being created (its MAC key is missing, or it does not work yet).
    Next,
    /// An older root: its blobs are readable until root rotation moves them and destroys it.
    Retiring,
}

/// A root found on the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootInfo {
    /// Its id.
    pub id: RootId,
    /// Its generation (0 and 1: made by rootseal 0.1.0).
    pub generation: u64,
    /// Its role.
    pub role: RootRole,
    /// Whether its MAC key is present too.
    pub complete: bool,
    /// Whether its L0 is marked `CKA_TRUSTED` (only the Security Officer can make such a key).
    pub trusted: bool,
}

/// A root's L0 as listed, before roles are assigned.
struct Found {
    id: RootId,
    generation: u64,
    wrap: ObjectHandle,
}

fn generation_of(label: &str) -> Option<u64> {
    match label {
        "rootseal-l0" => Some(0),
        "rootseal-l0-next" => Some(1),
        l => l
            .strip_prefix(L0_PREFIX)?
            .parse()
            .ok()
            .filter(|g| *g >= FIRST_GENERATION),
    }
}

/// Every L0 on the token this session can see, oldest first. An SO session sees only public
/// objects (this release's roots); a User session sees them all.
fn l0_keys(ctx: &mut SessionCtx<'_>) -> Result<Vec<Found>> {
    let handles = ctx.find(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
    ])?;
    let mut out = Vec::new();
    for h in handles {
        let attrs = ctx.attributes(h, &[AttributeType::Label, AttributeType::Id])?;
        let (mut label, mut id) = (None, None);
        for a in attrs {
            match a {
                Attribute::Label(l) => label = String::from_utf8(l).ok(),
                Attribute::Id(i) => id = <[u8; 16]>::try_from(i.as_slice()).ok(),
                _ => {}
            }
        }
        if let (Some(generation), Some(id)) = (label.as_deref().and_then(generation_of), id) {
            out.push(Found {
                id: RootId(id),
                generation,
                wrap: h,
            });
        }
    }
    out.sort_by_key(|f| f.generation);
    Ok(out)
}

/// The generation the next new root gets: above every root this session can see.
pub(crate) fn next_generation(ctx: &mut SessionCtx<'_>) -> Result<u64> {
    Ok(l0_keys(ctx)?.last().map_or(FIRST_GENERATION, |f| {
        (f.generation + 1).max(FIRST_GENERATION)
    }))
}

fn find_all(ctx: &mut SessionCtx<'_>, id: &RootId, key_type: KeyType) -> Result<Vec<ObjectHandle>> {
    ctx.find(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Id(id.0.to_vec()),
    ])
}

/// The one key of `key_type` with root id `id`; two are a token that was tampered with.
fn find_one(
    ctx: &mut SessionCtx<'_>,
    id: &RootId,
    key_type: KeyType,
) -> Result<Option<ObjectHandle>> {
    let found = find_all(ctx, id, key_type)?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        more => Err(Error::TokenState(format!(
            "root {id} has {} keys of type {key_type}; expected one",
            more.len()
        ))),
    }
}

fn is_trusted(ctx: &mut SessionCtx<'_>, wrap: ObjectHandle) -> Result<bool> {
    Ok(ctx
        .attributes(wrap, &[AttributeType::Trusted])?
        .into_iter()
        .any(|a| matches!(a, Attribute::Trusted(true))))
}

/// Makes a new L0 in this session, which must be logged in as the Security Officer, with
/// generation `generation`. Returns its id. Its MAC key is made next, by the User
/// ([`create_mac`]).
pub(crate) fn create_l0(ctx: &mut SessionCtx<'_>, generation: u64) -> Result<RootId> {
    let mut id = [0u8; 16];
    ctx.random(&mut id)?;
    let id = RootId(id);
    let label = format!("{L0_PREFIX}{generation}");
    let unwrap = templates::l0_unwrap_template();
    match ctx.generate_with_unwrap_template(
        &Mechanism::AesKeyGen,
        &templates::l0_wrap_key(&id, &label, true),
        &unwrap,
    ) {
        Ok(_) => {}
        // A token without CKA_ALLOWED_MECHANISMS: the mechanism restriction is left out (the
        // custody check reports it); every other protection stays.
        Err(e) if e.rv() == Some(cryptoki::error::RvError::AttributeTypeInvalid) => {
            ctx.generate_with_unwrap_template(
                &Mechanism::AesKeyGen,
                &templates::l0_wrap_key(&id, &label, false),
                &unwrap,
            )?;
        }
        Err(e) => return Err(e),
    }
    Ok(id)
}

/// Makes the MAC key of root `id` (whose L0 exists) in this User session.
pub(crate) fn create_mac(ctx: &mut SessionCtx<'_>, id: &RootId) -> Result<()> {
    let generation = l0_keys(ctx)?
        .into_iter()
        .find(|f| f.id == *id)
        .map(|f| f.generation)
        .ok_or_else(|| Error::RootMissing(id.to_hex()))?;
    let label = format!("{MAC_PREFIX}{generation}");
    match ctx.generate(
        &Mechanism::GenericSecretKeyGen,
        &templates::root_mac_key(id, &label, true),
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.rv() == Some(cryptoki::error::RvError::AttributeTypeInvalid) => {
            ctx.generate(
                &Mechanism::GenericSecretKeyGen,
                &templates::root_mac_key(id, &label, false),
            )?;
            Ok(())
        }
        Err(e) => Err(e),
    }
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

/// Lists the roots on the token, oldest first, with their roles.
pub(crate) fn list(ctx: &mut SessionCtx<'_>) -> Result<Vec<RootInfo>> {
    let found = l0_keys(ctx)?;
    let mut out = Vec::with_capacity(found.len());
    for f in &found {
        let complete = find_one(ctx, &f.id, KeyType::GENERIC_SECRET)?.is_some();
        let trusted = is_trusted(ctx, f.wrap)?;
        out.push(RootInfo {
            id: f.id,
            generation: f.generation,
            role: RootRole::Retiring,
            complete,
            trusted,
        });
    }
    let current = seal_candidate(ctx, &out);
    let mut past_current = false;
    for r in out.iter_mut().rev() {
        r.role = if Some(r.id) == current {
            past_current = true;
            RootRole::Current
        } else if past_current || (current.is_none() && !r.trusted) {
            RootRole::Retiring
        } else {
            RootRole::Next
        };
    }
    Ok(out)
}

/// The newest complete, trusted root that passes its self-test.
fn seal_candidate(ctx: &mut SessionCtx<'_>, roots: &[RootInfo]) -> Option<RootId> {
    roots
        .iter()
        .rev()
        .filter(|r| r.complete && r.trusted)
        .map(|r| r.id)
        .find(|id| self_test(ctx, id))
}

/// The root new blobs are sealed under ([`RootRole::Current`]), if any.
pub(crate) fn current(ctx: &mut SessionCtx<'_>) -> Result<Option<RootId>> {
    Ok(list(ctx)?
        .into_iter()
        .find(|r| r.role == RootRole::Current)
        .map(|r| r.id))
}

/// Whether the token holds a complete root (of any release): blobs can be read.
pub(crate) fn any_complete(ctx: &mut SessionCtx<'_>) -> Result<bool> {
    Ok(list(ctx)?.iter().any(|r| r.complete))
}

/// Destroys both keys of root `id`, tolerating a half-made or half-destroyed root (a process
/// killed between the two `C_GenerateKey` or `C_DestroyObject` calls): whatever part exists goes.
pub(crate) fn destroy(ctx: &mut SessionCtx<'_>, id: &RootId) -> Result<()> {
    for mac in find_all(ctx, id, KeyType::GENERIC_SECRET)? {
        ctx.destroy(mac)?;
    }
    for wrap in find_all(ctx, id, KeyType::AES)? {
        ctx.destroy(wrap)?;
    }
    ctx.forget_objects();
    Ok(())
}

/// Whether root `id` works: both keys present, the MAC key signs, and the L0 key wraps a
/// throwaway session key that only a trusted key may wrap. A root cut short while being created
/// can have both objects but a key without its value (SoftHSM2 writes an object's attributes in
/// several steps); nothing can have been sealed under such a root, since sealing needs both keys
/// to work.
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

/// The L0 and MAC key of root `id`, for the custody check; either may be missing.
pub(crate) fn keys(
    ctx: &mut SessionCtx<'_>,
    id: &RootId,
) -> Result<(Option<ObjectHandle>, Option<ObjectHandle>)> {
    Ok((
        find_one(ctx, id, KeyType::AES)?,
        find_one(ctx, id, KeyType::GENERIC_SECRET)?,
    ))
}

/// Makes a root with the templates of rootseal 0.1.0 (User-made, private, modifiable, labelled by
/// role), for the tests that migrate such an installation. `next` makes 0.1.0's rotation target.
#[cfg(feature = "test-hooks")]
pub(crate) fn create_previous_release(ctx: &mut SessionCtx<'_>, next: bool) -> Result<RootId> {
    let mut id = [0u8; 16];
    ctx.random(&mut id)?;
    let id = RootId(id);
    let (l0, mac) = if next {
        ("rootseal-l0-next", "rootseal-mac-next")
    } else {
        ("rootseal-l0", "rootseal-mac")
    };
    ctx.generate(
        &Mechanism::AesKeyGen,
        &templates::previous_release::l0_wrap_key(&id, l0),
    )?;
    ctx.generate(
        &Mechanism::GenericSecretKeyGen,
        &templates::previous_release::root_mac_key(&id, mac),
    )?;
    Ok(id)
}

/// The protection attributes of a root's L0 key (or MAC key) as the token reports them.
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

/// Reads the boolean protection attributes of root `id`'s L0 (or MAC key, `mac`).
pub(crate) fn read_attributes(
    ctx: &mut SessionCtx<'_>,
    id: &RootId,
    mac: bool,
) -> Result<RootAttributes> {
    let h = find_handles(ctx, id)?;
    object_attributes(ctx, if mac { h.mac } else { h.wrap })
}

/// Reads the boolean protection attributes of any key object.
pub(crate) fn object_attributes(
    ctx: &mut SessionCtx<'_>,
    h: ObjectHandle,
) -> Result<RootAttributes> {
    let types = [
        AttributeType::Token,
        AttributeType::Private,
        AttributeType::Trusted,
        AttributeType::Sensitive,
        AttributeType::AlwaysSensitive,
        AttributeType::Extractable,
        AttributeType::NeverExtractable,
        AttributeType::Modifiable,
        AttributeType::Copyable,
        AttributeType::Local,
        AttributeType::Wrap,
        AttributeType::Unwrap,
        AttributeType::Encrypt,
        AttributeType::Decrypt,
        AttributeType::Sign,
        AttributeType::Verify,
        AttributeType::Derive,
        AttributeType::WrapWithTrusted,
    ];
    let vals = ctx.bool_attributes(h, &types)?;
    Ok(RootAttributes {
        attributes: vals
            .into_iter()
            .map(|(t, v)| (format!("{t:?}"), v))
            .collect(),
    })
}
