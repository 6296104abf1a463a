//! Every key template rootseal creates, one function per key class.
//!
//! A reviewer answers "which attributes does each key get?" from this file alone; the SoftHSM2
//! attribute read-back tests (`hsm-backend/tests/keyring.rs`) check what the token reports for
//! each class against these templates.
//!
//! | class | made by | where | function |
//! |---|---|---|---|
//! | L0 wrap key | `rootseal init`, root rotation | token object | [`l0_wrap_key`] |
//! | root MAC key | same, with the L0 | token object | [`root_mac_key`] |
//! | new L1 (only to be wrapped under L0 once) | key create, rotate | session object, destroyed at once | [`l1_new`] |
//! | L1 in use (unwrapped from its blob) | every use of a key | session object, cached | [`l1_in_use`] |
//! | root self-test key | root self-test | session object, destroyed at once | [`self_test_key`] |

use cryptoki::object::{Attribute, KeyType, ObjectClass};

use crate::types::RootId;

/// Length in bytes of every AES and MAC key rootseal makes.
const KEY_LEN: u64 = 32;

/// Attributes both root keys share: a private token object, sensitive, never extractable, tied to
/// the root by `CKA_ID`, never usable to derive.
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

/// The L0 wrap key (`CKM_AES_KEY_GEN`): AES-256, wrap and unwrap only.
pub(crate) fn l0_wrap_key(id: &RootId, label: &str) -> Vec<Attribute> {
    let mut t = root_common(id, label);
    t.extend([
        Attribute::ValueLen(KEY_LEN.into()),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
    ]);
    t
}

/// The root MAC key (`CKM_GENERIC_SECRET_KEY_GEN`): a 256-bit generic secret for HMAC-SHA256,
/// sign and verify only. It binds a blob's or a record's metadata to its wrapped keys.
pub(crate) fn root_mac_key(id: &RootId, label: &str) -> Vec<Attribute> {
    let mut t = root_common(id, label);
    t.extend([
        Attribute::ValueLen(KEY_LEN.into()),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
    ]);
    t
}

/// A new L1 (`CKM_AES_KEY_GEN`): a session object, sensitive, extractable only so that it can be
/// wrapped under L0 once; no usage of its own. Destroyed right after the wrap.
pub(crate) fn l1_new() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(KEY_LEN.into()),
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

/// An L1 unwrapped from its blob for use (`C_UnwrapKey` template): a session object, sensitive,
/// usable only for AES-GCM encrypt/decrypt, never wrap/unwrap/sign/derive; non-extractable unless
/// `extractable` (root rotation, which re-wraps it under the new L0 and destroys it).
pub(crate) fn l1_in_use(extractable: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

/// The throwaway key a root self-test wraps under L0 to prove the L0 works: a session object,
/// sensitive, extractable (to be wrapped), destroyed at once.
pub(crate) fn self_test_key() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(KEY_LEN.into()),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
    ]
}
