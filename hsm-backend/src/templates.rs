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
//! | new AES-128 L1 (`aes128-gcm96`) | key create, rotate | session object, destroyed at once | [`l1_new_aes`] |
//! | new HMAC L1 (`hmac`, a generic secret) | key create, rotate | session object, destroyed at once | [`l1_hmac_new`] |
//! | HMAC L1 in use | `hmac`, `verify` with `hmac` | session object, cached | [`l1_hmac_in_use`] |
//! | signing private key (`ed25519`, `ecdsa-*`, `rsa-*`) | key create, rotate | private token object, never extractable | [`signing_private`] |
//! | its public key | key create, rotate | private token object | [`signing_public`] |
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
//!
//! Why private keys are token objects and not blobs under L0 (probed on SoftHSM2 2.6.1,
//! a C probe of the unwrap and wrap calls; `docs/api.md`, "Key types"): SoftHSM2 enforces an
//! unwrap template by requiring every one of its attributes in the caller's template, and a
//! private key has no `CKA_WRAP` attribute, so no private key unwraps under L0's template
//! (`CKR_ATTRIBUTE_TYPE_INVALID` with `CKA_WRAP`, `CKR_TEMPLATE_INCONSISTENT` without); and
//! SoftHSM2 cannot wrap an EdDSA private key at all (`CKR_KEY_NOT_WRAPPABLE`). Loosening L0's
//! template would loosen it for every L1. So a private key is generated on the token and never
//! leaves it in any form (`CKA_EXTRACTABLE=false`, `CKA_NEVER_EXTRACTABLE`), bound to its
//! record by `CKA_ID` and the record MAC.

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

/// The attributes every L1 carries, new or in use: a private session object of `key_type`,
/// sensitive, extractable only under a trusted key (so only an L0 can wrap it), never
/// wrap/unwrap/derive. Each L1 template ends with `CKA_MODIFIABLE=false` ([`fixed`]).
fn l1_common(key_type: KeyType) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]
}

/// A new L1 (`CKM_AES_KEY_GEN`, AES-256): [`l1_common`], not copyable, with no usage of its own;
/// wrapped under L0 at once, then destroyed.
pub(crate) fn l1_new() -> Vec<Attribute> {
    l1_new_aes(KEY_LEN)
}

/// A new AES L1 of `len` bytes (16 for `aes128-gcm96`, 32), as [`l1_new`].
pub(crate) fn l1_new_aes(len: u64) -> Vec<Attribute> {
    let mut t = l1_common(KeyType::AES);
    t.extend([
        Attribute::ValueLen(len.into()),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Copyable(false),
    ]);
    fixed(t)
}

/// A new HMAC L1 (`CKM_GENERIC_SECRET_KEY_GEN`, `len` bytes, Vault's `key_size`):
/// [`l1_common`] as a generic secret, not copyable, no usage of its own; wrapped under L0 at
/// once, then destroyed.
pub(crate) fn l1_hmac_new(len: u64) -> Vec<Attribute> {
    let mut t = l1_common(KeyType::GENERIC_SECRET);
    t.extend([
        Attribute::ValueLen(len.into()),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Copyable(false),
    ]);
    fixed(t)
}

/// An HMAC L1 unwrapped from its blob: [`l1_common`] as a generic secret, sign and verify only
/// (`CKM_SHA*_HMAC`), never encrypt or decrypt. Not `CKA_COPYABLE=false`, as [`l1_in_use`].
pub(crate) fn l1_hmac_in_use() -> Vec<Attribute> {
    let mut t = l1_common(KeyType::GENERIC_SECRET);
    t.extend([
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
    ]);
    fixed(t)
}

/// An imported L1 (`C_UnwrapKey` under a BYOK ephemeral key, transit `keys/{name}/import`):
/// [`l1_common`] of `key_type` (AES or generic secret), not copyable, with no usage of its own; wrapped
/// under L0 at once, then destroyed, exactly as a new L1 ([`l1_new_aes`], [`l1_hmac_new`]).
/// (No `CKA_VALUE_LEN`: SoftHSM2 2.6.1 refuses it in an unwrap template; the caller checks the
/// length from the wrapped size.)
pub(crate) fn l1_import(key_type: KeyType) -> Vec<Attribute> {
    let mut t = l1_common(key_type);
    t.extend([
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Copyable(false),
    ]);
    fixed(t)
}

/// The label of the BYOK wrapping key pair (transit `wrapping_key`).
pub(crate) const BYOK_LABEL: &str = "rootseal-byok-wrap";

/// The BYOK wrapping key's private half (RSA-4096, `C_GenerateKeyPair`): a private token object,
/// sensitive, never extractable, copyable or modifiable, **unwrap only** (RSA-OAEP of a client's
/// ephemeral AES key; never decrypt, so no plaintext ever comes out of it), never sign or derive.
pub(crate) fn byok_private(id: &[u8; 16]) -> Vec<Attribute> {
    fixed(vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(BYOK_LABEL.as_bytes().to_vec()),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::SignRecover(false),
        Attribute::Derive(false),
        Attribute::Copyable(false),
    ])
}

/// The public half of [`byok_private`]: RSA-4096, e = 65537, a token object (the public key is
/// for anyone), wrap only.
pub(crate) fn byok_public(id: &[u8; 16]) -> Vec<Attribute> {
    fixed(vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(BYOK_LABEL.as_bytes().to_vec()),
        Attribute::ModulusBits(4096.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
        Attribute::Wrap(true),
        Attribute::Encrypt(false),
        Attribute::Verify(false),
        Attribute::VerifyRecover(false),
        Attribute::Derive(false),
        Attribute::Copyable(false),
    ])
}

