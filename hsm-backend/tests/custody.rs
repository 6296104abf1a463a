//! Custody against real SoftHSM2: no plaintext L1 ever, even for a holder of the User PIN.
//!
//! * every key class reads back as `templates.rs` says;
//! * an attacker in **another process** with the User PIN (what a compromised rootseal host has)
//!   tries every PKCS#11 path to a readable L1 or to a weaker root, and every one fails;
//! * an installation made by rootseal 0.1.0 (weak root) is reported weak, keeps serving its keys,
//!   refuses new ones, and `rotate_root` moves it to a hardened root with nothing lost;
//! * client AAD cannot reach the AAD domain of rootseal's own batch keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rootseal_hsm::{
    Custody, DecryptItem, EncryptItem, FileStore, KekStore, Keyring, KeyringError, RootRole, Sealed,
};
use rootseal_testkit::{Fixture, TestToken};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

fn item(p: &[u8], aad: &[u8]) -> EncryptItem {
    EncryptItem {
        plaintext: Zeroizing::new(p.to_vec()),
        aad: aad.to_vec(),
    }
}

async fn enc(k: &Keyring, name: &str, p: &[u8], aad: &[u8]) -> Result<Sealed, KeyringError> {
    k.encrypt(name, None, vec![item(p, aad)], true)
        .await?
        .remove(0)
}

async fn dec(k: &Keyring, name: &str, s: &Sealed, aad: &[u8]) -> Result<Vec<u8>, KeyringError> {
    k.decrypt(
        name,
        vec![DecryptItem {
            sealed: s.clone(),
            aad: aad.to_vec(),
        }],
    )
    .await?
    .remove(0)
    .map(|z| z.to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_key_class_reads_back_as_the_templates_say() {
    let f = Fixture::new().await;
    enc(&f.keyring, "app", b"x", b"").await.unwrap();
    let st = rootseal_hsm::root_status(&f.hsm).await.unwrap();
    assert_eq!(st.roots.len(), 1);
    let root = &st.roots[0];
    assert!(
        root.complete && root.trusted && root.role == RootRole::Current,
        "{root:?}"
    );
    assert_eq!(
        st.custody.verdict(),
        Custody::Hardened,
        "{:?}",
        st.custody.failures()
    );
    assert!(st.custody.failures().is_empty());
    assert_eq!(f.keyring.custody().verdict(), Custody::Hardened);

    let l0 = rootseal_hsm::root_attributes(&f.hsm, root.id, false)
        .await
        .unwrap();
    for (name, want) in [
        ("Token", true),
        ("Private", false),
        ("Trusted", true),
        ("Sensitive", true),
        ("AlwaysSensitive", true),
        ("Extractable", false),
        ("NeverExtractable", true),
        ("Modifiable", false),
        ("Copyable", false),
        ("Local", true),
        ("Wrap", true),
        ("Unwrap", true),
        ("Encrypt", false),
        ("Decrypt", false),
        ("Sign", false),
        ("Verify", false),
        ("Derive", false),
    ] {
        assert_eq!(l0.get(name), Some(want), "L0 {name}: {l0:?}");
    }
    let mac = rootseal_hsm::root_attributes(&f.hsm, root.id, true)
        .await
        .unwrap();
    for (name, want) in [
        ("Token", true),
        ("Private", true),
        ("Sensitive", true),
        ("AlwaysSensitive", true),
        ("Extractable", false),
        ("NeverExtractable", true),
        ("Modifiable", false),
        ("Copyable", false),
        ("Sign", true),
        ("Verify", true),
        ("Wrap", false),
        ("Unwrap", false),
        ("Encrypt", false),
        ("Decrypt", false),
        ("Derive", false),
    ] {
        assert_eq!(mac.get(name), Some(want), "MAC key {name}: {mac:?}");
    }
    let classes = f.keyring.testing_l1_class_attributes("app").await.unwrap();
    assert_eq!(classes.len(), 3);
    for (class, a) in &classes {
        for (name, want) in [
            ("Token", false),
            ("Private", true),
            ("Sensitive", true),
            ("Extractable", true),
            ("WrapWithTrusted", true),
            ("Modifiable", false),
            ("Wrap", false),
            ("Unwrap", false),
            ("Sign", false),
            ("Verify", false),
            ("Derive", false),
        ] {
            assert_eq!(a.get(name), Some(want), "{class} {name}: {a:?}");
        }
        let usable = *class == "l1_in_use";
        assert_eq!(a.get("Copyable"), Some(usable), "{class}: {a:?}");
        assert_eq!(a.get("Encrypt"), Some(usable), "{class}: {a:?}");
        assert_eq!(a.get("Decrypt"), Some(usable), "{class}: {a:?}");
    }
    // init again: reports the existing root, changes nothing.
    drop(f.keyring);
    drop(f.hsm);
    assert_eq!(
        f.token.init_root().await,
        rootseal_hsm::InitOutcome::Exists(root.id)
    );
}

// ---------------------------------------------------------------------------------------------
// The attacker: another process, with the module, the token label and the User PIN.

/// What the parent hands the attacker process.
#[derive(Serialize, Deserialize)]
struct AttackInput {
    module: String,
    label: String,
    pin: String,
    /// Every stored sealed blob, base64, as read from the store's files.
    blobs: Vec<String>,
}

/// One attempt and how it ended (`"OK"` or the PKCS#11 error).
#[derive(Serialize, Deserialize, Debug)]
struct Attempt {
    name: String,
    must_fail: bool,
    outcome: String,
}

/// The L0 id and wrapped key of a sealed blob, parsed here independently of rootseal's code
/// (`RSBL | u16 version | u32 header_len | header | u32 wrapped_len | wrapped | mac`).
fn parse_blob(raw: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(&raw[..4], b"RSBL");
    let hl = u32::from_be_bytes(raw[6..10].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&raw[10..10 + hl]).unwrap();
    let at = 10 + hl;
    let wl = u32::from_be_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
    let wrapped = raw[at + 4..at + 4 + wl].to_vec();
    let id = header["root_id"].as_str().unwrap();
    let id = (0..16)
        .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    (id, wrapped)
}

/// `"OK"`, or the `CKR_*` name of the refusal.
fn outcome<T>(r: cryptoki::error::Result<T>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => format!("{rv:?}"),
        Err(e) => e.to_string(),
    }
}

/// An unwrap template: the one rootseal uses (which L0's unwrap template allows), with `change`
/// applied.
fn l1_template(change: &[Attribute]) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        // Last: SoftHSM2 refuses any attribute after it in an unwrap template.
        Attribute::Modifiable(false),
    ];
    for c in change {
        if let Some(a) = t
            .iter_mut()
            .find(|a| a.attribute_type() == c.attribute_type())
        {
            *a = c.clone();
        } else {
            t.insert(0, c.clone());
        }
    }
    t
}

