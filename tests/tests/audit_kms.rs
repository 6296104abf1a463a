//! The KMS plugin face's audit log, end to end: real OpenBao 2.7.2 executes the real `rootseal`
//! binary as its seal (SoftHSM2 token with its Ed25519 audit key). OpenBao's init (seal wrap:
//! `Encrypt`) and its unseal after a restart (`Decrypt`) each leave a record naming the
//! operation, the unseal key, its version and the result; `rootseal audit verify` passes on the
//! plugin's log, and the log holds neither the PIN nor the recovery key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_e2e::{kms_stanzas, rootseal_bin, OpenBao};
use rootseal_testkit::TestToken;
use serde_json::Value;

const UNSEAL_TIMEOUT: Duration = Duration::from_secs(60);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn start(server: &mut OpenBao, token: &TestToken) {
    let conf = token.dir.conf.display().to_string();
    server.start(&[
        ("ROOTSEAL_HSM_PIN", token.pin.as_str()),
        ("SOFTHSM2_CONF", conf.as_str()),
    ]);
}

/// The records (not the checkpoints) of `log`.
fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("seq").is_some())
        .collect()
}

/// The token's audit public key as PEM (SubjectPublicKeyInfo of an Ed25519 key).
fn audit_pem(token: &TestToken) -> String {
    let key = rt().block_on(async {
        let hsm = token.open().await;
        hsm.audit_public_key()
            .await
            .unwrap()
            .expect("the root's audit key")
    });
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(&key);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        B64.encode(der)
    )
}

#[test]
fn kms_seal_calls_are_audited_and_the_plugin_log_verifies() {
    let token = TestToken::new();
    rt().block_on(token.init_root());
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let extra = kms_stanzas(tmp.path(), &token.module, &token.label, &keys);
    let mut server = OpenBao::new(&tmp.path().join("bao"), &extra);
    let log = keys.join("kms-audit.log");

    // init: OpenBao wraps its root key through the plugin (Encrypt).
    start(&mut server, &token);
    assert!(
        server.wait_status(UNSEAL_TIMEOUT).is_some(),
        "OpenBao did not answer:\n{}",
        server.log()
    );
    let (_, recovery) = server.init_recovery();
    assert!(
        server.wait_sealed(false, UNSEAL_TIMEOUT),
        "not unsealed after init:\n{}",
        server.log()
    );
    server.stop();
    let after_init = records(&log);
    let enc: Vec<&Value> = after_init
        .iter()
        .filter(|r| r["event"]["type"] == "kms.encrypt")
        .collect();
    assert!(
        !enc.is_empty(),
        "no kms.encrypt record after init: {after_init:#?}"
    );
    for r in &enc {
        let e = &r["event"];
        assert_eq!(e["key"], "openbao-unseal", "{r}");
        assert_eq!(e["version"], 1, "{r}");
        assert_eq!(e["result"], "ok", "{r}");
        assert_eq!(e["grpc_code"], 0, "{r}");
        assert_eq!(e["items"], 1, "{r}");
    }
    assert!(
        after_init.iter().any(|r| r["event"]["type"] == "kms.start"),
        "no kms.start record: {after_init:#?}"
    );

    // restart: OpenBao unseals by unwrapping its root key through the plugin (Decrypt).
    start(&mut server, &token);
    assert!(
        server.wait_sealed(false, UNSEAL_TIMEOUT),
        "not unsealed after restart:\n{}",
        server.log()
    );
    server.stop();
    let all = records(&log);
    let dec: Vec<&Value> = all
        .iter()
        .skip(after_init.len())
        .filter(|r| r["event"]["type"] == "kms.decrypt")
        .collect();
    assert!(
        !dec.is_empty(),
        "no kms.decrypt record after the restart: {all:#?}"
    );
    assert!(
        dec.iter().any(|r| r["event"]["result"] == "ok"
            && r["event"]["version"] == 1
            && r["event"]["key"] == "openbao-unseal"),
        "no successful decrypt of openbao-unseal v1: {dec:#?}"
    );

    // The plugin's log verifies offline against the token's audit key.
    let pem = tmp.path().join("audit.pem");
    std::fs::write(&pem, audit_pem(&token)).unwrap();
    let out = Command::new(rootseal_bin())
        .args(["audit", "verify", "--log"])
        .arg(&log)
        .arg("--public-key")
        .arg(&pem)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("OK"), "{text}");

    // No secret of the run in the log.
    let raw = std::fs::read_to_string(&log).unwrap();
    for (what, secret) in [("PIN", token.pin.as_str()), ("recovery key", &recovery)] {
        assert!(!raw.contains(secret), "the {what} is in the KMS audit log");
    }
}
