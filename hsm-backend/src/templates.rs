//! Every key template rootseal creates, one function per key class.
//!
//! A reviewer answers "which attributes does each key get?" from this file alone; the SoftHSM2
//! read-back test (`hsm-backend/tests/custody.rs`) checks what the token reports for each class,
//! and the custody check (`custody.rs`) refuses a root whose keys do not carry these attributes.
//!
//! | class | made by | where | function |
//! |---|---|---|---|
//! | L0 wrap key | the Security Officer (`rootseal init`, `root rotate`) | public token object, `CKA_TRUSTED` | [`l0_wrap_key`] + [`l0_unwrap_template`] |
//! | root MAC key | the User, right after its L0 | private token object | [`root_mac_key`] |
//! | new L1 (only to be wrapped under L0 once) | key create, rotate | session object, destroyed at once | [`l1_new`] |
//! | L1 in use (unwrapped from its blob) | every use of a key, root rotation | session object, cached | [`l1_in_use`] |
//! | root self-test key | root self-test | session object, destroyed at once | [`self_test_key`] |
//! | store registry entry | every keyring, once per store | private token data object | [`store_registry_entry`] |
//! | audit signing key (Ed25519 pair) | the Security Officer, with the root (`init`, `root rotate`) | public token objects | [`audit_signing_key`] |
//!
//! Why the L0 looks like this (probed on SoftHSM2 2.6.1, `shared/probes/`): only the SO can make a
//! `CKA_TRUSTED` key, and the SO cannot make private objects, so L0 is public. Its
//! `CKA_UNWRAP_TEMPLATE` is enforced by the token: whatever unwraps a blob under L0 — rootseal or a
//! holder of the User PIN — gets a sensitive, private session key that can be wrapped only by a
//! trusted key (another L0), never read, never derived from, never used to wrap. The L1
//! templates carry exactly those attributes, so no code path asks the token for anything else.

use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, KeyType, ObjectClass};

use crate::types::RootId;

/// Length in bytes of every AES and MAC key rootseal makes.
const KEY_LEN: u64 = 32;

/// `CKA_APPLICATION` of rootseal's data objects.
pub(crate) const APPLICATION: &str = "rootseal";

/// The L0 wrap key (`CKM_AES_KEY_GEN`, made in an SO session): AES-256, a public token object
/// marked trusted, sensitive, never extractable, never modifiable or copyable, wrap and unwrap
/// only, with KWP as its only mechanism when `allowed_mechanisms` (where the token supports
/// `CKA_ALLOWED_MECHANISMS`). Its unwrap template is [`l0_unwrap_template`].
pub(crate) fn l0_wrap_key(id: &RootId, label: &str, allowed_mechanisms: bool) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(KEY_LEN.into()),
        Attribute::Token(true),
        // The SO cannot create private objects; the value is still sensitive and never leaves.
        Attribute::Private(false),
        Attribute::Trusted(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Id(id.0.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ];
    if allowed_mechanisms {
        t.push(Attribute::AllowedMechanisms(vec![
            MechanismType::AES_KEY_WRAP_PAD,
        ]));
    }
    t
}