fn find_key(s: &Session, id: &[u8], key_type: KeyType) -> Option<ObjectHandle> {
    s.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Id(id.to_vec()),
    ])
    .unwrap()
    .first()
    .copied()
}

/// Every PKCS#11 path an attacker with the PIN has to a plaintext L1 or a weaker root. Runs in
/// the child process (see `a_user_pin_holder_in_another_process_cannot_extract_any_l1`).
fn attack(input: &AttackInput) -> Vec<Attempt> {
    let mut out = Vec::new();
    let mut note = |name: String, must_fail: bool, outcome: String| {
        out.push(Attempt {
            name,
            must_fail,
            outcome,
        })
    };
    let p11 = Pkcs11::new(&input.module).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label().trim_end() == input.label)
        .unwrap();
    let s = p11.open_rw_session(slot).unwrap();
    let kwp = Mechanism::AesKeyWrapPad;
    let parsed: Vec<(Vec<u8>, Vec<u8>)> = input
        .blobs
        .iter()
        .map(|b| parse_blob(&B64.decode(b).unwrap()))
        .collect();
    let (root_id, first_wrapped) = parsed[0].clone();

    // (d) Not logged in: the L0 is public, so it is visible, but nothing unwraps under it.
    let l0 = find_key(&s, &root_id, KeyType::AES).expect("the public L0 is visible");
    note(
        "not logged in: unwrap with rootseal's template".into(),
        true,
        outcome(s.unwrap_key(&kwp, l0, &first_wrapped, &l1_template(&[]))),
    );
    note(
        "not logged in: unwrap into a public key".into(),
        true,
        outcome(s.unwrap_key(
            &kwp,
            l0,
            &first_wrapped,
            &l1_template(&[Attribute::Private(false)]),
        )),
    );
    note(
        "not logged in: the MAC key is not even visible".into(),
        true,
        match find_key(&s, &root_id, KeyType::GENERIC_SECRET) {
            Some(_) => "OK".into(),
            None => "not found".into(),
        },
    );

    s.login(UserType::User, Some(&AuthPin::from(input.pin.clone())))
        .unwrap();
    let l0 = find_key(&s, &root_id, KeyType::AES).unwrap();
    let mac = find_key(&s, &root_id, KeyType::GENERIC_SECRET).unwrap();

    // (a) Every stored blob, into every readable or weaker form.
    for (i, (_, wrapped)) in parsed.iter().enumerate() {
        for (what, change) in [
            (
                "non-sensitive, extractable",
                vec![
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                    Attribute::WrapWithTrusted(false),
                ],
            ),
            ("non-sensitive", vec![Attribute::Sensitive(false)]),
            (
                "extractable under any key",
                vec![Attribute::WrapWithTrusted(false)],
            ),
            ("a persistent token copy", vec![Attribute::Token(true)]),
            ("a derivation base", vec![Attribute::Derive(true)]),
            ("a wrapping key", vec![Attribute::Wrap(true)]),
            ("a public key", vec![Attribute::Private(false)]),
        ] {
            note(
                format!("blob {i}: unwrap into {what}"),
                true,
                outcome(s.unwrap_key(&kwp, l0, wrapped, &l1_template(&change))),
            );
        }
    }

    // The unwraps the token allows: rootseal's own template (a key nobody can change), and a
    // modifiable copy the attacker asks for. Either is a key usable while the PIN is held, never a
    // readable one: it cannot be read, made non-sensitive, made wrappable under anything but a
    // trusted L0, or copied into a key that can.
    let fixed = s
        .unwrap_key(&kwp, l0, &first_wrapped, &l1_template(&[]))
        .expect("the token allows rootseal's own template");
    note("unwrap with rootseal's template".into(), false, "OK".into());
    let modifiable = s
        .unwrap_key(
            &kwp,
            l0,
            &first_wrapped,
            &l1_template(&[Attribute::Modifiable(true)]),
        )
        .expect("the token allows a modifiable copy");
    note("unwrap into a modifiable key".into(), false, "OK".into());
    for (copy, l1) in [("rootseal's", fixed), ("modifiable", modifiable)] {
        let value = s
            .get_attributes(l1, &[AttributeType::Value])
            .unwrap_or_default();
        note(
            format!("read CKA_VALUE of the {copy} L1"),
            true,
            if value.iter().any(|a| matches!(a, Attribute::Value(_))) {
                "OK".into()
            } else {
                "refused (attribute sensitive)".into()
            },
        );
        for (what, attr) in [
            ("CKA_SENSITIVE=false", Attribute::Sensitive(false)),
            (
                "CKA_WRAP_WITH_TRUSTED=false",
                Attribute::WrapWithTrusted(false),
            ),
        ] {
            note(
                format!("set {what} on the {copy} L1"),
                true,
                outcome(s.update_attributes(l1, std::slice::from_ref(&attr))),
            );
            note(
                format!("copy the {copy} L1 with {what}"),
                true,
                outcome(s.copy_object(l1, &[attr])),
            );
        }
    }
    for (what, attr) in [
        ("CKA_WRAP=true", Attribute::Wrap(true)),
        ("CKA_DERIVE=true", Attribute::Derive(true)),
    ] {
        note(
            format!("set {what} on rootseal's L1"),
            true,
            outcome(s.update_attributes(fixed, std::slice::from_ref(&attr))),
        );
    }
    // (c) Wrap either under a key the attacker made and knows.
    let mine = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
    for (what, m) in [
        ("KWP", Mechanism::AesKeyWrapPad),
        ("KW", Mechanism::AesKeyWrap),
        ("ECB", Mechanism::AesEcb),
    ] {
        for (copy, key) in [("rootseal's", fixed), ("modifiable", modifiable)] {
            note(
                format!("wrap the {copy} L1 under the attacker's key ({what})"),
                true,
                outcome(s.wrap_key(&m, mine, key)),
            );
        }
    }

    // (b) Change or misuse the root keys.
    for (what, attr) in [
        ("CKA_DECRYPT=true", Attribute::Decrypt(true)),
        ("CKA_ENCRYPT=true", Attribute::Encrypt(true)),
        ("CKA_TRUSTED=false", Attribute::Trusted(false)),
        ("CKA_EXTRACTABLE=true", Attribute::Extractable(true)),
        ("CKA_LABEL", Attribute::Label(b"rootseal-l0/999".to_vec())),
    ] {
        note(
            format!("set {what} on L0"),
            true,
            outcome(s.update_attributes(l0, std::slice::from_ref(&attr))),
        );
    }
    note(
        "copy L0 into a decrypting key".into(),
        true,
        outcome(s.copy_object(l0, &[Attribute::Decrypt(true)])),
    );
    note(
        "wrap under L0 with a mechanism it does not allow (KW)".into(),
        true,
        outcome(s.wrap_key(&Mechanism::AesKeyWrap, l0, fixed)),
    );
    note(
        "decrypt with L0".into(),
        true,
        outcome(s.decrypt(&Mechanism::AesEcb, l0, &[0u8; 16])),
    );
    for (what, attr) in [
        ("CKA_SENSITIVE=false", Attribute::Sensitive(false)),
        ("CKA_EXTRACTABLE=true", Attribute::Extractable(true)),
        ("CKA_LABEL", Attribute::Label(b"x".to_vec())),
    ] {
        note(
            format!("set {what} on the MAC key"),
            true,
            outcome(s.update_attributes(mac, &[attr])),
        );
    }
    note(
        "copy the MAC key".into(),
        true,
        outcome(s.copy_object(mac, &[Attribute::Token(false)])),
    );
    let mac_value = s
        .get_attributes(mac, &[AttributeType::Value])
        .unwrap_or_default();
    note(
        "read CKA_VALUE of the MAC key".into(),
        true,
        if mac_value.iter().any(|a| matches!(a, Attribute::Value(_))) {
            "OK".into()
        } else {
            "refused (attribute sensitive)".into()
        },
    );
    out
}