/// A client's ephemeral AES-256 key, unwrapped under [`byok_private`]: a session object,
/// sensitive, never extractable, unwrap only (the KWP-wrapped key that follows it), destroyed in
/// the same HSM job.
pub(crate) fn byok_ephemeral() -> Vec<Attribute> {
    fixed(vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Wrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ])
}

/// What a signing key pair is: its PKCS#11 key type and its generation attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PairKind {
    /// Ed25519 (`CKM_EC_EDWARDS_KEY_PAIR_GEN`).
    Ed25519,
    /// ECDSA over the curve with this DER-encoded OID (`CKM_EC_KEY_PAIR_GEN`).
    Ec(&'static [u8]),
    /// RSA with this modulus size in bits (`CKM_RSA_PKCS_KEY_PAIR_GEN`, e = 65537).
    Rsa(u64),
}

impl PairKind {
    fn key_type(self) -> KeyType {
        match self {
            PairKind::Ed25519 => KeyType::EC_EDWARDS,
            PairKind::Ec(_) => KeyType::EC,
            PairKind::Rsa(_) => KeyType::RSA,
        }
    }
}

/// The id and label every signing key object carries: `CKA_ID` (16 random bytes from the HSM,
/// named in the key's record) and a label naming the key and version.
fn pair_common(kind: PairKind, id: &[u8; 16], label: &str) -> Vec<Attribute> {
    vec![
        Attribute::KeyType(kind.key_type()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Derive(false),
    ]
}

/// A signing private key (`ed25519`, `ecdsa-*`, `rsa-*`), made on the token by
/// `C_GenerateKeyPair`: a private token object, sensitive, never extractable (not even under a
/// trusted key), never copyable or modifiable, sign only (RSA: sign and decrypt, for OAEP),
/// never unwrap, derive or sign-recover.
pub(crate) fn signing_private(kind: PairKind, id: &[u8; 16], label: &str) -> Vec<Attribute> {
    let mut t = pair_common(kind, id, label);
    t.extend([
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::SignRecover(false),
        Attribute::Decrypt(matches!(kind, PairKind::Rsa(_))),
        Attribute::Unwrap(false),
        Attribute::Copyable(false),
    ]);
    fixed(t)
}

/// The public half of [`signing_private`]: a private token object (its name is not for anyone
/// without the PIN), verify only (RSA: verify and encrypt), never wrap, derive or
/// verify-recover; with the curve or the modulus size.
pub(crate) fn signing_public(kind: PairKind, id: &[u8; 16], label: &str) -> Vec<Attribute> {
    let mut t = pair_common(kind, id, label);
    t.extend([
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Verify(true),
        Attribute::VerifyRecover(false),
        Attribute::Encrypt(matches!(kind, PairKind::Rsa(_))),
        Attribute::Wrap(false),
        Attribute::Copyable(false),
    ]);
    match kind {
        // The curve by name, as SoftHSM2 and PKCS#11 v3.0 accept it: PrintableString "edwards25519".
        PairKind::Ed25519 => t.push(Attribute::EcParams(ED25519_PARAMS.to_vec())),
        PairKind::Ec(oid) => t.push(Attribute::EcParams(oid.to_vec())),
        PairKind::Rsa(bits) => t.extend([
            Attribute::ModulusBits(bits.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
        ]),
    }
    fixed(t)
}

/// `CKA_EC_PARAMS` of Ed25519: the DER PrintableString `edwards25519`.
const ED25519_PARAMS: &[u8] = b"\x13\x0cedwards25519";

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
    let mut t = l1_common(KeyType::AES);
    t.extend([
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ]);
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

/// `CKA_EC_PARAMS` of an Ed25519 key: the DER OID 1.3.101.112 (RFC 8410), the form SoftHSM2 2.6.1
/// and PKCS#11 3.0 tokens accept.
pub(crate) const ED25519_EC_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// An operator's signing key pair (`CKM_EC_EDWARDS_KEY_PAIR_GEN`, Ed25519), made on the
/// operator's **own** token by `rootseal operator key`: the private half is a private token
/// object, sensitive, never extractable, never modifiable or copyable, sign only; the public half
/// is a public token object, verify only. Returns (public template, private template).
pub(crate) fn operator_signing_key(label: &str, id: &[u8]) -> (Vec<Attribute>, Vec<Attribute>) {
    let public = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::EcParams(ED25519_EC_PARAMS.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
    ];
    let private = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Copyable(false),
        Attribute::Modifiable(false),
    ];
    (public, private)
}

/// The base of the custody enforcement check's throwaway keys (`custody_enforced.rs`): a
/// sensitive private session object (`CKA_TOKEN` false), never stored, destroyed after the check.
fn custody_probe(key_type: KeyType, usage: &[Attribute]) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::ValueLen(32.into()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
    ];
    t.extend_from_slice(usage);
    t
}

/// The key L0 is asked to wrap with a mechanism it must refuse: extractable (so only L0's
/// mechanism restriction can refuse it), sensitive, a session object with no other use. Never an L1.
pub(crate) fn custody_probe_key() -> Vec<Attribute> {
    custody_probe(
        KeyType::AES,
        &[
            Attribute::Extractable(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ],
    )
}

/// An unrestricted AES session wrapping key: the control that shows the refused mechanism
/// works on this token.
pub(crate) fn custody_control_wrapper() -> Vec<Attribute> {
    custody_probe(
        KeyType::AES,
        &[
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(false),
        ],
    )
}

/// An unrestricted generic-secret session signing key: the control for the HMAC probe.
pub(crate) fn custody_control_hmac() -> Vec<Attribute> {
    custody_probe(
        KeyType::GENERIC_SECRET,
        &[
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(false),
        ],
    )
}