/// The `CKA_UNWRAP_TEMPLATE` of every L0: what the token forces on any key unwrapped under it.
/// Sensitive (never readable), wrappable only under a trusted key (`CKA_WRAP_WITH_TRUSTED`),
/// private (so a session that is not logged in cannot unwrap at all), a session object (no
/// persistent copy), no derivation, no wrapping or unwrapping of other keys.
///
/// `CKA_MODIFIABLE=false` and `CKA_COPYABLE=false` cannot be forced here: SoftHSM2 2.6.1 refuses
/// an unwrap under a key whose unwrap template names them (`CKR_ATTRIBUTE_READ_ONLY`). rootseal's
/// own L1 objects carry both ([`l1_in_use`]); an unwrap by someone else may make a modifiable
/// copy, whose usage flags it can then switch on, but never its sensitivity or its
/// wrap-with-trusted (the token refuses both changes): a usable key while the PIN is held, never a
/// readable one (`hsm-backend/tests/custody.rs`).
pub(crate) fn l0_unwrap_template() -> Vec<Attribute> {
    vec![
        Attribute::Sensitive(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Private(true),
        Attribute::Token(false),
        Attribute::Derive(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ]
}

/// The root MAC key (`CKM_GENERIC_SECRET_KEY_GEN`, made in a User session right after its L0): a
/// 256-bit generic secret for HMAC-SHA256, a private token object, sensitive, never extractable,
/// modifiable or copyable, sign and verify only. It binds a blob's or a record's metadata to its
/// wrapped keys.
pub(crate) fn root_mac_key(id: &RootId, label: &str, allowed_mechanisms: bool) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen(KEY_LEN.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Id(id.0.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Derive(false),
    ];
    if allowed_mechanisms {
        t.push(Attribute::AllowedMechanisms(vec![
            MechanismType::SHA256_HMAC,
        ]));
    }
    t
}

/// The attributes every L1 carries, new or in use: a private session object, sensitive,
/// extractable only under a trusted key (so only an L0 can wrap it), never wrap/unwrap/sign/
/// verify/derive. Each L1 template ends with `CKA_MODIFIABLE=false` ([`fixed`]).
fn l1_common() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

/// A new L1 (`CKM_AES_KEY_GEN`): [`l1_common`], not copyable, with no usage of its own; wrapped
/// under L0 at once, then destroyed.
pub(crate) fn l1_new() -> Vec<Attribute> {
    let mut t = l1_common();
    t.extend([
        Attribute::ValueLen(KEY_LEN.into()),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Copyable(false),
    ]);
    fixed(t)
}

/// Ends `t` with `CKA_MODIFIABLE=false`. Last, because SoftHSM2 2.6.1 applies the attributes of a
/// `C_UnwrapKey` template in order and refuses any that comes after `CKA_MODIFIABLE=false`
/// (`CKR_ATTRIBUTE_READ_ONLY`).
fn fixed(mut t: Vec<Attribute>) -> Vec<Attribute> {
    t.push(Attribute::Modifiable(false));
    t
}

/// An L1 unwrapped from its blob (`C_UnwrapKey` template, consistent with
/// [`l0_unwrap_template`]): [`l1_common`], usable for AES-GCM encrypt and decrypt. Root rotation
/// wraps such a key under the new (trusted) L0; nothing else can wrap it.
///
/// Not `CKA_COPYABLE=false` as well: SoftHSM2 2.6.1 refuses an unwrap that sets both
/// `CKA_COPYABLE` and `CKA_MODIFIABLE=false` (`CKR_ATTRIBUTE_READ_ONLY`), in either order.
/// A copy could not loosen anything that matters: the token refuses a copy that is
/// non-sensitive or wrappable under an untrusted key, and the object is visible to this process
/// only.
pub(crate) fn l1_in_use() -> Vec<Attribute> {
    let mut t = l1_common();
    t.extend([Attribute::Encrypt(true), Attribute::Decrypt(true)]);
    fixed(t)
}

/// The throwaway key a root self-test wraps under L0 to prove the L0 works: a session object,
/// sensitive, wrappable only under a trusted key, destroyed at once.
pub(crate) fn self_test_key() -> Vec<Attribute> {
    l1_new()
}

/// A store registry entry: a private token data object naming one store (`locator`) that holds
/// records sealed under this token's roots, so that root rotation finds every record.
pub(crate) fn store_registry_entry(label: &str, locator: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Application(APPLICATION.as_bytes().to_vec()),
        Attribute::Value(locator.as_bytes().to_vec()),
    ]
}

/// DER of the curve OID id-Ed25519 (1.3.101.112, RFC 8410), the `CKA_EC_PARAMS` of the audit key.
pub(crate) const ED25519_OID_DER: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// The audit signing key `rootseal-audit` (`CKM_EC_EDWARDS_KEY_PAIR_GEN`, made in an SO session):
/// an Ed25519 pair that signs the audit log's checkpoints with `CKM_EDDSA`. Returns the public
/// and the private template.
///
/// The private key is a token object, sensitive, never extractable, never modifiable or
/// copyable, sign only (with `CKM_EDDSA` as its only mechanism when `allowed_mechanisms`). Like
/// the L0 it is public (`CKA_PRIVATE=false`: the SO cannot make private objects), so the SO made
/// it and nobody can change it afterwards; a holder of the User PIN can use it to sign, never
/// read it. The public key is a public token object, verify only, also never modifiable.
pub(crate) fn audit_signing_key(
    id: &[u8],
    label: &str,
    allowed_mechanisms: bool,
) -> (Vec<Attribute>, Vec<Attribute>) {
    let public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Modifiable(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::EcParams(ED25519_OID_DER.to_vec()),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ];
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    if allowed_mechanisms {
        private.push(Attribute::AllowedMechanisms(vec![MechanismType::EDDSA]));
    }
    (public, private)
}

/// The templates of the previous release (0.1.0), kept verbatim for the tests that migrate an
/// installation it made (`test-hooks` only: no release build can make these keys).
#[cfg(feature = "test-hooks")]
pub(crate) mod previous_release {
    use cryptoki::object::{Attribute, KeyType, ObjectClass};

    use crate::types::RootId;

    fn root_common(id: &RootId, label: &str) -> Vec<Attribute> {
        vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(true),
            Attribute::Id(id.0.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Derive(false),
        ]
    }

    /// 0.1.0's L0: private, modifiable, untrusted, no unwrap template.
    pub(crate) fn l0_wrap_key(id: &RootId, label: &str) -> Vec<Attribute> {
        let mut t = root_common(id, label);
        t.extend([
            Attribute::ValueLen(32.into()),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
        ]);
        t
    }

    /// 0.1.0's MAC key: modifiable.
    pub(crate) fn root_mac_key(id: &RootId, label: &str) -> Vec<Attribute> {
        let mut t = root_common(id, label);
        t.extend([
            Attribute::ValueLen(32.into()),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ]);
        t
    }

    /// 0.1.0's new L1: extractable under any key.
    pub(crate) fn l1_new() -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ]
    }
}