/// The attacker process's entry: run by the test below as a child process, never on its own.
#[test]
#[ignore = "the attacker process of a_user_pin_holder_in_another_process_cannot_extract_any_l1"]
fn attacker_process() {
    // Started by hand (`--ignored`) it has no target: nothing to attack.
    let Ok(input) = std::env::var("ROOTSEAL_ATTACK") else {
        return;
    };
    let input: AttackInput = serde_json::from_str(&input).unwrap();
    for a in attack(&input) {
        println!("ATTEMPT {}", serde_json::to_string(&a).unwrap());
    }
}

/// Every sealed blob in a file store directory, read as an attacker would: from the files.
fn stored_blobs(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("kek") {
            continue;
        }
        let raw = std::fs::read(path).unwrap();
        let nl = raw.iter().position(|b| *b == b'\n').unwrap();
        let rec: serde_json::Value = serde_json::from_slice(&raw[nl + 1..]).unwrap();
        for v in rec["versions"].as_array().unwrap() {
            out.push(v["blob"].as_str().unwrap().to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_pin_holder_in_another_process_cannot_extract_any_l1() {
    let f = Fixture::new().await;
    let mut cts = Vec::new();
    for name in ["app", "payments"] {
        cts.push((name, enc(&f.keyring, name, b"secret", b"").await.unwrap()));
    }
    f.keyring.rotate_key("app").await.unwrap();
    cts.push(("app", enc(&f.keyring, "app", b"v2", b"").await.unwrap()));
    let blobs = stored_blobs(&f.dir.path().join("keys"));
    assert_eq!(blobs.len(), 3);
    let input = AttackInput {
        module: f.token.module.display().to_string(),
        label: f.token.label.clone(),
        pin: f.token.pin.clone(),
        blobs,
    };
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "attacker_process", "--ignored", "--nocapture"])
        .env("ROOTSEAL_ATTACK", serde_json::to_string(&input).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "attacker process: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let attempts: Vec<Attempt> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ATTEMPT "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 3 unlogged + 3 blobs × 7 forms + 2 allowed unwraps + 2 × (1 read + 4 weakenings) +
    // 2 flag changes + 3 × 2 wraps + 5 L0 changes + 3 L0 misuses + 3 MAC changes + copy + read.
    assert_eq!(
        attempts.len(),
        3 + 21 + 2 + 10 + 2 + 6 + 5 + 3 + 3 + 1 + 1,
        "{attempts:#?}"
    );
    let mut by_outcome: BTreeMap<bool, Vec<&Attempt>> = BTreeMap::new();
    for a in &attempts {
        let failed = a.outcome != "OK";
        assert_eq!(failed, a.must_fail, "{a:?}");
        by_outcome.entry(failed).or_default().push(a);
    }
    // The L0's unwrap template is what refuses: the token says "template inconsistent".
    assert!(
        attempts
            .iter()
            .filter(|a| a.must_fail && a.name.contains("unwrap into"))
            .all(|a| a.outcome.contains("TemplateInconsistent")),
        "{attempts:#?}"
    );
    // And the attacker's PIN session did not disturb rootseal: every ciphertext still decrypts.
    for (name, c) in &cts {
        dec(&f.keyring, name, c, b"").await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Migration from rootseal 0.1.0.

#[tokio::test(flavor = "multi_thread")]
async fn a_previous_release_installation_is_weak_and_root_rotation_hardens_it() {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("keys");
    let store = std::sync::Arc::new(FileStore::open(&store_dir).unwrap());
    let mut cts = Vec::new();
    {
        let hsm = token.open().await;
        let old = rootseal_hsm::testing_init_previous_release_root(&hsm, false)
            .await
            .unwrap();
        let k = Keyring::open(hsm.clone(), store.clone()).await.unwrap();
        // Weak, and it says why.
        let c = k.custody();
        assert_eq!(c.verdict(), Custody::Weak);
        let failures = c.failures().join("\n");
        for want in ["CKA_TRUSTED", "CKA_MODIFIABLE", "CKA_UNWRAP_TEMPLATE"] {
            assert!(failures.contains(want), "{want} not in {failures}");
        }
        for name in ["a", "b"] {
            k.testing_create_key_previous_release(name, old)
                .await
                .unwrap();
            cts.push((name, enc(&k, name, name.as_bytes(), b"aad").await.unwrap()));
        }
        // Its keys keep working; new keys wait for a hardened root.
        assert!(matches!(
            enc(&k, "new", b"x", b"").await,
            Err(KeyringError::WeakRoot)
        ));
        assert!(matches!(
            k.rotate_key("a").await,
            Err(KeyringError::WeakRoot)
        ));
        assert_eq!(k.health().await.unwrap(), Custody::Weak);
    }
    let report = rootseal_hsm::rotate_root(
        &token.config(),
        &token.so_pin(),
        store.clone(),
        Duration::from_millis(10),
    )
    .await
    .unwrap();
    assert_eq!(report.resealed, 2);
    assert!(report.destroyed, "{report:?}");
    let hsm = token.open().await;
    let k = Keyring::open(hsm.clone(), store.clone()).await.unwrap();
    assert_eq!(
        k.custody().verdict(),
        Custody::Hardened,
        "{:?}",
        k.custody().failures()
    );
    for (name, c) in &cts {
        assert_eq!(dec(&k, name, c, b"aad").await.unwrap(), name.as_bytes());
    }
    // And now keys can be made and rotated.
    enc(&k, "new", b"x", b"").await.unwrap();
    k.rotate_key("a").await.unwrap();
    // Nothing of 0.1.0's root is left.
    let st = rootseal_hsm::root_status(&hsm).await.unwrap();
    assert_eq!(st.roots.len(), 1, "{:?}", st.roots);
    assert!(st.roots[0].generation >= 2);
    // The records say so too.
    for name in store.list().await.unwrap() {
        let rec = store.get(&name).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&rec.data).contains(&st.roots[0].id.to_hex()));
    }
}

// ---------------------------------------------------------------------------------------------
// AAD domains.

#[tokio::test(flavor = "multi_thread")]
async fn client_aad_cannot_reach_the_batch_key_domain() {
    let f = Fixture::new().await;
    let k = &f.keyring;
    enc(k, "k", b"warm", b"").await.unwrap();
    let forged_aad = b"rootseal:batch-key:v1:k:1";
    // Forging: a transit encrypt with the batch-key AAD is refused, so no client-made ciphertext
    // can pass for a wrapped batch key.
    let r = enc(k, "k", &[7u8; 32], forged_aad).await;
    assert!(
        matches!(&r, Err(KeyringError::InvalidRequest(m)) if m.contains("rootseal:")),
        "{r:?}"
    );
    // Revealing: a real wrapped batch key, presented to transit decrypt with that AAD, is
    // refused before the HSM is asked.
    let bk = k.new_batch_key("k").await.unwrap();
    let as_transit = Sealed {
        version: bk.version,
        bytes: bk.wrapped.clone(),
    };
    let r = dec(k, "k", &as_transit, forged_aad).await;
    assert!(matches!(&r, Err(KeyringError::InvalidRequest(_))), "{r:?}");
    // Rewrap is refused the same way.
    let r = k
        .rewrap(
            "k",
            None,
            vec![DecryptItem {
                sealed: as_transit.clone(),
                aad: forged_aad.to_vec(),
            }],
        )
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(&r, Err(KeyringError::InvalidRequest(_))), "{r:?}");
    // The batch key itself still opens where it belongs.
    let opened = k
        .open_batch_key("k", bk.version, &bk.wrapped)
        .await
        .unwrap();
    assert_eq!(&opened[..], &bk.key[..]);
    // Other AAD still works, including AAD that merely contains the word.
    let c = enc(k, "k", b"p", b"app:rootseal:x").await.unwrap();
    assert_eq!(dec(k, "k", &c, b"app:rootseal:x").await.unwrap(), b"p");
}
