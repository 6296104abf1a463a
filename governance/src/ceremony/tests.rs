//! Every refusal of [`verify`], with software Ed25519 keys (the e2e tests sign on SoftHSM2).

use aws_lc_rs::signature::Ed25519KeyPair;

use super::*;
use crate::ledger::{LedgerEntry, LedgerState};
use crate::pubkey::tests::ed25519;

struct World {
    keys: Vec<(String, Ed25519KeyPair, String)>,
    registry: Registry,
    rules: QuorumRules,
    token: TokenRef,
    ledger: Ledger,
}

fn world(ops: &[(&str, &str)]) -> World {
    let mut keys = Vec::new();
    let mut list = Vec::new();
    for (name, role) in ops {
        let (kp, pem) = ed25519();
        list.push(serde_json::json!({"name": name, "role": role, "public_key": pem}));
        keys.push(((*name).to_owned(), kp, pem));
    }
    let registry = Registry::parse(
        serde_json::json!({"operators": list})
            .to_string()
            .as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    World {
        keys,
        registry,
        rules: QuorumRules::default(),
        token: TokenRef {
            manufacturer: "m".into(),
            model: "x".into(),
            serial: "1".into(),
        },
        ledger: Ledger::new(),
    }
}

const NOW: u64 = 1_000_000;

impl World {
    fn kp(&self, name: &str) -> &Ed25519KeyPair {
        &self
            .keys
            .iter()
            .find(|k| k.0 == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .1
    }

    fn propose(&self, op: &str, params: &[(&str, &str)], requester: &str) -> CeremonyFile {
        let mut req = CeremonyRequest {
            id: "00112233445566778899aabbccddeeff".into(),
            op: op.into(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            token: self.token.clone(),
            root_id: Some("ab".repeat(16)),
            quorum_sha256: self.rules.digest().unwrap_or_default(),
            registry_sha256: self.registry.digest().unwrap_or_default(),
            requester: requester.into(),
            requester_signature: String::new(),
            created: NOW,
            expires: NOW + DEFAULT_TTL_SECS,
        };
        let sig = self
            .kp(requester)
            .sign(&req.request_message().unwrap_or_default());
        req.requester_signature = B64.encode(sig.as_ref());
        CeremonyFile::new(req)
    }

    fn approve(&self, f: &mut CeremonyFile, name: &str) {
        let kp = self.kp(name);
        let sig = kp.sign(&f.request.approval_message().unwrap_or_default());
        let pem = &self
            .keys
            .iter()
            .find(|k| k.0 == name)
            .unwrap_or_else(|| unreachable!())
            .2;
        let key = OperatorKey::from_pem(pem).unwrap_or_else(|e| panic!("{e}"));
        f.add_approval(name, &key, sig.as_ref(), NOW)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn verify(&self, f: &CeremonyFile) -> Result<Verified, Refusal> {
        verify(
            f,
            &VerifyContext {
                registry: &self.registry,
                rules: &self.rules,
                token: &self.token,
                root_id: Some(&"ab".repeat(16)),
                now: NOW + 1,
                ledger: &self.ledger,
            },
        )
    }
}

fn three_so() -> World {
    world(&[
        ("req", "so"),
        ("a", "so"),
        ("b", "so"),
        ("c", "so"),
        ("co1", "co"),
        ("aud", "auditor"),
    ])
}

#[test]
fn two_of_three_passes_and_survives_a_round_trip() {
    let w = three_so();
    let mut f = w.propose("root.rotate", &[], "req");
    w.approve(&mut f, "a");
    w.approve(&mut f, "b");
    let back =
        CeremonyFile::parse(&f.to_bytes().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    let v = w.verify(&back).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.approvers[&Role::So], vec!["a".to_owned(), "b".to_owned()]);
}

#[test]
fn refusals() {
    let w = three_so();
    // 1 of 2.
    let mut f = w.propose("root.rotate", &[], "req");
    w.approve(&mut f, "a");
    let e = w.verify(&f).err().unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(e, Refusal::QuorumNotMet { .. }), "{e}");
    assert!(e.to_string().contains("needs 2 so"), "{e}");
    // The same operator twice (a hand-edited file).
    let mut g = f.clone();
    g.approvals.push(g.approvals[0].clone());
    assert!(matches!(w.verify(&g), Err(Refusal::DuplicateApproval(_))));
    // add_approval refuses it too.
    let kp = w.kp("a");
    let sig = kp.sign(&f.request.approval_message().unwrap_or_default());
    let key = OperatorKey::from_pem(&w.keys[1].2).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        f.clone().add_approval("a", &key, sig.as_ref(), NOW),
        Err(Refusal::DuplicateApproval(_))
    ));
    // Requester self-approval.
    let mut s = w.propose("root.rotate", &[], "req");
    w.approve(&mut s, "req");
    w.approve(&mut s, "a");
    assert!(matches!(w.verify(&s), Err(Refusal::RequesterApproval(_))));
    let mut allow = three_so();
    allow.rules.allow_requester_approval = true;
    let mut s = allow.propose("root.rotate", &[], "req");
    allow.approve(&mut s, "req");
    allow.approve(&mut s, "a");
    assert!(allow.verify(&s).is_ok());
    // Wrong role: a CO on an SO-only operation; an auditor anywhere.
    let mut r = w.propose("root.rotate", &[], "req");
    w.approve(&mut r, "a");
    w.approve(&mut r, "co1");
    assert!(matches!(w.verify(&r), Err(Refusal::WrongRole { .. })));
    let mut r = w.propose("key.destroy", &[("key", "k")], "req");
    w.approve(&mut r, "aud");
    assert!(matches!(w.verify(&r), Err(Refusal::WrongRole { .. })));
    // 1 SO + 1 CO for destruction.
    let mut d = w.propose("key.destroy", &[("key", "k")], "req");
    w.approve(&mut d, "a");
    w.approve(&mut d, "co1");
    assert!(w.verify(&d).is_ok());
    let mut d2 = w.propose("key.destroy", &[("key", "k")], "req");
    w.approve(&mut d2, "a");
    w.approve(&mut d2, "b");
    assert!(matches!(w.verify(&d2), Err(Refusal::QuorumNotMet { .. })));
    // Changed parameter after signing.
    let mut c = w.propose("key.destroy", &[("key", "k")], "req");
    w.approve(&mut c, "a");
    w.approve(&mut c, "co1");
    c.request.params.insert("key".into(), "other".into());
    let e = w.verify(&c).err().unwrap_or_else(|| panic!("accepted"));
    assert!(
        matches!(e, Refusal::BadRequester(_) | Refusal::BadSignature(_)),
        "{e}"
    );
    // Expired.
    let mut x = w.propose("root.rotate", &[], "req");
    w.approve(&mut x, "a");
    w.approve(&mut x, "b");
    let e = verify(
        &x,
        &VerifyContext {
            registry: &w.registry,
            rules: &w.rules,
            token: &w.token,
            root_id: Some(&"ab".repeat(16)),
            now: NOW + DEFAULT_TTL_SECS,
            ledger: &w.ledger,
        },
    );
    assert!(matches!(e, Err(Refusal::Expired { .. })));
    // Replayed.
    let mut l = w.ledger.clone();
    l.executed.insert(
        x.request.id.clone(),
        LedgerEntry {
            op: "root.rotate".into(),
            request_sha256: String::new(),
            approvers: vec![],
            root_id: None,
            started: NOW,
            finished: Some(NOW),
            state: LedgerState::Done,
            transcript: None,
            outcome: None,
            audited: false,
        },
    );
    let e = verify(
        &x,
        &VerifyContext {
            registry: &w.registry,
            rules: &w.rules,
            token: &w.token,
            root_id: Some(&"ab".repeat(16)),
            now: NOW + 1,
            ledger: &l,
        },
    );
    assert!(matches!(e, Err(Refusal::Replayed(_))));
    // Another root, another token.
    let e = verify(
        &x,
        &VerifyContext {
            registry: &w.registry,
            rules: &w.rules,
            token: &w.token,
            root_id: Some(&"cd".repeat(16)),
            now: NOW + 1,
            ledger: &w.ledger,
        },
    );
    assert!(matches!(e, Err(Refusal::RootMismatch { .. })));
    let other = TokenRef {
        serial: "2".into(),
        ..w.token.clone()
    };
    let e = verify(
        &x,
        &VerifyContext {
            registry: &w.registry,
            rules: &w.rules,
            token: &other,
            root_id: Some(&"ab".repeat(16)),
            now: NOW + 1,
            ledger: &w.ledger,
        },
    );
    assert!(matches!(e, Err(Refusal::TokenMismatch { .. })));
    // Quorum rules changed since.
    let mut w2 = three_so();
    w2.keys = Vec::new();
    let mut changed = w.rules.clone();
    changed
        .rules
        .insert("root_rotate".into(), [(Role::So, 3)].into_iter().collect());
    let e = verify(
        &x,
        &VerifyContext {
            registry: &w.registry,
            rules: &changed,
            token: &w.token,
            root_id: Some(&"ab".repeat(16)),
            now: NOW + 1,
            ledger: &w.ledger,
        },
    );
    assert!(matches!(e, Err(Refusal::QuorumRulesChanged { .. })));
    // Lifetime beyond an hour.
    let mut long = x.clone();
    long.request.expires = long.request.created + MAX_TTL_SECS + 1;
    assert!(matches!(w.verify(&long), Err(Refusal::BadLifetime(_))));
}

#[test]
fn foreign_and_revoked_operators() {
    let w = three_so();
    // An operator of another installation signs as "a" with their own key.
    let foreign = world(&[("req", "so"), ("a", "so"), ("b", "so")]);
    let mut f = w.propose("root.rotate", &[], "req");
    w.approve(&mut f, "b");
    let sig = foreign
        .kp("a")
        .sign(&f.request.approval_message().unwrap_or_default());
    let fkey = OperatorKey::from_pem(&foreign.keys[1].2).unwrap_or_else(|e| panic!("{e}"));
    f.add_approval("a", &fkey, sig.as_ref(), NOW)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(w.verify(&f), Err(Refusal::UnregisteredKey(_))));
    // A name the registry does not hold.
    let mut g = w.propose("root.rotate", &[], "req");
    w.approve(&mut g, "b");
    let sig = foreign
        .kp("req")
        .sign(&g.request.approval_message().unwrap_or_default());
    let k = OperatorKey::from_pem(&foreign.keys[0].2).unwrap_or_else(|e| panic!("{e}"));
    g.add_approval("mallory", &k, sig.as_ref(), NOW)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(w.verify(&g), Err(Refusal::UnregisteredKey(_))));
    // A revoked operator (the registry is re-bound, so propose again under it).
    let mut w3 = three_so();
    if let Some(o) = w3.registry.operators.iter_mut().find(|o| o.name == "a") {
        o.revoked = true;
    }
    let mut h = w3.propose("root.rotate", &[], "req");
    w3.approve(&mut h, "a");
    w3.approve(&mut h, "b");
    assert!(matches!(w3.verify(&h), Err(Refusal::RevokedOperator(_))));
    // m > n: 3 SO needed, 2 active.
    let mut w4 = world(&[("req", "so"), ("a", "so")]);
    w4.rules
        .rules
        .insert("root_rotate".into(), [(Role::So, 3)].into_iter().collect());
    let f4 = w4.propose("root.rotate", &[], "req");
    assert!(matches!(w4.verify(&f4), Err(Refusal::Unsatisfiable(_))));
    // Unknown op, bad params.
    let mut u = w.propose("root.rotate", &[], "req");
    u.request.op = "root.explode".into();
    assert!(matches!(w.verify(&u), Err(Refusal::UnknownOperation(_))));
    let p = w.propose("key.destroy", &[], "req");
    assert!(matches!(w.verify(&p), Err(Refusal::BadParams(_))));
    let p = w.propose("root.rotate", &[("nope", "1")], "req");
    assert!(matches!(w.verify(&p), Err(Refusal::BadParams(_))));
    // A newer format version.
    let mut v = serde_json::to_value(w.propose("root.rotate", &[], "req")).unwrap_or_default();
    v["format_version"] = 2.into();
    assert_eq!(
        CeremonyFile::parse(v.to_string().as_bytes()),
        Err(Refusal::UnsupportedFormat(2))
    );
}
