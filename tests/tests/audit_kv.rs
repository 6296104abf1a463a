//! Rollback detection with real OpenBao KV v2 as the key store: `rootseal serve` (SoftHSM2 token,
//! records in a `bao server -dev` KV) audits every KEK record write; a record restored to an
//! older KV version (`bao kv rollback`, what restoring a backup of the KV does) is refused at the
//! next start, the audit log names it, and the other keys keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_e2e::{bao, dev_bao, free_port, KvRootseal, Proc};
use serde_json::{json, Value};

/// The installation under test: [`KvRootseal`] with this file's request helpers.
struct Rs(KvRootseal);

impl std::ops::Deref for Rs {
    type Target = KvRootseal;
    fn deref(&self) -> &KvRootseal {
        &self.0
    }
}

impl Rs {
    fn new(dir: &Path, kv_addr: &str, kv_token: &str) -> Rs {
        Rs(KvRootseal::new(
            dir,
            kv_addr,
            kv_token,
            "\n[audit]\nmode = \"block\"\n",
        ))
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{}/v1/{path}", self.addr))
                .header("X-Vault-Token", &self.token)
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        })
    }
}

fn kv_version(addr: &str, token: &str, name: &str) -> u64 {
    let (ok, out, err) = bao(
        addr,
        Some(token),
        &[
            "kv",
            "get",
            "-format=json",
            &format!("secret/rootseal/{name}"),
        ],
    );
    assert!(ok, "bao kv get {name}: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["data"]["metadata"]["version"].as_u64().unwrap()
}

fn stop(mut p: Proc) {
    assert!(
        p.signal("TERM", Duration::from_secs(20)).is_some(),
        "rootseal did not stop"
    );
}

#[test]
fn a_kv_record_rolled_back_to_an_older_version_is_refused_and_named_in_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let kv = dev_bao(&tmp.path().join("kv"), free_port(), "kv-root", "bao.log");
    let rs = Rs::new(&tmp.path().join("rs"), &kv.addr, &kv.token);
    let out = rs.cmd(&["init"]).output().unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let srv = rs.serve("serve1.log");
    for k in ["victim", "other"] {
        let (s, v) = rs.post(&format!("transit/keys/{k}"), json!({}));
        assert!(matches!(s, 200 | 204), "create {k}: {s} {v}");
    }
    let before = kv_version(&kv.addr, &kv.token, "victim");
    let (s, v) = rs.post("transit/keys/victim/rotate", json!({}));
    assert!(matches!(s, 200 | 204), "rotate: {s} {v}");
    let (s, v) = rs.post(
        "transit/encrypt/victim",
        json!({"plaintext": B64.encode("v2 data")}),
    );
    assert_eq!(s, 200, "{v}");
    assert!(kv_version(&kv.addr, &kv.token, "victim") > before);
    stop(srv);

    // Someone with the KV token restores the victim's record to the version before the rotation.
    let (ok, _, err) = bao(
        &kv.addr,
        Some(&kv.token),
        &[
            "kv",
            "rollback",
            &format!("-version={before}"),
            "secret/rootseal/victim",
        ],
    );
    assert!(ok, "bao kv rollback: {err}");

    let srv = rs.serve("serve2.log");
    let (s, v) = rs.post(
        "transit/encrypt/victim",
        json!({"plaintext": B64.encode("after the rollback")}),
    );
    assert!(
        (400..600).contains(&s) && s != 503,
        "a rolled-back record was used: {s} {v}"
    );
    assert!(
        !v.to_string().contains("rolled back"),
        "the detail stays in the log: {v}"
    );
    let (s, v) = rs.post(
        "transit/encrypt/other",
        json!({"plaintext": B64.encode("other key")}),
    );
    assert_eq!(s, 200, "another key stopped working: {v}");
    stop(srv);

    let log = rs.dir.join("audit.log");
    let recs: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r.get("seq").is_some())
        .map(|r| r["event"].clone())
        .collect();
    assert!(
        recs.iter()
            .any(|e| e["type"] == "kek.write" && e["name"] == "victim"),
        "KEK record writes are not audited: {recs:#?}"
    );
    let rb = recs
        .iter()
        .find(|e| e["type"] == "kek.rollback")
        .unwrap_or_else(|| panic!("no kek.rollback record: {recs:#?}"));
    assert_eq!(rb["name"], "victim", "{rb}");
    assert!(
        rb["reason"].as_str().unwrap().contains("rolled back"),
        "{rb}"
    );
}
