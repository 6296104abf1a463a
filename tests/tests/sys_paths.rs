//! Issue 15, item 7: Vault's `sys/seal-status`, `sys/init` and `sys/mounts` on `rootseal dev`,
//! driven by the real `bao` CLI (`bao status`, `bao secrets list`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use rootseal_e2e::{bao, free_port, http_get, rootseal_dev};
use serde_json::Value;

#[test]
fn bao_status_and_secrets_list_work_against_rootseal() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let token = "s.sys-paths-token";
    let _dev = rootseal_dev(
        &tmp.path().join("data"),
        port,
        token,
        &tmp.path().join("dev.log"),
    );
    let addr = format!("http://127.0.0.1:{port}");

    // `bao status` reads sys/seal-status (no token) and exits 0 only when unsealed.
    let (ok, out, err) = bao(&addr, None, &["status", "-format=json"]);
    assert!(ok, "bao status: {err}{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sealed"], false, "{v}");
    assert_eq!(v["initialized"], true, "{v}");

    let (code, body) = http_get(&format!("{addr}/v1/sys/init")).unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["initialized"],
        true
    );

    // `bao secrets list` reads sys/mounts (token).
    let (ok, out, err) = bao(&addr, Some(token), &["secrets", "list", "-format=json"]);
    assert!(ok, "bao secrets list: {err}{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["transit/"]["type"], "transit", "{v}");
    // Without a token: refused in Vault's envelope.
    let (ok, _, err) = bao(&addr, None, &["secrets", "list"]);
    assert!(!ok && err.contains("permission denied"), "{err}");
}
